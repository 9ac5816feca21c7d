//! Tunnel GSO uplink of the VXLAN port: whole TCP GSO frames leave as **one** packet.
//!
//! Without it, a 64 KiB TCP frame of a container is cut into ~44 MSS-sized segments, each
//! copied behind its own VXLAN header, and the kernel then carries 44 datagrams through its
//! UDP stack, the underlay and the receiver's stack. Linux's own VXLAN device does none of
//! that: it sends one skb with the `SKB_GSO_UDP_TUNNEL` type, segmented only where a device
//! cannot carry it (a veth or a NIC with tunnel TSO never does).
//!
//! This uplink gets the same treatment from userspace. Since Linux 6.17 a TAP device accepts
//! `TUN_F_UDP_TUNNEL_GSO` with the 24-byte `virtio_net_hdr_v1_hash_tunnel`: one `writev` of
//! [vnet header | outer Ethernet, IPv4, UDP, VXLAN (the port's [`EncapTemplate`]) | the inner
//! GSO frame as it came from the container] enters the kernel as one tunnel GSO skb. It is
//! received on the TAP addressed to the host (the TAP's own MAC) and routed like any packet
//! the host forwards — route, neighbour, underlay device — which is why the TAP gets
//! `forwarding=1`, and `accept_local=1` (its source is the host's own VTEP address, otherwise
//! a martian). No copy is made here: the inner frame is gathered from the batch slot.
//!
//! The receiving side needs nothing new from the peer: a UDP socket is handed such a packet
//! whole (headers once, `UDP_GRO` gives the inner segment size), which
//! [`tunnel_super_packet`] recognises. Linux's vxlan device sends the same packets when the
//! underlay carries them (veth), so this also makes vswitch receive them correctly.
//!
//! Only untagged TCP GSO frames (IPv4 or IPv6) with a partial checksum use it (that is what
//! the virtio tunnel header describes, and what the receiving side recognises); everything else goes through
//! the UDP socket as before. Where the kernel lacks the feature, or the host's `rp_filter` is
//! strict, the port keeps the socket path only (and says so in the daemon's log).
//!
//! What the host must allow: the kernel forwards these packets, so a firewall whose forward
//! chain drops by default (Docker sets that policy) must accept what comes in on the tunnel
//! TAP (`vsx…`), e.g. `iptables -I DOCKER-USER -i vsx+ -j ACCEPT`. The daemon's default
//! (`--tunnel-offload auto`) looks for such a policy and keeps the socket path if it finds
//! one.

use crate::batch::{
    VnetHdr, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4,
};
use crate::port::sys::PortError;
use crate::port::tap::{TapConfig, TapPort, TUNNEL_VNET_HDR_LEN};
use crate::wire::checksum::{fold, pseudo_header_v4, sum};
use encap::{EncapTemplate, MAX_INNER_LEN, OUTER_LEN, VXLAN_HDR_LEN};
use std::io;
use std::net::Ipv4Addr;

/// `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`: the GSO frame is inside a UDP tunnel over IPv4.
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// Offset of the outer UDP header (Ethernet + IPv4 without options).
const OUTER_TH: u16 = 34;

