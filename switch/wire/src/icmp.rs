//! ICMPv4 (RFC 792): the header, echo request/reply, and the gateway's in-place echo reply.

use std::net::Ipv4Addr;

use super::{
    be16, checksum, ethertype, ip_proto, put16, EthernetFrame, Ipv4Packet, MacAddr, WireError,
};

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const ICMP_HEADER_LEN: usize = 8;

/// ICMP type: echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable.
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
/// ICMP type: echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// TTL of the replies the gateway builds.
const REPLY_TTL: u8 = 64;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
}

/// A view over an ICMPv4 message (the IPv4 payload).
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header: afterwards no accessor panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the 8-byte header fits.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < ICMP_HEADER_LEN {
            return Err(WireError::truncated("ICMP header", ICMP_HEADER_LEN, have));
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[ICMP_HEADER_LEN..]
    }

    /// True when the checksum over the whole message is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the type (checksum untouched).
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code (checksum untouched).
    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ, v);
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Sets type and code and updates the checksum incrementally (RFC 1624).
    #[inline]
    pub fn set_type_code_update_checksum(&mut self, msg_type: u8, code: u8) {
        let old = be16(self.buffer.as_ref(), field::TYPE);
        let new = u16::from_be_bytes([msg_type, code]);
        put16(self.buffer.as_mut(), field::TYPE, new);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// The data after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ICMP_HEADER_LEN..]
    }
}

/// What the echo reply learns from a validated request frame.
struct EchoRequest {
    eth_header_len: usize,
    ip_total_len: usize,
}

/// Validates that `frame` is an Ethernet/IPv4 ICMP echo request with valid checksums, not
/// fragmented.
fn check_echo_request(frame: &[u8]) -> Result<EchoRequest, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    if eth.payload_ethertype() != ethertype::IPV4 {
        return Err(WireError::unsupported(
            "ICMP echo reply",
            "the frame does not carry IPv4",
        ));
    }
    let ip = Ipv4Packet::new_checked(eth.payload())?;
    if !ip.verify_checksum() {
        return Err(WireError::Checksum {
            what: "IPv4 header",
        });
    }
    if ip.protocol() != ip_proto::ICMP {
        return Err(WireError::unsupported(
            "ICMP echo reply",
            "the packet is not ICMP",
        ));
    }
    if ip.is_fragment() {
        return Err(WireError::unsupported(
            "ICMP echo reply",
            "fragmented echo requests",
        ));
    }
    let icmp = IcmpPacket::new_checked(ip.payload())?;
    if (icmp.msg_type(), icmp.msg_code()) != (ICMP_ECHO_REQUEST, 0) {
        return Err(WireError::unsupported(
            "ICMP echo reply",
            "the message is not an echo request",
        ));
    }
    if !icmp.verify_checksum() {
        return Err(WireError::Checksum { what: "ICMP" });
    }
    Ok(EchoRequest {
        eth_header_len: eth.header_len(),
        ip_total_len: usize::from(ip.total_len()),
    })
}

