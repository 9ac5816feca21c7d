//! System calls of the generator: AF_PACKET sockets with batched send and receive
//! (`sendmmsg`/`recvmmsg`), the monotonic clock, and threads that enter a network namespace.
//! All of the load tool's `unsafe` is here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Most frames per batch.
pub const MAX_BATCH: usize = 64;
/// Receive buffer size per frame (frames above it are truncated and still counted).
pub const RX_BUF: usize = 2048;

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// setsockopt(2) of a `T` option; the error names `what`.
pub fn setopt<T>(fd: i32, level: i32, name: i32, val: &T, what: &str) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(err(what));
    }
    Ok(())
}

/// The index of interface `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {ifname} in this namespace"),
        ));
    }
    Ok(idx)
}

/// Binds the AF_PACKET socket `fd` to interface `ifindex` for protocol `proto` (network
/// order; 0: receive nothing).
pub fn bind_packet(fd: i32, ifindex: u32, proto: u16) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(err(&format!("binding to interface index {ifindex}")));
    }
    Ok(())
}

/// Runs `f` on a new thread that first enters the network namespace at `ns` (setns moves
/// only the calling thread). Sockets it opens stay in that namespace.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &Path,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
    let fd = std::fs::File::open(ns)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", ns.display())))?;
    let shown = ns.display().to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: `fd` is an open network-namespace file; setns moves only this thread,
            // which exists to run `f` in that namespace.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(err(&format!("entering network namespace {shown}")));
            }
            drop(fd);
            Ok(f())
        })
}

/// Packet socket statistics (PACKET_STATISTICS; reading resets them).
#[derive(Clone, Copy, Debug, Default)]
pub struct SockStats {
    /// Frames the socket took in.
    pub packets: u64,
    /// Frames dropped because the socket's buffer was full.
    pub drops: u64,
}

/// An AF_PACKET socket bound to one interface of the calling thread's namespace.
pub struct PacketSocket {
    fd: OwnedFd,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    rx: Vec<u8>,
}

// SAFETY: the raw pointers in `hdrs`/`iovs` only ever point into `rx` (owned) or into
// buffers borrowed for the duration of one call; nothing is shared between threads.
unsafe impl Send for PacketSocket {}

impl PacketSocket {
    /// Opens a socket on `ifname`. A sender (`rx == false`) receives nothing and bypasses the
    /// qdisc; a receiver ignores the frames its own host sends and gets a large buffer.
    pub fn open(ifname: &str, rx: bool) -> io::Result<PacketSocket> {
        let idx = ifindex(ifname)?;
        let proto = if rx {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        if raw < 0 {
            return Err(err("opening an AF_PACKET socket (needs root)"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        if rx {
            setopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &one,
                "PACKET_IGNORE_OUTGOING",
            )?;
            let size: libc::c_int = 64 << 20;
            setopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size,
                "SO_RCVBUFFORCE",
            )?;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            setopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv, "SO_RCVTIMEO")?;
        } else {
            setopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one,
                "PACKET_QDISC_BYPASS",
            )?;
            let size: libc::c_int = 16 << 20;
            setopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                &size,
                "SO_SNDBUFFORCE",
            )?;
        }
        bind_packet(raw, idx, proto)
            .map_err(|e| io::Error::new(e.kind(), format!("binding to {ifname}: {e}")))?;
        // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
        let (hdrs, iovs) = unsafe {
            (
                vec![std::mem::zeroed::<libc::mmsghdr>(); MAX_BATCH],
                vec![std::mem::zeroed::<libc::iovec>(); MAX_BATCH],
            )
        };
        let mut s = PacketSocket {
            fd,
            hdrs,
            iovs,
            rx: Vec::new(),
        };
        if rx {
            s.rx = vec![0u8; RX_BUF * MAX_BATCH];
        }
        let _ = s.stats(); // reset counters from before the trial
        Ok(s)
    }

    /// Sends `frames` (at most [`MAX_BATCH`]) with one sendmmsg; returns how many the kernel
    /// took. ENOBUFS/EAGAIN count as 0 sent.
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(MAX_BATCH);
        for (i, f) in frames[..n].iter().enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers point at iovecs describing live, readable buffers
        // (`frames`) that outlive this call; the kernel does not write to them.
        let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => Ok(0),
                _ => Err(io::Error::new(e.kind(), format!("sendmmsg: {e}"))),
            };
        }
        Ok(r as usize)
    }

    /// Receives up to [`MAX_BATCH`] frames (waits up to 20 ms for the first) and calls `f`
    /// with each; returns how many.
    pub fn recv(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        for i in 0..MAX_BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: `rx` holds MAX_BATCH buffers of RX_BUF bytes; this is the i-th.
                iov_base: unsafe { self.rx.as_mut_ptr().add(i * RX_BUF) }.cast(),
                iov_len: RX_BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at a distinct writable RX_BUF-byte slice of `rx`.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                MAX_BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(io::Error::new(e.kind(), format!("recvmmsg: {e}"))),
            };
        }
        for i in 0..r as usize {
            let len = (self.hdrs[i].msg_len as usize).min(RX_BUF);
            f(&self.rx[i * RX_BUF..i * RX_BUF + len]);
        }
        Ok(r as usize)
    }

    /// Reads and resets the socket's statistics.
    pub fn stats(&self) -> SockStats {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is writable and `len` holds its size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return SockStats::default();
        }
        SockStats {
            packets: st.tp_packets as u64,
            drops: st.tp_drops as u64,
        }
    }
}
