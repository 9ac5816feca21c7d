//! UDP source port selection from a hash of the inner flow (RFC 7348 section 5).
//!
//! Routers between two VTEPs spread traffic over equal-cost paths by hashing the outer 5-tuple.
//! The only field of it that varies between flows of one VTEP pair is the UDP source port, so
//! the encapsulating end derives it from a hash of the inner frame: the inner destination and
//! source MAC and EtherType always, and the inner IPv4/IPv6 addresses, protocol and ports
//! when the inner packet is TCP, UDP, SCTP or UDP-Lite (behind up to two VLAN tags). Packets of
//! one flow always get the same port (no reordering); different flows usually differ.
//!
//! Fragments of an inner IPv4 packet are hashed on addresses and protocol only, so that the
//! first fragment (which carries the ports) and the later ones (which do not) take one path.
//!
//! The hash is deterministic for a given seed, branch-light, never allocates and never panics
//! on short or malformed frames (it hashes what it can read).

use std::ops::RangeInclusive;

/// The dynamic/private range RFC 7348 recommends for the outer source port.
pub const DEFAULT_SRC_PORTS: RangeInclusive<u16> = 49152..=65535;

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    folded_mul(h ^ w, K1)
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    // TCP, UDP, SCTP, UDP-Lite: source and destination port are the first 4 bytes.
    matches!(proto, 6 | 17 | 132 | 136)
}

/// A 32-bit hash of the flow an Ethernet frame belongs to (see the module documentation for the
/// fields). Frames shorter than an Ethernet header hash what they have.
#[inline]
pub fn flow_hash(frame: &[u8], seed: u64) -> u32 {
    let mut h = seed ^ K0;
    if frame.len() < 14 {
        for &b in frame {
            h = mix(h, u64::from(b));
        }
        return fin(h);
    }
    // Destination MAC, source MAC (12 bytes) and the outer EtherType.
    h = mix(h, be64(frame, 0));
    h = mix(
        h,
        u64::from(be32(frame, 8)) << 16 | u64::from(be16(frame, 12)),
    );

    let mut off = 12;
    let mut ethertype = be16(frame, off);
    let mut tags = 0;
    while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && tags < 2 {
        if frame.len() < off + 6 {
            return fin(h);
        }
        // Include the VLAN id: different VLANs are different flows.
        h = mix(h, u64::from(be16(frame, off + 2) & 0x0fff));
        off += 4;
        ethertype = be16(frame, off);
        tags += 1;
    }
    let l3 = &frame[off + 2..];
    match ethertype {
        ETH_P_IPV4 => hash_ipv4(h, l3),
        ETH_P_IPV6 => hash_ipv6(h, l3),
        _ => fin(h),
    }
}

#[inline(always)]
fn hash_ipv4(mut h: u64, ip: &[u8]) -> u32 {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return fin(h);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    h = mix(h, be64(ip, 12)); // source and destination address
    let frag = be16(ip, 6) & 0x3fff; // MF flag and fragment offset
    let mut tail = u64::from(proto) << 32;
    if frag == 0 && ihl >= 20 && has_ports(proto) && ip.len() >= ihl + 4 {
        tail |= u64::from(be32(ip, ihl));
    }
    fin(mix(h, tail))
}

#[inline(always)]
fn hash_ipv6(mut h: u64, ip: &[u8]) -> u32 {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return fin(h);
    }
    let nh = ip[6];
    h = mix(h, be64(ip, 8));
    h = mix(h, be64(ip, 16));
    h = mix(h, be64(ip, 24));
    h = mix(h, be64(ip, 32));
    let mut tail = u64::from(nh) << 32;
    if has_ports(nh) && ip.len() >= 44 {
        tail |= u64::from(be32(ip, 40));
    }
    fin(mix(h, tail))
}

#[inline(always)]
fn fin(h: u64) -> u32 {
    let h = folded_mul(h, K2);
    (h ^ (h >> 32)) as u32
}

/// An inclusive range of UDP source ports for encapsulated packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

/// A source port range that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid VXLAN source port range {lo}..={hi}: it must be non-empty and not include port 0 (RFC 7348 recommends 49152..=65535)")]
pub struct PortRangeError {
    /// The first port asked for.
    pub lo: u16,
    /// The last port asked for.
    pub hi: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            lo: *DEFAULT_SRC_PORTS.start(),
            hi: *DEFAULT_SRC_PORTS.end(),
        }
    }
}

impl PortRange {
    /// Ports `lo..=hi`; `lo` must be at least 1 and not above `hi`.
    pub const fn new(lo: u16, hi: u16) -> Result<PortRange, PortRangeError> {
        if lo == 0 || lo > hi {
            Err(PortRangeError { lo, hi })
        } else {
            Ok(PortRange { lo, hi })
        }
    }

    /// The first port.
    #[inline]
    pub const fn lo(&self) -> u16 {
        self.lo
    }

    /// The last port (inclusive).
    #[inline]
    pub const fn hi(&self) -> u16 {
        self.hi
    }

    /// True when `port` is in the range.
    #[inline]
    pub const fn contains(&self, port: u16) -> bool {
        port >= self.lo && port <= self.hi
    }

