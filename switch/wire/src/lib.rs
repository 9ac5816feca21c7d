//! The bottom of vswitch: the formats of the bytes on the wire, shared by the switch and the
//! VXLAN crate (`encap`), with no I/O and no dependency on either.
//!
//! Views over frame bytes, in smoltcp's style: `new_checked` validates untrusted input once,
//! after which no accessor panics; typed getters and setters for the fields the switch rewrites.
//!
//! * [`EthernetFrame`] (with 802.1Q / QinQ tag detection) and [`insert_vlan_tag`] /
//!   [`strip_vlan_tag`] that move the MAC addresses inside a slot's headroom; [`MacAddr`].
//! * [`ArpPacket`] (Ethernet/IPv4 only), [`Ipv4Packet`], [`UdpPacket`], [`TcpPacket`],
//!   [`IcmpPacket`] (ICMPv4).
//! * [`checksum`]: the Internet checksum, the IPv4 pseudo-header, RFC 1624 incremental updates
//!   and [`checksum::finish_partial_checksum`] for `VIRTIO_NET_HDR_F_NEEDS_CSUM` frames.
//! * [`vnet`]: the `virtio_net_hdr` ([`VnetHdr`]) that AF_PACKET and TAP put in front of each
//!   frame; [`gso`]: segmentation of GSO super-frames and TCP coalescing (GRO);
//!   [`too_big`]: the ICMP "fragmentation needed" answer to a frame over a path's MTU.
//! * The gateway's in-place builders ([`arp_reply_in_place`], [`icmp_echo_reply_in_place`]).
//! * [`PortId`] and [`NetworkId`]: the switch's ids as `u16` newtypes (zero cost:
//!   `#[repr(transparent)]`).
//!
//! Everything here is allocation-free; accessors are `#[inline]`.
//!
//! Each view has two constructors: `new_unchecked` (no validation: the accessors may panic if
//! the buffer is too short, for hot paths that already checked) and `new_checked` (validates
//! every length field the accessors rely on; afterwards no accessor panics, whatever the bytes).

mod arp;
pub mod checksum;
mod error;
mod ethernet;
pub mod gso;
mod icmp;
mod id;
mod ipv4;
mod mac;
mod tcp;
pub mod too_big;
mod udp;
pub mod vnet;

pub use arp::{arp_reply_in_place, ArpOperation, ArpPacket, ARP_LEN};
pub use error::WireError;
pub use ethernet::{
    insert_vlan_tag, strip_vlan_tag, EthernetFrame, VlanTag, ETHERNET_HEADER_LEN, VLAN_TAG_LEN,
};
pub use icmp::{
    icmp_echo_reply_in_place, IcmpPacket, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMP_HEADER_LEN, ICMP_TIME_EXCEEDED,
};
pub use id::{NetworkId, PortId};
pub use ipv4::{Ipv4Packet, IPV4_HEADER_LEN};
pub use mac::{MacAddr, ParseMacError};
pub use tcp::{TcpPacket, TCP_CHECKSUM_OFFSET, TCP_HEADER_LEN};
pub use udp::{UdpPacket, UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN};
pub use vnet::VnetHdr;

/// EtherType values (IEEE 802 numbers) the switch looks at.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q VLAN tag (customer tag, C-TAG).
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service tag (S-TAG, "QinQ").
    pub const QINQ: u16 = 0x88a8;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86dd;

    /// True for a TPID that announces a VLAN tag (802.1Q or 802.1ad).
    #[inline]
    pub fn is_vlan(ethertype: u16) -> bool {
        ethertype == VLAN || ethertype == QINQ
    }
}

/// IP protocol numbers (the IPv4 `protocol` field).
pub mod ip_proto {
    /// Internet Control Message Protocol.
    pub const ICMP: u8 = 1;
    /// Internet Group Management Protocol.
    pub const IGMP: u8 = 2;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits, as [`TcpPacket::flags`] returns them (the low nine bits of header bytes
/// 12..14); the gateway's TCP engine tests and writes them as plain `u16` masks.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer significant.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
    /// ECN nonce (historic).
    pub const NS: u16 = 0x100;
}

/// Reads a big-endian u16 at `at` (panics when out of bounds: callers validated lengths).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian u16 at `at`.
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `at`.
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Reads an IPv4 address at `at`.
#[inline(always)]
pub(crate) fn ip4(b: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}
