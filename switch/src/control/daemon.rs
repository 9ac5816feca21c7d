//! The daemon: the desired state (networks, containers, leases) and the one API that changes
//! it, turned into namespaces, links and worker commands, persisted after every change and
//! restored on start.
//!
//! * **The API** is the `pub` methods of [`Daemon`]: [`Daemon::network_create`],
//!   [`Daemon::network_rm`], [`Daemon::network_connect`], [`Daemon::run`], ... Each checks
//!   its request, changes the state, programs the switch and saves, or changes nothing and
//!   returns an error that says what to do. [`Daemon::handle`] maps the control socket's
//!   JSON requests onto it; a new front end (Docker's plugin protocol, CNI, a distributed
//!   store) calls the same methods and never the worker or netlink itself.
//! * **Drivers** ([`super::driver`]) do what differs between bridge, macvlan and overlay
//!   networks; the daemon calls them with the state and the live dataplane
//!   ([`super::dataplane::Live`]).
//! * **Multi-step changes** run in a [`Transaction`]: each step records its undo, and a
//!   failure undoes the done steps in reverse order.

use super::api::*;
use super::dataplane::{new_port_name, Live, PortRecord, Ports};
use super::driver::{overlay::OVERLAY, Ctx, Drivers, GatewayRole, NetworkDriver};
use super::egress;
use super::error::{bail, err, Context, Result};
use super::policy;
use super::state::{ContainerRecord, EndpointRecord, Mode, NetworkRecord, State};
use super::txn::Transaction;
use crate::netns;
use crate::pipeline::{NetworkId, PipelineConfig, PortPolicy, PortRole};
use crate::port::afpacket::AfPacketPort;
use crate::port::tap::{TapConfig, TapPort};
use crate::port::xdp::XdpPort;
use crate::port::{Port, PortId};
use crate::wire::MacAddr;
use crate::worker::{Command, WorkerHandle};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "supervise.rs"]
pub mod supervise;

#[path = "metrics.rs"]
pub mod metrics;

#[path = "capture.rs"]
pub mod capture;

pub use super::driver::bridge::DEFAULT_MTU;
pub use super::driver::macvlan::{Parent, MACVLAN};

/// How a new endpoint is made, beyond its network and address.
#[derive(Clone, Debug, Default)]
struct EndpointOpts {
    /// veth or TAP (else the daemon's or the driver's default).
    attach: Option<AttachMode>,
    /// Name inside the container (else the lowest free `ethN`).
    ifname: Option<String>,
    /// MAC of the interface (else the one derived from the address).
    mac: Option<MacAddr>,
    /// MTU of the interface, at most the network's (else the network's).
    mtu: Option<u32>,
}

/// The default network, created on first start like Docker's.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Daemon configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    pub pipeline: PipelineConfig,
    /// Attach mode for new endpoints unless a request names one; without it, TAP on overlay
    /// networks and veth elsewhere ([`default_attach`]).
    pub default_attach: Option<AttachMode>,
    /// How veth (AF_PACKET) ports receive.
    pub rx_mode: crate::port::afpacket::RxMode,
    /// Socket buffer of each veth (AF_PACKET) port, bytes (`vswitch daemon --port-buffer`).
    pub port_buffer: u32,
    /// Whether VXLAN tunnel ports get a tunnel TAP for whole TCP GSO frames
    /// ([`crate::port::vxlan_tap`]).
    pub tunnel_offload: TunnelOffload,
    /// Test hooks on the control socket (`{"op":"inject_panic"}`): `vswitch daemon
    /// --test-hooks` or `VSWITCH_TEST_HOOKS=1`. Off in production: nobody on the socket can
    /// crash the worker then.
    pub test_hooks: bool,
    /// How the switch worker thread is scheduled (`vswitch daemon --worker-nice`,
    /// `--busy-poll`).
    pub worker: crate::worker::WorkerTuning,
}

/// `vswitch daemon --tunnel-offload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelOffload {
    /// Where the kernel has it, unless the host's firewall drops forwarded packets by default
    /// (the TAP's packets are forwarded).
    Auto,
    /// Where the kernel has it (the host's firewall accepts what comes in on `vsx*`).
    On,
    /// Never: every frame is cut into datagrams on the VXLAN socket.
    Off,
}

/// The daemon's state and its handle on the worker.
pub struct Daemon {
    cfg: Config,
    state: State,
    worker: WorkerHandle,
    ports: Ports,
    children: BTreeMap<String, std::process::Child>,
    /// What differs between kinds of network, and their runtime state (tunnels, uplinks).
    drivers: Drivers,
    /// Where a worker that panicked reports ([`supervise`]).
    exits: (
        crossbeam_channel::Sender<crate::worker::WorkerExit>,
        crossbeam_channel::Receiver<crate::worker::WorkerExit>,
    ),
    /// Panics and restarts of the worker.
    health: supervise::Health,
    /// Starts a worker: at start, and again after one panicked.
    spawner: Spawner,
    /// The trace being read (`vswitch trace`), if any.
    trace: Option<TraceSession>,
    /// Endpoints of other hosts on overlay networks, as a store told them
    /// ([`Daemon::remote_endpoint`]): (network, MAC) -> (IP, the remote VTEP). Not persisted
    /// (the store tells them again); programmed again into a new worker and whenever their
    /// VTEP becomes a peer.
    remotes: BTreeMap<(String, [u8; 6]), (Ipv4Addr, Ipv4Addr)>,
    /// The running `vswitch capture`, if any.
    captures: capture::Sessions,
}

/// A trace armed in the worker and read by a client.
#[derive(Debug)]
struct TraceSession {
    id: u64,
    count: u32,
    got: u32,
    rx: crossbeam_channel::Receiver<crate::trace::TraceRecord>,
}

/// What starts the daemon's worker: given the configuration, the worker's generation and the
/// channel on which it reports a panic. [`Daemon::start`] spawns the real one;
/// [`Daemon::start_with_worker`] takes another (a fake worker in tests).
pub type Spawner = std::sync::Arc<
    dyn Fn(
            &Config,
            u64,
            crossbeam_channel::Sender<crate::worker::WorkerExit>,
        ) -> Result<WorkerHandle>
        + Send
        + Sync,
>;

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_dir", &self.cfg.state_dir)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a user-supplied network or container name.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        );
    }
    Ok(())
}

/// The MAC address Docker would give `ip` (02:42 followed by the address).
pub fn mac_for(ip: Ipv4Addr) -> MacAddr {
    MacAddr::local_from(ip.octets())
}

