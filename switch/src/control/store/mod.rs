//! Many hosts, one network: `vswitch daemon --store etcd://...` keeps global overlay networks,
//! VTEP membership and address claims in etcd, and every daemon on the store serves them.
//!
//! A front end: it talks to the [`Daemon`] through its public API only (network create/rm,
//! run, connect, rm, `network_peer`), never to the worker or netlink. Two parts:
//!
//! * [`StoreFront`], the control socket's handler in store mode: requests on global networks
//!   go through the store first (a network is created in the store by a create-if-absent
//!   transaction; an address is claimed by compare-and-swap before the container is made
//!   with it), everything else goes to the daemon unchanged.
//! * The store thread ([`Store::spawn`]): keeps this host's lease alive, registers `hosts/HOST`
//!   and `vteps/NET/HOST` on it, lists the prefix and watches it from the list's revision + 1,
//!   and makes the daemon follow: global networks created and removed, peers (remote VTEPs)
//!   added and removed. It re-lists after a compaction, a broken stream (moving to another
//!   endpoint) or a recovered quorum, and re-registers when its lease was lost.
//!
//! Keys, under the prefix (default `/vswitch/v1`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `networks/NAME` | [`NetworkSpec`] (subnet, VNI, MTU, block size, options) | none |
//! | `vnis/VNI` | the network's name | none |
//! | `hosts/HOST` | [`HostRecord`] (the VTEP address) | the host's |
//! | `vteps/NET/HOST` | [`HostRecord`] | the host's |
//! | `blocks/NET/A.B.C.D-LEN` | [`BlockRecord`] (owning host) | none |
//! | `ips/NET/IP` | [`ClaimRecord`] (host, container) | none |
//! | `endpoints/NET/MAC` | [`EndpointEntry`] (IP, host, container) | the host's |
//!
//! Endpoints: each host publishes its containers on global networks; every other host
//! programs a static MAC entry towards the owner's VTEP and answers ARP for the address itself
//! ([`Daemon::remote_endpoint`]), so a first ping across hosts floods nothing. They live on
//! the owner's lease: a dead host's endpoints leave with its VTEP.

pub mod etcd;

use super::api::{NetworkCreate, NetworkInfo, Reply, Request, RunRequest};
use super::daemon::Daemon;
use super::error::{bail, err, Result};
use super::server::Handler;
use crate::wire::MacAddr;
use etcd::{Client, Compare, EtcdError, Event, KeyValue, Op};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The option that marks a network as kept in the store (`--scope global`).
pub const SCOPE: &str = "scope";
pub const GLOBAL: &str = "global";
/// The prefix of every key, unless `--store-prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/vswitch/v1";
/// The lease TTL of a host's keys, in seconds.
pub const DEFAULT_TTL: i64 = 15;
/// Seconds a dead host's address claims stand before they are released (`--store-claim-grace`).
pub const DEFAULT_CLAIM_GRACE: u64 = 3600;
/// Address blocks a host takes at a time (Calico's default size).
pub const DEFAULT_BLOCK: u8 = 26;
/// Options a host sets for itself, never stored.
const LOCAL_OPTIONS: [&str; 3] = ["vtep", "peers", SCOPE];

/// `vswitch daemon --store ...`.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub endpoints: Vec<std::net::SocketAddr>,
    pub prefix: String,
    /// This host's name in the store (unique per host).
    pub host: String,
    /// The underlay address of this host's VTEP (default: the address it reaches the store
    /// from).
    pub vtep: Option<Ipv4Addr>,
    pub ttl: i64,
    /// How long the address claims of a host whose lease is gone stand before another host
    /// releases them.
    pub claim_grace: Duration,
}

/// `networks/NAME`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Ipv4Net,
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub block: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub internal: bool,
    /// The other `-o` options (port, port_security, flood_pps, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `hosts/HOST` and `vteps/NET/HOST`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub vtep: Ipv4Addr,
}

/// `blocks/NET/CIDR`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockRecord {
    pub host: String,
}

/// `ips/NET/IP`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClaimRecord {
    pub host: String,
    pub container: String,
}

/// `endpoints/NET/MAC`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ip: Ipv4Addr,
    pub host: String,
    #[serde(default)]
    pub container: String,
}

fn no_quorum(e: EtcdError) -> super::error::Error {
    match e {
        EtcdError::NoQuorum(_) => err!("the store has no quorum; try again"),
        e => err!("{e}"),
    }
}

