//! Encapsulation: a precomputed outer header and the per-packet fix-ups.
//!
//! An [`EncapTemplate`] holds the 50 outer bytes for one (source VTEP, remote VTEP, VNI):
//! Ethernet (14) + IPv4 (20, no options, DF, id 0, protocol UDP) + UDP (8, checksum 0) +
//! VXLAN (8). Everything but four fields is fixed, so per packet [`encap_in_place`] copies the
//! 50 bytes and patches the IPv4 total length, the IPv4 header checksum (from a partial sum
//! precomputed without the length: one add and a fold), the UDP source port and the UDP length.
//!
//! The UDP checksum is sent as zero, which RFC 7348 section 5 allows for IPv4 (and which
//! Linux's vxlan device accepts). An inner frame with a partial checksum (virtio-net
//! `NEEDS_CSUM`) must be finished by the caller before encapsulation, since the receiving VTEP
//! hands the inner frame to a stack that trusts it.

use std::net::Ipv4Addr;

use crate::flow::PortRange;
use crate::vxlan::{header_bytes, Vni, IANA_VXLAN_PORT, VXLAN_HDR_LEN};
use wire::checksum;

/// Outer Ethernet header length.
pub const ETH_HDR_LEN: usize = 14;
/// Outer IPv4 header length (no options).
pub const IPV4_HDR_LEN: usize = 20;
/// UDP header length.
pub const UDP_HDR_LEN: usize = 8;
/// Bytes written in front of the inner frame: Ethernet + IPv4 + UDP + VXLAN = 50.
pub const OUTER_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN + VXLAN_HDR_LEN;
/// Bytes the IPv4 total length counts beyond the inner frame: IPv4 + UDP + VXLAN = 36.
const IP_OVERHEAD: usize = IPV4_HDR_LEN + UDP_HDR_LEN + VXLAN_HDR_LEN;
/// Largest inner frame whose outer IPv4 total length still fits in 16 bits.
pub const MAX_INNER_LEN: usize = u16::MAX as usize - IP_OVERHEAD;
/// Smallest inner frame accepted: one Ethernet header.
pub const MIN_INNER_LEN: usize = ETH_HDR_LEN;

// Offsets of the per-packet fields inside the 50 outer bytes.
const OFF_IP: usize = ETH_HDR_LEN;
const OFF_IP_TOTLEN: usize = OFF_IP + 2;
const OFF_IP_CSUM: usize = OFF_IP + 10;
const OFF_UDP: usize = OFF_IP + IPV4_HDR_LEN;
const OFF_UDP_SPORT: usize = OFF_UDP;
const OFF_UDP_LEN: usize = OFF_UDP + 4;
const OFF_VXLAN: usize = OFF_UDP + UDP_HDR_LEN;

/// Everything that defines the outer header of one tunnel. [`TemplateConfig::new`] fills in the
/// defaults (port 4789, TTL 64, TOS 0, DF set, source ports 49152..=65535, seed 0); the fields
/// are public to change them before [`EncapTemplate::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateConfig {
    /// MAC of the local interface that sends the outer frame.
    pub src_mac: [u8; 6],
    /// MAC of the next hop toward the remote VTEP (the VTEP itself, or a router).
    pub dst_mac: [u8; 6],
    /// Local VTEP address.
    pub src_ip: Ipv4Addr,
    /// Remote VTEP address.
    pub dst_ip: Ipv4Addr,
    /// VXLAN network identifier carried in the header.
    pub vni: Vni,
    /// UDP destination port: 4789 (IANA) by default; 8472 to talk to a Linux vxlan device
    /// created without `dstport 4789`.
    pub dst_port: u16,
    /// Outer IPv4 TTL.
    pub ttl: u8,
    /// Outer IPv4 TOS/DSCP byte.
    pub tos: u8,
    /// Set the outer Don't Fragment bit (recommended by RFC 7348 section 4.3).
    pub dont_fragment: bool,
    /// Range the per-flow UDP source port is mapped into.
    pub src_ports: PortRange,
    /// Seed of the inner-flow hash.
    pub hash_seed: u64,
}

