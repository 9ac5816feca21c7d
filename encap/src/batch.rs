//! Helpers that run encap or decap over a burst of frames held in slots (the switch's batch:
//! one fixed-size slot per frame, the frame at some offset inside it).
//!
//! The caller hands an iterator of `(slot bytes, frame span)` pairs — for a batch, typically
//! `storage.chunks_exact_mut(slot_size).zip(meta.iter_mut())` filtered to the frames that take
//! this path — and the helpers rewrite each span in place: after encap it covers the outer
//! packet (50 bytes earlier, 50 bytes longer), after decap the inner frame. No frame is copied
//! and nothing is allocated.

use std::net::Ipv4Addr;

use crate::decap::{decap, decap_udp_payload, DecapError, DecapStats, Decapped, Layer};
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
    on_drop: impl FnMut(usize, EncapError),
) -> usize
where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a mut [u8], &'a mut F)>,
{
    encap_each(frames, OUTER_LEN, on_drop, |slot, off, len| {
        let port = match slot.get(off..off.saturating_add(len)) {
            Some(inner) => template.src_port_for(inner),
            None => 0, // encap_in_place reports the bad span
        };
        encap_in_place(template, slot, off, len, port)
    })
}

/// For a UDP socket uplink: prepends only the VXLAN header of `vni` to every frame (the kernel
/// adds IPv4 and UDP). Same contract as [`encap_batch`].
pub fn encap_udp_payload_batch<'a, F, I>(
    vni: Vni,
    frames: I,
    on_drop: impl FnMut(usize, EncapError),
) -> usize
where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a mut [u8], &'a mut F)>,
{
    encap_each(frames, VXLAN_HDR_LEN, on_drop, |slot, off, len| {
        encap_udp_payload_in_place(vni, slot, off, len)
    })
}

