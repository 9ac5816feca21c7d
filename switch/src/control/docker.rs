//! Docker's front end: the daemon answers Docker's legacy plugin protocol (HTTP/1.1 over the
//! Unix socket `/run/docker/plugins/NAME.sock`, JSON bodies) as a `NetworkDriver` and an
//! `IpamDriver`, so that `docker network create -d vswitch --ipam-driver vswitch` makes an
//! ordinary vswitch network and `docker run --network` gives containers a vswitch port.
//!
//! Everything goes through the daemon's public API ([`Daemon`]'s `pub` methods); this module
//! only translates. How Docker's objects map onto vswitch's:
//!
//! * **Networks** are named by the first 12 hex digits of Docker's network id (what `docker
//!   network ls` shows in its ID column): Docker tells a driver the id, never the name.
//! * **Endpoints** become external vswitch containers named by the first 12 hex digits of the
//!   endpoint id ([`Daemon::attach_unplaced`]): a veth pair whose container end stays in the
//!   host's namespace until Docker moves it into the container after `Join`.
//! * **Address pools** are identified by their subnet (`PoolID` "10.70.0.0/24"): IPAM calls come
//!   before `CreateNetwork`, so a requested pool is held here (in memory) until the network is
//!   made; from then on the network's own pool in the daemon's state answers, across restarts
//!   of either side. Endpoint addresses are leases of that pool, reserved under a
//!   `docker-ipam-*` owner until `CreateEndpoint` hands them to the endpoint.
//!
//! Errors are answered as Docker reads them: `{"Err": "..."}` (network driver) or
//! `{"Error": "..."}` (IPAM), with status 200; `docker` prints the message.

use super::api::RuntimeRef;
use super::daemon::{unplaced_peer_name, Daemon};
use super::docker_names::{Lookup, FRONTEND};
use super::error::{bail, err, Context, Result};
use super::http;
use super::server::{lock, panic_message, Limits, Slot};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where dockerd looks for plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";
/// The plugin's default name: `docker network create -d vswitch --ipam-driver vswitch`.
pub const DEFAULT_PLUGIN_NAME: &str = "vswitch";
/// The `-o` option that picks the vswitch driver of a network (`bridge` by default).
pub const DRIVER_OPTION: &str = "vswitch.driver";
/// Owner prefix of the addresses the IPAM side reserves before their endpoint exists.
const IPAM_OWNER: &str = "docker-ipam-";

/// The `-o KEY=VALUE` options a vswitch network takes through Docker.
const KNOWN_OPTIONS: &[&str] = &[
    DRIVER_OPTION,
    "mtu",
    "com.docker.network.driver.mtu",
    "port_security",
    "flood_pps",
    "flood_burst",
    "parent",
    "vni",
    "port",
    "dstport",
    "vtep",
    "peers",
];

/// Binds the plugin socket `DIR/NAME.sock` (mode 0600: dockerd runs as root). A socket left by
/// a daemon that died is replaced; a live one is an error.
pub fn bind(dir: &Path, name: &str) -> Result<(UnixListener, PathBuf)> {
    super::daemon::check_name("Docker plugin", name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.sock"));
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "another process serves the Docker plugin {name} on {}; stop it or pick another --docker-plugin NAME",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((l, path))
}

/// Serves the plugin socket on a thread of its own: one thread per connection, at most
/// `limits.max_clients` at once, each request within `limits.timeout`. With `docker_api`
/// (dockerd's API socket), Docker's names of the networks and containers are looked up and
/// recorded ([`super::docker_names`]).
pub fn serve(
    listener: UnixListener,
    daemon: Arc<Mutex<Daemon>>,
    limits: Limits,
    docker_api: Option<PathBuf>,
) -> Result<()> {
    let names = match docker_api {
        Some(api) => Some(super::docker_names::spawn(api, Arc::clone(&daemon))?),
        None => None,
    };
    let plugin = Arc::new(Mutex::new(Plugin {
        names,
        ..Plugin::default()
    }));
    std::thread::Builder::new()
        .name("vswitch-docker".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(conn) = conn else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if active.load(Ordering::SeqCst) >= limits.max_clients {
                    let body = br#"{"Err":"vswitch: too many plugin clients at once; try again"}"#;
                    let _ = conn.set_nonblocking(true);
                    let _ = (&conn).write_all(&http::response(503, "Busy", body, false));
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let slot = Slot(Arc::clone(&active));
                let (p, d, l) = (Arc::clone(&plugin), Arc::clone(&daemon), limits.clone());
                let _ = std::thread::Builder::new()
                    .name("vswitch-docker-client".into())
                    .spawn(move || {
                        let _slot = slot;
                        serve_conn(conn, &p, &d, &l);
                    });
            }
        })?;
    Ok(())
}

