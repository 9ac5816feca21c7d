//! The forwarding pipeline: a pure function from (ingress port, batch, time) to per-output
//! frame lists. No I/O, no clock, no allocation per frame.
//!
//! # Stages (VPP's vector style: each stage runs over the whole batch before the next)
//!
//! 1. **classify** — read the 14-byte Ethernet header (and an 802.1Q tag) straight from the
//!    bytes and find the frame's network from the ingress port's role:
//!    * `Access { network }`: untagged and priority-tagged (VID 0) frames belong to `network`;
//!      a frame tagged with a real VID is dropped as [`DropReason::Filtered`] (an access port
//!      does not carry VLANs — the same rule as a Linux bridge port without VLAN filtering
//!      entries, and the safe one: a container must not be able to hop into a trunk's VLAN).
//!    * `Trunk { native, vlans }`: the VID selects the network (VID 0 and untagged frames go to
//!      `native`); an unknown VID, or an untagged frame without a native network, is
//!      [`DropReason::Filtered`].
//!    * Frames shorter than an Ethernet header (or a tagged header) are [`DropReason::Runt`];
//!      a multicast or zero source address, or the reserved VID 4095, is
//!      [`DropReason::BadHeader`] (the Linux bridge drops such sources too). A port that is
//!      not attached, or a network that was removed, gives [`DropReason::NoNetwork`].
//!    * **Port security** ([`crate::guard`]): on a port with a [`PortPolicy::security`], a
//!      frame whose source MAC, ARP sender or IP source is not the port's endpoint is
//!      [`DropReason::SpoofedMac`] or [`DropReason::SpoofedIp`] — before it can be learned.
//! 2. **prefetch** — fused into classify: as soon as a frame's keys are known, the home lines
//!    of its source and (unicast) destination in the MAC table are prefetched, so the cache
//!    misses of the whole batch overlap instead of being paid one after the other.
//! 3. **learn** — the source address is learned on the ingress port (consecutive frames with
//!    the same source are learned once).
//! 4. **lookup** — every unicast destination is looked up, in a loop of its own.
//! 5. **decide** — per frame:
//!    * broadcast: flood to the network's other members **and** deliver to the gateway (ARP);
//!    * IEEE 802.1D link-local group (01:80:c2:00:00:0x: STP, LACP, LLDP, pause) is not
//!      forwarded: [`DropReason::Reserved`];
//!    * other multicast: flood;
//!    * the network's gateway MAC: to the gateway only;
//!    * a known unicast address: to its port, unless that is the ingress port
//!      ([`DropReason::SamePort`]: no hairpin);
//!    * an unknown unicast address: flood.
//!
//!    Flooding goes to every member of the frame's network except the ingress port; when
//!    that reaches nobody (and not the gateway) the frame is [`DropReason::NoDestination`].
//!    **Storm control:** on a port with a [`PortPolicy::flood`] limit, each frame about to be
//!    flooded (broadcast, multicast, unknown unicast) takes a token from the port's bucket; with
//!    none left it is [`DropReason::FloodLimited`]. The bucket refills from the time the worker
//!    passes in with [`Pipeline::set_clock_ms`] (once per batch, never read here).
//! 6. **dispatch** — frame indexes are appended to per-(output port, egress VLAN) lists in a
//!    [`Dispatch`]; the worker sends each list with one `send_burst`.
//!
//! # VLAN tags on egress
//!
//! Each output list carries the VLAN tag its frames must have on the wire (`None`: untagged).
//! [`Dispatch::frame_vlan`] tells the tag a frame carried when it arrived (`Some(0)` for a
//! priority tag). When they differ, the worker copies the frame and pushes, rewrites or strips
//! the tag on egress (the batch keeps headroom for that); when they are equal it sends the frame
//! as it is.
//!
//! # Tunnels (VXLAN)
//!
//! A tunnel port ([`PortRole::Tunnel`], one UDP socket per local VTEP) carries many remote
//! VTEPs and many networks. Each (network, remote VTEP) pair is a *virtual port*
//! ([`PortRole::Vtep`]) with its own [`PortId`], so the MAC table needs no new field: a MAC
//! learned from a decapsulated frame maps to the virtual port of the VTEP it came from, and
//! unicast to it is an ordinary output list that the worker hands to the tunnel port to
//! encapsulate towards that VTEP with the network's VNI.
//!
//! The tunnel port decapsulates in its `recv_burst` and writes each frame's virtual port into
//! [`crate::batch::FrameMeta::tag`]; [`Pipeline::process`] on a tunnel port takes the ingress
//! (and so the network) of each frame from there. Flooding goes to every virtual port of the
//! network, which is head-end replication to the network's peer list. **Split horizon:** a
//! frame that came from a tunnel is never sent back into the same tunnel — a flood skips every
//! virtual port of the ingress tunnel, and unicast to a MAC behind another VTEP of it is
//! dropped as [`DropReason::SplitHorizon`] (the VTEPs of an overlay form a full mesh, so each
//! delivers its own frames).

use crate::batch::{Batch, BATCH_SIZE};
pub use crate::fdb::NetworkId;
use crate::fdb::{mac_u64_learnable, Fdb, FdbConfig, FdbError};
use crate::guard::Guard;
pub use crate::guard::{FloodLimit, PortPolicy, PortSecurity};
use crate::port::PortId;
use crate::wire::MacAddr;

const ETH_HDR: usize = 14;
const VLAN_HDR: usize = 18;
const TPID_8021Q: u16 = 0x8100;
const MAC_MASK: u64 = 0xffff_ffff_ffff;
const BROADCAST: u64 = MAC_MASK;
const GROUP_BIT: u64 = 0x0100_0000_0000;
/// 01:80:c2:00:00:00 — the first IEEE 802.1D link-local group address.
const LINK_LOCAL: u64 = 0x0180_c200_0000;
/// Marks "no tag" in per-frame VLAN arrays.
const NO_VLAN: u16 = u16::MAX;

/// What a port is to the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// Carries one network, untagged (a container's veth or TAP).
    Access { network: NetworkId },
    /// Carries several networks as 802.1Q VLANs, and optionally one untagged (`native`).
    Trunk {
        native: Option<NetworkId>,
        /// (VLAN id 1..=4094, network) pairs.
        vlans: Vec<(u16, NetworkId)>,
    },
    /// A tunnel port (VXLAN): member of no network itself; each received frame names its
    /// ingress virtual port ([`PortRole::Vtep`]) in its metadata tag.
    Tunnel,
    /// A virtual port: remote VTEP of `network` behind the tunnel port `tunnel`. It never
    /// receives by itself (frames arrive through the tunnel); frames sent to it are
    /// encapsulated by the tunnel port.
    Vtep { network: NetworkId, tunnel: PortId },
}

/// Pipeline settings (the MAC table's size and limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Most MAC table entries.
    pub fdb_capacity: usize,
    /// Most learned entries per network.
    pub fdb_max_per_network: usize,
    /// Most learned entries per port.
    pub fdb_max_per_port: usize,
    /// Seconds after which an unrefreshed learned entry is removed.
    pub aging_secs: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let f = FdbConfig::default();
        PipelineConfig {
            fdb_capacity: f.capacity,
            fdb_max_per_network: f.max_per_network,
            fdb_max_per_port: f.max_per_port,
            aging_secs: f.aging_secs,
        }
    }
}

/// Why a frame was dropped. Every drop has one, and a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet (or 802.1Q-tagged Ethernet) header.
    Runt,
    /// Multicast or zero source address, or the reserved VLAN id 4095.
    BadHeader,
    /// The ingress port is not attached, or its network does not exist.
    NoNetwork,
    /// VLAN policy: a tagged frame on an access port, a VID the trunk does not carry, an
    /// untagged frame on a trunk without a native network.
    Filtered,
    /// The destination was learned on the ingress port (no hairpin).
    SamePort,
    /// A flood that reached no other member (and not the gateway).
    NoDestination,
    /// An IEEE 802.1D link-local destination (STP, LACP, LLDP, pause): never forwarded.
    Reserved,
    /// The output port's transmit queue was full (counted by the worker).
    TxFull,
    /// A unicast frame from an uplink port (a macvlan parent) to an address that no port of
    /// its network owns: the LAN's own traffic, seen because the parent is promiscuous.
    /// Uplinks never flood unknown unicast (macvlan's rule: a frame from the parent goes only
    /// to the child that owns its destination).
    NotLocal,
    /// A frame from a tunnel whose destination is behind the same tunnel (split horizon), or
    /// whose ingress virtual port is unknown to the tunnel.
    SplitHorizon,
    /// Larger than the underlay carries towards the tunnel peer it was for (the sender is
    /// answered with ICMP where it can be; counted by the worker).
    TooBig,
    /// Port security: the Ethernet source (or an ARP sender's hardware address) is not the
    /// port's endpoint's MAC.
    SpoofedMac,
    /// Port security: an IPv4 source or ARP sender address that is neither the port's lease
    /// nor 0.0.0.0, or an IPv6 source or neighbour-discovery claim other than the link-local
    /// address of the endpoint's MAC (see [`crate::guard`]).
    SpoofedIp,
    /// Storm control: the port's flooding (broadcast, multicast, unknown unicast) is over its
    /// rate and burst.
    FloodLimited,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 14;
    /// All reasons, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Runt,
        DropReason::BadHeader,
        DropReason::NoNetwork,
        DropReason::Filtered,
        DropReason::SamePort,
        DropReason::NoDestination,
        DropReason::Reserved,
        DropReason::TxFull,
        DropReason::NotLocal,
        DropReason::SplitHorizon,
        DropReason::TooBig,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::FloodLimited,
    ];

    /// A stable snake_case name for listings.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::BadHeader => "bad_header",
            DropReason::NoNetwork => "no_network",
            DropReason::Filtered => "filtered",
            DropReason::SamePort => "same_port",
            DropReason::NoDestination => "no_destination",
            DropReason::Reserved => "reserved",
            DropReason::TxFull => "tx_full",
            DropReason::NotLocal => "not_local",
            DropReason::SplitHorizon => "split_horizon",
            DropReason::TooBig => "too_big",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::FloodLimited => "flood_limited",
        }
    }
}

/// Per-port frame counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortCounters {
    /// Frames received on the port.
    pub rx: u64,
    /// Bytes received on the port.
    pub rx_bytes: u64,
    /// Frames queued for transmission on the port (each flooded copy counts).
    pub tx: u64,
    /// Frames from this port forwarded to one known port.
    pub unicast: u64,
    /// Frames from this port flooded.
    pub flood: u64,
    /// Frames from this port delivered to the gateway.
    pub gateway: u64,
    /// Frames from this port dropped (any reason but TX full).
    pub drops: u64,
    /// Of those, [`DropReason::SpoofedMac`].
    #[serde(default)]
    pub spoofed_mac: u64,
    /// Of those, [`DropReason::SpoofedIp`].
    #[serde(default)]
    pub spoofed_ip: u64,
    /// Of those, [`DropReason::FloodLimited`].
    #[serde(default)]
    pub flood_limited: u64,
    /// Frames from this port dropped, by reason (indexed by `DropReason as usize`; TX full is
    /// counted on the output port by the worker, not here). Counted on the drop paths only.
    #[serde(default)]
    pub dropped: [u64; DropReason::COUNT],
}

