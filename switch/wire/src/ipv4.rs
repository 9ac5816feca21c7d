//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::{be16, checksum, ip4, put16, WireError};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 packet (the Ethernet payload, possibly followed by Ethernet padding).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`Ipv4Packet::check_len`]: afterwards no accessor panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version 4, IHL >= 5, and that the header and the total length fit the buffer.
    /// The checksum is not verified (see [`Ipv4Packet::verify_checksum`]).
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV4_HEADER_LEN {
            return Err(WireError::truncated("IPv4 header", IPV4_HEADER_LEN, len));
        }
        if self.version() != 4 {
            return Err(WireError::malformed("IPv4 header", "version is not 4"));
        }
        let hl = self.header_len();
        if hl < IPV4_HEADER_LEN {
            return Err(WireError::malformed("IPv4 header", "IHL is below 5"));
        }
        if hl > len {
            return Err(WireError::truncated("IPv4 options", hl, len));
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(WireError::malformed(
                "IPv4 header",
                "total length is shorter than the header",
            ));
        }
        if total > len {
            return Err(WireError::truncated("IPv4 packet", total, len));
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Length of the options (header length minus 20).
    #[inline]
    pub fn options_len(&self) -> usize {
        self.header_len().saturating_sub(IPV4_HEADER_LEN)
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 3
    }

    /// Total length of header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True for any fragment (MF set or non-zero offset): the L4 header may be absent or the
    /// payload incomplete.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`super::ip_proto`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::DST)
    }

    /// True when the header checksum is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[..self.header_len()])
    }

    /// The options bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV4_HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to `total_len` (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60; the IHL keeps 4 bits).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP (6 bits).
    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 3) | (v << 2);
    }

    /// Sets the ECN bits.
    #[inline]
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & !3) | (v & 3);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let v = be16(self.buffer.as_ref(), field::FLG_OFF);
        let v = if on { v | flag } else { v & !flag };
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        self.set_flag(FLAG_DF, on)
    }

    /// Sets the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        self.set_flag(FLAG_MF, on)
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let v = be16(self.buffer.as_ref(), field::FLG_OFF) & !OFFSET_MASK;
        put16(self.buffer.as_mut(), field::FLG_OFF, v | (bytes >> 3));
    }

    /// Sets the TTL.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address (checksum untouched).
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (checksum untouched).
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Sets the source address and updates the header checksum incrementally (RFC 1624).
    /// The UDP/TCP checksum, which also covers the address, is the caller's to update.
    #[inline]
    pub fn set_src_addr_update_checksum(&mut self, a: Ipv4Addr) {
        let old = u32::from(self.src_addr());
        self.set_src_addr(a);
        let c = checksum::update_u32(self.checksum(), old, u32::from(a));
        self.set_checksum(c);
    }

    /// Sets the destination address and updates the header checksum incrementally.
    #[inline]
    pub fn set_dst_addr_update_checksum(&mut self, a: Ipv4Addr) {
        let old = u32::from(self.dst_addr());
        self.set_dst_addr(a);
        let c = checksum::update_u32(self.checksum(), old, u32::from(a));
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally, as a router does. Returns
    /// false, changing nothing, when the TTL is already 0 or 1 (the packet must be dropped).
    #[inline]
    pub fn decrement_ttl(&mut self) -> bool {
        let ttl = self.ttl();
        if ttl <= 1 {
            return false;
        }
        let b = self.buffer.as_ref();
        let old = be16(b, field::TTL);
        let new = old - 0x0100;
        put16(self.buffer.as_mut(), field::TTL, new);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c);
        true
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// The options bytes, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[IPV4_HEADER_LEN..hl]
    }

    /// The payload, writable (up to `total_len`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip_proto;
    use proptest::prelude::*;

    /// An ICMP echo request 172.17.0.2 -> 172.17.0.1 as Linux ping sends it (header only),
    /// followed by 8 bytes of ICMP and 2 bytes of Ethernet padding.
    const PKT: [u8; 30] = [
        0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0xc6, 0x75, 0xac, 0x11, 0x00,
        0x02, 0xac, 0x11, 0x00, 0x01, // header
        0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00, // ICMP echo, id 1, seq 0
        0xee, 0xee, // padding
    ];

    #[test]
    fn parse_known_header() {
        let p = Ipv4Packet::new_checked(&PKT[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.options_len(), 0);
        assert_eq!(p.dscp(), 0);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), ip_proto::ICMP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(172, 17, 0, 1));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8, "padding excluded");
    }

    #[test]
    fn checksum_known_value() {
        let mut b = PKT;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        let want = p.checksum();
        p.set_checksum(0);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(p.checksum(), want);
        assert_eq!(want, 0xc675);
    }

    #[test]
    fn check_rejects_bad_headers() {
        let t = |b: &[u8]| Ipv4Packet::new_checked(b).unwrap_err();
        assert!(matches!(t(&PKT[..19]), WireError::Truncated { .. }));
        let mut b = PKT;
        b[0] = 0x65;
        assert!(matches!(t(&b), WireError::Malformed { .. }));
        b[0] = 0x44;
        assert!(matches!(t(&b), WireError::Malformed { .. }));
        b[0] = 0x48; // 32-byte header: fits the 30-byte buffer? no
        assert!(matches!(t(&b), WireError::Truncated { need: 32, .. }));
        let mut b = PKT;
        b[3] = 19; // total < header
        assert!(matches!(t(&b), WireError::Malformed { .. }));
        b[3] = 31; // total > buffer
        assert!(matches!(t(&b), WireError::Truncated { need: 31, .. }));
        b[3] = 30;
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn setters_and_options() {
        let mut b = [0u8; 40];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(24);
        p.set_dscp(46);
        p.set_ecn(2);
        p.set_total_len(40);
        p.set_ident(0xbeef);
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        p.set_ttl(9);
        p.set_protocol(ip_proto::UDP);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.options_len()), (4, 24, 4));
        assert_eq!((p.dscp(), p.ecn(), p.ident()), (46, 2, 0xbeef));
        assert!(p.dont_frag() && p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!((p.ttl(), p.protocol()), (9, ip_proto::UDP));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 16);
        assert!(p.verify_checksum());
        let mut b2 = b;
        let mut p = Ipv4Packet::new_checked(&mut b2[..]).unwrap();
        p.set_dont_frag(false);
        assert!(!p.dont_frag() && p.more_frags());
    }

    #[test]
    fn incremental_setters_keep_checksum_valid() {
        let mut b = PKT;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr_update_checksum(Ipv4Addr::new(192, 168, 1, 10));
        assert!(p.verify_checksum());
        p.set_dst_addr_update_checksum(Ipv4Addr::new(8, 8, 4, 4));
        assert!(p.verify_checksum());
        assert!(p.decrement_ttl());
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        p.set_ttl(1);
        p.fill_checksum();
        assert!(!p.decrement_ttl());
        assert_eq!(p.ttl(), 1);
    }

    #[test]
    fn written_header_matches_etherparse() {
        let mut b = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len(24);
        p.set_dont_frag(true);
        p.set_ttl(64);
        p.set_protocol(ip_proto::UDP);
        p.set_src_addr(Ipv4Addr::new(10, 1, 2, 3));
        p.set_dst_addr(Ipv4Addr::new(10, 3, 2, 1));
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        assert_eq!(h.header_checksum, p.checksum());
        assert_eq!(h.calc_header_checksum(), p.checksum());
        assert_eq!(h.total_len, 24);
        assert!(h.dont_fragment);
        assert_eq!(h.source, [10, 1, 2, 3]);
        b[5] ^= 1;
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    proptest! {
        #[test]
        fn checked_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..80),
                                force_v4 in any::<bool>()) {
            if force_v4 && !data.is_empty() {
                data[0] = 0x40 | (data[0] & 0x0f);
            }
            if let Ok(mut p) = Ipv4Packet::new_checked(&mut data[..]) {
                let _ = (p.version(), p.header_len(), p.options_len(), p.dscp(), p.ecn());
                let _ = (p.total_len(), p.ident(), p.dont_frag(), p.more_frags());
                let _ = (p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol());
                let _ = (p.checksum(), p.src_addr(), p.dst_addr(), p.verify_checksum());
                let _ = (p.options().len(), p.payload().len());
                p.set_src_addr_update_checksum(Ipv4Addr::new(1, 2, 3, 4));
                p.decrement_ttl();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                p.options_mut();
                p.payload_mut();
            }
        }
    }

    #[test]
    fn a_header_only_packet_is_accepted() {
        let mut h: [u8; 20] = PKT[..20].try_into().unwrap();
        let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
        p.set_total_len(20);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.payload().is_empty() && p.verify_checksum());
        assert!(matches!(
            Ipv4Packet::new_checked(&h[..19]),
            Err(WireError::Truncated {
                need: 20,
                have: 19,
                ..
            })
        ));
    }

    #[test]
    fn fragment_offset_and_incremental_destination_leave_the_rest() {
        let mut b = PKT;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_dont_frag(false);
        p.set_frag_offset(1480);
        assert_eq!(p.frag_offset(), 1480);
        assert!(
            !p.dont_frag() && !p.more_frags(),
            "the flags are not touched"
        );
        p.fill_checksum();
        let new_dst = Ipv4Addr::new(8, 8, 4, 4);
        p.set_dst_addr_update_checksum(new_dst);
        assert_eq!(p.dst_addr(), new_dst);
        assert!(p.verify_checksum());
    }

    #[test]
    fn setting_a_flag_twice_keeps_it_set() {
        let mut b = PKT;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.dont_frag());
        p.set_dont_frag(true);
        assert!(p.dont_frag());
        p.set_more_frags(true);
        p.set_more_frags(true);
        assert!(p.more_frags() && p.dont_frag());
    }
}