    /// Maps a 32-bit hash uniformly onto the range (multiply-shift, no division).
    #[inline]
    pub const fn pick(&self, hash: u32) -> u16 {
        let span = (self.hi - self.lo) as u64 + 1;
        self.lo + ((hash as u64 * span) >> 32) as u16
    }

    /// The source port for an inner Ethernet frame: [`flow_hash`] mapped onto the range.
    #[inline]
    pub fn src_port(&self, frame: &[u8], seed: u64) -> u16 {
        self.pick(flow_hash(frame, seed))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP/TCP frame for tests.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ipv4_frame(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        sport: u16,
        dport: u16,
        payload_len: usize,
    ) -> Vec<u8> {
        let l4 = if proto == 6 { 20 } else { 8 };
        let mut f = Vec::new();
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4 + payload_len) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut l4h = vec![0u8; l4];
        l4h[0..2].copy_from_slice(&sport.to_be_bytes());
        l4h[2..4].copy_from_slice(&dport.to_be_bytes());
        if proto == 6 {
            l4h[12] = 0x50;
        } else {
            l4h[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        }
        f.extend_from_slice(&l4h);
        f.extend((0..payload_len).map(|i| i as u8));
        f
    }

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    #[test]
    fn range_validation() {
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(11, 10).is_err());
        let r = PortRange::new(5000, 5000).unwrap();
        assert_eq!(r.pick(0), 5000);
        assert_eq!(r.pick(u32::MAX), 5000);
        let d = PortRange::default();
        assert_eq!((d.lo(), d.hi()), (49152, 65535));
        assert_eq!(d.pick(0), 49152);
        assert_eq!(d.pick(u32::MAX), 65535);
        let r = PortRange::new(100, 200).unwrap();
        assert!(r.contains(100) && r.contains(150) && r.contains(200));
        assert!(!r.contains(99) && !r.contains(201) && !r.contains(0));
        assert!(PortRangeError { lo: 0, hi: 1 }
            .to_string()
            .contains("49152"));
    }