impl PortCounters {
    /// Frames from this port dropped for `reason`.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }
}

/// Pipeline counters: totals, drops by reason, and per port.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission (each flooded copy counts).
    pub tx: u64,
    /// Frames forwarded to one known port.
    pub unicast: u64,
    /// Frames flooded.
    pub flood: u64,
    /// Frames delivered to the gateway.
    pub gateway: u64,
    /// ARP requests for a remote endpoint the store told about, answered here instead of
    /// flooded (ARP suppression, see [`Pipeline::set_proxy_arp`]).
    #[serde(default)]
    pub arp_suppressed: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Per-port counters, indexed by port id.
    pub ports: Vec<PortCounters>,
}

impl Counters {
    /// Adds `n` drops for `reason` (the worker counts [`DropReason::TxFull`] this way).
    #[inline]
    pub fn add_drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Drops counted for `reason`.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Counters of `port`, if it was ever attached.
    pub fn port(&self, port: PortId) -> Option<&PortCounters> {
        self.ports.get(port.index())
    }
}

/// One output list: frames of the batch to send on `port` with egress tag `vlan`.
#[derive(Debug, Clone, Copy)]
struct TxList {
    port: PortId,
    /// Egress tag, [`NO_VLAN`] for untagged.
    vlan: u16,
    len: u16,
    /// Next list of the same port in this batch (index + 1; 0 ends the chain).
    next: u32,
    frames: [u16; BATCH_SIZE],
}

const EMPTY_LIST: TxList = TxList {
    port: PortId(0),
    vlan: NO_VLAN,
    len: 0,
    next: 0,
    frames: [0; BATCH_SIZE],
};

/// The pipeline's output for one batch: per-output frame lists and gateway deliveries.
/// Reused across batches: lists are fixed arrays, so after warm-up (the first batch that
/// reaches a given number of outputs) nothing in it allocates.
#[derive(Debug)]
pub struct Dispatch {
    lists: Vec<TxList>,
    active: usize,
    /// Per port: index + 1 of its first list in this batch, 0 if none.
    by_port: Vec<u32>,
    /// The list the previous push went to (index + 1, 0 if none): unicast frames of a batch
    /// usually share their output.
    last: usize,
    gateway: Vec<(u16, NetworkId)>,
    /// ARP requests to answer on the ingress port with the MAC the table knows.
    proxied: Vec<(u16, MacAddr)>,
    frame_vlan: [u16; BATCH_SIZE],
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch::new()
    }
}

impl Dispatch {
    /// An empty dispatch, with room for 64 ports' lists allocated up front.
    pub fn new() -> Self {
        Dispatch {
            lists: vec![EMPTY_LIST; 64],
            active: 0,
            by_port: vec![0; 64],
            last: 0,
            gateway: Vec::with_capacity(BATCH_SIZE),
            proxied: Vec::with_capacity(BATCH_SIZE),
            frame_vlan: [NO_VLAN; BATCH_SIZE],
        }
    }

    /// Forgets the previous batch's decisions (keeps all memory).
    pub fn clear(&mut self) {
        for l in &self.lists[..self.active] {
            self.by_port[l.port.index()] = 0;
        }
        self.active = 0;
        self.last = 0;
        self.gateway.clear();
        self.proxied.clear();
    }

    /// Queues frame `frame` of the batch for `port` with egress tag `vlan`. A list holds at
    /// most [`BATCH_SIZE`] frames (each frame goes to a given output at most once per batch);
    /// pushes beyond that are ignored. Public for benches and tests; the pipeline calls it.
    #[inline(always)]
    pub fn push(&mut self, port: PortId, vlan: Option<u16>, frame: u16) {
        let vlan = vlan.unwrap_or(NO_VLAN);
        let li = if self.last != 0
            && self.lists[self.last - 1].port == port
            && self.lists[self.last - 1].vlan == vlan
        {
            self.last - 1
        } else {
            self.find_or_add(port, vlan)
        };
        self.last = li + 1;
        let l = &mut self.lists[li];
        if (l.len as usize) < BATCH_SIZE {
            l.frames[l.len as usize] = frame;
            l.len += 1;
        }
    }

    #[inline]
    fn find_or_add(&mut self, port: PortId, vlan: u16) -> usize {
        let p = port.index();
        if p >= self.by_port.len() {
            self.by_port.resize(p + 1, 0);
        }
        let mut li = self.by_port[p];
        while li != 0 {
            let l = &self.lists[li as usize - 1];
            if l.vlan == vlan {
                return li as usize - 1;
            }
            li = l.next;
        }
        if self.active == self.lists.len() {
            self.lists.push(EMPTY_LIST);
        }
        let l = &mut self.lists[self.active];
        l.port = port;
        l.vlan = vlan;
        l.len = 0;
        l.next = self.by_port[p];
        self.active += 1;
        self.by_port[p] = self.active as u32;
        self.active - 1
    }

    /// The output lists of this batch: (port, frame indexes in batch order, egress VLAN tag or
    /// `None` for untagged). A port appears once per distinct egress tag.
    pub fn outputs(&self) -> impl Iterator<Item = (PortId, &[u16], Option<u16>)> + '_ {
        self.lists[..self.active].iter().map(|l| {
            let vlan = if l.vlan == NO_VLAN {
                None
            } else {
                Some(l.vlan)
            };
            (l.port, &l.frames[..l.len as usize], vlan)
        })
    }

    /// Frames for the switch's own gateway: (frame index, network). Broadcasts appear here
    /// and are flooded as well.
    pub fn to_gateway(&self) -> &[(u16, NetworkId)] {
        &self.gateway
    }

    /// ARP requests of this batch the switch answers itself (frame index, the MAC the asked
    /// address is at): they were not flooded. See [`Pipeline::set_proxy_arp`].
    pub fn proxy_arp(&self) -> &[(u16, MacAddr)] {
        &self.proxied
    }

    /// The VLAN tag frame `i` carried on arrival (`Some(0)`: priority tag; `None`: untagged).
    /// Compare with the output's tag to know whether the frame must be re-tagged on egress.
    #[inline]
    pub fn frame_vlan(&self, i: usize) -> Option<u16> {
        match self.frame_vlan.get(i) {
            Some(&v) if v != NO_VLAN => Some(v),
            _ => None,
        }
    }
}

/// A member of a network: a port, and the tag frames of the network carry on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    port: PortId,
    vlan: Option<u16>,
    /// The tunnel port a virtual port belongs to ([`NO_HORIZON`] for other ports).
    horizon: PortId,
}

/// Horizon of a member that is not behind a tunnel.
const NO_HORIZON: PortId = PortId::MAX;

#[derive(Debug, Default)]
struct Network {
    present: bool,
    /// The gateway MAC as a u64, or u64::MAX (never a frame's 48-bit address) when none.
    gateway: u64,
    members: Vec<Member>,
    /// Entries of [`Pipeline::proxy`] for this network (0: no ARP frame is looked at).
    proxies: u32,
}

#[derive(Debug)]
struct PortState {
    role: PortRole,
    /// Trunk: (vid, network) sorted by vid.
    by_vid: Vec<(u16, NetworkId)>,
    /// An uplink (a macvlan parent): unknown unicast from it is dropped, not flooded.
    uplink: bool,
    /// Port security and storm control (their hot state is in [`Pipeline::guards`]).
    policy: PortPolicy,
}

impl PortState {
    /// The egress tag of `net` on this port, or None if the port does not carry `net`.
    #[inline]
    fn egress(&self, net: NetworkId) -> Option<Option<u16>> {
        match &self.role {
            PortRole::Access { network } | PortRole::Vtep { network, .. } => {
                (*network == net).then_some(None)
            }
            PortRole::Tunnel => None,
            PortRole::Trunk { native, vlans } => {
                if *native == Some(net) {
                    return Some(None);
                }
                vlans.iter().find(|(_, n)| *n == net).map(|(v, _)| Some(*v))
            }
        }
    }

    /// Classifies a frame by its tag (NO_VLAN: untagged).
    #[inline]
    fn classify(&self, vid: u16) -> Result<NetworkId, DropReason> {
        match &self.role {
            PortRole::Access { network } => {
                if vid == NO_VLAN || vid == 0 {
                    Ok(*network)
                } else {
                    Err(DropReason::Filtered)
                }
            }
            PortRole::Tunnel => Err(DropReason::NoNetwork),
            PortRole::Vtep { network, .. } => {
                if vid == NO_VLAN || vid == 0 {
                    Ok(*network)
                } else {
                    Err(DropReason::Filtered)
                }
            }
            PortRole::Trunk { native, .. } => {
                if vid == NO_VLAN || vid == 0 {
                    native.ok_or(DropReason::Filtered)
                } else {
                    match self.by_vid.binary_search_by_key(&vid, |(v, _)| *v) {
                        Ok(at) => Ok(self.by_vid[at].1),
                        Err(_) => Err(DropReason::Filtered),
                    }
                }
            }
        }
    }
}

/// The switch's forwarding state and logic.
#[derive(Debug)]
pub struct Pipeline {
    fdb: Fdb,
    ports: Vec<Option<PortState>>,
    networks: Vec<Network>,
    counters: Counters,
    // Per-batch scratch (no allocation per batch).
    net: [NetworkId; BATCH_SIZE],
    src: [u64; BATCH_SIZE],
    dst: [u64; BATCH_SIZE],
    src_home: [usize; BATCH_SIZE],
    dst_home: [usize; BATCH_SIZE],
    /// Where each valid frame's destination was learned (stage 4; `None` for group ones).
    dst_port: [Option<PortId>; BATCH_SIZE],
    valid: [u8; BATCH_SIZE],
    /// Per port: its network if it is an access port, else `u32::MAX`.
    access_net: Vec<u32>,
    /// Ingress (virtual) port of each valid frame, for batches from a tunnel port.
    ing: [PortId; BATCH_SIZE],
    /// Per port: port security and the flood bucket ([`Guard::OPEN`] when it has neither).
    guards: Vec<Guard>,
    /// The time storm-control buckets refill to, in milliseconds ([`Pipeline::set_clock_ms`]).
    now_ms: u64,
    /// ARP suppression: (network << 32 | IPv4 address) -> the MAC it is at, for remote
    /// endpoints of overlay networks ([`Pipeline::set_proxy_arp`]).
    proxy: std::collections::HashMap<u64, MacAddr>,
}

impl Pipeline {
    /// A pipeline with an empty MAC table sized by `cfg`.
    pub fn new(cfg: PipelineConfig) -> Self {
        Self::with_fdb(Fdb::new(FdbConfig {
            capacity: cfg.fdb_capacity,
            max_per_network: cfg.fdb_max_per_network,
            max_per_port: cfg.fdb_max_per_port,
            aging_secs: cfg.aging_secs,
            seed: None,
        }))
    }

