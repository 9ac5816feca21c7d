//! The gateway stage: the switch's own presence on each bridge network. The gateway address
//! (.1 by default) belongs to the switch, not to a kernel interface: this stage answers ARP
//! requests for it and ICMP echo requests sent to it, replying out of the port the request came
//! from. Later stages (NAT, DNS) hang off the same entry point.
//!
//! No allocation per frame: replies are built in a preallocated batch.
//!
//! Beyond ARP and ping, the NAT stage ([`nat`]) carries containers' flows to the world on host
//! sockets, serves published ports and answers DNS; it is enabled by the worker
//! ([`Gateway::enable_nat`]) and builds its frames into [`Gateway::out`], which the worker
//! flushes to the containers' ports.

pub mod dns;
pub mod emit;
pub mod nat;
pub mod sys;
pub mod tcp;

use crate::batch::{Batch, MTU_SLOT};
use crate::pipeline::NetworkId;
use crate::port::PortId;
use crate::wire::{
    arp_reply_in_place, ethertype, icmp_echo_reply_in_place, ip_proto, ArpOperation, ArpPacket,
    EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, ICMP_ECHO_REQUEST,
};
use std::net::Ipv4Addr;

/// Counters of the gateway stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    pub arp_replies: u64,
    /// ARP requests for remote endpoints answered on their behalf (ARP suppression).
    pub arp_proxied: u64,
    pub echo_replies: u64,
    /// Frames for the gateway it does not answer (yet): other protocols, other addresses.
    pub ignored: u64,
}

#[derive(Clone, Copy, Debug)]
struct GwAddr {
    mac: MacAddr,
    ip: Ipv4Addr,
}

/// Control-plane requests for the NAT stage (sent through the worker).
pub enum GatewayCommand {
    /// NAT settings of a network registered with `AddNetwork` (which gave its gateway).
    Network {
        id: NetworkId,
        mtu: u32,
        internal: bool,
        /// The network's subnet: no network reaches another's through the gateway.
        subnet: Option<ipnet::Ipv4Net>,
    },
    /// A container address behind `port`; `name` is answered by DNS on user-defined networks.
    /// `vnet` is filled in by the worker from the port's capabilities.
    Endpoint {
        net: NetworkId,
        ip: Ipv4Addr,
        mac: MacAddr,
        port: PortId,
        vnet: bool,
        name: Option<String>,
    },
    /// Serves a published TCP port.
    PublishTcp {
        listener: std::net::TcpListener,
        net: NetworkId,
        ip: Ipv4Addr,
        port: u16,
    },
    /// Serves a published UDP port.
    PublishUdp {
        socket: std::net::UdpSocket,
        net: NetworkId,
        ip: Ipv4Addr,
        port: u16,
    },
    /// Stops serving a published host address (`proto` 6 or 17).
    Unpublish {
        proto: u8,
        addr: std::net::SocketAddr,
    },
    /// Asks for the NAT counters.
    Counters {
        reply: crossbeam_channel::Sender<nat::NatCounters>,
    },
}

impl std::fmt::Debug for GatewayCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayCommand")
    }
}

/// The gateway stage.
pub struct Gateway {
    nets: Vec<Option<GwAddr>>,
    replies: Batch,
    pub counters: GatewayCounters,
    nat: Option<nat::Nat>,
    /// Frames the NAT stage built for containers (flushed by the worker).
    pub out: emit::Out,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

impl Gateway {
    /// A gateway with no network.
    pub fn new() -> Gateway {
        Gateway {
            nets: Vec::new(),
            replies: Batch::new(MTU_SLOT),
            counters: Default::default(),
            nat: None,
            out: emit::Out::new(),
        }
    }

    /// Turns on NAT, publishing and DNS; its host sockets register with `registry`.
    pub fn enable_nat(&mut self, registry: mio::Registry, cfg: nat::NatConfig) {
        self.nat = Some(nat::Nat::new(registry, cfg));
    }

