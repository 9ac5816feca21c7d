//! Small syscall helpers shared by the AF_PACKET and TAP ports, and the error type of port
//! creation.
//!
//! Everything here is a thin, checked wrapper over `libc`: each function turns the C return
//! convention (`-1` + `errno`) into an `io::Result` so callers never look at `errno` themselves.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why a port could not be opened or created. Each message says what failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The interface name is empty, too long (15 bytes at most) or contains a NUL byte.
    #[error("invalid interface name {0:?}: it must be 1 to 15 bytes without NUL")]
    BadName(String),
    /// No interface with this name exists in the switch's network namespace.
    #[error("interface {name:?} not found in this network namespace ({source}); create it first or check the name")]
    NoSuchInterface {
        name: String,
        #[source]
        source: io::Error,
    },
    /// A setup syscall failed; `what` names the step.
    #[error("{what} failed for port {name:?}: {source} (is the process root / CAP_NET_ADMIN and the kernel recent enough?)")]
    Setup {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// A ring geometry that the kernel would refuse.
    #[error("invalid ring geometry for port {name:?}: {why}")]
    BadGeometry { name: String, why: String },
}

impl PortError {
    pub(crate) fn setup(name: &str, what: &'static str, source: io::Error) -> Self {
        PortError::Setup {
            name: name.to_owned(),
            what,
            source,
        }
    }
}