/// Turns the echo request in `frame` into the reply from `our_mac` / `our_ip`, in place:
/// Ethernet destination = the requester's MAC, source = `our_mac`; IPv4 destination = the
/// request's source, source = `our_ip`, TTL 64, header checksum recomputed (options and VLAN
/// tags are kept); ICMP type 0 with the checksum updated incrementally. Returns the reply's
/// length (Ethernet padding dropped). Errors, changing nothing, on anything but a well-formed
/// unfragmented echo request with valid checksums. Whether `our_ip` is the request's
/// destination is the caller's decision.
#[inline]
pub fn icmp_echo_reply_in_place(
    frame: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
) -> Result<usize, WireError> {
    let req = check_echo_request(frame)?;
    let end = req.eth_header_len + req.ip_total_len;
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..end]);
    let requester = eth.src_addr();
    eth.set_dst_addr(requester);
    eth.set_src_addr(our_mac);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    let peer = ip.src_addr();
    ip.set_dst_addr(peer);
    ip.set_src_addr(our_ip);
    ip.set_ttl(REPLY_TTL);
    ip.fill_checksum();
    let mut icmp = IcmpPacket::new_unchecked(ip.payload_mut());
    icmp.set_type_code_update_checksum(ICMP_ECHO_REPLY, 0);
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ping from 172.17.0.2 to the gateway 172.17.0.1 (id 0x0c01, seq 1, 8 data bytes).
    fn request_frame() -> Vec<u8> {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0x42, 0xac, 0x11, 0, 2], [2, 0x42, 0x5e, 0, 0, 1])
            .ipv4([172, 17, 0, 2], [172, 17, 0, 1], 64)
            .icmpv4_echo_request(0x0c01, 1)
            .write(&mut buf, b"abcdefgh")
            .unwrap();
        buf
    }

    fn gw() -> (MacAddr, Ipv4Addr) {
        (
            "02:42:5e:00:00:01".parse().unwrap(),
            Ipv4Addr::new(172, 17, 0, 1),
        )
    }

    #[test]
    fn known_echo_checksum() {
        // type 8, code 0, id 1, seq 0, no data: ~(0x0800 + 0x0001) = 0xf7fe.
        let b = [0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00];
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.msg_code()), (ICMP_ECHO_REQUEST, 0));
        assert_eq!(
            (p.echo_ident(), p.echo_seq_no(), p.checksum()),
            (1, 0, 0xf7fe)
        );
        let mut out = [0u8; 8];
        let mut w = IcmpPacket::new_unchecked(&mut out[..]);
        w.set_msg_type(ICMP_ECHO_REQUEST);
        w.set_echo_ident(1);
        w.fill_checksum();
        assert_eq!(out, b);
    }

    #[test]
    fn parse_etherparse_request() {
        let f = request_frame();
        let icmp = IcmpPacket::new_checked(&f[34..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (ICMP_ECHO_REQUEST, 0));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x0c01, 1));
        assert_eq!(icmp.data(), b"abcdefgh");
        assert!(icmp.verify_checksum());
        let mut bad = f.clone();
        bad[40] ^= 0xff;
        assert!(!IcmpPacket::new_checked(&bad[34..])
            .unwrap()
            .verify_checksum());
    }

    fn assert_is_reply(f: &[u8]) {
        let (mac, ip) = gw();
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let etherparse::LinkSlice::Ethernet2(e) = p.link.unwrap() else {
            panic!()
        };
        assert_eq!(e.destination(), [2, 0x42, 0xac, 0x11, 0, 2]);
        assert_eq!(e.source(), mac.0);
        let Some(etherparse::NetSlice::Ipv4(ip4)) = p.net else {
            panic!()
        };
        let h = ip4.header().to_header();
        assert_eq!(h.source, ip.octets());
        assert_eq!(h.destination, [172, 17, 0, 2]);
        assert_eq!(h.time_to_live, 64);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!()
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x0c01, seq: 1 })
        );
        assert_eq!(icmp.payload(), b"abcdefgh");
        let v = IcmpPacket::new_checked(icmp.slice()).unwrap();
        assert!(v.verify_checksum());
        assert_eq!(
            icmp.header().checksum,
            icmp.header().icmp_type.calc_checksum(b"abcdefgh")
        );
    }

    #[test]
    fn reply_in_place() {
        let (mac, ip) = gw();
        let mut f = request_frame();
        f.extend_from_slice(&[0; 6]); // Ethernet padding is dropped
        let n = icmp_echo_reply_in_place(&mut f, mac, ip).unwrap();
        assert_eq!(n, 14 + 20 + 16);
        assert_is_reply(&f[..n]);
        // A reply is not answered again; nothing changes.
        let before = f.clone();
        assert!(icmp_echo_reply_in_place(&mut f, mac, ip).is_err());
        assert_eq!(f, before);
    }

    #[test]
    fn reply_keeps_vlan_tag() {
        let (mac, ip) = gw();
        let req = request_frame();
        let mut tagged = req[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        tagged.extend_from_slice(&req[12..]);
        let m = icmp_echo_reply_in_place(&mut tagged, mac, ip).unwrap();
        assert_eq!(m, 18 + 20 + 16);
        assert_eq!(
            EthernetFrame::new_checked(&tagged[..m]).unwrap().vid(),
            Some(42)
        );
        // Without the tag, it is the untagged reply.
        let mut untagged = tagged[..12].to_vec();
        untagged.extend_from_slice(&tagged[16..m]);
        assert_is_reply(&untagged);
    }

    #[test]
    fn refuses_non_requests() {
        let (mac, ip) = gw();
        let req = request_frame();
        let mut bad_ip = req.clone();
        bad_ip[22] = 1; // TTL changed, checksum not
        assert!(matches!(
            icmp_echo_reply_in_place(&mut bad_ip, mac, ip),
            Err(WireError::Checksum {
                what: "IPv4 header"
            })
        ));
        let mut frag = req.clone();
        let mut p = Ipv4Packet::new_checked(&mut frag[14..]).unwrap();
        p.set_more_frags(true);
        p.fill_checksum();
        assert!(icmp_echo_reply_in_place(&mut frag, mac, ip).is_err());
        let mut udp = req.clone();
        let mut p = Ipv4Packet::new_checked(&mut udp[14..]).unwrap();
        p.set_protocol(ip_proto::UDP);
        p.fill_checksum();
        assert!(icmp_echo_reply_in_place(&mut udp, mac, ip).is_err());
        assert!(icmp_echo_reply_in_place(&mut req.clone()[..40], mac, ip).is_err());
        let mut bad_icmp = req.clone();
        bad_icmp[40] ^= 0xff; // a data byte: the ICMP checksum no longer matches
        assert!(matches!(
            icmp_echo_reply_in_place(&mut bad_icmp, mac, ip),
            Err(WireError::Checksum { what: "ICMP" })
        ));
        let mut unreachable = req.clone();
        let mut p = IcmpPacket::new_checked(&mut unreachable[34..]).unwrap();
        p.set_type_code_update_checksum(ICMP_DEST_UNREACHABLE, 1);
        assert!(matches!(
            icmp_echo_reply_in_place(&mut unreachable, mac, ip),
            Err(WireError::Unsupported { .. })
        ));
    }

    proptest! {
        #[test]
        fn checked_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(mut p) = IcmpPacket::new_checked(&mut data[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident());
                let _ = (p.echo_seq_no(), p.data().len(), p.verify_checksum());
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                p.set_type_code_update_checksum(0, 0);
                prop_assert!(p.verify_checksum());
                p.data_mut();
            }
        }

        #[test]
        fn reply_in_place_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..64),
                                cut in 0usize..64, flip in 0usize..64) {
            let (mac, ip) = gw();
            let mut f = request_frame();
            f.extend_from_slice(&tail);
            let cut = cut.min(f.len());
            f.truncate(f.len() - cut);
            if let Some(b) = f.get_mut(flip) { *b ^= 0x5a; }
            let b = icmp_echo_reply_in_place(&mut f, mac, ip);
            if let (Ok(n), false) = (b, (6..12).contains(&flip)) {
                assert_is_reply(&f[..n]);
            }
        }
    }

    #[test]
    fn setters_write_their_fields() {
        let mut b = [0u8; 12];
        let mut p = IcmpPacket::new_unchecked(&mut b[..]);
        p.set_msg_type(ICMP_DEST_UNREACHABLE);
        p.set_msg_code(4);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(0x5678);
        p.data_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(&b[..2], &[ICMP_DEST_UNREACHABLE, 4]);
        assert_eq!(&b[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&b[8..], b"abcd");
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_code(), p.data()), (4, &b"abcd"[..]));
        assert!(p.verify_checksum());
    }
}
