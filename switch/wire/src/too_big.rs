//! Path MTU through a tunnel: how large the IP packets are that a frame puts on the wire, and
//! the reply a tunnel sends back to the sender of a frame too large for it: ICMP
//! "fragmentation needed" (IPv4, RFC 792 and RFC 1191) or ICMPv6 "packet too big" (RFC 4443,
//! RFC 8201).
//!
//! Linux's vxlan device does the same for bridged traffic (`skb_tunnel_check_pmtu`): the reply
//! comes from the packet's destination address and MAC, so the sender's TCP takes it as news
//! about that path and lowers its MSS. Without it a container whose MTU is above the overlay's
//! (or an overlay set above its underlay's) sees a black hole: small packets pass, full-sized
//! TCP segments vanish.

use super::checksum::{checksum, fold, sum};
use crate::vnet::{VnetHdr, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6};

/// What to do with a frame towards a tunnel whose inner packets may be `mtu` bytes at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Every IP packet the frame makes fits.
    Fits,
    /// Too big; the sender can be told (IPv4 with DF set, or IPv6).
    Reply,
    /// Too big, and no reply is due (IPv4 without DF, not IP, or a multicast or
    /// broadcast packet): dropped.
    Drop,
}

const ETH: usize = 14;
/// The largest IPv4 ICMP error: 576 bytes (RFC 1812 section 4.3.2.3), as Linux sends.
const ICMP4_MAX: usize = 576;
/// The largest ICMPv6 error: the IPv6 minimum MTU (RFC 4443 section 2.4 (c)).
const ICMP6_MAX: usize = 1280;
/// The smallest MTU IPv6 links have (RFC 8200 section 5).
const IPV6_MIN_MTU: u32 = 1280;

/// L3 header offset (after one 802.1Q tag, if any), IP version and the IP packet's own length
/// (from its header, capped by the frame) of an IPv4 or IPv6 frame.
fn ip_of(frame: &[u8]) -> Option<(usize, u8, usize)> {
    let l3 = match frame.get(12..14)? {
        [0x81, 0x00] => ETH + 4,
        _ => ETH,
    };
    let ip = frame.get(l3..)?;
    match frame.get(l3 - 2..l3)? {
        [0x08, 0x00] if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            (total >= 20).then(|| (l3, 4, total.min(ip.len())))
        }
        [0x86, 0xdd] if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            Some((l3, 6, (40 + payload).min(ip.len())))
        }
        _ => None,
    }
}

/// The largest inner frame `frame` puts on the wire once segmented, less its 14-byte Ethernet
/// header: the IP packet (for a GSO frame its headers plus `gso_size`) and any VLAN tag, or
/// for a frame that is not IP its Ethernet payload.
pub fn wire_len(frame: &[u8], vnet: &VnetHdr) -> usize {
    let Some((l3, _, own)) = ip_of(frame) else {
        return frame.len().saturating_sub(ETH);
    };
    let kind = vnet.gso_type & !VNET_GSO_ECN;
    let packet = if kind == VNET_GSO_NONE || vnet.gso_size == 0 {
        own
    } else {
        // The transport header starts at csum_start (GSO frames always carry a partial
        // checksum).
        let th = usize::from(vnet.csum_start);
        let l4 = match kind {
            VNET_GSO_TCPV4 | VNET_GSO_TCPV6 => frame.get(th + 12).map(|b| usize::from(b >> 4) * 4),
            _ => Some(8),
        };
        match l4 {
            Some(l4) if th >= l3 => (th - l3 + l4 + usize::from(vnet.gso_size)).min(own),
            _ => own,
        }
    };
    l3 - ETH + packet
}

/// Whether `frame` fits a tunnel whose inner IP packets may be `mtu` bytes, and if not,
/// whether its sender gets a reply ([`reply`]; untagged frames only).
pub fn check(frame: &[u8], vnet: &VnetHdr, mtu: usize) -> Fit {
    if wire_len(frame, vnet) <= mtu {
        return Fit::Fits;
    }
    // Never from or to a group address: the reply would come from one.
    if !matches!(frame.first(), Some(b) if b & 1 == 0) {
        return Fit::Drop;
    }
    match ip_of(frame) {
        Some((ETH, 4, _)) => {
            let df = frame[ETH + 6] & 0x40 != 0;
            let dst = &frame[ETH + 16..ETH + 20];
            let multicast = dst[0] >= 224;
            if df && !multicast {
                Fit::Reply
            } else {
                Fit::Drop
            }
        }
        Some((ETH, 6, _)) if frame[ETH + 24] != 0xff => Fit::Reply,
        _ => Fit::Drop,
    }
}