/// Parses a `-o KEY=VALUE` list.
fn parse_options(opts: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for o in opts {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| err!("invalid option {o:?}: expected KEY=VALUE, e.g. -o mtu=1400"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| err!("invalid {what} {s:?}: expected an IPv4 address like 172.18.0.5"))
}

fn parse_cidr(what: &str, s: &str) -> Result<ipnet::Ipv4Net> {
    ipam::parse_subnet(s).map_err(|e| err!("invalid {what}: {e}"))
}

impl Daemon {
    /// Loads the state, starts the worker and restores networks and containers.
    pub fn start(cfg: Config) -> Result<Daemon> {
        Self::start_with_worker(cfg, std::sync::Arc::new(Self::spawn_worker))
    }

    /// [`Daemon::start`] with the worker that `spawner` starts.
    pub fn start_with_worker(cfg: Config, spawner: Spawner) -> Result<Daemon> {
        std::fs::create_dir_all(&cfg.state_dir).with_context(|| {
            format!("cannot create state directory {}", cfg.state_dir.display())
        })?;
        let state = State::load(&cfg.state_dir)?;
        let exits = crossbeam_channel::unbounded();
        let worker = spawner(&cfg, 0, exits.0.clone())?;
        let mut d = Daemon {
            cfg,
            state,
            worker,
            ports: Ports::default(),
            children: BTreeMap::new(),
            drivers: Drivers::default(),
            exits,
            health: Default::default(),
            spawner,
            trace: None,
            remotes: BTreeMap::new(),
            captures: Default::default(),
        };
        d.restore()?;
        if !d.state.networks.contains_key(DEFAULT_NETWORK) {
            d.create_default_network()?;
        }
        Ok(d)
    }

    /// Configuration of the AF_PACKET ports of containers' veth host ends.
    fn afpacket_config(&self) -> crate::port::afpacket::AfPacketConfig {
        crate::port::afpacket::AfPacketConfig {
            rx: self.cfg.rx_mode,
            sock_buf: self.cfg.port_buffer,
            ..Default::default()
        }
    }

    fn save(&self) -> Result<()> {
        self.state.save(&self.cfg.state_dir)
    }

    /// Runs `f` with the drivers and their context: the desired state and the live dataplane.
    fn with_drivers<R>(&mut self, f: impl FnOnce(&mut Drivers, &mut Ctx) -> R) -> R {
        let Daemon {
            cfg,
            state,
            worker,
            ports,
            drivers,
            ..
        } = self;
        let mut dp = Live {
            worker: &*worker,
            ports,
            cfg: &*cfg,
        };
        let mut cx = Ctx { state, dp: &mut dp };
        f(drivers, &mut cx)
    }

    /// Runs `f` with the driver of network `net` (nothing for a driver this daemon does not
    /// know: a state written by a later version).
    fn with_driver<R: Default>(
        &mut self,
        net: &NetworkRecord,
        f: impl FnOnce(&mut dyn NetworkDriver, &mut Ctx) -> R,
    ) -> R {
        self.with_drivers(|drivers, cx| match drivers.get_mut(&net.driver) {
            Some(d) => f(d, cx),
            None => R::default(),
        })
    }

    /// The driver of network `net`.
    fn driver(&self, net: &NetworkRecord) -> Option<&dyn NetworkDriver> {
        self.drivers.get(&net.driver)
    }

    /// Programs a fresh worker from the daemon's state: networks, the host's ports, overlay
    /// tunnels, macvlan uplinks, containers' endpoints and published ports. Runs at start and
    /// after a worker panicked ([`Daemon::restart_worker`]); expects the runtime tables
    /// (`ports`, the drivers') to be empty, as the worker is.
    fn restore(&mut self) -> Result<()> {
        let nets: Vec<NetworkRecord> = self.state.networks.values().cloned().collect();
        for n in &nets {
            self.register_network(n);
        }
        self.with_drivers(|drivers, cx| {
            for d in drivers.all_mut() {
                d.restore(cx);
            }
        });
        let names: Vec<String> = self.state.containers.keys().cloned().collect();
        for name in names {
            let rec = self.state.containers[&name].clone();
            if !self.namespace_alive(&rec) {
                tracing::info!("container {name}: its namespace is gone; removing it");
                self.forget_container(&name);
                continue;
            }
            for ep in &rec.endpoints {
                if let Err(e) = self.reopen_endpoint(&rec, ep) {
                    tracing::warn!("container {name}: cannot restore {}: {e:#}", ep.ifname);
                }
            }
            self.republish(&name);
        }
        let remotes: Vec<String> = self.remotes.keys().map(|(n, _)| n.clone()).collect();
        for n in remotes {
            self.program_remotes(&n, None);
        }
        self.save()
    }

    fn namespace_alive(&self, rec: &ContainerRecord) -> bool {
        match &rec.mode {
            Mode::Host => true,
            Mode::Container(other) => self.state.containers.contains_key(other),
            // Endpoints left in the host's namespace for someone else to move
            // ([`Daemon::attach_unplaced`]): whether and where they were moved is not ours to
            // know (Docker's sandbox file appears only as the container starts). They live as
            // long as their veth pairs: the kernel deletes a pair with the namespace that
            // holds one end.
            Mode::Bridge if rec.external && rec.netns.as_os_str().is_empty() => rec
                .endpoints
                .iter()
                .all(|e| e.attach.is_veth() && link_exists(&e.port_name)),
            Mode::Bridge | Mode::None => netns::open_netns_path(&rec.netns).is_ok(),
        }
    }

    /// Removes a container from the state without touching the system (its namespace is gone).
    fn forget_container(&mut self, name: &str) {
        self.unpublish_container(name, None);
        egress::remove_resolv_conf(name);
        if let Some(rec) = self.state.containers.remove(name) {
            for ep in &rec.endpoints {
                self.remove_endpoint(&rec.netns, ep);
            }
        }
    }

    fn release(&mut self, network: &str, ip: Ipv4Addr) {
        if let Ok(pool) = self.state.ipam.pool_mut(network) {
            let _ = pool.release(ip);
        }
    }

    fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports.by_name(name)
    }

    /// The switch's own gateway address on `n`, if it is the network's gateway (`None` on a
    /// macvlan network: its gateway is the LAN's router).
    fn gateway_of(&self, n: &NetworkRecord) -> Option<(MacAddr, Ipv4Addr)> {
        if self
            .driver(n)
            .is_some_and(|d| d.gateway_role() == GatewayRole::Lan)
        {
            return None;
        }
        n.gateway.map(|g| (mac_for(g), g))
    }

    fn register_network(&self, n: &NetworkRecord) {
        self.worker.send(crate::worker::Command::AddNetwork {
            id: NetworkId(n.id),
            gateway: self.gateway_of(n),
        });
        self.worker.send(crate::worker::Command::Gateway(
            crate::gateway::GatewayCommand::Network {
                id: NetworkId(n.id),
                mtu: n.mtu,
                internal: n.internal,
                subnet: n.subnet,
            },
        ));
    }

    /// Tells the driver of `net` that an endpoint joined it on switch port `port`.
    fn endpoint_added(&mut self, net: &NetworkRecord, ep: &EndpointRecord, port: PortId) {
        self.with_driver(net, |d, cx| d.endpoint_added(net, ep, port, cx));
    }

    /// Tells the gateway about an endpoint (its address, port and, on user-defined networks,
    /// its name for DNS) and writes the container's resolv.conf.
    fn announce_endpoint(&self, c: &ContainerRecord, ep: &EndpointRecord, port: PortId) {
        let Ok(net) = self.network(&ep.network) else {
            return;
        };
        let Ok(mac) = ep.mac.parse::<MacAddr>() else {
            return;
        };
        self.worker.send(crate::worker::Command::Gateway(
            crate::gateway::GatewayCommand::Endpoint {
                net: NetworkId(net.id),
                ip: ep.ip,
                mac,
                port,
                vnet: false,
                name: (net.name != DEFAULT_NETWORK).then(|| c.name.clone()),
            },
        ));
        if !c.external && c.mode == Mode::Bridge {
            if let Some(gw) = net.gateway {
                let first = c
                    .endpoints
                    .first()
                    .is_none_or(|e| e.port_name == ep.port_name);
                if first {
                    if let Err(e) = egress::write_resolv_conf(&c.name, gw) {
                        tracing::warn!("container {}: {e:#}", c.name);
                    }
                }
            }
        }
    }

    /// `vswitch network connect [-p ...]`: connects `container` to `network` and publishes
    /// `specs` there, or neither.
    pub fn network_connect_publish(
        &mut self,
        network: &str,
        container: &str,
        ip: Option<&str>,
        specs: &[String],
        attach: Option<AttachMode>,
    ) -> Result<ContainerInfo> {
        Transaction::run(self, |tx, d| {
            d.network_connect(network, container, ip, attach)?;
            tx.undo(
                format!("disconnect {container} from {network}"),
                |d: &mut Daemon| d.network_disconnect(network, container),
            );
            d.publish(container, network, specs)?;
            d.container_info(container)
        })
    }

    /// Binds the host side of each mapping and hands it to the gateway.
    pub fn publish(&mut self, container: &str, network: &str, specs: &[String]) -> Result<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let net = self.network(network)?.clone();
        if net.internal {
            bail!("network {network} is internal: it has no way in or out, so it cannot publish ports; use another network");
        }
        let c = self.container(container)?.clone();
        let ep = c
            .endpoints
            .iter()
            .find(|e| e.network == network)
            .ok_or_else(|| err!("container {container} is not connected to network {network}"))?;
        let mut maps = Vec::new();
        for s in specs {
            maps.push(egress::parse_publish(s, network)?);
        }
        let done = Transaction::run(self, |tx, d| {
            let mut done = Vec::new();
            for mut m in maps {
                let bound = egress::bind(&mut m)?;
                d.send_publish(bound, net.id, ep.ip, m.port);
                let undo = m.clone();
                tx.undo(format!("unpublish {}", m.label()), move |d: &mut Daemon| {
                    d.unpublish(&undo);
                    Ok(())
                });
                done.push(m);
            }
            Ok(done)
        })?;
        let rec = self.state.containers.get_mut(container).expect("exists");
        rec.ports.extend(done);
        self.save()
    }

    fn send_publish(&self, bound: egress::Bound, net: u16, ip: Ipv4Addr, port: u16) {
        use crate::gateway::GatewayCommand as G;
        let cmd = match bound {
            egress::Bound::Tcp(listener) => G::PublishTcp {
                listener,
                net: NetworkId(net),
                ip,
                port,
            },
            egress::Bound::Udp(socket) => G::PublishUdp {
                socket,
                net: NetworkId(net),
                ip,
                port,
            },
        };
        self.worker.send(crate::worker::Command::Gateway(cmd));
    }

    fn unpublish(&self, m: &egress::PortMapping) {
        self.worker.send(crate::worker::Command::Gateway(
            crate::gateway::GatewayCommand::Unpublish {
                proto: m.proto_number(),
                addr: m.host_addr(),
            },
        ));
    }

    /// Stops the published ports of `container` on `network` (all networks when `None`).
    fn unpublish_container(&mut self, container: &str, network: Option<&str>) {
        let Some(rec) = self.state.containers.get_mut(container) else {
            return;
        };
        let (gone, keep): (Vec<_>, Vec<_>) = rec
            .ports
            .drain(..)
            .partition(|m| network.is_none_or(|n| m.network == n));
        rec.ports = keep;
        for m in &gone {
            self.unpublish(m);
        }
    }

    /// Re-binds the published ports of a restored container.
    fn republish(&mut self, name: &str) {
        let Some(rec) = self.state.containers.get(name).cloned() else {
            return;
        };
        for mut m in rec.ports {
            let Some(ep) = rec.endpoints.iter().find(|e| e.network == m.network) else {
                continue;
            };
            let Ok(id) = self.network(&m.network).map(|n| n.id) else {
                continue;
            };
            match egress::bind(&mut m) {
                Ok(b) => self.send_publish(b, id, ep.ip, m.port),
                Err(e) => tracing::warn!("container {name}: cannot restore {}: {e:#}", m.label()),
            }
        }
    }

    fn create_default_network(&mut self) -> Result<()> {
        self.network_create(NetworkCreate {
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            ..Default::default()
        })?;
        Ok(())
    }

    /// Handles one request.
    pub fn handle(&mut self, req: Request) -> Reply {
        let r = match req {
            Request::Ping => Ok(serde_json::json!({"version": env!("CARGO_PKG_VERSION")})),
            Request::NetworkCreate(c) => self.network_create(c).map(to_json),
            Request::NetworkLs => Ok(to_json(self.network_ls())),
            Request::NetworkInspect { name } => self.network_inspect(&name).map(to_json),
            Request::NetworkRm { name } => self.network_rm(&name).map(|_| serde_json::Value::Null),
            Request::NetworkConnect {
                network,
                container,
                ip,
                publish,
                attach,
            } => self
                .network_connect_publish(&network, &container, ip.as_deref(), &publish, attach)
                .map(to_json),
            Request::NetworkDisconnect { network, container } => self
                .network_disconnect(&network, &container)
                .map(|_| serde_json::Value::Null),
            Request::Run(r) => self.run(r).map(to_json),
            Request::Attach {
                name,
                netns,
                network,
                ip,
            } => self
                .attach(&name, &netns, &network, ip.as_deref())
                .map(to_json),
            Request::RuntimeAttach(r) => self.runtime_attach(r).map(to_json),
            Request::RuntimeDetach {
                frontend,
                id,
                network,
                ifname,
            } => self
                .runtime_detach(
                    &RuntimeRef::new(&frontend, &id),
                    &network,
                    ifname.as_deref(),
                )
                .map(|removed| serde_json::json!({ "removed": removed })),
            Request::Ps => Ok(to_json(self.ps())),
            Request::ContainerInspect { name } => self.container_info(&name).map(to_json),
            Request::Rm { name, force } => self.rm(&name, force).map(|_| serde_json::Value::Null),
            Request::Fdb { network } => self.fdb(network.as_deref()).map(to_json),
            Request::Ports => self.port_list().map(to_json),
            Request::Stats => self.stats(),
            Request::TraceStart(t) => self
                .trace_start(t)
                .map(|id| serde_json::json!({ "id": id })),
            Request::TraceRead { id } => self.trace_read(id),
            Request::TraceStop { id } => {
                if self.trace.as_ref().is_some_and(|t| t.id == id) {
                    self.trace = None;
                    self.worker.send(crate::worker::Command::Trace(None));
                }
                Ok(serde_json::Value::Null)
            }
            Request::CaptureStart(r) => self.capture_start(r).map(to_json),
            Request::CaptureRead { id } => self.capture_read(id),
            Request::CaptureStop { id } => self.capture_stop(id),
            Request::Metrics => Ok(serde_json::json!({ "text": self.metrics() })),
            Request::NetworkPeer {
                network,
                peer,
                remove,
            } => self
                .network_peer(&network, &peer, remove)
                .map(|_| serde_json::Value::Null),
            Request::InjectPanic => self.inject_panic().map(|_| serde_json::Value::Null),
        };
        match r {
            Ok(data) => Reply::Ok { data },
            Err(e) => Reply::Error {
                message: format!("{e:#}"),
            },
        }
    }

    // ----- networks -----

    /// `vswitch network create`: checks the request with the network's driver, adds the
    /// network (address pool, record, worker, the driver's ports) and saves; on failure
    /// nothing of it stays.
    pub fn network_create(&mut self, c: NetworkCreate) -> Result<NetworkInfo> {
        check_name("network", &c.name)?;
        if matches!(c.name.as_str(), "host" | "none") || c.name.starts_with("container") {
            bail!("network name {:?} is reserved; choose another name", c.name);
        }
        if self.state.networks.contains_key(&c.name) {
            bail!("network {} already exists; pick another name or remove it with `vswitch network rm {}`", c.name, c.name);
        }
        let driver = if c.driver.is_empty() {
            "bridge".to_string()
        } else {
            c.driver.clone()
        };
        let options = parse_options(&c.options)?;
        if let Some(a) = options.get("attach") {
            AttachMode::parse(a).map_err(|e| err!("-o attach={a}: {e}"))?;
        }
        policy::NetworkPolicy::parse(&options)?;
        let (default_mtu, role) = self.with_drivers(|drivers, cx| {
            let d = drivers.get(&driver).ok_or_else(|| {
                err!("driver {driver:?} is not supported by this version of vswitch; use --driver bridge, overlay or macvlan")
            })?;
            Ok::<_, crate::control::error::Error>((d.validate(&c, &options, cx)?, d.gateway_role()))
        })?;
        let mtu = match options
            .get("mtu")
            .or(options.get("com.docker.network.driver.mtu"))
        {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| err!("invalid mtu {v:?}: expected a number from 68 to 65535"))?,
            None => default_mtu,
        };
        let subnet = match &c.subnet {
            Some(s) => parse_cidr("subnet", s)?,
            None => {
                let routes = host_routes();
                let taken: Vec<ipnet::Ipv4Net> = self
                    .state
                    .networks
                    .values()
                    .filter_map(|n| n.subnet)
                    .collect();
                ipam::next_default_subnet(&taken, &routes).ok_or_else(|| {
                    err!("every default address pool overlaps a host route or another network; give one with --subnet")
                })?
            }
        };
        let gateway = c
            .gateway
            .as_deref()
            .map(|g| parse_ip("gateway", g))
            .transpose()?;
        let ip_range = c
            .ip_range
            .as_deref()
            .map(|r| parse_cidr("ip-range", r))
            .transpose()?;
        let mut aux = BTreeMap::new();
        for a in &c.aux_addresses {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| err!("invalid aux address {a:?}: expected NAME=IP"))?;
            aux.insert(k.to_string(), parse_ip("aux address", v)?);
        }
        let spec = ipam::PoolSpec {
            subnet,
            gateway,
            ip_range,
            aux_addresses: aux.clone(),
        };
        let name = c.name.clone();
        Transaction::run(self, |tx, d| {
            d.state
                .ipam
                .add_pool(&name, spec)
                .map_err(|e| err!("{e}"))?;
            tx.undo("remove the address pool", |d: &mut Daemon| {
                let _ = d.state.ipam.remove_pool(&name);
                d.save()
            });
            let gateway = d.state.ipam.pool(&name).ok().map(|p| p.gateway());
            // An overlay network gets the switch's gateway only when one is asked for.
            let gateway =
                gateway.filter(|_| role != GatewayRole::SwitchIfGiven || c.gateway.is_some());
            let id = d.next_network_id()?;
            let rec = NetworkRecord {
                name: name.clone(),
                id,
                driver,
                subnet: Some(subnet),
                gateway,
                ip_range,
                aux_addresses: aux,
                internal: c.internal,
                mtu,
                options,
                created: unix_now(),
            };
            d.state.networks.insert(name.clone(), rec.clone());
            tx.undo("forget the network", |d: &mut Daemon| {
                d.state.networks.remove(&name);
                Ok(())
            });
            d.save()?;
            d.register_network(&rec);
            tx.undo(
                "remove the network from the switch",
                move |d: &mut Daemon| {
                    d.worker
                        .send(crate::worker::Command::RemoveNetwork { id: NetworkId(id) });
                    Ok(())
                },
            );
            // All or nothing: on failure the driver has undone its own steps.
            d.with_driver(&rec, |drv, cx| Some(drv.create(&rec, cx)))
                .unwrap_or(Ok(()))
        })?;
        self.network_inspect(&c.name)
    }

    fn next_network_id(&mut self) -> Result<u16> {
        let used: Vec<u16> = self.state.networks.values().map(|n| n.id).collect();
        for _ in 0..=u16::MAX {
            let id = self.state.next_network_id;
            self.state.next_network_id = self.state.next_network_id.wrapping_add(1);
            if !used.contains(&id) {
                return Ok(id);
            }
        }
        bail!("too many networks")
    }

    pub fn network_ls(&self) -> Vec<NetworkInfo> {
        let mut v: Vec<NetworkInfo> = self
            .state
            .networks
            .keys()
            .filter_map(|n| self.network_inspect(n).ok())
            .collect();
        for (i, pseudo) in ["host", "none"].iter().enumerate() {
            v.push(NetworkInfo {
                name: pseudo.to_string(),
                id: u16::MAX - i as u16,
                driver: pseudo.to_string(),
                subnet: None,
                gateway: None,
                ip_range: None,
                aux_addresses: BTreeMap::new(),
                internal: false,
                mtu: 0,
                options: BTreeMap::new(),
                containers: BTreeMap::new(),
                created: 0,
                peers: BTreeMap::new(),
                frontend: None,
            });
        }
        v
    }

    fn network(&self, name: &str) -> Result<&NetworkRecord> {
        self.state.networks.get(name).ok_or_else(|| {
            let by_frontend = self
                .state
                .network_frontends
                .iter()
                .find(|(_, f)| f.name.as_deref() == Some(name));
            match by_frontend {
                Some((ours, f)) => err!(
                    "{name} is {}'s name for the network vswitch calls {ours}; use that name, or {}'s own commands",
                    f.frontend,
                    f.frontend
                ),
                None => err!("network {name} not found; `vswitch network ls` lists the networks"),
            }
        })
    }

    pub fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        let n = self.network(name)?;
        let mut containers = BTreeMap::new();
        for c in self.state.containers.values() {
            for ep in c.endpoints.iter().filter(|e| e.network == name) {
                containers.insert(c.name.clone(), self.endpoint_info(ep));
            }
        }
        Ok(NetworkInfo {
            name: n.name.clone(),
            id: n.id,
            driver: n.driver.clone(),
            subnet: n.subnet.map(|s| s.to_string()),
            gateway: n.gateway.map(|g| g.to_string()),
            ip_range: n.ip_range.map(|s| s.to_string()),
            aux_addresses: n
                .aux_addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            internal: n.internal,
            mtu: n.mtu,
            options: n.options.clone(),
            containers,
            created: n.created,
            peers: (self.driver(n).map(|d| d.peers(n))).unwrap_or_default(),
            frontend: self.state.network_frontends.get(name).cloned(),
        })
    }

    pub fn network_rm(&mut self, name: &str) -> Result<()> {
        if name == DEFAULT_NETWORK || name == "host" || name == "none" {
            bail!("{name} is a pre-defined network and cannot be removed");
        }
        let id = self.network(name)?.id;
        let users: Vec<String> = self
            .state
            .containers
            .values()
            .filter(|c| c.endpoints.iter().any(|e| e.network == name))
            .map(|c| c.name.clone())
            .collect();
        if !users.is_empty() {
            bail!(
                "network {name} has active endpoints ({}); disconnect or remove those containers first",
                users.join(", ")
            );
        }
        let rec = self.state.networks.remove(name).expect("exists");
        self.state.network_frontends.remove(name);
        self.with_driver(&rec, |d, cx| d.remove(&rec, cx));
        self.state.ipam.remove_pool(name).map_err(|e| err!("{e}"))?;
        self.save()?;
        self.remotes.retain(|(n, _), _| n != name);
        self.worker
            .send(crate::worker::Command::RemoveNetwork { id: NetworkId(id) });
        Ok(())
    }

    /// `vswitch network connect|disconnect --peer IP NET`: adds or removes one peer of an
    /// overlay network.
    pub fn network_peer(&mut self, network: &str, peer: &str, remove: bool) -> Result<()> {
        let n = self.network(network)?.clone();
        if n.driver != OVERLAY {
            bail!(
                "network {network} is a {} network; peers belong to overlay networks",
                n.driver
            );
        }
        self.with_drivers(|drivers, cx| drivers.overlay.peer(&n, peer, remove, cx))?;
        if !remove {
            self.program_remotes(network, None);
        }
        Ok(())
    }

    /// A store's endpoint of another host on overlay network `network`: `mac` (address `ip`)
    /// is behind the VTEP `vtep` (`None`: it is gone). While that VTEP is a peer of the
    /// network, the switch has a static MAC entry towards it and answers ARP for `ip` itself
    /// (ARP suppression: finding the container floods nothing across hosts). An endpoint whose
    /// VTEP is not a peer yet is kept and programmed when the peer is added.
    pub fn remote_endpoint(
        &mut self,
        network: &str,
        mac: MacAddr,
        ip: Ipv4Addr,
        vtep: Option<Ipv4Addr>,
    ) -> Result<()> {
        let n = self.network(network)?;
        if n.driver != OVERLAY {
            bail!(
                "network {network} is a {} network; remote endpoints belong to overlay networks",
                n.driver
            );
        }
        let id = NetworkId(n.id);
        let key = (network.to_string(), mac.0);
        match vtep {
            Some(v) => {
                if let Some((old_ip, _)) = self.remotes.insert(key, (ip, v)) {
                    if old_ip != ip {
                        self.worker.send(Command::ProxyArp {
                            network: id,
                            ip: old_ip,
                            mac: None,
                        });
                    }
                }
                self.program_remotes(network, Some(mac));
            }
            None => {
                if let Some((ip, _)) = self.remotes.remove(&key) {
                    self.worker.send(Command::ProxyArp {
                        network: id,
                        ip,
                        mac: None,
                    });
                    self.worker.send(Command::RemoveStatic { network: id, mac });
                }
            }
        }
        Ok(())
    }

    /// The remote endpoints the daemon knows on `network` (MAC, IP, VTEP).
    pub fn remote_endpoints(&self, network: &str) -> Vec<(MacAddr, Ipv4Addr, Ipv4Addr)> {
        self.remotes
            .iter()
            .filter(|((n, _), _)| n == network)
            .map(|((_, m), (ip, v))| (MacAddr(*m), *ip, *v))
            .collect()
    }

    /// Sends the worker the remote endpoints of `network` (only `only`, if given) whose VTEP
    /// is a peer now: a static entry on the peer's virtual port and the ARP answer.
    fn program_remotes(&mut self, network: &str, only: Option<MacAddr>) {
        let Ok(n) = self.network(network).cloned() else {
            return;
        };
        let peers = self.driver(&n).map(|d| d.peers(&n)).unwrap_or_default();
        let id = NetworkId(n.id);
        for ((net, m), (ip, vtep)) in &self.remotes {
            if net != network || only.is_some_and(|o| o.0 != *m) {
                continue;
            }
            let Some(p) = peers.get(vtep) else {
                continue;
            };
            let mac = MacAddr(*m);
            self.worker.send(Command::AddStatic {
                network: id,
                mac,
                port: PortId(p.port_id),
            });
            self.worker.send(Command::ProxyArp {
                network: id,
                ip: *ip,
                mac: Some(mac),
            });
        }
    }

    // ----- containers -----

    fn container(&self, name: &str) -> Result<&ContainerRecord> {
        self.state.containers.get(name).ok_or_else(|| {
            let by_runtime = self.state.containers.values().find(|c| {
                c.runtime
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            });
            match by_runtime.and_then(|c| Some((c, c.runtime.as_ref()?))) {
                Some((c, r)) => err!(
                    "{name} is {}'s name for the container vswitch calls {}; use that name, or {}'s own commands",
                    r.frontend,
                    c.name,
                    r.frontend
                ),
                None => err!("container {name} not found; `vswitch ps` lists the containers"),
            }
        })
    }

    /// Records the front end's names for a container and its network, as the front end tells
    /// them (Docker's container and network names, looked up after `Join`).
    pub fn set_frontend_names(
        &mut self,
        container: &str,
        container_name: Option<&str>,
        network: &str,
        network_ref: Option<RuntimeRef>,
    ) -> Result<()> {
        let mut changed = false;
        if let (Some(n), Some(c)) = (container_name, self.state.containers.get_mut(container)) {
            if let Some(r) = c.runtime.as_mut().filter(|r| r.name.as_deref() != Some(n)) {
                r.name = Some(n.to_string());
                changed = true;
            }
        }
        if let Some(r) = network_ref.filter(|_| self.state.networks.contains_key(network)) {
            if self.state.network_frontends.get(network) != Some(&r) {
                self.state.network_frontends.insert(network.to_string(), r);
                changed = true;
            }
        }
        if changed {
            self.save()?;
        }
        Ok(())
    }

    fn endpoint_info(&self, ep: &EndpointRecord) -> EndpointInfo {
        EndpointInfo {
            network: ep.network.clone(),
            ip: ep.ip,
            prefix: ep.prefix,
            mac: ep.mac.clone(),
            ifname: ep.ifname.clone(),
            port_name: ep.port_name.clone(),
            port_id: self.port_by_name(&ep.port_name).unwrap_or(PortId::MAX).0,
            attach: ep.attach,
        }
    }

    pub fn container_info(&self, name: &str) -> Result<ContainerInfo> {
        let c = self.container(name)?;
        let netns_path = match &c.mode {
            Mode::Container(other) => self
                .state
                .containers
                .get(other)
                .map(|o| o.netns.display().to_string())
                .unwrap_or_default(),
            Mode::Host => String::new(),
            _ => c.netns.display().to_string(),
        };
        let running = c
            .pid
            .zip(c.pid_start)
            .is_some_and(|(pid, start)| crate::process::start_time(pid) == Some(start));
        Ok(ContainerInfo {
            name: c.name.clone(),
            mode: c.mode.label(),
            netns: netns_path,
            external: c.external,
            endpoints: c.endpoints.iter().map(|e| self.endpoint_info(e)).collect(),
            pid: if running { c.pid } else { None },
            status: if running {
                "running".into()
            } else if c.pid.is_some() {
                "exited".into()
            } else {
                "created".into()
            },
            command: c.command.clone(),
            ports: c.ports.iter().map(|m| m.label()).collect(),
            runtime: c.runtime.clone(),
        })
    }

    pub fn ps(&mut self) -> Vec<ContainerInfo> {
        self.reap_children();
        self.state
            .containers
            .keys()
            .filter_map(|n| self.container_info(n).ok())
            .collect()
    }

    fn reap_children(&mut self) {
        self.children
            .retain(|_, child| !matches!(child.try_wait(), Ok(Some(_))));
    }

    fn new_container_name(&self) -> String {
        loop {
            let n = format!("ctr-{}", &new_port_name()[3..9]);
            if !self.state.containers.contains_key(&n) {
                return n;
            }
        }
    }

    pub fn run(&mut self, r: RunRequest) -> Result<ContainerInfo> {
        let name = match r.name {
            Some(n) => n,
            None => self.new_container_name(),
        };
        check_name("container", &name)?;
        if self.state.containers.contains_key(&name) {
            bail!("container name {name} is already in use; remove it with `vswitch rm -f {name}` or choose another --name");
        }
        let net = r.network.unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        let mode = match net.as_str() {
            "host" => Mode::Host,
            "none" => Mode::None,
            s if s.starts_with("container:") => {
                let other = &s["container:".len()..];
                let o = self.container(other)?;
                if let Mode::Container(_) | Mode::Host = o.mode {
                    bail!("container {other} does not own a network namespace to join");
                }
                Mode::Container(other.to_string())
            }
            s => {
                self.network(s)?;
                Mode::Bridge
            }
        };
        if r.ip.is_some() && mode != Mode::Bridge {
            bail!("--ip needs a network with addresses; {net} has none");
        }
        let netns_path = match mode {
            Mode::Bridge | Mode::None => {
                if netns::netns_exists(&name) {
                    bail!("a network namespace named {name} already exists (ip netns list); choose another --name, or connect it with `vswitch attach --name {name} --netns /run/netns/{name} NETWORK`");
                }
                netns::create_netns(&name)
                    .with_context(|| format!("cannot create network namespace {name}"))?;
                netns::netns_path(&name)?
            }
            _ => PathBuf::new(),
        };
        let rec = ContainerRecord {
            name: name.clone(),
            mode: mode.clone(),
            netns: netns_path.clone(),
            external: false,
            endpoints: Vec::new(),
            pid: None,
            pid_start: None,
            command: r.detach_cmd.clone(),
            created: unix_now(),
            ports: Vec::new(),
            runtime: None,
        };
        Transaction::run(self, |tx, d| {
            d.state.containers.insert(name.clone(), rec);
            tx.undo(format!("remove container {name}"), |d: &mut Daemon| {
                d.rm(&name, true)
            });
            if mode == Mode::Bridge {
                d.network_connect(&net, &name, r.ip.as_deref(), r.attach)?;
                d.publish(&name, &net, &r.publish)?;
            } else {
                if !r.publish.is_empty() {
                    bail!("-p needs a network with addresses; {net} has none");
                }
                d.save()?;
            }
            if !r.detach_cmd.is_empty() {
                d.spawn_detached(&name)?;
            }
            d.container_info(&name)
        })
    }

    fn spawn_detached(&mut self, name: &str) -> Result<()> {
        let info = self.container_info(name)?;
        let logdir = self.cfg.state_dir.join("logs");
        std::fs::create_dir_all(&logdir)?;
        let log = std::fs::File::create(logdir.join(format!("{name}.log")))?;
        let stdio = netns::Stdios {
            stdin: Some(std::process::Stdio::null()),
            stdout: Some(log.try_clone()?.into()),
            stderr: Some(log.into()),
        };
        let child = spawn(&info.netns, &info.command, stdio)
            .with_context(|| format!("cannot start {:?} in container {name}", info.command))?;
        let pid = child.id();
        let rec = self
            .state
            .containers
            .get_mut(name)
            .expect("container exists");
        rec.pid = Some(pid);
        rec.pid_start = crate::process::start_time(pid);
        self.children.insert(name.to_string(), child);
        self.save()
    }

    pub fn attach(
        &mut self,
        name: &str,
        ns: &str,
        network: &str,
        ip: Option<&str>,
    ) -> Result<ContainerInfo> {
        check_name("container", name)?;
        if self.state.containers.contains_key(name) {
            bail!("container name {name} is already in use");
        }
        let path = PathBuf::from(ns);
        if netns::open_netns_path(&path).is_err() {
            bail!("{ns} is not a network namespace (expected a path like /run/netns/NAME or /proc/PID/ns/net)");
        }
        self.network(network)?;
        let rec = ContainerRecord::external(name, path, None, unix_now());
        Transaction::run(self, |tx, d| {
            d.state.containers.insert(name.to_string(), rec);
            tx.undo(format!("forget container {name}"), |d: &mut Daemon| {
                d.state.containers.remove(name);
                Ok(())
            });
            d.network_connect(network, name, ip, None)?;
            d.container_info(name)
        })
    }

    pub fn network_connect(
        &mut self,
        network: &str,
        container: &str,
        ip: Option<&str>,
        attach: Option<AttachMode>,
    ) -> Result<ContainerInfo> {
        let opts = EndpointOpts {
            attach,
            ..Default::default()
        };
        self.connect_with(network, container, ip, opts)
    }

    /// `network_connect` with the interface's name, MAC and MTU as a runtime asks for them.
    fn connect_with(
        &mut self,
        network: &str,
        container: &str,
        ip: Option<&str>,
        opts: EndpointOpts,
    ) -> Result<ContainerInfo> {
        let net = self.network(network)?.clone();
        let c = self.container(container)?.clone();
        if c.mode != Mode::Bridge {
            bail!(
                "container {container} is in {} mode and cannot join networks",
                c.mode.label()
            );
        }
        if c.endpoints.iter().any(|e| e.network == network) {
            bail!("container {container} is already connected to network {network}");
        }
        let static_ip = ip.map(|s| parse_ip("address", s)).transpose()?;
        Transaction::run(self, |tx, d| {
            let pool = (d.state.ipam.pool_mut(network)).map_err(|e| err!("{e}"))?;
            let ip = match static_ip {
                Some(a) => pool
                    .allocate_static(a, container)
                    .map(|_| a)
                    .map_err(|e| err!("{e}"))?,
                None => pool.allocate(container).map_err(|e| err!("{e}"))?,
            };
            tx.undo(format!("release {ip}"), move |d: &mut Daemon| {
                d.release(network, ip);
                Ok(())
            });
            d.new_endpoint(&c, &net, ip, opts)
        })?;
        self.container_info(container)
    }

    /// Builds the endpoint of container `c` on `net` with address `ip`, and records it.
    fn new_endpoint(
        &mut self,
        c: &ContainerRecord,
        net: &NetworkRecord,
        ip: Ipv4Addr,
        opts: EndpointOpts,
    ) -> Result<()> {
        let (network, container) = (&net.name, &c.name);
        let prefix = net.subnet.map(|s| s.prefix_len()).unwrap_or(24);
        // The lowest free ethN: after a disconnect the count no longer names a free one.
        let ifname = opts.ifname.unwrap_or_else(|| {
            (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| c.endpoints.iter().all(|e| &e.ifname != n))
                .expect("an unused interface name")
        });
        let ep = EndpointRecord {
            network: network.to_string(),
            ip,
            prefix,
            mac: opts.mac.unwrap_or_else(|| mac_for(ip)).to_string(),
            ifname,
            port_name: new_port_name(),
            attach: match opts.attach.or(network_attach(net)?) {
                Some(a) => a,
                None => self
                    .cfg
                    .default_attach
                    .unwrap_or_else(|| self.default_attach(net)),
            },
            mtu: opts.mtu,
        };
        self.create_endpoint(c, net, &ep)?;
        self.state
            .containers
            .get_mut(container)
            .expect("exists")
            .endpoints
            .push(ep);
        self.save()
    }

    /// Creates the link of `ep` in the container and its port in the switch.
    fn create_endpoint(
        &mut self,
        c: &ContainerRecord,
        net: &NetworkRecord,
        ep: &EndpointRecord,
    ) -> Result<()> {
        // One default route per namespace (Docker's rule): through the first endpoint on a
        // network with a way out. Later endpoints get only their subnet's route; a second
        // default route would be refused by the kernel (EEXIST) and fail `network connect`.
        let earlier_default = c
            .endpoints
            .iter()
            .take_while(|e| e.port_name != ep.port_name)
            .any(|e| self.default_gateway(e).is_some());
        let gw = if earlier_default {
            None
        } else {
            self.default_gateway(ep)
        };
        let mac: MacAddr = ep.mac.parse()?;
        let cfg = netns::IfaceConfig {
            ifname: ep.ifname.clone(),
            mac: Some(mac),
            ip: ep.ip,
            prefix: ep.prefix,
            gateway: gw,
            mtu: Some(ep.mtu.unwrap_or(net.mtu)),
            gso_max_segs: self.driver(net).and_then(|d| d.gso_max_segs(net)),
        };
        Transaction::run(self, |tx, d| {
            let port: Box<dyn Port> = match ep.attach {
                AttachMode::Veth => {
                    // A veth pair made half way is deleted too: the undo comes first.
                    tx.undo("delete the veth pair", |_: &mut Daemon| {
                        let _ = netns::detach(&ep.port_name);
                        Ok(())
                    });
                    netns::attach_veth(&c.netns, &ep.port_name, &cfg)
                        .with_context(|| format!("cannot attach {} to {}", c.name, net.name))?;
                    Box::new(
                        AfPacketPort::open_with(&ep.port_name, d.afpacket_config())
                            .with_context(|| format!("cannot open port {}", ep.port_name))?,
                    )
                }
                AttachMode::Xdp => {
                    let mtu = cfg.mtu.unwrap_or(DEFAULT_MTU);
                    if mtu > XDP_MAX_MTU {
                        bail!("cannot attach {} to {} in xdp mode: the network's MTU {mtu} is larger than native XDP on a veth allows ({XDP_MAX_MTU}: a frame must fit one page); use -o mtu={XDP_MAX_MTU} or less, or --attach veth", c.name, net.name);
                    }
                    tx.undo("delete the veth pair", |_: &mut Daemon| {
                        let _ = netns::detach(&ep.port_name);
                        Ok(())
                    });
                    netns::attach_veth(&c.netns, &ep.port_name, &cfg)
                        .with_context(|| format!("cannot attach {} to {}", c.name, net.name))?;
                    Box::new(open_xdp(&c.netns, ep)?)
                }
                AttachMode::Tap => {
                    let tap = TapPort::create_with(&ep.port_name, CONTAINER_TAP)
                        .with_context(|| format!("cannot create TAP {}", ep.port_name))?;
                    // The TAP is persistent: it does not go with the descriptor.
                    tx.undo("delete the TAP", |_: &mut Daemon| {
                        delete_tap(&c.netns, ep);
                        Ok(())
                    });
                    netns::adopt_tap_into(&c.netns, &ep.port_name, &cfg)
                        .with_context(|| format!("cannot move TAP into {}", c.name))?;
                    Box::new(tap)
                }
            };
            let policy = policy::port_policy(net, ep);
            let id = d.add_port(port, ep.attach, &net.name, net.id, &c.name, policy)?;
            d.endpoint_added(net, ep, id);
            d.announce_endpoint(c, ep, id);
            Ok(())
        })
    }

    fn add_port(
        &mut self,
        port: Box<dyn Port>,
        attach: AttachMode,
        network: &str,
        net_id: u16,
        container: &str,
        policy: PortPolicy,
    ) -> Result<PortId> {
        let id = self.ports.free_id()?;
        let rec = PortRecord {
            name: port.name().to_string(),
            kind: match (attach, port.caps().vnet_hdr) {
                (AttachMode::Veth, true) => "veth/af_packet+vnet",
                (AttachMode::Veth, false) => "veth/af_packet",
                (AttachMode::Tap, true) => "tap+vnet",
                (AttachMode::Tap, false) => "tap",
                (AttachMode::Xdp, _) => "veth/af_xdp",
            },
            network: network.to_string(),
            container: container.to_string(),
        };
        let net = NetworkId(net_id);
        self.worker
            .add_port_with(id, port, PortRole::Access { network: net }, policy)
            .context("the switch refused the port")?;
        self.ports.0.insert(id, rec);
        Ok(id)
    }

    /// Re-opens the switch side of an endpoint after a restart (re-creating the link if the
    /// namespace still exists but the link has gone).
    fn reopen_endpoint(&mut self, c: &ContainerRecord, ep: &EndpointRecord) -> Result<()> {
        let net = self.network(&ep.network)?.clone();
        if let Ok(p) = self.state.ipam.pool_mut(&ep.network) {
            if p.lease_of(&c.name) != Some(ep.ip) {
                let _ = p.allocate_static(ep.ip, &c.name);
            }
        }
        // The link is still there after a restart: a veth always (its host end is ours), a
        // persistent TAP in the container as long as the namespace lives.
        let kept: Option<Box<dyn Port>> = match ep.attach {
            AttachMode::Veth if link_exists(&ep.port_name) => Some(Box::new(
                AfPacketPort::open_with(&ep.port_name, self.afpacket_config())?,
            )),
            AttachMode::Xdp if link_exists(&ep.port_name) => {
                Some(Box::new(open_xdp(&c.netns, ep)?))
            }
            AttachMode::Tap => reattach_tap(c, ep).map(|t| Box::new(t) as Box<dyn Port>),
            AttachMode::Veth | AttachMode::Xdp => None,
        };
        match kept {
            Some(port) => {
                let policy = policy::port_policy(&net, ep);
                let id = self.add_port(port, ep.attach, &net.name, net.id, &c.name, policy)?;
                self.endpoint_added(&net, ep, id);
                self.announce_endpoint(c, ep, id);
                Ok(())
            }
            None => {
                // The link is gone (or is not a TAP we can attach to): build it again.
                if let Ok(nl) = netns::Netlink::in_netns(&c.netns) {
                    let _ = nl.delete_link(&ep.ifname);
                }
                self.create_endpoint(c, &net, ep)
            }
        }
    }

    pub fn network_disconnect(&mut self, network: &str, container: &str) -> Result<()> {
        self.network(network)?;
        let c = self.container(container)?;
        let Some(pos) = c.endpoints.iter().position(|e| e.network == network) else {
            bail!("container {container} is not connected to network {network}");
        };
        // Did this endpoint carry the default route (the first one with a way out)?
        let had_default = c.endpoints[..=pos]
            .iter()
            .position(|e| self.default_gateway(e).is_some())
            == Some(pos);
        self.unpublish_container(container, Some(network));
        let c = self.state.containers.get_mut(container).expect("exists");
        let ep = c.endpoints.remove(pos);
        let ns = c.netns.clone();
        self.remove_endpoint(&ns, &ep);
        self.save()?;
        // The default route went with the link: hand it to the next endpoint with a way out.
        if had_default {
            let c = self.container(container)?.clone();
            if let Some(gw) = c.endpoints.iter().find_map(|e| self.default_gateway(e)) {
                netns::Netlink::in_netns(&c.netns)
                    .and_then(|nl| nl.add_default_route(gw))
                    .with_context(|| {
                        format!("disconnected, but cannot set the default route of {container} via {gw}")
                    })?;
            }
        }
        Ok(())
    }

    // ----- containers of container runtimes (CNI, ...) -----

    /// The container a runtime attached under its id `r`.
    fn runtime_container(&self, r: &RuntimeRef) -> Option<&ContainerRecord> {
        self.state.containers.values().find(|c| {
            c.runtime
                .as_ref()
                .is_some_and(|o| o.frontend == r.frontend && o.id == r.id)
        })
    }

    /// A vswitch name for a runtime's container: the first 12 characters of its id (as Docker
    /// shortens ids), longer when that is taken, `FRONTEND-XXXXXX` when the id has no usable
    /// characters.
    fn runtime_container_name(&self, r: &RuntimeRef) -> String {
        let clean: String =
            r.id.chars()
                .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
                .skip_while(|c| !c.is_ascii_alphanumeric())
                .collect();
        for len in [12, 16, 24, 32, 64] {
            let n: String = clean.chars().take(len).collect();
            if !n.is_empty() && !self.state.containers.contains_key(&n) {
                return n;
            }
        }
        let prefix = if check_name("container", &r.frontend).is_ok() && r.frontend.len() < 32 {
            r.frontend.as_str()
        } else {
            "rt"
        };
        loop {
            let n = format!("{prefix}-{}", &new_port_name()[3..9]);
            if !self.state.containers.contains_key(&n) {
                return n;
            }
        }
    }

    /// Attaches the namespace of a runtime's container to a network as one endpoint with the
    /// interface name, address, MAC and MTU it asks for, and publishes its ports; on failure
    /// nothing of it stays. The container is found by the runtime's id: its first attachment
    /// records it (external: its namespace is never deleted by vswitch), later ones add
    /// endpoints to it.
    pub fn runtime_attach(&mut self, r: RuntimeAttach) -> Result<RuntimeAttached> {
        let rt = RuntimeRef::new(&r.frontend, &r.id);
        if rt.id.is_empty() || rt.frontend.is_empty() {
            bail!("a runtime attachment needs the front end and the runtime's container id");
        }
        netns::validate_ifname(&r.ifname).map_err(|e| err!("{e}"))?;
        let net = self.network(&r.network)?.clone();
        let mac = r
            .mac
            .as_deref()
            .map(|m| {
                m.parse::<MacAddr>()
                    .ok()
                    .filter(|m| m.is_learnable())
                    .ok_or_else(|| {
                        err!("invalid MAC address {m:?}: expected a unicast address like 02:42:ac:11:00:05")
                    })
            })
            .transpose()?;
        if let Some(mtu) = r.mtu {
            if !(68..=net.mtu).contains(&mtu) {
                bail!(
                    "invalid mtu {mtu}: network {} carries at most {} bytes; ask for 68 to {}",
                    net.name,
                    net.mtu,
                    net.mtu
                );
            }
        }
        let path = PathBuf::from(&r.netns);
        if netns::open_netns_path(&path).is_err() {
            bail!(
                "{} is not a network namespace (expected a path like /run/netns/NAME or /proc/PID/ns/net)",
                r.netns
            );
        }
        let existing = self.runtime_container(&rt).cloned();
        if let Some(c) = &existing {
            if c.netns != path {
                bail!(
                    "container {} is attached in namespace {}, not {}; remove its attachments first",
                    rt.id,
                    c.netns.display(),
                    r.netns
                );
            }
            if let Some(e) = c.endpoints.iter().find(|e| e.ifname == r.ifname) {
                bail!(
                    "container {} already has an interface {} (on network {}); remove that attachment first or choose another interface name",
                    rt.id,
                    r.ifname,
                    e.network
                );
            }
        }
        let taken = netns::Netlink::in_netns(&path)
            .and_then(|nl| nl.link_exists(&r.ifname))
            .with_context(|| format!("cannot look at the interfaces of {}", r.netns))?;
        if taken {
            bail!(
                "an interface named {} already exists in {}; choose another interface name or remove it",
                r.ifname,
                r.netns
            );
        }
        let name = match &existing {
            Some(c) => c.name.clone(),
            None => self.runtime_container_name(&rt),
        };
        let opts = EndpointOpts {
            attach: None,
            ifname: Some(r.ifname.clone()),
            mac,
            mtu: r.mtu,
        };
        Transaction::run(self, |tx, d| {
            if existing.is_none() {
                let rec =
                    ContainerRecord::external(&name, path.clone(), Some(rt.clone()), unix_now());
                d.state.containers.insert(name.clone(), rec);
                tx.undo(format!("forget container {name}"), |d: &mut Daemon| {
                    d.state.containers.remove(&name);
                    d.save()
                });
            }
            d.connect_with(&r.network, &name, r.ip.as_deref(), opts)?;
            tx.undo(
                format!("disconnect {name} from {}", r.network),
                |d: &mut Daemon| d.network_disconnect(&r.network, &name),
            );
            d.publish(&name, &r.network, &r.publish)?;
            let c = d.container(&name)?;
            let ep = c
                .endpoints
                .iter()
                .find(|e| e.network == r.network)
                .ok_or_else(|| err!("the endpoint of {name} on {} is gone", r.network))?;
            let earlier_default = c
                .endpoints
                .iter()
                .take_while(|e| e.port_name != ep.port_name)
                .any(|e| d.default_gateway(e).is_some());
            Ok(RuntimeAttached {
                container: name.clone(),
                endpoint: d.endpoint_info(ep),
                gateway: net.gateway,
                default_route: !earlier_default && d.default_gateway(ep).is_some(),
                dns: d.gateway_of(&net).map(|(_, g)| g),
                mtu: ep.mtu.unwrap_or(net.mtu),
            })
        })
    }

    /// Removes the endpoint of a runtime's container on `network` (named `ifname`, when given)
    /// and the container once it has no endpoint left. Nothing to remove (the container, the
    /// endpoint or its namespace already gone) is not an error: returns whether something was.
    pub fn runtime_detach(
        &mut self,
        rt: &RuntimeRef,
        network: &str,
        ifname: Option<&str>,
    ) -> Result<bool> {
        let Some(c) = self.runtime_container(rt).cloned() else {
            return Ok(false);
        };
        let name = c.name.clone();
        let found = c
            .endpoints
            .iter()
            .position(|e| e.network == network && ifname.is_none_or(|i| e.ifname == i));
        if let Some(pos) = found {
            if self.namespace_alive(&c) && self.state.networks.contains_key(network) {
                // The link and the default route's hand-over go as for `network disconnect`;
                // a hand-over that fails leaves the endpoint removed all the same.
                if let Err(e) = self.network_disconnect(network, &name) {
                    tracing::warn!("container {name}: {e:#}");
                }
            } else {
                self.unpublish_container(&name, Some(network));
                let ep = self
                    .state
                    .containers
                    .get_mut(&name)
                    .expect("exists")
                    .endpoints
                    .remove(pos);
                self.remove_endpoint(&c.netns, &ep);
            }
        }
        if self
            .state
            .containers
            .get(&name)
            .is_some_and(|c| c.endpoints.is_empty())
        {
            self.unpublish_container(&name, None);
            self.state.containers.remove(&name);
        }
        self.save()?;
        Ok(found.is_some())
    }

    /// The gateway an endpoint's network offers as a default route (none when internal).
    fn default_gateway(&self, ep: &EndpointRecord) -> Option<Ipv4Addr> {
        self.state
            .networks
            .get(&ep.network)
            .filter(|n| !n.internal)
            .and_then(|n| n.gateway)
    }

    /// Takes an endpoint out of the switch and deletes its link: the veth pair through its
    /// host end, a (persistent) TAP inside the container's namespace at `ns`.
    fn remove_endpoint(&mut self, ns: &Path, ep: &EndpointRecord) {
        if let Some(id) = self.port_by_name(&ep.port_name) {
            self.worker.remove_port(id);
            self.ports.0.remove(&id);
        }
        match ep.attach {
            AttachMode::Veth | AttachMode::Xdp => {
                // An xdp port's program went with the port (its BPF link closed), or goes
                // with the link now.
                let _ = netns::detach(&ep.port_name);
            }
            AttachMode::Tap => delete_tap(ns, ep),
        }
        self.release(&ep.network, ep.ip);
        if let Some(net) = self.state.networks.get(&ep.network).cloned() {
            self.with_driver(&net, |d, cx| d.endpoint_removed(&net, ep, cx));
        }
    }

    pub fn rm(&mut self, name: &str, force: bool) -> Result<()> {
        let info = self.container_info(name)?;
        let sharers: Vec<String> = self
            .state
            .containers
            .values()
            .filter(|c| c.mode == Mode::Container(name.to_string()))
            .map(|c| c.name.clone())
            .collect();
        if !sharers.is_empty() {
            bail!(
                "container {name} shares its network namespace with {}; remove them first",
                sharers.join(", ")
            );
        }
        if let Some(pid) = info.pid {
            if !force {
                bail!("container {name} is running (pid {pid}); use `vswitch rm -f {name}` to stop and remove it");
            }
            // Only a process this daemon started (pid and start time recorded) is signalled.
            if let Some(start) = self.state.containers[name].pid_start {
                crate::process::kill_if_ours(pid, start)
                    .with_context(|| format!("cannot stop pid {pid} of container {name}"))?;
            }
            if let Some(mut ch) = self.children.remove(name) {
                let _ = ch.wait();
            }
        }
        self.unpublish_container(name, None);
        egress::remove_resolv_conf(name);
        let rec = self.state.containers.remove(name).expect("exists");
        for ep in &rec.endpoints {
            self.remove_endpoint(&rec.netns, ep);
        }
        if !rec.external && matches!(rec.mode, Mode::Bridge | Mode::None) {
            netns::delete_netns(name)
                .with_context(|| format!("cannot delete network namespace {name}"))?;
        }
        self.save()
    }

    /// Removes containers whose namespace has gone (deleted by someone else), and follows
    /// changes of the overlay peers' path MTU.
    pub fn reconcile(&mut self) {
        self.reap_children();
        self.with_drivers(|drivers, cx| {
            for d in drivers.all_mut() {
                d.reconcile(cx);
            }
        });
        let gone: Vec<String> = self
            .state
            .containers
            .values()
            .filter(|c| !self.namespace_alive(c))
            .map(|c| c.name.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for name in gone {
            tracing::info!(
                "container {name}: its namespace is gone; removing its ports and leases"
            );
            self.forget_container(&name);
        }
        if let Err(e) = self.save() {
            tracing::error!("{e:#}");
        }
    }

    // ----- tables -----

    fn net_name(&self, id: u16) -> String {
        self.state
            .networks
            .values()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    }

    pub fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbInfo>> {
        if let Some(n) = network {
            self.network(n)?;
        }
        let snap = self.worker.snapshot()?;
        let mut v: Vec<FdbInfo> = snap
            .fdb
            .iter()
            .map(|e| FdbInfo {
                network: self.net_name(e.network.0),
                mac: e.mac.to_string(),
                port: self
                    .ports
                    .0
                    .get(&e.port)
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| format!("#{}", e.port)),
                port_id: e.port.0,
                age_secs: e.age_secs,
                is_static: e.is_static,
            })
            .filter(|e| network.is_none_or(|n| e.network == n))
            .collect();
        v.sort_by(|a, b| (&a.network, &a.port, &a.mac).cmp(&(&b.network, &b.port, &b.mac)));
        Ok(v)
    }

    /// Arms a trace (replacing one that runs): the filter's names become port ids here.
    pub fn trace_start(&mut self, t: TraceStart) -> Result<u64> {
        use crate::trace::TraceFilter;
        if !(1..=10_000).contains(&t.count) {
            bail!("--count {}: trace 1 to 10000 frames", t.count);
        }
        let mut ports = Vec::new();
        for p in &t.ports {
            let id = match p.parse::<u16>() {
                Ok(n) if self.ports.0.contains_key(&PortId(n)) => Some(PortId(n)),
                _ => self.ports.by_name(p),
            };
            ports.push(id.ok_or_else(|| {
                err!("no port {p}; `vswitch ports` lists them (by number and name)")
            })?);
        }
        for c in &t.containers {
            let rec = self.container(c)?;
            for e in &rec.endpoints {
                ports.extend(self.ports.by_name(&e.port_name));
            }
        }
        for n in &t.networks {
            self.network(n)?;
            ports.extend(
                (self.ports.0.iter())
                    .filter(|(_, p)| p.network == *n)
                    .map(|(id, _)| *id),
            );
        }
        if ports.is_empty()
            && !(t.ports.is_empty() && t.containers.is_empty() && t.networks.is_empty())
        {
            bail!("the trace's containers and networks have no ports");
        }
        let filter = TraceFilter {
            ports,
            filter: crate::capture::Filter::parse(&t.filter).map_err(|e| err!("{e}"))?,
        };
        let (tx, rx) = crossbeam_channel::bounded(t.count.min(1000) as usize);
        self.worker.send(crate::worker::Command::Trace(Some(
            crate::worker::TraceArm {
                filter,
                count: t.count,
                tx,
            },
        )));
        let id = self.trace.as_ref().map_or(1, |s| s.id + 1);
        self.trace = Some(TraceSession {
            id,
            count: t.count,
            got: 0,
            rx,
        });
        Ok(id)
    }

    /// The records of the running trace made since the last read, with the daemon's names.
    pub fn trace_read(&mut self, id: u64) -> Result<serde_json::Value> {
        let Some(t) = self.trace.as_mut().filter(|t| t.id == id) else {
            bail!("trace {id} is over (another trace replaced it, or the daemon restarted)");
        };
        let mut records: Vec<crate::trace::TraceRecord> = t.rx.try_iter().collect();
        t.got += records.len() as u32;
        let done = t.got >= t.count;
        let name = |id: u16| {
            self.ports
                .0
                .get(&PortId(id))
                .map(|p| match p.container.as_str() {
                    "" => p.name.clone(),
                    c if c.starts_with('(') => format!("{} {c}", p.name),
                    c => format!("{} ({c})", p.name),
                })
                .unwrap_or_default()
        };
        for r in &mut records {
            r.ingress_name = name(r.ingress);
            r.network_name = r.network.map(|n| self.net_name(n)).unwrap_or_default();
            r.output_names = r.outputs.iter().map(|&p| name(p)).collect();
        }
        if done {
            self.trace = None;
        }
        Ok(serde_json::json!({ "records": records, "done": done }))
    }

    pub fn port_list(&self) -> Result<Vec<PortInfo>> {
        let snap = self.worker.snapshot()?;
        Ok(self
            .ports
            .0
            .iter()
            .map(|(id, p)| {
                let s = snap.ports.iter().find(|s| s.id == *id);
                let c = snap.counters.port(*id).copied().unwrap_or_default();
                PortInfo {
                    id: id.0,
                    name: p.name.clone(),
                    kind: p.kind.to_string(),
                    network: p.network.clone(),
                    container: p.container.clone(),
                    rx_frames: s.map_or(0, |s| s.rx_frames),
                    tx_frames: s.map_or(0, |s| s.tx_frames),
                    tx_dropped: s.map_or(0, |s| s.tx_dropped),
                    rx_dropped: s.map_or(0, |s| s.rx_dropped),
                    spoofed_mac: c.spoofed_mac,
                    spoofed_ip: c.spoofed_ip,
                    flood_limited: c.flood_limited,
                    storm_holds: s.map_or(0, |s| s.storm_holds),
                    storm_held: s.map_or(0, |s| s.storm_held),
                }
            })
            .collect())
    }

    pub fn stats(&self) -> Result<serde_json::Value> {
        let mut v = match self.worker.snapshot() {
            Ok(snap) => self.worker_stats(&snap),
            // Between a worker's panic and its restart: what the daemon knows.
            Err(e) => serde_json::json!({ "worker_error": e.to_string() }),
        };
        if let Some(m) = v.as_object_mut() {
            m.extend(self.worker_health());
        }
        Ok(v)
    }

    fn worker_stats(&self, snap: &crate::worker::Snapshot) -> serde_json::Value {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.worker.send(crate::worker::Command::Gateway(
            crate::gateway::GatewayCommand::Counters { reply },
        ));
        let nat = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_default();
        let mut v = serde_json::json!({
            "counters": counters_map(&snap.counters),
            "ports": snap.ports,
            "fdb_entries": snap.fdb.len(),
            "nat": nat,
        });
        if let Some(m) = v.as_object_mut() {
            for (k, dv) in self.drivers.all().iter().filter_map(|d| d.stats(snap)) {
                m.insert(k.into(), dv);
            }
        }
        v
    }

    /// The attach mode of a new endpoint on `net` when neither the request nor the daemon
    /// names one, as its driver says. Overlay networks get a TAP: measured on this project's
    /// machine it moves the same TCP stream for about 5% less CPU per byte than a veth (the
    /// switch writes into the container's stack directly, with fewer and larger page
    /// allocations than an AF_PACKET send), which on an overlay, where every byte is also
    /// copied through the tunnel, is what decides throughput. Elsewhere veth stays the
    /// default: a TAP's speed there is a tie, and veth is what Docker uses.
    fn default_attach(&self, net: &NetworkRecord) -> AttachMode {
        self.driver(net)
            .map_or(AttachMode::Veth, |d| d.default_attach())
    }

    // ----- for front ends that place the container end themselves (Docker's plugin) -----

    /// A free subnet for a new network: the first of Docker's default pools that overlaps no
    /// network, no host route and none of `also_taken` (subnets promised but not yet made).
    pub fn free_subnet(&self, also_taken: &[ipnet::Ipv4Net]) -> Result<ipnet::Ipv4Net> {
        let routes = host_routes();
        let mut taken: Vec<ipnet::Ipv4Net> = (self.state.networks.values())
            .filter_map(|n| n.subnet)
            .collect();
        taken.extend_from_slice(also_taken);
        ipam::next_default_subnet(&taken, &routes).ok_or_else(|| {
            err!("every default address pool overlaps a host route or another network; give one with --subnet")
        })
    }

    /// Leases an address of `network` (exactly `ip` when given) to `owner`, for a front end
    /// whose address management comes before the endpoint (Docker's IPAM calls).
    pub fn reserve_address(
        &mut self,
        network: &str,
        ip: Option<Ipv4Addr>,
        owner: &str,
    ) -> Result<Ipv4Addr> {
        self.network(network)?;
        let pool = self.state.ipam.pool_mut(network).map_err(|e| err!("{e}"))?;
        let ip = match ip {
            Some(a) => pool.allocate_static(a, owner).map(|_| a),
            None => pool.allocate(owner),
        }
        .map_err(|e| err!("{e}"))?;
        self.save()?;
        Ok(ip)
    }

    /// Gives back `ip` on `network` if `owns(holder)` says the lease is the caller's (a
    /// reservation of [`Daemon::reserve_address`]); returns whether it did.
    pub fn release_reserved(
        &mut self,
        network: &str,
        ip: Ipv4Addr,
        owns: impl Fn(&str) -> bool,
    ) -> Result<bool> {
        let Ok(pool) = self.state.ipam.pool_mut(network) else {
            return Ok(false);
        };
        if !pool.owner_of(ip).is_some_and(owns) {
            return Ok(false);
        }
        let _ = pool.release(ip);
        self.save()?;
        Ok(true)
    }

    /// Who holds the lease on `ip` in `network`.
    pub fn address_owner(&self, network: &str, ip: Ipv4Addr) -> Option<String> {
        let pool = self.state.ipam.pool(network).ok()?;
        pool.owner_of(ip).map(str::to_string)
    }

    /// Adds container `name` with one endpoint on `network` whose container end is a veth
    /// left in the host's namespace, down and unconfigured apart from its MAC and MTU, for
    /// someone else to move into a namespace and configure (Docker does, after its plugin's
    /// `Join`). Its address `ip` is leased to `name` (taken over from `reserved_by`, a
    /// reservation of [`Daemon::reserve_address`], when that holds it). The container is
    /// external and has no namespace path: it lives as long as its veth pair does. Returns the
    /// container and the name of the veth end to move. On failure nothing of it stays.
    pub fn attach_unplaced(
        &mut self,
        name: &str,
        network: &str,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
        reserved_by: Option<&str>,
        runtime: Option<RuntimeRef>,
    ) -> Result<(ContainerInfo, String)> {
        check_name("container", name)?;
        if self.state.containers.contains_key(name) {
            bail!("container name {name} is already in use");
        }
        let net = self.network(network)?.clone();
        let mac = mac.unwrap_or_else(|| mac_for(ip));
        if !mac.is_learnable() {
            bail!("MAC address {mac} cannot be a container's: use a unicast, non-zero address");
        }
        let port_name = new_port_name();
        let peer = unplaced_peer_name(&port_name);
        let ep = EndpointRecord {
            network: network.to_string(),
            ip,
            prefix: net.subnet.map(|s| s.prefix_len()).unwrap_or(24),
            mac: mac.to_string(),
            ifname: peer.clone(),
            port_name: port_name.clone(),
            attach: AttachMode::Veth,
            // Docker sets the container end's MTU itself, from the network's.
            mtu: None,
        };
        let rec = ContainerRecord {
            endpoints: vec![ep.clone()],
            ..ContainerRecord::external(name, PathBuf::new(), runtime, unix_now())
        };
        let gso = self.driver(&net).and_then(|d| d.gso_max_segs(&net));
        Transaction::run(self, |tx, d| {
            let pool = d.state.ipam.pool_mut(network).map_err(|e| err!("{e}"))?;
            if let Some(r) = reserved_by.filter(|r| pool.owner_of(ip) == Some(*r)) {
                let _ = pool.release(ip);
                let r = r.to_string();
                tx.undo(format!("give {ip} back to {r}"), move |d: &mut Daemon| {
                    if let Ok(p) = d.state.ipam.pool_mut(network) {
                        let _ = p.allocate_static(ip, &r);
                    }
                    Ok(())
                });
            }
            let pool = d.state.ipam.pool_mut(network).map_err(|e| err!("{e}"))?;
            pool.allocate_static(ip, name).map_err(|e| err!("{e}"))?;
            tx.undo(format!("release {ip}"), move |d: &mut Daemon| {
                d.release(network, ip);
                Ok(())
            });
            tx.undo("delete the veth pair", |_: &mut Daemon| {
                let _ = netns::detach(&port_name);
                Ok(())
            });
            let host = netns::Netlink::new()?;
            host.create_veth_pair(&netns::VethPair {
                host_name: &port_name,
                peer_name: &peer,
                peer_netns: None,
                peer_mac: Some(mac),
                mtu: Some(net.mtu),
            })
            .with_context(|| format!("cannot create the veth pair of {name}"))?;
            if let Some(segs) = gso {
                host.set_gso_max_segs(&peer, segs)?;
            }
            host.set_link_up(&port_name)?;
            let port = AfPacketPort::open_with(&port_name, d.afpacket_config())
                .with_context(|| format!("cannot open port {port_name}"))?;
            let policy = policy::port_policy(&net, &ep);
            let id = d.add_port(Box::new(port), ep.attach, network, net.id, name, policy)?;
            tx.undo("take the port out of the switch", move |d: &mut Daemon| {
                d.worker.remove_port(id);
                d.ports.0.remove(&id);
                Ok(())
            });
            d.state.containers.insert(name.to_string(), rec.clone());
            tx.undo(format!("forget container {name}"), |d: &mut Daemon| {
                d.state.containers.remove(name);
                Ok(())
            });
            d.save()?;
            d.endpoint_added(&net, &ep, id);
            d.announce_endpoint(&rec, &ep, id);
            Ok(())
        })?;
        Ok((self.container_info(name)?, peer))
    }

    /// Stops the ports `container` publishes on `network`.
    pub fn unpublish_network(&mut self, container: &str, network: &str) -> Result<()> {
        self.container(container)?;
        self.unpublish_container(container, Some(network));
        self.save()
    }

    /// Path of the state directory.
    pub fn state_dir(&self) -> &Path {
        &self.cfg.state_dir
    }
}