/// The tunnel virtio header for sending inner GSO `frame` (described by `vnet`, as the
/// container's port received it) behind the 50 outer bytes, or `None` when the frame is not
/// an untagged TCP GSO frame the kernel can segment inside a tunnel: not TCP over IPv4 or
/// IPv6, no partial checksum, a single segment, headers that do not match the vnet header, or too
/// large for one outer IPv4 packet.
pub fn tunnel_vnet(frame: &[u8], vnet: &VnetHdr) -> Option<[u8; TUNNEL_VNET_HDR_LEN]> {
    let kind = vnet.gso_type & !VNET_GSO_ECN;
    if vnet.flags & VNET_F_NEEDS_CSUM == 0 || vnet.gso_size == 0 || frame.len() > MAX_INNER_LEN {
        return None;
    }
    // Untagged frames only: what the receiving side recognises as a whole packet
    // ([`tunnel_super_packet`]). Other GSO frames are segmented as before.
    let l3_min = match (kind, frame.get(12..14)?) {
        (VNET_GSO_TCPV4, [0x08, 0x00]) => 20,
        (VNET_GSO_TCPV6, [0x86, 0xdd]) => 40,
        _ => return None,
    };
    let nh = 14;
    let th = usize::from(vnet.csum_start);
    if vnet.csum_offset != 16 || th < nh + l3_min {
        return None;
    }
    let thl = usize::from(*frame.get(th + 12)? >> 4) * 4;
    let hdr = th + thl;
    // Headers of a sane length (Ethernet + IP + TCP never exceed 256 bytes), and more than
    // one segment of payload, or the kernel would not treat it as GSO.
    if thl < 20 || hdr > 256 || frame.len() <= hdr + usize::from(vnet.gso_size) {
        return None;
    }
    let o = OUTER_LEN as u16;
    let mut b = [0u8; TUNNEL_VNET_HDR_LEN];
    b[0] = VNET_F_NEEDS_CSUM;
    b[1] = vnet.gso_type | GSO_UDP_TUNNEL_IPV4;
    // Little endian: virtio 1.0 headers (TUN_F_UDP_TUNNEL_GSO implies them).
    b[2..4].copy_from_slice(&(o + hdr as u16).to_le_bytes());
    b[4..6].copy_from_slice(&vnet.gso_size.to_le_bytes());
    b[6..8].copy_from_slice(&(o + th as u16).to_le_bytes());
    b[8..10].copy_from_slice(&16u16.to_le_bytes());
    // num_buffers, hash value, hash report, padding: zero.
    b[20..22].copy_from_slice(&OUTER_TH.to_le_bytes());
    b[22..24].copy_from_slice(&(o + nh as u16).to_le_bytes());
    Some(b)
}

/// Recognises a tunnel GSO packet that a UDP socket delivered whole: a VXLAN `payload` whose
/// inner frame is one TCP or UDP packet (IPv4, or IPv6 without extension headers) carrying
/// more than one segment of payload. Such
/// packets come from a peer vswitch's tunnel TAP, and from Linux's vxlan device whenever the
/// underlay can carry them (a veth).
///
/// The segment size is not in the packet. A UDP socket reports it (`gro`, the `UDP_GRO`
/// control message) only for inner UDP GSO; for TCP it is taken as the largest segment the
/// overlay's MTU allows (`inner_mtu` minus the IP and TCP headers), which is what the
/// sender's TCP uses, and in any case a size the receiving side may segment to. A coalesced
/// run of datagrams never matches: its first inner packet ends within the first `gro` bytes.
///
/// On a match the inner checksum field is set to the pseudo-header sum (a partial checksum,
/// as a local stack leaves it for offload) and the vnet header of the inner GSO frame is
/// returned; otherwise `None` and `payload` is untouched.
pub fn tunnel_super_packet(payload: &mut [u8], gro: usize, inner_mtu: usize) -> Option<VnetHdr> {
    let (vnet, partial) = super_packet(payload, gro, inner_mtu)?;
    let at = VXLAN_HDR_LEN + usize::from(vnet.csum_start) + usize::from(vnet.csum_offset);
    payload
        .get_mut(at..at + 2)?
        .copy_from_slice(&partial.to_be_bytes());
    Some(vnet)
}

/// Whether [`tunnel_super_packet`] would take `payload` as one tunnel GSO packet (it is left
/// as it is).
pub fn is_tunnel_super_packet(payload: &[u8], gro: usize, inner_mtu: usize) -> bool {
    super_packet(payload, gro, inner_mtu).is_some()
}

