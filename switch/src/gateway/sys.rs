//! The one socket kind std and mio do not offer: ICMP echo sockets for the gateway's ping
//! forwarding. An unprivileged "ping socket" (`SOCK_DGRAM`, `IPPROTO_ICMP`) is tried first;
//! `net.ipv4.ping_group_range` often excludes every group (Debian's default without systemd is
//! "1 0"), so a raw ICMP socket (root or CAP_NET_RAW) is the fallback. Either way the socket is
//! connected to the destination, so the kernel only hands it that peer's ICMP.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A connected, non-blocking ICMP socket.
#[derive(Debug)]
pub struct IcmpSocket {
    fd: OwnedFd,
    /// Raw socket: replies arrive with their IP header, and the echo id is ours to choose.
    pub raw: bool,
}

fn socket(ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes only integer arguments; a non-negative result is a new
    // descriptor that nothing else owns, so OwnedFd may take it.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned by socket(2) above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl IcmpSocket {
    /// Opens an ICMP socket connected to `dst`.
    pub fn open(dst: Ipv4Addr) -> io::Result<IcmpSocket> {
        let (fd, raw) = match socket(libc::SOCK_DGRAM) {
            Ok(fd) => (fd, false),
            Err(_) => (socket(libc::SOCK_RAW)?, true),
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `sa` is a valid sockaddr_in that lives across the call, and its size is
        // passed; `fd` is an open socket.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(IcmpSocket { fd, raw })
    }

    /// Sends one ICMP message (header included).
    pub fn send(&self, msg: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe the live slice `msg`.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Receives one ICMP message into `buf`; returns its range in `buf` (after the IP header a
    /// raw socket delivers).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<std::ops::Range<usize>> {
        // SAFETY: the pointer and length describe the live, writable slice `buf`.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if !self.raw {
            return Ok(0..n);
        }
        let ihl = buf.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        if ihl < 20 || ihl > n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short IP header",
            ));
        }
        Ok(ihl..n)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