impl TemplateConfig {
    /// A configuration with the defaults described on the type.
    pub fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        vni: Vni,
    ) -> TemplateConfig {
        TemplateConfig {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            vni,
            dst_port: IANA_VXLAN_PORT,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
            src_ports: PortRange::default(),
            hash_seed: 0,
        }
    }
}

/// A configuration that cannot produce valid packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The local VTEP address is not a unicast host address.
    #[error("local VTEP address {0} is not a unicast address: give the IPv4 address of the interface that sends VXLAN")]
    BadSourceIp(Ipv4Addr),
    /// The remote VTEP address is unspecified or the limited broadcast address.
    #[error("remote VTEP address {0} cannot be a destination: give the peer's unicast (or multicast group) IPv4 address")]
    BadDestinationIp(Ipv4Addr),
    /// The local MAC is a group address.
    #[error("source MAC {0:02x?} is a multicast address: give the MAC of the sending interface")]
    BadSourceMac([u8; 6]),
    /// UDP destination port 0.
    #[error("UDP destination port 0 is invalid: use 4789 (IANA) or 8472 (Linux's vxlan default)")]
    BadPort,
    /// TTL 0 would be dropped by the first hop.
    #[error("outer TTL 0 is invalid: use 64 or another non-zero value")]
    BadTtl,
}

/// A precomputed outer header; see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncapTemplate {
    hdr: [u8; OUTER_LEN],
    /// One's complement sum of the IPv4 header with total length and checksum zero, folded.
    ip_partial: u16,
    src_ports: PortRange,
    hash_seed: u64,
}

impl std::fmt::Debug for EncapTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncapTemplate")
            .field("src_ip", &self.src_ip())
            .field("dst_ip", &self.dst_ip())
            .field("dst_port", &self.dst_port())
            .field("vni", &self.vni())
            .finish_non_exhaustive()
    }
}

impl EncapTemplate {
    /// Builds the template, validating the configuration.
    pub fn new(cfg: &TemplateConfig) -> Result<EncapTemplate, TemplateError> {
        let s = cfg.src_ip;
        if s.is_unspecified() || s.is_multicast() || s.is_broadcast() {
            return Err(TemplateError::BadSourceIp(s));
        }
        if cfg.dst_ip.is_unspecified() || cfg.dst_ip.is_broadcast() {
            return Err(TemplateError::BadDestinationIp(cfg.dst_ip));
        }
        if cfg.src_mac[0] & 1 != 0 {
            return Err(TemplateError::BadSourceMac(cfg.src_mac));
        }
        if cfg.dst_port == 0 {
            return Err(TemplateError::BadPort);
        }
        if cfg.ttl == 0 {
            return Err(TemplateError::BadTtl);
        }
        let mut hdr = [0u8; OUTER_LEN];
        hdr[0..6].copy_from_slice(&cfg.dst_mac);
        hdr[6..12].copy_from_slice(&cfg.src_mac);
        hdr[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut hdr[OFF_IP..OFF_UDP];
        ip[0] = 0x45;
        ip[1] = cfg.tos;
        // total length [2..4] per packet; identification [4..6] = 0
        if cfg.dont_fragment {
            ip[6] = 0x40;
        }
        ip[8] = cfg.ttl;
        ip[9] = 17;
        // checksum [10..12] per packet
        ip[12..16].copy_from_slice(&cfg.src_ip.octets());
        ip[16..20].copy_from_slice(&cfg.dst_ip.octets());
        let udp = &mut hdr[OFF_UDP..OFF_VXLAN];
        // source port [0..2] and length [4..6] per packet; checksum [6..8] = 0
        udp[2..4].copy_from_slice(&cfg.dst_port.to_be_bytes());
        hdr[OFF_VXLAN..].copy_from_slice(&header_bytes(cfg.vni));
        let mut t = EncapTemplate {
            hdr,
            ip_partial: 0,
            src_ports: cfg.src_ports,
            hash_seed: cfg.hash_seed,
        };
        t.recompute();
        Ok(t)
    }

    fn recompute(&mut self) {
        self.ip_partial = checksum::sum(&self.hdr[OFF_IP..OFF_UDP]) as u16;
    }

    /// Points the template at another remote VTEP (and next-hop MAC). Costs one 20-byte sum.
    pub fn set_destination(
        &mut self,
        dst_ip: Ipv4Addr,
        dst_mac: [u8; 6],
    ) -> Result<(), TemplateError> {
        if dst_ip.is_unspecified() || dst_ip.is_broadcast() {
            return Err(TemplateError::BadDestinationIp(dst_ip));
        }
        self.hdr[0..6].copy_from_slice(&dst_mac);
        self.hdr[OFF_IP + 16..OFF_UDP].copy_from_slice(&dst_ip.octets());
        self.recompute();
        Ok(())
    }

    /// Changes the VNI (the IPv4 checksum does not cover it: nothing else to redo).
    pub fn set_vni(&mut self, vni: Vni) {
        self.hdr[OFF_VXLAN..].copy_from_slice(&header_bytes(vni));
    }

    /// The VNI written into each packet.
    pub fn vni(&self) -> Vni {
        Vni::from_u32_truncating(u32::from_be_bytes([
            0,
            self.hdr[OFF_VXLAN + 4],
            self.hdr[OFF_VXLAN + 5],
            self.hdr[OFF_VXLAN + 6],
        ]))
    }

    /// The local VTEP address.
    pub fn src_ip(&self) -> Ipv4Addr {
        let b = &self.hdr[OFF_IP + 12..OFF_IP + 16];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The remote VTEP address.
    pub fn dst_ip(&self) -> Ipv4Addr {
        let b = &self.hdr[OFF_IP + 16..OFF_UDP];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The UDP destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[OFF_UDP + 2], self.hdr[OFF_UDP + 3]])
    }

