//! Decapsulation with validation.
//!
//! [`decap`] takes a whole outer Ethernet frame (an AF_PACKET or raw uplink) and checks, in
//! order: Ethernet, EtherType IPv4, IPv4 version, no options, lengths, the header checksum,
//! no fragment, the local address (when the table has one), protocol UDP, the destination port,
//! the UDP length, the VXLAN I flag, an inner Ethernet header, the VNI and that the source
//! address is a configured peer of that VNI. [`decap_udp_payload`] does the VXLAN part for a
//! payload already received by a UDP socket. Each failure is a [`DecapError`] with details, and
//! [`DecapError::reason`] folds it into a [`DecapReason`] to index a counter array
//! ([`DecapStats`]). Nothing allocates; nothing panics on any input.
//!
//! A non-zero outer UDP checksum is not verified (RFC 7348 section 5 makes it optional for the
//! receiver); the inner frame carries its own checksums. Outer 802.1Q tags are not parsed: an
//! uplink on a VLAN should be the VLAN interface, which delivers untagged frames.

use std::net::Ipv4Addr;

use crate::template::{ETH_HDR_LEN, IPV4_HDR_LEN, MIN_INNER_LEN, UDP_HDR_LEN};
use crate::vtep::{VtepId, VtepTable};
use crate::vxlan::{Vni, VXLAN_FLAG_I, VXLAN_HDR_LEN};
use wire::{checksum, ethertype, ip_proto, EthernetFrame, Ipv4Packet, NetworkId, UdpPacket};

/// A packet accepted by decap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// The VNI of the packet.
    pub vni: Vni,
    /// The network the VNI maps to.
    pub network: NetworkId,
    /// The remote VTEP that sent it (outer IPv4 source).
    pub src_vtep: Ipv4Addr,
    /// The id of that VTEP in the table (for the MAC table).
    pub vtep: VtepId,
    /// Offset of the inner Ethernet frame in the buffer given to decap.
    pub inner_offset: usize,
    /// Length of the inner Ethernet frame.
    pub inner_len: usize,
}

/// The header a truncation was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Outer Ethernet header.
    Ethernet,
    /// Outer IPv4 header or its total length.
    Ipv4,
    /// UDP header or its length.
    Udp,
    /// VXLAN header.
    Vxlan,
    /// Inner Ethernet header.
    Inner,
}

/// Why a packet was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// Outer EtherType is not IPv4.
    #[error("outer EtherType {0:#06x} is not IPv4: only VXLAN over IPv4 is decapsulated")]
    NotIpv4(u16),
    /// EtherType IPv4 but the version field says otherwise.
    #[error("outer IP version {0} in an IPv4 frame: malformed packet")]
    BadIpVersion(u8),
    /// The outer IPv4 header has options (IHL > 5).
    #[error("outer IPv4 header of {0} bytes has options: VXLAN senders do not use them, dropped")]
    IpOptions(usize),
    /// The outer packet is a fragment.
    #[error("outer IPv4 fragment (offset {offset}, more fragments {more}): raise the underlay MTU by 50 bytes so VXLAN never fragments")]
    Fragment {
        /// Fragment offset in 8-byte units.
        offset: u16,
        /// The MF flag.
        more: bool,
    },
    /// The outer IPv4 header checksum is wrong.
    #[error("outer IPv4 header checksum is wrong: corrupted packet")]
    BadIpChecksum,
    /// Addressed to an IPv4 address other than the local VTEP.
    #[error("outer destination {0} is not the local VTEP address")]
    NotForUs(Ipv4Addr),
    /// The outer protocol is not UDP.
    #[error("outer IP protocol {0} is not UDP (17)")]
    NotUdp(u8),
    /// The UDP destination port is not the VXLAN port in use.
    #[error("UDP destination port {port} is not the VXLAN port {expected}: the peer may use Linux's default 8472 (configure the same port on both ends)")]
    WrongPort {
        /// Port received.
        port: u16,
        /// Port expected.
        expected: u16,
    },
    /// A header or length field runs past the data.
    #[error("truncated {layer:?}: need {need} bytes, have {have}")]
    Truncated {
        /// Where.
        layer: Layer,
        /// Bytes the header or length field requires.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The VXLAN I flag is clear.
    #[error("VXLAN flags {0:#04x} lack the I bit (0x08): not VXLAN, or another encapsulation on this port")]
    BadFlags(u8),
    /// The VNI is not configured.
    #[error(
        "VNI {0} is not configured on this switch: add it to the VTEP table or fix the peer's VNI"
    )]
    UnknownVni(Vni),
    /// The sender is not a configured peer of the VNI.
    #[error("{src} is not a configured remote VTEP of VNI {vni}: add it as a peer or ignore the stray sender")]
    UnknownVtep {
        /// The VNI.
        vni: Vni,
        /// The outer source address.
        src: Ipv4Addr,
    },
}