    #[test]
    fn port_in_range_and_stable_per_flow() {
        let r = PortRange::new(50000, 50099).unwrap();
        let mut seen = std::collections::HashSet::new();
        for sport in 0..500u16 {
            let f = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1000 + sport, 80, 10);
            let p = r.src_port(&f, 0);
            assert!(r.contains(p), "{p} out of range");
            // Stable: same flow, different payload bytes and length -> same port.
            let g = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1000 + sport, 80, 900);
            assert_eq!(r.src_port(&g, 0), p);
            seen.insert(p);
        }
        // 500 flows over 100 ports: a decent hash hits most of them.
        assert!(seen.len() > 80, "only {} distinct ports", seen.len());
    }

    #[test]
    fn every_field_matters() {
        let base = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2222, 4);
        let h = flow_hash(&base, 0);
        let variants = [
            ipv4_frame(B, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2222, 4),
            ipv4_frame(A, A, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2222, 4),
            ipv4_frame(A, B, [10, 0, 0, 3], [10, 0, 0, 2], 17, 1111, 2222, 4),
            ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 3], 17, 1111, 2222, 4),
            ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1111, 2222, 4),
            ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1112, 2222, 4),
            ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2223, 4),
        ];
        for v in &variants {
            assert_ne!(flow_hash(v, 0), h);
        }
        // The seed changes the hash; the payload does not.
        assert_ne!(flow_hash(&base, 1), h);
        let mut p = base.clone();
        *p.last_mut().unwrap() ^= 0xff;
        assert_eq!(flow_hash(&p, 0), h);
    }

    #[test]
    fn every_hashed_byte_matters() {
        // Flipping any one byte of the MACs, the outer EtherType, the IPv4 addresses or the
        // ports changes the hash (no byte is skipped or read twice in its place).
        let base = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2222, 4);
        let h = flow_hash(&base, 0);
        for at in (0..12).chain(26..34).chain(34..38) {
            let mut f = base.clone();
            f[at] ^= 0x10;
            assert_ne!(flow_hash(&f, 0), h, "byte {at}");
        }
        // IPv6: both addresses, every byte, and the next header.
        let v6 = ipv6_frame(17, 5000, 53, 0);
        let h = flow_hash(&v6, 0);
        for at in (14 + 8..14 + 40).chain([14 + 6]).chain(14 + 40..14 + 44) {
            let mut f = v6.clone();
            f[at] ^= 0x10;
            assert_ne!(flow_hash(&f, 0), h, "IPv6 byte {at}");
        }
        // TCP and UDP between the same addresses and ports are two flows.
        assert_ne!(flow_hash(&ipv6_frame(6, 5000, 53, 0), 0), h);
    }

    #[test]
    fn header_only_packets_hash_their_addresses() {
        // An IPv4 header with nothing after it, an IPv6 header with nothing after it: the
        // addresses still pick the port.
        let v4 = |dst: u8| {
            let mut f = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, dst], 59, 0, 0, 0);
            f.truncate(14 + 20);
            f
        };
        assert_ne!(flow_hash(&v4(2), 0), flow_hash(&v4(3), 0));
        let mut a = ipv6_frame(59, 0, 0, 0);
        a.truncate(14 + 40);
        let mut b = a.clone();
        b[14 + 39] ^= 1;
        assert_ne!(flow_hash(&a, 0), flow_hash(&b, 0));
    }

    #[test]
    fn portless_protocols_hash_on_addresses_and_protocol_only() {
        // ICMP echo requests of one ping differ in sequence number and checksum; they are one
        // flow and must take one path.
        let ping = |seq: u8| {
            let mut f = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 1, 0x0800, 0x1234, 8);
            f[34 + 2] = seq; // bytes 34..38 (type, code, checksum) differ per packet
            f[34 + 7] = seq;
            f
        };
        assert_eq!(flow_hash(&ping(1), 0), flow_hash(&ping(2), 0));
        let v6 = |seq: u8| ipv6_frame(58, 0x8000, u16::from(seq), seq);
        assert_eq!(flow_hash(&v6(1), 0), flow_hash(&v6(2), 0));
    }

    #[test]
    fn vlan_id_matters_priority_does_not() {
        let plain = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 2, 0);
        let tagged = |tci: [u8; 2]| {
            let mut f = plain[..12].to_vec();
            f.extend_from_slice(&[0x81, 0x00, tci[0], tci[1]]);
            f.extend_from_slice(&plain[12..]);
            f
        };
        let h = flow_hash(&tagged([0x00, 0x0a]), 0);
        assert_ne!(flow_hash(&tagged([0x00, 0x0b]), 0), h, "VLAN 11 vs 10");
        assert_ne!(flow_hash(&tagged([0x01, 0x0a]), 0), h, "VLAN 266 vs 10");
        assert_eq!(flow_hash(&tagged([0xe0, 0x0a]), 0), h, "priority bits");
        // At most two tags are parsed: behind a third, nothing (not even the third VLAN id)
        // is read.
        let triple = |vid: u8| {
            let mut f = plain[..12].to_vec();
            f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, vid]);
            f.extend_from_slice(&plain[12..]);
            f
        };
        assert_eq!(flow_hash(&triple(3), 0), flow_hash(&triple(4), 0));
    }

    /// An Ethernet + IPv6 frame with next header `nh` whose first four L4 bytes are the ports
    /// `sport`, `dport`, followed by 4 bytes of `fill`.
    fn ipv6_frame(nh: u8, sport: u16, dport: u16, fill: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&B);
        f.extend_from_slice(&A);
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 48];
        ip[0] = 0x60;
        ip[5] = 8;
        ip[6] = nh;
        ip[7] = 64;
        for (i, b) in ip[8..40].iter_mut().enumerate() {
            *b = 0x20 + i as u8;
        }
        ip[40..42].copy_from_slice(&sport.to_be_bytes());
        ip[42..44].copy_from_slice(&dport.to_be_bytes());
        ip[44..48].fill(fill);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn fragments_hash_on_addresses_only() {
        let mut first = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 1111, 2222, 40);
        first[14 + 6] = 0x20; // MF
        let mut later = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 17, 9, 9, 40);
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x05; // offset 40
        assert_eq!(flow_hash(&first, 0), flow_hash(&later, 0));
    }

    #[test]
    fn vlan_and_ipv6() {
        let plain = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 2, 0);
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&plain[12..]);
        let mut other_port = tagged.clone();
        other_port[16 + 2 + 20 + 1] = 3; // source port 3
        assert_ne!(flow_hash(&tagged, 0), flow_hash(&other_port, 0));

        let mut v6 = Vec::new();
        v6.extend_from_slice(&B);
        v6.extend_from_slice(&A);
        v6.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 44];
        ip[0] = 0x60;
        ip[6] = 17;
        ip[23] = 1;
        ip[39] = 2;
        ip[40..42].copy_from_slice(&5000u16.to_be_bytes());
        v6.extend_from_slice(&ip);
        let h = flow_hash(&v6, 0);
        v6[14 + 41] = 0x89;
        assert_ne!(flow_hash(&v6, 0), h);
    }

    #[test]
    fn short_and_garbage_frames_do_not_panic() {
        let f = ipv4_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 2, 0);
        for n in 0..f.len() {
            let _ = flow_hash(&f[..n], 0);
        }
        let mut bad_ihl = f.clone();
        bad_ihl[14] = 0x4f; // IHL 60 bytes, beyond the frame
        let _ = flow_hash(&bad_ihl, 0);
        bad_ihl[14] = 0x41; // IHL 4 bytes
        let _ = flow_hash(&bad_ihl, 0);
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00]);
        for n in 0..qinq.len() {
            let _ = flow_hash(&qinq[..n], 0);
        }
        let v6 = ipv6_frame(17, 1, 2, 0);
        for n in 0..v6.len() {
            let _ = flow_hash(&v6[..n], 0);
        }
        let mut v4_in_v6 = v6.clone();
        v4_in_v6[14] = 0x40; // an IPv6 EtherType with an IPv4 version nibble
        let _ = flow_hash(&v4_in_v6, 0);
    }
}
