//! VXLAN (RFC 7348) for vswitch, without I/O.
//!
//! # Model
//!
//! A VXLAN overlay carries a network's Ethernet frames between hosts inside UDP/IPv4. Each host
//! is a VTEP (VXLAN tunnel end point); each overlay segment has a 24-bit VNI ([`Vni`]). This
//! crate does the byte work and the bookkeeping; the switch does the I/O:
//!
//! - [`VtepTable`]: which VNIs this switch serves, the [`NetworkId`](wire::NetworkId) each maps to, and the
//!   remote VTEPs of each VNI. Broadcast, unknown-unicast and multicast frames are replicated to
//!   every peer of the VNI ([`VtepTable::flood_list`], head-end replication; no IP multicast
//!   underlay is needed). Each remote VTEP has a small [`VtepId`] so the MAC table can remember
//!   "this MAC is behind VTEP 3" in a `u16`.
//! - Encap ([`template`]): an [`EncapTemplate`] per remote VTEP (and VNI) holds the 50 outer
//!   bytes; [`encap_in_place`] writes them into the headroom in front of the inner frame (the
//!   switch keeps 128 bytes of it in every slot), fixing up only lengths, the IPv4 checksum
//!   (incrementally) and the UDP source port. [`encap_into`] copies when the frame must stay
//!   (head-end replication of one frame to several VTEPs). The UDP checksum is zero.
//! - Source port ([`flow`]): a hash of the inner flow (MACs, and the IPv4/IPv6 5-tuple when
//!   there is one) mapped into 49152..=65535 or a configured [`PortRange`], so underlay ECMP
//!   spreads flows without reordering any of them.
//! - Decap ([`decap()`], [`decap_udp_payload`]): validation with a named reason per drop
//!   ([`DecapError::reason`] -> [`DecapReason`], counted by [`DecapStats`]), accepting only
//!   configured VNIs from configured peers.
//!
//! # UDP port
//!
//! vswitch speaks the IANA port **4789** ([`IANA_VXLAN_PORT`]) by default. Linux's `vxlan`
//! device uses **8472** ([`LINUX_VXLAN_PORT`]) unless created with `dstport 4789`; to talk to
//! one, either create it with `ip link add vxlan0 type vxlan id 42 dstport 4789 ...` or set
//! [`TemplateConfig::dst_port`] and the `expected_port` of [`decap()`] to 8472.
//!
//! # Limits
//!
//! IPv4 underlay only; no outer VLAN tag; outer packets are never fragmented (DF set, and
//! fragments are dropped on receipt: give the underlay an MTU 50 bytes above the overlay's);
//! GSO super-frames must be segmented before encap (the outer IPv4 length is 16 bits).

pub mod decap;
pub mod flow;
pub mod template;
pub mod vtep;
pub mod vxlan;

pub use decap::{decap, decap_udp_payload, DecapError, DecapReason, DecapStats, Decapped, Layer};
pub use flow::{flow_hash, PortRange, PortRangeError, DEFAULT_SRC_PORTS};
pub use template::{
    encap_in_place, encap_into, encap_udp_payload_in_place, EncapError, EncapTemplate,
    TemplateConfig, TemplateError, MAX_INNER_LEN, OUTER_LEN,
};
pub use vtep::{PeerRemoved, VtepId, VtepTable, VtepTableError};
pub use vxlan::{
    Vni, VniOutOfRange, VxlanError, VxlanHeader, IANA_VXLAN_PORT, LINUX_VXLAN_PORT, VXLAN_HDR_LEN,
};
