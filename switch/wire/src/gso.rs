//! Software segmentation of GSO super-frames (TCP/IPv4 and UDP_L4/IPv4), for paths that cannot
//! hand a `virtio_net_hdr` on: the VXLAN tunnel encapsulates each segment separately.
//!
//! [`segment`] writes the segments of one frame into an output buffer at a fixed stride, each
//! preceded by `prefix` free bytes for the caller's header (the 8-byte VXLAN header), so the
//! result can leave as one UDP GSO send (`UDP_SEGMENT`) or as one datagram per segment. Each
//! segment gets its own IPv4 total length, identification (+1 per segment) and header
//! checksum, TCP sequence number (FIN and PSH only on the last, CWR only on the first) or UDP
//! length, and a complete L4 checksum. Frames that are not GSO but carry a partial checksum
//! (`NEEDS_CSUM`) come out as one segment with the checksum finished. Nothing allocates.

use super::checksum::{finish_partial_checksum, fold, pseudo_header_v4, sum};
use super::WireError;
use crate::vnet::{VnetHdr, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP_L4};
use std::net::Ipv4Addr;

/// Where the segments of one frame were written by [`segment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Number of segments.
    pub count: usize,
    /// Bytes from one segment's prefix to the next (prefix + full segment length).
    pub stride: usize,
    /// Length of the last segment, prefix included (`<= stride`).
    pub last: usize,
}

impl Segments {
    /// Total bytes written (prefixes included).
    #[inline]
    pub fn total(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            (self.count - 1) * self.stride + self.last
        }
    }

    /// The layout of a datagram of `len` bytes that the kernel coalesced from segments of
    /// `size` bytes (the `UDP_GRO` control message): `count` segments of `size` bytes, the
    /// last one 1 to `size` bytes long. `None` when it is a single segment (`size` 0, or
    /// `len <= size`). Both numbers come from outside (the length from the wire, the size
    /// from a control message), so nothing here assumes anything about them.
    pub fn of_gro(len: usize, size: usize) -> Option<Segments> {
        if size == 0 || len <= size {
            return None;
        }
        let count = len.div_ceil(size);
        Some(Segments {
            count,
            stride: size,
            last: len - (count - 1) * size,
        })
    }

    /// The bytes of segment `k` (its prefix included), `None` past the last segment.
    #[inline]
    pub fn range(&self, k: usize) -> Option<std::ops::Range<usize>> {
        if k >= self.count {
            return None;
        }
        let start = k.checked_mul(self.stride)?;
        let len = if k + 1 == self.count {
            self.last
        } else {
            self.stride
        };
        Some(start..start.checked_add(len)?)
    }

    /// The byte ranges of all segments, in order.
    pub fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.count).map_while(|k| self.range(k))
    }
}

fn malformed(why: &'static str) -> WireError {
    WireError::malformed("GSO frame", why)
}

/// Header offsets of an Ethernet/IPv4 frame: (L3 offset, L4 offset, L4 protocol).
fn parse_l3(frame: &[u8]) -> Result<(usize, usize, u8), WireError> {
    if frame.len() < 14 {
        return Err(WireError::truncated("Ethernet header", 14, frame.len()));
    }
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x8100 {
        if frame.len() < 18 {
            return Err(WireError::truncated("802.1Q header", 18, frame.len()));
        }
        et = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if et != 0x0800 {
        return Err(WireError::unsupported(
            "GSO frame",
            "only IPv4 GSO frames are segmented",
        ));
    }
    if frame.len() < l3 + 20 {
        return Err(WireError::truncated("IPv4 header", l3 + 20, frame.len()));
    }
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    if frame[l3] >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
        return Err(malformed("bad IPv4 header"));
    }
    Ok((l3, l3 + ihl, frame[l3 + 9]))
}