/// The store: its client, this host's identity and lease, and the daemon it drives.
pub struct Store {
    cfg: StoreConfig,
    client: Client,
    vtep: Ipv4Addr,
    lease: AtomicI64,
    daemon: Arc<Mutex<Daemon>>,
    /// Hosts holding claims without a lease (`hosts/HOST` gone), since when this host saw it.
    dead_since: Mutex<BTreeMap<String, Instant>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("host", &self.cfg.host)
            .field("vtep", &self.vtep)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_global(n: &NetworkInfo) -> bool {
    n.options.get(SCOPE).map(String::as_str) == Some(GLOBAL)
}

impl Store {
    /// Connects (to learn the VTEP address if not given); the daemon runs already.
    pub fn new(cfg: StoreConfig, daemon: Arc<Mutex<Daemon>>) -> Result<Arc<Store>> {
        let mut client = Client::new(cfg.endpoints.clone());
        client.timeout = Duration::from_secs(2);
        let vtep = match cfg.vtep {
            Some(v) => v,
            None => match client.local_addr() {
                Ok(std::net::IpAddr::V4(v)) => v,
                Ok(other) => bail!("this host reaches the store from {other}, not an IPv4 address; give --store-vtep IP"),
                Err(e) => bail!("cannot learn this host's underlay address from the store ({e}); give --store-vtep IP"),
            },
        };
        check_key_part("host name", &cfg.host)?;
        Ok(Arc::new(Store {
            cfg,
            client,
            vtep,
            lease: AtomicI64::new(0),
            daemon,
            dead_since: Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn vtep(&self) -> Ipv4Addr {
        self.vtep
    }

    fn key(&self, parts: &[&str]) -> Vec<u8> {
        let mut k = self.cfg.prefix.trim_end_matches('/').to_string();
        for p in parts {
            k.push('/');
            k.push_str(p);
        }
        k.into_bytes()
    }

    fn prefix(&self, parts: &[&str]) -> Vec<u8> {
        let mut k = self.key(parts);
        k.push(b'/');
        k
    }

    /// The key relative to the prefix (`networks/ov`), if it is under it.
    fn rel<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        let p = self.prefix(&[]);
        std::str::from_utf8(key.strip_prefix(p.as_slice())?).ok()
    }

    fn daemon(&self) -> MutexGuard<'_, Daemon> {
        lock(&self.daemon)
    }

    // ----- networks -----

    fn spec_of(&self, net: &str) -> Result<NetworkSpec> {
        let kv = self
            .client
            .get(&self.key(&["networks", net]))
            .map_err(no_quorum)?
            .ok_or_else(|| err!("network {net} is not in the store"))?;
        serde_json::from_slice(&kv.value).map_err(|e| err!("network {net} in the store: {e}"))
    }

    /// `vswitch network create --scope global`: the network and its VNI in the store, in one
    /// create-if-absent transaction; then served here (and by every host's watch).
    pub fn network_create(&self, c: NetworkCreate) -> Result<NetworkInfo> {
        super::daemon::check_name("network", &c.name)?;
        if c.driver != "overlay" {
            bail!("--scope global is for overlay networks: add --driver overlay");
        }
        let subnet: Ipv4Net = c
            .subnet
            .as_deref()
            .ok_or_else(|| err!("a global network needs --subnet (every host shares it)"))?
            .parse()
            .map_err(|_| err!("invalid subnet {:?}", c.subnet))?;
        if c.ip_range.is_some() {
            bail!("--ip-range is not used on a global network: the store hands out addresses in blocks per host");
        }
        let mut options = BTreeMap::new();
        for o in &c.options {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| err!("invalid option {o:?}: expected KEY=VALUE"))?;
            options.insert(k.trim().to_string(), v.trim().to_string());
        }
        for k in LOCAL_OPTIONS {
            options.remove(k);
        }
        let mtu = options
            .remove("mtu")
            .map(|m| m.parse::<u32>().map_err(|_| err!("invalid mtu {m:?}")))
            .transpose()?;
        let block = options
            .remove("block")
            .map(|b| b.parse::<u8>().map_err(|_| err!("invalid block {b:?}")))
            .transpose()?
            .unwrap_or(DEFAULT_BLOCK)
            .max(subnet.prefix_len());
        if block > 30 {
            bail!("block /{block} is too small: use 30 or less");
        }
        let given_vni = options.remove("vni");
        let gateway = c
            .gateway
            .as_deref()
            .map(|g| g.parse().map_err(|_| err!("invalid gateway {g:?}")))
            .transpose()?;
        for attempt in 0..8 {
            let vni = match &given_vni {
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (1..=0xff_ffff).contains(v))
                    .ok_or_else(|| err!("invalid vni {v:?}: expected 1 to 16777215"))?,
                None => self.free_vni()?,
            };
            let spec = NetworkSpec {
                name: c.name.clone(),
                subnet,
                vni,
                mtu,
                block,
                gateway,
                internal: c.internal,
                options: options.clone(),
            };
            let (nk, vk) = (
                self.key(&["networks", &c.name]),
                self.key(&["vnis", &vni.to_string()]),
            );
            let value = serde_json::to_vec(&spec).map_err(|e| err!("{e}"))?;
            let won = self
                .client
                .create(
                    &[&nk, &vk],
                    &[
                        Op::Put {
                            key: nk.clone(),
                            value,
                            lease: 0,
                        },
                        Op::Put {
                            key: vk.clone(),
                            value: c.name.clone().into_bytes(),
                            lease: 0,
                        },
                    ],
                )
                .map_err(no_quorum)?;
            if !won {
                if self.client.get(&nk).map_err(no_quorum)?.is_some() {
                    bail!("network {} already exists in the store; pick another name or remove it with `vswitch network rm {}`", c.name, c.name);
                }
                if given_vni.is_some() || attempt == 7 {
                    let owner = self
                        .client
                        .get(&vk)
                        .map_err(no_quorum)?
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                        .unwrap_or_default();
                    bail!(
                        "vni {vni} is taken by network {owner} in the store; give another -o vni=N"
                    );
                }
                continue;
            }
            return match self.serve_network(&spec) {
                Ok(info) => {
                    self.register_vtep(&spec.name);
                    Ok(info)
                }
                Err(e) => {
                    // All or nothing: the store forgets what this host cannot serve.
                    let _ = self.client.txn(
                        &[],
                        &[
                            Op::Delete {
                                key: nk,
                                prefix: false,
                            },
                            Op::Delete {
                                key: vk,
                                prefix: false,
                            },
                        ],
                    );
                    Err(e)
                }
            };
        }
        bail!("could not find a free vni in the store; give one with -o vni=N")
    }

    fn free_vni(&self) -> Result<u32> {
        let r = self
            .client
            .range_prefix(&self.prefix(&["vnis"]))
            .map_err(no_quorum)?;
        let used: BTreeSet<u32> = r
            .kvs
            .iter()
            .filter_map(|kv| self.rel(&kv.key)?.strip_prefix("vnis/")?.parse().ok())
            .collect();
        (4096..=0xff_ffff)
            .find(|v| !used.contains(v))
            .ok_or_else(|| err!("every vni is taken"))
    }