/// Converts a C return value (`-1` means `errno`) into a result.
#[inline]
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a C `ssize_t` return value into a result.
#[inline]
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Checks an interface name and turns it into a C string.
pub fn check_ifname(name: &str) -> Result<CString, PortError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(PortError::BadName(name.to_owned()));
    }
    CString::new(name).map_err(|_| PortError::BadName(name.to_owned()))
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<libc::c_int, PortError> {
    let c = check_ifname(name)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(PortError::NoSuchInterface {
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(idx as libc::c_int)
}

/// `setsockopt` with a plain `int` value.
pub(crate) fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    setsockopt_raw(fd, level, opt, &val)
}

/// `setsockopt` with any plain-old-data value.
pub(crate) fn setsockopt_raw<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live `T` of exactly `size_of::<T>()` bytes for the duration of
    // the call; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `getsockopt` into a plain-old-data value (zeroed first).
pub(crate) fn getsockopt_raw<T: Copy>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
) -> io::Result<T> {
    // SAFETY: T is only used with plain C structs and integers, for which all-zero is valid.
    let mut val: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live, writable `T` and `len` says its exact size; the kernel writes at
    // most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut val as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// Wraps a freshly returned descriptor (checked for `-1`) into an [`OwnedFd`].
pub(crate) fn owned_fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    // SAFETY: `fd` was just returned by the kernel, is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True for the errors that mean "nothing to do right now" on a non-blocking descriptor.
#[inline]
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

/// True when the process runs as root (the port tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(matches!(check_ifname(""), Err(PortError::BadName(_))));
        assert!(matches!(
            check_ifname("a-name-that-is-too-long"),
            Err(PortError::BadName(_))
        ));
        assert!(matches!(check_ifname("a\0b"), Err(PortError::BadName(_))));
    }

    #[test]
    fn loopback_has_an_index_and_unknown_names_fail() {
        assert!(ifindex("lo").unwrap() > 0);
        let e = ifindex("vsw-nope-0").unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn cvt_maps_minus_one_to_errno() {
        // SAFETY: closing an invalid descriptor is harmless and returns EBADF.
        let r = cvt(unsafe { libc::close(-1) });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}

/// Test fixtures: network namespaces, veth pairs, a trivial two-port forwarder. Tests use the
/// `ip` command here (only tests do); everything is named uniquely per process and per fixture
/// and removed in `Drop`.
#[cfg(test)]
pub(crate) mod testnet {
    use crate::batch::{Batch, GSO_SLOT};
    use crate::port::Port;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// A short name unique to this process and call: `prefix` + pid + sequence (<= 15 bytes).
    pub fn uniq(prefix: &str) -> String {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let s = format!("{prefix}{}x{n}", std::process::id() % 100_000);
        assert!(s.len() < 16, "name too long: {s}");
        s
    }

    /// Runs a command, panicking with its output when it fails.
    pub fn run(args: &[&str]) -> Output {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Returns true when the test must return early: not root, or no `ip` on `PATH`. Decided by
    /// [`crate::testing`] (a skip is recorded; under `CI=true` this fails the test instead).
    pub fn skip() -> bool {
        !(crate::testing::require_root() && crate::testing::require_tools(&["ip"]))
    }

    /// A named network namespace, deleted on drop.
    pub struct NetNs {
        pub name: String,
    }

    impl NetNs {
        pub fn new() -> Self {
            let name = uniq("vswpt");
            run(&["ip", "netns", "add", &name]);
            let ns = NetNs { name };
            ns.exec(&["ip", "link", "set", "lo", "up"]);
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
            ns
        }

        /// Runs `args` inside the namespace.
        pub fn exec(&self, args: &[&str]) -> Output {
            let mut v = vec!["ip", "netns", "exec", &self.name];
            v.extend_from_slice(args);
            run(&v)
        }

        /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
        pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            self.spawn(f).join().expect("namespace thread panicked")
        }

        /// Starts `f` on a new thread inside this namespace.
        pub fn spawn<T: Send + 'static>(
            &self,
            f: impl FnOnce() -> T + Send + 'static,
        ) -> std::thread::JoinHandle<T> {
            let path = format!("/run/netns/{}", self.name);
            std::thread::spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns");
                // SAFETY: setns on a valid namespace fd; it moves only this (dedicated) thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
        }
    }

    impl Drop for NetNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }

    /// A veth pair: `host` stays in the current namespace (up, no IPv6), `peer` goes into `ns`
    /// as `eth0`, up, with address `addr` (CIDR). Deleted on drop.
    pub struct Veth {
        pub host: String,
    }

    impl Veth {
        pub fn new(ns: &NetNs, addr: &str) -> Self {
            let host = uniq("vswh");
            let peer = uniq("vswp");
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns",
                &ns.name,
            ]);
            let v = Veth { host };
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", v.host),
                "1",
            );
            run(&["ip", "link", "set", &v.host, "up"]);
            ns.exec(&["ip", "link", "set", &peer, "name", "eth0"]);
            ns.exec(&["ip", "addr", "add", addr, "dev", "eth0"]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
            v
        }
    }

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.host])
                .output();
        }
    }

    /// Waits until `fd` is readable or `ms` milliseconds pass.
    pub fn wait_readable(fds: &[i32], ms: i32) {
        let mut p: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `p` is a valid array of pollfd of the length passed.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    }

    /// Receives from `port` until a frame satisfies `want` or `timeout` passes.
    pub fn recv_until(
        port: &mut dyn Port,
        timeout: Duration,
        mut want: impl FnMut(&Batch, usize) -> bool,
    ) -> Option<(Vec<u8>, crate::batch::VnetHdr)> {
        let mut b = Batch::new(GSO_SLOT);
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            b.clear();
            port.recv_burst(&mut b).expect("recv_burst");
            for i in 0..b.len() {
                if want(&b, i) {
                    return Some((b.frame(i).to_vec(), b.meta(i).vnet));
                }
            }
            if b.is_empty() {
                wait_readable(&[port.raw_fd().unwrap()], 5);
            }
        }
        None
    }

    /// What a forwarder run saw.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct FwdStats {
        pub frames: u64,
        pub gso_frames: u64,
        pub max_len: usize,
        pub tx_short: u64,
    }

    /// Forwards every frame between `a` and `b` until `stop` is set: the smallest possible
    /// "switch", used to prove end-to-end traffic and to measure the ports.
    pub fn forward(a: &mut dyn Port, b: &mut dyn Port, stop: &AtomicBool) -> FwdStats {
        let mut st = FwdStats::default();
        let mut batch = Batch::new(GSO_SLOT);
        let mut sel = [0u16; crate::batch::BATCH_SIZE];
        for (i, s) in sel.iter_mut().enumerate() {
            *s = i as u16;
        }
        let fds = [a.raw_fd().unwrap(), b.raw_fd().unwrap()];
        while !stop.load(Ordering::Relaxed) {
            let mut moved = 0;
            for dir in 0..2 {
                let (src, dst): (&mut dyn Port, &mut dyn Port) = if dir == 0 {
                    (&mut *a, &mut *b)
                } else {
                    (&mut *b, &mut *a)
                };
                batch.clear();
                let n = src.recv_burst(&mut batch).expect("recv_burst");
                if n == 0 {
                    continue;
                }
                moved += n;
                for i in 0..n {
                    st.frames += 1;
                    st.max_len = st.max_len.max(batch.frame(i).len());
                    if batch.meta(i).vnet.is_gso() {
                        st.gso_frames += 1;
                    }
                }
                let sent = dst.send_burst(&batch, &sel[..n]).expect("send_burst");
                st.tx_short += (n - sent) as u64;
            }
            if moved == 0 {
                wait_readable(&fds, 10);
            }
        }
        st
    }

    /// Two namespaces `A` (10.203.0.1/24) and `B` (10.203.0.2/24) joined only by a forwarder
    /// between ports `a` and `b`; sends `bytes` over TCP from A to B and returns what the
    /// forwarder saw. The ports are made by `make`, which gets the two namespaces.
    pub fn tcp_through<P: Port + 'static>(
        bytes: usize,
        make: impl FnOnce(&NetNs, &NetNs) -> (P, P, Vec<Box<dyn std::any::Any>>),
    ) -> FwdStats {
        let (na, nb) = (NetNs::new(), NetNs::new());
        let (mut pa, mut pb, _keep) = make(&na, &nb);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let fwd = std::thread::spawn(move || forward(&mut pa, &mut pb, &stop2));
        let server = nb.spawn(move || {
            let l = std::net::TcpListener::bind("10.203.0.2:5201").expect("listen");
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) => panic!("read: {e}"),
                }
            }
            total
        });
        let client = na.spawn(move || {
            let end = Instant::now() + Duration::from_secs(5);
            let mut s = loop {
                match std::net::TcpStream::connect_timeout(
                    &"10.203.0.2:5201".parse().unwrap(),
                    Duration::from_secs(1),
                ) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > end => panic!("connect: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            let chunk = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n]).expect("write");
                left -= n;
            }
        });
        client.join().expect("client");
        let got = server.join().expect("server");
        stop.store(true, Ordering::Relaxed);
        let st = fwd.join().expect("forwarder");
        assert_eq!(got, bytes, "receiver got all bytes");
        st
    }

    /// Measures a forwarder between two ports (run by hand: the ignored `measure_*` tests):
    /// iperf3 TCP single stream A -> B for `secs` seconds and 50 pings. Prints one line.
    pub fn measure<P: Port + 'static>(
        label: &str,
        secs: u32,
        make: impl FnOnce(&NetNs, &NetNs) -> (P, P, Vec<Box<dyn std::any::Any>>),
    ) {
        let (na, nb) = (NetNs::new(), NetNs::new());
        let (mut pa, mut pb, _keep) = make(&na, &nb);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let fwd = std::thread::spawn(move || forward(&mut pa, &mut pb, &stop2));
        let ping = na.exec(&["ping", "-c", "50", "-i", "0.02", "-q", "10.203.0.2"]);
        let ping = String::from_utf8_lossy(&ping.stdout).into_owned();
        let rtt = ping
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split('=').nth(1))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let mut server = Command::new("ip")
            .args([
                "netns", "exec", &nb.name, "iperf3", "-s", "-1", "-p", "5201",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        std::thread::sleep(Duration::from_millis(300));
        let t = secs.to_string();
        let out = na.exec(&["iperf3", "-c", "10.203.0.2", "-p", "5201", "-t", &t, "-J"]);
        let _ = server.kill();
        let _ = server.wait();
        stop.store(true, Ordering::Relaxed);
        let st = fwd.join().expect("forwarder");
        let json = String::from_utf8_lossy(&out.stdout);
        let gbps = json
            .find("\"sum_received\"")
            .and_then(|i| json[i..].find("\"bits_per_second\":").map(|j| i + j + 18))
            .and_then(|k| {
                json[k..]
                    .trim_start()
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map(|b| b / 1e9)
            .unwrap_or(f64::NAN);
        eprintln!(
            "MEASURE {label}: TCP {gbps:.2} Gbit/s, ping rtt min/avg/max/mdev {rtt}, frames {} \
             (gso {}, max {} B, tx short {})",
            st.frames, st.gso_frames, st.max_len, st.tx_short
        );
    }
}