/// The host's IPv4 routes (to pick a default pool that overlaps none of them).
fn host_routes() -> Vec<ipnet::Ipv4Net> {
    netns::Netlink::new()
        .and_then(|nl| nl.list_ipv4_routes())
        .map(|r| r.into_iter().map(|r| r.dst).collect())
        .unwrap_or_default()
}

fn counters_map(c: &crate::pipeline::Counters) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("rx", c.rx),
        ("tx", c.tx),
        ("unicast", c.unicast),
        ("flood", c.flood),
        ("gateway", c.gateway),
        ("arp_suppressed", c.arp_suppressed),
    ] {
        m.insert(k.into(), v.into());
    }
    for r in crate::pipeline::DropReason::ALL {
        m.insert(format!("drop_{}", r.name()), c.drop_count(r).into());
    }
    m
}

/// How the switch opens a container's TAP: vnet headers and offloads, and persistent, so that
/// the container keeps its interface (link, addresses, routes) across a restart of the switch.
const CONTAINER_TAP: TapConfig = TapConfig {
    vnet_hdr: true,
    multi_queue: false,
    tunnel_gso: false,
    persist: true,
};

/// Largest MTU an xdp endpoint may have: native XDP on a veth needs a frame (and the XDP
/// headroom and the kernel's shared info) to fit one 4 KiB page; the kernel refuses the
/// program above this (measured on Linux 6.18: the container end's `maxmtu` while the host end
/// has an XDP program).
pub const XDP_MAX_MTU: u32 = 3506;

