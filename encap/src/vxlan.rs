//! The VXLAN header (RFC 7348 section 5) and the 24-bit VXLAN Network Identifier.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag (0x08) must be set. The reserved bits are written as zero and, as RFC 7348 says,
//! ignored on receipt; [`VxlanHeader::reserved_clear`] tells whether they were zero for callers
//! that want to be stricter (extensions such as VXLAN-GPE or GBP set some of them).

use std::fmt;

/// Length of the VXLAN header in bytes.
pub const VXLAN_HDR_LEN: usize = 8;
/// The I flag: "the VNI is valid". The only flag RFC 7348 defines; it must be set.
pub const VXLAN_FLAG_I: u8 = 0x08;
/// IANA-assigned VXLAN UDP destination port (RFC 7348 section 5). The default of this crate.
pub const IANA_VXLAN_PORT: u16 = 4789;
/// The destination port Linux's `vxlan` device uses unless created with `dstport 4789`.
pub const LINUX_VXLAN_PORT: u16 = 8472;

/// A VXLAN Network Identifier: a 24-bit number naming one overlay segment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// Largest valid VNI (2^24 - 1).
    pub const MAX: u32 = 0x00ff_ffff;

    /// A VNI from a number; `None` when it does not fit in 24 bits.
    #[inline]
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX {
            Some(Vni(v))
        } else {
            None
        }
    }

    /// A VNI from the low 24 bits of `v` (the high 8 bits are dropped).
    #[inline]
    pub const fn from_u32_truncating(v: u32) -> Vni {
        Vni(v & Self::MAX)
    }

    /// The VNI as a number in `0..=0xff_ffff`.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vni({})", self.0)
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniOutOfRange;
    fn try_from(v: u32) -> Result<Vni, VniOutOfRange> {
        Vni::new(v).ok_or(VniOutOfRange(v))
    }
}

/// A number that does not fit in the 24 bits of a VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range: a VXLAN network identifier has 24 bits, use 0..=16777215")]
pub struct VniOutOfRange(pub u32);

/// Why a buffer is not a valid VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    /// The buffer is shorter than the 8-byte header.
    #[error("VXLAN header truncated: {len} bytes, need 8")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The I flag is clear, so the VNI field is not valid (RFC 7348 requires the flag).
    #[error("VXLAN flags {flags:#04x} lack the I bit (0x08): not a VXLAN packet, or the peer speaks another encapsulation on this port")]
    BadFlags {
        /// The flags byte received.
        flags: u8,
    },
}

/// A view of a VXLAN header over a byte buffer, in the style of smoltcp's wire types.
///
/// After [`VxlanHeader::new_checked`] succeeds no accessor panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than 8 bytes;
    /// use [`VxlanHeader::new_checked`] on untrusted input.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanHeader { buffer }
    }

    /// Wraps a buffer after checking its length and the I flag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, VxlanError> {
        let b = buffer.as_ref();
        if b.len() < VXLAN_HDR_LEN {
            return Err(VxlanError::Truncated { len: b.len() });
        }
        if b[0] & VXLAN_FLAG_I == 0 {
            return Err(VxlanError::BadFlags { flags: b[0] });
        }
        Ok(VxlanHeader { buffer })
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The I flag.
    #[inline]
    pub fn vni_valid(&self) -> bool {
        self.flags() & VXLAN_FLAG_I != 0
    }

    /// The VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> Vni {
        let b = self.buffer.as_ref();
        Vni(u32::from_be_bytes([0, b[4], b[5], b[6]]))
    }

    /// True when every reserved bit (flags other than I, bytes 1-3, byte 7) is zero.
    #[inline]
    pub fn reserved_clear(&self) -> bool {
        let b = self.buffer.as_ref();
        b[0] & !VXLAN_FLAG_I == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[7] == 0
    }

    /// The bytes after the header (the inner Ethernet frame).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[VXLAN_HDR_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[0] = flags;
    }

    /// Sets the VNI (bytes 4-6), leaving the reserved byte 7 alone.
    #[inline]
    pub fn set_vni(&mut self, vni: Vni) {
        let v = vni.0.to_be_bytes();
        self.buffer.as_mut()[4..7].copy_from_slice(&v[1..4]);
    }

    /// Writes a whole header: I flag, the VNI, every reserved field zero.
    #[inline]
    pub fn emit(&mut self, vni: Vni) {
        self.buffer.as_mut()[..VXLAN_HDR_LEN].copy_from_slice(&header_bytes(vni));
    }
}