/// The reason of a [`DecapError`], suited to index a counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DecapReason {
    /// Not IPv4 (EtherType or version).
    NotIpv4,
    /// Not UDP.
    NotUdp,
    /// Wrong UDP destination port.
    WrongPort,
    /// VXLAN I flag clear.
    BadFlags,
    /// A header or length runs past the data.
    Truncated,
    /// Unknown VNI.
    UnknownVni,
    /// Sender is not a peer of the VNI.
    UnknownVtep,
    /// Outer IPv4 options.
    IpOptions,
    /// Outer IPv4 fragment.
    Fragment,
    /// Outer IPv4 header checksum wrong.
    BadIpChecksum,
    /// Not addressed to the local VTEP.
    NotForUs,
}

impl DecapReason {
    /// Number of reasons (the size of a counter array).
    pub const COUNT: usize = 11;
    /// Every reason, in index order.
    pub const ALL: [DecapReason; DecapReason::COUNT] = [
        DecapReason::NotIpv4,
        DecapReason::NotUdp,
        DecapReason::WrongPort,
        DecapReason::BadFlags,
        DecapReason::Truncated,
        DecapReason::UnknownVni,
        DecapReason::UnknownVtep,
        DecapReason::IpOptions,
        DecapReason::Fragment,
        DecapReason::BadIpChecksum,
        DecapReason::NotForUs,
    ];

    /// Index in `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecapReason::NotIpv4 => "not_ipv4",
            DecapReason::NotUdp => "not_udp",
            DecapReason::WrongPort => "wrong_port",
            DecapReason::BadFlags => "bad_flags",
            DecapReason::Truncated => "truncated",
            DecapReason::UnknownVni => "unknown_vni",
            DecapReason::UnknownVtep => "unknown_vtep",
            DecapReason::IpOptions => "ip_options",
            DecapReason::Fragment => "fragment",
            DecapReason::BadIpChecksum => "bad_ip_checksum",
            DecapReason::NotForUs => "not_for_us",
        }
    }
}

impl DecapError {
    /// The counter this error belongs to.
    #[inline]
    pub const fn reason(&self) -> DecapReason {
        match self {
            DecapError::NotIpv4(_) | DecapError::BadIpVersion(_) => DecapReason::NotIpv4,
            DecapError::IpOptions(_) => DecapReason::IpOptions,
            DecapError::Fragment { .. } => DecapReason::Fragment,
            DecapError::BadIpChecksum => DecapReason::BadIpChecksum,
            DecapError::NotForUs(_) => DecapReason::NotForUs,
            DecapError::NotUdp(_) => DecapReason::NotUdp,
            DecapError::WrongPort { .. } => DecapReason::WrongPort,
            DecapError::Truncated { .. } => DecapReason::Truncated,
            DecapError::BadFlags(_) => DecapReason::BadFlags,
            DecapError::UnknownVni(_) => DecapReason::UnknownVni,
            DecapError::UnknownVtep { .. } => DecapReason::UnknownVtep,
        }
    }
}

/// Counters of decap outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapStats {
    /// Packets decapsulated.
    pub ok: u64,
    /// Drops per [`DecapReason::index`].
    pub drops: [u64; DecapReason::COUNT],
}

