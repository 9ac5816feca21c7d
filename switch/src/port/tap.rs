//! TAP port: a TAP device whose file descriptor the switch holds.
//!
//! The device is created through `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`
//! (optionally `IFF_MULTI_QUEUE`), then:
//!
//! * `TUNSETVNETHDRSZ = 10`: the legacy `virtio_net_hdr`, the same header AF_PACKET's
//!   `PACKET_VNET_HDR` uses, so frames move between both port kinds with their
//!   [`VnetHdr`] untouched;
//! * `TUNSETOFFLOAD = CSUM | TSO4 | TSO6 | TSO_ECN (| USO4 | USO6 where the kernel has them)`:
//!   the kernel hands the switch 64 KiB GSO frames and partial checksums instead of segmenting
//!   and checksumming every frame in software.
//!
//! The descriptor is non-blocking. A TAP has no `recvmmsg`: a burst is a loop of `readv`
//! (vnet header + slot) until `EAGAIN` or a full batch, and sending is one `writev` per frame.
//!
//! The device is created in the caller's network namespace; moving it into a container's
//! namespace and renaming it (`ip link set tapX netns C name eth0`, done over netlink by the
//! netns module) keeps this descriptor working.
//!
//! Why not the `tun-tap` crate: its `Iface` only sets `IFF_TUN`/`IFF_TAP` and `IFF_NO_PI`
//! (through a C shim); it cannot set `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`, `TUNSETOFFLOAD` or
//! `TUNSETVNETHDRSZ`, so 64 KiB GSO frames could not pass. The ioctls are opened directly here.

use super::sys::{self, cvt, cvt_size, PortError};
use super::{Port, PortCaps};
use crate::batch::{Batch, VnetHdr, VNET_HDR_LEN};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Tunables of a [`TapPort`].
#[derive(Clone, Copy, Debug)]
pub struct TapConfig {
    /// Exchange `virtio_net_hdr` with the kernel and enable offloads. On by default.
    pub vnet_hdr: bool,
    /// Create (or attach to) a multi-queue device: each [`TapPort`] opened with the same name
    /// is one queue, to be served by its own worker.
    pub multi_queue: bool,
    /// Send-only use as a tunnel uplink ([`crate::port::vxlan_tap`]): the 24-byte
    /// `virtio_net_hdr_v1_hash_tunnel` and `TUN_F_UDP_TUNNEL_GSO` (Linux 6.17+), so that one
    /// write can carry a whole VXLAN-encapsulated TCP GSO frame. Creation fails where the
    /// kernel lacks it. Frames through [`Port`] are not supported in this mode.
    pub tunnel_gso: bool,
    /// `TUNSETPERSIST`: the device outlives the descriptor, so a container's interface stays
    /// (same link, addresses and routes) while the switch restarts, and the switch attaches to
    /// it again by name. Whoever made it persistent must delete it when it is no longer wanted.
    pub persist: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            vnet_hdr: true,
            multi_queue: false,
            tunnel_gso: false,
            persist: false,
        }
    }
}

/// Counters of one TAP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames handed to the switch.
    pub rx_frames: u64,
    /// Frames longer than a batch slot (dropped).
    pub rx_oversize: u64,
    /// Reads shorter than a vnet header (dropped).
    pub rx_truncated: u64,
    /// Frames written to the device.
    pub tx_frames: u64,
    /// Frames the kernel rejected as malformed (skipped).
    pub tx_errors: u64,
}

/// A TAP device held by the switch.
#[derive(Debug)]
pub struct TapPort {
    name: String,
    fd: OwnedFd,
    cfg: TapConfig,
    offloads: libc::c_uint,
    stats: TapStats,
}