/// [`tunnel_super_packet`]'s reading: the inner frame's vnet header and the partial checksum
/// to store at its `csum_start + csum_offset`.
fn super_packet(payload: &[u8], gro: usize, inner_mtu: usize) -> Option<(VnetHdr, u16)> {
    let f = payload.get(VXLAN_HDR_LEN..)?;
    if f.len() < 14 + 20 + 8 {
        return None;
    }
    // The IP header's length, the protocol, and the L4 length, when the IP packet fills the
    // frame exactly (no extension headers for IPv6).
    let (ip6, l3, proto, l4_len) = match (f[12], f[13], f[14] >> 4) {
        (0x08, 0x00, 4) => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            if ihl < 20 || total + 14 != f.len() {
                return None;
            }
            // IHL 15 claims 60 header bytes: more than a short packet holds.
            (false, ihl, f[23], total.checked_sub(ihl)?)
        }
        (0x86, 0xdd, 6) => {
            let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
            if 14 + 40 + plen != f.len() {
                return None;
            }
            (true, 40, f[20], plen)
        }
        _ => return None,
    };
    let th = 14 + l3;
    let (gso_type, thl, mss, csum_offset) = match proto {
        // TCP with a header of at least 20 bytes.
        6 if f.len() >= th + 20 && f[th + 12] >> 4 >= 5 => {
            let thl = usize::from(f[th + 12] >> 4) * 4;
            let mss = if gro > 0 {
                gro
            } else {
                inner_mtu.saturating_sub(l3 + thl)
            };
            let t = if ip6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 };
            (t, thl, mss, 16)
        }
        17 if gro > 0 => (VNET_GSO_UDP_L4, 8, gro, 6),
        _ => return None,
    };
    if mss == 0 || mss > usize::from(u16::MAX) || f.len() <= th + thl + mss {
        return None;
    }
    let pseudo = if ip6 {
        // Addresses, upper-layer length, next header (RFC 8200 section 8.1).
        u64::from(sum(&f[22..54])) + l4_len as u64 + u64::from(proto)
    } else {
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        u64::from(pseudo_header_v4(src, dst, proto, l4_len as u16))
    };
    let partial = fold(pseudo);
    let vnet = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type,
        hdr_len: (th + thl) as u16,
        gso_size: mss as u16,
        csum_start: th as u16,
        csum_offset: csum_offset as u16,
    };
    Some((vnet, partial))
}

