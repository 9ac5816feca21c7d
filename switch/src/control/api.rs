//! The control API: requests and replies exchanged over the daemon's Unix socket, one JSON
//! object per line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Options of `vswitch network create`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkCreate {
    pub name: String,
    /// `bridge` (default), `overlay` or `macvlan`.
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    /// NAME=IP pairs.
    pub aux_addresses: Vec<String>,
    pub internal: bool,
    /// `-o KEY=VALUE` driver options (`mtu=1400`, ...).
    pub options: Vec<String>,
}

/// How a container is attached to the switch.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// A veth pair; the host end is an AF_PACKET port of the switch.
    #[default]
    Veth,
    /// A TAP device of the switch moved into the container as eth0.
    Tap,
    /// A veth pair whose host end the switch reads and writes through an AF_XDP socket (an
    /// XDP program on the host end redirects every frame to it): for packet rate.
    Xdp,
}

impl AttachMode {
    /// The mode's name on the command line and in listings.
    pub fn label(self) -> &'static str {
        match self {
            AttachMode::Veth => "veth",
            AttachMode::Tap => "tap",
            AttachMode::Xdp => "xdp",
        }
    }

    /// Parses `veth`, `tap` or `xdp` (the message lists them when `s` is none of them).
    pub fn parse(s: &str) -> Result<AttachMode, String> {
        match s {
            "veth" => Ok(AttachMode::Veth),
            "tap" => Ok(AttachMode::Tap),
            "xdp" => Ok(AttachMode::Xdp),
            _ => Err(format!("unknown attach mode {s:?}: use veth, tap or xdp")),
        }
    }

    /// Whether the container's interface is a veth pair whose host end the switch serves.
    pub fn is_veth(self) -> bool {
        matches!(self, AttachMode::Veth | AttachMode::Xdp)
    }
}

/// Options of `vswitch run`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRequest {
    pub name: Option<String>,
    /// A network name, or `host`, `none`, `container:NAME`.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub attach: Option<AttachMode>,
    /// Command to start detached inside the container (empty: none).
    pub detach_cmd: Vec<String>,
    /// `-p [HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`, on the run's network.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// A container attached for a container runtime (CNI, ...): which front end attached it and
/// the runtime's own id for it (a CNI container id can be longer than a vswitch name).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeRef {
    /// The front end: `cni`, ...
    pub frontend: String,
    /// The runtime's id of the container (`CNI_CONTAINERID`, Docker's endpoint id), as given.
    pub id: String,
    /// The runtime's name for it (Docker's container or network name), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RuntimeRef {
    /// A reference by the runtime's id, with no name yet.
    pub fn new(frontend: &str, id: &str) -> RuntimeRef {
        RuntimeRef {
            frontend: frontend.to_string(),
            id: id.to_string(),
            name: None,
        }
    }
}

/// `Request::RuntimeAttach`: attaches a namespace made by a container runtime to a network as
/// one endpoint, and publishes ports on it, or does nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeAttach {
    /// The front end (`cni`, ...).
    pub frontend: String,
    /// The runtime's container id: the key of the container for later calls.
    pub id: String,
    /// Path of the container's network namespace.
    pub netns: String,
    pub network: String,
    /// Interface name inside the namespace; an existing one is an error.
    pub ifname: String,
    /// A static address (else the network's pool picks one).
    #[serde(default)]
    pub ip: Option<String>,
    /// The interface's MAC (else the one derived from the address).
    #[serde(default)]
    pub mac: Option<String>,
    /// The interface's MTU, at most the network's (else the network's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`, published by the gateway as `-p` is.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// The reply to `Request::RuntimeAttach`: what a runtime reports about the new endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeAttached {
    /// The vswitch name given to the container (`vswitch ps`).
    pub container: String,
    pub endpoint: EndpointInfo,
    /// The network's gateway: the switch's address, or the LAN's router on a macvlan network.
    pub gateway: Option<Ipv4Addr>,
    /// Whether the endpoint got the namespace's default route (via `gateway`).
    pub default_route: bool,
    /// The switch's own address on the network, which answers DNS (none on macvlan networks).
    pub dns: Option<Ipv4Addr>,
    /// MTU of the interface.
    pub mtu: u32,
}

