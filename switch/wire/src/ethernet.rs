//! Ethernet II frames with up to two VLAN tags (802.1Q C-TAG, 802.1ad S-TAG).

use super::{be16, ethertype, put16, MacAddr, WireError};

/// Destination, source and EtherType: 14 bytes.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// One 802.1Q tag: TPID and TCI, 4 bytes.
pub const VLAN_TAG_LEN: usize = 4;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// An 802.1Q / 802.1ad tag: the TPID (0x8100 or 0x88a8) and the tag control information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier ([`ethertype::VLAN`] or [`ethertype::QINQ`]).
    pub tpid: u16,
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// A C-TAG (TPID 0x8100) with priority `pcp` (0..=7) and VLAN id `vid` (0..=4095); higher
    /// bits of either are dropped.
    #[inline]
    pub fn new(pcp: u8, vid: u16) -> VlanTag {
        VlanTag {
            tpid: ethertype::VLAN,
            tci: (u16::from(pcp & 7) << 13) | (vid & 0x0fff),
        }
    }

    /// The 12-bit VLAN identifier.
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }

    /// The 3-bit priority code point.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci >> 13) as u8
    }

    /// The drop-eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// A view over an Ethernet II frame, possibly VLAN-tagged (at most two tags are parsed; a
/// third TPID is reported as the payload EtherType).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after [`EthernetFrame::check_len`]: afterwards no accessor panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the buffer holds the base header and every VLAN tag it announces.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < ETHERNET_HEADER_LEN {
            return Err(WireError::truncated(
                "Ethernet header",
                ETHERNET_HEADER_LEN,
                b.len(),
            ));
        }
        if ethertype::is_vlan(be16(b, 12)) {
            if b.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
                return Err(WireError::truncated("802.1Q tag", 18, b.len()));
            }
            if ethertype::is_vlan(be16(b, 16)) && b.len() < ETHERNET_HEADER_LEN + 2 * VLAN_TAG_LEN {
                return Err(WireError::truncated("inner 802.1Q tag", 22, b.len()));
            }
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::DST..])
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SRC..])
    }

    /// The EtherType field at offset 12 (a TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Number of VLAN tags parsed: 0, 1 or 2.
    #[inline]
    pub fn vlan_count(&self) -> usize {
        let b = self.buffer.as_ref();
        if !ethertype::is_vlan(be16(b, 12)) {
            0
        } else if ethertype::is_vlan(be16(b, 16)) {
            2
        } else {
            1
        }
    }

    /// True when the frame carries at least one VLAN tag.
    #[inline]
    pub fn is_vlan_tagged(&self) -> bool {
        ethertype::is_vlan(self.ethertype())
    }

    /// The outer VLAN tag, if any.
    #[inline]
    pub fn vlan_tag(&self) -> Option<VlanTag> {
        let b = self.buffer.as_ref();
        let tpid = be16(b, 12);
        ethertype::is_vlan(tpid).then(|| VlanTag {
            tpid,
            tci: be16(b, 14),
        })
    }

    /// The inner VLAN tag of a double-tagged (QinQ) frame.
    #[inline]
    pub fn inner_vlan_tag(&self) -> Option<VlanTag> {
        (self.vlan_count() == 2).then(|| {
            let b = self.buffer.as_ref();
            VlanTag {
                tpid: be16(b, 16),
                tci: be16(b, 18),
            }
        })
    }

    /// VLAN id of the outer tag.
    #[inline]
    pub fn vid(&self) -> Option<u16> {
        self.vlan_tag().map(|t| t.vid())
    }

    /// Priority of the outer tag.
    #[inline]
    pub fn pcp(&self) -> Option<u8> {
        self.vlan_tag().map(|t| t.pcp())
    }

    /// Length of the header including the parsed VLAN tags: 14, 18 or 22.
    #[inline]
    pub fn header_len(&self) -> usize {
        ETHERNET_HEADER_LEN + VLAN_TAG_LEN * self.vlan_count()
    }

    /// The EtherType of the payload, after the VLAN tags.
    #[inline]
    pub fn payload_ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len() - 2)
    }

    /// The bytes after the header (and tags); may include Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DST..field::DST + 6].copy_from_slice(&a.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&a.0);
    }

    /// Sets the EtherType field at offset 12. Changing it to or from a TPID changes how the
    /// rest of the frame parses; use [`insert_vlan_tag`] / [`strip_vlan_tag`] for tags.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }

    /// Rewrites the outer tag's TCI (priority and VLAN id). Returns false, changing nothing,
    /// when the frame is untagged.
    #[inline]
    pub fn set_vlan_tci(&mut self, tci: u16) -> bool {
        if !self.is_vlan_tagged() {
            return false;
        }
        put16(self.buffer.as_mut(), 14, tci);
        true
    }

    /// Swaps source and destination MAC addresses (for replies built in place).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, src) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(src);
        self.set_src_addr(dst);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// Inserts `tag` after the MAC addresses of the frame at `slot[offset..offset + len]`, moving