    /// The NAT stage, when enabled.
    pub fn nat(&self) -> Option<&nat::Nat> {
        self.nat.as_ref()
    }

    /// Applies a control-plane request.
    pub fn command(&mut self, cmd: GatewayCommand) {
        let Some(n) = self.nat.as_mut() else {
            return;
        };
        match cmd {
            GatewayCommand::Network {
                id,
                mtu,
                internal,
                subnet,
            } => {
                if let Some(Some(gw)) = self.nets.get(id.index()) {
                    n.set_network(
                        id,
                        nat::NatNet {
                            gw_mac: gw.mac,
                            gw_ip: gw.ip,
                            mtu,
                            internal,
                            subnet,
                            names: Default::default(),
                        },
                    );
                }
            }
            GatewayCommand::Endpoint {
                net,
                ip,
                mac,
                port,
                vnet,
                name,
            } => n.add_endpoint(net, ip, mac, port, vnet, name),
            GatewayCommand::PublishTcp {
                listener,
                net,
                ip,
                port,
            } => {
                if let Err(e) = n.publish_tcp(listener, net, ip, port) {
                    tracing::warn!("cannot serve a published port: {e}");
                }
            }
            GatewayCommand::PublishUdp {
                socket,
                net,
                ip,
                port,
            } => {
                if let Err(e) = n.publish_udp(socket, net, ip, port) {
                    tracing::warn!("cannot serve a published port: {e}");
                }
            }
            GatewayCommand::Unpublish { proto, addr } => n.unpublish(proto, addr),
            GatewayCommand::Counters { reply } => {
                let _ = reply.send(n.counters);
            }
        }
    }

    /// A port left the switch: forget its addresses and close its flows.
    pub fn remove_port(&mut self, port: PortId) {
        if let Some(n) = self.nat.as_mut() {
            n.remove_port(port);
        }
    }

    /// A mio event for a NAT socket (`token.0 >= nat::TOKEN_BASE`).
    pub fn nat_event(&mut self, token: mio::Token, readable: bool, writable: bool, now_ms: u64) {
        if let Some(n) = self.nat.as_mut() {
            n.event(token, readable, writable, now_ms);
        }
    }

    /// Runs the NAT's timers and pending work, flushing [`Gateway::out`] into `sink` as it
    /// fills.
    pub fn nat_output(&mut self, now_ms: u64, sink: &mut dyn emit::Sink) {
        if let Some(n) = self.nat.as_mut() {
            n.tick(now_ms);
            loop {
                let more = n.progress(now_ms, &mut self.out);
                if !self.out.is_empty() {
                    self.out.flush(sink);
                }
                if !more {
                    break;
                }
            }
        } else if !self.out.is_empty() {
            self.out.flush(sink);
        }
    }

    /// True when the NAT has flows whose timers need the loop to wake up soon.
    pub fn wants_timer(&self) -> bool {
        self.nat.as_ref().is_some_and(|n| n.wants_timer())
    }

    /// Gives the switch the address `ip` (with MAC `mac`) on network `id`.
    pub fn add_network(&mut self, id: NetworkId, mac: MacAddr, ip: Ipv4Addr) {
        let i = id.index();
        if self.nets.len() <= i {
            self.nets.resize(i + 1, None);
        }
        self.nets[i] = Some(GwAddr { mac, ip });
    }

    /// Forgets network `id`.
    pub fn remove_network(&mut self, id: NetworkId) {
        if let Some(n) = self.nets.get_mut(id.index()) {
            *n = None;
        }
    }

    /// Answers the frames of `batch` listed in `sel` (frame index, network) that ask the gateway
    /// something it knows. Replies accumulate in [`Gateway::replies`] until [`Gateway::clear`].
    pub fn handle(&mut self, batch: &Batch, sel: &[(u16, NetworkId)]) {
        self.handle_from(batch, sel, PortId(0), false, 0);
    }

