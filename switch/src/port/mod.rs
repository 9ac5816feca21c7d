//! Ports: where frames enter and leave the switch.
//!
//! A port receives a burst into a [`Batch`] and sends a selection of a batch's frames by index.
//! Both calls are non-blocking and batched, so one call moves many frames: an AF_PACKET ring
//! (veth host ends), AF_XDP rings (veth host ends in xdp mode), a TAP file descriptor with vnet headers, a UDP socket with
//! recvmmsg/sendmmsg (VXLAN) and the in-memory port used by tests all fit behind it.

use crate::batch::Batch;
use std::io;
use std::os::fd::RawFd;

pub mod afpacket;
pub mod bpf;
pub mod mem;
pub mod sys;
pub mod tap;
pub mod vxlan;
pub mod vxlan_tap;
pub mod xdp;

/// Index of a port in the switch (dense, reused after removal): a `u16` newtype from `wire`.
pub use crate::wire::PortId;

/// What a port can carry, so the switch knows when it must finish offloads in software.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCaps {
    /// The port exchanges `virtio_net_hdr` with the kernel: GSO frames and partial checksums
    /// pass through it unsplit.
    pub vnet_hdr: bool,
}

/// A source and sink of frames.
pub trait Port: Send {
    /// A short name for listings (the host-side interface name, say).
    fn name(&self) -> &str;

    /// What the port can carry.
    fn caps(&self) -> PortCaps;

    /// Receives up to the batch's free capacity of frames, appending them to `batch`.
    /// Never blocks: returns `Ok(0)` when nothing is pending.
    fn recv_burst(&mut self, batch: &mut Batch) -> io::Result<usize>;

    /// Sends the frames `batch.frame(i)` for `i` in `sel`, in order. Never blocks: returns how
    /// many of the first frames were accepted; the caller counts the rest as dropped (TX full).
    fn send_burst(&mut self, batch: &Batch, sel: &[u16]) -> io::Result<usize>;

    /// The file descriptor that becomes readable when frames are pending, for the event loop.
    /// `None` for ports that are polled (the in-memory port).
    fn raw_fd(&self) -> Option<RawFd>;

    /// Whether frames wait, for a port that can tell without a system call (its receive ring
    /// is shared memory); `None` for one that cannot. The worker takes a port that can off its
    /// event loop while it is busy and peeks at it instead: a socket in an epoll set pays an
    /// epoll callback, under two interrupt-disabling locks, for every frame it sends once the
    /// kernel frees it, which cost the AF_XDP port 15% of its frame rate
    /// ([`crate::worker`]'s quiet ports).
    fn rx_pending(&self) -> Option<bool> {
        None
    }

    /// The VXLAN tunnel port behind this port, if it is one (the worker sends to its virtual
    /// ports through it).
    fn as_vxlan(&mut self) -> Option<&mut vxlan::VxlanPort> {
        None
    }

    /// Frames the kernel dropped on the way in because the port's socket buffer or ring was
    /// full, since the port was opened (read for listings, never on the hot path).
    fn rx_kernel_drops(&mut self) -> u64 {
        0
    }

    /// Storm hold, storm control's second stage: while `on`, the kernel drops every frame that
    /// arrives for this port before it is queued for the switch, so a port flooding far over its
    /// rate costs no read, no copy and no wakeup. Returns whether the port can be held; a port
    /// that cannot is read as usual (its refused floods are still counted one by one). Called
    /// on a change of state, never per frame.
    fn set_rx_hold(&mut self, _on: bool) -> bool {
        false
    }

    /// Counters only some kinds of port keep (read for listings, never on the hot path).
    fn kind_stats(&self) -> KindStats {
        KindStats::default()
    }
}

/// Counters only some kinds of port keep; zero where the kind has no such thing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// `TPACKET_V3` ring blocks read (an AF_PACKET port in ring receive mode).
    pub rx_ring_blocks: u64,
    /// GSO super-frames sent whole (an AF_PACKET port with vnet headers).
    pub tx_gso_frames: u64,
    /// Times the port was held for a storm ([`Port::set_rx_hold`]).
    pub storm_holds: u64,
    /// Frames the kernel dropped while the port was held (the interface's receive counter over
    /// the holds).
    pub storm_held: u64,
}