/// Serves one connection: requests one after another (Docker keeps connections alive) until
/// the client closes, asks to close, sends something this parser refuses or takes longer than
/// the timeout for one request.
fn serve_conn(mut conn: UnixStream, plugin: &Mutex<Plugin>, d: &Mutex<Daemon>, l: &Limits) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let deadline = Instant::now() + l.timeout;
        let (req, used) = loop {
            match http::parse(&buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    let (code, reason) = e.status();
                    let body = json!({ "Err": e.to_string(), "Error": e.to_string() });
                    let _ = conn.write_all(&http::response(
                        code,
                        reason,
                        body.to_string().as_bytes(),
                        false,
                    ));
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        };
        buf.drain(..used.min(buf.len()));
        let body = {
            let mut p = lock(plugin);
            let mut g = lock(d);
            match catch_unwind(AssertUnwindSafe(|| p.call(&mut g, &req.path, &req.body))) {
                Ok(v) => v,
                Err(e) => {
                    let m = format!("vswitch: the call panicked ({})", panic_message(&*e));
                    tracing::error!("docker plugin: {} {m}", req.path);
                    json!({ "Err": m, "Error": m })
                }
            }
        };
        let _ = conn.set_write_timeout(Some(l.timeout));
        let out = http::response(200, "OK", body.to_string().as_bytes(), req.keep_alive);
        if conn.write_all(&out).is_err() || !req.keep_alive {
            return;
        }
    }
}

/// A pool requested through IPAM whose network Docker has not created yet.
#[derive(Clone, Debug)]
struct Pending {
    ip_range: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
}

/// The plugin's own state: pools between `RequestPool` and `CreateNetwork` (everything else is
/// the daemon's, persisted in its state).
#[derive(Debug, Default)]
pub struct Plugin {
    pending: BTreeMap<Ipv4Net, Pending>,
    /// Where Docker's names are looked up, if they are.
    names: Option<crossbeam_channel::Sender<Lookup>>,
}

impl Plugin {
    fn look_up(&self, network_id: &str, network: &str, endpoint: Option<(&str, &str)>) {
        if let Some(tx) = &self.names {
            let _ = tx.send(Lookup {
                network_id: network_id.to_string(),
                network: network.to_string(),
                endpoint: endpoint.map(|(e, c)| (e.to_string(), c.to_string())),
            });
        }
    }
}

/// Which error field a reply carries.
#[derive(Clone, Copy)]
enum Api {
    Network,
    Ipam,
    Plugin,
}

fn answer(api: Api, r: Result<Value>) -> Value {
    match (r, api) {
        (Ok(v), _) => v,
        (Err(e), Api::Ipam) => json!({ "Error": format!("vswitch: {e:#}") }),
        (Err(e), _) => json!({ "Err": format!("vswitch: {e:#}") }),
    }
}

fn body<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T> {
    let b = if b.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| err!("malformed request body: {e}"))
}

/// The vswitch name of a Docker object: the first 12 hex digits of its 64-digit id.
pub fn short_id(kind: &str, id: &str) -> Result<String> {
    match id.get(..12) {
        Some(s) if id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(s.to_ascii_lowercase()),
        _ => bail!("invalid {kind} id {id:?}: expected Docker's hex id"),
    }
}

