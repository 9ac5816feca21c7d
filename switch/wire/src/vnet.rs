//! The `virtio_net_hdr` (legacy, 10 bytes) that AF_PACKET (`PACKET_VNET_HDR`) and TAP
//! (`IFF_VNET_HDR`) exchange with the kernel in front of every frame: how GSO super-frames (up
//! to 64 KiB) and partial checksums pass through the switch unsplit.

/// `virtio_net_hdr` flag: the checksum from `csum_start` with offset `csum_offset` is partial.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr` flag: the checksum is known to be valid.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const VNET_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 segmentation.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (legacy).
pub const VNET_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 segmentation.
pub const VNET_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (UDP_L4).
pub const VNET_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: ECN.
pub const VNET_GSO_ECN: u8 = 0x80;
/// Size of the legacy `virtio_net_hdr` on the wire (AF_PACKET and TAP by default).
pub const VNET_HDR_LEN: usize = 10;

/// The offload metadata of one frame (`struct virtio_net_hdr`, host byte order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the 10-byte legacy header (native endian, as the kernel writes it on x86/arm).
    #[inline]
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    /// Writes the 10-byte legacy header.
    #[inline]
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// True when the frame is a GSO super-frame that a plain port would have to segment.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !VNET_GSO_ECN != VNET_GSO_NONE
    }

    /// True when the frame carries a partial checksum that must be finished before it reaches a
    /// receiver that does not understand vnet headers.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & VNET_F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_roundtrip() {
        let v = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&v.to_bytes()), v);
        assert!(v.needs_csum() && v.is_gso());
    }

    #[test]
    fn gso_is_the_type_without_the_ecn_bit() {
        let v = |gso_type| VnetHdr {
            gso_type,
            ..Default::default()
        };
        assert!(!v(VNET_GSO_NONE).is_gso());
        assert!(!v(VNET_GSO_ECN).is_gso(), "ECN alone is not a GSO type");
        assert!(v(VNET_GSO_TCPV4 | VNET_GSO_ECN).is_gso());
        assert!(v(VNET_GSO_UDP_L4).is_gso());
        assert!(!VnetHdr::default().needs_csum());
    }
}