    /// The source port range used by [`EncapTemplate::src_port_for`].
    pub fn src_ports(&self) -> PortRange {
        self.src_ports
    }

    /// The 50 outer bytes with the per-packet fields (lengths, IPv4 checksum, source port) zero.
    pub fn outer_header(&self) -> &[u8; OUTER_LEN] {
        &self.hdr
    }

    /// The UDP source port for an inner frame: a hash of its flow mapped into the configured
    /// range (see [`crate::flow`]).
    #[inline]
    pub fn src_port_for(&self, inner: &[u8]) -> u16 {
        self.src_ports.src_port(inner, self.hash_seed)
    }

    /// The outer header for an inner frame of `inner_len` bytes sent from UDP port
    /// `src_port`, to be written (or handed to the kernel) in front of the frame. For an inner
    /// GSO frame the lengths are those of the whole frame, as a tunnel GSO packet carries them.
    #[inline]
    pub fn header(&self, inner_len: usize, src_port: u16) -> Result<[u8; OUTER_LEN], EncapError> {
        check_len(inner_len)?;
        let mut out = [0u8; OUTER_LEN];
        self.write(&mut out, inner_len, src_port);
        Ok(out)
    }

    /// Writes the outer header for an inner frame of `inner_len` bytes. `inner_len` must
    /// already be checked against [`MAX_INNER_LEN`].
    #[inline(always)]
    fn write(&self, out: &mut [u8; OUTER_LEN], inner_len: usize, src_port: u16) {
        *out = self.hdr;
        let ip_len = (inner_len + IP_OVERHEAD) as u16;
        let udp_len = ip_len - IPV4_HDR_LEN as u16;
        let csum = !checksum::fold(u64::from(self.ip_partial) + u64::from(ip_len));
        out[OFF_IP_TOTLEN..OFF_IP_TOTLEN + 2].copy_from_slice(&ip_len.to_be_bytes());
        out[OFF_IP_CSUM..OFF_IP_CSUM + 2].copy_from_slice(&csum.to_be_bytes());
        out[OFF_UDP_SPORT..OFF_UDP_SPORT + 2].copy_from_slice(&src_port.to_be_bytes());
        out[OFF_UDP_LEN..OFF_UDP_LEN + 2].copy_from_slice(&udp_len.to_be_bytes());
    }
}

