//! ARP for IPv4 over Ethernet (RFC 826); other hardware or protocol types are refused.

use std::net::Ipv4Addr;

use super::{be16, ethertype, ip4, put16, EthernetFrame, MacAddr, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// ARP hardware type of Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Who has `target_ip`? (1)
    Request,
    /// `source_ip` is at `source_hw_addr`. (2)
    Reply,
    /// Any other code.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            o => ArpOperation::Unknown(o),
        }
    }
}

impl From<ArpOperation> for u16 {
    #[inline]
    fn from(v: ArpOperation) -> u16 {
        match v {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(o) => o,
        }
    }
}

/// A view over an ARP packet (the Ethernet payload).
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking its length and that it is Ethernet/IPv4 ARP.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks the length and the hardware/protocol types and lengths.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ARP_LEN {
            return Err(WireError::truncated("ARP packet", ARP_LEN, len));
        }
        if self.hardware_type() != HTYPE_ETHERNET || self.hardware_len() != 6 {
            return Err(WireError::unsupported(
                "ARP packet",
                "hardware is not Ethernet",
            ));
        }
        if self.protocol_type() != ethertype::IPV4 || self.protocol_len() != 4 {
            return Err(WireError::unsupported("ARP packet", "protocol is not IPv4"));
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 = Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        be16(self.buffer.as_ref(), field::OPER).into()
    }

    /// Sender hardware address.
    #[inline]
    pub fn source_hw_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SHA..])
    }

    /// Sender protocol address.
    #[inline]
    pub fn source_ip(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::SPA)
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::THA..])
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the fixed Ethernet/IPv4 header (types and lengths).
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, field::HTYPE, HTYPE_ETHERNET);
        put16(b, field::PTYPE, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: ArpOperation) {
        put16(self.buffer.as_mut(), field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_source_hw_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&a.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_source_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&a.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&a.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&a.octets());
    }
}

/// Turns the ARP request frame in `frame` (VLAN tags kept) into the reply from `our_mac`:
/// Ethernet addresses swapped, operation Reply, sender and target swapped with our MAC as the
/// sender. Returns the reply's length (the header plus 28: Ethernet padding is dropped).
/// Errors, changing nothing, when the frame is not an Ethernet/IPv4 ARP request.
#[inline]
pub fn arp_reply_in_place(frame: &mut [u8], our_mac: MacAddr) -> Result<usize, WireError> {
    let mut eth = EthernetFrame::new_checked(&mut *frame)?;
    if eth.payload_ethertype() != ethertype::ARP {
        return Err(WireError::unsupported(
            "ARP reply",
            "the frame does not carry ARP",
        ));
    }
    let h = eth.header_len();
    let mut arp = ArpPacket::new_checked(eth.payload_mut())?;
    if arp.operation() != ArpOperation::Request {
        return Err(WireError::unsupported(
            "ARP reply",
            "the packet is not an ARP request",
        ));
    }
    // "target_ip is at our_mac", to the requester.
    let (requester_mac, requester_ip) = (arp.source_hw_addr(), arp.source_ip());
    let asked_ip = arp.target_ip();
    arp.set_operation(ArpOperation::Reply);
    arp.set_source_hw_addr(our_mac);
    arp.set_source_ip(asked_ip);
    arp.set_target_hw_addr(requester_mac);
    arp.set_target_ip(requester_ip);
    eth.set_dst_addr(requester_mac);
    eth.set_src_addr(our_mac);
    Ok(h + ARP_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real ARP request as Linux sends it (tcpdump -xx): who has 172.17.0.1? tell 172.17.0.2,
    /// padded to 60 bytes.
    const REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xac, 0x11, 0x00, 0x02, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x01, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// The reply to [`REQUEST`] from 02:42:5e:00:00:01 (172.17.0.1 is at ...), unpadded.
    const REPLY: [u8; 42] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x02, 0x42, 0x5e, 0x00, 0x00, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
        0x02, 0x42, 0x5e, 0x00, 0x00, 0x01, 0xac, 0x11, 0x00, 0x01, //
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xac, 0x11, 0x00, 0x02, //
    ];

    fn gw_mac() -> MacAddr {
        "02:42:5e:00:00:01".parse().unwrap()
    }

    #[test]
    fn parse_real_request() {
        let eth = EthernetFrame::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(eth.payload_ethertype(), ethertype::ARP);
        let p = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(p.source_hw_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(p.source_ip(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn rejects_short_and_non_ipv4() {
        assert!(matches!(
            ArpPacket::new_checked(&REQUEST[14..41]),
            Err(WireError::Truncated {
                need: 28,
                have: 27,
                ..
            })
        ));
        let mut p = REQUEST;
        p[16] = 0x86; // protocol IPv6
        assert!(matches!(
            ArpPacket::new_checked(&p[14..]),
            Err(WireError::Unsupported { .. })
        ));
        let mut p = REQUEST;
        p[15] = 6; // IEEE 802 hardware
        assert!(ArpPacket::new_checked(&p[14..]).is_err());
    }

    #[test]
    fn reply_in_place() {
        let mut f = REQUEST;
        let n = arp_reply_in_place(&mut f, gw_mac()).unwrap();
        assert_eq!(n, 42);
        let eth = EthernetFrame::new_checked(&f[..n]).unwrap();
        assert_eq!(eth.dst_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(eth.src_addr(), gw_mac());
        let r = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(r.operation(), ArpOperation::Reply);
        assert_eq!(r.source_hw_addr(), gw_mac());
        assert_eq!(r.source_ip(), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(r.target_hw_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(r.target_ip(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(&f[..n], &REPLY[..], "byte for byte");
        // A reply is not answered, and nothing is changed.
        let before = f;
        assert!(arp_reply_in_place(&mut f, gw_mac()).is_err());
        assert_eq!(f, before);
    }

    #[test]
    fn reply_in_place_keeps_vlan_tag() {
        let mut f = [0u8; 64];
        f[..12].copy_from_slice(&REQUEST[..12]);
        f[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        f[16..60].copy_from_slice(&REQUEST[12..56]);
        let n = arp_reply_in_place(&mut f, gw_mac()).unwrap();
        assert_eq!(n, 46);
        let eth = EthernetFrame::new_checked(&f[..n]).unwrap();
        assert_eq!(eth.vid(), Some(7));
        let p = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(p.source_hw_addr(), gw_mac());
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (p.operation(), p.source_hw_addr(), p.source_ip());
                let _ = (p.target_hw_addr(), p.target_ip());
            }
            let mut d = data.clone();
            let _ = arp_reply_in_place(&mut d, MacAddr::ZERO);
        }
    }
}
