//! `afpacket-fwd`: the AF_PACKET ceiling. A forwarder with no switching logic at all between
//! two interfaces: what arrives on one is sent out of the other, in batches, through the same
//! kernel mechanism as vswitch's default (veth) ports: `recvmmsg`/`sendmmsg` on `AF_PACKET`
//! sockets with `PACKET_VNET_HDR` (GSO frames and partial checksums pass through unchanged),
//! `PACKET_QDISC_BYPASS` and `PACKET_IGNORE_OUTGOING`, batches of 64.
//!
//! `bench/compare.sh` runs it as the targets `afp` (one thread, as vswitch has one worker) and
//! `afp2` (one thread per CPU, each pinned to its CPU with its own pair of sockets in a
//! `PACKET_FANOUT_CPU` group, so that a frame is forwarded by the thread of the CPU it was
//! received on). What vswitch forwards against `afp` is how much of the mechanism's rate its
//! own work costs; `afp2` against the kernel bridge is what a forwarder on this mechanism can
//! reach when every CPU forwards, as the bridge does in each sender's system call.
//!
//! ```text
//! afpacket-fwd IF1 IF2 [--threads N] [--no-pin] [--no-vnet] [--rcvbuf BYTES] [--xdp]
//! ```
//!
//! With `--xdp` it forwards through vswitch's own AF_XDP ports instead (the target `axp`: the
//! same question for the `--attach xdp` mode).
//!
//! Runs until it is killed or an interface goes away. Needs CAP_NET_RAW.

use bench::load::sys::{bind_packet, ifindex, setopt};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Frames per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// A slot holds the vnet header and the largest GSO frame veth hands over.
const SLOT: usize = 10 + 65_536 + 14 + 4;
const SLOT_SMALL: usize = 2048;

fn with_name(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An `AF_PACKET` socket bound to `ifindex`, in the fanout group `group` when given.
fn open(ifindex: u32, vnet: bool, group: Option<u16>, rcvbuf: i32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before it is owned.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(with_name("socket", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor we just opened and own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if vnet {
        setopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            &1i32,
            "PACKET_VNET_HDR",
        )?;
    }
    if rcvbuf > 0 {
        setopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf,
            "SO_RCVBUFFORCE",
        )?;
    }
    setopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        &1i32,
        "PACKET_QDISC_BYPASS",
    )?;
    setopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &1i32,
        "PACKET_IGNORE_OUTGOING",
    )?;
    bind_packet(fd.as_raw_fd(), ifindex, proto)?;
    if let Some(g) = group {
        let arg = i32::from(g) | ((libc::PACKET_FANOUT_CPU as i32) << 16);
        setopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            &arg,
            "PACKET_FANOUT",
        )?;
    }
    Ok(fd)
}

/// One direction's buffers: `BATCH` slots and the headers that point at them.
struct Dir {
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    slot: usize,
}

impl Dir {
    fn new(slot: usize) -> Box<Dir> {
        let mut d = Box::new(Dir {
            bufs: vec![0u8; slot * BATCH],
            iov: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            slot,
        });
        let base = d.bufs.as_mut_ptr();
        for i in 0..BATCH {
            d.iov.push(libc::iovec {
                // SAFETY: i * slot < bufs.len(): within the allocation.
                iov_base: unsafe { base.add(i * slot) }.cast(),
                iov_len: slot,
            });
        }
        let iov = d.iov.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: i < BATCH = iov.len(); the Vec is never resized after this.
            m.msg_hdr.msg_iov = unsafe { iov.add(i) };
            m.msg_hdr.msg_iovlen = 1;
            d.msgs.push(m);
        }
        d
    }

    /// Receives up to `BATCH` frames from `from` and sends them to `to`. Returns the number
    /// received.
    fn pump(&mut self, from: &OwnedFd, to: &OwnedFd) -> usize {
        for iov in &mut self.iov {
            iov.iov_len = self.slot;
        }
        // SAFETY: `msgs` holds BATCH headers whose iovecs point into `bufs`, all owned by self
        // and alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                from.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for i in 0..n {
            self.iov[i].iov_len = self.msgs[i].msg_len as usize;
        }
        // SAFETY: as above; the first n headers describe the frames just received. Frames the
        // kernel does not take are dropped, as a switch's full output would drop them.
        unsafe {
            libc::sendmmsg(to.as_raw_fd(), self.msgs.as_mut_ptr(), n as u32, 0);
        }
        n
    }
}