/// Why a frame could not be encapsulated. Every variant is a caller bug or an oversized frame;
/// nothing is written when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// Fewer free bytes in front of the frame than the header needs.
    #[error("only {have} bytes of headroom before the inner frame, VXLAN needs {need}: receive frames at a larger offset (the switch keeps 128)")]
    NoHeadroom {
        /// Bytes available before the frame.
        have: usize,
        /// Bytes required.
        need: usize,
    },
    /// `frame_offset + frame_len` runs past the end of the buffer.
    #[error("inner frame {offset}+{len} runs past the end of the {buf_len}-byte buffer")]
    OutOfBounds {
        /// Offset given.
        offset: usize,
        /// Length given.
        len: usize,
        /// Buffer length.
        buf_len: usize,
    },
    /// The output buffer of [`encap_into`] is too small.
    #[error("output buffer of {have} bytes cannot hold the {need}-byte encapsulated packet")]
    OutputTooSmall {
        /// Output buffer length.
        have: usize,
        /// Bytes required.
        need: usize,
    },
    /// Shorter than an Ethernet header.
    #[error("inner frame of {0} bytes is shorter than an Ethernet header (14)")]
    InnerTooShort(usize),
    /// The outer IPv4 total length would exceed 65535 (a GSO frame: segment it first).
    #[error("inner frame of {0} bytes is too large for one outer IPv4 packet (max 65499): segment GSO frames before encapsulation")]
    InnerTooLarge(usize),
}

#[inline(always)]
fn in_bounds(buf_len: usize, offset: usize, len: usize) -> bool {
    matches!(offset.checked_add(len), Some(end) if end <= buf_len)
}

/// Where `hdr_len` bytes of headers written just before the frame at
/// `buf[frame_offset..frame_offset + frame_len]` start, or why the frame or the headroom does
/// not fit in the `buf_len` bytes.
#[inline(always)]
fn header_start(
    buf_len: usize,
    frame_offset: usize,
    frame_len: usize,
    hdr_len: usize,
) -> Result<usize, EncapError> {
    if !in_bounds(buf_len, frame_offset, frame_len) {
        return Err(EncapError::OutOfBounds {
            offset: frame_offset,
            len: frame_len,
            buf_len,
        });
    }
    frame_offset
        .checked_sub(hdr_len)
        .ok_or(EncapError::NoHeadroom {
            have: frame_offset,
            need: hdr_len,
        })
}

#[inline(always)]
fn check_len(len: usize) -> Result<(), EncapError> {
    if len < MIN_INNER_LEN {
        return Err(EncapError::InnerTooShort(len));
    }
    if len > MAX_INNER_LEN {
        return Err(EncapError::InnerTooLarge(len));
    }
    Ok(())
}

/// Encapsulates in place: writes the 50 outer bytes into the headroom just before the inner
/// frame at `buf[frame_offset..frame_offset + frame_len]` and returns where the outer packet
/// starts (`frame_offset - 50`); it is `frame_len + 50` bytes long.
#[inline]
pub fn encap_in_place(
    template: &EncapTemplate,
    buf: &mut [u8],
    frame_offset: usize,
    frame_len: usize,
    src_port: u16,
) -> Result<usize, EncapError> {
    let start = header_start(buf.len(), frame_offset, frame_len, OUTER_LEN)?;
    check_len(frame_len)?;
    if let Some((out, _)) = buf[start..].split_first_chunk_mut::<OUTER_LEN>() {
        template.write(out, frame_len, src_port);
    }
    Ok(start)
}