/// The sysctls a tunnel TAP needs, relative to `/proc/sys/net/`.
fn sysctls(name: &str) -> [(String, &'static str); 4] {
    [
        // Route what arrives on it (only this device: not the host-wide switch).
        (format!("ipv4/conf/{name}/forwarding"), "1"),
        // Its packets carry the host's own VTEP address as source.
        (format!("ipv4/conf/{name}/accept_local"), "1"),
        (format!("ipv4/conf/{name}/rp_filter"), "0"),
        // No router solicitations or DAD from a send-only device.
        (format!("ipv6/conf/{name}/disable_ipv6"), "1"),
    ]
}

/// A send-only TAP device for tunnel GSO packets; see the module documentation.
#[derive(Debug)]
pub struct TunnelTap {
    tap: TapPort,
    mac: [u8; 6],
}

impl TunnelTap {
    /// Creates TAP device `name` with tunnel GSO for packets from local VTEP address `vtep`,
    /// configures it and brings it up. Fails (and the caller keeps the socket path) where the
    /// kernel lacks `TUN_F_UDP_TUNNEL_GSO`, or where reverse-path filtering is strict
    /// (`net.ipv4.conf.all.rp_filter=1`: it would drop every packet from the TAP, whose source
    /// is reachable through another interface). Under loose filtering (`2`, systemd's default)
    /// the TAP also gets `vtep/32`: loose filtering drops packets from a device with no IPv4
    /// address at all; the address is the host's already, so nothing new becomes reachable.
    pub fn open(name: &str, vtep: Ipv4Addr) -> Result<TunnelTap, PortError> {
        let rpf = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
            .map_err(|e| PortError::setup(name, "read net.ipv4.conf.all.rp_filter", e))?;
        let loose = match rpf.trim() {
            "0" => false,
            "2" => true,
            _ => {
                return Err(PortError::setup(
                    name,
                    "net.ipv4.conf.all.rp_filter is strict (1)",
                    io::Error::other("reverse-path filtering would drop tunnel packets from a TAP"),
                ))
            }
        };
        let tap = TapPort::create_with(
            name,
            TapConfig {
                tunnel_gso: true,
                ..TapConfig::default()
            },
        )?;
        let name = crate::port::Port::name(&tap).to_string();
        for (key, value) in sysctls(&name) {
            std::fs::write(format!("/proc/sys/net/{key}"), value)
                .map_err(|e| PortError::setup(&name, "sysctl", e))?;
        }
        let nl_err = |what| {
            let name = name.clone();
            move |e: crate::netns::NetnsError| {
                PortError::setup(&name, what, io::Error::other(e.to_string()))
            }
        };
        let nl = crate::netns::Netlink::new().map_err(nl_err("netlink"))?;
        if loose {
            nl.add_address(&name, vtep, 32)
                .map_err(nl_err("address for loose rp_filter"))?;
        }
        nl.set_link_up(&name).map_err(nl_err("link up"))?;
        let mac = nl.link_mac(&name).map_err(nl_err("link MAC"))?;
        Ok(TunnelTap { tap, mac: mac.0 })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        crate::port::Port::name(&self.tap)
    }

    /// The device's MAC address: the outer destination MAC of every packet written to it.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends inner GSO `frame` to the VTEP of `template` as one tunnel GSO packet, with the
    /// `vnet` header from [`tunnel_vnet`].
    pub fn send(
        &self,
        template: &EncapTemplate,
        frame: &[u8],
        vnet: &[u8; TUNNEL_VNET_HDR_LEN],
    ) -> io::Result<()> {
        let outer = template
            .header(frame.len(), template.src_port_for(frame))
            .map_err(io::Error::other)?;
        let mut head = [0u8; TUNNEL_VNET_HDR_LEN + OUTER_LEN];
        head[..TUNNEL_VNET_HDR_LEN].copy_from_slice(vnet);
        head[TUNNEL_VNET_HDR_LEN..].copy_from_slice(&outer);
        self.tap.write_parts(&head, frame).map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::VNET_GSO_NONE;
    use crate::wire::gso::testing::{tcp_gso_frame, tcp_gso_vnet as tcp_vnet};

    /// An Ethernet/IPv6/TCP frame with `n` payload bytes (no extension headers), the TCP
    /// checksum field zero.
    pub(crate) fn tcp6_gso_frame(n: usize) -> Vec<u8> {
        let v4 = tcp_gso_frame(n, 0x10);
        let mut f = v4[..14].to_vec();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((20 + n) as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&v4[34..]);
        f
    }

    fn tcp6_vnet(gso_size: u16) -> VnetHdr {
        VnetHdr {
            gso_type: VNET_GSO_TCPV6,
            hdr_len: 74,
            csum_start: 54,
            ..tcp_vnet(gso_size)
        }
    }

    fn le(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn tunnel_vnet_describes_the_frame_behind_the_outer_headers() {
        let f = tcp_gso_frame(10_000, 0x10);
        let b = tunnel_vnet(&f, &tcp_vnet(1398)).expect("a TCP GSO frame");
        assert_eq!(b[0], VNET_F_NEEDS_CSUM);
        assert_eq!(b[1], VNET_GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4);
        assert_eq!(le(&b, 2), 50 + 54, "hdr_len: outer + inner headers");
        assert_eq!(le(&b, 4), 1398, "gso_size: the inner MSS");
        assert_eq!((le(&b, 6), le(&b, 8)), (50 + 34, 16), "inner TCP checksum");
        assert_eq!(b[10..20], [0; 10], "num_buffers and hash fields");
        assert_eq!((le(&b, 20), le(&b, 22)), (34, 64), "outer UDP, inner IPv4");
        // IPv6 inside: the same, with the inner TCP after 40 bytes of IPv6.
        let f6 = tcp6_gso_frame(10_000);
        let b = tunnel_vnet(&f6, &tcp6_vnet(1378)).expect("a TCPv6 GSO frame");
        assert_eq!(b[1], VNET_GSO_TCPV6 | GSO_UDP_TUNNEL_IPV4);
        assert_eq!((le(&b, 2), le(&b, 4), le(&b, 6)), (50 + 74, 1378, 50 + 54));
        assert_eq!((le(&b, 20), le(&b, 22)), (34, 64));
        assert!(
            tunnel_vnet(&f6, &tcp_vnet(1378)).is_none(),
            "TCPv4 type on IPv6"
        );
        // ECN is kept.
        let mut v = tcp_vnet(1398);
        v.gso_type |= VNET_GSO_ECN;
        assert_eq!(tunnel_vnet(&f, &v).unwrap()[1], 0xa1);
    }

    #[test]
    fn tunnel_vnet_refuses_what_the_kernel_would_not_segment() {
        let f = tcp_gso_frame(10_000, 0x10);
        let v = tcp_vnet(1398);
        let no_csum = VnetHdr { flags: 0, ..v };
        let plain = VnetHdr {
            gso_type: VNET_GSO_NONE,
            ..v
        };
        let udp = VnetHdr {
            gso_type: VNET_GSO_UDP_L4,
            ..v
        };
        let v6_type = VnetHdr {
            gso_type: VNET_GSO_TCPV6,
            ..v
        };
        let bad_offset = VnetHdr {
            csum_offset: 6,
            ..v
        };
        let start_in_ip = VnetHdr {
            csum_start: 30,
            ..v
        };

        for (what, vnet) in [
            ("no partial checksum", no_csum),
            ("not GSO", plain),
            ("UDP GSO", udp),
            ("TCPv6 type on an IPv4 frame", v6_type),
            ("checksum offset not TCP's", bad_offset),
            ("checksum start inside the IP header", start_in_ip),
        ] {
            assert!(tunnel_vnet(&f, &vnet).is_none(), "{what}");
        }
        // A checksum start far past any header (where a TCP header length can be read) is
        // refused, not an overflow of the 16-bit offsets.
        let mut big = tcp_gso_frame(65_400, 0x10);
        big[65_000 + 12] = 0x50;
        let far = VnetHdr {
            csum_start: 65_000,
            gso_size: 1,
            ..v
        };
        assert!(tunnel_vnet(&big, &far).is_none(), "checksum start at 65000");
        // One segment's worth is not GSO for the kernel.
        assert!(tunnel_vnet(&tcp_gso_frame(1398, 0x10), &v).is_none());
        assert!(tunnel_vnet(&tcp_gso_frame(1399, 0x10), &v).is_some());
        // Too large for one outer IPv4 packet.
        let big = vec![0u8; MAX_INNER_LEN + 1];
        assert!(tunnel_vnet(&big, &v).is_none());
        // A VLAN-tagged inner frame is not recognised whole on receive: not sent whole.
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&f[12..]);
        let tv = VnetHdr {
            csum_start: 38,
            hdr_len: 58,
            ..v
        };
        assert!(tunnel_vnet(&tagged, &tv).is_none(), "VLAN-tagged");
        // Truncated input is refused, not a panic.
        for n in [0, 13, 20, 40] {
            assert!(tunnel_vnet(&f[..n], &v).is_none(), "{n} bytes");
        }
    }

    fn vxlan_payload(inner: &[u8]) -> Vec<u8> {
        let mut p = encap::vxlan::header_bytes(encap::Vni::new(42).unwrap()).to_vec();
        p.extend_from_slice(inner);
        p
    }

    #[test]
    fn a_whole_tunnel_packet_becomes_one_gso_frame() {
        let f = tcp_gso_frame(10_000, 0x18);
        let mut p = vxlan_payload(&f);
        // No UDP_GRO size (inner TCP): the MSS the overlay MTU allows.
        let v = tunnel_super_packet(&mut p, 0, 1450).expect("a whole tunnel packet");
        assert_eq!(v, tcp_vnet(1450 - 40));
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let partial = fold(u64::from(pseudo_header_v4(src, dst, 6, 10_020)));
        assert_eq!(p[8 + 50..8 + 52], partial.to_be_bytes());
        assert_eq!(p[8..8 + 50], f[..50]);
        assert_eq!(p[8 + 52..], f[52..]);
        // With a size from the socket, that size.
        let mut p = vxlan_payload(&f);
        assert_eq!(
            tunnel_super_packet(&mut p, 1398, 1450).unwrap().gso_size,
            1398
        );

        // IPv6 inside: MSS 1450 - 40 - 20, and the IPv6 pseudo-header sum, computed here from
        // its bytes (RFC 8200 section 8.1).
        let f6 = tcp6_gso_frame(10_000);
        let mut p = vxlan_payload(&f6);
        let v = tunnel_super_packet(&mut p, 0, 1450).expect("a whole IPv6 tunnel packet");
        assert_eq!(v, tcp6_vnet(1390));
        let mut ph = f6[22..54].to_vec();
        ph.extend_from_slice(&10_020u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(p[8 + 70..8 + 72], fold(u64::from(sum(&ph))).to_be_bytes());
        assert_eq!(p[8..8 + 70], f6[..70]);
        assert_eq!(p[8 + 72..], f6[72..]);
        // An IPv6 length that disagrees with the frame: not recognised.
        let mut bad = vxlan_payload(&f6);
        bad[8 + 18] ^= 1;
        assert_eq!(tunnel_super_packet(&mut bad, 0, 1450), None);
    }

    #[test]
    fn ordinary_datagrams_are_not_taken_for_tunnel_packets() {
        // One segment's worth: an ordinary frame.
        let f = tcp_gso_frame(1410, 0x10);
        let mut p = vxlan_payload(&f);
        assert_eq!(tunnel_super_packet(&mut p, 0, 1450), None);
        assert_eq!(p, vxlan_payload(&f), "untouched");
        // A coalesced run of three datagrams (UDP GRO): the first inner packet ends early.
        let one = vxlan_payload(&tcp_gso_frame(1000, 0x10));
        let mut run = [one.clone(), one.clone(), one.clone()].concat();
        assert_eq!(tunnel_super_packet(&mut run, one.len(), 1450), None);
        // Inner UDP is only GSO with a size from the socket.
        let mut u = tcp_gso_frame(10_000, 0);
        u[23] = 17;
        let mut p = vxlan_payload(&u);
        assert_eq!(tunnel_super_packet(&mut p, 0, 1450), None);
        let v = tunnel_super_packet(&mut p, 1200, 1450).expect("inner UDP GSO");
        assert_eq!(
            (v.gso_type, v.gso_size, v.csum_offset),
            (VNET_GSO_UDP_L4, 1200, 6)
        );
        // Not IPv4, or lengths that disagree: not recognised, and no panic on short input.
        let mut arp = vxlan_payload(&f);
        arp[8 + 12..8 + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tunnel_super_packet(&mut arp, 0, 1450), None);
        let mut cut = vxlan_payload(&tcp_gso_frame(10_000, 0x10));
        cut.truncate(5000);
        assert_eq!(tunnel_super_packet(&mut cut, 0, 1450), None);
        for n in [0, 8, 30, 60] {
            let mut short = vxlan_payload(&f)[..n].to_vec();
            assert_eq!(tunnel_super_packet(&mut short, 0, 1450), None, "{n} bytes");
        }
    }
}
