//! Egress NAT, port publishing and DNS forwarding, without a single firewall rule.
//!
//! The gateway stage terminates the containers' flows (slirp4netns's and passt's way) and
//! carries them on the switch's own host sockets, which mio drives in the worker's event loop:
//! TCP through [`super::tcp`], UDP through one connected socket per flow, ping through ICMP
//! echo sockets. Traffic leaves with the host's address because the host's own stack sends it.
//! Published ports are host listeners whose connections the gateway opens towards the
//! container from its gateway address (as Docker's userland proxy does).
//!
//! Every flow has a slot in one slab; its mio token is `TOKEN_BASE + slot`. Tables have limits:
//! a full table refuses a new flow (a TCP SYN gets a RST) and counts the refusal; UDP and ICMP
//! flows expire when idle, TCP flows when closed, stuck or idle for long.

use super::dns;
use super::emit::{Out, Path};
use super::sys::IcmpSocket;
use super::tcp::{self, TcpFlow};
use crate::batch::{VnetHdr, VNET_F_DATA_VALID};
use crate::pipeline::NetworkId;
use crate::port::PortId;
use crate::wire::checksum::ipv4_l4_verify;
use crate::wire::{ip_proto, Ipv4Packet, MacAddr, TcpPacket, UdpPacket};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// First mio token of the NAT's sockets (ports use small tokens, the waker usize::MAX).
pub const TOKEN_BASE: usize = 1 << 20;

/// Limits and timeouts.
#[derive(Clone, Debug)]
pub struct NatConfig {
    pub max_tcp: usize,
    pub max_udp: usize,
    pub max_icmp: usize,
    pub udp_idle_ms: u64,
    pub icmp_idle_ms: u64,
    pub tcp_connect_ms: u64,
    pub tcp_idle_ms: u64,
    pub tcp_closing_ms: u64,
    /// Resolvers for names the gateway does not know (the host's /etc/resolv.conf).
    pub upstream_dns: Vec<SocketAddrV4>,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            max_tcp: 8192,
            max_udp: 8192,
            max_icmp: 1024,
            udp_idle_ms: 60_000,
            icmp_idle_ms: 10_000,
            tcp_connect_ms: 30_000,
            tcp_idle_ms: 2 * 3600 * 1000,
            tcp_closing_ms: 60_000,
            upstream_dns: Vec::new(),
        }
    }
}

/// Reads the nameservers of a resolv.conf (IPv4 only).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddrV4> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map(|a| SocketAddrV4::new(a, 53))
        })
        .collect()
}

/// Counters of the NAT stage (current flows and totals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatCounters {
    pub tcp_flows: u64,
    pub udp_flows: u64,
    pub icmp_flows: u64,
    pub tcp_opened: u64,
    pub udp_opened: u64,
    pub icmp_opened: u64,
    pub published_accepts: u64,
    /// Container TCP segments that arrived past a gap and were held for it (and SACKed).
    #[serde(default)]
    pub tcp_held: u64,
    pub dns_answers: u64,
    pub dns_forwarded: u64,
    /// A table was full: the new flow was refused.
    pub drop_table_full: u64,
    /// Egress from an internal network, or to an address the gateway does not serve.
    pub drop_no_egress: u64,
    /// The host could not open or connect a socket.
    pub drop_socket_error: u64,
    /// A datagram larger than the network's MTU (towards the container).
    pub drop_too_big: u64,
    /// Bad checksum, fragment, truncated header.
    pub drop_bad_frame: u64,
    /// A host socket refused a datagram (its buffer was full).
    pub drop_send_failed: u64,
    /// A published connection for a container the gateway has no address for.
    pub drop_no_neighbor: u64,
}

/// A frame from a container, as the protocol handlers of [`Nat`] see it.
#[derive(Clone, Copy)]
struct FromContainer<'a> {
    net: NetworkId,
    ip: &'a Ipv4Packet<&'a [u8]>,
    vnet: &'a VnetHdr,
    /// The way back to the container.
    path: Path,
    /// The network's gateway address.
    gw_ip: Ipv4Addr,
    /// The network is `--internal` (no egress).
    internal: bool,
    now: u64,
}

impl FromContainer<'_> {
    /// The flow key of this frame: container address and `c_port`, remote address and `r_port`.
    fn key(&self, proto: u8, c_port: u16, r_port: u16) -> Key {
        Key {
            net: self.net,
            proto,
            c_ip: self.ip.src_addr(),
            c_port,
            r_ip: self.ip.dst_addr(),
            r_port,
        }
    }
}

/// What the NAT knows of a network.
#[derive(Clone, Debug)]
pub struct NatNet {
    pub gw_mac: MacAddr,
    pub gw_ip: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
    pub subnet: Option<ipnet::Ipv4Net>,
    /// Container names answered by DNS on this network.
    pub names: HashMap<String, Ipv4Addr>,
}