    /// A pipeline around a given table (tests fix the hash seed this way).
    pub fn with_fdb(fdb: Fdb) -> Self {
        Pipeline {
            fdb,
            ports: Vec::new(),
            networks: Vec::new(),
            counters: Counters::default(),
            net: [NetworkId(0); BATCH_SIZE],
            src: [0; BATCH_SIZE],
            dst: [0; BATCH_SIZE],
            src_home: [0; BATCH_SIZE],
            dst_home: [0; BATCH_SIZE],
            dst_port: [None; BATCH_SIZE],
            valid: [0; BATCH_SIZE],
            access_net: Vec::new(),
            ing: [PortId(0); BATCH_SIZE],
            guards: Vec::new(),
            now_ms: 0,
            proxy: std::collections::HashMap::new(),
        }
    }

    fn network_mut(&mut self, id: NetworkId) -> &mut Network {
        let i = id.index();
        if i >= self.networks.len() {
            self.networks.resize_with(i + 1, Network::default);
        }
        &mut self.networks[i]
    }

    /// Creates (or updates the gateway of) network `id`.
    pub fn add_network(&mut self, id: NetworkId, gateway_mac: Option<MacAddr>) {
        let n = self.network_mut(id);
        n.present = true;
        n.gateway = gateway_mac.map_or(u64::MAX, |m| m.to_u64());
    }

    /// Removes network `id`: its frames are dropped ([`DropReason::NoNetwork`]) and its MAC
    /// table entries are flushed (in O(1)). Ports keep their role and work again if the
    /// network is added back.
    pub fn remove_network(&mut self, id: NetworkId) {
        if let Some(n) = self.networks.get_mut(id.index()) {
            n.present = false;
            n.gateway = u64::MAX;
            if n.proxies != 0 {
                n.proxies = 0;
                self.proxy.retain(|k, _| (k >> 32) != u64::from(id.0));
            }
        }
        self.fdb.flush_network(id);
    }

    /// Attaches `port` with `role` (replacing any previous role, whose MACs are flushed).
    /// VLAN ids outside 1..=4094 in a trunk's list are ignored (they can never match).
    pub fn add_port(&mut self, port: PortId, mut role: PortRole) {
        if self.ports.get(port.index()).is_some_and(|p| p.is_some()) {
            self.remove_port(port);
        }
        let mut by_vid = Vec::new();
        if let PortRole::Trunk { vlans, .. } = &mut role {
            vlans.retain(|(v, _)| (1..=4094).contains(v));
            by_vid = vlans.clone();
            by_vid.sort_unstable();
            by_vid.dedup_by_key(|(v, _)| *v);
        }
        let members: Vec<(NetworkId, Option<u16>)> = match &role {
            PortRole::Access { network } | PortRole::Vtep { network, .. } => {
                vec![(*network, None)]
            }
            PortRole::Tunnel => Vec::new(),
            PortRole::Trunk { native, .. } => native
                .iter()
                .map(|n| (*n, None))
                .chain(by_vid.iter().map(|(v, n)| (*n, Some(*v))))
                .collect(),
        };
        let horizon = match &role {
            PortRole::Vtep { tunnel, .. } => *tunnel,
            _ => NO_HORIZON,
        };
        for (net, vlan) in members {
            let n = self.network_mut(net);
            if !n.members.iter().any(|m| m.port == port) {
                n.members.push(Member {
                    port,
                    vlan,
                    horizon,
                });
            }
        }
        let i = port.index();
        if i >= self.ports.len() {
            self.ports.resize_with(i + 1, || None);
        }
        if i >= self.counters.ports.len() {
            self.counters.ports.resize(i + 1, PortCounters::default());
        }
        if i >= self.access_net.len() {
            self.access_net.resize(i + 1, u32::MAX);
        }
        self.access_net[i] = match role {
            PortRole::Access { network } => network.0 as u32,
            _ => u32::MAX,
        };
        if i >= self.guards.len() {
            self.guards.resize(i + 1, Guard::OPEN);
        }
        self.guards[i] = Guard::OPEN;
        self.ports[i] = Some(PortState {
            role,
            by_vid,
            uplink: false,
            policy: PortPolicy::default(),
        });
    }

    /// Changes the role of an attached `port` (its MACs are flushed, as by [`Pipeline::add_port`])
    /// and keeps its uplink mark and policy. A port that is not attached is attached with `role`.
    pub fn set_role(&mut self, port: PortId, role: PortRole) {
        let uplink = self.is_uplink(port);
        let policy = self.policy(port);
        self.add_port(port, role);
        self.set_uplink(port, uplink);
        self.set_policy(port, policy);
    }

    /// Sets what an attached `port` may send: port security (its one source MAC and IPv4
    /// address) and storm control (its flood rate; the bucket starts full). A port added by
    /// [`Pipeline::add_port`] has neither, which is right for uplinks, tunnels and the host's
    /// own port; the daemon gives each container port its network's policy.
    pub fn set_policy(&mut self, port: PortId, policy: PortPolicy) {
        let i = port.index();
        if let (Some(Some(p)), Some(g)) = (self.ports.get_mut(i), self.guards.get_mut(i)) {
            p.policy = policy;
            *g = Guard::new(&policy, self.now_ms);
        }
    }

    /// The policy of `port` (the default for a port that is not attached).
    pub fn policy(&self, port: PortId) -> PortPolicy {
        match self.ports.get(port.index()) {
            Some(Some(p)) => p.policy,
            _ => PortPolicy::default(),
        }
    }

    /// Tells the pipeline the time, in milliseconds from any fixed origin (the worker calls it
    /// once per batch). Storm-control buckets refill from it; nothing here reads a clock.
    #[inline]
    pub fn set_clock_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Marks an attached `port` as an uplink (a macvlan parent facing a LAN): a unicast frame
    /// received on it whose destination no other port of its network owns is dropped
    /// ([`DropReason::NotLocal`]) instead of flooded. Broadcast and multicast still flood.
    pub fn set_uplink(&mut self, port: PortId, on: bool) {
        if let Some(Some(p)) = self.ports.get_mut(port.index()) {
            p.uplink = on;
        }
    }