    /// Creates `spec` on this host's daemon unless it is there already.
    fn serve_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let mut d = self.daemon();
        if let Ok(n) = d.network_inspect(&spec.name) {
            if is_global(&n) {
                return Ok(n);
            }
            bail!(
                "a local network {} exists on this host; the global one is not served here until it is removed",
                spec.name
            );
        }
        let mut options: Vec<String> = spec
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        options.push(format!("vni={}", spec.vni));
        options.push(format!("vtep={}", self.vtep));
        options.push(format!("{SCOPE}={GLOBAL}"));
        if let Some(m) = spec.mtu {
            options.push(format!("mtu={m}"));
        }
        d.network_create(NetworkCreate {
            name: spec.name.clone(),
            driver: "overlay".into(),
            subnet: Some(spec.subnet.to_string()),
            gateway: spec.gateway.map(|g| g.to_string()),
            ip_range: None,
            aux_addresses: Vec::new(),
            internal: spec.internal,
            options,
        })
    }

    /// `vswitch network rm` of a global network: refused while addresses are claimed on it;
    /// otherwise removed from the store (every host's watch removes it there).
    pub fn network_rm(&self, name: &str) -> Result<()> {
        let claims = self
            .client
            .range_prefix(&self.prefix(&["ips", name]))
            .map_err(no_quorum)?;
        if !claims.kvs.is_empty() {
            let users: Vec<String> = claims
                .kvs
                .iter()
                .take(5)
                .filter_map(|kv| serde_json::from_slice::<ClaimRecord>(&kv.value).ok())
                .map(|c| format!("{} on {}", c.container, c.host))
                .collect();
            bail!(
                "network {name} has {} containers across the hosts ({}); remove them first",
                claims.kvs.len(),
                users.join(", ")
            );
        }
        let spec = self.spec_of(name)?;
        {
            let mut d = self.daemon();
            if d.network_inspect(name).is_ok() {
                d.network_rm(name)?;
            }
        }
        self.client
            .txn(
                &[],
                &[
                    Op::Delete {
                        key: self.key(&["networks", name]),
                        prefix: false,
                    },
                    Op::Delete {
                        key: self.key(&["vnis", &spec.vni.to_string()]),
                        prefix: false,
                    },
                    Op::Delete {
                        key: self.prefix(&["vteps", name]),
                        prefix: true,
                    },
                    Op::Delete {
                        key: self.prefix(&["blocks", name]),
                        prefix: true,
                    },
                ],
            )
            .map_err(no_quorum)?;
        Ok(())
    }

    // ----- membership -----

    fn host_value(&self) -> Vec<u8> {
        serde_json::to_vec(&HostRecord { vtep: self.vtep }).unwrap_or_default()
    }

    /// Puts `vteps/NET/HOST` on the lease (logged on failure: the next sync does it again).
    fn register_vtep(&self, net: &str) {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let k = self.key(&["vteps", net, &self.cfg.host]);
        if let Err(e) = self.client.put(&k, &self.host_value(), lease) {
            tracing::warn!("store: cannot register this host's vtep on {net}: {e}");
        }
    }

    /// A new lease, and this host's keys on it.
    fn register(&self) -> Result<(), EtcdError> {
        let lease = self.client.lease_grant(self.cfg.ttl)?;
        self.lease.store(lease, Ordering::SeqCst);
        self.put_keys(lease)?;
        tracing::info!(
            "store: registered host {} (vtep {}) with lease {lease:x}",
            self.cfg.host,
            self.vtep
        );
        Ok(())
    }

    /// Puts this host's keys on `lease`: `hosts/HOST`, its VTEP on each global network and
    /// its containers' endpoints (at registration, and again when quorum is back: a put
    /// refused meanwhile is not lost).
    fn put_keys(&self, lease: i64) -> Result<(), EtcdError> {
        let mut ops = vec![Op::Put {
            key: self.key(&["hosts", &self.cfg.host]),
            value: self.host_value(),
            lease,
        }];
        for n in self.global_networks() {
            ops.push(Op::Put {
                key: self.key(&["vteps", &n, &self.cfg.host]),
                value: self.host_value(),
                lease,
            });
        }
        for (net, mac, ip, container) in self.local_endpoints() {
            ops.push(Op::Put {
                key: self.key(&["endpoints", &net, &mac.to_string()]),
                value: self.endpoint_value(ip, &container),
                lease,
            });
        }
        self.client.txn(&[], &ops)?;
        Ok(())
    }

    fn endpoint_value(&self, ip: Ipv4Addr, container: &str) -> Vec<u8> {
        serde_json::to_vec(&EndpointEntry {
            ip,
            host: self.cfg.host.clone(),
            container: container.to_string(),
        })
        .unwrap_or_default()
    }

    /// This host's containers' endpoints on global networks: (network, MAC, IP, container).
    fn local_endpoints(&self) -> Vec<(String, MacAddr, Ipv4Addr, String)> {
        let mut d = self.daemon();
        let globals: BTreeSet<String> = d
            .network_ls()
            .into_iter()
            .filter(is_global)
            .map(|n| n.name)
            .collect();
        let mut out = Vec::new();
        for c in d.ps() {
            for e in &c.endpoints {
                if let (true, Ok(mac)) = (globals.contains(&e.network), e.mac.parse()) {
                    out.push((e.network.clone(), mac, e.ip, c.name.clone()));
                }
            }
        }
        out
    }

