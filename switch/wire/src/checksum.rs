//! The Internet checksum (RFC 1071), the IPv4 pseudo-header, incremental updates (RFC 1624) and
//! completion of partial checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
//!
//! Vocabulary: a *sum* is the one's-complement sum of big-endian 16-bit words, folded to 16 bits
//! and returned in a `u32` so that a few sums can be added with `+` before [`fold`]ing again.
//! A *checksum* is the complement of a folded sum: the value written into a header.

use std::net::Ipv4Addr;

use super::WireError;

/// Bytes summed before the 64-bit accumulator is folded (keeps it far from overflow for any
/// input length).
const BLOCK: usize = 1 << 20;

/// Native-endian one's-complement sum of `data` (zero-padded to a multiple of four), unfolded.
/// Summing u32 words into a u64 vectorizes well; the byte order is fixed up by the caller
/// (RFC 1071 §2(B): the sum is independent of byte order up to a final swap).
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rem.len()].copy_from_slice(rem);
    acc + u64::from(u32::from_ne_bytes(tail))
}

/// Folds a wide one's-complement sum to 16 bits (end-around carry).
#[inline]
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The one's-complement sum of `data` read as big-endian 16-bit words (an odd last byte is
/// padded with zero), folded to 16 bits.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let native = if data.len() <= BLOCK {
        fold(sum_native(data))
    } else {
        let mut acc: u64 = 0;
        for block in data.chunks(BLOCK) {
            acc += u64::from(fold(sum_native(block)));
        }
        fold(acc)
    };
    u32::from(u16::from_be(native))
}

/// The Internet checksum of `data`: the value to store in a zeroed checksum field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(u64::from(sum(data)))
}

/// True when `data`, checksum field included, sums to all ones (a valid checksum).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(u64::from(sum(data))) == 0xffff
}

/// The sum of the IPv4 pseudo-header for UDP/TCP: addresses, protocol and the L4 length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let total = (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff);
    u32::from(fold(
        u64::from(total) + u64::from(protocol) + u64::from(l4_len),
    ))
}

/// The UDP/TCP checksum over IPv4 of `segment` (header and payload, checksum field zeroed).
/// Lengths above 65535 are truncated in the pseudo-header as the kernel does for GSO frames;
/// such a frame's checksum is only meaningful once segmented.
#[inline]
pub fn ipv4_l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let ph = pseudo_header_v4(src, dst, protocol, segment.len() as u16);
    !fold(u64::from(ph) + u64::from(sum(segment)))
}

/// True when the UDP/TCP checksum stored in `segment` is valid for the IPv4 pseudo-header.
#[inline]
pub fn ipv4_l4_verify(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> bool {
    let ph = pseudo_header_v4(src, dst, protocol, segment.len() as u16);
    fold(u64::from(ph) + u64::from(sum(segment))) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word covered by `csum` changes from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + u64::from(!old) + u64::from(new))
}

/// RFC 1624 for a 32-bit field (an IPv4 address, a TCP sequence number) at an even offset.
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u64::from(!csum)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(s)
}

/// RFC 1624 for a field covered by a *partial* checksum (`NEEDS_CSUM`): the L4 checksum field
/// then holds the folded pseudo-header sum, not its complement, so a NAT that rewrites an
/// address must adjust that sum: `partial' = partial - old + new`. (Ports need no adjustment:
/// they are summed when the checksum is finished.)
#[inline]
pub fn update_partial_u32(partial: u16, old: u32, new: u32) -> u16 {
    !update_u32(!partial, old, new)
}

