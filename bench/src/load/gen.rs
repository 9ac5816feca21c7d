//! The packet generator: runs one trial — senders in some test ports' namespaces, receivers
//! in all of them — and counts what arrived where, with one-way latency.
//!
//! Each port gets one sender thread (AF_PACKET, `sendmmsg` batches of up to 64, paced by
//! [`Pacer`]) and one receiver thread (AF_PACKET, `recvmmsg`, `PACKET_IGNORE_OUTGOING`, a
//! 64 MiB buffer whose overflows are reported separately as `rx_socket_drops`, so a slow
//! receiver is never mistaken for loss in the switch). Frames carry a sequence number and a
//! CLOCK_MONOTONIC send timestamp; receivers on the same host read the same clock, so the
//! difference is the one-way latency, recorded in an HDR histogram.

use super::frame::{self, Errored, FrameSpec, Mac, BROADCAST};
use super::pace::Pacer;
use super::sys::{now_ns, spawn_in_netns, PacketSocket, MAX_BATCH};
use hdrhistogram::Histogram;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// One test port: an interface inside a network namespace.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Path of the namespace (/run/netns/NAME).
    pub ns: PathBuf,
    /// Interface inside it.
    pub ifname: String,
}

/// Where a sender's frames go.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    /// Unicast to the emulated hosts behind these ports, round robin (one port: a stream;
    /// all others: RFC 2889's fully meshed pattern).
    Unicast(Vec<usize>),
    /// To the broadcast address.
    Broadcast,
    /// Learning frames (ignored by receivers) to broadcast: teaches the switch the sender's
    /// source addresses.
    Learn,
    /// Unicast to port `to`, with every `every`-th frame replaced by an errored frame (the
    /// kinds in turn).
    Errored {
        /// Destination port.
        to: usize,
        /// One errored frame per this many.
        every: u32,
    },
}

/// One sender's traffic.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Sending port index.
    pub port: usize,
    /// Frames per second (`f64::INFINITY`: as fast as the generator goes).
    pub rate: f64,
    /// Frame size with FCS (64..1518).
    pub size: usize,
    /// Source hosts used: `host_mac(port, first..first+count)`.
    pub src_first: u32,
    /// Number of source hosts.
    pub src_count: u32,
    /// Destination hosts per destination port: `host_mac(to, 0..dst_count)`.
    pub dst_count: u32,
    /// Number of flows (UDP port pairs).
    pub flows: u16,
    /// Where to.
    pub pattern: Pattern,
    /// Stop after this many frames (a burst); `None`: run for the trial's duration.
    pub limit: Option<u64>,
}

impl Traffic {
    /// A single stream from `port` to `to` with one host on each side.
    pub fn stream(port: usize, to: usize, size: usize, rate: f64) -> Traffic {
        Traffic {
            port,
            rate,
            size,
            src_first: 0,
            src_count: 1,
            dst_count: 1,
            flows: 1,
            pattern: Pattern::Unicast(vec![to]),
            limit: None,
        }
    }
}

/// A trial.
#[derive(Clone, Debug)]
pub struct TrialSpec {
    /// All test ports (receivers run on every one of them).
    pub ports: Vec<Endpoint>,
    /// Senders.
    pub traffic: Vec<Traffic>,
    /// Sending time.
    pub duration: Duration,
    /// Time receivers keep counting after the senders stop.
    pub settle: Duration,
}

/// Counts of one port.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PortResult {
    /// Measured frames sent.
    pub sent: u64,
    /// Of them broadcast.
    pub sent_broadcast: u64,
    /// Errored frames the kernel accepted from this port's sender.
    pub errored_sent: u64,
    /// Errored frames the kernel refused (e.g. oversize above the sender's MTU).
    pub errored_refused: u64,
    /// Errored frames sent, per kind (in [`Errored::ALL`] order).
    pub errored_kinds: [u64; 4],
    /// Sending time, ns.
    pub send_ns: u64,
    /// Measured frames received that were meant for this port (its hosts, or broadcast).
    pub received: u64,
    /// Unicast frames received that were meant for another port (flooded).
    pub flooded_in: u64,
    /// Errored frames received (a switch should drop them all).
    pub errored_received: u64,
    /// Frames that arrived with a lower sequence number than one already seen from the same
    /// sender.
    pub reordered: u64,
    /// Frames the receiving socket dropped (receiver too slow: not the switch's loss).
    pub rx_socket_drops: u64,
}