#[derive(Clone, Copy, Debug)]
struct Neighbor {
    mac: MacAddr,
    port: PortId,
    vnet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    net: NetworkId,
    proto: u8,
    c_ip: Ipv4Addr,
    c_port: u16,
    r_ip: Ipv4Addr,
    r_port: u16,
}

struct UdpFlow {
    key: Key,
    path: Path,
    /// Egress: a socket connected to the remote. Published: none (replies go via the listener).
    sock: Option<mio::net::UdpSocket>,
    /// Published: the listener slot and the client.
    via: Option<(usize, SocketAddr)>,
    last_active: u64,
    readable: bool,
}

struct IcmpFlow {
    key: Key,
    path: Path,
    sock: IcmpSocket,
    /// The echo id on the host side (raw sockets only; ping sockets choose their own).
    host_id: u16,
    last_active: u64,
    readable: bool,
}

struct TcpListen {
    sock: mio::net::TcpListener,
    net: NetworkId,
    c_ip: Ipv4Addr,
    c_port: u16,
}

struct UdpListen {
    sock: mio::net::UdpSocket,
    net: NetworkId,
    c_ip: Ipv4Addr,
    c_port: u16,
    readable: bool,
}

enum Slot {
    Tcp(Box<TcpFlow>, Key),
    Udp(UdpFlow),
    Icmp(IcmpFlow),
    Listen(TcpListen),
    UdpListen(UdpListen),
}

/// The NAT stage's tables and sockets.
pub struct Nat {
    registry: Registry,
    cfg: NatConfig,
    nets: HashMap<NetworkId, NatNet>,
    neighbors: HashMap<(NetworkId, Ipv4Addr), Neighbor>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    flows: HashMap<Key, usize>,
    pending: VecDeque<usize>,
    queued: Vec<bool>,
    published: HashMap<(u8, SocketAddr), usize>,
    next_gw_port: u16,
    rng: u64,
    scratch: Box<[u8]>,
    pub counters: NatCounters,
    last_tick: u64,
}

impl std::fmt::Debug for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nat")
            .field("counters", &self.counters)
            .finish()
    }
}

/// Does a frame's L4 checksum need checking? Not when the kernel marked it partial or valid.
/// A transport header from a container, as the NAT reads it.
trait L4In<'a>: Sized {
    const PROTO: u8;
    /// The checked view (`None`: too short or inconsistent).
    fn parse(bytes: &'a [u8]) -> Option<Self>;
    /// (source, destination) ports.
    fn ports(&self) -> (u16, u16);
    /// The checksum over the pseudo header holds.
    fn checksum_ok(&self, ip: &Ipv4Packet<&[u8]>) -> bool;
}

impl<'a> L4In<'a> for TcpPacket<&'a [u8]> {
    const PROTO: u8 = ip_proto::TCP;
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        TcpPacket::new_checked(bytes).ok()
    }
    fn ports(&self) -> (u16, u16) {
        (self.src_port(), self.dst_port())
    }
    fn checksum_ok(&self, ip: &Ipv4Packet<&[u8]>) -> bool {
        ipv4_l4_verify(ip.src_addr(), ip.dst_addr(), ip_proto::TCP, ip.payload())
    }
}

impl<'a> L4In<'a> for UdpPacket<&'a [u8]> {
    const PROTO: u8 = ip_proto::UDP;
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        UdpPacket::new_checked(bytes).ok()
    }
    fn ports(&self) -> (u16, u16) {
        (self.src_port(), self.dst_port())
    }
    /// A zero checksum is "none" in UDP over IPv4.
    fn checksum_ok(&self, ip: &Ipv4Packet<&[u8]>) -> bool {
        self.checksum() == 0 || self.verify_checksum(ip.src_addr(), ip.dst_addr())
    }
}

fn trust_csum(vnet: &VnetHdr) -> bool {
    vnet.needs_csum() || vnet.flags & VNET_F_DATA_VALID != 0
}

impl Nat {
    pub fn new(registry: Registry, cfg: NatConfig) -> Nat {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Nat {
            registry,
            cfg,
            nets: HashMap::new(),
            neighbors: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            flows: HashMap::new(),
            pending: VecDeque::new(),
            queued: Vec::new(),
            published: HashMap::new(),
            // A random start: a new worker (or daemon) does not reuse the port pairs of the
            // last one's connections, which containers may still hold in TIME-WAIT.
            next_gw_port: 32768 + (seed >> 17) as u16 % 28232,
            rng: seed,
            scratch: vec![0u8; 65536].into_boxed_slice(),
            counters: NatCounters::default(),
            last_tick: 0,
        }
    }