/// the 12 address bytes 4 bytes to the front (into headroom). The frame then starts at the
/// returned offset and is `len + 4` long. Offsets kept elsewhere (a vnet header's `csum_start`,
/// `hdr_len`) grow by 4 too; that is the caller's to adjust.
///
/// Errors, changing nothing, when the frame does not lie inside the slot, is shorter than an
/// Ethernet header, or there is less than 4 bytes of headroom.
#[inline]
pub fn insert_vlan_tag(
    slot: &mut [u8],
    offset: usize,
    len: usize,
    tag: VlanTag,
) -> Result<usize, WireError> {
    check_frame_in_slot(slot, offset, len, ETHERNET_HEADER_LEN)?;
    if offset < VLAN_TAG_LEN {
        return Err(WireError::too_small(
            "VLAN tag headroom",
            VLAN_TAG_LEN,
            offset,
        ));
    }
    let new = offset - VLAN_TAG_LEN;
    slot.copy_within(offset..offset + 12, new);
    put16(slot, new + 12, tag.tpid);
    put16(slot, new + 14, tag.tci);
    Ok(new)
}

/// Removes the outer VLAN tag of the frame at `slot[offset..offset + len]` by moving the MAC
/// addresses 4 bytes towards the payload. Returns the new offset (the frame is then `len - 4`
/// long) and the removed tag. Offsets kept elsewhere shrink by 4 (the caller adjusts them).
///
/// Errors, changing nothing, when the frame is not inside the slot, is untagged or truncated.
#[inline]
pub fn strip_vlan_tag(
    slot: &mut [u8],
    offset: usize,
    len: usize,
) -> Result<(usize, VlanTag), WireError> {
    check_frame_in_slot(slot, offset, len, ETHERNET_HEADER_LEN + VLAN_TAG_LEN)?;
    let tpid = be16(slot, offset + 12);
    if !ethertype::is_vlan(tpid) {
        return Err(WireError::malformed(
            "802.1Q strip",
            "the frame carries no VLAN tag",
        ));
    }
    let tag = VlanTag {
        tpid,
        tci: be16(slot, offset + 14),
    };
    slot.copy_within(offset..offset + 12, offset + VLAN_TAG_LEN);
    Ok((offset + VLAN_TAG_LEN, tag))
}

