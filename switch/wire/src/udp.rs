//! UDP datagrams (RFC 768) over IPv4.

use std::net::Ipv4Addr;

use super::{be16, checksum, ip_proto, put16, WireError};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Offset of the checksum field inside the UDP header (the vnet header's `csum_offset`).
pub const UDP_CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view over a UDP datagram (the IPv4 payload).
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`UdpPacket::check_len`]: afterwards no accessor panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header fits and that the length field is in 8..=buffer length.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < UDP_HEADER_LEN {
            return Err(WireError::truncated("UDP header", UDP_HEADER_LEN, have));
        }
        let len = usize::from(self.len());
        if len < UDP_HEADER_LEN {
            return Err(WireError::malformed(
                "UDP header",
                "length field is below 8",
            ));
        }
        if len > have {
            return Err(WireError::truncated("UDP datagram", len, have));
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header plus payload.
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says the datagram has no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= UDP_HEADER_LEN
    }

    /// Checksum field (0: no checksum).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, as long as the length field says.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[UDP_HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum is absent (0) or valid for the IPv4 pseudo-header.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || checksum::ipv4_l4_verify(
                src,
                dst,
                ip_proto::UDP,
                &self.buffer.as_ref()[..usize::from(self.len())],
            )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (checksum untouched).
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port (checksum untouched).
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and stores the checksum (a computed 0 is sent as 0xffff, RFC 768).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = checksum::ipv4_l4_checksum(src, dst, ip_proto::UDP, &self.buffer.as_ref()[..len]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    #[inline]
    fn adjust_checksum(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            let n = f(c);
            self.set_checksum(if n == 0 { 0xffff } else { n });
        }
    }

    /// Sets the source port and updates a complete checksum incrementally (an absent
    /// checksum stays absent). Not for partial (`NEEDS_CSUM`) checksums, which need no update.
    #[inline]
    pub fn set_src_port_update_checksum(&mut self, v: u16) {
        let old = self.src_port();
        self.set_src_port(v);
        self.adjust_checksum(|c| checksum::update_u16(c, old, v));
    }

    /// Sets the destination port and updates a complete checksum incrementally.
    #[inline]
    pub fn set_dst_port_update_checksum(&mut self, v: u16) {
        let old = self.dst_port();
        self.set_dst_port(v);
        self.adjust_checksum(|c| checksum::update_u16(c, old, v));
    }

    /// Updates a complete checksum for an IPv4 address that changed in the pseudo-header (NAT).
    /// For a partial checksum use [`checksum::update_partial_u32`] on the field instead.
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.adjust_checksum(|c| checksum::update_u32(c, u32::from(old), u32::from(new)));
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[UDP_HEADER_LEN..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn etherparse_udp(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .udp(5353, 53)
            .write(&mut buf, payload)
            .unwrap();
        buf[20..].to_vec()
    }

    #[test]
    fn parse_and_verify_etherparse_datagram() {
        let d = etherparse_udp(b"query");
        let p = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5353, 53, 13));
        assert_eq!(p.payload(), b"query");
        assert!(!p.is_empty());
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        assert!(!p.verify_checksum(DST, DST));
    }

    #[test]
    fn known_checksum_value() {
        // 10.0.0.1:1234 -> 10.0.0.2:53, "abcd": pseudo-header 0x1420, then ports, length, data
        let mut d = [
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let mut p = UdpPacket::new_checked(&mut d[..]).unwrap();
        p.fill_checksum(SRC, DST);
        let s: u32 = 0x1420 + 0x04d2 + 0x0035 + 0x000c + 0x6162 + 0x6364;
        let s = (s & 0xffff) + (s >> 16);
        assert_eq!(p.checksum(), !(s as u16));
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut d = etherparse_udp(b"x");
        let mut p = UdpPacket::new_checked(&mut d[..]).unwrap();
        p.set_checksum(0);
        assert!(p.verify_checksum(SRC, Ipv4Addr::new(9, 9, 9, 9)));
        p.set_src_port_update_checksum(4000);
        p.update_checksum_for_addr(SRC, DST);
        assert_eq!(p.checksum(), 0, "absent checksum stays absent");
    }

    #[test]
    fn nat_updates_keep_checksum_valid() {
        let mut d = etherparse_udp(b"some payload");
        let mut p = UdpPacket::new_checked(&mut d[..]).unwrap();
        let new_src = Ipv4Addr::new(192, 168, 100, 1);
        p.set_src_port_update_checksum(40000);
        p.set_dst_port_update_checksum(5300);
        p.update_checksum_for_addr(SRC, new_src);
        assert_eq!((p.src_port(), p.dst_port()), (40000, 5300));
        assert!(p.verify_checksum(new_src, DST));
        let before = p.checksum();
        p.fill_checksum(new_src, DST);
        assert_eq!(p.checksum(), before);
    }

    #[test]
    fn rejects_bad_lengths() {
        let d = etherparse_udp(b"abc");
        assert!(matches!(
            UdpPacket::new_checked(&d[..7]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            UdpPacket::new_checked(&d[..10]),
            Err(WireError::Truncated {
                need: 11,
                have: 10,
                ..
            })
        ));
        let mut d2 = d.clone();
        d2[5] = 7;
        assert!(matches!(
            UdpPacket::new_checked(&d2[..]),
            Err(WireError::Malformed { .. })
        ));
        // Trailing bytes beyond the length field (IP padding) are allowed and ignored.
        let mut d3 = d.clone();
        d3.extend_from_slice(&[0, 0]);
        assert_eq!(UdpPacket::new_checked(&d3[..]).unwrap().payload(), b"abc");
    }

    proptest! {
        #[test]
        fn checked_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(mut p) = UdpPacket::new_checked(&mut data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.len(), p.is_empty(), p.checksum());
                let _ = p.payload().len();
                let _ = p.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
                p.set_src_port_update_checksum(1);
                p.update_checksum_for_addr(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                p.payload_mut();
            }
        }

        #[test]
        fn incremental_nat_equals_recompute(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            sp in any::<u16>(), s in any::<u32>(), d in any::<u32>(), ns in any::<u32>(),
        ) {
            let (s, d, ns) = (Ipv4Addr::from(s), Ipv4Addr::from(d), Ipv4Addr::from(ns));
            let mut b = vec![0u8; 8 + payload.len()];
            b[8..].copy_from_slice(&payload);
            let mut p = UdpPacket::new_unchecked(&mut b[..]);
            p.set_src_port(1);
            p.set_dst_port(2);
            p.set_len((8 + payload.len()) as u16);
            p.fill_checksum(s, d);
            let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
            p.set_src_port_update_checksum(sp);
            p.update_checksum_for_addr(s, ns);
            prop_assert!(p.verify_checksum(ns, d));
            let inc = p.checksum();
            p.fill_checksum(ns, d);
            prop_assert_eq!(inc, p.checksum());
        }
    }

    #[test]
    fn payload_mut_writes_the_payload() {
        let mut d = etherparse_udp(b"query");
        let mut p = UdpPacket::new_checked(&mut d[..]).unwrap();
        p.payload_mut().copy_from_slice(b"reply");
        assert_eq!(&d[8..], b"reply");
    }
}