    /// True when `port` is attached and marked as an uplink.
    pub fn is_uplink(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.index()), Some(Some(p)) if p.uplink)
    }

    /// Detaches `port`: it leaves every network and its MACs are flushed (in O(1)).
    pub fn remove_port(&mut self, port: PortId) {
        if let Some(slot) = self.ports.get_mut(port.index()) {
            *slot = None;
        }
        if let Some(a) = self.access_net.get_mut(port.index()) {
            *a = u32::MAX;
        }
        if let Some(g) = self.guards.get_mut(port.index()) {
            *g = Guard::OPEN;
        }
        for n in &mut self.networks {
            n.members.retain(|m| m.port != port);
        }
        self.fdb.flush_port(port);
    }

    /// Adds a static MAC table entry (never ages, never moves).
    pub fn add_static(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
    ) -> Result<(), FdbError> {
        self.fdb.add_static(network, mac, port, 0)
    }

    /// Removes the entry of `mac` in `network` (static or learned); true if there was one.
    pub fn remove_static(&mut self, network: NetworkId, mac: MacAddr) -> bool {
        self.fdb.remove(network, mac)
    }

    /// ARP suppression: an ARP request (broadcast, from a local port) for `ip` on `network`
    /// is answered by the switch with `mac` on the port it came from, and not flooded
    /// (`None` forgets `ip`). The store's endpoints of remote hosts go here, so that finding
    /// a container on another host floods nothing across hosts. Networks without an entry
    /// never have their frames looked into.
    pub fn set_proxy_arp(
        &mut self,
        network: NetworkId,
        ip: std::net::Ipv4Addr,
        mac: Option<MacAddr>,
    ) {
        let key = (u64::from(network.0) << 32) | u64::from(u32::from(ip));
        let had = match mac {
            Some(m) if m.is_learnable() => self.proxy.insert(key, m).is_some(),
            Some(_) => return,
            None => self.proxy.remove(&key).is_some(),
        };
        let n = self.network_mut(network);
        match (mac.is_some(), had) {
            (true, false) => n.proxies += 1,
            (false, true) => n.proxies = n.proxies.saturating_sub(1),
            _ => {}
        }
    }

    /// The MAC ARP suppression answers for `ip` on `network`, if any.
    pub fn proxy_arp(&self, network: NetworkId, ip: std::net::Ipv4Addr) -> Option<MacAddr> {
        let key = (u64::from(network.0) << 32) | u64::from(u32::from(ip));
        self.proxy.get(&key).copied()
    }

    /// One aging slice of the MAC table (see [`Fdb::age`]).
    pub fn age(&mut self, now: u32, budget: usize) -> usize {
        self.fdb.age(now, budget)
    }

    /// The network a frame received on `in_port` belongs to (`tag`: its metadata tag, the
    /// virtual ingress port of a tunnel's frame), as classification decides it; `None` when
    /// classification would drop it. For tracing, never on the hot path.
    pub fn frame_network(&self, in_port: PortId, frame: &[u8], tag: u32) -> Option<NetworkId> {
        let tpid = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let vid = if tpid == TPID_8021Q {
            u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]) & 0x0fff
        } else {
            NO_VLAN
        };
        let port = self.ports.get(in_port.index())?.as_ref()?;
        let port = if matches!(port.role, PortRole::Tunnel) {
            self.ports.get(tag as usize)?.as_ref()?
        } else {
            port
        };
        port.classify(vid).ok()
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, writable (control-plane operations such as removing an entry).
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counters, writable (the worker adds TX-full drops).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    #[inline]
    fn drop_frame(counters: &mut Counters, in_port: usize, reason: DropReason) {
        counters.drops[reason as usize] += 1;
        if let Some(p) = counters.ports.get_mut(in_port) {
            p.drops += 1;
            p.dropped[reason as usize] += 1;
        }
    }

    /// Counts a drop by port security or storm control (also per port, by reason).
    #[cold]
    fn drop_guarded(counters: &mut Counters, in_port: usize, reason: DropReason) {
        counters.drops[reason as usize] += 1;
        if let Some(p) = counters.ports.get_mut(in_port) {
            p.drops += 1;
            p.dropped[reason as usize] += 1;
            match reason {
                DropReason::SpoofedMac => p.spoofed_mac += 1,
                DropReason::SpoofedIp => p.spoofed_ip += 1,
                DropReason::FloodLimited => p.flood_limited += 1,
                _ => {}
            }
        }
    }

    /// Decides over every frame of `batch`, received on `in_port` at time `now` (seconds),
    /// and writes the decisions into `out` (which is cleared first).
    ///
    /// On a [`PortRole::Tunnel`] port each frame's ingress is the virtual port in its
    /// metadata tag (see the module documentation).
    pub fn process(&mut self, in_port: PortId, batch: &Batch, now: u32, out: &mut Dispatch) {
        let tunnel = matches!(
            self.ports.get(in_port.index()),
            Some(Some(PortState {
                role: PortRole::Tunnel,
                ..
            }))
        );
        // Two instances of one body: the access/trunk one has no per-frame ingress at all.
        if tunnel {
            self.process_impl::<true>(in_port, batch, now, out);
        } else {
            self.process_impl::<false>(in_port, batch, now, out);
        }
    }

    /// One batch through the stages, VPP-style: each stage is a loop over the whole batch, so
    /// its code and data stay hot while it runs. `TUNNEL`: the batch came from a tunnel port
    /// (each frame's ingress is its virtual port).
    #[inline(always)]
    fn process_impl<const TUNNEL: bool>(
        &mut self,
        in_port: PortId,
        batch: &Batch,
        now: u32,
        out: &mut Dispatch,
    ) {
        out.clear();
        let n = batch.len().min(BATCH_SIZE);
        let in_idx = in_port.index();
        self.counters.rx += n as u64;
        let Some(Some(port)) = self.ports.get(in_idx) else {
            self.counters.drops[DropReason::NoNetwork as usize] += n as u64;
            return;
        };
        let from_uplink = port.uplink;
        let guard = self.ingress_guard::<TUNNEL>(in_idx);
        let nvalid = self.classify::<TUNNEL>(in_port, batch, n, guard, out);
        self.learn::<TUNNEL>(in_port, nvalid, now);
        self.lookup(nvalid);
        let limited = guard.limited();
        let (tally, tokens) = self.decide::<TUNNEL>(
            in_port,
            batch,
            from_uplink,
            nvalid,
            limited,
            guard.tokens,
            out,
        );
        if limited {
            if let Some(g) = self.guards.get_mut(in_idx) {
                g.tokens = tokens;
            }
        }
        self.count(in_idx, out, tally);
    }

    /// Stage 0: the ingress port's security and storm-control state, its bucket refilled to
    /// now (never on a tunnel: its frames come from peers).
    #[inline(always)]
    fn ingress_guard<const TUNNEL: bool>(&mut self, in_idx: usize) -> Guard {
        if TUNNEL {
            return Guard::OPEN;
        }
        match self.guards.get_mut(in_idx) {
            Some(g) => {
                if g.limited() {
                    g.refill(self.now_ms);
                }
                *g
            }
            None => Guard::OPEN,
        }
    }

    /// Stage 1: parse and classify. Each frame that passes (long enough, a learnable source,
    /// a network for its port and tag, admitted by port security) gets a slot in the scratch
    /// arrays: its network, its source and destination keys, its index in the batch and (from
    /// a tunnel) its virtual ingress port. Returns how many passed.
    #[inline(always)]
    fn classify<const TUNNEL: bool>(
        &mut self,
        in_port: PortId,
        batch: &Batch,
        n: usize,
        guard: Guard,
        out: &mut Dispatch,
    ) -> usize {
        let in_idx = in_port.index();
        let Some(Some(port)) = self.ports.get(in_idx) else {
            return 0;
        };
        let secured = guard.secured();
        let mut nvalid = 0;
        let mut rx_bytes = 0u64;
        for i in 0..n {
            let f = batch.frame(i);
            rx_bytes += f.len() as u64;
            out.frame_vlan[i] = NO_VLAN;
            let Some(h) = f.first_chunk::<ETH_HDR>() else {
                Self::drop_frame(&mut self.counters, in_idx, DropReason::Runt);
                continue;
            };
            let dst = u64::from_be_bytes([0, 0, h[0], h[1], h[2], h[3], h[4], h[5]]);
            let src = u64::from_be_bytes([0, 0, h[6], h[7], h[8], h[9], h[10], h[11]]);
            let mut vid = NO_VLAN;
            if u16::from_be_bytes([h[12], h[13]]) == TPID_8021Q {
                if f.len() < VLAN_HDR {
                    Self::drop_frame(&mut self.counters, in_idx, DropReason::Runt);
                    continue;
                }
                vid = u16::from_be_bytes([f[14], f[15]]) & 0x0fff;
                if vid == 0x0fff {
                    Self::drop_frame(&mut self.counters, in_idx, DropReason::BadHeader);
                    continue;
                }
                out.frame_vlan[i] = vid;
            }
            if !mac_u64_learnable(src) {
                Self::drop_frame(&mut self.counters, in_idx, DropReason::BadHeader);
                continue;
            }
            let mut ing = in_port;
            let cls = if TUNNEL {
                // The virtual port the tunnel decapsulated this frame for: it must be a VTEP
                // of this very tunnel.
                ing = PortId(batch.meta(i).tag as u16);
                match self.ports.get(ing.index()) {
                    Some(Some(
                        v @ PortState {
                            role: PortRole::Vtep { tunnel, .. },
                            ..
                        },
                    )) if *tunnel == in_port => v.classify(vid),
                    _ => Err(DropReason::SplitHorizon),
                }
            } else {
                port.classify(vid)
            };
            let net = match cls {
                Ok(net) => net,
                Err(r) => {
                    Self::drop_frame(&mut self.counters, in_idx, r);
                    continue;
                }
            };
            if secured {
                let l3 = if vid == NO_VLAN { ETH_HDR } else { VLAN_HDR };
                if let Err(r) = guard.admit(f, src, l3) {
                    Self::drop_guarded(&mut self.counters, in_idx, r);
                    continue;
                }
            }
            if !self.networks.get(net.index()).is_some_and(|n| n.present) {
                Self::drop_frame(&mut self.counters, in_idx, DropReason::NoNetwork);
                continue;
            }
            let k = (net.0 as u64) << 48;
            let (skey, dkey) = (k | src, k | dst);
            self.net[nvalid] = net;
            self.src[nvalid] = skey;
            self.dst[nvalid] = dkey;
            // Stage 2 (prefetch), fused into this loop: hash both keys and start loading their
            // home lines at once, so the misses overlap with each other and with the rest of
            // the batch's classification. Group destinations are never looked up.
            let sh = self.fdb.home(skey);
            self.src_home[nvalid] = sh;
            self.fdb.prefetch(sh);
            let dh = self.fdb.home(dkey);
            self.dst_home[nvalid] = dh;
            if dst & GROUP_BIT == 0 {
                self.fdb.prefetch(dh);
            }
            self.valid[nvalid] = i as u8;
            if TUNNEL {
                self.ing[nvalid] = ing;
            }
            nvalid += 1;
        }
        if let Some(pc) = self.counters.ports.get_mut(in_idx) {
            pc.rx += n as u64;
            pc.rx_bytes += rx_bytes;
        }
        nvalid
    }

    /// Stage 3: learn each source on its ingress port (once per run of equal sources).
    #[inline(always)]
    fn learn<const TUNNEL: bool>(&mut self, in_port: PortId, nvalid: usize, now: u32) {
        let mut last = u64::MAX;
        let mut last_ing = in_port;
        for j in 0..nvalid {
            let key = self.src[j];
            if TUNNEL {
                let p = self.ing[j];
                if key != last || p != last_ing {
                    self.fdb.learn_from(key, self.src_home[j], p, now);
                    last = key;
                    last_ing = p;
                }
            } else if key != last {
                self.fdb.learn_from(key, self.src_home[j], in_port, now);
                last = key;
            }
        }
    }

    /// Stage 4: look up every unicast destination, after the whole batch is learned. A loop
    /// of its own: the lookups are independent of each other, so their cache misses overlap,
    /// and the loop is small enough to keep its state in registers.
    #[inline(always)]
    fn lookup(&mut self, nvalid: usize) {
        for j in 0..nvalid {
            let key = self.dst[j];
            self.dst_port[j] = if key & GROUP_BIT == 0 {
                self.fdb.lookup_from(key, self.dst_home[j])
            } else {
                None
            };
        }
    }

    /// Stage 5: decide for each destination (looked up in stage 4): to the gateway, unicast
    /// to a learned port (re-tagged for it), or flooded to the network's members (split horizon, and when
    /// `limited` storm control's bucket of `tokens`, returned with what is left); or drop,
    /// counted by reason.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn decide<const TUNNEL: bool>(
        &mut self,
        in_port: PortId,
        batch: &Batch,
        from_uplink: bool,
        nvalid: usize,
        limited: bool,
        mut tokens: u64,
        out: &mut Dispatch,
    ) -> (Tally, u64) {
        let in_idx = in_port.index();
        let mut t = Tally::default();
        for j in 0..nvalid {
            let i = self.valid[j] as u16;
            let net = self.net[j];
            let ing = if TUNNEL { self.ing[j] } else { in_port };
            let key = self.dst[j];
            let dst = key & MAC_MASK;
            let Some(nw) = self.networks.get(net.index()) else {
                continue; // checked in stage 1
            };
            if dst & GROUP_BIT == 0 {
                if dst == nw.gateway {
                    if TUNNEL {
                        // Every host of an overlay has its own gateway with the same MAC:
                        // a remote host's frames for it are its own gateway's business.
                        Self::drop_frame(&mut self.counters, in_idx, DropReason::SplitHorizon);
                        continue;
                    }
                    out.gateway.push((i, net));
                    t.gateway += 1;
                    continue;
                }
                if let Some(p) = self.dst_port[j] {
                    if p == ing {
                        Self::drop_frame(&mut self.counters, in_idx, DropReason::SamePort);
                        continue;
                    }
                    // Access ports (the common case) answer from a flat array.
                    let egress = if self.access_net.get(p.index()) == Some(&(net.0 as u32)) {
                        Some(None)
                    } else {
                        let dst_state = self.ports.get(p.index()).and_then(|s| s.as_ref());
                        if TUNNEL {
                            if let Some(PortState {
                                role: PortRole::Vtep { tunnel, .. },
                                ..
                            }) = dst_state
                            {
                                if *tunnel == in_port {
                                    Self::drop_frame(
                                        &mut self.counters,
                                        in_idx,
                                        DropReason::SplitHorizon,
                                    );
                                    continue;
                                }
                            }
                        }
                        dst_state.and_then(|s| s.egress(net))
                    };
                    if let Some(vlan) = egress {
                        out.push(p, vlan, i);
                        t.unicast += 1;
                        continue;
                    }
                    // Stale entry for a port that no longer carries the network: flood.
                }
                if from_uplink {
                    Self::drop_frame(&mut self.counters, in_idx, DropReason::NotLocal);
                    continue;
                }
            } else if dst & !0xf == LINK_LOCAL {
                Self::drop_frame(&mut self.counters, in_idx, DropReason::Reserved);
                continue;
            }
            // ARP suppression: a request for a remote endpoint the store told about is
            // answered here (by the worker, from the table) instead of flooded.
            if !TUNNEL && dst == BROADCAST && nw.proxies != 0 {
                let l3 = if out.frame_vlan[i as usize] == NO_VLAN {
                    ETH_HDR
                } else {
                    VLAN_HDR
                };
                if let Some(mac) = arp_request_target(batch.frame(i as usize), l3)
                    .and_then(|ip| self.proxy.get(&((u64::from(net.0) << 32) | u64::from(ip))))
                {
                    out.proxied.push((i, *mac));
                    t.proxied += 1;
                    continue;
                }
            }
            if limited {
                if tokens < crate::guard::TOKEN {
                    Self::drop_guarded(&mut self.counters, in_idx, DropReason::FloodLimited);
                    continue;
                }
                tokens -= crate::guard::TOKEN;
            }
            let to_gw = !TUNNEL && dst == BROADCAST && nw.gateway != u64::MAX;
            if to_gw {
                out.gateway.push((i, net));
                t.gateway += 1;
            }
            let mut copies = 0;
            for m in &nw.members {
                // Split horizon: a frame from a tunnel never goes back into that tunnel.
                let skip = if TUNNEL {
                    m.horizon == in_port
                } else {
                    m.port == in_port
                };
                if !skip {
                    out.push(m.port, m.vlan, i);
                    copies += 1;
                }
            }
            if copies > 0 {
                t.flood += 1;
            } else if !to_gw {
                Self::drop_frame(&mut self.counters, in_idx, DropReason::NoDestination);
            }
        }
        (t, tokens)
    }

    /// Stage 5: the counters, per output list and per decision.
    #[inline(always)]
    fn count(&mut self, in_idx: usize, out: &Dispatch, t: Tally) {
        let mut tx = 0u64;
        for l in &out.lists[..out.active] {
            tx += l.len as u64;
            if let Some(pc) = self.counters.ports.get_mut(l.port.index()) {
                pc.tx += l.len as u64;
            }
        }
        let c = &mut self.counters;
        c.tx += tx;
        c.unicast += t.unicast;
        c.flood += t.flood;
        c.gateway += t.gateway;
        c.arp_suppressed += t.proxied;
        if let Some(pc) = c.ports.get_mut(in_idx) {
            pc.unicast += t.unicast;
            pc.flood += t.flood;
            pc.gateway += t.gateway;
        }
    }
}