impl DecapStats {
    /// Counts one outcome.
    #[inline]
    pub fn record<T>(&mut self, r: &Result<T, DecapError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(e) => self.drops[e.reason().index()] += 1,
        }
    }

    /// Drops counted for `reason`.
    #[inline]
    pub fn dropped(&self, reason: DecapReason) -> u64 {
        self.drops[reason.index()]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another set of counters (e.g. per-batch into per-port).
    pub fn merge(&mut self, o: &DecapStats) {
        self.ok += o.ok;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}

#[inline(always)]
fn truncated(layer: Layer, need: usize, have: usize) -> DecapError {
    DecapError::Truncated { layer, need, have }
}

/// Decapsulates a whole outer Ethernet frame (see the module documentation for the checks).
/// `expected_port` is the VXLAN UDP port in use (4789, or 8472 for Linux's default).
/// Offsets in the result are relative to `outer`.
pub fn decap(outer: &[u8], expected_port: u16, table: &VtepTable) -> Result<Decapped, DecapError> {
    if outer.len() < ETH_HDR_LEN {
        return Err(truncated(Layer::Ethernet, ETH_HDR_LEN, outer.len()));
    }
    // The views below are unchecked: every field is read only after the length that covers it
    // was checked here, in the order that names the first problem.
    let ethertype = EthernetFrame::new_unchecked(outer).ethertype();
    if ethertype != ethertype::IPV4 {
        return Err(DecapError::NotIpv4(ethertype));
    }
    let ip_bytes = &outer[ETH_HDR_LEN..];
    if ip_bytes.len() < IPV4_HDR_LEN {
        return Err(truncated(Layer::Ipv4, IPV4_HDR_LEN, ip_bytes.len()));
    }
    let ip = Ipv4Packet::new_unchecked(ip_bytes);
    if ip.version() != 4 {
        return Err(DecapError::BadIpVersion(ip.version()));
    }
    let ihl = ip.header_len();
    if ihl < IPV4_HDR_LEN {
        return Err(truncated(Layer::Ipv4, IPV4_HDR_LEN, ihl));
    }
    if ihl > IPV4_HDR_LEN {
        return Err(DecapError::IpOptions(ihl));
    }
    let total = usize::from(ip.total_len());
    if total < IPV4_HDR_LEN {
        return Err(truncated(Layer::Ipv4, IPV4_HDR_LEN, total));
    }
    if total > ip_bytes.len() {
        return Err(truncated(Layer::Ipv4, total, ip_bytes.len()));
    }
    // Over the fixed 20 bytes (options were refused above): a constant-length sum.
    if !checksum::verify(&ip_bytes[..IPV4_HDR_LEN]) {
        return Err(DecapError::BadIpChecksum);
    }
    if ip.is_fragment() {
        return Err(DecapError::Fragment {
            offset: ip.frag_offset() >> 3,
            more: ip.more_frags(),
        });
    }
    if let Some(local) = table.local_ip() {
        let dst = ip.dst_addr();
        if dst != local {
            return Err(DecapError::NotForUs(dst));
        }
    }
    if ip.protocol() != ip_proto::UDP {
        return Err(DecapError::NotUdp(ip.protocol()));
    }
    let src = ip.src_addr();
    let l4 = &ip_bytes[IPV4_HDR_LEN..total];
    if l4.len() < UDP_HDR_LEN {
        return Err(truncated(Layer::Udp, UDP_HDR_LEN, l4.len()));
    }
    let udp = UdpPacket::new_unchecked(l4);
    let port = udp.dst_port();
    if port != expected_port {
        return Err(DecapError::WrongPort {
            port,
            expected: expected_port,
        });
    }
    let udp_len = usize::from(udp.len());
    if udp_len < UDP_HDR_LEN || udp_len > l4.len() {
        return Err(truncated(Layer::Udp, udp_len.max(UDP_HDR_LEN), l4.len()));
    }
    let payload_offset = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN;
    let mut d = decap_vxlan(&l4[UDP_HDR_LEN..udp_len], src, table)?;
    d.inner_offset += payload_offset;
    Ok(d)
}

/// Decapsulates a UDP payload received by a socket (`recvmmsg` gives the payload and the
/// sender's address; the kernel has checked IP and UDP and the port is the socket's).
/// Offsets in the result are relative to `payload`.
#[inline]
pub fn decap_udp_payload(
    payload: &[u8],
    src: Ipv4Addr,
    table: &VtepTable,
) -> Result<Decapped, DecapError> {
    decap_vxlan(payload, src, table)
}

#[inline(always)]
fn decap_vxlan(p: &[u8], src: Ipv4Addr, table: &VtepTable) -> Result<Decapped, DecapError> {
    if p.len() < VXLAN_HDR_LEN {
        return Err(truncated(Layer::Vxlan, VXLAN_HDR_LEN, p.len()));
    }
    if p[0] & VXLAN_FLAG_I == 0 {
        return Err(DecapError::BadFlags(p[0]));
    }
    let inner_len = p.len() - VXLAN_HDR_LEN;
    if inner_len < MIN_INNER_LEN {
        return Err(truncated(Layer::Inner, MIN_INNER_LEN, inner_len));
    }
    let vni = Vni::from_u32_truncating(u32::from_be_bytes([0, p[4], p[5], p[6]]));
    match table.classify(vni, src) {
        Ok((network, vtep)) => Ok(Decapped {
            vni,
            network,
            src_vtep: src,
            vtep,
            inner_offset: VXLAN_HDR_LEN,
            inner_len,
        }),
        Err(false) => Err(DecapError::UnknownVni(vni)),
        Err(true) => Err(DecapError::UnknownVtep { vni, src }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tests::ipv4_frame;
    use crate::template::{encap_into, EncapTemplate, TemplateConfig};
    use proptest::prelude::*;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    fn table() -> VtepTable {
        let mut t = VtepTable::new();
        t.add_vni(vni(42), NetworkId(7)).unwrap();
        t.add_peer(vni(42), Ipv4Addr::new(10, 0, 0, 9)).unwrap();
        t.add_peer(vni(42), PEER).unwrap();
        t
    }

    fn inner() -> Vec<u8> {
        ipv4_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            6,
            1,
            2,
            30,
        )
    }

    fn packet_with(f: impl FnOnce(&mut TemplateConfig)) -> Vec<u8> {
        let mut c = TemplateConfig::new(
            [2, 0, 0, 0, 0, 0xa],
            [2, 0, 0, 0, 0, 0xb],
            PEER,
            LOCAL,
            vni(42),
        );
        f(&mut c);
        let t = EncapTemplate::new(&c).unwrap();
        let inner = inner();
        let mut out = vec![0u8; inner.len() + 50];
        let n = encap_into(&t, &inner, &mut out, 50001).unwrap();
        out.truncate(n);
        out
    }

    fn packet() -> Vec<u8> {
        packet_with(|_| {})
    }

    /// Recomputes the outer IPv4 checksum after a test edited the header.
    fn fix_csum(p: &mut [u8]) {
        p[24] = 0;
        p[25] = 0;
        let c = checksum::checksum(&p[14..34]);
        p[24..26].copy_from_slice(&c.to_be_bytes());
    }

    fn err(p: &[u8]) -> DecapError {
        decap(p, 4789, &table()).unwrap_err()
    }

    #[test]
    fn roundtrip() {
        let p = packet();
        let t = table();
        let d = decap(&p, 4789, &t).unwrap();
        assert_eq!(d.vni, vni(42));
        assert_eq!(d.network, NetworkId(7));
        assert_eq!(d.src_vtep, PEER);
        assert_eq!(Some(d.vtep), t.vtep_id(PEER));
        assert_eq!(d.inner_offset, 50);
        assert_eq!(
            &p[d.inner_offset..d.inner_offset + d.inner_len],
            &inner()[..]
        );
        // Ethernet padding after the IPv4 packet is not part of the inner frame.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xee; 6]);
        assert_eq!(decap(&padded, 4789, &t), Ok(d));
        // The local address check passes for packets addressed to us.
        let mut t2 = table();
        t2.set_local_ip(Some(LOCAL));
        assert_eq!(decap(&p, 4789, &t2), Ok(d));
    }

    #[test]
    fn every_error_reason() {
        let base = packet();

        let mut p = base.clone();
        p[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(err(&p), DecapError::NotIpv4(0x86dd));

        let mut p = base.clone();
        p[14] = 0x65;
        assert_eq!(err(&p), DecapError::BadIpVersion(6));
        assert_eq!(err(&p).reason(), DecapReason::NotIpv4);

        let mut p = base.clone();
        p[14] = 0x46;
        assert_eq!(err(&p), DecapError::IpOptions(24));

        let mut p = base.clone();
        p[24] ^= 0x01;
        assert_eq!(err(&p), DecapError::BadIpChecksum);

        let mut p = base.clone();
        p[20] = 0x20; // MF
        fix_csum(&mut p);
        assert_eq!(
            err(&p),
            DecapError::Fragment {
                offset: 0,
                more: true
            }
        );
        let mut p = base.clone();
        p[20] = 0x40;
        p[21] = 0x10; // DF and offset 16
        fix_csum(&mut p);
        assert_eq!(
            err(&p),
            DecapError::Fragment {
                offset: 16,
                more: false
            }
        );

        let mut t = table();
        t.set_local_ip(Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(decap(&base, 4789, &t), Err(DecapError::NotForUs(LOCAL)));

        let mut p = base.clone();
        p[23] = 6;
        fix_csum(&mut p);
        assert_eq!(err(&p), DecapError::NotUdp(6));

        let p = packet_with(|c| c.dst_port = 8472);
        assert_eq!(
            err(&p),
            DecapError::WrongPort {
                port: 8472,
                expected: 4789
            }
        );
        assert_eq!(decap(&p, 8472, &table()).map(|d| d.vni), Ok(vni(42)));

        let mut p = base.clone();
        p[42] = 0x00;
        assert_eq!(err(&p), DecapError::BadFlags(0));

        let p = packet_with(|c| c.vni = vni(43));
        assert_eq!(err(&p), DecapError::UnknownVni(vni(43)));

        let stranger = Ipv4Addr::new(10, 0, 0, 77);
        let p = packet_with(|c| c.src_ip = stranger);
        assert_eq!(
            err(&p),
            DecapError::UnknownVtep {
                vni: vni(42),
                src: stranger
            }
        );
    }

    #[test]
    fn truncations() {
        let base = packet();
        let tr = |layer| move |e: DecapError| matches!(e, DecapError::Truncated { layer: l, .. } if l == layer);

        assert!(tr(Layer::Ethernet)(err(&base[..13])));
        assert!(tr(Layer::Ipv4)(err(&base[..33])));
        // At the exact boundaries the short layer is the next one: a whole Ethernet header and
        // no IPv4, then a whole IPv4 header (total length 20) and no UDP.
        let t = |layer, need, have| DecapError::Truncated { layer, need, have };
        assert_eq!(err(&base[..14]), t(Layer::Ipv4, 20, 0));
        let mut p = base[..34].to_vec();
        p[16..18].copy_from_slice(&20u16.to_be_bytes());
        fix_csum(&mut p);
        assert_eq!(err(&p), t(Layer::Udp, 8, 0));
        // IPv4 total length beyond the data.
        assert_eq!(
            err(&base[..base.len() - 1]),
            DecapError::Truncated {
                layer: Layer::Ipv4,
                need: base.len() - 14,
                have: base.len() - 15
            }
        );
        // IHL below 5.
        let mut p = base.clone();
        p[14] = 0x44;
        assert!(tr(Layer::Ipv4)(err(&p)));
        // Total length below the header.
        let mut p = base.clone();
        p[16..18].copy_from_slice(&19u16.to_be_bytes());
        fix_csum(&mut p);
        assert!(tr(Layer::Ipv4)(err(&p)));
        // An IPv4 payload of exactly a UDP header (UDP length 8): the VXLAN header is missing.
        let mut p = base[..14 + 20 + 8].to_vec();
        p[16..18].copy_from_slice(&28u16.to_be_bytes());
        p[38..40].copy_from_slice(&8u16.to_be_bytes());
        fix_csum(&mut p);
        assert_eq!(err(&p), t(Layer::Vxlan, 8, 0));
        // IPv4 payload too short for UDP.
        let mut p = base[..14 + 20 + 4].to_vec();
        p[16..18].copy_from_slice(&24u16.to_be_bytes());
        fix_csum(&mut p);
        assert!(tr(Layer::Udp)(err(&p)));
        // UDP length beyond the IPv4 payload, and below 8.
        let mut p = base.clone();
        let l = (base.len() - 34 + 1) as u16;
        p[38..40].copy_from_slice(&l.to_be_bytes());
        assert!(tr(Layer::Udp)(err(&p)));
        p[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert!(tr(Layer::Udp)(err(&p)));
        // UDP length leaving less than a VXLAN header, then less than an inner Ethernet header.
        p[38..40].copy_from_slice(&15u16.to_be_bytes());
        assert_eq!(
            err(&p),
            DecapError::Truncated {
                layer: Layer::Vxlan,
                need: 8,
                have: 7
            }
        );
        p[38..40].copy_from_slice(&(8u16 + 8 + 13).to_be_bytes());
        assert_eq!(
            err(&p),
            DecapError::Truncated {
                layer: Layer::Inner,
                need: 14,
                have: 13
            }
        );
        assert_eq!(err(&p).reason(), DecapReason::Truncated);
    }

    #[test]
    fn udp_payload_path() {
        let t = table();
        let p = packet();
        let payload = &p[42..];
        let d = decap_udp_payload(payload, PEER, &t).unwrap();
        assert_eq!(
            (d.vni, d.network, d.inner_offset, d.inner_len),
            (vni(42), NetworkId(7), 8, inner().len())
        );
        assert_eq!(
            decap_udp_payload(payload, Ipv4Addr::new(9, 9, 9, 9), &t),
            Err(DecapError::UnknownVtep {
                vni: vni(42),
                src: Ipv4Addr::new(9, 9, 9, 9)
            })
        );
        assert_eq!(
            decap_udp_payload(&payload[..7], PEER, &t),
            Err(DecapError::Truncated {
                layer: Layer::Vxlan,
                need: 8,
                have: 7
            })
        );
        assert_eq!(
            decap_udp_payload(&payload[..21], PEER, &t),
            Err(DecapError::Truncated {
                layer: Layer::Inner,
                need: 14,
                have: 13
            })
        );
        // At the boundaries: a VXLAN header and nothing after it lacks the inner frame; a VXLAN
        // header and a bare inner Ethernet header (14 bytes) is accepted.
        assert_eq!(
            decap_udp_payload(&payload[..8], PEER, &t),
            Err(DecapError::Truncated {
                layer: Layer::Inner,
                need: 14,
                have: 0
            })
        );
        let d = decap_udp_payload(&payload[..22], PEER, &t).unwrap();
        assert_eq!((d.inner_offset, d.inner_len), (8, 14));
        let mut q = payload.to_vec();
        q[6] = 41;
        assert_eq!(
            decap_udp_payload(&q, PEER, &t),
            Err(DecapError::UnknownVni(vni(41)))
        );
        q[0] = 0x04;
        assert_eq!(
            decap_udp_payload(&q, PEER, &t),
            Err(DecapError::BadFlags(4))
        );
    }

    #[test]
    fn reasons_and_stats() {
        for (i, r) in DecapReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::HashSet<_> =
            DecapReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DecapReason::COUNT);

        let t = table();
        let good = packet();
        let mut bad = good.clone();
        bad[42] = 0;
        let mut s = DecapStats::default();
        s.record(&decap(&good, 4789, &t));
        s.record(&decap(&bad, 4789, &t));
        s.record(&decap(&bad, 4789, &t));
        s.record(&decap(&good, 1, &t));
        assert_eq!(s.ok, 1);
        assert_eq!(s.dropped(DecapReason::BadFlags), 2);
        assert_eq!(s.dropped(DecapReason::WrongPort), 1);
        assert_eq!(s.total_drops(), 3);
        let mut all = DecapStats::default();
        all.merge(&s);
        all.merge(&s);
        assert_eq!((all.ok, all.total_drops()), (2, 6));
        assert!(DecapError::WrongPort {
            port: 8472,
            expected: 4789
        }
        .to_string()
        .contains("8472"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), port in any::<u16>()) {
            let mut t = table();
            let _ = decap(&bytes, port, &t);
            let _ = decap_udp_payload(&bytes, PEER, &t);
            t.set_local_ip(Some(LOCAL));
            let _ = decap(&bytes, port, &t);
        }

        #[test]
        fn mutated_packets_never_panic_and_stay_in_bounds(
            edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            cut in 0usize..200,
        ) {
            let mut p = packet();
            for (i, b) in edits {
                if i < p.len() {
                    p[i] = b;
                }
            }
            // Keep the checksum right half of the time so the deeper checks are reached.
            if cut % 2 == 0 {
                fix_csum(&mut p);
            }
            p.truncate(cut.max(1));
            if let Ok(d) = decap(&p, 4789, &table()) {
                prop_assert!(d.inner_offset + d.inner_len <= p.len());
                prop_assert!(d.inner_len >= 14);
            }
        }
    }
}