/// `"10.70.0.5/24"` (or a bare address) to the address.
fn parse_cidr_addr(what: &str, s: &str) -> Result<Ipv4Addr> {
    let a = s.split_once('/').map_or(s, |(a, _)| a);
    a.parse().map_err(|_| {
        err!("invalid {what} {s:?}: expected an IPv4 address (vswitch has no IPv6 yet)")
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestPool {
    #[serde(rename = "Pool")]
    pool: String,
    #[serde(rename = "SubPool")]
    sub_pool: String,
    #[serde(rename = "V6")]
    v6: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PoolAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IpamData {
    #[serde(rename = "Pool")]
    pool: String,
    #[serde(rename = "Gateway")]
    gateway: String,
    #[serde(rename = "AuxAddresses")]
    aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data")]
    ipv4: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    ipv6: Option<Vec<IpamData>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Iface {
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "MacAddress")]
    mac: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface")]
    interface: Option<Iface>,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, Value>>,
}

impl EndpointReq {
    fn names(&self) -> Result<(String, String)> {
        Ok((
            short_id("network", &self.network_id)?,
            short_id("endpoint", &self.endpoint_id)?,
        ))
    }
}

/// One `-p` binding as Docker hands it over (`com.docker.network.portmap`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct PortBinding {
    #[serde(rename = "Proto")]
    proto: u8,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "HostIP")]
    host_ip: String,
    #[serde(rename = "HostPort")]
    host_port: u16,
    #[serde(rename = "HostPortEnd")]
    host_port_end: u16,
}

/// Docker's port map to vswitch's `-p` specs (`[HOST_IP:]HOST_PORT:PORT/PROTO`). IPv6 host
/// addresses are skipped (vswitch publishes on IPv4).
fn publish_specs(options: Option<&BTreeMap<String, Value>>) -> Result<Vec<String>> {
    let Some(v) = options.and_then(|o| o.get("com.docker.network.portmap")) else {
        return Ok(Vec::new());
    };
    let maps: Vec<PortBinding> = match v {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v.clone()).map_err(|e| err!("malformed port map: {e}"))?,
    };
    let mut out = Vec::new();
    for m in maps {
        let proto = match m.proto {
            6 => "tcp",
            17 => "udp",
            p => bail!("cannot publish protocol {p}: vswitch publishes tcp and udp"),
        };
        if m.host_ip.contains(':') {
            continue;
        }
        if m.host_port == 0 {
            bail!(
                "publishing port {}/{proto} needs a host port: give -p HOST_PORT:{}",
                m.port,
                m.port
            );
        }
        if m.host_port_end != 0 && m.host_port_end != m.host_port {
            bail!(
                "cannot publish the host port range {}-{}: give one host port per -p",
                m.host_port,
                m.host_port_end
            );
        }
        let host = match m.host_ip.as_str() {
            "" | "0.0.0.0" => String::new(),
            ip => format!("{ip}:"),
        };
        out.push(format!("{host}{}:{}/{proto}", m.host_port, m.port));
    }
    Ok(out)
}

