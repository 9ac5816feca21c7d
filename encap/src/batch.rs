//! Helpers that run encap or decap over a burst of frames held in slots (the switch's batch:
//! one fixed-size slot per frame, the frame at some offset inside it).
//!
//! The caller hands an iterator of `(slot bytes, frame span)` pairs — for a batch, typically
//! `storage.chunks_exact_mut(slot_size).zip(meta.iter_mut())` filtered to the frames that take
//! this path — and the helpers rewrite each span in place: after encap it covers the outer
//! packet (50 bytes earlier, 50 bytes longer), after decap the inner frame. No frame is copied
//! and nothing is allocated.

use std::net::Ipv4Addr;

use crate::decap::{decap, decap_udp_payload, DecapError, DecapStats, Decapped};
use crate::template::{
    encap_in_place, encap_udp_payload_in_place, EncapError, EncapTemplate, OUTER_LEN,
};
use crate::vtep::VtepTable;
use crate::vxlan::{Vni, VXLAN_HDR_LEN};

/// Where a frame lies inside its slot. The switch implements it for its frame metadata.
pub trait FrameSpan {
    /// `(offset, len)` of the frame inside its slot.
    fn span(&self) -> (usize, usize);
    /// Moves the frame to `offset` and sets its length.
    fn set_span(&mut self, offset: usize, len: usize);
}

/// A plain span, for callers without their own metadata type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the frame in its slot.
    pub offset: usize,
    /// Length of the frame.
    pub len: usize,
}

impl FrameSpan for Span {
    #[inline]
    fn span(&self) -> (usize, usize) {
        (self.offset, self.len)
    }
    #[inline]
    fn set_span(&mut self, offset: usize, len: usize) {
        self.offset = offset;
        self.len = len;
    }
}

/// Encapsulates every frame in place with `template`, each with the source port of its own flow
/// hash. Frames that cannot be encapsulated are left untouched and reported to `on_drop` with
/// their position in the iteration. Returns how many were encapsulated.
pub fn encap_batch<'a, F, I>(
    template: &EncapTemplate,
    frames: I,
    mut on_drop: impl FnMut(usize, EncapError),
) -> usize
where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a mut [u8], &'a mut F)>,
{
    let mut done = 0;
    for (i, (slot, meta)) in frames.into_iter().enumerate() {
        let (off, len) = meta.span();
        let port = match slot.get(off..off.saturating_add(len)) {
            Some(inner) => template.src_port_for(inner),
            None => 0, // encap_in_place reports the bad span below
        };
        match encap_in_place(template, slot, off, len, port) {
            Ok(start) => {
                meta.set_span(start, len + OUTER_LEN);
                done += 1;
            }
            Err(e) => on_drop(i, e),
        }
    }
    done
}

/// For a UDP socket uplink: prepends only the VXLAN header of `vni` to every frame (the kernel
/// adds IPv4 and UDP). Same contract as [`encap_batch`].
pub fn encap_udp_payload_batch<'a, F, I>(
    vni: Vni,
    frames: I,
    mut on_drop: impl FnMut(usize, EncapError),
) -> usize
where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a mut [u8], &'a mut F)>,
{
    let mut done = 0;
    for (i, (slot, meta)) in frames.into_iter().enumerate() {
        let (off, len) = meta.span();
        match encap_udp_payload_in_place(vni, slot, off, len) {
            Ok(start) => {
                meta.set_span(start, len + VXLAN_HDR_LEN);
                done += 1;
            }
            Err(e) => on_drop(i, e),
        }
    }
    done
}

/// Decapsulates whole outer frames in place: on success the span is moved onto the inner frame
/// and `on_frame(i, Ok(decapped))` is called; on failure the span is left alone and
/// `on_frame(i, Err(e))` is called. Every outcome is counted in `stats`.
pub fn decap_batch<'a, F, I>(
    frames: I,
    expected_port: u16,
    table: &VtepTable,
    stats: &mut DecapStats,
    mut on_frame: impl FnMut(usize, Result<Decapped, DecapError>),
) where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a [u8], &'a mut F)>,
{
    for (i, (slot, meta)) in frames.into_iter().enumerate() {
        let (off, len) = meta.span();
        let r = match slot.get(off..off.saturating_add(len)) {
            Some(outer) => decap(outer, expected_port, table),
            None => Err(DecapError::Truncated {
                layer: crate::decap::Layer::Ethernet,
                need: off.saturating_add(len),
                have: slot.len(),
            }),
        };
        stats.record(&r);
        if let Ok(d) = &r {
            meta.set_span(off + d.inner_offset, d.inner_len);
        }
        on_frame(i, r);
    }
}

/// Decapsulates UDP payloads received by a socket (each with its sender's address) in place,
/// with the same contract as [`decap_batch`].
pub fn decap_udp_payload_batch<'a, F, I>(
    frames: I,
    table: &VtepTable,
    stats: &mut DecapStats,
    mut on_frame: impl FnMut(usize, Result<Decapped, DecapError>),
) where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a [u8], &'a mut F, Ipv4Addr)>,
{
    for (i, (slot, meta, src)) in frames.into_iter().enumerate() {
        let (off, len) = meta.span();
        let r = match slot.get(off..off.saturating_add(len)) {
            Some(p) => decap_udp_payload(p, src, table),
            None => Err(DecapError::Truncated {
                layer: crate::decap::Layer::Vxlan,
                need: off.saturating_add(len),
                have: slot.len(),
            }),
        };
        stats.record(&r);
        if let Ok(d) = &r {
            meta.set_span(off + d.inner_offset, d.inner_len);
        }
        on_frame(i, r);
    }
}