    fn random(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 16) as u32
    }

    pub fn set_network(&mut self, id: NetworkId, net: NatNet) {
        let names = self.nets.remove(&id).map(|n| n.names).unwrap_or_default();
        let mut net = net;
        net.names.extend(names);
        self.nets.insert(id, net);
    }

    pub fn remove_network(&mut self, id: NetworkId) {
        self.nets.remove(&id);
        self.neighbors.retain(|(n, _), _| *n != id);
        let dead: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| match s {
                Some(Slot::Tcp(_, k)) => k.net == id,
                Some(Slot::Udp(u)) => u.key.net == id,
                Some(Slot::Icmp(i)) => i.key.net == id,
                Some(Slot::Listen(l)) => l.net == id,
                Some(Slot::UdpListen(l)) => l.net == id,
                None => false,
            })
            .map(|(i, _)| i)
            .collect();
        for i in dead {
            self.remove(i);
        }
    }

    /// A container's address on a network, the port it sits behind and (on user-defined
    /// networks) its name for DNS.
    pub fn add_endpoint(
        &mut self,
        net: NetworkId,
        ip: Ipv4Addr,
        mac: MacAddr,
        port: PortId,
        vnet: bool,
        name: Option<String>,
    ) {
        self.neighbors
            .insert((net, ip), Neighbor { mac, port, vnet });
        if let (Some(n), Some(name)) = (self.nets.get_mut(&net), name) {
            n.names.insert(name.to_ascii_lowercase(), ip);
        }
    }

    /// Forgets what sits behind `port` and closes its flows.
    pub fn remove_port(&mut self, port: PortId) {
        let gone: Vec<(NetworkId, Ipv4Addr)> = self
            .neighbors
            .iter()
            .filter(|(_, n)| n.port == port)
            .map(|(k, _)| *k)
            .collect();
        for (net, ip) in gone {
            self.neighbors.remove(&(net, ip));
            if let Some(n) = self.nets.get_mut(&net) {
                n.names.retain(|_, a| *a != ip);
            }
        }
        let dead: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| match s {
                Some(Slot::Tcp(f, _)) => f.path.port == port,
                Some(Slot::Udp(u)) => u.path.port == port,
                Some(Slot::Icmp(i)) => i.path.port == port,
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        for i in dead {
            self.remove(i);
        }
    }

    fn insert(
        &mut self,
        slot: Slot,
        src: Option<std::os::fd::RawFd>,
        interest: Interest,
    ) -> io::Result<usize> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.queued.push(false);
                self.slots.len() - 1
            }
        };
        let token = Token(TOKEN_BASE + idx);
        let mut slot = slot;
        let r = match (&mut slot, src) {
            (_, Some(fd)) => self.registry.register(&mut SourceFd(&fd), token, interest),
            (Slot::Tcp(f, _), None) => self.registry.register(&mut f.sock, token, interest),
            (Slot::Udp(u), None) => match u.sock.as_mut() {
                Some(s) => self.registry.register(s, token, interest),
                None => Ok(()),
            },
            (Slot::Listen(l), None) => self.registry.register(&mut l.sock, token, interest),
            (Slot::UdpListen(l), None) => self.registry.register(&mut l.sock, token, interest),
            (Slot::Icmp(i), None) => {
                let fd = i.sock.raw_fd();
                self.registry.register(&mut SourceFd(&fd), token, interest)
            }
        };
        if let Err(e) = r {
            self.free.push(idx);
            return Err(e);
        }
        match &slot {
            Slot::Tcp(_, k) => {
                self.flows.insert(*k, idx);
                self.counters.tcp_flows += 1;
                self.counters.tcp_opened += 1;
            }
            Slot::Udp(u) => {
                self.flows.insert(u.key, idx);
                self.counters.udp_flows += 1;
                self.counters.udp_opened += 1;
            }
            Slot::Icmp(i) => {
                self.flows.insert(i.key, idx);
                self.counters.icmp_flows += 1;
                self.counters.icmp_opened += 1;
            }
            _ => {}
        }
        self.slots[idx] = Some(slot);
        Ok(idx)
    }

    fn remove(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::take) else {
            return;
        };
        match slot {
            Slot::Tcp(mut f, k) => {
                let _ = self.registry.deregister(&mut f.sock);
                self.flows.remove(&k);
                self.counters.tcp_flows -= 1;
            }
            Slot::Udp(mut u) => {
                if let Some(s) = u.sock.as_mut() {
                    let _ = self.registry.deregister(s);
                }
                self.flows.remove(&u.key);
                self.counters.udp_flows -= 1;
            }
            Slot::Icmp(i) => {
                let fd = i.sock.raw_fd();
                let _ = self.registry.deregister(&mut SourceFd(&fd));
                self.flows.remove(&i.key);
                self.counters.icmp_flows -= 1;
            }
            Slot::Listen(mut l) => {
                let _ = self.registry.deregister(&mut l.sock);
                self.published.retain(|_, v| *v != idx);
            }
            Slot::UdpListen(mut l) => {
                let _ = self.registry.deregister(&mut l.sock);
                self.published.retain(|_, v| *v != idx);
                // Its client flows go with it.
                let dead: Vec<usize> = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(
                        |(_, s)| matches!(s, Some(Slot::Udp(u)) if u.via.map(|v| v.0) == Some(idx)),
                    )
                    .map(|(i, _)| i)
                    .collect();
                for d in dead {
                    self.remove(d);
                }
            }
        }
        self.free.push(idx);
    }

    fn mark(&mut self, idx: usize) {
        if !self.queued[idx] {
            self.queued[idx] = true;
            self.pending.push_back(idx);
        }
    }

    /// True when some flow has output waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Number of open flows (all kinds).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    // ----- publishing -----

    /// Serves connections to `listener` by opening them towards `c_ip:c_port` on `net`.
    pub fn publish_tcp(
        &mut self,
        listener: std::net::TcpListener,
        net: NetworkId,
        c_ip: Ipv4Addr,
        c_port: u16,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let sock = mio::net::TcpListener::from_std(listener);
        let idx = self.insert(
            Slot::Listen(TcpListen {
                sock,
                net,
                c_ip,
                c_port,
            }),
            None,
            Interest::READABLE,
        )?;
        self.published.insert((ip_proto::TCP, addr), idx);
        Ok(())
    }

    /// Serves datagrams to `sock` by relaying them to `c_ip:c_port` on `net`.
    pub fn publish_udp(
        &mut self,
        sock: std::net::UdpSocket,
        net: NetworkId,
        c_ip: Ipv4Addr,
        c_port: u16,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        let addr = sock.local_addr()?;
        let sock = mio::net::UdpSocket::from_std(sock);
        let idx = self.insert(
            Slot::UdpListen(UdpListen {
                sock,
                net,
                c_ip,
                c_port,
                readable: true,
            }),
            None,
            Interest::READABLE,
        )?;
        self.published.insert((ip_proto::UDP, addr), idx);
        self.mark(idx);
        Ok(())
    }

    /// Stops serving a published host address (and closes its listener).
    pub fn unpublish(&mut self, proto: u8, addr: SocketAddr) {
        if let Some(idx) = self.published.remove(&(proto, addr)) {
            self.remove(idx);
        }
    }

    /// True when `dst` lies in some network's subnet: networks stay isolated from each other
    /// (Docker's isolation rules), so the gateway carries no flow into one.
    fn isolated(&self, dst: Ipv4Addr) -> bool {
        self.nets
            .values()
            .any(|n| n.subnet.is_some_and(|s| s.contains(&dst)))
    }

    fn path_to(&self, net: NetworkId, c_ip: Ipv4Addr, src_ip: Ipv4Addr) -> Option<Path> {
        let n = self.nets.get(&net)?;
        let nb = self.neighbors.get(&(net, c_ip))?;
        Some(Path {
            port: nb.port,
            vnet: nb.vnet,
            src_mac: n.gw_mac,
            dst_mac: nb.mac,
            src_ip,
            dst_ip: c_ip,
        })
    }

    fn alloc_gw_port(
        &mut self,
        net: NetworkId,
        proto: u8,
        c_ip: Ipv4Addr,
        c_port: u16,
        gw_ip: Ipv4Addr,
    ) -> Option<u16> {
        for _ in 0..28232 {
            let p = self.next_gw_port;
            self.next_gw_port = if p >= 60999 { 32768 } else { p + 1 };
            let k = Key {
                net,
                proto,
                c_ip,
                c_port,
                r_ip: gw_ip,
                r_port: p,
            };
            if !self.flows.contains_key(&k) {
                return Some(p);
            }
        }
        None
    }

    // ----- frames from containers -----

    /// A frame a container sent to the gateway's MAC that is not ARP or a ping of the gateway.
    /// `ip` is its IPv4 packet. Returns false when the NAT did not take it.
    #[allow(clippy::too_many_arguments)]
    pub fn ingress(
        &mut self,
        net: NetworkId,
        src_mac: MacAddr,
        ip: &Ipv4Packet<&[u8]>,
        vnet: &VnetHdr,
        in_port: PortId,
        port_vnet: bool,
        now: u64,
        out: &mut Out,
    ) -> bool {
        let Some(n) = self.nets.get(&net) else {
            return false;
        };
        let (gw_mac, gw_ip, internal) = (n.gw_mac, n.gw_ip, n.internal);
        if ip.is_fragment() {
            self.counters.drop_bad_frame += 1;
            return true;
        }
        let path = Path {
            port: in_port,
            vnet: port_vnet,
            src_mac: gw_mac,
            dst_mac: src_mac,
            src_ip: ip.dst_addr(),
            dst_ip: ip.src_addr(),
        };
        let from = FromContainer {
            net,
            ip,
            vnet,
            path,
            gw_ip,
            internal,
            now,
        };
        match ip.protocol() {
            ip_proto::TCP => self.tcp_in(&from, out),
            ip_proto::UDP => self.udp_in(&from, out),
            ip_proto::ICMP => self.icmp_in(&from),
            _ => {
                self.counters.drop_no_egress += 1;
                true
            }
        }
    }

    /// The front both transports share: a checked view of the header, its checksum (unless
    /// the vnet header vouches for it) and the flow key. `None` when the frame was dropped
    /// (and counted).
    fn l4_front<'a, P: L4In<'a>>(&mut self, from: &FromContainer<'a>) -> Option<(P, Key)> {
        let ip = from.ip;
        let Some(p) = P::parse(ip.payload()) else {
            self.counters.drop_bad_frame += 1;
            return None;
        };
        if !trust_csum(from.vnet) && !p.checksum_ok(ip) {
            self.counters.drop_bad_frame += 1;
            return None;
        }
        let (src, dst) = p.ports();
        Some((p, from.key(P::PROTO, src, dst)))
    }

    fn tcp_in(&mut self, from: &FromContainer, out: &mut Out) -> bool {
        let FromContainer {
            ip,
            path,
            gw_ip,
            internal,
            now,
            ..
        } = *from;
        let Some((t, key)) = self.l4_front::<TcpPacket<&[u8]>>(from) else {
            return true;
        };
        let ports = (t.dst_port(), t.src_port());
        if let Some(&idx) = self.flows.get(&key) {
            if let Some(Slot::Tcp(f, _)) = self.slots[idx].as_mut() {
                if f.segment(&t, now, out) {
                    self.counters.tcp_held += 1;
                }
                self.mark(idx);
            }
            return true;
        }
        let flags = t.flags();
        let reset = |out: &mut Out| {
            if flags & tcp::RST != 0 {
                return;
            }
            let seg_len = t.payload().len() as u32
                + u32::from(flags & tcp::SYN != 0)
                + u32::from(flags & tcp::FIN != 0);
            if flags & tcp::ACK != 0 {
                out.tcp(
                    &path,
                    ports,
                    t.ack_number(),
                    0,
                    tcp::RST,
                    0,
                    &[],
                    0,
                    0,
                    |_| {},
                );
            } else {
                let ack = t.seq_number().wrapping_add(seg_len);
                out.tcp(
                    &path,
                    ports,
                    0,
                    ack,
                    tcp::RST | tcp::ACK,
                    0,
                    &[],
                    0,
                    0,
                    |_| {},
                );
            }
        };
        if flags & (tcp::SYN | tcp::ACK | tcp::RST) != tcp::SYN || ip.dst_addr() == gw_ip {
            // Not the start of a connection we can carry.
            reset(out);
            return true;
        }
        if internal || self.isolated(ip.dst_addr()) {
            self.counters.drop_no_egress += 1;
            reset(out);
            return true;
        }
        if self.counters.tcp_flows as usize >= self.cfg.max_tcp {
            self.counters.drop_table_full += 1;
            reset(out);
            return true;
        }
        let dst = SocketAddr::V4(SocketAddrV4::new(ip.dst_addr(), t.dst_port()));
        let sock = match mio::net::TcpStream::connect(dst) {
            Ok(s) => s,
            Err(_) => {
                self.counters.drop_socket_error += 1;
                reset(out);
                return true;
            }
        };
        let _ = sock.set_nodelay(true);
        let iss = self.random();
        let opts = tcp::parse_syn_opts(t.options());
        let flow = TcpFlow::from_syn(path, ports, sock, t.seq_number(), opts, iss, now);
        if self
            .insert(
                Slot::Tcp(Box::new(flow), key),
                None,
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.counters.drop_socket_error += 1;
            reset(out);
        }
        true
    }

    fn udp_in(&mut self, from: &FromContainer, out: &mut Out) -> bool {
        let FromContainer {
            ip,
            path,
            gw_ip,
            internal,
            now,
            ..
        } = *from;
        let Some((u, key)) = self.l4_front::<UdpPacket<&[u8]>>(from) else {
            return true;
        };
        if let Some(&idx) = self.flows.get(&key) {
            let mut via = None;
            if let Some(Slot::Udp(f)) = self.slots[idx].as_mut() {
                f.last_active = now;
                match (&f.sock, f.via) {
                    (Some(s), _) if s.send(u.payload()).is_err() => {
                        self.counters.drop_send_failed += 1;
                    }
                    (None, Some(v)) => via = Some(v),
                    _ => {}
                }
            }
            if let Some((l, client)) = via {
                if let Some(Slot::UdpListen(ls)) = self.slots[l].as_ref() {
                    if ls.sock.send_to(u.payload(), client).is_err() {
                        self.counters.drop_send_failed += 1;
                    }
                }
            }
            return true;
        }
        if ip.dst_addr() == gw_ip {
            if u.dst_port() == 53 {
                self.dns(from, key, &u, out);
            } else {
                self.counters.drop_no_egress += 1;
            }
            return true;
        }
        if internal || self.isolated(ip.dst_addr()) {
            self.counters.drop_no_egress += 1;
            return true;
        }
        let remote = SocketAddr::V4(SocketAddrV4::new(ip.dst_addr(), u.dst_port()));
        self.udp_open(key, path, remote, now, u.payload());
        true
    }

    fn udp_open(&mut self, key: Key, path: Path, remote: SocketAddr, now: u64, first: &[u8]) {
        if self.counters.udp_flows as usize >= self.cfg.max_udp {
            self.counters.drop_table_full += 1;
            return;
        }
        let sock = match std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect(remote).map(|_| s))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
        {
            Ok(s) => mio::net::UdpSocket::from_std(s),
            Err(_) => {
                self.counters.drop_socket_error += 1;
                return;
            }
        };
        if sock.send(first).is_err() {
            self.counters.drop_send_failed += 1;
        }
        let flow = UdpFlow {
            key,
            path,
            sock: Some(sock),
            via: None,
            last_active: now,
            readable: false,
        };
        if self
            .insert(Slot::Udp(flow), None, Interest::READABLE)
            .is_err()
        {
            self.counters.drop_socket_error += 1;
        }
    }

    fn dns(&mut self, from: &FromContainer, key: Key, u: &UdpPacket<&[u8]>, out: &mut Out) {
        let FromContainer {
            net,
            path,
            internal,
            now,
            ..
        } = *from;
        let msg = u.payload();
        let mut name_buf = [0u8; 256];
        let Some(q) = dns::parse_query(msg, &mut name_buf) else {
            self.counters.drop_bad_frame += 1;
            return;
        };
        let found = self
            .nets
            .get(&net)
            .and_then(|n| n.names.get(q.name).copied())
            .filter(|_| dns::is_address_query(&q));
        let rcode = match (found, internal || self.cfg.upstream_dns.is_empty()) {
            (Some(_), _) => dns::RCODE_NOERROR,
            (None, true) => {
                if internal {
                    dns::RCODE_NXDOMAIN
                } else {
                    dns::RCODE_SERVFAIL
                }
            }
            (None, false) => {
                // Forward to the host's resolver; the answer comes back from the gateway.
                self.counters.dns_forwarded += 1;
                let up = SocketAddr::V4(self.cfg.upstream_dns[0]);
                self.udp_open(key, path, up, now, msg);
                return;
            }
        };
        let ports = (53, u.src_port());
        let ok = out.udp(&path, ports, 512, |buf| {
            dns::respond(msg, &q, found, rcode, buf)
        });
        if ok {
            self.counters.dns_answers += 1;
        }
    }

    fn icmp_in(&mut self, from: &FromContainer) -> bool {
        let FromContainer {
            ip,
            path,
            gw_ip,
            internal,
            now,
            ..
        } = *from;
        let msg = ip.payload();
        if msg.len() < 8 || msg[0] != crate::wire::ICMP_ECHO_REQUEST || ip.dst_addr() == gw_ip {
            self.counters.drop_no_egress += 1;
            return true;
        }
        if internal || self.isolated(ip.dst_addr()) {
            self.counters.drop_no_egress += 1;
            return true;
        }
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let key = from.key(ip_proto::ICMP, id, 0);
        let idx = match self.flows.get(&key) {
            Some(&i) => i,
            None => {
                if self.counters.icmp_flows as usize >= self.cfg.max_icmp {
                    self.counters.drop_table_full += 1;
                    return true;
                }
                let sock = match IcmpSocket::open(ip.dst_addr()) {
                    Ok(s) => s,
                    Err(_) => {
                        self.counters.drop_socket_error += 1;
                        return true;
                    }
                };
                let host_id = self.random() as u16;
                let flow = IcmpFlow {
                    key,
                    path,
                    sock,
                    host_id,
                    last_active: now,
                    readable: false,
                };
                match self.insert(Slot::Icmp(flow), None, Interest::READABLE) {
                    Ok(i) => i,
                    Err(_) => {
                        self.counters.drop_socket_error += 1;
                        return true;
                    }
                }
            }
        };
        let n = msg.len().min(self.scratch.len());
        let Some(Slot::Icmp(f)) = self.slots[idx].as_mut() else {
            return true;
        };
        f.last_active = now;
        let buf = &mut self.scratch[..n];
        buf.copy_from_slice(&msg[..n]);
        if f.sock.raw {
            buf[4..6].copy_from_slice(&f.host_id.to_be_bytes());
            buf[2..4].copy_from_slice(&[0, 0]);
            let c = crate::wire::checksum::checksum(buf);
            buf[2..4].copy_from_slice(&c.to_be_bytes());
        }
        if f.sock.send(buf).is_err() {
            self.counters.drop_send_failed += 1;
        }
        true
    }

    // ----- host sockets -----

    /// A mio event for one of the NAT's tokens.
    pub fn event(&mut self, token: Token, readable: bool, writable: bool, now: u64) {
        let Some(idx) = token.0.checked_sub(TOKEN_BASE) else {
            return;
        };
        let Some(Some(slot)) = self.slots.get_mut(idx) else {
            return;
        };
        match slot {
            Slot::Tcp(f, _) => {
                if f.phase == tcp::Phase::Connecting {
                    if !(writable || readable) {
                        return;
                    }
                    match (f.sock.take_error(), f.sock.peer_addr()) {
                        (Ok(None), Ok(_)) => f.connected(now),
                        (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                        _ => {
                            self.counters.drop_socket_error += 1;
                            f.connect_failed();
                        }
                    }
                }
                if readable {
                    f.sock_readable = true;
                }
                if writable {
                    f.sock_writable = true;
                }
            }
            Slot::Udp(u) => u.readable |= readable,
            Slot::Icmp(i) => i.readable |= readable,
            Slot::Listen(_) => {}
            Slot::UdpListen(l) => l.readable |= readable,
        }
        self.mark(idx);
    }

    /// Makes progress on flows with pending work, building frames into `out`. Returns true
    /// when `out` filled up before all work was done (flush it and call again).
    pub fn progress(&mut self, now: u64, out: &mut Out) -> bool {
        while let Some(idx) = self.pending.pop_front() {
            self.queued[idx] = false;
            if self.step(idx, now, out) {
                self.queued[idx] = true;
                self.pending.push_front(idx);
                return true;
            }
        }
        false
    }

    /// One flow's work. True when `out` is full and the flow has more.
    fn step(&mut self, idx: usize, now: u64, out: &mut Out) -> bool {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        match slot {
            Slot::Tcp(f, _) => {
                if f.closed() {
                    self.remove(idx);
                    return false;
                }
                let more = f.output(now, out);
                if f.closed() {
                    self.remove(idx);
                }
                more
            }
            Slot::Udp(u) => {
                let mtu = self.nets.get(&u.key.net).map_or(1500, |n| n.mtu) as usize;
                let max = mtu.saturating_sub(28);
                while u.readable {
                    if out.is_full() {
                        return true;
                    }
                    let Some(sock) = u.sock.as_ref() else {
                        u.readable = false;
                        break;
                    };
                    let mut too_big = false;
                    let mut stop = false;
                    let ports = (u.key.r_port, u.key.c_port);
                    let ok = out.udp(&u.path, ports, 65507, |buf| match sock.recv(buf) {
                        Ok(n) if n > max => {
                            too_big = true;
                            None
                        }
                        Ok(n) => Some(n),
                        Err(_) => {
                            stop = true;
                            None
                        }
                    });
                    if too_big {
                        self.counters.drop_too_big += 1;
                    }
                    if stop {
                        u.readable = false;
                    }
                    if ok {
                        u.last_active = now;
                    }
                }
                false
            }
            Slot::Icmp(f) => {
                while f.readable {
                    if out.is_full() {
                        return true;
                    }
                    let r = match f.sock.recv(&mut self.scratch) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                        Err(_) => {
                            f.readable = false;
                            break;
                        }
                    };
                    let m = &mut self.scratch[r];
                    if m.len() < 8 || m[0] != crate::wire::ICMP_ECHO_REPLY {
                        continue;
                    }
                    if f.sock.raw && u16::from_be_bytes([m[4], m[5]]) != f.host_id {
                        continue;
                    }
                    m[4..6].copy_from_slice(&f.key.c_port.to_be_bytes());
                    f.last_active = now;
                    out.icmp(&f.path, m);
                }
                false
            }
            Slot::Listen(_) => self.accept(idx, now, out),
            Slot::UdpListen(_) => self.udp_listen_step(idx, now, out),
        }
    }

    fn accept(&mut self, idx: usize, now: u64, out: &mut Out) -> bool {
        loop {
            let Some(Some(Slot::Listen(l))) = self.slots.get(idx) else {
                return false;
            };
            let (net, c_ip, c_port) = (l.net, l.c_ip, l.c_port);
            let (sock, _peer) = match l.sock.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            self.counters.published_accepts += 1;
            let Some(gw_ip) = self.nets.get(&net).map(|n| n.gw_ip) else {
                continue;
            };
            let Some(path) = self.path_to(net, c_ip, gw_ip) else {
                self.counters.drop_no_neighbor += 1;
                continue;
            };
            if self.counters.tcp_flows as usize >= self.cfg.max_tcp {
                self.counters.drop_table_full += 1;
                continue;
            }
            let Some(gw_port) = self.alloc_gw_port(net, ip_proto::TCP, c_ip, c_port, gw_ip) else {
                self.counters.drop_table_full += 1;
                continue;
            };
            let _ = sock.set_nodelay(true);
            let key = Key {
                net,
                proto: ip_proto::TCP,
                c_ip,
                c_port,
                r_ip: gw_ip,
                r_port: gw_port,
            };
            let iss = self.random();
            let flow = TcpFlow::to_container(path, (gw_port, c_port), sock, iss, now);
            match self.insert(
                Slot::Tcp(Box::new(flow), key),
                None,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(i) => self.mark(i),
                Err(_) => self.counters.drop_socket_error += 1,
            }
            let _ = out;
        }
    }

    fn udp_listen_step(&mut self, idx: usize, now: u64, out: &mut Out) -> bool {
        loop {
            if out.is_full() {
                return true;
            }
            let Some(Some(Slot::UdpListen(l))) = self.slots.get_mut(idx) else {
                return false;
            };
            if !l.readable {
                return false;
            }
            let (net, c_ip, c_port) = (l.net, l.c_ip, l.c_port);
            let (n, client) = match l.sock.recv_from(&mut self.scratch) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    l.readable = false;
                    return false;
                }
            };
            let Some((gw_ip, mtu)) = self.nets.get(&net).map(|x| (x.gw_ip, x.mtu as usize)) else {
                continue;
            };
            if n + 28 > mtu {
                self.counters.drop_too_big += 1;
                continue;
            }
            // The client's flow: find it by (listener, client), or open one.
            let existing = self
                .slots
                .iter()
                .position(|s| matches!(s, Some(Slot::Udp(u)) if u.via == Some((idx, client))));
            let fidx = match existing {
                Some(f) => f,
                None => {
                    let Some(path) = self.path_to(net, c_ip, gw_ip) else {
                        self.counters.drop_no_neighbor += 1;
                        continue;
                    };
                    if self.counters.udp_flows as usize >= self.cfg.max_udp {
                        self.counters.drop_table_full += 1;
                        continue;
                    }
                    let Some(gw_port) = self.alloc_gw_port(net, ip_proto::UDP, c_ip, c_port, gw_ip)
                    else {
                        self.counters.drop_table_full += 1;
                        continue;
                    };
                    let key = Key {
                        net,
                        proto: ip_proto::UDP,
                        c_ip,
                        c_port,
                        r_ip: gw_ip,
                        r_port: gw_port,
                    };
                    let flow = UdpFlow {
                        key,
                        path,
                        sock: None,
                        via: Some((idx, client)),
                        last_active: now,
                        readable: false,
                    };
                    match self.insert(Slot::Udp(flow), None, Interest::READABLE) {
                        Ok(i) => i,
                        Err(_) => continue,
                    }
                }
            };
            let Some(Some(Slot::Udp(u))) = self.slots.get_mut(fidx) else {
                continue;
            };
            u.last_active = now;
            let ports = (u.key.r_port, u.key.c_port);
            let data = &self.scratch[..n];
            out.udp(&u.path, ports, n, |buf| {
                buf[..n].copy_from_slice(data);
                Some(n)
            });
        }
    }

    /// Timers: retransmissions, connect and idle timeouts. Cheap to call often; does its work
    /// at most every 50 ms.
    pub fn tick(&mut self, now: u64) {
        if now < self.last_tick + 50 {
            return;
        }
        self.last_tick = now;
        let cfg = &self.cfg;
        let mut dead = Vec::new();
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            match s {
                Some(Slot::Tcp(f, _)) => {
                    let idle = now.saturating_sub(f.last_active);
                    let limit = match f.phase {
                        tcp::Phase::Connecting | tcp::Phase::SynSent => cfg.tcp_connect_ms,
                        _ if f.is_open() => cfg.tcp_idle_ms,
                        _ => cfg.tcp_closing_ms,
                    };
                    if idle > limit || f.closed() {
                        dead.push(i);
                    } else if f.timer(now) {
                        due.push(i);
                    }
                }
                Some(Slot::Udp(u)) if now.saturating_sub(u.last_active) > cfg.udp_idle_ms => {
                    dead.push(i)
                }
                Some(Slot::Icmp(f)) if now.saturating_sub(f.last_active) > cfg.icmp_idle_ms => {
                    dead.push(i)
                }
                _ => {}
            }
        }
        for i in dead {
            self.remove(i);
        }
        for i in due {
            self.mark(i);
        }
    }

    /// True when some flow has a retransmission timer armed (the worker polls more often).
    pub fn wants_timer(&self) -> bool {
        !self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let t = "# c\nsearch x\nnameserver 10.0.0.53\nnameserver ::1\nnameserver  127.0.0.53 \noptions ndots:0\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 53), 53),
                SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53)
            ]
        );
    }
}