/// A request to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    NetworkCreate(NetworkCreate),
    NetworkLs,
    NetworkInspect {
        name: String,
    },
    NetworkRm {
        name: String,
    },
    NetworkConnect {
        network: String,
        container: String,
        ip: Option<String>,
        #[serde(default)]
        publish: Vec<String>,
        /// veth, tap or xdp (else the network's, the daemon's or the driver's default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attach: Option<AttachMode>,
    },
    NetworkDisconnect {
        network: String,
        container: String,
    },
    Run(RunRequest),
    Attach {
        name: String,
        netns: String,
        network: String,
        ip: Option<String>,
    },
    /// Attaches a runtime's namespace ([`RuntimeAttach`]); replies [`RuntimeAttached`].
    RuntimeAttach(RuntimeAttach),
    /// Removes the endpoint of a runtime's container on `network` (named `ifname` inside,
    /// when given), and the container once it has none. Succeeds when there is nothing to
    /// remove; replies whether something was.
    RuntimeDetach {
        frontend: String,
        id: String,
        network: String,
        #[serde(default)]
        ifname: Option<String>,
    },
    Ps,
    ContainerInspect {
        name: String,
    },
    Rm {
        name: String,
        force: bool,
    },
    Fdb {
        network: Option<String>,
    },
    Ports,
    Stats,
    /// Arms a trace of the next frames matching a filter (`vswitch trace`); answers its id.
    TraceStart(TraceStart),
    /// The records of trace `id` made since the last read, and whether it is complete.
    TraceRead {
        id: u64,
    },
    /// Ends trace `id`.
    TraceStop {
        id: u64,
    },
    /// Starts a capture ([`CaptureRequest`]); replies [`CaptureStarted`].
    CaptureStart(CaptureRequest),
    /// The frames captured since the last read: `{"frames": [CaptureFrame], "dropped": N}`.
    CaptureRead {
        id: u64,
    },
    /// Stops a capture: `{"frames": N, "dropped": N}`.
    CaptureStop {
        id: u64,
    },
    /// Every metric as the Prometheus text format (`{"text": "..."}`); what `GET /metrics`
    /// serves, and what `vswitch top` reads.
    Metrics,
    /// Adds (or removes) a peer VTEP of an overlay network.
    NetworkPeer {
        network: String,
        peer: String,
        remove: bool,
    },
    /// Test hook: panics the switch worker (`{"op":"inject_panic"}`), to test supervision.
    /// Refused unless the daemon runs with test hooks on (`--test-hooks`,
    /// `VSWITCH_TEST_HOOKS=1`).
    InjectPanic,
}

/// A network as listed and inspected.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub id: u16,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub aux_addresses: BTreeMap<String, String>,
    pub internal: bool,
    pub mtu: u32,
    pub options: BTreeMap<String, String>,
    pub containers: BTreeMap<String, EndpointInfo>,
    pub created: u64,
    /// An overlay network's peers (remote VTEPs), by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<Ipv4Addr, PeerInfo>,
    /// The front end that made the network and its name for it (Docker's network name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<RuntimeRef>,
}

/// A peer of an overlay network, as the switch sees it now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// The virtual port the peer is in the switch.
    pub port_id: u16,
    /// The largest inner IP packet sent to it: the underlay's path MTU towards it minus 50,
    /// followed as the underlay changes. Larger packets are answered with ICMP.
    pub mtu: u32,
}

/// One attachment of a container to a network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub network: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
    /// Interface name inside the container (eth0, eth1, ...).
    pub ifname: String,
    /// Switch-side interface (veth host end or TAP name).
    pub port_name: String,
    pub port_id: u16,
    pub attach: AttachMode,
}