    /// Puts `endpoints/NET/MAC` of `container` on the lease (logged on failure: the next
    /// registration puts it again).
    fn publish_endpoint(&self, net: &str, mac: MacAddr, ip: Ipv4Addr, container: &str) {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let k = self.key(&["endpoints", net, &mac.to_string()]);
        if let Err(e) = self
            .client
            .put(&k, &self.endpoint_value(ip, container), lease)
        {
            tracing::warn!("store: cannot publish endpoint {ip} ({mac}) on {net}: {e}");
        }
    }

    fn unpublish_endpoint(&self, net: &str, mac: MacAddr) {
        let k = self.key(&["endpoints", net, &mac.to_string()]);
        if let Err(e) = self.client.delete(&k, false) {
            tracing::warn!("store: cannot withdraw endpoint {mac} on {net}: {e}");
        }
    }

    fn global_networks(&self) -> Vec<String> {
        self.daemon()
            .network_ls()
            .into_iter()
            .filter(is_global)
            .map(|n| n.name)
            .collect()
    }

    // ----- following the store -----

    /// Makes the daemon follow `keys` (everything under the prefix): global networks, and
    /// each one's peers.
    fn apply(&self, keys: &BTreeMap<String, Vec<u8>>) {
        let mut specs = BTreeMap::new();
        let mut vteps: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        // Each network's hosts' VTEPs, and the endpoints of other hosts.
        let mut host_vtep: BTreeMap<(&str, &str), Ipv4Addr> = BTreeMap::new();
        let mut endpoints: Vec<(&str, MacAddr, EndpointEntry)> = Vec::new();
        for (k, v) in keys {
            if let Some(name) = k.strip_prefix("networks/") {
                match serde_json::from_slice::<NetworkSpec>(v) {
                    Ok(s) if s.name == name => {
                        specs.insert(name.to_string(), s);
                    }
                    _ => tracing::warn!("store: ignoring {k}: not a network record"),
                }
            } else if let Some(rest) = k.strip_prefix("vteps/") {
                let Some((net, host)) = rest.split_once('/') else {
                    continue;
                };
                if host == self.cfg.host {
                    continue;
                }
                match serde_json::from_slice::<HostRecord>(v) {
                    Ok(h) if h.vtep != self.vtep => {
                        vteps.entry(net.to_string()).or_default().insert(h.vtep);
                        host_vtep.insert((net, host), h.vtep);
                    }
                    Ok(_) => {}
                    Err(_) => tracing::warn!("store: ignoring {k}: not a vtep record"),
                }
            } else if let Some(rest) = k.strip_prefix("endpoints/") {
                let parsed = rest.split_once('/').and_then(|(net, mac)| {
                    let e = serde_json::from_slice::<EndpointEntry>(v).ok()?;
                    Some((net, mac.parse::<MacAddr>().ok()?, e))
                });
                match parsed {
                    Some((_, _, e)) if e.host == self.cfg.host => {}
                    Some(ep) => endpoints.push(ep),
                    None => tracing::warn!("store: ignoring {k}: not an endpoint record"),
                }
            }
        }
        // Networks: the store's are served here, a global one gone from the store goes.
        let local = self.global_networks();
        for spec in specs.values() {
            if !local.contains(&spec.name) {
                match self.serve_network(spec) {
                    Ok(_) => {
                        tracing::info!("store: serving global network {}", spec.name);
                        self.register_vtep(&spec.name);
                    }
                    Err(e) => tracing::warn!("store: cannot serve network {}: {e:#}", spec.name),
                }
            }
        }
        for n in &local {
            if !specs.contains_key(n) {
                match self.daemon().network_rm(n) {
                    Ok(()) => tracing::info!("store: network {n} left the store; removed"),
                    Err(e) => tracing::warn!("store: network {n} left the store: {e:#}"),
                }
            }
        }
        // Peers: exactly the other hosts' vteps of each network.
        let mut d = self.daemon();
        for name in specs.keys() {
            let Ok(info) = d.network_inspect(name) else {
                continue;
            };
            if !is_global(&info) {
                continue;
            }
            let want = vteps.get(name).cloned().unwrap_or_default();
            let have: BTreeSet<Ipv4Addr> = info.peers.keys().copied().collect();
            for p in want.difference(&have) {
                match d.network_peer(name, &p.to_string(), false) {
                    Ok(()) => tracing::info!("store: {name}: peer {p} joined"),
                    Err(e) => tracing::warn!("store: {name}: cannot add peer {p}: {e:#}"),
                }
            }
            for p in have.difference(&want) {
                match d.network_peer(name, &p.to_string(), true) {
                    Ok(()) => tracing::info!("store: {name}: peer {p} left"),
                    Err(e) => tracing::warn!("store: {name}: cannot remove peer {p}: {e:#}"),
                }
            }
            // Endpoints: exactly the other hosts' on this network (whose VTEP is known).
            let want: BTreeMap<[u8; 6], (Ipv4Addr, Ipv4Addr)> = endpoints
                .iter()
                .filter(|(net, _, _)| net == name)
                .filter_map(|(_, mac, e)| {
                    let vtep = host_vtep.get(&(name.as_str(), e.host.as_str()))?;
                    Some((mac.0, (e.ip, *vtep)))
                })
                .collect();
            let have: BTreeMap<[u8; 6], (Ipv4Addr, Ipv4Addr)> = d
                .remote_endpoints(name)
                .into_iter()
                .map(|(m, ip, v)| (m.0, (ip, v)))
                .collect();
            for (m, (ip, _)) in &have {
                if !want.contains_key(m) {
                    let _ = d.remote_endpoint(name, MacAddr(*m), *ip, None);
                }
            }
            for (m, (ip, vtep)) in &want {
                if have.get(m) != Some(&(*ip, *vtep)) {
                    match d.remote_endpoint(name, MacAddr(*m), *ip, Some(*vtep)) {
                        Ok(()) => tracing::debug!("store: {name}: endpoint {ip} behind {vtep}"),
                        Err(e) => tracing::warn!("store: {name}: endpoint {ip}: {e:#}"),
                    }
                }
            }
        }
    }

