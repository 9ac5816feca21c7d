//! Frame batches: the unit of work of the data plane.
//!
//! A [`Batch`] owns `BATCH_SIZE` fixed-size slots allocated once. Ports receive a burst into a
//! batch, the pipeline decides over the whole batch, and ports send selected frames of the same
//! batch (by index), so a frame is never copied between receive and send inside the switch and
//! nothing is allocated per frame. Each slot keeps [`HEADROOM`] bytes in front of the frame so a
//! stage can prepend a header (an 802.1Q tag, a VXLAN outer header) in place.
//!
//! Every frame carries a [`VnetHdr`]: the `virtio_net_hdr` that AF_PACKET (`PACKET_VNET_HDR`)
//! and TAP (`IFF_VNET_HDR`) exchange with the kernel. It is how GSO super-frames (up to 64 KiB)
//! and partial checksums pass through the switch unsplit.

/// Frames per batch (VPP and OVS use 256 and 32; 64 suits AF_PACKET and TAP bursts).
pub const BATCH_SIZE: usize = 64;
/// Bytes kept free in front of each frame for headers pushed in place.
pub const HEADROOM: usize = 128;
/// Slot size for ports that pass GSO frames (64 KiB payload plus headers and headroom).
pub const GSO_SLOT: usize = 65536 + 256 + HEADROOM;
/// Slot size for ports limited to one MTU-sized frame (jumbo frames included).
pub const MTU_SLOT: usize = 9216 + HEADROOM;

/// `[0, 1, ..., BATCH_SIZE - 1]`: a selection of the first frames of a batch, in order.
static ALL_FRAMES: [u16; BATCH_SIZE] = {
    let mut a = [0u16; BATCH_SIZE];
    let mut i = 0;
    while i < BATCH_SIZE {
        a[i] = i as u16;
        i += 1;
    }
    a
};

/// The selection of the first `n` frames of a batch (for `Port::send_burst`), `n <= BATCH_SIZE`.
#[inline]
pub fn all_frames(n: usize) -> &'static [u16] {
    &ALL_FRAMES[..n.min(BATCH_SIZE)]
}

pub use wire::vnet::{
    VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4,
    VNET_GSO_TCPV6, VNET_GSO_UDP, VNET_GSO_UDP_L4, VNET_HDR_LEN,
};

/// Per-frame metadata kept beside the bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameMeta {
    /// Offset of the first byte of the frame inside its slot (normally [`HEADROOM`]).
    pub offset: u32,
    /// Length of the frame in bytes.
    pub len: u32,
    /// Offload metadata; all zero for a plain frame.
    pub vnet: VnetHdr,
    /// Set by ports that receive frames for several logical ingresses: a tunnel port writes
    /// the virtual port (remote VTEP of one network) each decapsulated frame came from. Zero
    /// from every other port.
    pub tag: u32,
}

/// A batch of up to [`BATCH_SIZE`] frames in preallocated slots.
pub struct Batch {
    storage: Box<[u8]>,
    slot: usize,
    count: usize,
    meta: [FrameMeta; BATCH_SIZE],
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slot", &self.slot)
            .field("count", &self.count)
            .finish()
    }
}

impl Batch {
    /// A batch whose slots hold `slot` bytes each (headroom included). Use [`GSO_SLOT`] for
    /// ports that pass offloads and [`MTU_SLOT`] otherwise. Pages are touched lazily, so an
    /// idle GSO batch costs little resident memory.
    pub fn new(slot: usize) -> Self {
        assert!(slot > HEADROOM + 64, "slot too small");
        Batch {
            storage: vec![0u8; slot * BATCH_SIZE].into_boxed_slice(),
            slot,
            count: 0,
            meta: [FrameMeta::default(); BATCH_SIZE],
        }
    }