/// What stage 4 decided for a batch: frames sent unicast, flooded, and to the gateway.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    unicast: u64,
    flood: u64,
    gateway: u64,
    proxied: u64,
}

/// The target address of an Ethernet/IPv4 ARP request whose ARP header starts at `l3`, read
/// from untrusted bytes (checked, never panics).
#[inline]
fn arp_request_target(f: &[u8], l3: usize) -> Option<u32> {
    let et = f.get(l3 - 2..l3)?;
    if et != [0x08, 0x06] {
        return None;
    }
    let arp: &[u8; 28] = f.get(l3..l3 + 28)?.try_into().ok()?;
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, operation 1 (request).
    if arp[..8] != [0, 1, 0x08, 0, 6, 4, 0, 1] {
        return None;
    }
    Some(u32::from_be_bytes([arp[24], arp[25], arp[26], arp[27]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{VnetHdr, MTU_SLOT};

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn frame(dst: MacAddr, src: MacAddr, vlan: Option<u16>) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(64, 0xab);
        f
    }

    fn batch(frames: &[Vec<u8>]) -> Batch {
        let mut b = Batch::new(MTU_SLOT);
        for f in frames {
            assert!(b.push(f, VnetHdr::default()));
        }
        b
    }

    fn pipeline() -> Pipeline {
        Pipeline::with_fdb(Fdb::new(FdbConfig {
            seed: Some(3),
            ..FdbConfig::default()
        }))
    }

    /// Network 1 on access ports 1, 2, 3; network 2 on access ports 4, 5.
    fn two_networks() -> Pipeline {
        let mut p = pipeline();
        p.add_network(NetworkId(1), Some(mac(0xfe)));
        p.add_network(NetworkId(2), None);
        for port in 1..=3 {
            p.add_port(
                PortId(port),
                PortRole::Access {
                    network: NetworkId(1),
                },
            );
        }
        for port in 4..=5 {
            p.add_port(
                PortId(port),
                PortRole::Access {
                    network: NetworkId(2),
                },
            );
        }
        p
    }

    /// The outputs of a batch as (port number, frames, VLAN tag), sorted.
    fn outs(d: &Dispatch) -> Vec<(u16, Vec<u16>, Option<u16>)> {
        let mut v: Vec<_> = d.outputs().map(|(p, f, t)| (p.0, f.to_vec(), t)).collect();
        v.sort();
        v
    }

    fn run(p: &mut Pipeline, port: PortId, frames: &[Vec<u8>]) -> Dispatch {
        let mut d = Dispatch::new();
        p.process(port, &batch(frames), 1, &mut d);
        d
    }

    #[test]
    fn unknown_unicast_floods_except_ingress_then_learned_unicast() {
        let mut p = two_networks();
        let d = run(&mut p, PortId(1), &[frame(mac(2), mac(1), None)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None), (3, vec![0], None)]);
        assert_eq!(p.counters().flood, 1);
        // The reply from port 2 goes to port 1 only (mac 1 was learned there).
        let d = run(&mut p, PortId(2), &[frame(mac(1), mac(2), None)]);
        assert_eq!(outs(&d), vec![(1, vec![0], None)]);
        // And now both directions are unicast.
        let d = run(&mut p, PortId(1), &vec![frame(mac(2), mac(1), None); 3]);
        assert_eq!(outs(&d), vec![(2, vec![0, 1, 2], None)]);
        let c = p.counters();
        assert_eq!((c.rx, c.tx, c.unicast, c.flood), (5, 6, 4, 1));
        assert_eq!(c.port(PortId(1)).unwrap().rx, 4);
        assert_eq!(c.port(PortId(1)).unwrap().rx_bytes, 4 * 64);
        assert_eq!(c.port(PortId(2)).unwrap().tx, 4);
        assert_eq!(c.port(PortId(1)).unwrap().unicast, 3);
        assert_eq!(p.fdb().counters().learned, 2);
    }

    #[test]
    fn networks_are_isolated() {
        let mut p = two_networks();
        // Same MAC on both networks; a flood in network 2 never reaches network 1's ports.
        run(&mut p, PortId(1), &[frame(mac(9), mac(7), None)]);
        let d = run(&mut p, PortId(4), &[frame(mac(7), mac(8), None)]);
        assert_eq!(outs(&d), vec![(5, vec![0], None)]);
        let d = run(
            &mut p,
            PortId(5),
            &[frame(MacAddr::BROADCAST, mac(7), None)],
        );
        assert_eq!(outs(&d), vec![(4, vec![0], None)]);
        assert!(d.to_gateway().is_empty(), "network 2 has no gateway");
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(7)), Some(PortId(1)));
        assert_eq!(p.fdb().lookup(NetworkId(2), mac(7)), Some(PortId(5)));
    }

    #[test]
    fn no_hairpin() {
        let mut p = two_networks();
        run(&mut p, PortId(1), &[frame(mac(2), mac(1), None)]);
        let d = run(&mut p, PortId(1), &[frame(mac(1), mac(3), None)]);
        assert_eq!(d.outputs().count(), 0);
        assert_eq!(p.counters().drop_count(DropReason::SamePort), 1);
        assert_eq!(p.counters().port(PortId(1)).unwrap().drops, 1);
        let pc = p.counters().port(PortId(1)).unwrap();
        assert_eq!(
            pc.drop_count(DropReason::SamePort),
            1,
            "by reason, per port"
        );
        assert_eq!(pc.dropped.iter().sum::<u64>(), 1);
    }

    #[test]
    fn gateway_delivery_and_broadcast_to_both() {
        let mut p = two_networks();
        let d = run(
            &mut p,
            PortId(2),
            &[
                frame(mac(0xfe), mac(2), None),
                frame(MacAddr::BROADCAST, mac(2), None),
            ],
        );
        assert_eq!(d.to_gateway(), &[(0, NetworkId(1)), (1, NetworkId(1))]);
        assert_eq!(outs(&d), vec![(1, vec![1], None), (3, vec![1], None)]);
        assert_eq!(p.counters().gateway, 2);
        assert_eq!(p.counters().flood, 1);
        // Multicast (not broadcast) floods but does not go to the gateway.
        let d = run(
            &mut p,
            PortId(2),
            &[frame(MacAddr([0x33, 0x33, 0, 0, 0, 1]), mac(2), None)],
        );
        assert!(d.to_gateway().is_empty());
        assert_eq!(d.outputs().count(), 2);
    }

    #[test]
    fn every_drop_reason() {
        let mut p = two_networks();
        p.add_network(NetworkId(3), None);
        p.add_port(
            PortId(6),
            PortRole::Access {
                network: NetworkId(3),
            },
        );
        p.add_port(
            PortId(7),
            PortRole::Trunk {
                native: None,
                vlans: vec![(10, NetworkId(1))],
            },
        );
        let mut runt_tagged = frame(mac(2), mac(1), Some(10));
        runt_tagged.truncate(16);
        let frames = [
            vec![0u8; 10],                                                // Runt
            frame(mac(2), MacAddr([0x01, 0, 0x5e, 0, 0, 1]), None),       // BadHeader: mcast src
            frame(mac(2), MacAddr::ZERO, None),                           // BadHeader: zero src
            frame(mac(2), mac(1), Some(5)),                               // Filtered: tag on access
            frame(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]), mac(1), None), // Reserved (LLDP)
        ];
        run(&mut p, PortId(1), &frames);
        let c = p.counters();
        assert_eq!(c.drop_count(DropReason::Runt), 1);
        assert_eq!(c.drop_count(DropReason::BadHeader), 2);
        assert_eq!(c.drop_count(DropReason::Filtered), 1);
        assert_eq!(c.drop_count(DropReason::Reserved), 1);
        assert_eq!(
            p.fdb().lookup(NetworkId(1), mac(1)),
            Some(PortId(1)),
            "the reserved frame's source is learned"
        );

        run(
            &mut p,
            PortId(7),
            &[
                runt_tagged,                       // Runt (tagged header cut)
                frame(mac(2), mac(1), Some(4095)), // BadHeader: reserved VID
                frame(mac(2), mac(1), Some(11)),   // Filtered: VID not carried
                frame(mac(2), mac(1), None),       // Filtered: untagged, no native
            ],
        );
        let c = p.counters();
        assert_eq!(c.drop_count(DropReason::Runt), 2);
        assert_eq!(c.drop_count(DropReason::BadHeader), 3);
        assert_eq!(c.drop_count(DropReason::Filtered), 3);
        assert_eq!(c.port(PortId(7)).unwrap().drops, 4);
        let pc = c.port(PortId(7)).unwrap();
        assert_eq!(
            (
                pc.drop_count(DropReason::Runt),
                pc.drop_count(DropReason::BadHeader),
                pc.drop_count(DropReason::Filtered)
            ),
            (1, 1, 2),
            "this batch's drops, per port by reason"
        );

        run(&mut p, PortId(42), &[frame(mac(2), mac(1), None)]); // NoNetwork: unknown port
        assert_eq!(p.counters().drop_count(DropReason::NoNetwork), 1);
        p.remove_network(NetworkId(2));
        run(&mut p, PortId(4), &[frame(mac(2), mac(1), None)]); // NoNetwork: network removed
        assert_eq!(p.counters().drop_count(DropReason::NoNetwork), 2);

        run(&mut p, PortId(6), &[frame(mac(99), mac(98), None)]); // NoDestination: alone in network 3
        assert_eq!(p.counters().drop_count(DropReason::NoDestination), 1);

        p.counters_mut().add_drop(DropReason::TxFull, 3);
        assert_eq!(p.counters().drop_count(DropReason::TxFull), 3);
        // runt 2, bad header 3, filtered 3, reserved 1, no network 2, no destination 1, tx full 3
        assert_eq!(p.counters().total_drops(), 15);
        for r in DropReason::ALL {
            assert_eq!(DropReason::ALL[r as usize], r);
            assert!(!r.name().is_empty());
        }
    }

    /// The names are a contract: `vswitch stats` prints `drop_NAME` and scripts and tests read
    /// those keys. Each is distinct, snake_case, and says its reason.
    #[test]
    fn drop_reason_names_are_distinct_snake_case_and_stable() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in &names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        assert_eq!(DropReason::Runt.name(), "runt");
        assert_eq!(DropReason::FloodLimited.name(), "flood_limited");
        assert_eq!(DropReason::SpoofedIp.name(), "spoofed_ip");
        assert_eq!(DropReason::SplitHorizon.name(), "split_horizon");
    }

    #[test]
    fn the_shortest_tagged_frame_is_switched() {
        // 18 bytes (addresses, the 802.1Q tag, the inner EtherType) is a whole tagged header:
        // switched like any frame; 17 bytes is a runt.
        let mut p = two_networks();
        p.add_port(
            PortId(7),
            PortRole::Trunk {
                native: None,
                vlans: vec![(10, NetworkId(1))],
            },
        );
        let mut f = frame(MacAddr::BROADCAST, mac(1), Some(10));
        f.truncate(18);
        let d = run(&mut p, PortId(7), &[f.clone()]);
        assert_eq!(
            outs(&d),
            vec![(1, vec![0], None), (2, vec![0], None), (3, vec![0], None)]
        );
        assert_eq!(p.counters().drop_count(DropReason::Runt), 0);
        f.truncate(17);
        let d = run(&mut p, PortId(7), &[f]);
        assert_eq!(outs(&d), vec![]);
        assert_eq!(p.counters().drop_count(DropReason::Runt), 1);
    }

    #[test]
    fn vlan_classify_and_egress_tags() {
        let mut p = pipeline();
        p.add_network(NetworkId(1), None);
        p.add_network(NetworkId(2), None);
        p.add_network(NetworkId(3), None);
        p.add_port(
            PortId(1),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        p.add_port(
            PortId(2),
            PortRole::Access {
                network: NetworkId(2),
            },
        );
        p.add_port(
            PortId(3),
            PortRole::Access {
                network: NetworkId(3),
            },
        );
        let trunk = PortRole::Trunk {
            native: Some(NetworkId(3)),
            vlans: vec![(20, NetworkId(2)), (10, NetworkId(1)), (4095, NetworkId(1))],
        };
        p.add_port(PortId(8), trunk.clone());
        p.add_port(PortId(9), trunk);
        let d = run(
            &mut p,
            PortId(8),
            &[
                frame(MacAddr::BROADCAST, mac(1), Some(10)),
                frame(MacAddr::BROADCAST, mac(2), Some(20)),
                frame(MacAddr::BROADCAST, mac(3), None),
                frame(MacAddr::BROADCAST, mac(4), Some(0)), // priority tag: native
            ],
        );
        assert_eq!(
            outs(&d),
            vec![
                (1, vec![0], None),
                (2, vec![1], None),
                (3, vec![2, 3], None),
                (9, vec![0], Some(10)),
                (9, vec![1], Some(20)),
                (9, vec![2, 3], None),
            ]
        );
        assert_eq!(d.frame_vlan(0), Some(10));
        assert_eq!(d.frame_vlan(2), None);
        assert_eq!(d.frame_vlan(3), Some(0));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(1)), Some(PortId(8)));
        assert_eq!(p.fdb().lookup(NetworkId(2), mac(2)), Some(PortId(8)));
        assert_eq!(p.fdb().lookup(NetworkId(3), mac(3)), Some(PortId(8)));
        // Access port to a MAC learned on the trunk: unicast with the network's tag.
        let d = run(&mut p, PortId(2), &[frame(mac(2), mac(20), None)]);
        assert_eq!(outs(&d), vec![(8, vec![0], Some(20))]);
    }

    #[test]
    fn remove_port_flushes_and_stops_delivery() {
        let mut p = two_networks();
        run(&mut p, PortId(2), &[frame(mac(1), mac(2), None)]);
        p.remove_port(PortId(2));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), None);
        let d = run(&mut p, PortId(1), &[frame(mac(2), mac(1), None)]);
        assert_eq!(
            outs(&d),
            vec![(3, vec![0], None)],
            "flooded, not to the removed port"
        );
        // Re-adding the port id with another role does not resurrect old entries.
        p.add_port(
            PortId(2),
            PortRole::Access {
                network: NetworkId(2),
            },
        );
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), None);
    }

    #[test]
    fn moves_static_and_aging_through_the_pipeline() {
        let mut p = two_networks();
        run(&mut p, PortId(1), &[frame(mac(2), mac(1), None)]);
        run(&mut p, PortId(3), &[frame(mac(2), mac(1), None)]);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(1)), Some(PortId(3)));
        assert_eq!(p.fdb().counters().moved, 1);
        p.add_static(NetworkId(1), mac(50), PortId(2)).unwrap();
        let d = run(&mut p, PortId(1), &[frame(mac(50), mac(60), None)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None)]);
        run(&mut p, PortId(3), &[frame(mac(2), mac(50), None)]); // spoofed source
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(50)), Some(PortId(2)));
        assert_eq!(p.age(1 + 300, 1 << 20), 2);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(1)), None);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(50)), Some(PortId(2)));
    }

    /// Network 1: access ports 1, 2; tunnel port 10 with VTEPs 11, 12 (network 1) and 13
    /// (network 2, with access port 3).
    fn overlay() -> Pipeline {
        let mut p = pipeline();
        p.add_network(NetworkId(1), None);
        p.add_network(NetworkId(2), None);
        p.add_port(
            PortId(1),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        p.add_port(
            PortId(2),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        p.add_port(
            PortId(3),
            PortRole::Access {
                network: NetworkId(2),
            },
        );
        p.add_port(PortId(10), PortRole::Tunnel);
        p.add_port(
            PortId(11),
            PortRole::Vtep {
                network: NetworkId(1),
                tunnel: PortId(10),
            },
        );
        p.add_port(
            PortId(12),
            PortRole::Vtep {
                network: NetworkId(1),
                tunnel: PortId(10),
            },
        );
        p.add_port(
            PortId(13),
            PortRole::Vtep {
                network: NetworkId(2),
                tunnel: PortId(10),
            },
        );
        p
    }

    /// A batch of frames received on a tunnel, each tagged with its virtual port.
    fn run_tunnel(p: &mut Pipeline, tunnel: PortId, frames: &[(Vec<u8>, PortId)]) -> Dispatch {
        let mut b = Batch::new(MTU_SLOT);
        for (k, (f, vp)) in frames.iter().enumerate() {
            assert!(b.push(f, VnetHdr::default()));
            b.meta_mut(k).tag = u32::from(*vp);
        }
        let mut d = Dispatch::new();
        p.process(tunnel, &b, 1, &mut d);
        d
    }

    #[test]
    fn flood_from_access_replicates_to_every_vtep_of_the_network() {
        let mut p = overlay();
        let d = run(
            &mut p,
            PortId(1),
            &[frame(MacAddr::BROADCAST, mac(1), None)],
        );
        assert_eq!(
            outs(&d),
            vec![(2, vec![0], None), (11, vec![0], None), (12, vec![0], None)],
            "head-end replication to both VTEPs of network 1, not to network 2's"
        );
    }

    #[test]
    fn arp_for_a_remote_endpoint_is_answered_not_flooded_and_static_entries_come_and_go() {
        let mut p = overlay();
        let remote = std::net::Ipv4Addr::new(10, 0, 0, 9);
        // The store's endpoint 10.0.0.9 at mac 50 behind VTEP 12.
        p.add_static(NetworkId(1), mac(50), PortId(12)).unwrap();
        p.set_proxy_arp(NetworkId(1), remote, Some(mac(50)));
        assert_eq!(p.proxy_arp(NetworkId(1), remote), Some(mac(50)));
        // `arp_from` asks for 10.0.0.9: answered, flooded nowhere (not even locally).
        let d = run(
            &mut p,
            PortId(1),
            &[arp_from(MacAddr::BROADCAST, mac(1), 1, 1)],
        );
        assert_eq!(
            outs(&d),
            vec![],
            "an ARP request for a known remote floods nothing"
        );
        assert_eq!(d.proxy_arp(), &[(0, mac(50))]);
        assert_eq!(p.counters().arp_suppressed, 1);
        // The same request on network 2 (no entry there), a reply, and a request from the
        // tunnel are flooded as before.
        let d = run(
            &mut p,
            PortId(1),
            &[arp_from(MacAddr::BROADCAST, mac(1), 2, 1)],
        );
        assert!(d.proxy_arp().is_empty());
        assert_eq!(outs(&d).len(), 3, "{:?}", outs(&d));
        let d = run(
            &mut p,
            PortId(3),
            &[arp_from(MacAddr::BROADCAST, mac(3), 1, 3)],
        );
        assert!(d.proxy_arp().is_empty());
        assert_eq!(outs(&d), vec![(13, vec![0], None)]);
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(arp_from(MacAddr::BROADCAST, mac(60), 1, 60), PortId(11))],
        );
        assert!(d.proxy_arp().is_empty());
        // Unicast to the remote MAC goes to its VTEP only.
        let d = run(&mut p, PortId(1), &[frame(mac(50), mac(1), None)]);
        assert_eq!(outs(&d), vec![(12, vec![0], None)]);
        // The endpoint leaves: flooded again, and its MAC is unknown.
        p.set_proxy_arp(NetworkId(1), remote, None);
        assert!(p.remove_static(NetworkId(1), mac(50)));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(50)), None);
        let d = run(
            &mut p,
            PortId(1),
            &[arp_from(MacAddr::BROADCAST, mac(1), 1, 1)],
        );
        assert!(d.proxy_arp().is_empty());
        assert_eq!(
            outs(&d),
            vec![(2, vec![0], None), (11, vec![0], None), (12, vec![0], None)]
        );
        assert_eq!(p.counters().arp_suppressed, 1);
    }

    #[test]
    fn arp_request_target_reads_untrusted_bytes_safely() {
        let f = arp_from(MacAddr::BROADCAST, mac(1), 1, 1);
        assert_eq!(
            arp_request_target(&f, ETH_HDR),
            Some(u32::from_be_bytes([10, 0, 0, 9]))
        );
        assert_eq!(arp_request_target(&f[..40], ETH_HDR), None, "truncated");
        assert_eq!(
            arp_request_target(&f, VLAN_HDR),
            None,
            "not where the tag puts it"
        );
        let reply = arp_from(MacAddr::BROADCAST, mac(1), 2, 1);
        assert_eq!(arp_request_target(&reply, ETH_HDR), None, "a reply");
        for n in 0..f.len() {
            let _ = arp_request_target(&f[..n], VLAN_HDR);
        }
    }

    #[test]
    fn tunnel_frames_learn_per_vtep_and_never_reenter_the_tunnel() {
        let mut p = overlay();
        // Unknown unicast from VTEP 11: local ports only (split horizon), learned on 11.
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(mac(9), mac(50), None), PortId(11))],
        );
        assert_eq!(outs(&d), vec![(1, vec![0], None), (2, vec![0], None)]);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(50)), Some(PortId(11)));
        // Two frames of one batch from two VTEPs: each learned on its own.
        run_tunnel(
            &mut p,
            PortId(10),
            &[
                (frame(mac(9), mac(51), None), PortId(12)),
                (frame(mac(9), mac(52), None), PortId(11)),
            ],
        );
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(51)), Some(PortId(12)));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(52)), Some(PortId(11)));
        // Unicast from access to a remote MAC: one output, its VTEP.
        let d = run(&mut p, PortId(1), &[frame(mac(51), mac(1), None)]);
        assert_eq!(outs(&d), vec![(12, vec![0], None)]);
        // Tunnel to a MAC behind another VTEP of the same tunnel: split horizon.
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(mac(51), mac(50), None), PortId(11))],
        );
        assert_eq!(d.outputs().count(), 0);
        assert_eq!(p.counters().drop_count(DropReason::SplitHorizon), 1);
        // Tunnel to a local MAC: unicast to its port.
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(mac(1), mac(50), None), PortId(11))],
        );
        assert_eq!(outs(&d), vec![(1, vec![0], None)]);
        // Broadcast from a tunnel in network 2 reaches network 2's local port only.
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(MacAddr::BROADCAST, mac(60), None), PortId(13))],
        );
        assert_eq!(outs(&d), vec![(3, vec![0], None)]);
        assert_eq!(p.fdb().lookup(NetworkId(2), mac(60)), Some(PortId(13)));
        assert_eq!(
            p.fdb().lookup(NetworkId(1), mac(60)),
            None,
            "VNIs are isolated"
        );
    }

    #[test]
    fn tunnel_frames_with_bad_ingress_are_dropped() {
        let mut p = overlay();
        p.add_port(PortId(20), PortRole::Tunnel);
        let d = run_tunnel(
            &mut p,
            PortId(20),
            &[
                (frame(mac(9), mac(50), None), PortId(11)), // VTEP of another tunnel
                (frame(mac(9), mac(50), None), PortId(1)),  // not a VTEP at all
                (frame(mac(9), mac(50), None), PortId(99)), // unknown
            ],
        );
        assert_eq!(d.outputs().count(), 0);
        assert_eq!(p.counters().drop_count(DropReason::SplitHorizon), 3);
        // A tagged inner frame is filtered like on an access port.
        run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(mac(9), mac(50), None), PortId(11))],
        );
        run_tunnel(
            &mut p,
            PortId(10),
            &[(frame(mac(9), mac(50), Some(5)), PortId(11))],
        );
        assert_eq!(p.counters().drop_count(DropReason::Filtered), 1);
        // Removing a VTEP flushes what was learned behind it.
        p.remove_port(PortId(11));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(50)), None);
        let d = run(
            &mut p,
            PortId(1),
            &[frame(MacAddr::BROADCAST, mac(1), None)],
        );
        assert_eq!(outs(&d), vec![(2, vec![0], None), (12, vec![0], None)]);
    }

    #[test]
    fn tunnel_frames_do_not_reach_the_local_gateway() {
        let mut p = overlay();
        p.add_network(NetworkId(1), Some(mac(0xfe)));
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[
                (frame(mac(0xfe), mac(50), None), PortId(11)),
                (frame(MacAddr::BROADCAST, mac(50), None), PortId(11)),
            ],
        );
        assert!(d.to_gateway().is_empty());
        assert_eq!(outs(&d), vec![(1, vec![1], None), (2, vec![1], None)]);
    }

    #[test]
    fn dispatch_reuse_and_clear() {
        let mut d = Dispatch::new();
        for port in 0..100u16 {
            d.push(PortId(port), None, 1);
            d.push(PortId(port), Some(7), 2);
            d.push(PortId(port), None, 3);
        }
        assert_eq!(d.outputs().count(), 200);
        assert!(d
            .outputs()
            .all(|(_, f, v)| f == if v.is_some() { &[2][..] } else { &[1, 3][..] }));
        d.clear();
        assert_eq!(d.outputs().count(), 0);
        d.push(PortId(5), None, 0);
        assert_eq!(
            d.outputs().collect::<Vec<_>>(),
            vec![(PortId(5), &[0u16][..], None)]
        );
    }

    /// A macvlan parent: trunk port 9 carries network 1 untagged and network 2 on VLAN 10;
    /// containers on access ports 1, 2 (network 1) and 4 (network 2).
    fn uplink_setup() -> Pipeline {
        let mut p = pipeline();
        p.add_network(NetworkId(1), None);
        p.add_network(NetworkId(2), None);
        p.add_port(
            PortId(1),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        p.add_port(
            PortId(2),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        p.add_port(
            PortId(4),
            PortRole::Access {
                network: NetworkId(2),
            },
        );
        p.add_port(
            PortId(9),
            PortRole::Trunk {
                native: Some(NetworkId(1)),
                vlans: vec![(10, NetworkId(2))],
            },
        );
        p.set_uplink(PortId(9), true);
        p.add_static(NetworkId(1), mac(1), PortId(1)).unwrap();
        p.add_static(NetworkId(1), mac(2), PortId(2)).unwrap();
        p.add_static(NetworkId(2), mac(4), PortId(4)).unwrap();
        p
    }

    #[test]
    fn uplink_delivers_only_to_owner_and_never_floods_unknown_unicast() {
        let mut p = uplink_setup();
        let lan = mac(0x80);
        // To a container's MAC: to that container only, untagged on its access port.
        let d = run(&mut p, PortId(9), &[frame(mac(1), lan, None)]);
        assert_eq!(outs(&d), vec![(1, vec![0], None)]);
        // Tagged VLAN 10 to the VLAN network's container: the tag is stripped on egress.
        let d = run(&mut p, PortId(9), &[frame(mac(4), lan, Some(10))]);
        assert_eq!(outs(&d), vec![(4, vec![0], None)]);
        assert_eq!(d.frame_vlan(0), Some(10));
        // The LAN's own traffic (unknown unicast) and a VLAN-10 MAC sent untagged: dropped.
        let d = run(
            &mut p,
            PortId(9),
            &[frame(mac(0x81), lan, None), frame(mac(4), lan, None)],
        );
        assert_eq!(d.outputs().count(), 0);
        assert_eq!(p.counters().drop_count(DropReason::NotLocal), 2);
        // A LAN broadcast floods to the network's containers, never back to the LAN.
        let d = run(&mut p, PortId(9), &[frame(MacAddr::BROADCAST, lan, None)]);
        assert_eq!(outs(&d), vec![(1, vec![0], None), (2, vec![0], None)]);
        let d = run(
            &mut p,
            PortId(9),
            &[frame(MacAddr::BROADCAST, lan, Some(10))],
        );
        assert_eq!(outs(&d), vec![(4, vec![0], None)]);
        // An untagged frame on a VLAN the uplink does not carry is filtered.
        run(&mut p, PortId(9), &[frame(mac(1), lan, Some(20))]);
        assert_eq!(p.counters().drop_count(DropReason::Filtered), 1);
    }

    #[test]
    fn containers_reach_each_other_and_the_lan_through_an_uplink() {
        let mut p = uplink_setup();
        let lan = mac(0x80);
        // Container to container stays inside the switch.
        let d = run(&mut p, PortId(1), &[frame(mac(2), mac(1), None)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None)]);
        // Unknown unicast from a container floods (the LAN gets it, untagged or tagged).
        let d = run(&mut p, PortId(1), &[frame(lan, mac(1), None)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None), (9, vec![0], None)]);
        let d = run(&mut p, PortId(4), &[frame(lan, mac(4), None)]);
        assert_eq!(outs(&d), vec![(9, vec![0], Some(10))]);
        // Once the LAN machine has spoken it is unicast to the uplink.
        run(&mut p, PortId(9), &[frame(MacAddr::BROADCAST, lan, None)]);
        let d = run(&mut p, PortId(2), &[frame(lan, mac(2), None)]);
        assert_eq!(outs(&d), vec![(9, vec![0], None)]);
        // A LAN frame forging a container's source MAC does not move its static entry.
        run(
            &mut p,
            PortId(9),
            &[frame(MacAddr::BROADCAST, mac(1), None)],
        );
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(1)), Some(PortId(1)));
    }

    fn secured(mac_n: u8, ip_last: u8) -> PortPolicy {
        PortPolicy {
            security: Some(PortSecurity {
                mac: mac(mac_n),
                ipv4: std::net::Ipv4Addr::new(10, 0, 0, ip_last),
            }),
            flood: None,
        }
    }

    /// An ARP frame from `src` (Ethernet and ARP sender) claiming `spa` (10.0.0.x).
    fn arp_from(dst: MacAddr, src: MacAddr, op: u8, spa: u8) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, op]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[10, 0, 0, spa]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 9]);
        f.resize(64, 0);
        f
    }

    /// An IPv4 frame from `src` with source address 10.0.0.`sip` (0.0.0.0 for `sip` 0).
    fn ipv4_from(dst: MacAddr, src: MacAddr, sip: u8) -> Vec<u8> {
        let mut f = frame(dst, src, None);
        let net = if sip == 0 { 0 } else { 10 };
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 17, 0, 0, net, 0, 0, sip, 10, 0, 0, 9,
        ]);
        f
    }

    #[test]
    fn port_security_drops_spoofed_sources_before_learning() {
        let mut p = two_networks();
        p.set_policy(PortId(1), secured(1, 1));
        assert_eq!(p.policy(PortId(1)), secured(1, 1));
        // Port 2 has no port security: it may use any source.
        run(&mut p, PortId(2), &[ipv4_from(mac(1), mac(2), 2)]);
        let d = run(
            &mut p,
            PortId(1),
            &[
                ipv4_from(mac(2), mac(1), 1),               // its own: forwarded
                ipv4_from(mac(2), mac(1), 0),               // 0.0.0.0: forwarded
                arp_from(MacAddr::BROADCAST, mac(1), 1, 1), // its own ARP: flooded
                ipv4_from(mac(2), mac(9), 1),               // SpoofedMac
                ipv4_from(mac(2), mac(1), 3),               // SpoofedIp
                arp_from(MacAddr::BROADCAST, mac(1), 2, 3), // SpoofedIp: ARP poisoning
                frame(mac(2), mac(1), Some(0)),             // prio-tagged IPv4-ish payload
            ],
        );
        assert_eq!(
            outs(&d),
            vec![(2, vec![0, 1, 2], None), (3, vec![2], None)],
            "only its own frames leave"
        );
        let c = p.counters();
        assert_eq!(c.drop_count(DropReason::SpoofedMac), 1);
        // The IPv4 source, the ARP sender, and the priority-tagged frame's IPv4 source (its
        // payload is 0xab...: checked behind the tag).
        assert_eq!(c.drop_count(DropReason::SpoofedIp), 3);
        let pc = c.port(PortId(1)).unwrap();
        assert_eq!((pc.spoofed_mac, pc.spoofed_ip, pc.drops), (1, 3, 4));
        assert_eq!(
            (
                pc.drop_count(DropReason::SpoofedMac),
                pc.drop_count(DropReason::SpoofedIp)
            ),
            (1, 3)
        );
        assert_eq!(c.drop_count(DropReason::Filtered), 0);
        // The forged source was never learned: port 2's entry for mac 9 does not exist, and
        // mac 1 stays where it is.
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(9)), None);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(1)), Some(PortId(1)));
        assert_eq!(c.port(PortId(2)).unwrap().drops, 0);
    }

    #[test]
    fn port_security_stops_a_mac_steal() {
        let mut p = two_networks();
        for port in 1..=3 {
            p.set_policy(PortId(port), secured(port as u8, port as u8));
        }
        run(&mut p, PortId(2), &[ipv4_from(mac(1), mac(2), 2)]);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), Some(PortId(2)));
        // Port 3 sends with port 2's MAC (and IP): dropped, the entry does not move.
        run(&mut p, PortId(3), &[ipv4_from(mac(1), mac(2), 2)]);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), Some(PortId(2)));
        assert_eq!(p.counters().port(PortId(3)).unwrap().spoofed_mac, 1);
        assert_eq!(p.fdb().counters().moved, 0);
        // So port 1 still reaches port 2.
        let d = run(&mut p, PortId(1), &[ipv4_from(mac(2), mac(1), 1)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None)]);
        // Without port security the same frame moves the entry (what the policy prevents).
        p.set_policy(PortId(3), PortPolicy::default());
        run(&mut p, PortId(3), &[ipv4_from(mac(1), mac(2), 2)]);
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), Some(PortId(3)));
    }

    #[test]
    fn policies_follow_ports_and_never_apply_to_tunnels() {
        let mut p = overlay();
        p.set_policy(PortId(1), secured(1, 1));
        // A policy on a tunnel port (which never gets one from the daemon) checks nothing:
        // the frames are the peers'.
        p.set_policy(PortId(10), secured(1, 1));
        run(&mut p, PortId(1), &[ipv4_from(mac(2), mac(1), 1)]);
        let d = run_tunnel(
            &mut p,
            PortId(10),
            &[(ipv4_from(mac(1), mac(50), 7), PortId(11))],
        );
        assert_eq!(outs(&d), vec![(1, vec![0], None)]);
        // set_role keeps the policy; remove_port and add_port drop it.
        p.set_role(
            PortId(1),
            PortRole::Access {
                network: NetworkId(2),
            },
        );
        assert_eq!(p.policy(PortId(1)), secured(1, 1));
        run(&mut p, PortId(1), &[ipv4_from(mac(3), mac(1), 5)]);
        assert_eq!(p.counters().drop_count(DropReason::SpoofedIp), 1);
        p.remove_port(PortId(1));
        assert_eq!(p.policy(PortId(1)), PortPolicy::default());
        p.add_port(
            PortId(1),
            PortRole::Access {
                network: NetworkId(1),
            },
        );
        let d = run(&mut p, PortId(1), &[ipv4_from(mac(2), mac(7), 5)]);
        assert_eq!(d.outputs().count(), 3, "open again: flooded");
        // Setting a policy on a port that is not attached does nothing.
        p.set_policy(PortId(99), secured(1, 1));
        assert_eq!(p.policy(PortId(99)), PortPolicy::default());
    }

    fn limited(pps: u32, burst: u32) -> PortPolicy {
        PortPolicy {
            security: None,
            flood: Some(FloodLimit { pps, burst }),
        }
    }

    /// Runs `frames` from `port` at time `ms`; returns how many were flooded.
    fn flood_at(p: &mut Pipeline, port: PortId, ms: u64, frames: &[Vec<u8>]) -> u64 {
        p.set_clock_ms(ms);
        let before = p.counters().port(port).unwrap().flood;
        run(p, port, frames);
        p.counters().port(port).unwrap().flood - before
    }

    #[test]
    fn flood_bucket_allows_the_burst_then_the_rate() {
        let mut p = two_networks();
        p.set_clock_ms(10_000);
        p.set_policy(PortId(1), limited(100, 8));
        let bc = vec![frame(MacAddr::BROADCAST, mac(1), None); 20];
        // A full bucket: the burst goes, the rest is dropped.
        assert_eq!(flood_at(&mut p, PortId(1), 10_000, &bc), 8);
        let pc = *p.counters().port(PortId(1)).unwrap();
        assert_eq!((pc.flood_limited, pc.drops), (12, 12));
        assert_eq!(p.counters().drop_count(DropReason::FloodLimited), 12);
        // Nothing more in the same millisecond.
        assert_eq!(flood_at(&mut p, PortId(1), 10_000, &bc[..1]), 0);
        // 100 pps: one frame per 10 ms; 5 ms gives half a token, 10 ms a whole one.
        assert_eq!(flood_at(&mut p, PortId(1), 10_005, &bc[..1]), 0);
        assert_eq!(flood_at(&mut p, PortId(1), 10_010, &bc[..1]), 1);
        assert_eq!(flood_at(&mut p, PortId(1), 10_050, &bc), 4);
        // Long idle refills up to the burst only.
        assert_eq!(flood_at(&mut p, PortId(1), 60_000, &bc), 8);
    }

    #[test]
    fn flood_bucket_counts_only_floods() {
        let mut p = two_networks();
        p.set_policy(PortId(1), limited(1, 2));
        run(&mut p, PortId(2), &[frame(mac(1), mac(2), None)]); // mac 2 learned
        let frames = [
            frame(mac(2), mac(1), None),                            // known unicast
            frame(mac(0xfe), mac(1), None),                         // the gateway
            frame(MacAddr::BROADCAST, mac(1), None),                // flood 1
            frame(MacAddr([0x33, 0x33, 0, 0, 0, 1]), mac(1), None), // flood 2 (multicast)
            frame(mac(77), mac(1), None),                           // unknown unicast: limited
            frame(MacAddr::BROADCAST, mac(1), None), // limited, and not to the gateway
            frame(mac(2), mac(1), None),             // known unicast still goes
        ];
        let d = run(&mut p, PortId(1), &frames);
        assert_eq!(d.to_gateway(), &[(1, NetworkId(1)), (2, NetworkId(1))]);
        assert_eq!(
            outs(&d),
            vec![(2, vec![0, 2, 3, 6], None), (3, vec![2, 3], None)]
        );
        assert_eq!(p.counters().port(PortId(1)).unwrap().flood_limited, 2);
    }

    #[test]
    fn flood_buckets_are_per_port() {
        let mut p = two_networks();
        p.set_policy(PortId(1), limited(100, 4));
        p.set_policy(PortId(2), limited(100, 4));
        let from = |n| vec![frame(MacAddr::BROADCAST, mac(n), None); 10];
        assert_eq!(flood_at(&mut p, PortId(1), 0, &from(1)), 4);
        // Port 1's storm does not spend port 2's tokens; port 3 has no limit at all.
        assert_eq!(flood_at(&mut p, PortId(2), 0, &from(2)), 4);
        assert_eq!(flood_at(&mut p, PortId(3), 0, &from(3)), 10);
        assert_eq!(flood_at(&mut p, PortId(1), 0, &from(1)), 0);
        let c = p.counters();
        assert_eq!(c.port(PortId(1)).unwrap().flood_limited, 16);
        assert_eq!(c.port(PortId(2)).unwrap().flood_limited, 6);
        assert_eq!(c.port(PortId(3)).unwrap().flood_limited, 0);
        // Port 2's bucket refills on its own clock reading, not when port 1 is serviced.
        assert_eq!(flood_at(&mut p, PortId(1), 20, &from(1)), 2);
        assert_eq!(flood_at(&mut p, PortId(2), 30, &from(2)), 3);
    }

    #[test]
    fn a_random_source_mac_flood_stays_within_the_ports_share() {
        let mut p = Pipeline::with_fdb(Fdb::new(FdbConfig {
            capacity: 4096,
            max_per_network: 4096,
            max_per_port: 256,
            seed: Some(5),
            ..FdbConfig::default()
        }));
        p.add_network(NetworkId(1), None);
        for port in 1..=3 {
            p.add_port(
                PortId(port),
                PortRole::Access {
                    network: NetworkId(1),
                },
            );
        }
        run(&mut p, PortId(2), &[frame(mac(3), mac(2), None)]);
        run(&mut p, PortId(3), &[frame(mac(2), mac(3), None)]);
        let memory = p.fdb().memory_bytes();
        let mut x = 0x9e37_79b9u64;
        for _ in 0..100_000 / BATCH_SIZE {
            let frames: Vec<Vec<u8>> = (0..BATCH_SIZE)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let src = MacAddr::from_u64(x & 0xfeff_ffff_ffff); // unicast
                    frame(mac(2), src, None)
                })
                .collect();
            run(&mut p, PortId(1), &frames);
        }
        assert!(
            p.fdb().port_entries(PortId(1)) <= 256,
            "{}",
            p.fdb().port_entries(PortId(1))
        );
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(2)), Some(PortId(2)));
        assert_eq!(p.fdb().lookup(NetworkId(1), mac(3)), Some(PortId(3)));
        assert_eq!(p.fdb().memory_bytes(), memory, "the table never grows");
        assert!(p.fdb().counters().evicted > 90_000);
        let d = run(&mut p, PortId(3), &[frame(mac(2), mac(3), None)]);
        assert_eq!(outs(&d), vec![(2, vec![0], None)]);
    }

    #[test]
    fn set_role_keeps_the_uplink_mark() {
        let mut p = uplink_setup();
        p.set_role(
            PortId(9),
            PortRole::Trunk {
                native: None,
                vlans: vec![(10, NetworkId(2)), (20, NetworkId(1))],
            },
        );
        assert!(p.is_uplink(PortId(9)));
        let d = run(&mut p, PortId(9), &[frame(mac(1), mac(0x80), Some(20))]);
        assert_eq!(outs(&d), vec![(1, vec![0], None)]);
        run(&mut p, PortId(9), &[frame(mac(1), mac(0x80), None)]);
        assert_eq!(p.counters().drop_count(DropReason::Filtered), 1);
        assert!(!p.is_uplink(PortId(1)));
        p.remove_port(PortId(9));
        assert!(!p.is_uplink(PortId(9)));
    }
}
