//! TCP segment headers (RFC 9293) over IPv4: what the switch reads and NAT rewrites.

use std::net::Ipv4Addr;

use super::tcp_flags::{ACK, FIN, RST, SYN};
use super::{be16, be32, checksum, ip_proto, put16, put32, WireError};

/// Length of the TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Offset of the checksum field inside the TCP header (the vnet header's `csum_offset`).
pub const TCP_CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view over a TCP segment: the IPv4 payload, exactly (TCP has no length field, so the
/// buffer's length is the segment's length for checksums).
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`TcpPacket::check_len`]: afterwards no accessor panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed header fits and the data offset is in 20..=buffer length.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < TCP_HEADER_LEN {
            return Err(WireError::truncated("TCP header", TCP_HEADER_LEN, have));
        }
        let hl = self.header_len();
        if hl < TCP_HEADER_LEN {
            return Err(WireError::malformed("TCP header", "data offset is below 5"));
        }
        if hl > have {
            return Err(WireError::truncated("TCP options", hl, have));
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    /// The nine flag bits (NS included; see [`tcp_flags`](crate::tcp_flags)).
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OFF_FLAGS) & 0x01ff
    }

    /// SYN set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    /// FIN set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    /// RST set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }

    /// ACK set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[TCP_HEADER_LEN..self.header_len()]
    }

    /// The payload (everything after the header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum is valid for the IPv4 pseudo-header. (A frame with a partial
    /// checksum fails this until finished.)
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::ipv4_l4_verify(src, dst, ip_proto::TCP, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60), keeping the flags.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::OFF_FLAGS];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Sets the flag bits, keeping the data offset.
    #[inline]
    pub fn set_flags(&mut self, f: u16) {
        let v = be16(self.buffer.as_ref(), field::OFF_FLAGS) & 0xf000;
        put16(self.buffer.as_mut(), field::OFF_FLAGS, v | (f & 0x01ff));
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::ipv4_l4_checksum(src, dst, ip_proto::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Sets the source port and updates a complete checksum incrementally (RFC 1624). With a
    /// partial (`NEEDS_CSUM`) checksum, use [`TcpPacket::set_src_port`]: no update is needed.
    #[inline]
    pub fn set_src_port_update_checksum(&mut self, v: u16) {
        let old = self.src_port();
        self.set_src_port(v);
        let c = checksum::update_u16(self.checksum(), old, v);
        self.set_checksum(c);
    }

    /// Sets the destination port and updates a complete checksum incrementally.
    #[inline]
    pub fn set_dst_port_update_checksum(&mut self, v: u16) {
        let old = self.dst_port();
        self.set_dst_port(v);
        let c = checksum::update_u16(self.checksum(), old, v);
        self.set_checksum(c);
    }

    /// Updates a complete checksum for an address that changed in the pseudo-header (NAT).
    /// For a partial checksum use [`checksum::update_partial_u32`] on the field instead.
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::update_u32(self.checksum(), u32::from(old), u32::from(new));
        self.set_checksum(c);
    }

    /// The options bytes, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[TCP_HEADER_LEN..hl]
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_flags::{NS, PSH};
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

    fn etherparse_syn() -> Vec<u8> {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(43210, 80, 0x01020304, 64240)
            .syn()
            .ack(0x0a0b0c0d)
            .write(&mut buf, b"GET")
            .unwrap();
        buf[20..].to_vec()
    }

    #[test]
    fn parse_etherparse_segment() {
        let s = etherparse_syn();
        let t = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (43210, 80));
        assert_eq!(t.seq_number(), 0x01020304);
        assert_eq!(t.ack_number(), 0x0a0b0c0d);
        assert_eq!(t.header_len(), 20);
        assert!(t.syn() && t.ack() && !t.fin() && !t.rst());
        assert_eq!(t.flags(), SYN | ACK);
        assert_eq!(t.window_len(), 64240);
        assert_eq!(t.urgent_at(), 0);
        assert_eq!(t.payload(), b"GET");
        assert!(t.options().is_empty());
        assert!(t.verify_checksum(SRC, DST));
        assert!(!t.verify_checksum(Ipv4Addr::from(u32::from(SRC) + 1), DST));
        let (h, _) = etherparse::TcpHeader::from_slice(&s).unwrap();
        assert_eq!(h.checksum, t.checksum());
    }

    #[test]
    fn setters_and_fill() {
        let mut b = [0u8; 28];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_header_len(24);
        t.set_flags(FIN | PSH | NS);
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_seq_number(u32::MAX);
        t.set_ack_number(7);
        t.set_window_len(100);
        t.set_urgent_at(3);
        t.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        t.payload_mut().copy_from_slice(b"data");
        t.fill_checksum(SRC, DST);
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(t.header_len(), 24);
        assert!(t.fin() && t.flags() & (NS | PSH) == NS | PSH && !t.syn());
        assert_eq!(
            (t.seq_number(), t.ack_number(), t.window_len()),
            (u32::MAX, 7, 100)
        );
        assert_eq!(t.urgent_at(), 3);
        assert_eq!(t.options(), &[1, 1, 1, 0]);
        assert_eq!(t.payload(), b"data");
        assert!(t.verify_checksum(SRC, DST));
        let mut ours = [0u8; 48];
        ours[20..].copy_from_slice(&b);
        ours[..20].copy_from_slice(&[
            0x45, 0, 0, 48, 0, 0, 0, 0, 64, 6, 0, 0, 172, 17, 0, 2, 172, 17, 0, 3,
        ]);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&ours)
            .unwrap()
            .to_header();
        let (th, _) = etherparse::TcpHeader::from_slice(&b).unwrap();
        assert_eq!(th.calc_checksum_ipv4(&ip, b"data").unwrap(), t.checksum());
    }

    #[test]
    fn rejects_bad_offsets() {
        let s = etherparse_syn();
        assert!(matches!(
            TcpPacket::new_checked(&s[..19]),
            Err(WireError::Truncated { .. })
        ));
        let mut s2 = s.clone();
        s2[12] = 0x40;
        assert!(matches!(
            TcpPacket::new_checked(&s2[..]),
            Err(WireError::Malformed { .. })
        ));
        s2[12] = 0xf0; // 60-byte header in a 23-byte buffer
        assert!(matches!(
            TcpPacket::new_checked(&s2[..]),
            Err(WireError::Truncated { need: 60, .. })
        ));
    }

    #[test]
    fn nat_updates_keep_checksum_valid() {
        let mut s = etherparse_syn();
        let mut t = TcpPacket::new_checked(&mut s[..]).unwrap();
        let new_dst = Ipv4Addr::new(10, 99, 0, 5);
        t.set_dst_port_update_checksum(8080);
        t.set_src_port_update_checksum(1);
        t.update_checksum_for_addr(DST, new_dst);
        assert!(t.verify_checksum(SRC, new_dst));
    }

    proptest! {
        #[test]
        fn checked_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(mut t) = TcpPacket::new_checked(&mut data[..]) {
                let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number());
                let _ = (t.header_len(), t.flags(), t.syn(), t.fin(), t.rst(), t.ack());
                let _ = (t.window_len(), t.checksum(), t.urgent_at());
                let _ = (t.options().len(), t.payload().len());
                let _ = t.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
                t.set_src_port_update_checksum(9);
                t.update_checksum_for_addr(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                t.set_flags(RST);
                prop_assert!(t.rst());
                t.options_mut();
                t.payload_mut();
            }
        }

        #[test]
        fn incremental_nat_equals_recompute(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            dp in any::<u16>(), s in any::<u32>(), d in any::<u32>(), nd in any::<u32>(),
            seq in any::<u32>(),
        ) {
            let (s, d, nd) = (Ipv4Addr::from(s), Ipv4Addr::from(d), Ipv4Addr::from(nd));
            let mut b = vec![0u8; 20 + payload.len()];
            let mut t = TcpPacket::new_unchecked(&mut b[..]);
            t.set_header_len(20);
            t.set_seq_number(seq);
            t.set_flags(ACK);
            t.payload_mut().copy_from_slice(&payload);
            t.fill_checksum(s, d);
            t.set_dst_port_update_checksum(dp);
            t.update_checksum_for_addr(d, nd);
            prop_assert!(t.verify_checksum(s, nd));
            let inc = t.checksum();
            t.fill_checksum(s, nd);
            prop_assert_eq!(inc, t.checksum());
        }
    }

    #[test]
    fn a_bare_header_is_a_segment_and_ack_is_read_from_its_bit() {
        let s = etherparse_syn();
        let mut h = s[..20].to_vec();
        let t = TcpPacket::new_checked(&h[..]).unwrap();
        assert!(t.payload().is_empty() && t.ack());
        let mut t = TcpPacket::new_checked(&mut h[..]).unwrap();
        t.set_flags(SYN);
        assert!(t.syn() && !t.ack());
    }
}