/// A container as listed by `ps`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// `bridge`-style (its own namespace on networks), `host`, `none` or `container:NAME`.
    pub mode: String,
    /// Path of the network namespace (empty for host mode).
    pub netns: String,
    /// True when the namespace was made by someone else (`vswitch attach`).
    pub external: bool,
    pub endpoints: Vec<EndpointInfo>,
    pub pid: Option<u32>,
    pub status: String,
    pub command: Vec<String>,
    /// Published ports, as `HOST_IP:HOST_PORT->PORT/PROTO`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The container runtime that attached it and its id there (CNI, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
}

/// One MAC table entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbInfo {
    pub network: String,
    pub mac: String,
    pub port: String,
    pub port_id: u16,
    pub age_secs: u32,
    pub is_static: bool,
}

/// One port of the switch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortInfo {
    pub id: u16,
    pub name: String,
    pub kind: String,
    pub network: String,
    pub container: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
    /// Frames the kernel dropped before the switch read them (the port's socket was full).
    #[serde(default)]
    pub rx_dropped: u64,
    /// Frames from the port dropped by port security: not its endpoint's MAC.
    #[serde(default)]
    pub spoofed_mac: u64,
    /// Frames from the port dropped by port security: not its endpoint's IP address.
    #[serde(default)]
    pub spoofed_ip: u64,
    /// Frames the port would have flooded beyond its storm-control rate.
    #[serde(default)]
    pub flood_limited: u64,
    /// Times the port was held for a storm (storm control refused its floods many times in a
    /// row; while held the kernel drops its frames before the switch reads them).
    #[serde(default)]
    pub storm_holds: u64,
    /// Frames the kernel dropped while the port was held.
    #[serde(default)]
    pub storm_held: u64,
}

/// `Request::TraceStart`: which frames to trace, by vswitch's names (empty lists: any).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceStart {
    /// How many frames (1 to 10000).
    pub count: u32,
    /// Ingress ports, by name or number.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Containers: their ports.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Networks: every port on them.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Which frames, in the filter words of `vswitch capture` ([`crate::capture::Filter`]:
    /// `icmp and host 10.0.0.2`); none: every frame.
    #[serde(default)]
    pub filter: Vec<String>,
}

/// `Request::CaptureStart`: which ports (every port matching all of `network`, `container` and
/// `port`), which direction (`in`: frames the switch received from the port; `out`: frames it
/// sent on it; `both`, the default) and which frames (filter words, see
/// [`crate::capture::Filter`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureRequest {
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    /// A port name (`vswitch ports`).
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub filter: Vec<String>,
    /// Bytes kept of each frame (default 2048).
    #[serde(default)]
    pub snaplen: Option<usize>,
    /// Capture tunnel ports' VXLAN datagrams with their outer IPv4 and UDP headers (the
    /// filter applies to the inner frame): only tunnel ports, or the tunnel of an overlay
    /// `network` (and only its VNI).
    #[serde(default)]
    pub outer: bool,
}

/// A port a capture runs on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapturePort {
    pub id: u16,
    pub name: String,
    pub container: String,
    pub network: String,
}

/// The reply to `Request::CaptureStart`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureStarted {
    pub id: u64,
    pub snaplen: u32,
    pub ports: Vec<CapturePort>,
    /// An outer capture: each frame is an IPv4 packet (outer IPv4, UDP, VXLAN, inner frame),
    /// not an Ethernet frame.
    #[serde(default)]
    pub outer: bool,
}

/// One captured frame in a `Request::CaptureRead` reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureFrame {
    /// Port id (one of [`CaptureStarted::ports`]).
    pub port: u16,
    /// Sent by the switch on the port (else received from it).
    pub out: bool,
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Length on the wire (`data` may be cut to the snap length).
    pub orig_len: u32,
    /// The bytes, in hex.
    pub data: String,
}

/// A reply from the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    Ok { data: serde_json::Value },
    Error { message: String },
}