/// Offloads asked for first; USO is dropped if the kernel refuses it (before 6.2).
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
const OFFLOADS_USO: libc::c_uint = OFFLOADS | libc::TUN_F_USO4 | libc::TUN_F_USO6;
/// `TUN_F_UDP_TUNNEL_GSO` (linux/if_tun.h, 6.17): TSO inside a UDP tunnel.
pub const TUN_F_UDP_TUNNEL_GSO: libc::c_uint = 0x080;
/// Size of `struct virtio_net_hdr_v1_hash_tunnel`, the header that describes such frames.
pub const TUNNEL_VNET_HDR_LEN: usize = 24;

impl TapPort {
    /// Creates TAP device `name` (or attaches to it if it exists and is persistent) with vnet
    /// headers and offloads, single queue.
    pub fn create(name: &str) -> Result<Self, PortError> {
        Self::create_with(name, TapConfig::default())
    }

    /// Creates TAP device `name` with explicit tunables. With `multi_queue`, calling it again
    /// with the same name adds a queue to the same device.
    pub fn create_with(name: &str, cfg: TapConfig) -> Result<Self, PortError> {
        let cname = sys::check_ifname(name)?;
        let err = |what| move |e| PortError::setup(name, what, e);
        // SAFETY: the path is a valid NUL-terminated string; the result is checked below.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        let raw = cvt(raw).map_err(err("open(/dev/net/tun)"))?;
        // SAFETY: `raw` was just returned by open(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: all-zero is a valid ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // A persistent TAP whose last descriptor was just closed can still be attached for a
        // moment: a thread of this process that forked a child (a client, `ip`) leaves a copy
        // of every descriptor in it until the child's exec closes it (CLOEXEC). TUNSETIFF
        // then says EBUSY; it is retried for up to 100 ms before it counts as busy.
        let mut tries = 0;
        loop {
            let mut req = ifr;
            // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `req` is, alive for the
            // call.
            match cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) }) {
                Ok(_) => {
                    ifr = req;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(err("TUNSETIFF")(e)),
            }
        }
        let actual: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let actual = String::from_utf8_lossy(&actual).into_owned();
        if cfg.persist {
            // SAFETY: TUNSETPERSIST takes its flag by value, no pointer.
            cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) })
                .map_err(err("TUNSETPERSIST"))?;
        }

        let mut offloads = 0;
        if cfg.tunnel_gso {
            let sz = TUNNEL_VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, alive for the call.
            cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &sz) })
                .map_err(err("TUNSETVNETHDRSZ"))?;
            offloads = OFFLOADS | TUN_F_UDP_TUNNEL_GSO;
            // SAFETY: TUNSETOFFLOAD takes the flags by value, no pointer.
            cvt(unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    offloads as libc::c_ulong,
                )
            })
            .map_err(err("TUNSETOFFLOAD(UDP_TUNNEL_GSO)"))?;
        } else if cfg.vnet_hdr {
            let sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, alive for the call.
            cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &sz) })
                .map_err(err("TUNSETVNETHDRSZ"))?;
            offloads = OFFLOADS_USO;
            // SAFETY: TUNSETOFFLOAD takes the flags by value, no pointer.
            let r = unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    offloads as libc::c_ulong,
                )
            };
            if r < 0 {
                offloads = OFFLOADS;
                // SAFETY: as above.
                cvt(unsafe {
                    libc::ioctl(
                        fd.as_raw_fd(),
                        libc::TUNSETOFFLOAD,
                        offloads as libc::c_ulong,
                    )
                })
                .map_err(err("TUNSETOFFLOAD"))?;
            }
        }
        Ok(TapPort {
            name: actual,
            fd,
            cfg,
            offloads,
            stats: TapStats::default(),
        })
    }

    /// The same port under another name in `vswitch ports` (a container's TAP is attached to
    /// again as `eth0` inside the container, but the switch knows it by its port name).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The port's counters.
    pub fn stats(&self) -> TapStats {
        self.stats
    }

    /// The `TUN_F_*` offloads in force (0 without vnet headers).
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// The configuration the port was created with.
    pub fn config(&self) -> &TapConfig {
        &self.cfg
    }

    /// Writes one packet, `head` (the vnet header and any headers in front of the frame; empty
    /// without vnet headers) followed by `frame`, with one `writev`. Non-blocking.
    pub fn write_parts(&self, head: &[u8], frame: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: the iovecs point at `head` and `frame`, both borrowed for the call; the
        // kernel only reads them.
        cvt_size(unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) })
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            vnet_hdr: self.cfg.vnet_hdr,
        }
    }

    /// Reads frames until `EAGAIN` or a full batch (one `readv` each).
    fn recv_burst(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let start = batch.len();
        let hlen = if self.cfg.vnet_hdr { VNET_HDR_LEN } else { 0 };
        let cap = batch.max_frame();
        while !batch.is_full() {
            let mut hdr = [0u8; VNET_HDR_LEN];
            // tun truncates a frame longer than the buffer and returns only what it copied, so
            // one spare byte after the slot tells an oversize frame from one that fits exactly.
            let mut spill = [0u8; 1];
            let slot = batch.next_slot();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: hlen,
                },
                libc::iovec {
                    iov_base: slot.as_mut_ptr().cast(),
                    iov_len: cap,
                },
                libc::iovec {
                    iov_base: spill.as_mut_ptr().cast(),
                    iov_len: spill.len(),
                },
            ];
            let (iov_ptr, n_iov) = if hlen == 0 {
                (iov[1..].as_ptr(), 2)
            } else {
                (iov.as_ptr(), 3)
            };
            // SAFETY: the iovecs point at `hdr` (hlen bytes), at the free slot (`cap` bytes,
            // the length of `slot`) and at `spill`, all alive and unaliased during the call.
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov_ptr, n_iov) };
            let total = match cvt_size(r) {
                Ok(n) => n,
                Err(e) if sys::would_block(&e) => break,
                // Report what was received; the error will show again on the next call.
                Err(_) if batch.len() > start => break,
                Err(e) => return Err(e),
            };
            if total < hlen || (hlen > 0 && total == hlen) {
                self.stats.rx_truncated += 1;
                continue;
            }
            let len = total - hlen;
            if len > cap {
                self.stats.rx_oversize += 1;
                continue;
            }
            let vnet = if hlen > 0 {
                VnetHdr::from_bytes(&hdr)
            } else {
                VnetHdr::default()
            };
            batch.commit(len, vnet);
            self.stats.rx_frames += 1;
        }
        Ok(batch.len() - start)
    }

    /// Writes each frame with `writev` (vnet header + frame). A frame the kernel rejects as
    /// malformed is skipped (counted in [`TapStats::tx_errors`]) and counts as consumed; a full
    /// queue stops the burst.
    fn send_burst(&mut self, batch: &Batch, sel: &[u16]) -> io::Result<usize> {
        for (k, &i) in sel.iter().enumerate() {
            let frame = batch.frame(i as usize);
            let hdr = batch.meta(i as usize).vnet.to_bytes();
            let head: &[u8] = if self.cfg.vnet_hdr { &hdr } else { &[] };
            match self.write_parts(head, frame) {
                Ok(_) => self.stats.tx_frames += 1,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => return Ok(k),
                    Some(libc::EINVAL) | Some(libc::EMSGSIZE) | Some(libc::EFAULT) => {
                        self.stats.tx_errors += 1;
                    }
                    _ if k == 0 => return Err(e),
                    _ => return Ok(k),
                },
            }
        }
        Ok(sel.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::MTU_SLOT;
    use crate::port::afpacket::{AfPacketConfig, AfPacketPort, RxMode};
    use crate::port::sys::testnet::{run, skip, tcp_through, uniq, NetNs};
    use std::time::{Duration, Instant};

    /// A TAP created here and moved into `ns` as `eth0` with address `addr`.
    fn tap_in(ns: &NetNs, addr: &str, cfg: TapConfig) -> TapPort {
        let name = uniq("vswt");
        let tap = TapPort::create_with(&name, cfg).expect("create TAP");
        assert_eq!(tap.name(), name);
        run(&["ip", "link", "set", &name, "netns", &ns.name]);
        ns.exec(&["ip", "link", "set", &name, "name", "eth0"]);
        ns.exec(&["ip", "addr", "add", addr, "dev", "eth0"]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        tap
    }

    const ETYPE: [u8; 2] = [0x88, 0xb5];

    fn test_frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 1, tag]);
        f[12..14].copy_from_slice(&ETYPE);
        for (i, b) in f[14..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(3) ^ tag;
        }
        f
    }

    fn collect(port: &mut dyn Port, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut b = Batch::new(MTU_SLOT);
        let end = Instant::now() + Duration::from_secs(2);
        while got.len() < n && Instant::now() < end {
            b.clear();
            port.recv_burst(&mut b).unwrap();
            got.extend(
                (0..b.len())
                    .filter(|&i| b.frame(i).len() >= 14 && b.frame(i)[12..14] == ETYPE)
                    .map(|i| b.frame(i).to_vec()),
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn frames_both_ways_after_move_into_namespace() {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let mut tap = tap_in(&ns, "10.211.0.1/24", TapConfig::default());
        assert!(tap.caps().vnet_hdr);
        assert_ne!(tap.offloads() & libc::TUN_F_TSO4, 0);
        let mmsg = AfPacketConfig {
            rx: RxMode::Mmsg,
            ..AfPacketConfig::default()
        };
        let mut inner = ns
            .enter(move || AfPacketPort::open_with("eth0", mmsg))
            .expect("open eth0 inside");

        // Inside (the container's eth0) -> the switch's descriptor.
        let mut b = Batch::new(MTU_SLOT);
        let up: Vec<_> = (0..3).map(|k| test_frame(k, 100 + k as usize)).collect();
        for f in &up {
            b.push(f, VnetHdr::default());
        }
        assert_eq!(inner.send_burst(&b, &[0, 1, 2]).unwrap(), 3);
        assert_eq!(collect(&mut tap, 3), up);
        assert!(tap.stats().rx_frames >= 3);

        // The switch -> inside.
        let mut b = Batch::new(MTU_SLOT);
        let down: Vec<_> = (0..2).map(|k| test_frame(20 + k, 300)).collect();
        for f in &down {
            b.push(f, VnetHdr::default());
        }
        assert_eq!(tap.send_burst(&b, &[0, 1]).unwrap(), 2);
        assert_eq!(collect(&mut inner, 2), down);
        assert_eq!(tap.stats().tx_frames, 2);
    }

    #[test]
    fn oversize_frame_is_counted_and_dropped() {
        if skip() {
            return;
        }
        let ns = NetNs::new();
        let mut tap = tap_in(&ns, "10.212.0.1/24", TapConfig::default());
        let mmsg = AfPacketConfig {
            rx: RxMode::Mmsg,
            ..AfPacketConfig::default()
        };
        let mut inner = ns
            .enter(move || AfPacketPort::open_with("eth0", mmsg))
            .unwrap();
        let mut b = Batch::new(MTU_SLOT);
        b.push(&test_frame(1, 1000), VnetHdr::default());
        b.push(&test_frame(2, 100), VnetHdr::default());
        assert_eq!(inner.send_burst(&b, &[0, 1]).unwrap(), 2);
        let mut small = Batch::new(crate::batch::HEADROOM + 300);
        let end = Instant::now() + Duration::from_secs(2);
        let mut got = None;
        while got.is_none() && Instant::now() < end {
            small.clear();
            tap.recv_burst(&mut small).unwrap();
            got = (0..small.len())
                .find(|&i| small.frame(i).len() >= 14 && small.frame(i)[12..14] == ETYPE)
                .map(|i| small.frame(i).to_vec());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got.expect("small frame"), test_frame(2, 100));
        assert!(tap.stats().rx_oversize >= 1, "{:?}", tap.stats());
    }

    #[test]
    fn multi_queue_attaches_a_second_queue() {
        if skip() {
            return;
        }
        let name = uniq("vswq");
        let mq = TapConfig {
            multi_queue: true,
            ..TapConfig::default()
        };
        let q0 = TapPort::create_with(&name, mq).unwrap();
        let q1 = TapPort::create_with(&name, mq).expect("second queue of the same device");
        assert_eq!(q0.name(), q1.name());
        assert_ne!(q0.raw_fd(), q1.raw_fd());
        // A single-queue device cannot be opened twice.
        let single = uniq("vswq");
        let _s0 = TapPort::create(&single).unwrap();
        let e = TapPort::create(&single).unwrap_err();
        assert!(e.to_string().contains("TUNSETIFF"), "{e}");
    }

    #[test]
    fn persistent_tap_outlives_its_descriptor_and_is_attached_again() {
        if skip() {
            return;
        }
        /// Deletes the link when the test ends, also when an assertion fails.
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                if let Ok(nl) = crate::netns::Netlink::new() {
                    let _ = nl.delete_link(&self.0);
                }
            }
        }
        let nl = crate::netns::Netlink::new().unwrap();
        let name = uniq("vswp");
        let _del = Del(name.clone());
        let cfg = TapConfig {
            persist: true,
            ..TapConfig::default()
        };
        drop(TapPort::create_with(&name, cfg).unwrap());
        assert!(nl.link_exists(&name).unwrap(), "gone with its descriptor");
        let again = TapPort::create_with(&name, cfg).expect("attached to again");
        assert_eq!(again.name(), name);
        assert_eq!(again.named("vswother").name(), "vswother");
        // Without the flag a TAP lives as long as its descriptor.
        let plain = uniq("vswp");
        let _del_plain = Del(plain.clone());
        drop(TapPort::create(&plain).unwrap());
        // Another test thread forking a client may hold a copy of the descriptor until its
        // exec (CLOEXEC closes it only then), so the device goes a moment later.
        let gone = (0..200).any(|_| {
            let there = nl.link_exists(&plain).unwrap();
            if there {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            !there
        });
        assert!(gone, "outlived its descriptor");
    }

    #[test]
    fn bad_name_is_refused() {
        assert!(matches!(
            TapPort::create("this-name-is-way-too-long"),
            Err(PortError::BadName(_))
        ));
    }

    /// Offloads pass through: a TCP transfer between two namespaces joined only by two TAPs and
    /// a forwarder arrives complete, carried by GSO super-frames.
    #[test]
    fn tcp_crosses_as_gso_frames() {
        if skip() {
            return;
        }
        let st = tcp_through(8 << 20, |na, nb| {
            let a = tap_in(na, "10.203.0.1/24", TapConfig::default());
            let b = tap_in(nb, "10.203.0.2/24", TapConfig::default());
            (a, b, Vec::new())
        });
        assert!(st.gso_frames > 0, "no GSO frame crossed the TAPs: {st:?}");
        assert!(st.max_len > 1514, "{st:?}");
    }

    /// Throughput and latency of TAP <-> TAP through a trivial forwarder. Run by hand (see
    /// `measure_afpacket`).
    #[test]
    #[ignore = "measurement, run by hand"]
    fn measure_tap() {
        if skip() {
            return;
        }
        for (label, vnet) in [("tap+vnet", true), ("tap, no vnet", false)] {
            let c = TapConfig {
                vnet_hdr: vnet,
                ..TapConfig::default()
            };
            crate::port::sys::testnet::measure(label, 5, |na, nb| {
                let a = tap_in(na, "10.203.0.1/24", c);
                let b = tap_in(nb, "10.203.0.2/24", c);
                (a, b, Vec::new())
            });
        }
    }
}