/// The 8 bytes of a VXLAN header for `vni` (I flag set, reserved fields zero).
#[inline]
pub const fn header_bytes(vni: Vni) -> [u8; VXLAN_HDR_LEN] {
    let v = vni.0.to_be_bytes();
    [VXLAN_FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(0).map(Vni::get), Some(0));
        assert_eq!(Vni::new(0xff_ffff).map(Vni::get), Some(0xff_ffff));
        assert_eq!(Vni::new(0x100_0000), None);
        assert_eq!(Vni::try_from(0x100_0000), Err(VniOutOfRange(0x100_0000)));
        assert_eq!(Vni::from_u32_truncating(0x1234_5678).get(), 0x34_5678);
        assert!(VniOutOfRange(1 << 24).to_string().contains("0..=16777215"));
        let v = Vni::new(4242).unwrap();
        assert_eq!(
            (format!("{v}"), format!("{v:?}")),
            ("4242".into(), "Vni(4242)".into())
        );
    }

    #[test]
    fn header_roundtrip() {
        for v in [0u32, 1, 42, 0x12_3456, 0xff_ffff] {
            let vni = Vni::new(v).unwrap();
            let mut buf = [0xaau8; 12];
            VxlanHeader::new_unchecked(&mut buf[..]).emit(vni);
            let h = VxlanHeader::new_checked(&buf[..]).unwrap();
            assert_eq!(h.vni(), vni);
            assert_eq!(h.flags(), VXLAN_FLAG_I);
            assert!(h.vni_valid());
            assert!(h.reserved_clear());
            assert_eq!(h.payload(), &[0xaa; 4]);
            assert_eq!(&buf[..8], &header_bytes(vni));
        }
    }

    #[test]
    fn known_bytes() {
        let b = header_bytes(Vni::new(0x12_3456).unwrap());
        assert_eq!(b, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    }

    #[test]
    fn set_vni_keeps_reserved_byte() {
        let mut buf = [0x08, 0, 0, 0, 0, 0, 0, 0x77];
        let mut h = VxlanHeader::new_checked(&mut buf[..]).unwrap();
        h.set_vni(Vni::new(7).unwrap());
        assert_eq!(h.vni().get(), 7);
        assert!(!h.reserved_clear());
        assert_eq!(buf[7], 0x77);
    }

    #[test]
    fn bad_flags_and_truncation() {
        assert_eq!(
            VxlanHeader::new_checked(&[0u8; 8][..]).unwrap_err(),
            VxlanError::BadFlags { flags: 0 }
        );
        assert_eq!(
            VxlanHeader::new_checked(&[0x08u8; 7][..]).unwrap_err(),
            VxlanError::Truncated { len: 7 }
        );
        // Reserved bits are ignored on receipt (RFC 7348), but reported.
        let h = VxlanHeader::new_checked(&[0x0cu8, 0, 0, 0, 0, 0, 1, 0][..]).unwrap();
        assert_eq!(h.vni().get(), 1);
        assert!(!h.reserved_clear());
        let mut buf = [0u8; 8];
        let mut h = VxlanHeader::new_unchecked(&mut buf[..]);
        assert!(!h.vni_valid(), "flags 0");
        h.set_flags(0xf7);
        assert!(!h.vni_valid(), "every flag but I");
        h.set_flags(VXLAN_FLAG_I);
        assert!(h.vni_valid());
    }
}