/// The attach mode a network's `-o attach=` names, if any.
fn network_attach(net: &NetworkRecord) -> Result<Option<AttachMode>> {
    net.options
        .get("attach")
        .map(|s| AttachMode::parse(s).map_err(|e| err!("network {}: -o attach: {e}", net.name)))
        .transpose()
}

/// Opens the AF_XDP port of an xdp endpoint whose veth pair exists: offloads off on both ends
/// (an XSK carries no vnet header, so the container must finish checksums and segment), then
/// the socket and the program on the host end.
fn open_xdp(ns: &Path, ep: &EndpointRecord) -> Result<XdpPort> {
    netns::offloads_off_in(ns, &ep.ifname).with_context(|| {
        format!(
            "cannot turn offloads off on {} in the container (xdp mode needs them off)",
            ep.ifname
        )
    })?;
    netns::offloads_off(&ep.port_name)
        .with_context(|| format!("cannot turn offloads off on {}", ep.port_name))?;
    XdpPort::open(&ep.port_name)
        .map_err(|e| err!("{e}"))
        .with_context(|| format!("cannot open AF_XDP port {} (xdp attach mode)", ep.port_name))
}

/// Attaches again to the persistent TAP a container kept while the switch was away (found by
/// its interface name inside the container's namespace). None when the namespace or the link
/// is gone, or the link is not a TAP: the caller builds the endpoint anew.
fn reattach_tap(c: &ContainerRecord, ep: &EndpointRecord) -> Option<TapPort> {
    let r = netns::run_in_netns(&c.netns, || {
        if !netns::Netlink::new()?.link_exists(&ep.ifname)? {
            return Ok(None);
        }
        // TUNSETIFF names a device of the calling thread's namespace; the descriptor it gives
        // works from any namespace afterwards.
        Ok(Some(TapPort::create_with(&ep.ifname, CONTAINER_TAP)))
    })
    .and_then(|r| r);
    match r {
        Ok(Some(Ok(tap))) => Some(tap.named(&ep.port_name)),
        Ok(Some(Err(e))) => {
            tracing::warn!(
                "container {}: cannot attach to its {} again ({e}); building it anew",
                c.name,
                ep.ifname
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(
                "container {}: cannot look for its TAP {}: {e}",
                c.name,
                ep.ifname
            );
            None
        }
    }
}

/// Deletes a container's persistent TAP, wherever it is: inside the container's namespace at
/// `ns` under its interface name (or still under its port name, if a move or rename failed
/// half way), or still in the switch's namespace.
fn delete_tap(ns: &Path, ep: &EndpointRecord) {
    if let Ok(nl) = netns::Netlink::in_netns(ns) {
        for name in [&ep.ifname, &ep.port_name] {
            let _ = nl.delete_link(name);
        }
    }
    let _ = netns::detach(&ep.port_name);
}

/// The container end of an endpoint made by [`Daemon::attach_unplaced`]: `vsp` and the hex
/// digits of its switch end `vswXXXXXXXX`.
pub fn unplaced_peer_name(port_name: &str) -> String {
    format!("vsp{}", port_name.get(3..).unwrap_or_default())
}

fn link_exists(name: &str) -> bool {
    netns::Netlink::new()
        .and_then(|nl| nl.link_exists(name))
        .unwrap_or(false)
}

/// Starts `argv` in the namespace at `netns` (a path; empty for the host's own namespace).
/// Our named namespaces are entered by name so that, like `ip netns exec`, the files of
/// /etc/netns/NAME (resolv.conf) are seen as /etc.
pub fn spawn(netns: &str, argv: &[String], stdio: netns::Stdios) -> Result<std::process::Child> {
    if argv.is_empty() {
        bail!("no command given");
    }
    if netns.is_empty() {
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        stdio.apply(&mut cmd);
        return Ok(cmd.spawn()?);
    }
    let target = match netns.strip_prefix(&format!("{}/", netns::NETNS_RUN_DIR)) {
        Some(name) if !name.contains('/') => name,
        _ => netns,
    };
    Ok(netns::spawn_in_netns(target, argv, stdio)?)
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