/// A JSON option value as the string `-o` gave.
fn option_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The vswitch request of a Docker `CreateNetwork` (with the held pool's ip-range).
fn network_request(
    name: &str,
    r: &CreateNetwork,
    ip_range: Option<Ipv4Net>,
) -> Result<super::api::NetworkCreate> {
    let opts = r.options.clone().unwrap_or_default();
    if opts
        .get("com.docker.network.enable_ipv6")
        .is_some_and(|v| v.as_bool() == Some(true))
        || r.ipv6.as_ref().is_some_and(|v| !v.is_empty())
    {
        bail!("vswitch networks have no IPv6 yet; create the network without --ipv6");
    }
    let internal = opts
        .get("com.docker.network.internal")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    let generic: BTreeMap<String, String> = match opts.get("com.docker.network.generic") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), option_string(v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    for k in generic.keys() {
        if !KNOWN_OPTIONS.contains(&k.as_str()) {
            bail!(
                "unknown option -o {k}: vswitch networks take {}",
                KNOWN_OPTIONS.join(", ")
            );
        }
    }
    let data = match r.ipv4.as_deref() {
        Some([one]) => one,
        Some([]) | None => bail!("no IPv4 pool was given: create the network with --ipam-driver of this plugin or a --subnet"),
        Some(_) => bail!("vswitch networks have one subnet; give a single --subnet"),
    };
    let subnet: Ipv4Net = data.pool.parse().map_err(|_| {
        err!(
            "invalid pool {:?}: expected a subnet like 10.70.0.0/24",
            data.pool
        )
    })?;
    let gateway = match data.gateway.as_str() {
        "" => None,
        g => Some(parse_cidr_addr("gateway", g)?.to_string()),
    };
    let mut aux = Vec::new();
    for (k, v) in data.aux_addresses.clone().unwrap_or_default() {
        aux.push(format!("{k}={}", parse_cidr_addr("aux address", &v)?));
    }
    Ok(super::api::NetworkCreate {
        name: name.to_string(),
        driver: generic
            .get(DRIVER_OPTION)
            .cloned()
            .unwrap_or_else(|| "bridge".into()),
        subnet: Some(subnet.trunc().to_string()),
        gateway,
        ip_range: ip_range.map(|r| r.to_string()),
        aux_addresses: aux,
        internal,
        options: generic
            .iter()
            .filter(|(k, _)| k.as_str() != DRIVER_OPTION)
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
    })
}

/// Reads a call's body the way the plugin does before it reaches the daemon: the requests of
/// every kind, a `CreateNetwork`'s translation into a vswitch network and an endpoint's port
/// map. For the fuzz target `docker_request` and the "never panics" tests: untrusted bytes
/// give a result or an error, never a panic.
pub fn translate_untrusted(path: &str, b: &[u8]) {
    match path.trim_start_matches('/') {
        "NetworkDriver.CreateNetwork" => {
            if let Ok(r) = body::<CreateNetwork>(b) {
                if let Ok(name) = short_id("network", &r.network_id) {
                    let _ = network_request(&name, &r, None);
                }
            }
        }
        "IpamDriver.RequestPool" => {
            let _ = body::<RequestPool>(b);
        }
        "IpamDriver.RequestAddress" | "IpamDriver.ReleaseAddress" => {
            if let Ok(r) = body::<PoolAddress>(b) {
                let _ = parse_cidr_addr("address", &r.address);
                let _ = r.pool_id.parse::<Ipv4Net>();
            }
        }
        _ => {
            if let Ok(r) = body::<EndpointReq>(b) {
                let _ = r.names();
                let _ = publish_specs(r.options.as_ref());
                if let Some(i) = r.interface {
                    let _ = parse_cidr_addr("address", &i.address);
                    let _ = i.mac.parse::<MacAddr>();
                }
            }
        }
    }
}

impl Plugin {
    /// Answers one call of the plugin protocol (`path` is `/Plugin.Activate`,
    /// `/NetworkDriver.Join`, ...).
    pub fn call(&mut self, d: &mut Daemon, path: &str, b: &[u8]) -> Value {
        let method = path.trim_start_matches('/');
        tracing::debug!("docker plugin: {method}");
        let r = match method {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
            }
            "NetworkDriver.CreateNetwork" => {
                return answer(Api::Network, self.create_network(d, b).map(|_| json!({})))
            }
            "NetworkDriver.DeleteNetwork" => {
                return answer(Api::Network, delete_network(d, b).map(|_| json!({})))
            }
            "NetworkDriver.CreateEndpoint" => return answer(Api::Network, create_endpoint(d, b)),
            "NetworkDriver.DeleteEndpoint" => {
                return answer(Api::Network, delete_endpoint(d, b).map(|_| json!({})))
            }
            "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
            "NetworkDriver.Join" => {
                let r = join(d, b);
                if let (Ok(_), Ok(req)) = (&r, body::<EndpointReq>(b)) {
                    if let Ok((network, name)) = req.names() {
                        self.look_up(&req.network_id, &network, Some((&req.endpoint_id, &name)));
                    }
                }
                return answer(Api::Network, r);
            }
            "NetworkDriver.Leave" => return answer(Api::Network, leave(d, b).map(|_| json!({}))),
            "NetworkDriver.ProgramExternalConnectivity" => {
                return answer(Api::Network, program(d, b).map(|_| json!({})))
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                return answer(Api::Network, revoke(d, b).map(|_| json!({})))
            }
            "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "NetworkDriver.AllocateNetwork"
            | "NetworkDriver.FreeNetwork" => Ok(json!({})),
            "IpamDriver.GetCapabilities" => Ok(json!({
                "RequiresMACAddress": false,
                "RequiresRequestReplay": false
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": "vswitch",
                "GlobalDefaultAddressSpace": "vswitch-global"
            })),
            "IpamDriver.RequestPool" => return answer(Api::Ipam, self.request_pool(d, b)),
            "IpamDriver.ReleasePool" => {
                return answer(Api::Ipam, self.release_pool(b).map(|_| json!({})))
            }
            "IpamDriver.RequestAddress" => return answer(Api::Ipam, self.request_address(d, b)),
            "IpamDriver.ReleaseAddress" => {
                return answer(Api::Ipam, release_address(d, b).map(|_| json!({})))
            }
            m if m.starts_with("IpamDriver.") => {
                return answer(Api::Ipam, Err(err!("unknown call {m}")))
            }
            m => Err(err!("unknown call {m}")),
        };
        answer(Api::Plugin, r)
    }

    fn request_pool(&mut self, d: &mut Daemon, b: &[u8]) -> Result<Value> {
        let r: RequestPool = body(b)?;
        if r.v6 {
            bail!("vswitch networks have no IPv6 yet; create the network without --ipv6");
        }
        let subnet = match r.pool.as_str() {
            "" => d.free_subnet(&self.pending.keys().copied().collect::<Vec<_>>())?,
            p => p.parse::<Ipv4Net>().map_err(|_| {
                err!("invalid subnet {p:?}: expected an IPv4 subnet like 10.70.0.0/24")
            })?,
        };
        if subnet.trunc() != subnet {
            bail!(
                "invalid subnet {subnet}: it has host bits set; did you mean {}?",
                subnet.trunc()
            );
        }
        let ip_range = match r.sub_pool.as_str() {
            "" => None,
            s => {
                let n: Ipv4Net = s.parse().map_err(|_| {
                    err!("invalid ip-range {s:?}: expected a subnet like 10.70.0.128/25")
                })?;
                if !subnet.contains(&n) {
                    bail!(
                        "ip-range {n} is not inside subnet {subnet}; give an --ip-range inside it"
                    );
                }
                Some(n)
            }
        };
        for n in d.network_ls() {
            let Some(s) = n.subnet.as_deref().and_then(|s| s.parse::<Ipv4Net>().ok()) else {
                continue;
            };
            if ipam::overlaps(&s, &subnet) {
                bail!(
                    "subnet {subnet} overlaps {s} of network {}; choose another --subnet (`vswitch network ls` lists them)",
                    n.name
                );
            }
        }
        if let Some(s) = self.pending.keys().find(|s| ipam::overlaps(s, &subnet)) {
            bail!("subnet {subnet} overlaps {s}, a network being created; choose another --subnet");
        }
        self.pending.insert(
            subnet,
            Pending {
                ip_range,
                gateway: None,
            },
        );
        Ok(json!({ "PoolID": subnet.to_string(), "Pool": subnet.to_string(), "Data": {} }))
    }

    fn release_pool(&mut self, b: &[u8]) -> Result<()> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct R {
            #[serde(rename = "PoolID")]
            pool_id: String,
        }
        let r: R = body(b)?;
        if let Ok(s) = r.pool_id.parse::<Ipv4Net>() {
            self.pending.remove(&s);
        }
        Ok(())
    }

    fn request_address(&mut self, d: &mut Daemon, b: &[u8]) -> Result<Value> {
        let r: PoolAddress = body(b)?;
        let subnet: Ipv4Net = r
            .pool_id
            .parse()
            .map_err(|_| err!("unknown pool {:?}", r.pool_id))?;
        let want = match r.address.as_str() {
            "" => None,
            a => Some(parse_cidr_addr("address", a)?),
        };
        if let Some(a) = want.filter(|a| !subnet.contains(a)) {
            bail!("address {a} is outside the pool {subnet} of this network; pick an --ip inside {subnet}");
        }
        let gateway_call = r.options.as_ref().and_then(|o| o.get("RequestAddressType"))
            == Some(&"com.docker.network.gateway".to_string());
        let with_prefix =
            |a: Ipv4Addr| json!({ "Address": format!("{a}/{}", subnet.prefix_len()), "Data": {} });
        if let Some(net) = network_of_pool(d, &subnet) {
            if gateway_call {
                let gw = d.network_inspect(&net)?.gateway;
                let gw = gw.as_deref().and_then(|g| g.parse().ok());
                return Ok(with_prefix(
                    gw.or(want).unwrap_or_else(|| first_host(&subnet)),
                ));
            }
            let owner = format!("{IPAM_OWNER}{}", &super::dataplane::new_port_name()[3..]);
            let ip = d.reserve_address(&net, want, &owner)?;
            return Ok(with_prefix(ip));
        }
        let Some(p) = self.pending.get_mut(&subnet) else {
            bail!("unknown pool {subnet}: it was not requested from this plugin, or its network is gone");
        };
        if gateway_call {
            let gw = want.unwrap_or_else(|| first_host(&subnet));
            p.gateway = Some(gw);
            return Ok(with_prefix(gw));
        }
        // An aux address before the network exists: it is reserved by the network's spec.
        let a = want.ok_or_else(|| err!("the network of pool {subnet} does not exist yet"))?;
        Ok(with_prefix(a))
    }

    fn create_network(&mut self, d: &mut Daemon, b: &[u8]) -> Result<()> {
        let r: CreateNetwork = body(b)?;
        let name = short_id("network", &r.network_id)?;
        let subnet = r
            .ipv4
            .as_deref()
            .and_then(|v| v.first())
            .and_then(|p| p.pool.parse::<Ipv4Net>().ok());
        let ip_range = subnet
            .and_then(|s| self.pending.get(&s))
            .and_then(|p| p.ip_range);
        let req = network_request(&name, &r, ip_range)?;
        d.network_create(req)?;
        self.look_up(&r.network_id, &name, None);
        if let Some(s) = subnet {
            self.pending.remove(&s);
        }
        tracing::info!("docker plugin: network {} created", name);
        Ok(())
    }
}