#[inline]
fn check_frame_in_slot(
    slot: &[u8],
    offset: usize,
    len: usize,
    min: usize,
) -> Result<(), WireError> {
    match offset.checked_add(len) {
        Some(end) if end <= slot.len() => {}
        _ => {
            return Err(WireError::malformed(
                "frame position",
                "offset + len lies beyond the end of the slot",
            ))
        }
    }
    if len < min {
        return Err(WireError::truncated("Ethernet header", min, len));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A broadcast ARP request frame header, tagged with VLAN 100 priority 5.
    const TAGGED: [u8; 22] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src
        0x81, 0x00, 0xa0, 0x64, // 802.1Q, PCP 5, VID 100
        0x08, 0x06, // ARP
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn untagged_fields() {
        let mut f = [0u8; 20];
        f[..12].copy_from_slice(&TAGGED[..12]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(e.src_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.payload_ethertype(), ethertype::IPV4);
        assert_eq!(e.vlan_count(), 0);
        assert_eq!(e.vlan_tag(), None);
        assert_eq!(e.vid(), None);
        assert_eq!(e.header_len(), 14);
        assert_eq!(e.payload().len(), 6);
    }

    #[test]
    fn tagged_fields() {
        let e = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert!(e.is_vlan_tagged());
        assert_eq!(e.vlan_count(), 1);
        assert_eq!(e.vid(), Some(100));
        assert_eq!(e.pcp(), Some(5));
        assert!(!e.vlan_tag().unwrap().dei());
        assert_eq!(e.payload_ethertype(), ethertype::ARP);
        assert_eq!(e.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(e.inner_vlan_tag(), None);
    }

    #[test]
    fn qinq_fields() {
        let mut f = [0u8; 26];
        f[..12].copy_from_slice(&TAGGED[..12]);
        f[12..22].copy_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.vlan_count(), 2);
        assert_eq!(e.vlan_tag().unwrap().tpid, ethertype::QINQ);
        assert_eq!(e.vid(), Some(10));
        assert_eq!(e.inner_vlan_tag().unwrap().vid(), 20);
        assert_eq!(e.header_len(), 22);
        assert_eq!(e.payload_ethertype(), ethertype::IPV4);
        // Truncated inner tag.
        assert!(matches!(
            EthernetFrame::new_checked(&f[..20]),
            Err(WireError::Truncated { need: 22, .. })
        ));
    }

    #[test]
    fn short_frames_rejected() {
        assert!(EthernetFrame::new_checked(&TAGGED[..13]).is_err());
        assert!(EthernetFrame::new_checked(&TAGGED[..17]).is_err());
        assert!(EthernetFrame::new_checked(&TAGGED[..18]).is_ok());
    }

    #[test]
    fn setters() {
        let mut f = TAGGED;
        let mut e = EthernetFrame::new_checked(&mut f[..]).unwrap();
        let m: MacAddr = "02:42:00:00:00:09".parse().unwrap();
        e.set_dst_addr(m);
        e.swap_addrs();
        assert_eq!(e.src_addr(), m);
        assert_eq!(e.dst_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert!(e.set_vlan_tci(VlanTag::new(1, 4000).tci));
        assert_eq!(e.vid(), Some(4000));
        assert_eq!(e.pcp(), Some(1));
        e.payload_mut()[0] = 1;
        assert_eq!(f[18], 1);
        let mut u = [0u8; 14];
        assert!(!EthernetFrame::new_unchecked(&mut u[..]).set_vlan_tci(5));
        assert_eq!(u, [0u8; 14]);
    }

    #[test]
    fn insert_then_strip_roundtrip() {
        let frame: Vec<u8> = (0..64u8).map(|i| if i == 12 { 8 } else { i }).collect();
        let mut slot = vec![0u8; 128 + 64];
        slot[128..].copy_from_slice(&frame);
        let off = insert_vlan_tag(&mut slot, 128, 64, VlanTag::new(3, 42)).unwrap();
        assert_eq!(off, 124);
        let e = EthernetFrame::new_checked(&slot[off..off + 68]).unwrap();
        assert_eq!(e.vid(), Some(42));
        assert_eq!(e.pcp(), Some(3));
        assert_eq!(&e.as_bytes()[..12], &frame[..12]);
        assert_eq!(&e.as_bytes()[16..], &frame[12..]);
        let (off2, tag) = strip_vlan_tag(&mut slot, off, 68).unwrap();
        assert_eq!(off2, 128);
        assert_eq!(tag, VlanTag::new(3, 42));
        assert_eq!(&slot[128..], &frame[..]);
    }

    #[test]
    fn insert_strip_errors() {
        let mut slot = [0u8; 40];
        assert!(insert_vlan_tag(&mut slot, 2, 20, VlanTag::new(0, 1)).is_err()); // no headroom
        assert!(insert_vlan_tag(&mut slot, 30, 20, VlanTag::new(0, 1)).is_err()); // outside
        assert!(insert_vlan_tag(&mut slot, 10, 13, VlanTag::new(0, 1)).is_err()); // too short
        assert!(insert_vlan_tag(&mut slot, usize::MAX, 2, VlanTag::new(0, 1)).is_err());
        assert!(strip_vlan_tag(&mut slot, 4, 20).is_err()); // untagged
        assert_eq!(slot, [0u8; 40]);
    }

    #[test]
    fn matches_etherparse() {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(77).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut buf, b"hello")
            .unwrap();
        let e = EthernetFrame::new_checked(&buf[..]).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&buf).unwrap();
        let eth = match p.link.unwrap() {
            etherparse::LinkSlice::Ethernet2(s) => s,
            _ => unreachable!(),
        };
        assert_eq!(e.src_addr().0, eth.source());
        assert_eq!(e.dst_addr().0, eth.destination());
        assert_eq!(e.vid(), Some(77));
        assert_eq!(e.payload_ethertype(), ethertype::IPV4);
        assert_eq!(e.header_len(), 18);
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(mut e) = EthernetFrame::new_checked(data) {
                let _ = (e.dst_addr(), e.src_addr(), e.ethertype(), e.vlan_count());
                let _ = (e.vlan_tag(), e.inner_vlan_tag(), e.vid(), e.pcp());
                let _ = (e.header_len(), e.payload_ethertype(), e.payload().len());
                e.swap_addrs();
                e.set_vlan_tci(7);
                e.payload_mut();
                prop_assert!(e.header_len() <= e.as_bytes().len());
            }
        }

        #[test]
        fn insert_strip_never_panic(
            mut slot in proptest::collection::vec(any::<u8>(), 0..80),
            off in 0usize..90, len in 0usize..90,
        ) {
            if let Ok(o) = insert_vlan_tag(&mut slot, off, len, VlanTag::new(1, 2)) {
                let (o2, t) = strip_vlan_tag(&mut slot, o, len + 4).unwrap();
                prop_assert_eq!(o2, off);
                prop_assert_eq!(t.vid(), 2);
            }
            let _ = strip_vlan_tag(&mut slot, off, len);
        }
    }

    #[test]
    fn insert_and_strip_at_the_minimum_lengths() {
        // A bare 14-byte header can be tagged, and a bare 18-byte tagged header untagged.
        let mut frame = TAGGED[..12].to_vec();
        frame.extend_from_slice(&[0x08, 0x06]);
        let mut slot = vec![0u8; 4];
        slot.extend_from_slice(&frame);
        assert_eq!(
            insert_vlan_tag(&mut slot, 4, 14, VlanTag::new(5, 100)).unwrap(),
            0
        );
        assert_eq!(&slot[..], &TAGGED[..18]);
        assert_eq!(
            strip_vlan_tag(&mut slot, 0, 18).unwrap(),
            (4, VlanTag::new(5, 100))
        );
        assert_eq!(&slot[4..], &frame[..]);
    }
}
