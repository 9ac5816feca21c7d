//! AF_XDP port: the host end of a veth pair read and written through XSK rings, for
//! packet-rate work (`--attach xdp`).
//!
//! Opening a port ([`XdpPort::open`]):
//!
//! 1. an `XSKMAP` and the five-instruction redirect program of [`super::bpf`] (built in Rust,
//!    loaded with `bpf(BPF_PROG_LOAD)`, the verifier's log in the error on a refusal);
//! 2. an `AF_XDP` socket with its UMEM: one anonymous mapping of `rx_frames + tx_frames` chunks
//!    of [`XdpConfig::frame_size`] bytes, registered with `XDP_UMEM_REG`; the fill, completion,
//!    RX and TX rings sized and mmap'd through `XDP_MMAP_OFFSETS`;
//! 3. `bind` to (interface, queue 0) with `XDP_COPY` (veth has no zero-copy) and
//!    `XDP_USE_NEED_WAKEUP`; the socket goes into slot 0 of the map;
//! 4. the program is attached to the interface in native mode (a BPF link, detached when the
//!    port is dropped or the process dies; rtnetlink `IFLA_XDP` where link creation is refused,
//!    detached explicitly on drop).
//!
//! **Receive.** The first `rx_frames` chunks belong to the kernel through the fill ring. A
//! burst takes up to the batch's room from the RX ring, copies each frame into its batch slot
//! (a 64-byte copy costs less than managing buffers across the pipeline) and hands all the
//! chunks back in one fill-ring update. A descriptor is untrusted: one whose address or length
//! leaves the UMEM's receive chunks is counted ([`XdpStats::rx_bad_desc`]) and skipped; a frame
//! longer than a batch slot is counted ([`XdpStats::rx_oversize`]).
//!
//! **Transmit.** The last `tx_frames` chunks are a free list. A burst first reclaims the
//! completion ring, then copies each selected frame into a free chunk and publishes all of
//! them with one TX-ring update, then kicks the kernel with `sendto(MSG_DONTWAIT)` if the ring
//! says it needs a wakeup (in copy mode it always does: the copy happens inside `sendto`). The
//! kernel transmits at most its TX budget per call (32 frames by default) and answers `EAGAIN`
//! while frames are left, so a burst of 64 takes two calls. Frames with offloads (a GSO frame
//! or a partial checksum from a veth or TAP container) are segmented and their checksums
//! finished in software first ([`crate::wire::gso::segment`]): the XSK has no vnet header.
//!
//! **Offloads.** [`PortCaps::vnet_hdr`] is false. The container's end of the veth must not
//! hand partial checksums over (they reach the XSK with no flag saying so): the daemon turns tx
//! checksumming, scatter-gather, TSO and GSO off on both ends of the pair
//! ([`crate::netns::attach::offloads_off`]). Native XDP on a veth limits the MTU to what fits a
//! page (about 3.5 KB; the kernel refuses the attach above it), and every receive chunk holds a
//! frame of that size, so no frame is ever too long for a chunk.

use super::bpf::{self, AttachKind, AttachPolicy, BpfError, XdpAttach};
use super::sys::{self, cvt, owned_fd, setsockopt_int, setsockopt_raw, PortError};
use super::{Port, PortCaps};
use crate::anon_map::{AnonMap, MapOptions};
use crate::batch::{Batch, VnetHdr, BATCH_SIZE};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `XDP_PACKET_HEADROOM`: where the kernel puts a received frame inside its chunk (copy mode).
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// `SO_PREFER_BUSY_POLL`-free socket option of Linux 6.17+: frames one `sendto` may transmit
/// in copy mode (the default is 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Most `sendto` kicks per burst (each moves up to the kernel's TX budget).
const MAX_KICKS: usize = 8;
/// Bytes of the scratch area GSO frames are segmented into before they are copied to chunks.
const SEG_SCRATCH: usize = 160 * 1024;

/// Why an AF_XDP port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A socket or ring step failed.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The BPF part (map, program, attach) failed.
    #[error("port {name:?}: {source}")]
    Bpf {
        name: String,
        #[source]
        source: BpfError,
    },
}

impl XdpError {
    /// True when `bpf(2)` is not permitted here.
    pub fn bpf_not_permitted(&self) -> bool {
        matches!(self, XdpError::Bpf { source, .. } if source.not_permitted())
    }
}

/// Tunables of an [`XdpPort`].
#[derive(Clone, Copy, Debug)]
pub struct XdpConfig {
    /// Bytes per UMEM chunk (2048 or 4096). 4096 holds any frame native XDP on veth allows.
    pub frame_size: u32,
    /// Receive chunks; also the size of the fill and RX rings (a power of two).
    pub rx_frames: u32,
    /// Transmit chunks; also the size of the TX and completion rings (a power of two).
    pub tx_frames: u32,
    /// `XDP_FLAGS_DRV_MODE` (native, the default) or `XDP_FLAGS_SKB_MODE`.
    pub mode_flags: u32,
    /// How the program is attached.
    pub attach: AttachPolicy,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frame_size: 4096,
            rx_frames: 4096,
            tx_frames: 1024,
            mode_flags: bpf::XDP_FLAGS_DRV_MODE,
            attach: AttachPolicy::Auto,
        }
    }
}

