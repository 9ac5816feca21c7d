//! The Internet checksum (RFC 1071) and its incremental form (RFC 1624).

/// Adds the big-endian 16-bit words of `data` to `acc` (a trailing odd byte is padded with
/// zero). The result is not folded.
#[inline]
pub fn sum_words(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a 32-bit one's complement sum into 16 bits.
#[inline]
pub const fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for `data` (the field itself must be zero in `data`).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// True when `data`, checksum field included, sums to 0xffff (a valid IPv4 header).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(sum_words(data, 0)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (checksum 0xb861).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(&h));
        h[15] ^= 1;
        assert!(!verify(&h));
    }

    #[test]
    fn fold_adds_the_carry_of_the_first_fold() {
        // 0x0001_ffff folds to 0x1_0000, whose carry must be added again: 0x0001.
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(u32::MAX), 0xffff);
        // 0x1_0001 words of 0xffff: the sum needs both folds.
        let words = vec![0xffu8; 2 * 0x1_0001];
        assert_eq!(sum_words(&words, 0), 0xffff * 0x1_0001);
        assert_eq!(checksum(&words), 0);
    }

    #[test]
    fn odd_length() {
        assert_eq!(sum_words(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }
}