fn first_host(s: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(s.network()).saturating_add(1))
}

/// The vswitch network whose subnet is `subnet`.
fn network_of_pool(d: &Daemon, subnet: &Ipv4Net) -> Option<String> {
    let s = subnet.to_string();
    d.network_ls()
        .into_iter()
        .find(|n| n.subnet.as_deref() == Some(s.as_str()))
        .map(|n| n.name)
}

fn release_address(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: PoolAddress = body(b)?;
    let (Ok(subnet), Ok(ip)) = (
        r.pool_id.parse::<Ipv4Net>(),
        parse_cidr_addr("address", &r.address),
    ) else {
        return Ok(());
    };
    if let Some(net) = network_of_pool(d, &subnet) {
        d.release_reserved(&net, ip, |owner| owner.starts_with(IPAM_OWNER))?;
    }
    Ok(())
}

fn exists(d: &Daemon, network: &str) -> bool {
    d.network_ls().iter().any(|n| n.name == network)
}

fn delete_network(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: EndpointReq = body(b)?;
    let name = short_id("network", &r.network_id)?;
    if exists(d, &name) {
        d.network_rm(&name)?;
    }
    Ok(())
}

fn create_endpoint(d: &mut Daemon, b: &[u8]) -> Result<Value> {
    let r: EndpointReq = body(b)?;
    let (network, name) = r.names()?;
    if !exists(d, &network) {
        bail!("network {network} is not a vswitch network (it may have been removed with `vswitch network rm`); remove it with `docker network rm` and create it again");
    }
    let iface = r.interface.unwrap_or_default();
    let ip = parse_cidr_addr("endpoint address", &iface.address)?;
    let mac: Option<MacAddr> = match iface.mac.as_str() {
        "" => None,
        m => Some(m.parse().map_err(|_| err!("invalid MAC address {m:?}"))?),
    };
    let owner = d.address_owner(&network, ip);
    let reserved_by = owner.as_deref().filter(|o| o.starts_with(IPAM_OWNER));
    let runtime = Some(RuntimeRef::new(FRONTEND, &r.endpoint_id));
    let (info, _peer) = d.attach_unplaced(&name, &network, ip, mac, reserved_by, runtime)?;
    let ours = info
        .endpoints
        .first()
        .map(|e| e.mac.clone())
        .unwrap_or_default();
    Ok(if mac.is_some() {
        json!({})
    } else {
        json!({ "Interface": { "MacAddress": ours } })
    })
}