    /// [`Gateway::handle`] for frames that came in on `in_port` (`port_vnet`: it carries vnet
    /// headers); frames for the NAT stage go there, its output into [`Gateway::out`].
    pub fn handle_from(
        &mut self,
        batch: &Batch,
        sel: &[(u16, NetworkId)],
        in_port: PortId,
        port_vnet: bool,
        now_ms: u64,
    ) {
        for &(i, net) in sel {
            let Some(Some(gw)) = self.nets.get(net.index()).copied() else {
                continue;
            };
            let frame = batch.frame(i as usize);
            let class = classify(frame, gw);
            if let (Ask::Nothing, Some(n)) = (&class, self.nat.as_mut()) {
                if let Ok(eth) = EthernetFrame::new_checked(frame) {
                    if eth.dst_addr() == gw.mac && eth.payload_ethertype() == ethertype::IPV4 {
                        if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
                            let vnet = batch.meta(i as usize).vnet;
                            if n.ingress(
                                net,
                                eth.src_addr(),
                                &ip,
                                &vnet,
                                in_port,
                                port_vnet,
                                now_ms,
                                &mut self.out,
                            ) {
                                continue;
                            }
                        }
                    }
                }
            }
            match class {
                Ask::Arp => {
                    if self.reply_with(frame, |f| arp_reply_in_place(f, gw.mac).ok()) {
                        self.counters.arp_replies += 1;
                    }
                }
                Ask::Echo => {
                    if self.reply_with(frame, |f| icmp_echo_reply_in_place(f, gw.mac, gw.ip).ok()) {
                        self.counters.echo_replies += 1;
                    }
                }
                Ask::Nothing => self.counters.ignored += 1,
            }
        }
    }

    /// Answers the ARP requests of `batch` listed in `sel` (frame index, the MAC the asked
    /// address is at: the pipeline's ARP suppression found it), as the asked address. Replies
    /// accumulate with the others until [`Gateway::clear`].
    pub fn proxy_arp(&mut self, batch: &Batch, sel: &[(u16, MacAddr)]) {
        for &(i, mac) in sel {
            if self.reply_with(batch.frame(i as usize), |f| arp_reply_in_place(f, mac).ok()) {
                self.counters.arp_proxied += 1;
            }
        }
    }

    fn reply_with(&mut self, frame: &[u8], build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if !self.replies.push(frame, Default::default()) {
            return false;
        }
        let last = self.replies.len() - 1;
        match build(self.replies.frame_mut(last)) {
            Some(len) => {
                self.replies.meta_mut(last).len = len as u32;
                true
            }
            None => {
                self.replies.clear_last();
                false
            }
        }
    }

    /// Replies built so far.
    pub fn replies(&self) -> &Batch {
        &self.replies
    }

    /// Selection of all replies, for `Port::send_burst`.
    pub fn reply_sel(&self) -> &'static [u16] {
        crate::batch::all_frames(self.replies.len())
    }

    /// Forgets the replies (after they were sent).
    pub fn clear(&mut self) {
        self.replies.clear();
    }
}

enum Ask {
    Arp,
    Echo,
    Nothing,
}