/// Encapsulates by copying: writes the outer header and then `inner` into `out` and returns the
/// number of bytes written (`inner.len() + 50`).
#[inline]
pub fn encap_into(
    template: &EncapTemplate,
    inner: &[u8],
    out: &mut [u8],
    src_port: u16,
) -> Result<usize, EncapError> {
    check_len(inner.len())?;
    let need = OUTER_LEN + inner.len();
    if out.len() < need {
        return Err(EncapError::OutputTooSmall {
            have: out.len(),
            need,
        });
    }
    if let Some((hdr, rest)) = out.split_first_chunk_mut::<OUTER_LEN>() {
        template.write(hdr, inner.len(), src_port);
        rest[..inner.len()].copy_from_slice(inner);
    }
    Ok(need)
}

/// For a UDP socket uplink (the kernel writes Ethernet, IPv4 and UDP): writes only the 8-byte
/// VXLAN header before the frame and returns where the UDP payload starts (`frame_offset - 8`).
#[inline]
pub fn encap_udp_payload_in_place(
    vni: Vni,
    buf: &mut [u8],
    frame_offset: usize,
    frame_len: usize,
) -> Result<usize, EncapError> {
    let start = header_start(buf.len(), frame_offset, frame_len, VXLAN_HDR_LEN)?;
    if frame_len < MIN_INNER_LEN {
        return Err(EncapError::InnerTooShort(frame_len));
    }
    buf[start..frame_offset].copy_from_slice(&header_bytes(vni));
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tests::ipv4_frame;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn cfg() -> TemplateConfig {
        TemplateConfig::new(
            SRC_MAC,
            DST_MAC,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            Vni::new(42).unwrap(),
        )
    }

    fn inner(payload: usize) -> Vec<u8> {
        ipv4_frame(
            [0x02, 0xaa, 0, 0, 0, 1],
            [0x02, 0xbb, 0, 0, 0, 2],
            [172, 17, 0, 2],
            [172, 17, 0, 3],
            17,
            1234,
            5678,
            payload,
        )
    }

    /// Parses an outer packet with etherparse and checks every header field against `t`.
    fn check_with_etherparse(t: &EncapTemplate, pkt: &[u8], inner: &[u8], src_port: u16) {
        let p = SlicedPacket::from_ethernet(pkt).expect("etherparse parses the outer packet");
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("outer is not IPv4");
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        assert_eq!(usize::from(h.total_len), pkt.len() - ETH_HDR_LEN);
        assert!(h.dont_fragment);
        assert_eq!(h.identification, 0);
        assert_eq!(h.time_to_live, 64);
        assert_eq!(h.source, t.src_ip().octets());
        assert_eq!(h.destination, t.dst_ip().octets());
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            panic!("outer is not UDP");
        };
        assert_eq!(
            usize::from(udp.length()),
            UDP_HDR_LEN + VXLAN_HDR_LEN + inner.len()
        );
        assert_eq!(udp.source_port(), src_port);
        assert_eq!(udp.destination_port(), t.dst_port());
        assert_eq!(udp.checksum(), 0);
        assert_eq!(&udp.payload()[..VXLAN_HDR_LEN], &header_bytes(t.vni()));
        assert_eq!(&udp.payload()[VXLAN_HDR_LEN..], inner);
    }

    #[test]
    fn known_packet_byte_for_byte() {
        let t = EncapTemplate::new(&cfg()).unwrap();
        let f = inner(22);
        assert_eq!(f.len(), 64);
        let mut buf = vec![0u8; 128 + 64 + 16];
        buf[128..192].copy_from_slice(&f);
        let start = encap_in_place(&t, &mut buf, 128, 64, 50000).unwrap();
        assert_eq!(start, 78);
        #[rustfmt::skip]
        let expected: [u8; 50] = [
            // Ethernet: dst, src, IPv4
            0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
            // IPv4: 45 00 len=100 id=0 DF ttl=64 udp csum=0x2687 10.0.0.1 -> 10.0.0.2
            0x45, 0x00, 0x00, 0x64, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0x87,
            10, 0, 0, 1, 10, 0, 0, 2,
            // UDP: 50000 -> 4789, len 80, csum 0
            0xc3, 0x50, 0x12, 0xb5, 0x00, 0x50, 0x00, 0x00,
            // VXLAN: I flag, VNI 42
            0x08, 0, 0, 0, 0, 0, 42, 0,
        ];
        assert_eq!(&buf[78..128], &expected[..]);
        assert_eq!(&buf[128..192], &f[..], "inner frame untouched");
        assert!(
            buf[..78].iter().all(|&b| b == 0),
            "nothing written before the header"
        );
        check_with_etherparse(&t, &buf[78..192], &f, 50000);
    }

    #[test]
    fn lengths_and_checksums_for_many_sizes() {
        let t = EncapTemplate::new(&cfg()).unwrap();
        for payload in [0usize, 22, 100, 1458, 8958, MAX_INNER_LEN - 42] {
            let f = inner(payload);
            let port = t.src_port_for(&f);
            let mut out = vec![0u8; f.len() + OUTER_LEN];
            assert_eq!(encap_into(&t, &f, &mut out, port), Ok(f.len() + OUTER_LEN));
            check_with_etherparse(&t, &out, &f, port);
            // In place gives the same bytes.
            let mut buf = vec![0u8; 128 + f.len()];
            buf[128..].copy_from_slice(&f);
            let s = encap_in_place(&t, &mut buf, 128, f.len(), port).unwrap();
            assert_eq!(&buf[s..], &out[..]);
        }
    }

    #[test]
    fn retarget_and_options() {
        let mut c = cfg();
        c.dst_port = crate::vxlan::LINUX_VXLAN_PORT;
        c.ttl = 7;
        c.tos = 0xb8;
        c.dont_fragment = false;
        let mut t = EncapTemplate::new(&c).unwrap();
        t.set_destination(Ipv4Addr::new(192, 0, 2, 99), [0x02, 9, 9, 9, 9, 9])
            .unwrap();
        t.set_vni(Vni::new(0xabcdef).unwrap());
        assert_eq!(t.dst_ip(), Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(t.vni().get(), 0xabcdef);
        assert_eq!(t.dst_port(), 8472);
        let f = inner(30);
        let mut out = vec![0u8; 200];
        let n = encap_into(&t, &f, &mut out, 60000).unwrap();
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.time_to_live, 7);
        assert!(!h.dont_fragment);
        assert_eq!(h.destination, [192, 0, 2, 99]);
        assert_eq!(&out[..6], &[0x02, 9, 9, 9, 9, 9]);
        assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(
            t.set_destination(Ipv4Addr::BROADCAST, DST_MAC),
            Err(TemplateError::BadDestinationIp(Ipv4Addr::BROADCAST))
        );
        assert!(format!("{t:?}").contains("192.0.2.99"));
        assert_eq!(
            t.outer_header()[OFF_IP_CSUM],
            0,
            "template keeps per-packet fields zero"
        );
    }

    #[test]
    fn config_errors() {
        let mut c = cfg();
        c.src_ip = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            EncapTemplate::new(&c),
            Err(TemplateError::BadSourceIp(c.src_ip))
        );
        let mut c = cfg();
        c.dst_ip = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            EncapTemplate::new(&c),
            Err(TemplateError::BadDestinationIp(c.dst_ip))
        );
        let mut c = cfg();
        c.src_mac = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            EncapTemplate::new(&c),
            Err(TemplateError::BadSourceMac(c.src_mac))
        );
        let mut c = cfg();
        c.dst_port = 0;
        assert_eq!(EncapTemplate::new(&c), Err(TemplateError::BadPort));
        assert!(TemplateError::BadPort.to_string().contains("4789"));
        let mut c = cfg();
        c.ttl = 0;
        assert_eq!(EncapTemplate::new(&c), Err(TemplateError::BadTtl));
    }

    #[test]
    fn encap_errors_write_nothing() {
        let t = EncapTemplate::new(&cfg()).unwrap();
        let mut buf = vec![0u8; 200];
        assert_eq!(
            encap_in_place(&t, &mut buf, 49, 64, 1),
            Err(EncapError::NoHeadroom { have: 49, need: 50 })
        );
        assert_eq!(
            encap_in_place(&t, &mut buf, 128, 100, 1),
            Err(EncapError::OutOfBounds {
                offset: 128,
                len: 100,
                buf_len: 200
            })
        );
        assert_eq!(
            encap_in_place(&t, &mut buf, usize::MAX, 2, 1),
            Err(EncapError::OutOfBounds {
                offset: usize::MAX,
                len: 2,
                buf_len: 200
            })
        );
        assert_eq!(
            encap_in_place(&t, &mut buf, 128, 13, 1),
            Err(EncapError::InnerTooShort(13))
        );
        assert!(buf.iter().all(|&b| b == 0));
        let mut big = vec![0u8; 128 + MAX_INNER_LEN + 1];
        assert_eq!(
            encap_in_place(&t, &mut big, 128, MAX_INNER_LEN + 1, 1),
            Err(EncapError::InnerTooLarge(MAX_INNER_LEN + 1))
        );
        assert_eq!(
            encap_into(&t, &[0u8; 64], &mut [0u8; 113], 1),
            Err(EncapError::OutputTooSmall {
                have: 113,
                need: 114
            })
        );
        assert!(EncapError::NoHeadroom { have: 0, need: 50 }
            .to_string()
            .contains("headroom"));
    }

    #[test]
    fn udp_payload_encap() {
        let vni = Vni::new(7).unwrap();
        let mut buf = [0u8; 40];
        assert_eq!(encap_udp_payload_in_place(vni, &mut buf, 8, 20), Ok(0));
        assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
        assert_eq!(
            encap_udp_payload_in_place(vni, &mut buf, 7, 20),
            Err(EncapError::NoHeadroom { have: 7, need: 8 })
        );
        assert_eq!(
            encap_udp_payload_in_place(vni, &mut buf, 8, 33),
            Err(EncapError::OutOfBounds {
                offset: 8,
                len: 33,
                buf_len: 40
            })
        );
        assert_eq!(
            encap_udp_payload_in_place(vni, &mut buf, 8, 10),
            Err(EncapError::InnerTooShort(10))
        );
        // A bare Ethernet header (14 bytes) is the shortest inner frame accepted.
        assert_eq!(encap_udp_payload_in_place(vni, &mut buf, 8, 14), Ok(0));
        assert_eq!(
            encap_udp_payload_in_place(vni, &mut buf, 8, 13),
            Err(EncapError::InnerTooShort(13))
        );
    }

    #[test]
    fn header_and_accessors_match_the_written_packet() {
        let mut c = cfg();
        c.src_ports = PortRange::new(40000, 40009).unwrap();
        let t = EncapTemplate::new(&c).unwrap();
        assert_eq!(t.src_ports(), PortRange::new(40000, 40009).unwrap());
        let f = inner(22);
        let mut out = vec![0u8; f.len() + OUTER_LEN];
        encap_into(&t, &f, &mut out, 40005).unwrap();
        // header() gives the bytes encap_into writes in front of the frame.
        assert_eq!(t.header(f.len(), 40005).unwrap()[..], out[..OUTER_LEN]);
        assert_eq!(
            t.header(13, 40005),
            Err(EncapError::InnerTooShort(13)),
            "header() checks the length"
        );
        // outer_header() is the same with the per-packet fields (IPv4 total length and
        // checksum, UDP source port and length) zero.
        let mut fixed = out[..OUTER_LEN].to_vec();
        for at in [16, 17, 24, 25, 34, 35, 38, 39] {
            fixed[at] = 0;
        }
        assert_eq!(t.outer_header()[..], fixed[..]);
        // A bare Ethernet header is the shortest inner frame.
        let mut out = [0u8; OUTER_LEN + 14];
        assert_eq!(
            encap_into(&t, &f[..14], &mut out, 40000),
            Ok(OUTER_LEN + 14)
        );
        assert_eq!(
            encap_into(&t, &f[..13], &mut out, 40000),
            Err(EncapError::InnerTooShort(13))
        );
    }
}