/// Completes a `CHECKSUM_PARTIAL` frame (the `virtio_net_hdr` `NEEDS_CSUM` case): the 16-bit
/// field at `csum_start + csum_offset` already holds the folded pseudo-header sum; the sum of
/// every byte from `csum_start` to the end of `frame` (that field included) is complemented and
/// stored there. Like Linux's `skb_checksum_help`, a result of 0 is written as 0xffff (which
/// UDP requires and TCP accepts as the same value).
///
/// `frame` must end where the L4 segment ends (no Ethernet padding) and must not be a GSO
/// super-frame (segment it first). Errors, writing nothing, when the field lies outside `frame`.
#[inline]
pub fn finish_partial_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), WireError> {
    let field = csum_start
        .checked_add(csum_offset)
        .ok_or(WireError::malformed(
            "partial checksum",
            "csum_start + csum_offset overflows",
        ))?;
    let end = field.checked_add(2).ok_or(WireError::malformed(
        "partial checksum",
        "csum_start + csum_offset overflows",
    ))?;
    if end > frame.len() {
        return Err(WireError::truncated(
            "partial checksum field",
            end,
            frame.len(),
        ));
    }
    let c = !fold(u64::from(sum(&frame[csum_start..])));
    let c = if c == 0 { 0xffff } else { c };
    frame[field..end].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: RFC 1071 word by word, big-endian, no tricks.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(&h));
        h[3] ^= 1;
        assert!(!verify(&h));
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn fold_adds_every_carry() {
        // 0x0001_ffff folds to 0x1_0000, whose carry must be added again: 0x0001.
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(u64::from(u32::MAX)), 0xffff);
        // A carry out of the low 32 bits is worth 1 as well (2^32 = 1 mod 0xffff).
        assert_eq!(fold(0x1_0000_0000), 0x0001);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1234), 0x1234);
        // 0x1_0001 words of 0xffff: a sum that needs more than one fold is still all ones.
        let words = vec![0xffu8; 2 * 0x1_0001];
        assert_eq!(sum(&words), 0xffff);
        assert_eq!(checksum(&words), 0);
    }

    #[test]
    fn pseudo_header_known_value() {
        // 10.0.0.1 -> 10.0.0.2, UDP, length 12: 0a00+0001+0a00+0002+0011+000c = 0x1420
        let s = pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            12,
        );
        assert_eq!(s, 0x1420);
    }

    #[test]
    fn finish_partial_matches_full_checksum() {
        // UDP segment: ports 1234 -> 53, len 12, payload "abcd".
        let src = Ipv4Addr::new(172, 17, 0, 2);
        let dst = Ipv4Addr::new(172, 17, 0, 1);
        let mut seg = [
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let full = ipv4_l4_checksum(src, dst, 17, &seg);
        // What the kernel hands over with NEEDS_CSUM: the pseudo-header sum in the field,
        // behind a 14-byte Ethernet and 20-byte IP header.
        let mut frame = [0u8; 34 + 12];
        seg[6..8].copy_from_slice(&(pseudo_header_v4(src, dst, 17, 12) as u16).to_be_bytes());
        frame[34..].copy_from_slice(&seg);
        finish_partial_checksum(&mut frame, 34, 6).unwrap();
        assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), full);
        assert!(ipv4_l4_verify(src, dst, 17, &frame[34..]));
    }

    #[test]
    fn finish_partial_rejects_out_of_range() {
        let mut f = [0u8; 40];
        assert!(finish_partial_checksum(&mut f, 34, 6).is_err());
        assert!(finish_partial_checksum(&mut f, usize::MAX, 6).is_err());
        assert!(finish_partial_checksum(&mut f, 2, usize::MAX).is_err());
        assert_eq!(f, [0u8; 40]);
        assert!(finish_partial_checksum(&mut f, 34, 4).is_ok());
    }

    #[test]
    fn finish_partial_writes_ffff_for_zero() {
        // Sum of region is 0xffff -> checksum 0 -> written as 0xffff.
        let mut f = [0xff, 0xff, 0x00, 0x00];
        finish_partial_checksum(&mut f, 0, 2).unwrap();
        assert_eq!(f, [0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn partial_update_then_finish_matches_full() {
        let (src, dst, new_src) = (
            Ipv4Addr::new(172, 17, 0, 2),
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(192, 168, 0, 7),
        );
        let mut seg = [
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0d, 0, 0, b'a', b'b', b'c', b'd', b'e',
        ];
        let ph = pseudo_header_v4(src, dst, 17, 13) as u16;
        let ph = update_partial_u32(ph, u32::from(src), u32::from(new_src));
        seg[6..8].copy_from_slice(&ph.to_be_bytes());
        finish_partial_checksum(&mut seg, 0, 6).unwrap();
        assert!(ipv4_l4_verify(new_src, dst, 17, &seg));
    }

    #[test]
    fn large_input_crosses_blocks() {
        let data: Vec<u8> = (0..(BLOCK * 2 + 3)).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(sum(&data) as u16, reference_sum(&data));
    }

    /// Equal as one's-complement values (0x0000 and 0xffff are both zero).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(sum(&data) as u16, reference_sum(&data));
            // Any offset (unaligned start) gives the same answer.
            if data.len() > 3 {
                prop_assert_eq!(sum(&data[3..]) as u16, reference_sum(&data[3..]));
            }
        }

        #[test]
        fn incremental_u16_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..200),
            word in 0usize..100,
            new in any::<u16>(),
        ) {
            let len = data.len() & !1;
            data.truncate(len);
            let i = (word % (len / 2 - 1)) * 2 + 2; // not word 0: that holds the checksum
            data[0] = 0; data[1] = 0;
            let c = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let full = checksum(&data);
            let inc = update_u16(c, old, new);
            prop_assert!(same(inc, full), "inc {:04x} full {:04x}", inc, full);
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verify(&data) || data.iter().all(|&b| b == 0));
        }

        #[test]
        fn incremental_u32_equals_recompute(
            mut hdr in proptest::array::uniform20(any::<u8>()),
            new_src in any::<u32>(),
        ) {
            // An IPv4 header whose source address (bytes 12..16) is rewritten, as NAT does.
            hdr[10] = 0; hdr[11] = 0;
            let c = checksum(&hdr);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify(&hdr));
            let old = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
            let inc = update_u32(c, old, new_src);
            hdr[12..16].copy_from_slice(&new_src.to_be_bytes());
            hdr[10] = 0; hdr[11] = 0;
            let full = checksum(&hdr);
            prop_assert!(same(inc, full), "inc {:04x} full {:04x}", inc, full);
            hdr[10..12].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verify(&hdr) || hdr.iter().all(|&b| b == 0));
        }

        #[test]
        fn finish_partial_equals_full(
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
            s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
            let len = 20 + payload.len();
            let mut seg = vec![0u8; len];
            seg[0..2].copy_from_slice(&sp.to_be_bytes());
            seg[2..4].copy_from_slice(&dp.to_be_bytes());
            seg[12] = 0x50;
            seg[20..].copy_from_slice(&payload);
            let full = ipv4_l4_checksum(src, dst, 6, &seg);
            let ph = pseudo_header_v4(src, dst, 6, len as u16) as u16;
            seg[16..18].copy_from_slice(&ph.to_be_bytes());
            finish_partial_checksum(&mut seg, 0, 16).unwrap();
            let got = u16::from_be_bytes([seg[16], seg[17]]);
            prop_assert!(same(got, full));
            prop_assert!(ipv4_l4_verify(src, dst, 6, &seg));
        }
    }
}