fn classify(frame: &[u8], gw: GwAddr) -> Ask {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Ask::Nothing;
    };
    match eth.payload_ethertype() {
        ethertype::ARP => match ArpPacket::new_checked(eth.payload()) {
            Ok(arp) if arp.operation() == ArpOperation::Request && arp.target_ip() == gw.ip => {
                Ask::Arp
            }
            _ => Ask::Nothing,
        },
        ethertype::IPV4 if eth.dst_addr() == gw.mac => match Ipv4Packet::new_checked(eth.payload())
        {
            Ok(ip) if ip.dst_addr() == gw.ip && ip.protocol() == ip_proto::ICMP => {
                match IcmpPacket::new_checked(ip.payload()) {
                    Ok(icmp) if icmp.msg_type() == ICMP_ECHO_REQUEST => Ask::Echo,
                    _ => Ask::Nothing,
                }
            }
            _ => Ask::Nothing,
        },
        _ => Ask::Nothing,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::VnetHdr;

    /// The gateway of the tests' network, and a container on it (the worker's tests use them).
    pub(crate) const GW_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
    pub(crate) const C_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);

    pub(crate) fn gw_mac() -> MacAddr {
        MacAddr::local_from(GW_IP.octets())
    }
    pub(crate) fn c_mac() -> MacAddr {
        MacAddr::local_from(C_IP.octets())
    }

    /// An ARP request from the container for `target`.
    pub(crate) fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&c_mac().0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&c_mac().0);
        f.extend_from_slice(&C_IP.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f.resize(60, 0);
        f
    }

    /// An ICMP echo request from the container to `dst`, through the gateway's MAC.
    pub(crate) fn echo_request(dst: Ipv4Addr) -> Vec<u8> {
        let mut f = gw_mac().0.to_vec();
        f.extend_from_slice(&c_mac().0);
        f.extend_from_slice(&[0x08, 0x00]);
        let payload = [0xabu8; 8];
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            1,
            0,
            0,
        ];
        ip.extend_from_slice(&C_IP.octets());
        ip.extend_from_slice(&dst.octets());
        let c = crate::wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(&payload);
        let c = crate::wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    fn run(frames: &[Vec<u8>]) -> (Gateway, Batch) {
        let mut g = Gateway::new();
        g.add_network(NetworkId(3), gw_mac(), GW_IP);
        let mut b = Batch::new(MTU_SLOT);
        for f in frames {
            b.push(f, VnetHdr::default());
        }
        let sel: Vec<(u16, NetworkId)> = (0..frames.len() as u16)
            .map(|i| (i, NetworkId(3)))
            .collect();
        g.handle(&b, &sel);
        (g, b)
    }

    #[test]
    fn answers_arp_for_its_address_only() {
        let (g, _) = run(&[
            arp_request(GW_IP),
            arp_request(Ipv4Addr::new(172, 17, 0, 9)),
        ]);
        assert_eq!(g.replies().len(), 1);
        assert_eq!(g.counters.arp_replies, 1);
        assert_eq!(g.counters.ignored, 1);
        let r = g.replies().frame(0);
        let eth = EthernetFrame::new_checked(r).unwrap();
        assert_eq!(eth.dst_addr(), c_mac());
        assert_eq!(eth.src_addr(), gw_mac());
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Reply);
        assert_eq!(arp.source_hw_addr(), gw_mac());
        assert_eq!(arp.source_ip(), GW_IP);
        assert_eq!(arp.target_ip(), C_IP);
        assert_eq!(g.reply_sel(), &[0]);
    }

    #[test]
    fn answers_ping_to_its_address() {
        let (g, _) = run(&[echo_request(GW_IP), echo_request(Ipv4Addr::new(8, 8, 8, 8))]);
        assert_eq!(g.counters.echo_replies, 1);
        assert_eq!(g.replies().len(), 1);
        let eth = EthernetFrame::new_checked(g.replies().frame(0)).unwrap();
        assert_eq!(eth.dst_addr(), c_mac());
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), GW_IP);
        assert_eq!(ip.dst_addr(), C_IP);
        assert!(ip.verify_checksum());
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), crate::wire::ICMP_ECHO_REPLY);
        assert!(crate::wire::checksum::verify(ip.payload()));
    }

    #[test]
    fn unknown_network_and_garbage_are_ignored() {
        let mut g = Gateway::new();
        let mut b = Batch::new(MTU_SLOT);
        b.push(&arp_request(GW_IP), VnetHdr::default());
        b.push(&[1, 2, 3], VnetHdr::default());
        g.handle(&b, &[(0, NetworkId(7))]);
        g.add_network(NetworkId(7), gw_mac(), GW_IP);
        g.handle(&b, &[(1, NetworkId(7))]);
        assert!(g.replies().is_empty());
    }
}