/// Counters of one AF_XDP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames handed to the switch.
    pub rx_frames: u64,
    /// Frames longer than a batch slot; dropped.
    pub rx_oversize: u64,
    /// RX descriptors outside the receive chunks (or longer than a chunk); skipped.
    pub rx_bad_desc: u64,
    /// Frames put on the TX ring (segments of a GSO frame counted one by one).
    pub tx_frames: u64,
    /// Frames longer than a chunk; dropped.
    pub tx_oversize: u64,
    /// Frames whose offloads could not be finished (malformed GSO frame); dropped.
    pub tx_bad_frame: u64,
    /// GSO frames segmented in software.
    pub tx_segmented: u64,
    /// Completion addresses outside the transmit chunks; ignored.
    pub tx_bad_completion: u64,
    /// `sendto` kicks.
    pub tx_kicks: u64,
    /// Fill-ring wakeups (`recvfrom`) the kernel asked for.
    pub rx_wakeups: u64,
}

/// One mmap'd XSK ring: producer and consumer indices shared with the kernel, and the
/// descriptors. `local` is our own index (the producer for fill/TX, the consumer for
/// RX/completion), of which we are the only writer.
struct Ring {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    size: u32,
    local: u32,
}

// SAFETY: the mapping belongs to one port and is only touched through `&mut` access to it;
// moving the port to another thread moves the only user.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` describe the mapping made in `Ring::map`; nothing borrows it
        // past this point.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

impl Ring {
    /// Maps ring `off` (kernel offsets `o`) of `size` entries of `entry` bytes.
    fn map(
        fd: &OwnedFd,
        off: libc::off_t,
        o: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
    ) -> io::Result<Ring> {
        let map_len = o.desc as usize + size as usize * entry;
        // SAFETY: maps the ring the kernel allocated for this socket at page offset `off`; the
        // result is checked against MAP_FAILED and unmapped in `Drop`.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                off,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |x: u64| {
            // SAFETY: the kernel's offsets lie inside the ring mapping (`map_len` covers the
            // descriptors, which come after the indices and flags).
            unsafe { map.cast::<u8>().add(x as usize) }
        };
        let r = Ring {
            map,
            map_len,
            producer: at(o.producer).cast(),
            consumer: at(o.consumer).cast(),
            flags: at(o.flags).cast(),
            desc: at(o.desc),
            size,
            local: 0,
        };
        // Our index starts where the kernel's shared copy is (0 for a fresh ring).
        Ok(r)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `producer` points at a 4-byte-aligned u32 inside the live mapping, written
        // concurrently by the kernel or by us, so only accessed atomically.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel asks for a wakeup on this ring (`XDP_RING_NEED_WAKEUP`).
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let f = unsafe { &*self.flags };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Consumer side: entries ready to read (at most `max`).
    fn ready(&self, max: u32) -> u32 {
        let prod = self.producer().load(Ordering::Acquire);
        prod.wrapping_sub(self.local).min(self.size).min(max)
    }

    /// Consumer side: marks `n` entries read.
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }

    /// Producer side: free entries (at most `max`).
    fn room(&self, max: u32) -> u32 {
        let cons = self.consumer().load(Ordering::Acquire);
        let used = self.local.wrapping_sub(cons).min(self.size);
        (self.size - used).min(max)
    }

    /// Producer side: publishes `n` entries written after `local`.
    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.producer().store(self.local, Ordering::Release);
    }

    /// Pointer to entry `idx` (masked) of `entry` bytes.
    fn entry(&self, idx: u32, entry: usize) -> *mut u8 {
        let i = (idx & (self.size - 1)) as usize;
        // SAFETY: i < size, and the mapping holds `size` entries of `entry` bytes from `desc`.
        unsafe { self.desc.add(i * entry) }
    }

    fn read_addr(&self, idx: u32) -> u64 {
        // SAFETY: the entry is inside the mapping, 8-byte aligned (the kernel aligns the
        // descriptor array), and the kernel published it before the producer index we read
        // with Acquire; it does not write it again until we release it.
        unsafe { self.entry(idx, 8).cast::<u64>().read_volatile() }
    }

    fn write_addr(&mut self, idx: u32, addr: u64) {
        // SAFETY: the entry is inside the mapping and free (counted by `room`); the kernel does
        // not read it before the producer index is published with Release.
        unsafe { self.entry(idx, 8).cast::<u64>().write_volatile(addr) }
    }

    fn read_desc(&self, idx: u32) -> libc::xdp_desc {
        let p = self.entry(idx, std::mem::size_of::<libc::xdp_desc>());
        // SAFETY: as for `read_addr`, for a 16-byte `xdp_desc`.
        unsafe { p.cast::<libc::xdp_desc>().read_volatile() }
    }

    fn write_desc(&mut self, idx: u32, d: libc::xdp_desc) {
        let p = self.entry(idx, std::mem::size_of::<libc::xdp_desc>());
        // SAFETY: as for `write_addr`, for a 16-byte `xdp_desc`.
        unsafe { p.cast::<libc::xdp_desc>().write_volatile(d) }
    }
}