/// One forwarding thread: its own sockets on both interfaces, pinned to `cpu` when given.
fn forward(
    ifs: [u32; 2],
    vnet: bool,
    rcvbuf: i32,
    group: Option<[u16; 2]>,
    cpu: Option<usize>,
) -> io::Error {
    if let Some(cpu) = cpu {
        // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; the call reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let socks = match (
        open(ifs[0], vnet, group.map(|g| g[0]), rcvbuf),
        open(ifs[1], vnet, group.map(|g| g[1]), rcvbuf),
    ) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let slot = if vnet { SLOT } else { SLOT_SMALL };
    let mut dirs = [Dir::new(slot), Dir::new(slot)];
    serve(
        [socks[0].as_raw_fd(), socks[1].as_raw_fd()],
        |d| format!("interface index {} (removed or down?)", ifs[d]),
        |d| Ok(dirs[d].pump(&socks[d], &socks[1 - d])),
    )
}

/// `--xdp`: the same, through vswitch's own AF_XDP port (`switch::port::xdp::XdpPort`: its XDP
/// program on each interface, an XSK on queue 0 in copy mode) and batches, with no pipeline.
/// The interfaces' peers must not hand it frames larger than a UMEM chunk (turn TSO, GSO and
/// checksum offload off on them, as `--attach xdp` does in a container).
fn forward_xdp(a: &str, b: &str) -> io::Error {
    use switch::batch::{Batch, BATCH_SIZE, GSO_SLOT};
    use switch::port::xdp::XdpPort;
    use switch::port::Port;
    let mut ports = match (XdpPort::open(a), XdpPort::open(b)) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => return io::Error::other(e.to_string()),
    };
    let mut batch = Batch::new(GSO_SLOT);
    let all: Vec<u16> = (0..BATCH_SIZE as u16).collect();
    let fds = [
        ports[0].raw_fd().unwrap_or(-1),
        ports[1].raw_fd().unwrap_or(-1),
    ];
    let names = [ports[0].name().to_string(), ports[1].name().to_string()];
    serve(
        fds,
        |d| names[d].clone(),
        |d| {
            batch.clear();
            let n = match ports[d].recv_burst(&mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if n > 0 {
                let _ = ports[1 - d].send_burst(&batch, &all[..n]);
            }
            Ok(n)
        },
    )
}

/// The loop of one forwarding thread: waits until `fds[0]` or `fds[1]` is readable, then calls
/// `pump(d)` for each readable side `d` until it moves less than a full batch. Returns why it
/// stopped: an error of `poll` or `pump`, or a socket error (`name(d)` says which).
fn serve(
    fds: [i32; 2],
    name: impl Fn(usize) -> String,
    mut pump: impl FnMut(usize) -> io::Result<usize>,
) -> io::Error {
    let mut pfd = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: `pfd` is a valid array of two pollfds for the call.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, 1000) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return e;
            }
            continue;
        }
        for (d, p) in pfd.iter().enumerate() {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // The interface went away (or down): nothing more will arrive.
                return io::Error::other(format!("socket error on {}", name(d)));
            }
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                match pump(d) {
                    Ok(n) if n == BATCH => continue,
                    Ok(_) => break,
                    Err(e) => return e,
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: afpacket-fwd IF1 IF2 [--threads N] [--no-pin] [--no-vnet] [--rcvbuf BYTES] [--xdp]";
    let mut names = Vec::new();
    let mut threads = 1usize;
    let mut vnet = true;
    let mut rcvbuf = 0i32;
    let mut pin = true;
    let mut xdp = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if (1..=256).contains(&n) => threads = n,
                _ => {
                    eprintln!("--threads takes a number from 1 to 256\n{usage}");
                    std::process::exit(2);
                }
            },
            "--no-vnet" => vnet = false,
            "--no-pin" => pin = false,
            "--xdp" => xdp = true,
            "--rcvbuf" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => rcvbuf = n,
                _ => {
                    eprintln!("--rcvbuf takes a number of bytes\n{usage}");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                println!("{usage}");
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown option {a}\n{usage}");
                std::process::exit(2);
            }
            _ => names.push(a.clone()),
        }
    }
    if names.len() != 2 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    if xdp {
        if threads != 1 {
            eprintln!(
                "--xdp forwards with one thread (one socket per interface, queue 0)\n{usage}"
            );
            std::process::exit(2);
        }
        let e = forward_xdp(&names[0], &names[1]);
        eprintln!("afpacket-fwd: {e}");
        std::process::exit(1);
    }
    let ifs = match (ifindex(&names[0]), ifindex(&names[1])) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("afpacket-fwd: {e}");
            std::process::exit(1);
        }
    };
    // Fanout group ids, one per interface, unique to this process.
    let group = (threads > 1).then(|| {
        let base = (std::process::id() as u16) & 0x7fff;
        [base, base | 0x8000]
    });
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cpu = (threads > 1 && pin).then_some(t);
            std::thread::spawn(move || forward(ifs, vnet, rcvbuf, group, cpu))
        })
        .collect();
    for h in handles {
        if let Ok(e) = h.join() {
            eprintln!("afpacket-fwd: {e}");
            std::process::exit(1);
        }
    }
}