    /// Lists the keys the daemon follows (networks, VTEPs, endpoints) under the prefix;
    /// returns them and the revision.
    fn list(&self) -> Result<(BTreeMap<String, Vec<u8>>, i64), EtcdError> {
        let r = self.client.range_prefix(&self.prefix(&[]))?;
        let keys = r
            .kvs
            .into_iter()
            .filter_map(|kv| Some((self.rel(&kv.key)?.to_string(), kv.value)))
            .filter(|(k, _)| followed(k))
            .collect();
        Ok((keys, r.revision))
    }

    /// Starts the store thread: lease, registration, list and watch, for as long as the
    /// daemon runs. The first sync is tried before returning (so a restarted daemon serves
    /// the store's networks when it says it is ready), at most `first_within`.
    pub fn spawn(self: &Arc<Self>, first_within: Duration) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("vswitch-store".into())
            .spawn(move || me.follow(tx))?;
        let _ = rx.recv_timeout(first_within);
        Ok(())
    }

    fn follow(&self, first: std::sync::mpsc::Sender<()>) {
        let keepalive_every = Duration::from_secs((self.cfg.ttl / 3).max(1) as u64);
        let idle = keepalive_every;
        let mut backoff = Duration::from_millis(200);
        // Before the control socket serves (see `spawn`), no claim is in the making: this
        // host's claims without a container can go.
        let startup_until = Instant::now() + Duration::from_secs(4);
        let mut started = true;
        loop {
            if self.lease.load(Ordering::SeqCst) == 0 {
                if let Err(e) = self.register() {
                    tracing::warn!("store: cannot register this host: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                self.assert_claims(started && Instant::now() < startup_until);
                started = false;
            }
            let (mut keys, rev) = match self.list() {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("store: cannot list {}: {e}", self.cfg.prefix);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            self.apply(&keys);
            let _ = first.send(());
            let watch = match self.client.watch(&self.prefix(&[]), rev + 1) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("store: cannot watch {}: {e}", self.cfg.prefix);
                    std::thread::sleep(backoff);
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let mut next_keepalive = Instant::now() + keepalive_every;
            let mut quorum_lost = false;
            // When the stream last said something: a stream silent for `idle` is checked
            // against a fresh list (it may sit on a member that froze or was cut off).
            let mut heard = Instant::now();
            // Until the stream breaks (or quorum comes back: re-list, to be sure).
            loop {
                match watch.next(Duration::from_millis(250)) {
                    Ok(Some(b)) => {
                        heard = Instant::now();
                        let mut changed = false;
                        for ev in b.events {
                            let (Event::Put(kv) | Event::Delete(kv)) = &ev;
                            let Some(k) = self.rel(&kv.key).map(str::to_string) else {
                                continue;
                            };
                            if !followed(&k) {
                                continue;
                            }
                            changed = true;
                            match ev {
                                Event::Put(KeyValue { value, .. }) => {
                                    keys.insert(k, value);
                                }
                                Event::Delete(_) => {
                                    keys.remove(&k);
                                }
                            }
                        }
                        if changed {
                            self.apply(&keys);
                        }
                    }
                    Ok(None) if heard.elapsed() >= idle => {
                        heard = Instant::now();
                        match self.list() {
                            Ok((fresh, _)) if fresh != keys => {
                                tracing::warn!(
                                    "store: the watch on {} missed changes (silent for {} s); listing and watching again",
                                    watch.endpoint(),
                                    idle.as_secs()
                                );
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if !quorum_lost {
                                    tracing::warn!("store: the watch is silent and the store does not answer ({e}); forwarding on the last state");
                                }
                                quorum_lost = true;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(
                            "store: the watch on {} broke ({e}); listing again",
                            watch.endpoint()
                        );
                        break;
                    }
                }
                if Instant::now() >= next_keepalive {
                    next_keepalive = Instant::now() + keepalive_every;
                    let lease = self.lease.load(Ordering::SeqCst);
                    match self.client.lease_keepalive(lease) {
                        Ok(ttl) if ttl > 0 => {
                            if quorum_lost {
                                tracing::info!("store: quorum is back; listing again");
                                if let Err(e) = self.put_keys(lease) {
                                    tracing::warn!("store: cannot put this host's keys: {e}");
                                }
                                break;
                            }
                            self.collect_claims();
                        }
                        Ok(_) => {
                            tracing::warn!("store: lease {lease:x} was lost; registering again");
                            self.lease.store(0, Ordering::SeqCst);
                            break;
                        }
                        Err(e) => {
                            if !quorum_lost {
                                tracing::warn!("store: cannot keep the lease alive: {e}");
                            }
                            quorum_lost = true;
                            // Sooner than usual, to notice the store's return.
                            next_keepalive = Instant::now() + Duration::from_millis(500);
                        }
                    }
                }
            }
        }
    }

    // ----- claims of hosts that are gone -----

    /// After (re)registering: claims this host's containers' addresses again where the store
    /// lost them (create-if-absent; another host's claim on one is logged as a conflict), and
    /// at `startup` (no request is being served yet) releases this host's claims whose
    /// containers are gone (removed while the daemon was away).
    fn assert_claims(&self, startup: bool) {
        let local = self.local_endpoints();
        let mut nets: BTreeSet<String> = local.iter().map(|(n, ..)| n.clone()).collect();
        if startup {
            nets.extend(self.global_networks());
        }
        for net in nets {
            let Ok(claims) = self.claim_kvs(&net) else {
                return;
            };
            let mine: BTreeSet<Ipv4Addr> = local
                .iter()
                .filter(|(n, ..)| *n == net)
                .map(|(_, _, ip, _)| *ip)
                .collect();
            for (_, _, ip, container) in local.iter().filter(|(n, ..)| *n == net) {
                match claims.get(ip) {
                    Some((c, _)) if c.host != self.cfg.host => tracing::error!(
                        "store: {ip} on {net} of container {container} is claimed by {} on host {} in the store; remove one of them",
                        c.container,
                        c.host
                    ),
                    Some(_) => {}
                    None => match self.claim_ip(&net, *ip, container) {
                        Ok(true) => tracing::info!("store: claimed {ip} on {net} again for {container}"),
                        Ok(false) => tracing::warn!("store: {ip} on {net} was claimed meanwhile"),
                        Err(e) => tracing::warn!("store: cannot claim {ip} on {net} again: {e:#}"),
                    },
                }
            }
            if !startup {
                continue;
            }
            for (ip, (c, rev)) in &claims {
                if c.host == self.cfg.host && !mine.contains(ip) {
                    self.release_claim(&net, *ip, *rev, "its container is gone");
                }
            }
        }
    }

    /// The claims on `net` with their modification revisions.
    fn claim_kvs(&self, net: &str) -> Result<BTreeMap<Ipv4Addr, (ClaimRecord, i64)>> {
        let r = self
            .client
            .range_prefix(&self.prefix(&["ips", net]))
            .map_err(no_quorum)?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| {
                let ip = self.rel(&kv.key)?.rsplit('/').next()?.parse().ok()?;
                let c = serde_json::from_slice(&kv.value).ok()?;
                Some((ip, (c, kv.mod_revision)))
            })
            .collect())
    }

    /// Deletes the claim of `ip` on `net` if it is still the one of revision `rev`, then its
    /// block if that is empty.
    fn release_claim(&self, net: &str, ip: Ipv4Addr, rev: i64, why: &str) {
        let k = self.key(&["ips", net, &ip.to_string()]);
        match self.client.txn(
            &[Compare::ModRevisionIs(k.clone(), rev)],
            &[Op::Delete {
                key: k,
                prefix: false,
            }],
        ) {
            Ok((true, _)) => {
                tracing::info!("store: released {ip} on {net}: {why}");
                self.release_empty_block(net, ip);
            }
            Ok((false, _)) => {}
            Err(e) => tracing::warn!("store: cannot release {ip} on {net}: {e}"),
        }
    }

    /// Removes the block holding `ip` on `net` if no claim is left in it (whoever owns it).
    fn release_empty_block(&self, net: &str, ip: Ipv4Addr) {
        let (Ok(blocks), Ok(claims)) = (self.blocks(net), self.claims(net)) else {
            return;
        };
        let Some((b, rec)) = blocks.iter().find(|(b, _)| b.contains(&ip)) else {
            return;
        };
        if claims.keys().any(|i| b.contains(i)) {
            return;
        }
        let k = self.block_key(net, b);
        let v = serde_json::to_vec(rec).unwrap_or_default();
        let _ = self.client.txn(
            &[Compare::ValueIs(k.clone(), v)],
            &[Op::Delete {
                key: k,
                prefix: false,
            }],
        );
    }

    /// Releases the claims of hosts whose lease has been gone for the grace period (seen
    /// from here: each live host counts on its own; the first to see the period out
    /// releases, by compare-and-delete). A host alive (its `hosts/HOST` on its lease) or back
    /// within the period keeps every claim.
    fn collect_claims(&self) {
        let Ok(hosts) = self.client.range_prefix(&self.prefix(&["hosts"])) else {
            return;
        };
        let live: BTreeSet<&str> = hosts
            .kvs
            .iter()
            .filter_map(|kv| self.rel(&kv.key)?.strip_prefix("hosts/"))
            .collect();
        let Ok(ips) = self.client.range_prefix(&self.prefix(&["ips"])) else {
            return;
        };
        let claims: Vec<(String, Ipv4Addr, ClaimRecord, i64)> = ips
            .kvs
            .iter()
            .filter_map(|kv| {
                let (net, ip) = self.rel(&kv.key)?.strip_prefix("ips/")?.split_once('/')?;
                let c: ClaimRecord = serde_json::from_slice(&kv.value).ok()?;
                Some((net.to_string(), ip.parse().ok()?, c, kv.mod_revision))
            })
            .filter(|(_, _, c, _)| c.host != self.cfg.host && !live.contains(c.host.as_str()))
            .collect();
        let now = Instant::now();
        let expired: BTreeSet<String> = {
            let mut dead = lock(&self.dead_since);
            let owners: BTreeSet<&str> =
                claims.iter().map(|(_, _, c, _)| c.host.as_str()).collect();
            dead.retain(|h, _| owners.contains(h.as_str()));
            for h in owners {
                dead.entry(h.to_string()).or_insert(now);
            }
            dead.iter()
                .filter(|(_, t)| now.duration_since(**t) >= self.cfg.claim_grace)
                .map(|(h, _)| h.clone())
                .collect()
        };
        for (net, ip, c, rev) in &claims {
            if expired.contains(&c.host) {
                let why = format!(
                    "container {} of host {}, whose lease has been gone for {} s",
                    c.container,
                    c.host,
                    self.cfg.claim_grace.as_secs()
                );
                self.release_claim(net, *ip, *rev, &why);
            }
        }
    }

    // ----- addresses -----

    fn claims(&self, net: &str) -> Result<BTreeMap<Ipv4Addr, ClaimRecord>> {
        self.records(&["ips", net], |last| last.parse().ok())
    }

    fn blocks(&self, net: &str) -> Result<BTreeMap<Ipv4Net, BlockRecord>> {
        self.records(&["blocks", net], |last| last.replace('-', "/").parse().ok())
    }

    /// The JSON records under `parts`, keyed by the last part of their keys as `key` reads it;
    /// a key or value that does not parse is left out (the store is written by other hosts).
    fn records<K: Ord, V: serde::de::DeserializeOwned>(
        &self,
        parts: &[&str],
        key: impl Fn(&str) -> Option<K>,
    ) -> Result<BTreeMap<K, V>> {
        let r = self
            .client
            .range_prefix(&self.prefix(parts))
            .map_err(no_quorum)?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| {
                let k = key(self.rel(&kv.key)?.rsplit('/').next()?)?;
                Some((k, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect())
    }

    fn block_key(&self, net: &str, b: &Ipv4Net) -> Vec<u8> {
        self.key(&[
            "blocks",
            net,
            &format!("{}-{}", b.network(), b.prefix_len()),
        ])
    }

    /// Claims `ip` on `net` for `container`: create-if-absent on `ips/NET/IP`.
    fn claim_ip(&self, net: &str, ip: Ipv4Addr, container: &str) -> Result<bool> {
        let k = self.key(&["ips", net, &ip.to_string()]);
        let v = serde_json::to_vec(&ClaimRecord {
            host: self.cfg.host.clone(),
            container: container.to_string(),
        })
        .unwrap_or_default();
        self.client
            .create(
                &[&k],
                &[Op::Put {
                    key: k.clone(),
                    value: v,
                    lease: 0,
                }],
            )
            .map_err(no_quorum)
    }

    /// An address on `net` for `container`, claimed in the store: `want` if given (refused if
    /// someone holds it), else the first free one of this host's blocks, taking a new block
    /// (create-if-absent) when they are full.
    pub fn claim(&self, net: &str, want: Option<&str>, container: &str) -> Result<Ipv4Addr> {
        let spec = self.spec_of(net)?;
        let reserved = |ip: Ipv4Addr| {
            let s = spec.subnet;
            ip == s.network()
                || ip == s.broadcast()
                || Some(ip) == spec.gateway
                || Some(ip) == u32::from(s.network()).checked_add(1).map(Ipv4Addr::from)
        };
        if let Some(w) = want {
            let ip: Ipv4Addr = w
                .parse()
                .map_err(|_| err!("invalid address {w:?}: expected an IPv4 address"))?;
            if !spec.subnet.contains(&ip) || reserved(ip) {
                bail!("{ip} is not a usable address of {net} ({})", spec.subnet);
            }
            if !self.claim_ip(net, ip, container)? {
                let holder = self.claims(net)?.remove(&ip);
                bail!(
                    "address {ip} is already in use on network {net}{}",
                    holder
                        .map(|c| format!(" (container {} on host {})", c.container, c.host))
                        .unwrap_or_default()
                );
            }
            return Ok(ip);
        }
        for _ in 0..64 {
            let blocks = self.blocks(net)?;
            let claims = self.claims(net)?;
            let mine = blocks
                .iter()
                .filter(|(_, b)| b.host == self.cfg.host)
                .map(|(n, _)| *n);
            let mut free = None;
            for b in mine {
                if let Some(ip) = b
                    .hosts()
                    .chain([b.network(), b.broadcast()])
                    .filter(|ip| spec.subnet.contains(ip) && !reserved(*ip))
                    .find(|ip| !claims.contains_key(ip))
                {
                    free = Some(ip);
                    break;
                }
            }
            if let Some(ip) = free {
                if self.claim_ip(net, ip, container)? {
                    return Ok(ip);
                }
                continue;
            }
            // A new block: the first not taken.
            let all = spec
                .subnet
                .subnets(spec.block)
                .map_err(|e| err!("block size: {e}"))?;
            let next = all.into_iter().find(|b| !blocks.contains_key(b));
            let Some(b) = next else {
                bail!(
                    "no free address on network {net}: every /{} block of {} is taken by a host",
                    spec.block,
                    spec.subnet
                );
            };
            let k = self.block_key(net, &b);
            let v = serde_json::to_vec(&BlockRecord {
                host: self.cfg.host.clone(),
            })
            .unwrap_or_default();
            let _ = self
                .client
                .create(
                    &[&k],
                    &[Op::Put {
                        key: k.clone(),
                        value: v,
                        lease: 0,
                    }],
                )
                .map_err(no_quorum)?;
        }
        bail!("could not claim an address on {net}: too much contention; try again")
    }

    /// Gives `ip` back; the block it was in is released when it is empty.
    pub fn release(&self, net: &str, ip: Ipv4Addr) -> Result<()> {
        self.client
            .delete(&self.key(&["ips", net, &ip.to_string()]), false)
            .map_err(no_quorum)?;
        let blocks = self.blocks(net)?;
        let Some((b, rec)) = blocks.iter().find(|(b, _)| b.contains(&ip)) else {
            return Ok(());
        };
        if rec.host != self.cfg.host || self.claims(net)?.keys().any(|i| b.contains(i)) {
            return Ok(());
        }
        let k = self.block_key(net, b);
        let v = serde_json::to_vec(rec).unwrap_or_default();
        self.client
            .txn(
                &[Compare::ValueIs(k.clone(), v)],
                &[Op::Delete {
                    key: k,
                    prefix: false,
                }],
            )
            .map_err(no_quorum)?;
        Ok(())
    }
}

/// Whether the store thread follows key `k` (relative to the prefix).
fn followed(k: &str) -> bool {
    k.starts_with("networks/") || k.starts_with("vteps/") || k.starts_with("endpoints/")
}

/// Checks a part of a key (host name).
fn check_key_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 253
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!("invalid {what} {s:?}: use letters, digits, '_', '.' or '-'");
    }
    Ok(())
}

/// The control socket's handler in store mode.
pub struct StoreFront {
    store: Arc<Store>,
}

impl StoreFront {
    pub fn new(store: Arc<Store>) -> StoreFront {
        StoreFront { store }
    }

    fn global(&self, net: &str) -> bool {
        self.store
            .daemon()
            .network_inspect(net)
            .map(|n| is_global(&n))
            .unwrap_or(false)
    }

    /// The addresses (and MACs) `container` holds on global networks.
    fn global_ips(&self, container: &str) -> Vec<(String, Ipv4Addr, Option<MacAddr>)> {
        let d = self.store.daemon();
        let Ok(c) = d.container_info(container) else {
            return Vec::new();
        };
        c.endpoints
            .iter()
            .filter(|e| {
                d.network_inspect(&e.network)
                    .map(|n| is_global(&n))
                    .unwrap_or(false)
            })
            .map(|e| (e.network.clone(), e.ip, e.mac.parse().ok()))
            .collect()
    }

    /// Publishes `container`'s endpoint on global network `net` (after it was made).
    fn publish(&self, net: &str, container: &str) {
        for (n, ip, mac) in self.global_ips(container) {
            if let (true, Some(mac)) = (n == net, mac) {
                self.store.publish_endpoint(net, mac, ip, container);
            }
        }
    }

    /// Claims an address, runs `f` with it, and gives it back if `f` fails.
    fn with_claim<T>(
        &self,
        net: &str,
        want: Option<&str>,
        container: &str,
        f: impl FnOnce(&mut Daemon, String) -> Result<T>,
    ) -> Result<T> {
        let ip = self.store.claim(net, want, container)?;
        let r = f(&mut self.store.daemon(), ip.to_string());
        if r.is_err() {
            if let Err(e) = self.store.release(net, ip) {
                tracing::warn!("store: cannot give back {ip} on {net}: {e:#}");
            }
        } else {
            self.publish(net, container);
        }
        r
    }

    fn handle_global(
        &mut self,
        req: Request,
    ) -> std::result::Result<Result<serde_json::Value>, Box<Request>> {
        fn j<T: Serialize>(v: Result<T>) -> Result<serde_json::Value> {
            v.map(|x| serde_json::to_value(x).unwrap_or_default())
        }
        Ok(match req {
            Request::NetworkCreate(c)
                if c.options
                    .iter()
                    .any(|o| o.replace(' ', "") == format!("{SCOPE}={GLOBAL}")) =>
            {
                j(self.store.network_create(c))
            }
            Request::NetworkRm { name } if self.global(&name) => j(self
                .store
                .network_rm(&name)
                .map(|_| serde_json::Value::Null)),
            Request::Run(r) if r.network.as_deref().is_some_and(|n| self.global(n)) => {
                let net = r.network.clone().unwrap_or_default();
                let name = r.name.clone().unwrap_or_default();
                let want = r.ip.clone();
                j(self.with_claim(&net, want.as_deref(), &name, |d, ip| {
                    d.run(RunRequest { ip: Some(ip), ..r })
                }))
            }
            Request::NetworkConnect {
                network,
                container,
                ip,
                publish,
                attach,
            } if self.global(&network) => {
                j(
                    self.with_claim(&network, ip.as_deref(), &container, |d, ip| {
                        d.network_connect_publish(&network, &container, Some(&ip), &publish, attach)
                    }),
                )
            }
            Request::Attach {
                name,
                netns,
                network,
                ip,
            } if self.global(&network) => {
                j(self.with_claim(&network, ip.as_deref(), &name, |d, ip| {
                    d.attach(&name, &netns, &network, Some(&ip))
                }))
            }
            Request::Rm { name, force } => {
                let held = self.global_ips(&name);
                let r = self.store.daemon().rm(&name, force);
                if r.is_ok() {
                    for (net, ip, mac) in held {
                        if let Some(mac) = mac {
                            self.store.unpublish_endpoint(&net, mac);
                        }
                        if let Err(e) = self.store.release(&net, ip) {
                            tracing::warn!("store: cannot give back {ip} on {net}: {e:#}");
                        }
                    }
                }
                j(r.map(|_| serde_json::Value::Null))
            }
            Request::NetworkDisconnect { network, container } if self.global(&network) => {
                let held: Vec<_> = self
                    .global_ips(&container)
                    .into_iter()
                    .filter(|(n, _, _)| *n == network)
                    .collect();
                let r = self.store.daemon().network_disconnect(&network, &container);
                if r.is_ok() {
                    for (net, ip, mac) in held {
                        if let Some(mac) = mac {
                            self.store.unpublish_endpoint(&net, mac);
                        }
                        if let Err(e) = self.store.release(&net, ip) {
                            tracing::warn!("store: cannot give back {ip} on {net}: {e:#}");
                        }
                    }
                }
                j(r.map(|_| serde_json::Value::Null))
            }
            other => return Err(Box::new(other)),
        })
    }
}

impl Handler for StoreFront {
    fn handle(&mut self, req: Request) -> Reply {
        match self.handle_global(req) {
            Ok(Ok(data)) => Reply::Ok { data },
            Ok(Err(e)) => Reply::Error {
                message: format!("{e:#}"),
            },
            Err(req) => self.store.daemon().handle(*req),
        }
    }

    fn reconcile(&mut self) {
        self.store.daemon().reconcile()
    }
}