/// The outcome of a trial.
#[derive(Debug)]
pub struct TrialResult {
    /// Per port.
    pub ports: Vec<PortResult>,
    /// One-way latency of all measured frames, ns.
    pub latency: Histogram<u64>,
}

impl TrialResult {
    /// Measured frames sent.
    pub fn sent(&self) -> u64 {
        self.ports.iter().map(|p| p.sent).sum()
    }

    /// Deliveries expected: each unicast frame once, each broadcast to every other port.
    pub fn expected(&self) -> u64 {
        let n = self.ports.len() as u64;
        self.ports
            .iter()
            .map(|p| (p.sent - p.sent_broadcast) + p.sent_broadcast * n.saturating_sub(1))
            .sum()
    }

    /// Deliveries to the right port.
    pub fn received(&self) -> u64 {
        self.ports.iter().map(|p| p.received).sum()
    }

    /// Expected deliveries that did not happen.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// Lost fraction of the expected deliveries.
    pub fn loss_ratio(&self) -> f64 {
        let e = self.expected();
        if e == 0 {
            return 0.0;
        }
        self.lost() as f64 / e as f64
    }

    /// The offered load, frames per second (sum over senders of sent / their sending time).
    pub fn offered_pps(&self) -> f64 {
        self.ports
            .iter()
            .filter(|p| p.send_ns > 0)
            .map(|p| p.sent as f64 * 1e9 / p.send_ns as f64)
            .sum()
    }

    /// Deliveries per second over the longest sending time.
    pub fn received_pps(&self) -> f64 {
        let t = self.ports.iter().map(|p| p.send_ns).max().unwrap_or(0);
        if t == 0 {
            return 0.0;
        }
        self.received() as f64 * 1e9 / t as f64
    }

    /// Frames dropped by the receiving sockets (a measurement artefact, reported apart).
    pub fn rx_socket_drops(&self) -> u64 {
        self.ports.iter().map(|p| p.rx_socket_drops).sum()
    }

    /// Unicast frames seen on a port they were not meant for.
    pub fn flooded(&self) -> u64 {
        self.ports.iter().map(|p| p.flooded_in).sum()
    }
}

/// Live counters a trial updates (for a progress line).
#[derive(Debug, Default)]
pub struct Live {
    /// Measured frames sent so far.
    pub sent: AtomicU64,
    /// Measured frames received at their destination so far.
    pub received: AtomicU64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

struct SendOut {
    sent: u64,
    broadcast: u64,
    errored: u64,
    refused: u64,
    kinds: [u64; 4],
    ns: u64,
}

fn templates(t: &Traffic) -> (Vec<Vec<u8>>, bool) {
    let len = frame::wire_len(t.size);
    let dsts: Vec<usize> = match &t.pattern {
        Pattern::Unicast(v) => v.clone(),
        Pattern::Errored { to, .. } => vec![*to],
        _ => vec![],
    };
    let ndst = (dsts.len() as u64 * t.dst_count.max(1) as u64).max(1);
    let n = (t.src_count.max(1) as u64)
        .max(ndst)
        .max(t.flows.max(1) as u64)
        .max(MAX_BATCH as u64)
        .min(1 << 17) as usize;
    let bcast = matches!(t.pattern, Pattern::Broadcast | Pattern::Learn);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let dst: Mac = if bcast {
            BROADCAST
        } else {
            let d = dsts[i % dsts.len()];
            frame::host_mac(d, ((i / dsts.len()) as u32) % t.dst_count.max(1))
        };
        let mut b = Vec::new();
        frame::build(
            &mut b,
            &FrameSpec {
                len,
                dst,
                src: frame::host_mac(t.port, t.src_first + (i as u32 % t.src_count.max(1))),
                sender: t.port as u16,
                flow: (i % t.flows.max(1) as usize) as u16,
                magic: if t.pattern == Pattern::Learn {
                    frame::MAGIC_LEARN
                } else {
                    frame::MAGIC
                },
            },
        );
        out.push(b);
    }
    (out, bcast && t.pattern != Pattern::Learn)
}