/// Writes into `out` the reply to `frame` (for which [`check`] said [`Fit::Reply`]): an
/// Ethernet frame from the packet's destination MAC and IP address to its source, carrying
/// ICMP "fragmentation needed" with next-hop MTU `mtu` (IPv4) or ICMPv6 "packet too big"
/// (IPv6, the MTU raised to 1280 if below), quoting the start of the packet. Returns the
/// frame's length, or `None` if `frame` is not an IP frame or `out` is too small.
pub fn reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let (ETH, version, own) = ip_of(frame)? else {
        return None;
    };
    let ip = &frame[ETH..ETH + own];
    let (l3, icmp, max) = match version {
        4 => (20, 8, ICMP4_MAX),
        _ => (40, 8, ICMP6_MAX),
    };
    let quote = ip.len().min(max - l3 - icmp);
    let len = ETH + l3 + icmp + quote;
    let out = out.get_mut(..len)?;
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&frame[12..14]);
    let (h, rest) = out[ETH..].split_at_mut(l3);
    let (m, q) = rest.split_at_mut(icmp);
    q.copy_from_slice(&ip[..quote]);
    if version == 4 {
        h[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0]);
        h[2..4].copy_from_slice(&((l3 + icmp + quote) as u16).to_be_bytes());
        h[12..16].copy_from_slice(&ip[16..20]);
        h[16..20].copy_from_slice(&ip[12..16]);
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        // Type 3 (destination unreachable), code 4 (fragmentation needed and DF set).
        m.copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
        m[6..8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
        let c = fold(u64::from(sum(m)) + u64::from(sum(q)));
        m[2..4].copy_from_slice(&(!c).to_be_bytes());
    } else {
        let upper = (icmp + quote) as u16;
        h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 58, 64]);
        h[4..6].copy_from_slice(&upper.to_be_bytes());
        h[8..24].copy_from_slice(&ip[24..40]);
        h[24..40].copy_from_slice(&ip[8..24]);
        // Type 2 (packet too big), code 0.
        m.copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        m[4..8].copy_from_slice(&mtu.max(IPV6_MIN_MTU).to_be_bytes());
        // The IPv6 pseudo-header: both addresses, the upper-layer length, next header 58.
        let pseudo = u64::from(sum(&h[8..40])) + u64::from(upper) + 58;
        let c = fold(pseudo + u64::from(sum(m)) + u64::from(sum(q)));
        m[2..4].copy_from_slice(&(!c).to_be_bytes());
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::verify;
    use crate::vnet::VNET_F_NEEDS_CSUM;

    const SRC_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
    const DST_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 3];

    /// An Ethernet + IPv4 + TCP frame of `payload` bytes, DF set or not.
    fn tcp4(payload: usize, df: bool) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[..6].copy_from_slice(&DST_MAC);
        f[6..12].copy_from_slice(&SRC_MAC);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (40 + payload) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = if df { 0x40 } else { 0 };
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 3]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5201u16.to_be_bytes());
        f[38..42].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        f[46] = 5 << 4;
        f
    }

    /// An Ethernet + IPv6 + TCP frame of `payload` bytes.
    fn tcp6(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 20 + payload];
        f[..6].copy_from_slice(&DST_MAC);
        f[6..12].copy_from_slice(&SRC_MAC);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        f[20] = 6;
        f[21] = 64;
        f[22..24].copy_from_slice(&[0xfd, 0]);
        f[37] = 2;
        f[38..40].copy_from_slice(&[0xfd, 0]);
        f[53] = 3;
        f[54 + 12] = 5 << 4;
        f
    }

    fn gso(kind: u8, th: u16, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: kind,
            gso_size: mss,
            csum_start: th,
            csum_offset: 16,
            ..VnetHdr::default()
        }
    }

    #[test]
    fn wire_len_is_the_packet_or_one_segment_of_a_gso_frame() {
        let plain = VnetHdr::default();
        assert_eq!(wire_len(&tcp4(1460, true), &plain), 1500);
        // Ethernet padding is not part of the packet.
        let mut padded = tcp4(0, true);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(wire_len(&padded, &plain), 40);
        // 64 KiB of TCP in 1448-byte segments: 20 + 20 + 1448 on the wire.
        assert_eq!(
            wire_len(&tcp4(65000, true), &gso(VNET_GSO_TCPV4, 34, 1448)),
            1488
        );
        assert_eq!(wire_len(&tcp6(65000), &gso(VNET_GSO_TCPV6, 54, 1440)), 1500);
        // A GSO type with gso_size 0 is not segmented: the whole packet goes on the wire.
        assert_eq!(
            wire_len(&tcp4(65000, true), &gso(VNET_GSO_TCPV4, 34, 0)),
            65040
        );
        // gso_size above the payload: the packet itself is the only segment.
        assert_eq!(
            wire_len(&tcp4(100, true), &gso(VNET_GSO_TCPV4, 34, 1448)),
            140
        );
        // Not IP: the Ethernet payload.
        let mut arp = tcp4(100, true);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(wire_len(&arp, &plain), arp.len() - 14);
    }

    /// An 802.1Q tag in front of IPv4: the tag counts on the wire; no reply (it would need
    /// the tag), but the GSO frame is measured by its segments, not taken whole.
    #[test]
    fn tagged_frames_are_measured_by_their_segments_and_not_answered() {
        let mut f = tcp4(65000, true);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let v = gso(VNET_GSO_TCPV4, 38, 1400);
        assert_eq!(wire_len(&f, &v), 4 + 1440);
        assert_eq!(check(&f, &v, 1450), Fit::Fits);
        assert_eq!(check(&f, &v, 1443), Fit::Drop);
        assert_eq!(reply(&f, 1443, &mut [0u8; 2048]), None);
    }

    #[test]
    fn check_replies_only_where_the_sender_can_be_told() {
        let plain = VnetHdr::default();
        assert_eq!(check(&tcp4(1410, true), &plain, 1450), Fit::Fits);
        assert_eq!(check(&tcp4(1411, true), &plain, 1450), Fit::Reply);
        assert_eq!(check(&tcp4(1411, false), &plain, 1450), Fit::Drop);
        let big = tcp4(64000, true);
        assert_eq!(check(&big, &gso(VNET_GSO_TCPV4, 34, 1410), 1450), Fit::Fits);
        assert_eq!(
            check(&big, &gso(VNET_GSO_TCPV4, 34, 1460), 1450),
            Fit::Reply
        );
        assert_eq!(check(&tcp6(1400), &plain, 1450), Fit::Reply);
        let mut group = tcp4(1460, true);
        group[30] = 239;
        assert_eq!(check(&group, &plain, 1450), Fit::Drop);
        let mut bcast = tcp4(1460, true);
        bcast[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(check(&bcast, &plain, 1450), Fit::Drop);
        let mut mc6 = tcp6(1460);
        mc6[38] = 0xff;
        assert_eq!(check(&mc6, &plain, 1450), Fit::Drop);
    }

    #[test]
    fn ipv4_reply_is_fragmentation_needed_from_the_destination() {
        let f = tcp4(1460, true);
        let mut out = [0u8; 2048];
        let n = reply(&f, 1450, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 14 + 576, "an ICMP error of 576 bytes");
        assert_eq!(&r[..6], &SRC_MAC);
        assert_eq!(&r[6..12], &DST_MAC);
        assert_eq!(&r[12..14], &[0x08, 0x00]);
        let ip = &r[14..34];
        assert!(verify(ip), "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 576);
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (1, &[10, 0, 0, 3][..], &[10, 0, 0, 2][..])
        );
        let icmp = &r[34..];
        assert!(verify(icmp), "ICMP checksum");
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
        // The quote: the original IP header and the start of TCP (ports and sequence number).
        assert_eq!(&icmp[8..], &f[14..14 + 548]);
        // A short packet is quoted whole.
        let small = tcp4(10, true);
        let n = reply(&small, 40, &mut out).unwrap();
        assert_eq!(n, 14 + 20 + 8 + 50);
        assert!(verify(&out[34..n]));
        assert_eq!(reply(&f, 1450, &mut [0u8; 100]), None, "out too small");
    }

    #[test]
    fn ipv6_reply_is_packet_too_big_with_a_valid_checksum() {
        let f = tcp6(1460);
        let mut out = [0u8; 2048];
        let n = reply(&f, 1450, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 14 + 1280);
        assert_eq!((&r[..6], &r[6..12]), (&SRC_MAC[..], &DST_MAC[..]));
        let ip = &r[14..54];
        assert_eq!((ip[0] >> 4, ip[6]), (6, 58));
        assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), 1280 - 40);
        assert_eq!(&ip[8..24], &f[38..54], "from the destination");
        assert_eq!(&ip[24..40], &f[22..38], "to the source");
        let icmp = &r[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1450
        );
        assert_eq!(&icmp[8..], &f[14..14 + 1232]);
        // Checksum over the pseudo-header and the message sums to all ones.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert!(verify(&pseudo));
        // Below the IPv6 minimum the MTU reported is 1280.
        let n = reply(&f, 1000, &mut out).unwrap();
        assert_eq!(&out[54 + 4..54 + 8], &1280u32.to_be_bytes());
        assert!(n > 54);
    }

    #[test]
    fn malformed_frames_are_not_answered_and_do_not_panic() {
        let mut out = [0u8; 2048];
        let mut zero_len = tcp4(100, true);
        zero_len[16..18].copy_from_slice(&[0, 0]);
        for f in [&[][..], &[0u8; 13][..], &tcp4(0, true)[..30], &zero_len[..]] {
            assert_eq!(reply(f, 1450, &mut out), None);
            let _ = check(f, &VnetHdr::default(), 0);
            let _ = wire_len(f, &gso(VNET_GSO_TCPV4, 200, 1000));
        }
        // csum_start past the end of the frame: the packet's own length.
        let f = tcp4(1000, true);
        assert_eq!(wire_len(&f, &gso(VNET_GSO_TCPV4, 5000, 100)), 1040);
    }
}