fn has_container(d: &Daemon, name: &str) -> bool {
    d.container_info(name).is_ok()
}

fn delete_endpoint(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: EndpointReq = body(b)?;
    let (_, name) = r.names()?;
    if has_container(d, &name) {
        d.rm(&name, true)?;
    }
    Ok(())
}

fn join(d: &mut Daemon, b: &[u8]) -> Result<Value> {
    let r: EndpointReq = body(b)?;
    let (network, name) = r.names()?;
    let info = d.container_info(&name).map_err(|_| {
        err!("endpoint {name} is unknown to vswitch (was vswitch's state removed?); restart the container")
    })?;
    let ep = info
        .endpoints
        .first()
        .ok_or_else(|| err!("endpoint {name} has no link"))?;
    let peer = unplaced_peer_name(&ep.port_name);
    let net = d.network_inspect(&network)?;
    let mut out = json!({
        "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" },
    });
    match (net.internal, net.gateway) {
        (false, Some(gw)) => out["Gateway"] = json!(gw),
        _ => out["DisableGatewayService"] = json!(true),
    }
    Ok(out)
}

fn leave(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: EndpointReq = body(b)?;
    let (network, name) = r.names()?;
    if has_container(d, &name) {
        d.unpublish_network(&name, &network)?;
    }
    Ok(())
}