/// The UMEM: one anonymous mapping of chunks shared with the kernel. It is unmapped when the
/// port drops it, after the socket (see the field order of `XdpPort`), which then no longer
/// uses it; the kernel keeps its own page references until the socket is released anyway.
struct Umem {
    map: AnonMap,
}

impl Umem {
    /// The bytes `addr..addr+len`, if inside the UMEM.
    fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        if end > self.map.len() {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping (checked above); the kernel handed this
        // chunk to us through the RX ring and does not write it until it is back in the fill
        // ring.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) })
    }

    /// The writable bytes `addr..addr+len`, if inside the UMEM.
    fn get_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        if end > self.map.len() {
            return None;
        }
        // SAFETY: inside the mapping (checked above); the chunk is on our free list, so the
        // kernel neither reads nor writes it until we publish it on the TX ring.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(start), len) })
    }
}

/// A port on the host end of a veth pair through an AF_XDP socket. See the module
/// documentation.
pub struct XdpPort {
    name: String,
    // Field order is drop order: the program leaves the interface first, then the socket's
    // rings are unmapped and the socket closed, then the UMEM goes.
    attach: XdpAttach,
    _map: OwnedFd,
    rx: Ring,
    fill: Ring,
    tx: Ring,
    comp: Ring,
    fd: OwnedFd,
    umem: Umem,
    cfg: XdpConfig,
    /// Free transmit chunks (addresses); capacity `tx_frames`, never grown.
    free: Vec<u64>,
    /// Where GSO frames are segmented.
    scratch: Box<[u8]>,
    stats: XdpStats,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort")
            .field("name", &self.name)
            .field("fd", &self.fd.as_raw_fd())
            .field("attach", &self.attach.kind())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl XdpPort {
    /// Opens interface `ifname` (in the calling thread's namespace) with the defaults.
    pub fn open(ifname: &str) -> Result<XdpPort, XdpError> {
        Self::open_with(ifname, XdpConfig::default())
    }

    /// Opens interface `ifname` with explicit tunables.
    pub fn open_with(ifname: &str, cfg: XdpConfig) -> Result<XdpPort, XdpError> {
        let ifindex = sys::ifindex(ifname)? as u32;
        let geom = |why: &str| {
            XdpError::Port(PortError::BadGeometry {
                name: ifname.to_owned(),
                why: why.to_owned(),
            })
        };
        if !matches!(cfg.frame_size, 2048 | 4096) {
            return Err(geom("frame_size must be 2048 or 4096"));
        }
        for n in [cfg.rx_frames, cfg.tx_frames] {
            if !n.is_power_of_two() || !(BATCH_SIZE as u32..=32768).contains(&n) {
                return Err(geom(
                    "rx_frames and tx_frames must be powers of two from 64 to 32768",
                ));
            }
        }
        let bpf_err = |source| XdpError::Bpf {
            name: ifname.to_owned(),
            source,
        };
        let err = |what| move |e| XdpError::Port(PortError::setup(ifname, what, e));

        // The map first: it is the cheapest probe of whether bpf(2) is permitted at all.
        let map = bpf::create_xskmap(64).map_err(bpf_err)?;
        let prog = bpf::load_redirect_program(&map).map_err(bpf_err)?;

        // SAFETY: plain socket(2); the result is checked and owned by `owned_fd`.
        let fd =
            owned_fd(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
                .map_err(err("socket(AF_XDP)"))?;

        let frames = (cfg.rx_frames + cfg.tx_frames) as usize;
        let len = frames * cfg.frame_size as usize;
        let chunks = AnonMap::new(
            len,
            MapOptions {
                huge: false,
                populate: true,
            },
        )
        .map_err(err("mmap(UMEM)"))?;
        let base = chunks.as_ptr();
        let umem = Umem { map: chunks };
        let reg = libc::xdp_umem_reg {
            addr: base as u64,
            len: len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt_raw(&fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
            .map_err(err("XDP_UMEM_REG"))?;
        let ring_size = |opt, n: u32| setsockopt_int(&fd, libc::SOL_XDP, opt, n as libc::c_int);
        ring_size(libc::XDP_UMEM_FILL_RING, cfg.rx_frames).map_err(err("XDP_UMEM_FILL_RING"))?;
        ring_size(libc::XDP_UMEM_COMPLETION_RING, cfg.tx_frames)
            .map_err(err("XDP_UMEM_COMPLETION_RING"))?;
        ring_size(libc::XDP_RX_RING, cfg.rx_frames).map_err(err("XDP_RX_RING"))?;
        ring_size(libc::XDP_TX_RING, cfg.tx_frames).map_err(err("XDP_TX_RING"))?;
        let off: libc::xdp_mmap_offsets =
            sys::getsockopt_raw(&fd, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)
                .map_err(err("XDP_MMAP_OFFSETS"))?;
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let rx = Ring::map(&fd, libc::XDP_PGOFF_RX_RING, &off.rx, cfg.rx_frames, desc)
            .map_err(err("mmap(RX ring)"))?;
        let tx = Ring::map(&fd, libc::XDP_PGOFF_TX_RING, &off.tx, cfg.tx_frames, desc)
            .map_err(err("mmap(TX ring)"))?;
        let fill = Ring::map(
            &fd,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            &off.fr,
            cfg.rx_frames,
            8,
        )
        .map_err(err("mmap(fill ring)"))?;
        let comp = Ring::map(
            &fd,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            &off.cr,
            cfg.tx_frames,
            8,
        )
        .map_err(err("mmap(completion ring)"))?;

        // Every receive chunk goes to the kernel before the socket is bound.
        let mut fill = fill;
        for k in 0..cfg.rx_frames {
            let idx = fill.local.wrapping_add(k);
            fill.write_addr(idx, u64::from(k) * u64::from(cfg.frame_size));
        }
        fill.submit(cfg.rx_frames);
        let mut free = Vec::with_capacity(cfg.tx_frames as usize);
        free.extend(
            (cfg.rx_frames..cfg.rx_frames + cfg.tx_frames)
                .rev()
                .map(|k| u64::from(k) * u64::from(cfg.frame_size)),
        );

        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        bind_retrying_busy(BIND_BUSY_WAIT, || {
            // SAFETY: `sxdp` is a valid sockaddr_xdp and its exact size is passed.
            cvt(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sxdp as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            })
            .map(drop)
        })
        .map_err(err("bind(AF_XDP, queue 0, XDP_COPY)"))?;
        // Linux 6.17+: let one sendto move a whole burst (older kernels: 32 per call).
        let _ = setsockopt_int(&fd, libc::SOL_XDP, XDP_MAX_TX_SKB_BUDGET, BATCH_SIZE as i32);

        bpf::xskmap_set(&map, 0, fd.as_raw_fd()).map_err(bpf_err)?;
        let attach = XdpAttach::attach(ifname, ifindex, prog, cfg.mode_flags, cfg.attach)
            .map_err(bpf_err)?;
        Ok(XdpPort {
            name: ifname.to_owned(),
            attach,
            _map: map,
            rx,
            fill,
            tx,
            comp,
            fd,
            umem,
            cfg,
            free,
            scratch: vec![0u8; SEG_SCRATCH].into_boxed_slice(),
            stats: XdpStats::default(),
        })
    }

    /// The port's counters.
    pub fn stats(&self) -> XdpStats {
        self.stats
    }

    /// How the program is attached.
    pub fn attach_kind(&self) -> AttachKind {
        self.attach.kind()
    }

    /// The kernel's id of the attached program.
    pub fn prog_id(&self) -> io::Result<u32> {
        self.attach.prog_id()
    }

    /// The kernel's `XDP_STATISTICS` of the socket.
    pub fn xdp_statistics(&self) -> io::Result<libc::xdp_statistics> {
        sys::getsockopt_raw(&self.fd, libc::SOL_XDP, libc::XDP_STATISTICS)
    }

    /// Chunk base of a receive address, if it is one of the receive chunks and `len` bytes
    /// from it stay inside that chunk.
    fn rx_chunk(&self, addr: u64, len: u32) -> Option<u64> {
        let fs = u64::from(self.cfg.frame_size);
        let chunk = addr / fs;
        let within = addr % fs;
        (chunk < u64::from(self.cfg.rx_frames) && within + u64::from(len) <= fs)
            .then_some(chunk * fs)
    }

    /// Whether `addr` is the start of a transmit chunk.
    fn tx_chunk(&self, addr: u64) -> bool {
        let fs = u64::from(self.cfg.frame_size);
        let k = addr / fs;
        addr.is_multiple_of(fs)
            && k >= u64::from(self.cfg.rx_frames)
            && k < u64::from(self.cfg.rx_frames + self.cfg.tx_frames)
    }

    /// Moves finished transmissions back to the free list.
    fn reclaim(&mut self) {
        let n = self.comp.ready(self.cfg.tx_frames);
        for k in 0..n {
            let addr = self.comp.read_addr(self.comp.local.wrapping_add(k));
            if self.tx_chunk(addr) && self.free.len() < self.free.capacity() {
                self.free.push(addr);
            } else {
                self.stats.tx_bad_completion += 1;
            }
        }
        if n > 0 {
            self.comp.release(n);
        }
    }

    /// Puts `frame` into a free chunk at TX-ring position `idx`. False when no chunk is free.
    fn put_tx(&mut self, idx: u32, frame: &[u8]) -> bool {
        let Some(addr) = self.free.pop() else {
            return false;
        };
        let Some(dst) = self.umem.get_mut(addr, frame.len()) else {
            // Cannot happen: free chunks are transmit chunks and frames fit a chunk.
            return false;
        };
        dst.copy_from_slice(frame);
        self.tx.write_desc(
            idx,
            libc::xdp_desc {
                addr,
                len: frame.len() as u32,
                options: 0,
            },
        );
        true
    }

    /// Wakes the kernel to transmit what is on the TX ring.
    fn kick(&mut self) {
        for _ in 0..MAX_KICKS {
            if !self.tx.needs_wakeup() {
                return;
            }
            self.stats.tx_kicks += 1;
            // SAFETY: sendto with no data and no address on our socket; it only makes the
            // kernel process the TX ring.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                return;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // More than one budget's worth was queued, or the device was busy: go on while
                // the kernel has not taken everything.
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => {
                    if self.tx.room(u32::MAX) == self.tx.size {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

/// How long [`bind_retrying_busy`] waits for the kernel to let go of a queue.
const BIND_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `bind`, again every 10 ms while it fails with `EBUSY`, for at most `wait`
/// ([`BIND_BUSY_WAIT`]).
///
/// Closing an AF_XDP socket does not free its queue at once: the kernel releases the socket's
/// buffer pool, and with it the (device, queue) binding, from a workqueue (`xp_release_deferred`).
/// A socket bound to the same queue right after the old one closed — the port reopened by a
/// worker restarted after a panic, or by a daemon restarted after `kill -9` — can meet `EBUSY`
/// for a few milliseconds (seen in 2 of 10 runs of the worker-panic test before this wait).
fn bind_retrying_busy(
    wait: std::time::Duration,
    mut bind: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        match bind() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t0.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

impl Port for XdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet_hdr: false }
    }

    fn recv_burst(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let room = (BATCH_SIZE - batch.len()) as u32;
        let start = batch.len();
        let n = self.rx.ready(room);
        let mut back = [0u64; BATCH_SIZE];
        let mut nb = 0;
        for k in 0..n {
            let d = self.rx.read_desc(self.rx.local.wrapping_add(k));
            let Some(chunk) = self.rx_chunk(d.addr, d.len) else {
                self.stats.rx_bad_desc += 1;
                continue;
            };
            if let Some(slot) = back.get_mut(nb) {
                *slot = chunk;
                nb += 1;
            }
            let len = d.len as usize;
            if len > batch.max_frame() {
                self.stats.rx_oversize += 1;
                continue;
            }
            match self.umem.get(d.addr, len) {
                Some(bytes) => {
                    batch.push(bytes, VnetHdr::default());
                    self.stats.rx_frames += 1;
                }
                None => self.stats.rx_bad_desc += 1,
            }
        }
        if n > 0 {
            self.rx.release(n);
            // The fill ring has room for every receive chunk, so for these.
            let put = self.fill.room(nb as u32);
            for (k, &addr) in back.iter().take(put as usize).enumerate() {
                let idx = self.fill.local.wrapping_add(k as u32);
                self.fill.write_addr(idx, addr);
            }
            self.fill.submit(put);
            if self.fill.needs_wakeup() {
                self.stats.rx_wakeups += 1;
                // SAFETY: recvfrom with no buffer on our socket: it only wakes the kernel's
                // receive side (only ever asked for by zero-copy drivers).
                unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
        }
        Ok(batch.len() - start)
    }

    fn send_burst(&mut self, batch: &Batch, sel: &[u16]) -> io::Result<usize> {
        self.reclaim();
        let fs = self.cfg.frame_size as usize;
        let mut put = 0u32;
        let mut accepted = 0;
        let mut room = self.tx.room(self.cfg.tx_frames);
        for &i in sel {
            let i = usize::from(i);
            let frame = batch.frame(i);
            let vnet = batch.meta(i).vnet;
            if vnet.is_gso() || vnet.needs_csum() {
                // No vnet header on an XSK: finish the offloads here.
                let segs = match crate::wire::gso::segment(frame, &vnet, 0, &mut self.scratch) {
                    Ok(s) => s,
                    Err(_) => {
                        self.stats.tx_bad_frame += 1;
                        accepted += 1;
                        continue;
                    }
                };
                if segs.stride > fs || segs.count > self.cfg.tx_frames as usize {
                    // Segments longer than a chunk, or more of them than the ring holds.
                    self.stats.tx_oversize += 1;
                    accepted += 1;
                    continue;
                }
                if segs.count as u32 > room || segs.count > self.free.len() {
                    break;
                }
                if vnet.is_gso() {
                    self.stats.tx_segmented += 1;
                }
                for r in segs.ranges() {
                    let idx = self.tx.local.wrapping_add(put);
                    // Moved out to satisfy the borrow of `self` in `put_tx`.
                    let scratch = std::mem::take(&mut self.scratch);
                    let ok = scratch.get(r).is_some_and(|seg| self.put_tx(idx, seg));
                    self.scratch = scratch;
                    if ok {
                        put += 1;
                        room -= 1;
                    }
                }
                accepted += 1;
                continue;
            }
            if frame.len() > fs {
                self.stats.tx_oversize += 1;
                accepted += 1;
                continue;
            }
            if room == 0 {
                break;
            }
            let idx = self.tx.local.wrapping_add(put);
            if !self.put_tx(idx, frame) {
                break;
            }
            put += 1;
            room -= 1;
            accepted += 1;
        }
        if put > 0 {
            self.tx.submit(put);
            self.stats.tx_frames += u64::from(put);
        }
        if put > 0 || self.tx.room(u32::MAX) < self.tx.size {
            self.kick();
        }
        Ok(accepted)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn rx_pending(&self) -> Option<bool> {
        Some(self.rx.ready(1) > 0)
    }

    /// Frames the kernel dropped on the way to the socket: RX ring full, or no free chunk
    /// (`XDP_STATISTICS`: `rx_ring_full` + `rx_dropped`, cumulative).
    fn rx_kernel_drops(&mut self) -> u64 {
        self.xdp_statistics()
            .map(|s| s.rx_ring_full + s.rx_dropped)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{MTU_SLOT, VNET_F_NEEDS_CSUM};
    use crate::port::afpacket::{AfPacketConfig, AfPacketPort};
    use crate::port::sys::testnet::{skip, wait_readable, NetNs, Veth};
    use std::time::{Duration, Instant};

    fn busy() -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }

    #[test]
    fn bind_waits_out_a_busy_queue_but_not_other_errors_or_forever() {
        // Busy twice, then free: bound on the third try.
        let mut calls = 0;
        let r = bind_retrying_busy(Duration::from_secs(2), || {
            calls += 1;
            if calls < 3 {
                busy()
            } else {
                Ok(())
            }
        });
        assert!(r.is_ok() && calls == 3, "{r:?} after {calls} calls");
        // Another error is returned at once.
        let mut calls = 0;
        let r = bind_retrying_busy(Duration::from_secs(2), || {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        assert_eq!(calls, 1);
        // Busy for good: EBUSY once the wait is over.
        let t0 = Instant::now();
        let r = bind_retrying_busy(Duration::from_millis(50), busy);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBUSY));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(1),
            "gave up after {took:?}"
        );
    }

    const ETYPE: [u8; 2] = [0x88, 0xb5];

    fn test_frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, tag]);
        f[12..14].copy_from_slice(&ETYPE);
        for (i, b) in f[14..].iter_mut().enumerate() {
            *b = (i as u8) ^ tag;
        }
        f
    }

    fn is_test_frame(b: &Batch, i: usize) -> bool {
        b.frame(i).len() >= 14 && b.frame(i)[12..14] == ETYPE
    }

    /// Opens an XDP port on `ifname`, or returns `None` (test skipped) where bpf(2) is not
    /// permitted.
    fn open_or_skip(ifname: &str, cfg: XdpConfig) -> Option<XdpPort> {
        match XdpPort::open_with(ifname, cfg) {
            Ok(p) => Some(p),
            Err(e) if e.bpf_not_permitted() => {
                crate::testing::require(false, format!("bpf(2) is not permitted here: {e}"));
                None
            }
            Err(e) => panic!("open the XDP port: {e}"),
        }
    }

    /// A plain AF_PACKET port inside the namespace, to play the container.
    fn inner_port(ns: &NetNs) -> AfPacketPort {
        ns.enter(|| {
            AfPacketPort::open_with(
                "eth0",
                AfPacketConfig {
                    vnet_hdr: false,
                    ..AfPacketConfig::default()
                },
            )
        })
        .expect("open eth0 inside the namespace")
    }

    /// Test frames received on `port` that satisfy `want`, until `n` of them or 3 s.
    fn collect(port: &mut dyn Port, n: usize, want: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        let mut b = Batch::new(MTU_SLOT);
        while got.len() < n && Instant::now() < end {
            b.clear();
            port.recv_burst(&mut b).unwrap();
            got.extend(
                (0..b.len())
                    .filter(|&i| is_test_frame(&b, i) && want(b.frame(i)))
                    .map(|i| b.frame(i).to_vec()),
            );
            if b.is_empty() {
                wait_readable(&[port.raw_fd().unwrap()], 5);
            }
        }
        got
    }

    /// `ip -d link show NAME`.
    fn link_detail(name: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["-d", "link", "show", name])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn frames_both_ways(policy: AttachPolicy) {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let veth = Veth::new(&ns, "10.205.0.1/24");
        let cfg = XdpConfig {
            attach: policy,
            ..XdpConfig::default()
        };
        let Some(mut host) = open_or_skip(&veth.host, cfg) else {
            return;
        };
        let want = match policy {
            AttachPolicy::Auto => AttachKind::Link,
            AttachPolicy::NetlinkOnly => AttachKind::Netlink,
        };
        assert_eq!(host.attach_kind(), want);
        let detail = link_detail(&veth.host);
        assert!(detail.contains("xdp"), "no xdp program shown: {detail}");
        assert!(!host.caps().vnet_hdr);
        let mut inner = inner_port(&ns);

        // Container -> switch, through the program and the RX ring.
        let sent: Vec<Vec<u8>> = (0..5)
            .map(|k| test_frame(k, 60 + 100 * k as usize))
            .collect();
        let mut b = Batch::new(MTU_SLOT);
        for f in &sent {
            assert!(b.push(f, VnetHdr::default()));
        }
        assert_eq!(inner.send_burst(&b, &[0, 1, 2, 3, 4]).unwrap(), 5);
        let got = collect(&mut host, sent.len(), |f| f[11] < 5);
        assert_eq!(
            got, sent,
            "the frames arrived through recv_burst, in order, intact"
        );
        assert!(host.stats().rx_frames >= 5);

        // Switch -> container, a whole batch (more than one kernel TX budget of 32).
        let mut b = Batch::new(MTU_SLOT);
        let out: Vec<Vec<u8>> = (0..BATCH_SIZE)
            .map(|k| test_frame(100 + k as u8, 64))
            .collect();
        for f in &out {
            assert!(b.push(f, VnetHdr::default()));
        }
        let sel: Vec<u16> = (0..BATCH_SIZE as u16).collect();
        assert_eq!(host.send_burst(&b, &sel).unwrap(), BATCH_SIZE);
        let seen = collect(&mut inner, out.len(), |f| f[11] >= 100);
        assert_eq!(seen, out, "the whole burst reached the peer, in order");
        assert_eq!(host.stats().tx_frames, BATCH_SIZE as u64);
        // Copy mode: the TX ring always asks for a wakeup (the copy happens in sendto).
        let kicks = host.stats().tx_kicks;
        eprintln!("a burst of {BATCH_SIZE} frames took {kicks} sendto kick(s)");
        assert!(kicks >= 1, "copy mode sends only when kicked");
        // The chunks come back through the completion ring.
        let end = Instant::now() + Duration::from_secs(2);
        while host.free.len() < host.cfg.tx_frames as usize && Instant::now() < end {
            host.reclaim();
        }
        assert_eq!(
            host.free.len(),
            host.cfg.tx_frames as usize,
            "every chunk completed"
        );
        drop(host);
        let detail = link_detail(&veth.host);
        assert!(
            !detail.contains("prog/xdp"),
            "the program stayed attached after the port was dropped: {detail}"
        );
    }

    #[test]
    fn xdp_frames_both_ways_link_attach() {
        frames_both_ways(AttachPolicy::Auto);
    }

    #[test]
    fn xdp_frames_both_ways_netlink_attach() {
        frames_both_ways(AttachPolicy::NetlinkOnly);
    }

    /// The program the port loads is gone from the kernel once the port is dropped (link
    /// attach: the link's descriptor held it).
    #[test]
    fn xdp_program_goes_with_the_port() {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let veth = Veth::new(&ns, "10.205.1.1/24");
        let Some(host) = open_or_skip(&veth.host, XdpConfig::default()) else {
            return;
        };
        let id = host.prog_id().expect("program id");
        assert!(bpf::program_exists(id).unwrap(), "program {id} loaded");
        let detail = link_detail(&veth.host);
        assert!(detail.contains(&format!("id {id}")), "{detail}");
        drop(host);
        let end = Instant::now() + Duration::from_secs(5);
        while bpf::program_exists(id).unwrap() {
            assert!(
                Instant::now() < end,
                "program {id} still loaded 5 s after the drop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The socket is readable (epoll, as the worker registers it: edge-triggered) when a frame
    /// arrives in the RX ring.
    #[test]
    fn xdp_socket_wakes_epoll() {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let veth = Veth::new(&ns, "10.205.2.1/24");
        let Some(mut host) = open_or_skip(&veth.host, XdpConfig::default()) else {
            return;
        };
        let mut poll = mio::Poll::new().unwrap();
        let fd = host.raw_fd().unwrap();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(3),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(8);
        let mut b = Batch::new(MTU_SLOT);
        // Drain whatever the kernel sent on its own (IPv6 is off; nothing should be there).
        host.recv_burst(&mut b).unwrap();
        let mut inner = inner_port(&ns);
        for round in 0..3u8 {
            let mut s = Batch::new(MTU_SLOT);
            s.push(&test_frame(50 + round, 90), VnetHdr::default());
            assert_eq!(inner.send_burst(&s, &[0]).unwrap(), 1);
            let end = Instant::now() + Duration::from_secs(3);
            let mut woke = false;
            while !woke && Instant::now() < end {
                poll.poll(&mut events, Some(Duration::from_millis(200)))
                    .unwrap();
                woke = events
                    .iter()
                    .any(|e| e.token() == mio::Token(3) && e.is_readable());
            }
            assert!(
                woke,
                "round {round}: no readable event for a frame in the RX ring"
            );
            b.clear();
            host.recv_burst(&mut b).unwrap();
            assert!(
                (0..b.len()).any(|i| is_test_frame(&b, i) && b.frame(i)[11] == 50 + round),
                "round {round}: the frame that woke the loop is there"
            );
        }
    }

    /// Descriptors are untrusted: ones outside the receive chunks, or longer than a chunk, are
    /// refused; completions outside the transmit chunks too.
    #[test]
    fn descriptor_bounds() {
        let p = XdpConfig::default();
        let fs = u64::from(p.frame_size);
        let rx = u64::from(p.rx_frames);
        // The checks without a socket: a port-less copy of the two functions' inputs.
        let chunk = |addr: u64, len: u32| {
            let (c, w) = (addr / fs, addr % fs);
            (c < rx && w + u64::from(len) <= fs).then_some(c * fs)
        };
        assert_eq!(chunk(256, 1500), Some(0));
        assert_eq!(chunk(fs * 3 + 256, 64), Some(fs * 3));
        assert_eq!(chunk(fs * rx + 256, 64), None, "a transmit chunk");
        assert_eq!(chunk(256, 4000), None, "past the chunk's end");
        assert_eq!(chunk(u64::MAX - 10, 64), None);
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let veth = Veth::new(&ns, "10.205.3.1/24");
        let Some(mut host) = open_or_skip(&veth.host, XdpConfig::default()) else {
            return;
        };
        assert_eq!(host.rx_chunk(256, 1500), Some(0));
        assert_eq!(host.rx_chunk(fs * 5 + 256, 100), Some(fs * 5));
        assert_eq!(host.rx_chunk(fs * rx, 64), None);
        assert_eq!(host.rx_chunk(fs - 10, 64), None);
        assert_eq!(host.rx_chunk(u64::MAX, 1), None);
        assert!(host.tx_chunk(fs * rx));
        assert!(!host.tx_chunk(fs * rx + 1));
        assert!(!host.tx_chunk(0));
        assert!(!host.tx_chunk(fs * (rx + u64::from(p.tx_frames))));
        assert!(host.umem.get(host.umem.map.len() as u64 - 10, 11).is_none());
        assert!(host.umem.get(u64::MAX, 1).is_none());

        // Forge RX descriptors the way a broken kernel would hand them over: one in a transmit
        // chunk, one past the UMEM, one good. Only the good one is taken; nothing panics.
        let good = test_frame(9, 100);
        host.umem
            .get_mut(fs * 7 + 256, good.len())
            .unwrap()
            .copy_from_slice(&good);
        let base = host.rx.local;
        let bad = [
            (fs * rx + 256, 100u32),
            (host.umem.map.len() as u64 + 4096, 100),
            (fs * 7 + 256, good.len() as u32),
        ];
        for (k, (addr, len)) in bad.iter().enumerate() {
            host.rx.write_desc(
                base.wrapping_add(k as u32),
                libc::xdp_desc {
                    addr: *addr,
                    len: *len,
                    options: 0,
                },
            );
        }
        // Publish them as the kernel would (we play the producer of the RX ring here).
        host.rx
            .producer()
            .store(base.wrapping_add(3), Ordering::Release);
        let mut b = Batch::new(MTU_SLOT);
        host.recv_burst(&mut b).unwrap();
        assert_eq!(host.stats().rx_bad_desc, 2, "{:?}", host.stats());
        assert_eq!(b.len(), 1);
        assert_eq!(b.frame(0), &good[..]);
        // Hostile completions: not in the free list.
        let before = host.free.len();
        host.free.pop();
        let cbase = host.comp.local;
        for (k, addr) in [0u64, fs * rx + 1, u64::MAX].iter().enumerate() {
            host.comp.write_addr(cbase.wrapping_add(k as u32), *addr);
        }
        host.comp
            .producer()
            .store(cbase.wrapping_add(3), Ordering::Release);
        host.reclaim();
        assert_eq!(host.stats().tx_bad_completion, 3);
        assert_eq!(host.free.len(), before - 1);
    }

    /// GSO frames and partial checksums (from a veth or TAP container) leave as plain frames
    /// with finished checksums, since the XSK carries no vnet header.
    #[test]
    fn gso_frames_are_segmented_on_send() {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let veth = Veth::new(&ns, "10.205.4.1/24");
        let Some(mut host) = open_or_skip(&veth.host, XdpConfig::default()) else {
            return;
        };
        let mut inner = inner_port(&ns);
        let frame = crate::wire::gso::testing::tcp_gso_frame(5000, 0x18);
        let vnet = crate::wire::gso::testing::tcp_gso_vnet(1448);
        let mut b = Batch::new(crate::batch::GSO_SLOT);
        assert!(b.push(&frame, vnet));
        let mut partial = crate::wire::gso::testing::tcp_gso_frame(100, 0x18);
        // A partial checksum holds the pseudo-header sum, as a sender's stack leaves it.
        let seed = crate::wire::checksum::pseudo_header_v4(
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            std::net::Ipv4Addr::new(10, 0, 0, 2),
            6,
            (partial.len() - 34) as u16,
        ) as u16;
        partial[50..52].copy_from_slice(&seed.to_be_bytes());
        assert!(b.push(
            &partial,
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..VnetHdr::default()
            }
        ));
        assert_eq!(host.send_burst(&b, &[0, 1]).unwrap(), 2);
        assert_eq!(host.stats().tx_segmented, 1);
        assert_eq!(
            host.stats().tx_frames,
            4 + 1,
            "4 segments and the partial frame"
        );
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        let mut rb = Batch::new(MTU_SLOT);
        while got.len() < 5 && Instant::now() < end {
            rb.clear();
            inner.recv_burst(&mut rb).unwrap();
            got.extend(
                (0..rb.len())
                    .filter(|&i| rb.frame(i).len() > 14 && rb.frame(i)[12..14] == [8, 0])
                    .map(|i| rb.frame(i).to_vec()),
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got.len(), 5, "four segments and one frame arrived");
        for f in &got {
            assert!(f.len() <= 14 + 20 + 20 + 1448);
            let ip = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
            let end = 14 + usize::from(u16::from_be_bytes([f[16], f[17]]));
            assert!(
                crate::wire::checksum::ipv4_l4_verify(ip(26), ip(30), 6, &f[34..end]),
                "TCP checksum finished: {f:?}"
            );
        }
    }
}