fn sender(
    mut sock: PacketSocket,
    t: Traffic,
    dur: Duration,
    start: Arc<Barrier>,
    live: Arc<Live>,
) -> io::Result<SendOut> {
    let (mut tpl, bcast) = templates(&t);
    let k = tpl.len();
    let (err_every, err_to) = match t.pattern {
        Pattern::Errored { to, every } => (every.max(2) as u64, to),
        _ => (0, 0),
    };
    let mut errbuf = Vec::new();
    let mut err_kind = 0usize;
    start.wait();
    let t0 = now_ns();
    let deadline = t0 + dur.as_nanos() as u64;
    let limit = t.limit.unwrap_or(u64::MAX);
    let mut pacer = Pacer::new(t.rate, MAX_BATCH as u32, t0);
    let (mut seq, mut idx) = (0u64, 0usize);
    let mut out = SendOut {
        sent: 0,
        broadcast: 0,
        errored: 0,
        refused: 0,
        kinds: [0; 4],
        ns: 0,
    };
    let mut last = t0;
    loop {
        let now = now_ns();
        if now >= deadline || seq >= limit {
            break;
        }
        let mut n = pacer.due(now) as u64;
        if n == 0 {
            let w = pacer.wait_ns(now);
            if w > 300_000 {
                std::thread::sleep(Duration::from_nanos(w - 150_000));
            } else if w > 20_000 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        n = n.min(limit - seq);
        if err_every > 0 && (seq + n) / err_every > seq / err_every {
            // An errored frame is due within this batch: send it alone, then the good ones.
            let ki = err_kind % Errored::ALL.len();
            let kind = Errored::ALL[ki];
            err_kind += 1;
            frame::build_errored(
                &mut errbuf,
                kind,
                frame::host_mac(err_to, 0),
                frame::host_mac(t.port, t.src_first),
                t.port as u16,
            );
            match sock.send(&[&errbuf]) {
                Ok(1) => {
                    out.errored += 1;
                    out.kinds[ki] += 1;
                }
                _ => out.refused += 1,
            }
        }
        let ts = now_ns();
        for j in 0..n as usize {
            frame::stamp(&mut tpl[(idx + j) % k], seq + j as u64, ts);
        }
        let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        for (j, r) in refs.iter_mut().enumerate().take(n as usize) {
            *r = &tpl[(idx + j) % k];
        }
        let sent = sock.send(&refs[..n as usize])? as u64;
        pacer.sent(sent as u32);
        seq += sent;
        idx = (idx + sent as usize) % k;
        live.sent.fetch_add(sent, Ordering::Relaxed);
        if sent > 0 {
            last = now_ns();
        }
    }
    out.sent = seq;
    if bcast {
        out.broadcast = seq;
    }
    out.ns = last.saturating_sub(t0).max(1);
    Ok(out)
}

fn receiver(
    mut sock: PacketSocket,
    me: usize,
    nports: usize,
    ready: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
) -> io::Result<(PortResult, Histogram<u64>)> {
    let mut r = PortResult::default();
    let mut hist = new_hist();
    let mut last_seq = vec![None::<u64>; nports.max(1)];
    ready.wait();
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        let mut now = 0;
        sock.recv(|f| {
            if now == 0 {
                now = now_ns();
            }
            let Some(tag) = frame::parse(f) else {
                if frame::is_errored(f) {
                    r.errored_received += 1;
                }
                return;
            };
            if frame::is_errored(f) {
                r.errored_received += 1;
                return;
            }
            if tag.broadcast || tag.dst_port == Some(me) {
                r.received += 1;
                got += 1;
                let _ = hist.record(now.saturating_sub(tag.ts_ns).max(1));
                if let Some(s) = last_seq.get_mut(tag.sender as usize) {
                    if s.is_some_and(|p| tag.seq < p) {
                        r.reordered += 1;
                    } else {
                        *s = Some(tag.seq);
                    }
                }
            } else {
                r.flooded_in += 1;
            }
        })?;
        live.received.fetch_add(got, Ordering::Relaxed);
    }
    r.rx_socket_drops = sock.stats().drops;
    Ok((r, hist))
}