fn program(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: EndpointReq = body(b)?;
    let (network, name) = r.names()?;
    let specs = publish_specs(r.options.as_ref())?;
    // Called again for the same endpoint (a restart of dockerd): publish once.
    d.unpublish_network(&name, &network)?;
    d.publish(&name, &network, &specs)
}

fn revoke(d: &mut Daemon, b: &[u8]) -> Result<()> {
    let r: EndpointReq = body(b)?;
    let (network, name) = r.names()?;
    if has_container(d, &name) {
        d.unpublish_network(&name, &network)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn ids_map_to_their_first_twelve_digits() {
        assert_eq!(short_id("network", NID).unwrap(), "0123456789ab");
        assert!(short_id("network", "0123").is_err());
        assert!(short_id("network", "../../etc/passwd-aaaaaaaaaa").is_err());
        assert!(short_id("network", "ééééééééééééé").is_err());
    }

    #[test]
    fn create_network_translates_docker_options() {
        let r: CreateNetwork = serde_json::from_value(json!({
            "NetworkID": NID,
            "Options": {
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.internal": true,
                "com.docker.network.generic": { "mtu": "1400", "vswitch.driver": "bridge" }
            },
            "IPv4Data": [{ "AddressSpace": "vswitch", "Pool": "10.70.0.0/24",
                           "Gateway": "10.70.0.1/24", "AuxAddresses": { "r": "10.70.0.9/24" } }],
            "IPv6Data": []
        }))
        .unwrap();
        let c = network_request("n", &r, "10.70.0.128/25".parse().ok()).unwrap();
        assert_eq!(c.subnet.as_deref(), Some("10.70.0.0/24"));
        assert_eq!(c.gateway.as_deref(), Some("10.70.0.1"));
        assert_eq!(c.ip_range.as_deref(), Some("10.70.0.128/25"));
        assert_eq!(c.aux_addresses, vec!["r=10.70.0.9".to_string()]);
        assert!(c.internal);
        assert_eq!(
            (c.driver.as_str(), c.options),
            ("bridge", vec!["mtu=1400".to_string()])
        );
    }

    #[test]
    fn unknown_option_and_ipv6_are_refused_with_what_to_do() {
        let mut r: CreateNetwork = serde_json::from_value(json!({
            "NetworkID": NID,
            "Options": { "com.docker.network.generic": { "colour": "blue" } },
            "IPv4Data": [{ "Pool": "10.70.0.0/24" }]
        }))
        .unwrap();
        let e = network_request("n", &r, None).unwrap_err().to_string();
        assert!(
            e.contains("unknown option -o colour") && e.contains("mtu"),
            "{e}"
        );
        r.options = None;
        r.ipv6 = Some(vec![IpamData::default()]);
        let e = network_request("n", &r, None).unwrap_err().to_string();
        assert!(e.contains("without --ipv6"), "{e}");
    }

    #[test]
    fn port_map_becomes_publish_specs() {
        let o: BTreeMap<String, Value> = serde_json::from_value(json!({
            "com.docker.network.portmap": [
                { "Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080 },
                { "Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 5353 },
                { "Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080 }
            ]
        }))
        .unwrap();
        assert_eq!(
            publish_specs(Some(&o)).unwrap(),
            vec![
                "8080:80/tcp".to_string(),
                "127.0.0.1:5353:53/udp".to_string()
            ]
        );
        let o: BTreeMap<String, Value> = serde_json::from_value(json!({
            "com.docker.network.portmap": [{ "Proto": 132, "Port": 80, "HostPort": 80 }]
        }))
        .unwrap();
        assert!(publish_specs(Some(&o))
            .unwrap_err()
            .to_string()
            .contains("tcp and udp"));
    }
}