/// Segments `frame` (described by `vnet`) into `out`; see the module documentation. A frame
/// that is neither GSO nor `NEEDS_CSUM` is copied as one segment.
///
/// Errors, leaving `out` in an unspecified state, when the frame is malformed, of a GSO type
/// other than TCPv4 or UDP_L4, or `out` is too small.
pub fn segment(
    frame: &[u8],
    vnet: &VnetHdr,
    prefix: usize,
    out: &mut [u8],
) -> Result<Segments, WireError> {
    let gso = vnet.gso_type & !VNET_GSO_ECN;
    if gso == VNET_GSO_NONE {
        let need = prefix + frame.len();
        if out.len() < need {
            return Err(WireError::truncated("segment buffer", need, out.len()));
        }
        let dst = &mut out[prefix..need];
        dst.copy_from_slice(frame);
        if vnet.needs_csum() {
            // The L4 segment must end where the IP packet does (no Ethernet padding).
            let end = ip_end(dst).unwrap_or(dst.len());
            finish_partial_checksum(
                &mut dst[..end],
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            )?;
        }
        return Ok(Segments {
            count: 1,
            stride: need,
            last: need,
        });
    }
    let (l3, l4, proto) = parse_l3(frame)?;
    let hdr = match (gso, proto) {
        (VNET_GSO_TCPV4, 6) => {
            if frame.len() < l4 + 20 {
                return Err(WireError::truncated("TCP header", l4 + 20, frame.len()));
            }
            let thl = usize::from(frame[l4 + 12] >> 4) * 4;
            if thl < 20 || frame.len() < l4 + thl {
                return Err(malformed("bad TCP header length"));
            }
            l4 + thl
        }
        (VNET_GSO_UDP_L4, 17) => l4 + 8,
        _ => {
            return Err(WireError::unsupported(
                "GSO frame",
                "GSO type other than TCPv4 and UDP_L4",
            ))
        }
    };
    let mss = usize::from(vnet.gso_size);
    if mss == 0 {
        return Err(malformed("gso_size is 0"));
    }
    let end = ip_end(frame).unwrap_or(frame.len()).min(frame.len());
    if end < hdr {
        return Err(malformed("IPv4 total length shorter than the headers"));
    }
    let payload = &frame[hdr..end];
    let count = payload.len().div_ceil(mss).max(1);
    let stride = prefix + hdr + mss;
    let last_payload = payload.len() - (count - 1) * mss;
    let segs = Segments {
        count,
        stride,
        last: prefix + hdr + last_payload,
    };
    if out.len() < segs.total() {
        return Err(WireError::truncated(
            "segment buffer",
            segs.total(),
            out.len(),
        ));
    }
    let src = Ipv4Addr::new(
        frame[l3 + 12],
        frame[l3 + 13],
        frame[l3 + 14],
        frame[l3 + 15],
    );
    let dst = Ipv4Addr::new(
        frame[l3 + 16],
        frame[l3 + 17],
        frame[l3 + 18],
        frame[l3 + 19],
    );
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let seq0 = if proto == 6 {
        u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]])
    } else {
        0
    };
    for k in 0..count {
        let p = &payload[k * mss..(k * mss + mss).min(payload.len())];
        let base = k * stride + prefix;
        let seg = &mut out[base..base + hdr + p.len()];
        seg[..hdr].copy_from_slice(&frame[..hdr]);
        seg[hdr..].copy_from_slice(p);
        // IPv4: total length, identification, header checksum.
        let ip_len = (hdr - l3 + p.len()) as u16;
        seg[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
        seg[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
        seg[l3 + 10] = 0;
        seg[l3 + 11] = 0;
        let c = !fold(u64::from(sum(&seg[l3..l4])));
        seg[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let l4_len = (seg.len() - l4) as u16;
        let csum_at = if proto == 6 {
            let seq = seq0.wrapping_add((k * mss) as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = seg[l4 + 13];
            if k + 1 < count {
                flags &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            if k > 0 {
                flags &= !0x80; // CWR only on the first
            }
            seg[l4 + 13] = flags;
            l4 + 16
        } else {
            seg[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
            l4 + 6
        };
        seg[csum_at] = 0;
        seg[csum_at + 1] = 0;
        let ph = pseudo_header_v4(src, dst, proto, l4_len);
        let mut c = !fold(u64::from(ph) + u64::from(sum(&seg[l4..])));
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    Ok(segs)
}

/// Receive-side coalescing (GRO) of TCP/IPv4 segments laid out like [`segment`]'s output:
/// the segments `segs` describes in `buf`, each behind `prefix` bytes. When they are
/// consecutive segments of one TCP flow — same addresses, ports, header length and options,
/// no IPv4 options, sequence numbers that follow each other, only ACK (and PSH on the last)
/// set, every segment but the last of the same size, each with a valid TCP checksum — they
/// are rewritten in place into one GSO frame at `buf[prefix..prefix + len]` (the first
/// segment's headers, all payloads) and `(len, vnet)` is returned: `vnet` describes the frame
/// as a TCPv4 GSO frame with a partial checksum, as a local TCP stack would hand it over.
/// Otherwise (including any layout that does not fit `buf`, or a segment too short for its
/// headers) `None`, and `buf` is untouched.
pub fn coalesce_tcp4(buf: &mut [u8], segs: Segments, prefix: usize) -> Option<(usize, VnetHdr)> {
    if segs.count < 2 || segs.last > segs.stride || segs.total() > buf.len() {
        return None;
    }
    // Every segment's frame (behind its prefix), each at least Ethernet + IPv4 + TCP long.
    let seg = |k: usize| -> Option<&[u8]> {
        let r = segs.range(k)?;
        buf.get(r.start.checked_add(prefix)?..r.end)
            .filter(|f| f.len() >= 54)
    };
    let f0 = seg(0)?;
    if f0[12..14] != [0x08, 0x00] || f0[14] != 0x45 || f0[23] != 6 {
        return None;
    }
    let thl = usize::from(f0[46] >> 4) * 4;
    let hdr = 34 + thl;
    if thl < 20 || f0.len() <= hdr {
        return None;
    }
    let mss = f0.len() - hdr;
    let src = Ipv4Addr::new(f0[26], f0[27], f0[28], f0[29]);
    let dst = Ipv4Addr::new(f0[30], f0[31], f0[32], f0[33]);
    let mut seq = u32::from_be_bytes([f0[38], f0[39], f0[40], f0[41]]);
    let mut total = 0usize;
    let mut flags_or = 0u8;
    let count = segs.count;
    for k in 0..count {
        let f = seg(k)?;
        if f.len() <= hdr {
            return None;
        }
        let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
        if ip_len + 14 != f.len()
            // Same Ethernet header, IPv4 version/IHL/TOS, DF, TTL, protocol, addresses.
            || f[..16] != f0[..16]
            || f[20..24] != f0[20..24]
            || f[26..34] != f0[26..34]
            // Same ports, same ACK number, header length, window, and options.
            || f[34..38] != f0[34..38]
            || f[42..47] != f0[42..47]
            || f[48..50] != f0[48..50]
            || f[54..hdr] != f0[54..hdr]
        {
            return None;
        }
        let payload = f.len() - hdr;
        let flags = f[47];
        let allowed = if k + 1 == count { 0x18 } else { 0x10 };
        if flags & !allowed != 0 || flags & 0x10 == 0 {
            return None;
        }
        if (k + 1 < count && payload != mss) || payload > mss {
            return None;
        }
        if u32::from_be_bytes([f[38], f[39], f[40], f[41]]) != seq {
            return None;
        }
        let ph = pseudo_header_v4(src, dst, 6, (f.len() - 34) as u16);
        if fold(u64::from(ph) + u64::from(sum(&f[34..]))) != 0xffff {
            return None;
        }
        seq = seq.wrapping_add(payload as u32);
        total += payload;
        flags_or |= flags;
    }
    if 20 + thl + total > usize::from(u16::MAX) {
        return None;
    }
    // Move every payload behind the previous one (always leftwards: copy_within is safe).
    // Every range was checked above: each segment lies in `buf` and is longer than
    // `prefix + hdr`.
    for k in 1..count {
        let r = segs.range(k)?;
        let from = r.start + prefix + hdr;
        let to = prefix + hdr + k * mss;
        buf.copy_within(from..r.end, to);
    }
    let f = &mut buf[prefix..prefix + hdr + total];
    f[16..18].copy_from_slice(&((20 + thl + total) as u16).to_be_bytes());
    f[24] = 0;
    f[25] = 0;
    let c = !fold(u64::from(sum(&f[14..34])));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[47] = flags_or;
    // Partial checksum: the pseudo-header sum, as Linux's TCP leaves it for offload.
    let ph = pseudo_header_v4(src, dst, 6, (20 + thl + total - 20) as u16) as u16;
    f[50..52].copy_from_slice(&ph.to_be_bytes());
    let vnet = VnetHdr {
        flags: crate::vnet::VNET_F_NEEDS_CSUM,
        gso_type: VNET_GSO_TCPV4,
        hdr_len: hdr as u16,
        gso_size: mss as u16,
        csum_start: 34,
        csum_offset: 16,
    };
    Some((hdr + total, vnet))
}

/// End of the IPv4 packet inside an Ethernet frame (by its total length), if it is IPv4.
fn ip_end(frame: &[u8]) -> Option<usize> {
    let (l3, _, _) = parse_l3(frame).ok()?;
    let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
    (l3 + total <= frame.len() && total >= 20).then_some(l3 + total)
}

/// Frames for the tests of this crate and of the switch (not `cfg(test)`: another crate's
/// tests cannot see those).
#[doc(hidden)]
pub mod testing {
    use crate::vnet::{VnetHdr, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4};

    /// The vnet header a sender gives [`tcp_gso_frame`]: TCPv4 GSO with `mss`-byte segments,
    /// the checksum partial from the TCP header on.
    pub fn tcp_gso_vnet(mss: u16) -> VnetHdr {
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    /// An Ethernet/IPv4/TCP frame with `n` payload bytes, its TCP checksum left partial (the
    /// pseudo-header sum over the whole length), as a GSO sender hands it over.
    pub fn tcp_gso_frame(n: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + n];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + n) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{tcp_gso_frame, tcp_gso_vnet};
    use super::*;
    use crate::checksum::{ipv4_l4_verify, verify};
    use crate::vnet::VNET_F_NEEDS_CSUM;

    fn check_tcp_segments(out: &[u8], s: &Segments, prefix: usize, payload: &[u8], mss: usize) {
        let mut got = Vec::new();
        for k in 0..s.count {
            let len = if k + 1 == s.count { s.last } else { s.stride };
            let seg = &out[k * s.stride + prefix..k * s.stride + len];
            assert!(verify(&seg[14..34]), "IPv4 checksum of segment {k}");
            let total = u16::from_be_bytes([seg[16], seg[17]]) as usize;
            assert_eq!(total, seg.len() - 14);
            assert_eq!(
                u16::from_be_bytes([seg[18], seg[19]]),
                0xfffeu16.wrapping_add(k as u16)
            );
            let src = Ipv4Addr::new(10, 0, 0, 1);
            let dst = Ipv4Addr::new(10, 0, 0, 2);
            assert!(
                ipv4_l4_verify(src, dst, 6, &seg[34..]),
                "TCP checksum of segment {k}"
            );
            let seq = u32::from_be_bytes([seg[38], seg[39], seg[40], seg[41]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((k * mss) as u32));
            let flags = seg[47];
            if k + 1 < s.count {
                assert_eq!(flags & 0x09, 0, "no FIN/PSH before the last segment");
            }
            if k > 0 {
                assert_eq!(flags & 0x80, 0, "CWR only on the first");
            }
            assert!(seg.len() - 54 <= mss);
            got.extend_from_slice(&seg[54..]);
        }
        assert_eq!(got, payload, "payload reassembles");
    }

    #[test]
    fn tcp_gso_frame_is_cut_into_valid_segments() {
        for n in [1usize, 1448, 1449, 3000, 65000 - 54] {
            let f = tcp_gso_frame(n, 0x18 | 0x80 | 0x01);
            let v = tcp_gso_vnet(1448);
            let mut out = vec![0u8; 128 * 1024];
            let s = segment(&f, &v, 8, &mut out).unwrap();
            assert_eq!(s.count, n.div_ceil(1448));
            assert_eq!(s.stride, 8 + 54 + 1448);
            check_tcp_segments(&out, &s, 8, &f[54..], 1448);
            let last = &out[(s.count - 1) * s.stride + 8..(s.count - 1) * s.stride + s.last];
            assert_eq!(
                last[47] & 0x09,
                0x09,
                "FIN and PSH stay on the last segment"
            );
        }
    }

    #[test]
    fn udp_l4_and_partial_checksum_and_plain_copy() {
        // UDP_L4: a 3000-byte datagram payload in 1000-byte pieces.
        let mut f = tcp_gso_frame(0, 0);
        f.truncate(34);
        f[23] = 17;
        f.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 0, 0, 0]);
        f.extend((0..3000).map(|i| i as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let v = VnetHdr {
            gso_type: VNET_GSO_UDP_L4,
            gso_size: 1000,
            ..Default::default()
        };
        let mut out = vec![0u8; 8192];
        let s = segment(&f, &v, 0, &mut out).unwrap();
        assert_eq!((s.count, s.stride, s.last), (3, 1042, 1042));
        for k in 0..3 {
            let seg = &out[k * 1042..(k + 1) * 1042];
            assert!(ipv4_l4_verify(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                17,
                &seg[34..]
            ));
            assert_eq!(u16::from_be_bytes([seg[38], seg[39]]), 1008);
        }
        // Not GSO, partial checksum: finished in the copy, the source untouched.
        let mut f = tcp_gso_frame(100, 0x18);
        let ph = pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            120,
        );
        f[50..52].copy_from_slice(&(ph as u16).to_be_bytes());
        f.extend_from_slice(&[0; 6]); // Ethernet padding is not summed
        let v = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let s = segment(&f, &v, 8, &mut out).unwrap();
        assert_eq!((s.count, s.total()), (1, 8 + f.len()));
        assert!(ipv4_l4_verify(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            &out[8 + 34..8 + 154]
        ));
        // Plain: a copy.
        let s = segment(&f, &VnetHdr::default(), 8, &mut out).unwrap();
        assert_eq!(&out[8..s.total()], &f[..]);
    }

    #[test]
    fn segments_coalesce_back_into_one_gso_frame() {
        let n = 10_000;
        let f = tcp_gso_frame(n, 0x18);
        let v = tcp_gso_vnet(1448);
        let mut out = vec![0u8; 32 * 1024];
        let s = segment(&f, &v, 8, &mut out).unwrap();
        let mut bad = out.clone();
        let (mut other_ports, mut other_hosts) = (out.clone(), out.clone());
        let (len, g) = coalesce_tcp4(&mut out, s, 8).unwrap();
        assert_eq!(len, f.len());
        assert_eq!(g.gso_size, 1448);
        assert_eq!(g.hdr_len, 54);
        assert_eq!(&out[8 + 54..8 + len], &f[54..], "payload in order");
        assert!(verify(&out[8 + 14..8 + 34]));
        assert_eq!(out[8 + 47], 0x18, "PSH of the last segment kept");
        // Re-segmenting the coalesced frame gives valid segments again.
        let mut again = vec![0u8; 32 * 1024];
        let s2 = segment(&out[8..8 + len], &g, 8, &mut again).unwrap();
        check_tcp_segments(&again, &s2, 8, &f[54..], 1448);
        // A corrupted segment (bad checksum) is not coalesced, and nothing is changed.
        bad[2 * s.stride + 8 + 100] ^= 0xff;
        let copy = bad.clone();
        assert!(coalesce_tcp4(&mut bad, s, 8).is_none());
        assert_eq!(bad, copy);
        // Nor is a segment of another flow: other ports (1235 -> 79), or the addresses swapped.
        // Both keep every checksum valid (the words' sum is the same), so only the flow
        // comparison can refuse them.
        let at = 3 * s.stride + 8;
        other_ports[at + 34..at + 38].copy_from_slice(&[0x04, 0xd3, 0x00, 0x4f]);
        other_hosts[at + 26..at + 34].copy_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
        for seg in [other_ports, other_hosts] {
            let mut probe = seg.clone();
            assert!(coalesce_tcp4(&mut probe, s, 8).is_none());
            assert_eq!(probe, seg);
        }
        // Nor are segments out of order, or a lone segment.
        let mut one = out.clone();
        let lone = Segments {
            count: 1,
            last: s.stride,
            ..s
        };
        assert!(coalesce_tcp4(&mut one, lone, 8).is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let v = VnetHdr {
            gso_type: VNET_GSO_TCPV4,
            gso_size: 1448,
            ..Default::default()
        };
        let mut out = vec![0u8; 4096];
        for len in 0..60 {
            let f = tcp_gso_frame(10, 0);
            let _ = segment(&f[..len.min(f.len())], &v, 8, &mut out);
        }
        let f = tcp_gso_frame(5000, 0);
        assert!(segment(&f, &v, 8, &mut out).is_err(), "output too small");
        let zero = VnetHdr { gso_size: 0, ..v };
        assert!(segment(&f, &zero, 8, &mut vec![0u8; 8192]).is_err());
        let ufo = VnetHdr { gso_type: 3, ..v };
        assert!(segment(&f, &ufo, 8, &mut vec![0u8; 8192]).is_err());
    }

    #[test]
    fn gro_split_and_single_segments() {
        // 2,500 bytes in 1,000-byte segments: two full ones and a last of 500.
        assert_eq!(
            Segments::of_gro(2500, 1000),
            Some(Segments {
                count: 3,
                stride: 1000,
                last: 500
            })
        );
        // One segment is nothing to coalesce: refused, the buffer untouched.
        let f = tcp_gso_frame(100, 0x10);
        let mut buf = f.clone();
        let one = Segments {
            count: 1,
            stride: f.len(),
            last: f.len(),
        };
        assert!(coalesce_tcp4(&mut buf, one, 0).is_none());
        assert_eq!(buf, f);
    }

    #[test]
    fn short_headers_name_what_is_missing() {
        let v = VnetHdr {
            gso_type: VNET_GSO_TCPV4,
            gso_size: 1448,
            ..Default::default()
        };
        let mut tagged = tcp_gso_frame(100, 0x10);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            segment(&tagged[..17], &v, 8, &mut out),
            Err(WireError::Truncated {
                what: "802.1Q header",
                need: 18,
                have: 17
            })
        ));
        assert!(matches!(
            segment(&tagged[..18], &v, 8, &mut out),
            Err(WireError::Truncated {
                what: "IPv4 header",
                need: 38,
                have: 18
            })
        ));
    }

    #[test]
    fn a_partial_checksum_ends_where_the_ip_packet_ends() {
        // Not GSO, NEEDS_CSUM, and an IPv4 total length (0) that cannot be right: the checksum
        // is finished over the frame to its end rather than refused.
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut f = tcp_gso_frame(100, 0x10);
        let ph = pseudo_header_v4(src, dst, 6, 120) as u16;
        f[50..52].copy_from_slice(&ph.to_be_bytes());
        f[16..18].copy_from_slice(&0u16.to_be_bytes());
        let v = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let mut out = vec![0u8; 4096];
        let s = segment(&f, &v, 8, &mut out).unwrap();
        assert_eq!(s.count, 1);
        let seg = &out[8..s.last];
        assert!(ipv4_l4_verify(src, dst, 6, &seg[34..]));
        // With the right length and Ethernet padding behind the packet, the checksum covers
        // the packet only.
        f[16..18].copy_from_slice(&140u16.to_be_bytes());
        f.extend_from_slice(&[0xee; 6]);
        let s = segment(&f, &v, 8, &mut out).unwrap();
        assert!(ipv4_l4_verify(src, dst, 6, &out[8 + 34..8 + 154]));
        assert_eq!(s.last, 8 + f.len(), "the padding is kept");
    }

    #[test]
    fn a_udp_segment_whose_checksum_computes_to_zero_sends_all_ones() {
        // RFC 768: a computed UDP checksum of 0 is sent as 0xffff (0 means "none"). Two
        // payload bytes of the first segment are chosen to make its checksum exactly 0.
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut f = tcp_gso_frame(0, 0);
        f.truncate(34);
        f[23] = 17;
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0]);
        f.extend((0..200u32).map(|i| (i * 13 + 1) as u8));
        f[16..18].copy_from_slice(&(20u16 + 8 + 200).to_be_bytes());
        let v = VnetHdr {
            gso_type: VNET_GSO_UDP_L4,
            gso_size: 100,
            ..Default::default()
        };
        let mut out = vec![0u8; 1024];
        let first_csum = |f: &[u8], out: &mut Vec<u8>| {
            let s = segment(f, &v, 0, out).unwrap();
            assert_eq!(s.count, 2);
            u16::from_be_bytes([out[40], out[41]])
        };
        f[42..44].copy_from_slice(&[0, 0]);
        let c = first_csum(&f, &mut out);
        // The segment summed to !c; one more word `c` (in bytes that were zero) makes the sum
        // 0xffff, whose checksum is 0.
        f[42..44].copy_from_slice(&c.to_be_bytes());
        assert_eq!(first_csum(&f, &mut out), 0xffff);
        assert!(ipv4_l4_verify(src, dst, 17, &out[34..34 + 108]));
    }

    #[test]
    fn ranges_lists_every_segment() {
        let s = Segments::of_gro(2500, 1000).unwrap();
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [0..1000, 1000..2000, 2000..2500]
        );
    }
}