/// Runs a trial. `tick` is called about every 250 ms while it runs, with the elapsed time
/// and the live counters (for a progress line).
pub fn run_trial(
    spec: &TrialSpec,
    mut tick: impl FnMut(Duration, &Live),
) -> io::Result<TrialResult> {
    let n = spec.ports.len();
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(n + 1));
    // Receivers first: open sockets in every namespace, then wait for all.
    let mut rx = Vec::new();
    for (i, ep) in spec.ports.iter().enumerate() {
        let (ifname, ready, stop, live) =
            (ep.ifname.clone(), ready.clone(), stop.clone(), live.clone());
        rx.push(spawn_in_netns(&ep.ns, "load-rx", move || {
            let sock = PacketSocket::open(&ifname, true);
            match sock {
                Ok(s) => receiver(s, i, n, ready, stop, live),
                Err(e) => {
                    ready.wait();
                    Err(e)
                }
            }
        })?);
    }
    ready.wait();
    let start = Arc::new(Barrier::new(spec.traffic.len() + 1));
    let mut tx = Vec::new();
    for t in &spec.traffic {
        let ep = spec.ports.get(t.port).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no test port {}", t.port),
            )
        })?;
        let (ifname, t, start, live, dur) = (
            ep.ifname.clone(),
            t.clone(),
            start.clone(),
            live.clone(),
            spec.duration,
        );
        tx.push((
            t.port,
            spawn_in_netns(&ep.ns, "load-tx", move || {
                match PacketSocket::open(&ifname, false) {
                    Ok(s) => sender(s, t, dur, start, live),
                    Err(e) => {
                        start.wait();
                        Err(e)
                    }
                }
            })?,
        ));
    }
    start.wait();
    let t0 = std::time::Instant::now();
    while tx.iter().any(|(_, h)| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if t0.elapsed().as_millis() % 250 < 50 {
            tick(t0.elapsed(), &live);
        }
    }
    let mut ports = vec![PortResult::default(); n];
    let mut first_err = None;
    for (p, h) in tx {
        match h
            .join()
            .map_err(|_| io::Error::other("a sender thread panicked"))?
        {
            Ok(Ok(o)) => {
                let r = &mut ports[p];
                r.sent += o.sent;
                r.sent_broadcast += o.broadcast;
                r.errored_sent += o.errored;
                r.errored_refused += o.refused;
                for (a, b) in r.errored_kinds.iter_mut().zip(o.kinds) {
                    *a += b;
                }
                r.send_ns = r.send_ns.max(o.ns);
            }
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    std::thread::sleep(spec.settle);
    stop.store(true, Ordering::Relaxed);
    let mut latency = new_hist();
    for (i, h) in rx.into_iter().enumerate() {
        match h
            .join()
            .map_err(|_| io::Error::other("a receiver thread panicked"))?
        {
            Ok(Ok((r, hist))) => {
                let p = &mut ports[i];
                p.received = r.received;
                p.flooded_in = r.flooded_in;
                p.errored_received = r.errored_received;
                p.reordered = r.reordered;
                p.rx_socket_drops = r.rx_socket_drops;
                let _ = latency.add(&hist);
            }
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    tick(t0.elapsed(), &live);
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(TrialResult { ports, latency })
}

/// Teaches the switch every source address the traffic will use (learning frames to
/// broadcast, paced at `rate`), then waits `settle`.
pub fn learn(
    ports: &[Endpoint],
    traffic: &[Traffic],
    rate: f64,
    settle: Duration,
) -> io::Result<()> {
    let mut learn = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in traffic {
        if seen.insert((t.port, t.src_first, t.src_count)) {
            learn.push(Traffic {
                rate,
                size: 64,
                dst_count: 1,
                flows: 1,
                pattern: Pattern::Learn,
                limit: Some(t.src_count.max(1) as u64),
                ..t.clone()
            });
        }
    }
    // Destination hosts must be known too: each destination port announces its hosts.
    for t in traffic {
        let dsts: Vec<usize> = match &t.pattern {
            Pattern::Unicast(v) => v.clone(),
            Pattern::Errored { to, .. } => vec![*to],
            _ => vec![],
        };
        for d in dsts {
            if seen.insert((d, 0, t.dst_count.max(1))) {
                learn.push(Traffic {
                    port: d,
                    rate,
                    size: 64,
                    src_first: 0,
                    src_count: t.dst_count.max(1),
                    dst_count: 1,
                    flows: 1,
                    pattern: Pattern::Learn,
                    limit: Some(t.dst_count.max(1) as u64),
                });
            }
        }
    }
    let max = learn
        .iter()
        .map(|t| t.limit.unwrap_or(1))
        .max()
        .unwrap_or(1);
    let spec = TrialSpec {
        ports: ports.to_vec(),
        traffic: learn,
        duration: Duration::from_secs_f64(max as f64 / rate + 1.0),
        settle,
    };
    run_trial(&spec, |_, _| {})?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(sent: &[(u64, u64)], received: &[u64]) -> TrialResult {
        TrialResult {
            ports: sent
                .iter()
                .zip(received)
                .map(|(&(s, b), &r)| PortResult {
                    sent: s,
                    sent_broadcast: b,
                    received: r,
                    send_ns: 1_000_000_000,
                    ..Default::default()
                })
                .collect(),
            latency: new_hist(),
        }
    }

    #[test]
    fn unicast_loss_counts_each_frame_once() {
        let r = res(&[(1000, 0), (0, 0)], &[0, 990]);
        assert_eq!(r.expected(), 1000);
        assert_eq!(r.lost(), 10);
        assert!((r.loss_ratio() - 0.01).abs() < 1e-9);
        assert!((r.offered_pps() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn broadcast_is_expected_at_every_other_port() {
        let r = res(&[(100, 100), (0, 0), (0, 0), (0, 0)], &[0, 100, 100, 97]);
        assert_eq!(r.expected(), 300);
        assert_eq!(r.lost(), 3);
    }

    #[test]
    fn duplicates_never_make_negative_loss() {
        let r = res(&[(10, 0), (0, 0)], &[0, 12]);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn templates_cycle_hosts_flows_and_destinations() {
        let t = Traffic {
            port: 0,
            rate: 1.0,
            size: 64,
            src_first: 10,
            src_count: 3,
            dst_count: 2,
            flows: 5,
            pattern: Pattern::Unicast(vec![1, 2]),
            limit: None,
        };
        let (tpl, bcast) = templates(&t);
        assert!(!bcast);
        assert!(tpl.len() >= MAX_BATCH);
        let mut dsts = std::collections::HashSet::new();
        let mut srcs = std::collections::HashSet::new();
        let mut flows = std::collections::HashSet::new();
        for f in &tpl {
            assert_eq!(f.len(), 60);
            let tag = frame::parse(f).expect("measured frame");
            dsts.insert(f[0..6].to_vec());
            srcs.insert(f[6..12].to_vec());
            flows.insert(f[34..36].to_vec());
            assert!(tag.dst_port == Some(1) || tag.dst_port == Some(2));
        }
        assert_eq!((dsts.len(), srcs.len(), flows.len()), (4, 3, 5));
    }
}

/// Generator tests on a real veth pair (root only): counting and rate control.
#[cfg(test)]
mod veth_tests {
    use super::*;
    use crate::load::target::{Kind, Topology, VswitchOpts};

    fn root() -> bool {
        // SAFETY: geteuid has no arguments and cannot fail.
        let r = unsafe { libc::geteuid() } == 0;
        if !r {
            eprintln!("skipped: needs root");
        }
        r
    }

    fn one(topo: &Topology, t: Traffic, secs: f64) -> TrialResult {
        run_trial(
            &TrialSpec {
                ports: topo.ports.clone(),
                traffic: vec![t],
                duration: Duration::from_secs_f64(secs),
                settle: Duration::from_millis(200),
            },
            |_, _| {},
        )
        .expect("trial runs")
    }

    #[test]
    fn counts_every_frame_and_paces_within_5_percent() {
        if !root() {
            return;
        }
        let topo = Topology::setup(Kind::Veth, 2, &VswitchOpts::default()).expect("veth pair");
        for rate in [2_000.0, 20_000.0] {
            let r = one(
                &topo,
                Traffic {
                    flows: 8,
                    ..Traffic::stream(0, 1, 128, rate)
                },
                1.5,
            );
            let off = r.offered_pps();
            assert!(
                (off - rate).abs() / rate < 0.05,
                "asked {rate}, offered {off}"
            );
            // A bare veth loses nothing: every frame is counted once, at port 1.
            assert_eq!(r.received(), r.sent(), "{:?}", r.ports);
            assert_eq!(r.ports[1].received, r.sent());
            assert_eq!(r.flooded(), 0);
            assert_eq!(r.latency.len(), r.sent());
            assert!(r.latency.min() > 0);
        }
    }

    #[test]
    fn bursts_send_exactly_their_length_and_broadcast_counts_per_receiver() {
        if !root() {
            return;
        }
        let topo = Topology::setup(Kind::Veth, 2, &VswitchOpts::default()).expect("veth pair");
        let mut t = Traffic::stream(0, 1, 64, f64::INFINITY);
        t.limit = Some(5000);
        let r = one(&topo, t, 2.0);
        assert_eq!(r.sent(), 5000);
        assert!(r.received() <= 5000);
        let b = Traffic {
            pattern: Pattern::Broadcast,
            ..Traffic::stream(0, 1, 64, 5_000.0)
        };
        let r = one(&topo, b, 0.5);
        assert_eq!(r.expected(), r.sent());
        assert_eq!(r.ports[0].sent_broadcast, r.sent());
        assert_eq!(r.received(), r.sent());
    }

    #[test]
    fn errored_frames_are_sent_and_recognised_at_the_receiver() {
        if !root() {
            return;
        }
        let topo = Topology::setup(Kind::Veth, 2, &VswitchOpts::default()).expect("veth pair");
        let t = Traffic {
            pattern: Pattern::Errored { to: 1, every: 10 },
            ..Traffic::stream(0, 1, 64, 5_000.0)
        };
        let r = one(&topo, t, 0.5);
        let p = &r.ports[0];
        // A bare veth passes bad source addresses; the receiving kernel drops the runts (VLAN
        // untagging) and the sender's MTU refuses oversize frames.
        assert!(p.errored_kinds[0] > 0 && p.errored_kinds[1] > 0 && p.errored_kinds[2] > 0);
        assert!(
            p.errored_refused > 0,
            "oversize refused by the sender's MTU"
        );
        assert_eq!(
            r.ports[1].errored_received,
            p.errored_kinds[1] + p.errored_kinds[2]
        );
        assert_eq!(r.received(), r.sent());
    }
}