    /// Slot size in bytes.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// Largest frame a slot can receive (slot minus headroom).
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.slot - HEADROOM
    }

    /// Number of frames in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch holds no frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when no more frames fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.count == BATCH_SIZE
    }

    /// Forgets all frames (the slots are kept).
    #[inline]
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// The bytes of frame `i`.
    #[inline]
    pub fn frame(&self, i: usize) -> &[u8] {
        let m = &self.meta[i];
        let start = i * self.slot + m.offset as usize;
        &self.storage[start..start + m.len as usize]
    }

    /// The bytes of frame `i`, writable.
    #[inline]
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let m = self.meta[i];
        let start = i * self.slot + m.offset as usize;
        &mut self.storage[start..start + m.len as usize]
    }

    /// Metadata of frame `i`.
    #[inline]
    pub fn meta(&self, i: usize) -> &FrameMeta {
        &self.meta[i]
    }

    /// Metadata of frame `i`, writable.
    #[inline]
    pub fn meta_mut(&mut self, i: usize) -> &mut FrameMeta {
        &mut self.meta[i]
    }

    /// The receive area of the next free slot (after the headroom), for a port to fill.
    /// Call [`Batch::commit`] with the received length to add the frame. Panics when full.
    #[inline]
    pub fn next_slot(&mut self) -> &mut [u8] {
        assert!(self.count < BATCH_SIZE, "batch full");
        let start = self.count * self.slot + HEADROOM;
        &mut self.storage[start..(self.count + 1) * self.slot]
    }

    /// Adds the frame written into [`Batch::next_slot`] with length `len` and offload `vnet`.
    #[inline]
    pub fn commit(&mut self, len: usize, vnet: VnetHdr) {
        debug_assert!(len <= self.max_frame());
        self.meta[self.count] = FrameMeta {
            offset: HEADROOM as u32,
            len: len as u32,
            vnet,
            tag: 0,
        };
        self.count += 1;
    }

    /// Drops the last frame added (a stage that started a frame and gave up on it).
    #[inline]
    pub fn clear_last(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    /// Copies `frame` into the next slot. Returns false (and adds nothing) when the batch is
    /// full or the frame does not fit a slot.
    pub fn push(&mut self, frame: &[u8], vnet: VnetHdr) -> bool {
        if self.is_full() || frame.len() > self.max_frame() {
            return false;
        }
        self.next_slot()[..frame.len()].copy_from_slice(frame);
        self.commit(frame.len(), vnet);
        true
    }

    /// Grows frame `i` by `n` bytes at the front, using headroom, and returns the whole frame.
    /// Returns `None` when the headroom is exhausted.
    #[inline]
    pub fn push_front(&mut self, i: usize, n: usize) -> Option<&mut [u8]> {
        let m = &mut self.meta[i];
        if (m.offset as usize) < n {
            return None;
        }
        m.offset -= n as u32;
        m.len += n as u32;
        Some(self.frame_mut(i))
    }

    /// Removes `n` bytes from the front of frame `i`. Returns false if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, i: usize, n: usize) -> bool {
        let m = &mut self.meta[i];
        if (m.len as usize) < n {
            return false;
        }
        m.offset += n as u32;
        m.len -= n as u32;
        true
    }

    /// The whole slot `i` and the frame's offset in it, for stages that move bytes around
    /// (inserting a VLAN tag after the MAC addresses, say).
    #[inline]
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], &mut FrameMeta) {
        let s = &mut self.storage[i * self.slot..(i + 1) * self.slot];
        (s, &mut self.meta[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read_back() {
        let mut b = Batch::new(MTU_SLOT);
        assert!(b.is_empty());
        assert!(b.push(&[1, 2, 3], VnetHdr::default()));
        assert!(b.push(
            &[4; 60],
            VnetHdr {
                gso_type: 1,
                ..Default::default()
            }
        ));
        assert_eq!(b.len(), 2);
        assert_eq!(b.frame(0), &[1, 2, 3]);
        assert_eq!(b.frame(1).len(), 60);
        assert!(b.meta(1).vnet.is_gso());
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn full_batch_and_oversize_refused() {
        let mut b = Batch::new(MTU_SLOT);
        let big = vec![0u8; b.max_frame() + 1];
        assert!(!b.push(&big, VnetHdr::default()));
        for _ in 0..BATCH_SIZE {
            assert!(b.push(&[0; 64], VnetHdr::default()));
        }
        assert!(b.is_full());
        assert!(!b.push(&[0; 64], VnetHdr::default()));
    }

    #[test]
    fn headroom_push_pull() {
        let mut b = Batch::new(MTU_SLOT);
        b.push(&[9; 20], VnetHdr::default());
        let f = b.push_front(0, 4).unwrap();
        assert_eq!(f.len(), 24);
        f[..4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&b.frame(0)[..5], &[1, 2, 3, 4, 9]);
        assert!(b.pull_front(0, 4));
        assert_eq!(b.frame(0), &[9; 20]);
        assert!(b.push_front(0, HEADROOM + 1).is_none());
        assert!(!b.pull_front(0, 21));
    }
}