/// The loop of both encap helpers: `encap(slot, offset, len)` writes `added` bytes of headers
/// before each frame and returns where they start; the span then covers them.
#[inline]
fn encap_each<'a, F, I>(
    frames: I,
    added: usize,
    mut on_drop: impl FnMut(usize, EncapError),
    mut encap: impl FnMut(&mut [u8], usize, usize) -> Result<usize, EncapError>,
) -> usize
where
    F: FrameSpan + 'a,
    I: IntoIterator<Item = (&'a mut [u8], &'a mut F)>,
{
    let mut done = 0;
    for (i, (slot, meta)) in frames.into_iter().enumerate() {
        let (off, len) = meta.span();
        match encap(slot, off, len) {
            Ok(start) => {
                meta.set_span(start, len + added);
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
        let r = decap_one(slot, meta, Layer::Ethernet, stats, |outer| {
            decap(outer, expected_port, table)
        });
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
        let r = decap_one(slot, meta, Layer::Vxlan, stats, |p| {
            decap_udp_payload(p, src, table)
        });
        on_frame(i, r);
    }
}

/// One frame of both decap helpers: `decap` of the span's bytes (a span outside the slot is a
/// `Truncated` error at `layer`), counted in `stats`; on success the span moves onto the
/// inner frame.
#[inline]
fn decap_one<F: FrameSpan>(
    slot: &[u8],
    meta: &mut F,
    layer: Layer,
    stats: &mut DecapStats,
    decap: impl FnOnce(&[u8]) -> Result<Decapped, DecapError>,
) -> Result<Decapped, DecapError> {
    let (off, len) = meta.span();
    let r = match slot.get(off..off.saturating_add(len)) {
        Some(p) => decap(p),
        None => Err(DecapError::Truncated {
            layer,
            need: off.saturating_add(len),
            have: slot.len(),
        }),
    };
    stats.record(&r);
    if let Ok(d) = &r {
        meta.set_span(off + d.inner_offset, d.inner_len);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decap::{DecapReason, Layer};
    use crate::flow::tests::ipv4_frame;
    use crate::template::TemplateConfig;

    const SLOT: usize = 512;
    const HEADROOM: usize = 128;
    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn vni() -> Vni {
        Vni::new(5000).unwrap()
    }

    /// Four frames of different flows and sizes, plus one too short to encapsulate.
    fn setup() -> (Vec<u8>, Vec<Span>, Vec<Vec<u8>>) {
        let mut storage = vec![0u8; SLOT * 5];
        let mut spans = Vec::new();
        let mut frames = Vec::new();
        for i in 0..5u8 {
            let f = if i == 4 {
                vec![0xee; 10]
            } else {
                ipv4_frame(
                    [2, 0, 0, 0, 0, i],
                    [2, 0, 0, 0, 1, i],
                    [172, 17, 0, i],
                    [172, 17, 0, 99],
                    17,
                    1000 + u16::from(i),
                    53,
                    usize::from(i) * 100,
                )
            };
            let at = usize::from(i) * SLOT + HEADROOM;
            storage[at..at + f.len()].copy_from_slice(&f);
            spans.push(Span {
                offset: HEADROOM,
                len: f.len(),
            });
            frames.push(f);
        }
        (storage, spans, frames)
    }

    fn table() -> VtepTable {
        let mut t = VtepTable::new();
        t.add_vni(vni(), 3).unwrap();
        t.add_peer(vni(), LOCAL).unwrap();
        t
    }

    #[test]
    fn encap_then_decap_restores_every_frame() {
        let (mut storage, mut spans, frames) = setup();
        let cfg = TemplateConfig::new(
            [2, 0, 0, 0, 0, 0xa],
            [2, 0, 0, 0, 0, 0xb],
            LOCAL,
            PEER,
            vni(),
        );
        let t = EncapTemplate::new(&cfg).unwrap();
        let mut drops = Vec::new();
        let n = encap_batch(
            &t,
            storage.chunks_exact_mut(SLOT).zip(spans.iter_mut()),
            |i, e| drops.push((i, e)),
        );
        assert_eq!(n, 4);
        assert_eq!(drops, vec![(4, EncapError::InnerTooShort(10))]);
        assert_eq!(
            spans[4],
            Span {
                offset: HEADROOM,
                len: 10
            },
            "dropped frame untouched"
        );
        let mut ports = std::collections::HashSet::new();
        for (i, s) in spans.iter().take(4).enumerate() {
            assert_eq!(
                *s,
                Span {
                    offset: HEADROOM - OUTER_LEN,
                    len: frames[i].len() + OUTER_LEN
                }
            );
            let slot = &storage[i * SLOT..(i + 1) * SLOT];
            let port = u16::from_be_bytes([slot[s.offset + 34], slot[s.offset + 35]]);
            assert_eq!(port, t.src_port_for(&frames[i]));
            ports.insert(port);
        }
        assert!(
            ports.len() > 1,
            "different flows got different source ports"
        );

        // The receiving side: the peer's table knows LOCAL as a peer of the VNI.
        let rt = table();
        let mut stats = crate::decap::DecapStats::default();
        let mut seen = Vec::new();
        decap_batch(
            storage.chunks_exact(SLOT).zip(spans.iter_mut()),
            4789,
            &rt,
            &mut stats,
            |i, r| seen.push((i, r.map(|d| d.network).map_err(|e| e.reason()))),
        );
        assert_eq!(stats.ok, 4);
        assert_eq!(stats.dropped(DecapReason::Truncated), 1); // the 10-byte frame
        assert_eq!(seen[4], (4, Err(DecapReason::Truncated)));
        assert!(seen[..4].iter().all(|(_, r)| *r == Ok(3)));
        for (i, s) in spans.iter().enumerate() {
            assert_eq!(
                *s,
                Span {
                    offset: HEADROOM,
                    len: frames[i].len()
                }
            );
            assert_eq!(
                &storage[i * SLOT + s.offset..i * SLOT + s.offset + s.len],
                &frames[i][..]
            );
        }
    }

    #[test]
    fn udp_payload_batch_roundtrip() {
        let (mut storage, mut spans, frames) = setup();
        let mut drops = Vec::new();
        let n = encap_udp_payload_batch(
            vni(),
            storage.chunks_exact_mut(SLOT).zip(spans.iter_mut()),
            |i, e| drops.push((i, e)),
        );
        assert_eq!((n, drops.len()), (4, 1));
        assert_eq!(
            spans[0],
            Span {
                offset: HEADROOM - 8,
                len: frames[0].len() + 8
            }
        );
        let rt = table();
        let mut stats = crate::decap::DecapStats::default();
        let mut oks = 0;
        let items = storage
            .chunks_exact(SLOT)
            .zip(spans.iter_mut())
            .map(|(s, m)| (s, m, LOCAL));
        decap_udp_payload_batch(items, &rt, &mut stats, |_, r| oks += usize::from(r.is_ok()));
        assert_eq!((oks, stats.ok), (4, 4));
        assert_eq!(stats.dropped(DecapReason::Truncated), 1);
        assert_eq!(
            spans[2],
            Span {
                offset: HEADROOM,
                len: frames[2].len()
            }
        );
    }

    #[test]
    fn spans_outside_the_slot_are_reported_not_panicked() {
        let mut slot = [0u8; 64];
        let mut span = Span {
            offset: 60,
            len: 100,
        };
        let mut stats = crate::decap::DecapStats::default();
        let mut got = None;
        decap_batch(
            std::iter::once((&slot[..], &mut span)),
            4789,
            &table(),
            &mut stats,
            |_, r| got = Some(r),
        );
        assert_eq!(
            got,
            Some(Err(DecapError::Truncated {
                layer: Layer::Ethernet,
                need: 160,
                have: 64
            }))
        );
        let cfg = TemplateConfig::new(
            [2, 0, 0, 0, 0, 0xa],
            [2, 0, 0, 0, 0, 0xb],
            LOCAL,
            PEER,
            vni(),
        );
        let t = EncapTemplate::new(&cfg).unwrap();
        let mut err = None;
        let n = encap_batch(&t, std::iter::once((&mut slot[..], &mut span)), |_, e| {
            err = Some(e)
        });
        assert_eq!(n, 0);
        assert!(matches!(err, Some(EncapError::OutOfBounds { .. })));
        assert_eq!(
            span,
            Span {
                offset: 60,
                len: 100
            }
        );
    }
}
