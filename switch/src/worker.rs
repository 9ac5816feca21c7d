//! The worker: one thread, one mio event loop, that owns the ports, the pipeline (and so the MAC
//! table) and the batches. Nothing here is shared with other threads: the control plane sends
//! [`Command`]s over a crossbeam channel and wakes the loop with a mio [`Waker`]; it reads
//! counters and table snapshots from replies to those commands.
//!
//! The loop is drain-fair: mio is edge-triggered, so a port that became readable stays on a
//! ready list until a receive returns fewer frames than a batch holds; each round takes one
//! batch from every ready port in turn, so a busy port cannot starve the others. While any port
//! is ready the loop polls with a zero timeout; otherwise it sleeps until an event or the next
//! aging slice.
//!
//! Per batch: receive a burst, `Pipeline::process` sorts the frames into per-output lists, each
//! list goes out with one `send_burst`, frames addressed to the switch's own gateway address are
//! answered by the [`crate::gateway`] stage. No lock, no allocation and no per-frame syscall.
//!
//! **A panic does not go unnoticed.** The thread runs the loop under `catch_unwind`: a panic
//! unwinds the worker (closing its ports' descriptors), and the thread then sends a
//! [`WorkerExit`] with the panic message and its source location to the channel given to
//! [`WorkerHandle::spawn_supervised`]; the daemon's supervisor builds a new worker from its
//! state ([`crate::control::daemon`]). Requests to a dead worker fail at once (its command
//! channel is disconnected) instead of waiting for a reply that never comes.

use crate::batch::{Batch, BATCH_SIZE, GSO_SLOT};
use crate::fdb::FdbEntryView;
use crate::gateway::{emit::Sink, nat, Gateway, GatewayCommand};
use crate::pipeline::{
    Counters, Dispatch, DropReason, NetworkId, Pipeline, PipelineConfig, PortPolicy, PortRole,
};
use crate::port::vxlan::{PeerSpec, VxlanPort};
use crate::port::{Port, PortId};
use crate::wire::{insert_vlan_tag, strip_vlan_tag, MacAddr, VlanTag, VLAN_TAG_LEN};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// Slot of the ICMP "too big" batch: the largest such error is 14 + 1280 bytes (ICMPv6).
const TOO_BIG_SLOT: usize = 2048;
/// How many MAC table slots one aging slice may visit.
const AGING_BUDGET: usize = 4096;
/// Time between aging slices when idle.
const TICK: Duration = Duration::from_millis(500);
/// Longest sleep while the gateway has flows (their retransmission timers).
const NAT_TICK: Duration = Duration::from_millis(50);
/// Longest sleep while a port could not go back on the event loop (it is peeked meanwhile).
const QUIET_RETRY: Duration = Duration::from_millis(1);
/// Storm hold: a port whose floods storm control refused this many times within
/// [`STORM_WINDOW_MS`] is held for [`STORM_HOLD`]: the kernel drops its frames before they are
/// queued ([`Port::set_rx_hold`]), so a storm far over the port's rate stops costing the worker
/// a read and a copy per frame. A port flooding at a little over its rate never gets there
/// (2,560 refusals a second over its rate are needed); the bucket alone bounds what it floods.
const STORM_REFUSALS: u32 = 256;
/// The window [`STORM_REFUSALS`] are counted in, milliseconds.
const STORM_WINDOW_MS: u64 = 100;
/// How long a storm hold lasts. The bucket refills meanwhile, so the port gets its rate's
/// worth of floods after each hold; its unicast waits out the hold too.
const STORM_HOLD: Duration = Duration::from_millis(50);
/// Name of the worker thread (the panic hook recognises the worker's panics by it).
pub const WORKER_THREAD: &str = "vswitch-worker";
/// What [`Command::InjectPanic`] panics with.
pub const INJECTED_PANIC: &str = "panic injected by a test hook (Command::InjectPanic)";

/// A worker thread that ended by a panic (a `Shutdown` ends it without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerExit {
    /// The generation given to [`WorkerHandle::spawn_supervised`].
    pub generation: u64,
    /// The panic message and where it was raised (`MESSAGE at FILE:LINE:COL`).
    pub message: String,
}

thread_local! {
    /// The last panic of this thread as the panic hook described it (message and location).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that remembers a worker thread's panic message
/// with its location for the thread's own [`WorkerExit`], then runs the previous hook (which
/// prints it to stderr, the daemon's log).
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(WORKER_THREAD) {
                let mut note = payload_message(info.payload());
                if let Some(l) = info.location() {
                    note = format!("{note} at {}:{}:{}", l.file(), l.line(), l.column());
                }
                let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(note));
            }
            previous(info);
        }));
    });
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Per-port counters published to the control plane.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PortStats {
    pub id: PortId,
    pub name: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
    /// Frames the kernel dropped before the switch saw them (the port's socket was full).
    #[serde(default)]
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// `TPACKET_V3` ring blocks read (AF_PACKET ports in ring receive mode; 0 otherwise).
    #[serde(default)]
    pub rx_ring_blocks: u64,
    /// GSO super-frames sent whole (AF_PACKET ports with vnet headers; 0 otherwise).
    #[serde(default)]
    pub tx_gso_frames: u64,
    /// Storm holds of the port (see [`STORM_REFUSALS`]).
    #[serde(default)]
    pub storm_holds: u64,
    /// Frames the kernel dropped while the port was held.
    #[serde(default)]
    pub storm_held: u64,
}

/// Buckets of the batch-size histogram: bursts of 1, 2, 3-4, 5-8, ... up to [`BATCH_SIZE`]
/// frames (the bucket of `le` 1, 2, 4, ..., `BATCH_SIZE`).
pub const BATCH_BUCKETS: usize = (usize::BITS - (BATCH_SIZE - 1).leading_zeros()) as usize + 1;

/// How busy the worker loop is and how full its receive bursts are. Counted once per poll
/// iteration (busy time: one clock read after the poll, next to the one the loop already made
/// for aging) and once per received burst (the histogram), never per frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Nanoseconds spent in loop iterations whose round received frames, from the end of the
    /// poll to the end of the iteration's work (commands, round, NAT output).
    pub busy_ns: u64,
    /// Nanoseconds the worker has run (filled in by the snapshot): the whole `busy_ns` is part of.
    pub run_ns: u64,
    /// Bursts that received frames, by size: bucket `k` counts bursts of `2^(k-1) + 1` to `2^k`
    /// frames (bucket 0: one frame).
    pub batches: [u64; BATCH_BUCKETS],
    /// Frames those bursts received (the histogram's sum).
    pub batch_frames: u64,
    /// Times busy polling slept inside its window, at a rate it would spin at, because another
    /// thread of the host was waiting for a CPU ([`crate::spare_cpu`]).
    pub spin_declined: u64,
}

impl Load {
    /// Counts one burst of `n` (1 to [`BATCH_SIZE`]) frames.
    #[inline]
    fn burst(&mut self, n: usize) {
        let k = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
        if let Some(b) = self.batches.get_mut(k.min(BATCH_BUCKETS - 1)) {
            *b += 1;
        }
        self.batch_frames += n as u64;
    }

    /// Bursts counted (the histogram's count).
    pub fn bursts(&self) -> u64 {
        self.batches.iter().sum()
    }
}

/// A published snapshot of the worker's state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ports: Vec<PortStats>,
    pub counters: Counters,
    pub fdb: Vec<FdbEntryView>,
    /// Counters of the VXLAN tunnel ports, by port id.
    pub tunnels: Vec<(PortId, crate::port::vxlan::VxlanStats)>,
    /// The MAC table's learn, move, age and eviction counts.
    pub fdb_counters: crate::fdb::FdbCounters,
    /// The loop's busy time and burst sizes.
    pub load: Load,
}

/// No tunnel: the value of [`Worker::vtep_tunnel`] for ports that are not virtual ports.
const NO_TUNNEL: PortId = PortId::MAX;

/// Commands from the control plane.
pub enum Command {
    /// Registers a network and the switch's gateway address on it.
    AddNetwork {
        id: NetworkId,
        gateway: Option<(MacAddr, Ipv4Addr)>,
    },
    /// Removes a network (its MAC entries are flushed).
    RemoveNetwork { id: NetworkId },
    /// Adds a port in the given role, with port security and storm control per `policy`.
    AddPort {
        id: PortId,
        port: Box<dyn Port>,
        role: PortRole,
        policy: PortPolicy,
        done: Sender<io::Result<()>>,
    },
    /// Removes a port and drops it (closing its descriptors).
    RemovePort { id: PortId, done: Sender<()> },
    /// Changes the role of a port (the networks and VLANs it carries) without closing it. Its
    /// learned MACs are flushed; an uplink stays an uplink.
    SetPortRole { id: PortId, role: PortRole },
    /// Adds a port as an uplink (a macvlan parent facing a LAN): like `AddPort`, and unknown
    /// unicast from it is dropped from its very first frame (see [`Pipeline::set_uplink`]).
    AddUplink {
        id: PortId,
        port: Box<dyn Port>,
        role: PortRole,
        done: Sender<io::Result<()>>,
    },
    /// Adds a static MAC table entry (a macvlan container's own address on its port).
    AddStatic {
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
    },
    /// Removes the MAC table entry of `mac` in `network` (static or learned).
    RemoveStatic { network: NetworkId, mac: MacAddr },
    /// ARP suppression: answer ARP requests for `ip` on `network` with `mac` instead of
    /// flooding them (`None`: stop). See [`Pipeline::set_proxy_arp`].
    ProxyArp {
        network: NetworkId,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
    },
    /// Adds remote VTEP `peer` as virtual port `vport` of the tunnel port `tunnel`. Running
    /// traffic of other ports and peers is not disturbed.
    AddVtep {
        vport: PortId,
        tunnel: PortId,
        peer: PeerSpec,
        done: Sender<Result<(), String>>,
    },
    /// Removes a virtual port (its MAC entries are flushed).
    RemoveVtep { vport: PortId, done: Sender<()> },
    /// Sets the largest inner IP packet towards virtual port `vport` (the underlay's path MTU
    /// towards its VTEP changed; see [`crate::port::vxlan::VxlanPort::set_peer_mtu`]).
    SetVtepMtu { vport: PortId, mtu: u32 },
    /// Asks for a snapshot of counters and the MAC table.
    Snapshot { reply: Sender<Snapshot> },
    /// NAT, publishing and DNS requests for the gateway stage.
    Gateway(GatewayCommand),
    /// Starts copying switched frames out to a capture (replacing any running one; see
    /// [`crate::capture`]).
    CaptureStart { tap: Box<crate::capture::Tap> },
    /// Stops the capture.
    CaptureStop,
    /// Panics the worker thread: a test hook for supervision. The daemon sends it only when
    /// started with test hooks on (`vswitch daemon --test-hooks`, `VSWITCH_TEST_HOOKS=1`).
    InjectPanic,
    /// Arms a trace ([`crate::trace`]): the next `count` frames matching `filter` are traced
    /// and their records sent to `tx` (a bounded channel: records that do not fit are lost and
    /// counted by the receiver's gap in `seq`). `None` disarms.
    Trace(Option<TraceArm>),
    /// Ends the loop.
    Shutdown,
}

/// What [`Command::Trace`] arms.
#[derive(Debug)]
pub struct TraceArm {
    pub filter: crate::trace::TraceFilter,
    pub count: u32,
    pub tx: Sender<crate::trace::TraceRecord>,
}

/// An armed trace, in the worker.
struct Tracer {
    arm: TraceArm,
    /// Records made so far.
    seq: u32,
    /// The received batch while it is forwarded in pieces.
    whole: Batch,
}

/// The control plane's handle on a running worker.
pub struct WorkerHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerHandle")
    }
}

/// How the worker thread is scheduled (`vswitch daemon --worker-nice`, `--busy-poll`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerTuning {
    /// The thread's nice value ([`set_thread_nice`]); `None` leaves the daemon's.
    pub nice: Option<i32>,
    /// How long the worker keeps polling its ports without sleeping after the last frame it
    /// moved. Zero (the default) sleeps in `epoll_wait` as soon as every port is drained; a
    /// window longer than the gaps between frames keeps the worker awake while traffic flows,
    /// so a frame finds it running instead of waking it (on this VM a wakeup adds about as
    /// much as the kernel bridge's whole round trip), at the price of a CPU kept busy for the
    /// window after every frame. It spins only while the worker moves at most
    /// [`BUSY_POLL_MAX_FPS`] ([`SpinGate`]) and no other thread waits for a CPU
    /// ([`crate::spare_cpu`]).
    pub busy_poll: Duration,
}

/// Busy polling spins only while the worker moves at most this many frames per second.
///
/// Busy polling buys latency for traffic whose frames come far apart (a ping 10 ms apart went
/// from 1.82x the kernel bridge's round trip to 1.03x), but a worker that spins at nice -10
/// takes its CPU from the containers whose traffic it waits for: with iperf3 through the
/// switch (some 30 thousand frames a second, GSO super-frames and acknowledgements) TCP fell
/// from 0.83x to 0.45x the bridge's on two cores. A worker that busy already finds most frames
/// waiting when it looks again, so above this rate it sleeps as it would without busy polling.
pub const BUSY_POLL_MAX_FPS: u64 = 5_000;

/// How often [`SpinGate`] measures the rate.
const SPIN_GATE_WINDOW: Duration = Duration::from_millis(10);

/// Whether busy polling may spin: the worker's frame rate over the last
/// [`SPIN_GATE_WINDOW`] against [`BUSY_POLL_MAX_FPS`]. One comparison per loop iteration, a
/// division every window.
#[derive(Clone, Copy, Debug)]
pub struct SpinGate {
    since: Instant,
    frames_then: u64,
    allow: bool,
}

impl SpinGate {
    /// A gate that allows spinning until its first measurement.
    pub fn new(now: Instant) -> SpinGate {
        SpinGate {
            since: now,
            frames_then: 0,
            allow: true,
        }
    }

    /// The worker has received `frames` frames in all by `now`.
    #[inline]
    pub fn update(&mut self, now: Instant, frames: u64) {
        let dt = now.saturating_duration_since(self.since);
        if dt < SPIN_GATE_WINDOW {
            return;
        }
        let n = frames.saturating_sub(self.frames_then);
        // n / dt <= MAX, without a float: n * 1e9 <= MAX * dt_ns.
        let dt_ns = dt.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.allow =
            u128::from(n) * 1_000_000_000 <= u128::from(BUSY_POLL_MAX_FPS) * u128::from(dt_ns);
        self.since = now;
        self.frames_then = frames;
    }

    /// True if the last measured rate was at most [`BUSY_POLL_MAX_FPS`].
    #[inline]
    pub fn allows(&self) -> bool {
        self.allow
    }
}

/// Sets the calling thread's nice value (-20..=19; lower runs first).
///
/// Why the worker runs at -10 by default: it is the one thread that moves every container's
/// frames, and under the fair scheduler it gets only its share of a CPU among the host's busy
/// threads. Measured here with a 64-byte flood whose sender (`trafgen`, one process per CPU)
/// kept both cores busy: at nice 0 the worker was runnable but waiting for a CPU 70% of the
/// time and the socket buffer overflowed. The kernel bridge does not have the problem: it
/// forwards inside the sender's own system call. Open vSwitch starts `ovs-vswitchd` at nice -10
/// for the same reason (`ovs-ctl --ovs-vswitchd-priority`). A nice value, unlike a real-time
/// policy, cannot starve the host: the worker only uses CPU when frames wait.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with PRIO_PROCESS and a thread id sets that thread's nice value on
    // Linux; it reads no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl WorkerHandle {
    /// Starts a worker thread. A panic ends it (reported on stderr); see
    /// [`WorkerHandle::spawn_supervised`] to be told.
    pub fn spawn(cfg: PipelineConfig) -> io::Result<WorkerHandle> {
        Self::start(cfg, None, WorkerTuning::default())
    }

    /// Starts a worker thread that, should it panic, sends a [`WorkerExit`] carrying
    /// `generation` and the panic message to `exits` once the worker has been dropped (its
    /// ports closed), so that a new worker can open them again.
    ///
    /// `tuning` sets the worker thread's priority and busy polling ([`WorkerTuning`]).
    pub fn spawn_supervised(
        cfg: PipelineConfig,
        generation: u64,
        exits: Sender<WorkerExit>,
        tuning: WorkerTuning,
    ) -> io::Result<WorkerHandle> {
        Self::start(cfg, Some((generation, exits)), tuning)
    }

    fn start(
        cfg: PipelineConfig,
        supervisor: Option<(u64, Sender<WorkerExit>)>,
        tuning: WorkerTuning,
    ) -> io::Result<WorkerHandle> {
        install_panic_hook();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name(WORKER_THREAD.into())
            .spawn(move || {
                if let Some(n) = tuning.nice {
                    match set_thread_nice(n) {
                        Ok(()) => tracing::info!("switch worker runs at nice {n}"),
                        Err(e) => tracing::warn!(
                            "cannot set the switch worker's priority to nice {n}: {e}; it runs \
                             at the daemon's (start the daemon as root or with CAP_SYS_NICE, or \
                             give --worker-nice 0)"
                        ),
                    }
                }
                // The worker is dropped while unwinding, inside catch_unwind: by the time the
                // exit is reported, every port's descriptor is closed.
                let run = std::panic::AssertUnwindSafe(|| {
                    let mut w = Worker::new(poll, rx, cfg);
                    w.busy_poll = tuning.busy_poll;
                    if !tuning.busy_poll.is_zero() {
                        w.spare_cpu = Some(crate::spare_cpu::SpareCpu::new());
                    }
                    w.run()
                });
                let Err(payload) = std::panic::catch_unwind(run) else {
                    return;
                };
                let message = LAST_PANIC
                    .try_with(|p| p.borrow_mut().take())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| payload_message(payload.as_ref()));
                if let Some((generation, exits)) = supervisor {
                    let _ = exits.send(WorkerExit {
                        generation,
                        message,
                    });
                }
            })?;
        Ok(WorkerHandle {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// Starts a thread that takes the worker's commands in place of a worker: `body` receives
    /// them (and answers those that carry a reply channel). For tests of the control plane
    /// with a fake worker ([`crate::testing::FakeWorker`]); the handle behaves as a real one's
    /// (a command wakes nothing but the channel, a dropped reply sender is an error).
    pub fn spawn_fake(
        body: impl FnOnce(Receiver<Command>) + Send + 'static,
    ) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("vswitch-fake-worker".into())
            .spawn(move || {
                let _poll = poll;
                body(rx)
            })?;
        Ok(WorkerHandle {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// False once the worker thread has ended (a panic, or [`WorkerHandle::shutdown`]).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Sends a command and wakes the loop.
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Sends the command `make` builds around a reply channel and waits for the reply.
    fn request<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> io::Result<T> {
        let (done, rx) = crossbeam_channel::bounded(1);
        self.send(make(done));
        // A dead worker's channel is disconnected: the reply sender is dropped with the
        // command and this returns at once.
        rx.recv_timeout(Duration::from_secs(5)).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Disconnected => io::Error::other(
                "the switch worker is not running (it stopped after a panic; the daemon starts a new one)",
            ),
            crossbeam_channel::RecvTimeoutError::Timeout => {
                io::Error::other("the switch worker did not answer")
            }
        })
    }

    /// Adds a port (no port security, no flood limit) and waits until the worker has it.
    pub fn add_port(&self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        self.add_port_with(id, port, role, PortPolicy::default())
    }

    /// Adds a port with `policy` (a container's port) and waits until the worker has it.
    pub fn add_port_with(
        &self,
        id: PortId,
        port: Box<dyn Port>,
        role: PortRole,
        policy: PortPolicy,
    ) -> io::Result<()> {
        self.request(|done| Command::AddPort {
            id,
            port,
            role,
            policy,
            done,
        })?
    }

    /// Adds an uplink port (see [`Command::AddUplink`]) and waits until the worker has it.
    pub fn add_uplink(&self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        self.request(|done| Command::AddUplink {
            id,
            port,
            role,
            done,
        })?
    }

    /// Removes a port and waits until it is closed.
    pub fn remove_port(&self, id: PortId) {
        let _ = self.request(|done| Command::RemovePort { id, done });
    }

    /// Adds a remote VTEP as virtual port `vport` of tunnel `tunnel` and waits for the worker.
    pub fn add_vtep(&self, vport: PortId, tunnel: PortId, peer: PeerSpec) -> io::Result<()> {
        self.request(|done| Command::AddVtep {
            vport,
            tunnel,
            peer,
            done,
        })?
        .map_err(io::Error::other)
    }

    /// Removes a virtual port and waits until it is gone.
    pub fn remove_vtep(&self, vport: PortId) {
        let _ = self.request(|done| Command::RemoveVtep { vport, done });
    }

    /// Sets the largest inner IP packet towards virtual port `vport` (see
    /// [`Command::SetVtepMtu`]).
    pub fn set_vtep_mtu(&self, vport: PortId, mtu: u32) {
        self.send(Command::SetVtepMtu { vport, mtu });
    }

    /// A snapshot of counters and tables.
    pub fn snapshot(&self) -> io::Result<Snapshot> {
        self.request(|reply| Command::Snapshot { reply })
    }

    /// Stops the worker and waits for its thread.
    pub fn shutdown(&mut self) {
        self.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct PortSlot {
    port: Box<dyn Port>,
    stats: PortStats,
    ready: bool,
    /// Held for a storm: not read until its entry in `Worker::holds` expires.
    held: bool,
    /// Frames storm control refused since `refused_since` (see [`STORM_REFUSALS`]).
    refused: u32,
    /// Start of the window `refused` counts in, worker milliseconds.
    refused_since: u64,
    /// Off the event loop while the worker is busy, peeked each round instead (see
    /// [`Worker::quiet_ports`]).
    quiet: bool,
}

struct Worker {
    poll: Poll,
    rx: Receiver<Command>,
    pipeline: Pipeline,
    gateway: Gateway,
    ports: Vec<Option<PortSlot>>,
    ready: Vec<PortId>,
    /// Ports held for a storm, and when each hold ends.
    holds: Vec<(PortId, Instant)>,
    /// The armed trace, if any (one branch per batch when none).
    tracer: Option<Box<Tracer>>,
    /// Frames the gateway answered the last batch with (read by tracing).
    gateway_replies_last: usize,
    batch: Batch,
    /// Scratch batch for copies that get an 802.1Q tag on egress (trunk ports).
    tagged: Batch,
    /// ICMP errors for frames a tunnel could not carry (too big), to send back.
    too_big: Batch,
    dispatch: Dispatch,
    /// Tunnel port of each virtual port (by port id; [`NO_TUNNEL`] otherwise).
    vtep_tunnel: Vec<PortId>,
    epoch: Instant,
    running: bool,
    /// [`WorkerTuning::busy_poll`].
    busy_poll: Duration,
    /// Whether busy polling may spin now ([`crate::spare_cpu`]); opened only with busy polling.
    spare_cpu: Option<crate::spare_cpu::SpareCpu>,
    /// A running capture (`vswitch capture`): checked once per batch.
    capture: Option<Box<crate::capture::Tap>>,
    /// Busy time and burst sizes.
    load: Load,
    /// Ports off the event loop, peeked each round ([`Worker::quiet_ports`]).
    quiet: Vec<PortId>,
    /// Whether a port that can be peeked ([`Port::rx_pending`]) may be on the event loop (one
    /// was added or put back since [`Worker::quiet_ports`] last ran).
    peekable_on_loop: bool,
    /// Whether some port gave a full batch in the last round.
    loaded: bool,
}

/// True when port `id` carries vnet headers (GSO frames and partial checksums).
fn slot_vnet(ports: &[Option<PortSlot>], id: PortId) -> bool {
    matches!(ports.get(id.index()), Some(Some(s)) if s.port.caps().vnet_hdr)
}

/// Copies the frames `sel` of `src` into `dst` with the egress tag `want` (`None`: untagged):
/// a tag is pushed, rewritten or stripped depending on the tag `have(i)` frame `i` arrived with
/// (`Some(0)`: priority tag), and the offsets of the vnet headers follow the L3 header. A frame
/// that cannot be re-tagged (no headroom, truncated) is left out.
fn retag_into(
    src: &Batch,
    sel: &[u16],
    have: impl Fn(usize) -> Option<u16>,
    want: Option<u16>,
    dst: &mut Batch,
) {
    dst.clear();
    for &i in sel {
        let i = i as usize;
        let meta = *src.meta(i);
        if !dst.push(src.frame(i), meta.vnet) {
            continue;
        }
        let last = dst.len() - 1;
        let (slot, m) = dst.slot_mut(last);
        let (off, len) = (m.offset as usize, m.len as usize);
        let ok = match (have(i), want) {
            (None, None) => true,
            (Some(h), Some(w)) if h == w => true,
            (None, Some(vid)) => match insert_vlan_tag(slot, off, len, VlanTag::new(0, vid)) {
                Ok(new) => {
                    m.offset = new as u32;
                    m.len += VLAN_TAG_LEN as u32;
                    shift_vnet(&mut m.vnet, VLAN_TAG_LEN as i32);
                    true
                }
                Err(_) => false,
            },
            (Some(_), None) => match strip_vlan_tag(slot, off, len) {
                Ok((new, _)) => {
                    m.offset = new as u32;
                    m.len -= VLAN_TAG_LEN as u32;
                    shift_vnet(&mut m.vnet, -(VLAN_TAG_LEN as i32));
                    true
                }
                Err(_) => false,
            },
            (Some(_), Some(vid)) => {
                // Rewrite the VID in place, keeping priority and DEI.
                if len >= 16 {
                    let tci = u16::from_be_bytes([slot[off + 14], slot[off + 15]]);
                    let tci = (tci & 0xf000) | (vid & 0x0fff);
                    slot[off + 14..off + 16].copy_from_slice(&tci.to_be_bytes());
                    true
                } else {
                    false
                }
            }
        };
        if !ok {
            dst.clear_last();
        }
    }
}

/// Moves the offsets of a vnet header by `delta` bytes (a tag pushed or stripped before L3).
fn shift_vnet(v: &mut crate::batch::VnetHdr, delta: i32) {
    if v.needs_csum() {
        v.csum_start = (v.csum_start as i32 + delta).max(0) as u16;
    }
    if v.hdr_len != 0 {
        v.hdr_len = (v.hdr_len as i32 + delta).max(0) as u16;
    }
}

/// The worker's ports as a sink for frames the gateway builds (NAT, its answers), and the
/// running capture, which sees them go out on their port.
struct PortSink<'a>(
    &'a mut [Option<PortSlot>],
    Option<&'a mut crate::capture::Tap>,
);

impl<'a> PortSink<'a> {
    fn new(
        ports: &'a mut [Option<PortSlot>],
        capture: &'a mut Option<Box<crate::capture::Tap>>,
    ) -> Self {
        PortSink(ports, capture.as_deref_mut())
    }
}

impl Sink for PortSink<'_> {
    fn send(&mut self, port: PortId, batch: &Batch, sel: &[u16]) -> usize {
        if let Some(tap) = self.1.as_mut() {
            tap.sent(port, batch, sel);
        }
        let Some(Some(slot)) = self.0.get_mut(port.index()) else {
            return 0;
        };
        let sent = match slot.port.send_burst(batch, sel) {
            Ok(n) => n,
            Err(_) => {
                slot.stats.tx_errors += 1;
                0
            }
        };
        slot.stats.tx_frames += sent as u64;
        slot.stats.tx_dropped += (sel.len() - sent.min(sel.len())) as u64;
        sent
    }
}

/// A worker driven by hand, one round at a time, on the calling thread: the same code as a
/// worker thread's loop without the waiting. For fuzzing and tests; its gateway's NAT stage
/// is on only if asked (give it `--internal` networks: nothing then leaves the host).
#[doc(hidden)]
pub struct ManualWorker {
    worker: Worker,
    tx: Sender<Command>,
}

impl ManualWorker {
    /// A worker with the MAC table of `cfg`, its NAT stage on if `nat`.
    pub fn new(cfg: PipelineConfig, nat: bool) -> io::Result<ManualWorker> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(ManualWorker {
            worker: Worker::with_nat(Poll::new()?, rx, cfg, nat),
            tx,
        })
    }

    /// Carries out `cmd` now.
    pub fn command(&mut self, cmd: Command) {
        let _ = self.tx.send(cmd);
        self.worker.commands();
    }

    /// Adds a port (as [`WorkerHandle::add_port`]).
    pub fn add_port(&mut self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        self.worker.add_port(id, port, role)
    }

    /// Adds a container port with port security and storm control per `policy` (as
    /// [`WorkerHandle::add_port_with`]).
    pub fn add_port_with(
        &mut self,
        id: PortId,
        port: Box<dyn Port>,
        role: PortRole,
        policy: PortPolicy,
    ) -> io::Result<()> {
        self.worker.add_port(id, port, role)?;
        self.worker.pipeline.set_policy(id, policy);
        Ok(())
    }

    /// Removes a port (as [`WorkerHandle::remove_port`]).
    pub fn remove_port(&mut self, id: PortId) {
        self.worker.remove_port(id);
    }

    /// Forgets every MAC learned on (or configured for) `id`, keeping the port: the fuzzer's
    /// reset between inputs, which rebuilding ports made ten times slower.
    #[doc(hidden)]
    pub fn flush_port_macs(&mut self, id: PortId) {
        self.worker.pipeline.fdb_mut().flush_port(id);
    }

    /// Rounds until no port has frames left (at most `max_rounds`), then the gateway's
    /// output. Every port is taken as ready: nothing waits for events.
    pub fn run_until_idle(&mut self, max_rounds: usize) {
        for _ in 0..max_rounds {
            let w = &mut self.worker;
            w.ready.clear();
            for (i, slot) in w.ports.iter_mut().enumerate() {
                if let Some(slot) = slot {
                    slot.ready = true;
                    w.ready.push(PortId(i as u16));
                }
            }
            let mut any = false;
            for id in w.ready.clone() {
                any |= w.service(id);
            }
            w.gateway_output();
            if !any {
                break;
            }
        }
    }

    /// Counters and the MAC table.
    pub fn snapshot(&mut self) -> Snapshot {
        self.worker.snapshot()
    }
}

impl Worker {
    fn new(poll: Poll, rx: Receiver<Command>, cfg: PipelineConfig) -> Worker {
        Self::with_nat(poll, rx, cfg, true)
    }

    fn with_nat(poll: Poll, rx: Receiver<Command>, cfg: PipelineConfig, nat: bool) -> Worker {
        let mut gateway = Gateway::new();
        if let Some(reg) = nat.then(|| poll.registry().try_clone().ok()).flatten() {
            let upstream = std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| nat::parse_resolv_conf(&t))
                .unwrap_or_default();
            gateway.enable_nat(
                reg,
                nat::NatConfig {
                    upstream_dns: upstream,
                    ..Default::default()
                },
            );
        }
        Worker {
            poll,
            rx,
            pipeline: Pipeline::new(cfg),
            gateway,
            ports: Vec::new(),
            ready: Vec::with_capacity(64),
            holds: Vec::new(),
            tracer: None,
            gateway_replies_last: 0,
            batch: Batch::new(GSO_SLOT),
            tagged: Batch::new(GSO_SLOT),
            too_big: Batch::new(TOO_BIG_SLOT),
            dispatch: Dispatch::new(),
            vtep_tunnel: Vec::new(),
            epoch: Instant::now(),
            running: true,
            busy_poll: Duration::ZERO,
            spare_cpu: None,
            capture: None,
            load: Load::default(),
            quiet: Vec::new(),
            peekable_on_loop: false,
            loaded: false,
        }
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The gateway's NAT work: timers, host sockets, frames towards containers.
    fn gateway_output(&mut self) {
        let now = self.now_ms();
        let mut sink = PortSink::new(&mut self.ports, &mut self.capture);
        self.gateway.nat_output(now, &mut sink);
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_age = Instant::now() + TICK;
        // When a port last had frames: busy polling keeps the timeout at zero until
        // `busy_poll` after it (one clock read per loop, none per frame).
        let mut last_work = Instant::now();
        let mut rate = SpinGate::new(last_work);
        while self.running {
            // Spin inside the window, at a ping's rate, and only while no other thread of
            // the host waits for a CPU (read last, and only when there is nothing to do).
            let spinning = self.ready.is_empty()
                && !self.busy_poll.is_zero()
                && rate.allows()
                && last_work.elapsed() < self.busy_poll
                && {
                    let spare = self.spare_cpu.as_mut().is_some_and(|c| c.spare());
                    if !spare {
                        self.load.spin_declined += 1;
                    }
                    spare
                };
            let timeout = if self.ready.is_empty() && !spinning {
                let t = next_age.saturating_duration_since(Instant::now());
                let t = if self.gateway.wants_timer() {
                    t.min(NAT_TICK)
                } else {
                    t
                };
                match self.holds.iter().map(|h| h.1).min() {
                    Some(end) => t.min(end.saturating_duration_since(Instant::now())),
                    None => t,
                }
            } else {
                Duration::ZERO
            };
            // About to sleep: the quiet ports go back on the event loop first (one that has
            // frames by then is reported at once), unless one cannot, which is then still
            // peeked, at least every QUIET_RETRY.
            let timeout = if !timeout.is_zero() && !self.quiet.is_empty() && !self.unquiet_ports() {
                timeout.min(QUIET_RETRY)
            } else {
                timeout
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let woke = Instant::now();
            let received = self.load.batch_frames;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if ev.token().0 >= nat::TOKEN_BASE {
                    let now = self.now_ms();
                    let (r, w) = (
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                    );
                    self.gateway.nat_event(ev.token(), r, w, now);
                    continue;
                }
                let id = PortId(ev.token().0 as u16);
                if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                    if !slot.ready && !slot.held {
                        slot.ready = true;
                        self.ready.push(id);
                    }
                }
            }
            if !self.quiet.is_empty() {
                self.peek_quiet_ports();
            }
            if !self.busy_poll.is_zero() {
                if !self.ready.is_empty() {
                    last_work = Instant::now();
                }
                rate.update(woke, self.load.batch_frames);
            }
            if !self.holds.is_empty() {
                self.end_holds(Instant::now());
            }
            self.commands();
            self.round();
            if self.loaded && self.peekable_on_loop {
                self.quiet_ports();
            }
            self.gateway_output();
            let now = Instant::now();
            if self.load.batch_frames != received {
                self.load.busy_ns += now.saturating_duration_since(woke).as_nanos() as u64;
            }
            if now >= next_age {
                let t = self.now();
                self.pipeline.age(t, AGING_BUDGET);
                next_age = now + TICK;
            }
        }
    }

    /// One batch from every ready port.
    fn round(&mut self) {
        let mut i = 0;
        self.loaded = false;
        while i < self.ready.len() {
            let id = self.ready[i];
            let more = self.service(id);
            if more {
                self.loaded = true;
                i += 1;
            } else {
                if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                    slot.ready = false;
                }
                self.ready.swap_remove(i);
            }
        }
    }

    /// Ends the storm holds due by `now`; their ports are read again (what they queued before
    /// the hold is still there).
    fn end_holds(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.holds.len() {
            let (id, end) = self.holds[i];
            if end > now {
                i += 1;
                continue;
            }
            self.holds.swap_remove(i);
            if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                slot.port.set_rx_hold(false);
                slot.held = false;
                if !slot.ready {
                    slot.ready = true;
                    self.ready.push(id);
                }
            }
        }
    }

    /// Takes every port that can be peeked ([`Port::rx_pending`]) off the event loop: called
    /// when a round gave a full batch, so the worker stays busy for a while and peeks at them
    /// each round ([`Self::peek_quiet_ports`]) until it is about to sleep
    /// ([`Self::unquiet_ports`]). A socket in an epoll set runs epoll's callback, under two
    /// interrupt-disabling locks, for every frame it sent once the kernel frees it; off the
    /// set it does not (an AF_XDP port forwarded 15% more 64-byte frames so, measured with
    /// `afpacket-fwd --xdp`). Costs two system calls per port per busy period, none per frame.
    fn quiet_ports(&mut self) {
        self.peekable_on_loop = false;
        let registry = self.poll.registry();
        for (idx, slot) in self.ports.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.quiet || slot.port.rx_pending().is_none() {
                continue;
            }
            let Some(fd) = slot.port.raw_fd() else {
                continue;
            };
            if registry.deregister(&mut SourceFd(&fd)).is_ok() {
                slot.quiet = true;
                self.quiet.push(PortId(idx as u16));
            }
        }
    }

    /// Marks the quiet ports with frames waiting ready (not those held for a storm).
    fn peek_quiet_ports(&mut self) {
        for &id in &self.quiet {
            if let Some(Some(slot)) = self.ports.get_mut(id.index()) {
                if !slot.ready && !slot.held && slot.port.rx_pending() == Some(true) {
                    slot.ready = true;
                    self.ready.push(id);
                }
            }
        }
    }

    /// Puts the quiet ports back on the event loop. Returns false if one could not be (it
    /// stays quiet and peeked).
    fn unquiet_ports(&mut self) -> bool {
        let registry = self.poll.registry();
        let ports = &mut self.ports;
        let mut back = false;
        self.quiet.retain(|&id| {
            let Some(Some(slot)) = ports.get_mut(id.index()) else {
                return false;
            };
            let Some(fd) = slot.port.raw_fd() else {
                return false;
            };
            match registry.register(&mut SourceFd(&fd), Token(id.index()), Interest::READABLE) {
                Ok(()) => {
                    slot.quiet = false;
                    back = true;
                    false
                }
                Err(e) => {
                    tracing::warn!("port {id} stays off the event loop: {e}");
                    true
                }
            }
        });
        self.peekable_on_loop |= back;
        self.quiet.is_empty()
    }

    /// After a batch from `id` in which storm control refused `refused` frames at `now_ms`:
    /// holds the port if that makes [`STORM_REFUSALS`] within [`STORM_WINDOW_MS`]. Returns true
    /// if it did.
    fn storm_check(&mut self, id: PortId, refused: u64, now_ms: u64) -> bool {
        if refused == 0 {
            return false;
        }
        let Some(Some(slot)) = self.ports.get_mut(id.index()) else {
            return false;
        };
        if now_ms.saturating_sub(slot.refused_since) >= STORM_WINDOW_MS {
            slot.refused_since = now_ms;
            slot.refused = 0;
        }
        slot.refused = slot
            .refused
            .saturating_add(refused.min(u64::from(u32::MAX)) as u32);
        if slot.refused < STORM_REFUSALS || !slot.port.set_rx_hold(true) {
            return false;
        }
        slot.refused = 0;
        slot.held = true;
        self.holds.push((id, Instant::now() + STORM_HOLD));
        true
    }

    /// Receives one batch from `id` and forwards it. Returns true if the port may have more.
    fn service(&mut self, id: PortId) -> bool {
        let now_ms = self.now_ms();
        let Some(Some(slot)) = self.ports.get_mut(id.index()) else {
            return false;
        };
        self.batch.clear();
        let n = match slot.port.recv_burst(&mut self.batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                slot.stats.rx_errors += 1;
                0
            }
        };
        if n == 0 {
            return false;
        }
        slot.stats.rx_frames += n as u64;
        self.load.burst(n);
        let refused_before = self.flood_limited(id);
        if self.tracer.is_some() {
            self.forward_traced(id, now_ms);
        } else {
            self.forward(id, now_ms);
        }
        let refused = self.flood_limited(id) - refused_before;
        if self.storm_check(id, refused, now_ms) {
            return false;
        }
        n == BATCH_SIZE
    }

    /// Forwards the batch in `self.batch`, received on `id`: the pipeline's decisions, one
    /// `send_burst` per output list, the gateway's answers.
    fn forward(&mut self, id: PortId, now_ms: u64) {
        let now = (now_ms / 1000) as u32;
        self.dispatch.clear();
        self.pipeline.set_clock_ms(now_ms);
        self.pipeline
            .process(id, &self.batch, now, &mut self.dispatch);
        for (out, sel, vlan) in self.dispatch.outputs() {
            let tunnel = self
                .vtep_tunnel
                .get(out.index())
                .copied()
                .unwrap_or(NO_TUNNEL);
            if tunnel != NO_TUNNEL {
                // A virtual port: the tunnel encapsulates towards its VTEP.
                if let Some(Some(t)) = self.ports.get_mut(tunnel.index()) {
                    if let Some(vx) = t.port.as_vxlan() {
                        let r = vx.send_to_vtep(&self.batch, sel, out, &mut self.too_big);
                        t.stats.tx_frames += r.sent as u64;
                        let lost = (sel.len() - r.sent) as u64;
                        if lost > 0 {
                            t.stats.tx_dropped += lost;
                            let too_big = r.too_big as u64;
                            let c = self.pipeline.counters_mut();
                            c.add_drop(DropReason::TooBig, too_big);
                            c.add_drop(DropReason::TxFull, lost - too_big);
                        }
                        if !self.too_big.is_empty() {
                            // ICMP "too big" for frames the tunnel could not carry, back to
                            // where they came from.
                            let n = self.too_big.len();
                            if let Some(tap) = self.capture.as_mut() {
                                tap.sent(id, &self.too_big, crate::batch::all_frames(n));
                            }
                            if let Some(Some(src)) = self.ports.get_mut(id.index()) {
                                let sent = src
                                    .port
                                    .send_burst(&self.too_big, crate::batch::all_frames(n))
                                    .unwrap_or(0);
                                src.stats.tx_frames += sent as u64;
                            }
                            self.too_big.clear();
                        }
                        continue;
                    }
                }
            }
            let Some(Some(dst)) = self.ports.get_mut(out.index()) else {
                self.pipeline
                    .counters_mut()
                    .add_drop(DropReason::TxFull, sel.len() as u64);
                continue;
            };
            // Frames keep their bytes when they arrived with the tag this output wants (the
            // common case: untagged in, untagged out); otherwise they are copied and re-tagged.
            let dispatch = &self.dispatch;
            let (src, sel) = if sel.iter().all(|&i| dispatch.frame_vlan(i as usize) == vlan) {
                (&self.batch, sel)
            } else {
                retag_into(
                    &self.batch,
                    sel,
                    |i| dispatch.frame_vlan(i),
                    vlan,
                    &mut self.tagged,
                );
                // Only a frame too short to carry or lose a tag is left out.
                let unfit = (sel.len() - self.tagged.len()) as u64;
                if unfit > 0 {
                    self.pipeline
                        .counters_mut()
                        .add_drop(DropReason::Runt, unfit);
                }
                (&self.tagged, crate::batch::all_frames(self.tagged.len()))
            };
            let sent = match dst.port.send_burst(src, sel) {
                Ok(s) => s,
                Err(_) => {
                    dst.stats.tx_errors += 1;
                    0
                }
            };
            dst.stats.tx_frames += sent as u64;
            let lost = (sel.len() - sent) as u64;
            if lost > 0 {
                dst.stats.tx_dropped += lost;
                self.pipeline
                    .counters_mut()
                    .add_drop(DropReason::TxFull, lost);
            }
        }
        if let Some(tap) = self.capture.as_mut() {
            tap.batch(id, &self.batch, &self.dispatch);
            if tap.closed {
                self.capture = None;
            }
        }
        if !self.dispatch.to_gateway().is_empty() || !self.dispatch.proxy_arp().is_empty() {
            let vnet = slot_vnet(&self.ports, id);
            let now_ms = self.now_ms();
            self.gateway
                .handle_from(&self.batch, self.dispatch.to_gateway(), id, vnet, now_ms);
            self.gateway
                .proxy_arp(&self.batch, self.dispatch.proxy_arp());
            if !self.gateway.out.is_empty() {
                let mut sink = PortSink::new(&mut self.ports, &mut self.capture);
                self.gateway.out.flush(&mut sink);
            }
            let replies = self.gateway.replies();
            self.gateway_replies_last = replies.len();
            if !replies.is_empty() {
                // The gateway's answers (ARP, ping) go back to the port they answer.
                let sel = self.gateway.reply_sel();
                PortSink::new(&mut self.ports, &mut self.capture).send(id, replies, sel);
            }
            self.gateway.clear();
        }
    }

    /// [`Self::forward`] with a trace armed: runs of frames that do not match go through as
    /// they are, each matching frame alone, with what the switch did to it recorded (see
    /// [`crate::trace`]). Order is kept.
    #[cold]
    fn forward_traced(&mut self, id: PortId, now_ms: u64) {
        let Some(mut t) = self.tracer.take() else {
            return self.forward(id, now_ms);
        };
        let n = self.batch.len();
        let matching: Vec<bool> = (0..n)
            .map(|i| {
                let ing = self.trace_ingress(id, i);
                t.arm.filter.matches(ing, self.batch.frame(i))
            })
            .collect();
        if !matching.contains(&true) {
            self.tracer = Some(t);
            return self.forward(id, now_ms);
        }
        std::mem::swap(&mut t.whole, &mut self.batch);
        let mut i = 0;
        while i < n {
            self.batch.clear();
            let traced = matching[i] && t.seq < t.arm.count;
            let mut j = i;
            while j < n && (j == i || !(matching[j] && t.seq < t.arm.count)) {
                let m = *t.whole.meta(j);
                if self.batch.push(t.whole.frame(j), m.vnet) {
                    self.batch.meta_mut(self.batch.len() - 1).tag = m.tag;
                }
                j += 1;
                if traced {
                    break;
                }
            }
            if traced {
                t.seq += 1;
                let rec = self.trace_one(id, t.seq, now_ms);
                if let Err(crossbeam_channel::TrySendError::Disconnected(_)) =
                    t.arm.tx.try_send(rec)
                {
                    // Nobody reads the trace any more: it ends.
                    t.seq = t.arm.count;
                }
            } else {
                self.forward(id, now_ms);
            }
            i = j;
        }
        std::mem::swap(&mut t.whole, &mut self.batch);
        if t.seq < t.arm.count {
            self.tracer = Some(t);
        }
    }

    /// The port frame `i` of the batch from `id` entered by: the VTEP it was decapsulated
    /// for on a tunnel port, `id` otherwise.
    fn trace_ingress(&self, id: PortId, i: usize) -> PortId {
        if self.vtep_tunnel.contains(&id) {
            PortId(self.batch.meta(i).tag as u16)
        } else {
            id
        }
    }

    /// Forwards the one frame in `self.batch` and says what happened to it.
    fn trace_one(&mut self, id: PortId, seq: u32, now_ms: u64) -> crate::trace::TraceRecord {
        use crate::trace::{summary, TraceRecord};
        let frame = self.batch.frame(0);
        let h = crate::capture::headers(frame);
        let ing = self.trace_ingress(id, 0);
        let tag = self.batch.meta(0).tag;
        let net = self.pipeline.frame_network(id, frame, tag);
        let (src, dst) = h
            .as_ref()
            .map_or((None, None), |h| (Some(h.src), Some(h.dst)));
        let fdb_at = |w: &Worker, mac: Option<[u8; 6]>| match (net, mac) {
            (Some(n), Some(m)) => w.pipeline.fdb().lookup(n, MacAddr(m)),
            _ => None,
        };
        let src_before = fdb_at(self, src);
        let dst_before = fdb_at(self, dst);
        let before = self.pipeline.counters().clone();
        self.gateway_replies_last = 0;
        let mut rec = TraceRecord {
            seq,
            time_ms: now_ms,
            ingress: ing.0,
            network: net.map(|n| n.0),
            vlan: h.as_ref().and_then(|h| h.vlan),
            src: src.map_or("-".into(), |m| MacAddr(m).to_string()),
            dst: dst.map_or("-".into(), |m| MacAddr(m).to_string()),
            len: frame.len(),
            summary: summary(frame),
            ..Default::default()
        };
        self.forward(id, now_ms);
        let after = self.pipeline.counters();
        let reason = DropReason::ALL
            .iter()
            .find(|r| after.drop_count(**r) > before.drop_count(**r))
            .copied();
        let learned = reason.is_none_or(|r| r == DropReason::TxFull);
        rec.learn = match (learned, src.map(MacAddr), fdb_at(self, src)) {
            (true, Some(m), after_port) if m.is_learnable() => match (src_before, after_port) {
                (None, Some(_)) => "new".into(),
                (Some(a), Some(b)) if a == b => "refreshed".into(),
                (Some(a), Some(_)) => format!("moved from port {}", a.0),
                _ => "not learned (a limit or a static entry)".into(),
            },
            _ => "-".into(),
        };
        rec.lookup = match dst {
            _ if reason.is_some_and(|r| r != DropReason::TxFull) && net.is_none() => "-".into(),
            Some([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) => "broadcast".into(),
            Some(d) if d[0] & 1 == 1 => "multicast".into(),
            Some(_) => match dst_before {
                Some(p) => format!("hit port {}", p.0),
                None => "miss".into(),
            },
            None => "-".into(),
        };
        let unicast = after.unicast > before.unicast;
        let flood = after.flood > before.flood;
        let gateway = after.gateway > before.gateway;
        rec.decision = match (unicast, flood, gateway) {
            (true, _, _) => "unicast".into(),
            (_, true, true) => "flood+gateway".into(),
            (_, true, false) => "flood".into(),
            (_, false, true) => "gateway".into(),
            _ => "drop".into(),
        };
        rec.drop_reason = reason.map(|r| r.name().to_string());
        if rec.drop_reason.is_some() && !unicast && !flood && !gateway {
            rec.decision = "drop".into();
        }
        rec.outputs = self
            .dispatch
            .outputs()
            .map(|(p, _, _)| p.0)
            .collect::<Vec<u16>>();
        rec.gateway_replies = self.gateway_replies_last;
        rec
    }

    /// Storm control's refusals of `id`'s floods so far.
    fn flood_limited(&self, id: PortId) -> u64 {
        self.pipeline
            .counters()
            .port(id)
            .map_or(0, |c| c.flood_limited)
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::AddNetwork { id, gateway } => {
                    self.pipeline.add_network(id, gateway.map(|g| g.0));
                    if let Some((mac, ip)) = gateway {
                        self.gateway.add_network(id, mac, ip);
                    }
                }
                Command::RemoveNetwork { id } => {
                    self.pipeline.remove_network(id);
                    self.gateway.remove_network(id);
                }
                Command::AddPort {
                    id,
                    port,
                    role,
                    policy,
                    done,
                } => {
                    let r = self.add_port(id, port, role);
                    if r.is_ok() {
                        self.pipeline.set_policy(id, policy);
                    }
                    let _ = done.send(r);
                }
                Command::RemovePort { id, done } => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                Command::SetPortRole { id, role } => {
                    if self.ports.get(id.index()).is_some_and(Option::is_some) {
                        self.pipeline.set_role(id, role);
                    }
                }
                Command::AddUplink {
                    id,
                    port,
                    role,
                    done,
                } => {
                    let r = self.add_port(id, port, role);
                    if r.is_ok() {
                        self.pipeline.set_uplink(id, true);
                    }
                    let _ = done.send(r);
                }
                Command::AddStatic { network, mac, port } => {
                    if let Err(e) = self.pipeline.add_static(network, mac, port) {
                        tracing::warn!("static MAC {mac} on port {port}: {e}");
                    }
                }
                Command::RemoveStatic { network, mac } => {
                    self.pipeline.remove_static(network, mac);
                }
                Command::ProxyArp { network, ip, mac } => {
                    self.pipeline.set_proxy_arp(network, ip, mac);
                }
                Command::AddVtep {
                    vport,
                    tunnel,
                    peer,
                    done,
                } => {
                    let _ = done.send(self.add_vtep(vport, tunnel, peer));
                }
                Command::SetVtepMtu { vport, mtu } => {
                    if let Some(vx) = self.vtep_port(vport) {
                        vx.set_peer_mtu(vport, mtu);
                    }
                }
                Command::RemoveVtep { vport, done } => {
                    self.remove_vtep(vport);
                    let _ = done.send(());
                }
                Command::Snapshot { reply } => {
                    let _ = reply.send(self.snapshot());
                }
                Command::Gateway(mut c) => {
                    if let GatewayCommand::Endpoint { port, vnet, .. } = &mut c {
                        *vnet = slot_vnet(&self.ports, *port);
                    }
                    self.gateway.command(c);
                }
                Command::Trace(arm) => {
                    self.tracer = arm.filter(|a| a.count > 0).map(|arm| {
                        Box::new(Tracer {
                            arm,
                            seq: 0,
                            whole: Batch::new(GSO_SLOT),
                        })
                    });
                }
                Command::CaptureStart { tap } => self.start_capture(tap),
                Command::CaptureStop => self.stop_capture(),
                Command::InjectPanic => panic!("{INJECTED_PANIC}"),
                Command::Shutdown => self.running = false,
            }
        }
    }

    fn add_port(&mut self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        let idx = id.index();
        if self.ports.len() <= idx {
            self.ports.resize_with(idx + 1, || None);
        }
        if self.ports[idx].is_some() {
            return Err(io::Error::other(format!("port {id} already exists")));
        }
        if let Some(fd) = port.raw_fd() {
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(idx), Interest::READABLE)?;
        }
        if port.raw_fd().is_some() && port.rx_pending().is_some() {
            self.peekable_on_loop = true;
        }
        let stats = PortStats {
            id,
            name: port.name().to_string(),
            ..Default::default()
        };
        self.pipeline.add_port(id, role);
        // A port may hold frames already: service it once.
        self.ports[idx] = Some(PortSlot {
            port,
            stats,
            ready: true,
            held: false,
            refused: 0,
            refused_since: 0,
            quiet: false,
        });
        self.ready.push(id);
        Ok(())
    }

    /// Starts capture `tap`, replacing any running one: the worker's own (checked once per
    /// batch), or for an outer capture, one end per tunnel port it names, which the tunnel
    /// ports feed themselves ([`VxlanPort::set_capture`]).
    fn start_capture(&mut self, tap: Box<crate::capture::Tap>) {
        self.stop_capture();
        if !tap.is_outer() {
            self.capture = Some(tap);
            return;
        }
        for (i, slot) in self.ports.iter_mut().enumerate() {
            let id = PortId(i as u16);
            if let Some(vx) = slot.as_mut().and_then(|s| s.port.as_vxlan()) {
                if tap.wants(id) {
                    vx.set_capture(Some(tap.outer_for(id)));
                }
            }
        }
    }

    /// Stops the running capture, the worker's or the tunnel ports'.
    fn stop_capture(&mut self) {
        self.capture = None;
        for slot in self.ports.iter_mut().flatten() {
            if let Some(vx) = slot.port.as_vxlan() {
                vx.set_capture(None);
            }
        }
    }

    fn add_vtep(&mut self, vport: PortId, tunnel: PortId, peer: PeerSpec) -> Result<(), String> {
        if self.ports.get(vport.index()).is_some_and(Option::is_some)
            || self
                .vtep_tunnel
                .get(vport.index())
                .is_some_and(|&t| t != NO_TUNNEL)
        {
            return Err(format!("port {vport} already exists"));
        }
        let Some(Some(t)) = self.ports.get_mut(tunnel.index()) else {
            return Err(format!("tunnel port {tunnel} does not exist"));
        };
        let Some(vx) = t.port.as_vxlan() else {
            return Err(format!("port {tunnel} is not a VXLAN tunnel"));
        };
        vx.add_peer(vport, peer).map_err(|e| e.to_string())?;
        let network = peer.network;
        self.pipeline
            .add_port(vport, PortRole::Vtep { network, tunnel });
        let i = vport.index();
        if self.vtep_tunnel.len() <= i {
            self.vtep_tunnel.resize(i + 1, NO_TUNNEL);
        }
        self.vtep_tunnel[i] = tunnel;
        Ok(())
    }

    /// The tunnel port that virtual port `vport` belongs to.
    fn vtep_port(&mut self, vport: PortId) -> Option<&mut VxlanPort> {
        let tunnel = *self.vtep_tunnel.get(vport.index())?;
        if tunnel == NO_TUNNEL {
            return None;
        }
        self.ports
            .get_mut(tunnel.index())
            .and_then(Option::as_mut)
            .and_then(|s| s.port.as_vxlan())
    }

    fn remove_vtep(&mut self, vport: PortId) {
        let i = vport.index();
        if self.vtep_tunnel.get(i).is_none_or(|&t| t == NO_TUNNEL) {
            return;
        }
        if let Some(vx) = self.vtep_port(vport) {
            vx.remove_peer(vport);
        }
        self.vtep_tunnel[i] = NO_TUNNEL;
        self.pipeline.remove_port(vport);
    }

    fn remove_port(&mut self, id: PortId) {
        // A tunnel takes its virtual ports with it.
        let vports: Vec<PortId> = self
            .vtep_tunnel
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == id)
            .map(|(v, _)| PortId(v as u16))
            .collect();
        for v in vports {
            self.remove_vtep(v);
        }
        if let Some(slot) = self.ports.get_mut(id.index()).and_then(Option::take) {
            if slot.quiet {
                self.quiet.retain(|p| *p != id);
            } else if let Some(fd) = slot.port.raw_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.pipeline.remove_port(id);
            self.gateway.remove_port(id);
            self.ready.retain(|p| *p != id);
            self.holds.retain(|h| h.0 != id);
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        let tunnels = self
            .ports
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| {
                let vx = s.as_mut()?.port.as_vxlan()?;
                Some((PortId(i as u16), *vx.stats()))
            })
            .collect();
        Snapshot {
            tunnels,
            ports: self
                .ports
                .iter_mut()
                .flatten()
                .map(|s| {
                    s.stats.rx_dropped = s.port.rx_kernel_drops();
                    let k = s.port.kind_stats();
                    s.stats.rx_ring_blocks = k.rx_ring_blocks;
                    s.stats.tx_gso_frames = k.tx_gso_frames;
                    s.stats.storm_holds = k.storm_holds;
                    s.stats.storm_held = k.storm_held;
                    s.stats.clone()
                })
                .collect(),
            counters: self.pipeline.counters().clone(),
            fdb: self.pipeline.fdb().entries(self.now()).collect(),
            fdb_counters: *self.pipeline.fdb().counters(),
            load: Load {
                run_ns: self.epoch.elapsed().as_nanos() as u64,
                ..self.load
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{VnetHdr, MTU_SLOT, VNET_F_NEEDS_CSUM};
    use crate::port::mem::{MemHandle, MemPort};

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    /// An IPv4-ish frame with an optional 802.1Q tag; the payload starts with 0x45.
    fn frame(dst: MacAddr, src: MacAddr, vlan: Option<u16>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&(0x6000 | v).to_be_bytes()); // PCP 3
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f.resize(f.len() + 57, 0xab);
        f
    }

    fn vid_of(f: &[u8]) -> Option<u16> {
        (f[12..14] == [0x81, 0x00]).then(|| u16::from_be_bytes([f[14], f[15]]) & 0x0fff)
    }

    #[test]
    fn retag_pushes_strips_and_rewrites_with_vnet_offsets() {
        let mut src = Batch::new(MTU_SLOT);
        let v = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            hdr_len: 54,
            csum_start: 34,
            ..Default::default()
        };
        let tagged_v = VnetHdr {
            hdr_len: 58,
            csum_start: 38,
            ..v
        };
        src.push(&frame(mac(1), mac(2), None), v);
        src.push(&frame(mac(1), mac(2), Some(10)), tagged_v);
        src.push(&frame(mac(1), mac(2), Some(20)), tagged_v);
        let have = |i: usize| [None, Some(10), Some(20)][i];
        let mut dst = Batch::new(MTU_SLOT);

        // To a trunk's VLAN 20: push, rewrite, keep.
        retag_into(&src, &[0, 1, 2], have, Some(20), &mut dst);
        assert_eq!(dst.len(), 3);
        for i in 0..3 {
            assert_eq!(vid_of(dst.frame(i)), Some(20), "frame {i}");
            assert_eq!(dst.frame(i)[18], 0x45, "L3 follows the tag");
            assert_eq!(dst.meta(i).vnet.csum_start, 38);
            assert_eq!(dst.meta(i).vnet.hdr_len, 58);
        }
        // The rewrite keeps the priority bits.
        assert_eq!(dst.frame(1)[14] >> 5, 3);

        // To an access port: strip, strip, keep.
        retag_into(&src, &[1, 2, 0], have, None, &mut dst);
        assert_eq!(dst.len(), 3);
        for i in 0..3 {
            assert_eq!(dst.frame(i), &frame(mac(1), mac(2), None)[..], "frame {i}");
            assert_eq!(dst.meta(i).vnet.csum_start, 34);
            assert_eq!(dst.meta(i).vnet.hdr_len, 54);
        }
    }

    fn wait_sent(h: &MemHandle, n: usize) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        while h.sent_len() < n && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.sent()
    }

    /// A trace records what the switch really did: a flood to an unknown MAC, a unicast to a
    /// learned one (with the source learned new, then refreshed), a drop and its reason; frames
    /// that do not match are forwarded untraced, in order, and the trace ends after `count`.
    #[test]
    fn a_trace_records_flood_unicast_and_drop_and_keeps_order() {
        use crate::trace::{TraceFilter, TraceRecord};
        let mut w = ManualWorker::new(PipelineConfig::default(), false).unwrap();
        w.command(Command::AddNetwork {
            id: NetworkId(1),
            gateway: None,
        });
        let access = PortRole::Access {
            network: NetworkId(1),
        };
        let (p1, p2, p3) = (
            MemPort::new("a", 64),
            MemPort::new("b", 64),
            MemPort::new("c", 64),
        );
        let (h1, h2, h3) = (p1.handle(), p2.handle(), p3.handle());
        w.add_port(PortId(1), Box::new(p1), access.clone()).unwrap();
        w.add_port(PortId(2), Box::new(p2), access.clone()).unwrap();
        w.add_port(PortId(3), Box::new(p3), access).unwrap();
        let (tx, rx) = crossbeam_channel::bounded::<TraceRecord>(16);
        w.command(Command::Trace(Some(TraceArm {
            filter: TraceFilter {
                ports: vec![PortId(1)],
                filter: Default::default(),
            },
            count: 3,
            tx,
        })));
        // From a: to b while b is unknown (flood), a runt (drop), then b speaks, then a to b
        // (unicast) twice: the trace ends after three.
        let unknown = frame(mac(2), mac(1), None);
        h1.push_rx(&unknown);
        h1.push_rx(&[1, 2, 3]);
        w.run_until_idle(4);
        h2.push_rx(&frame(mac(1), mac(2), None));
        w.run_until_idle(4);
        let known = frame(mac(2), mac(1), Some(7)); // tagged: an access port refuses it
        let good = {
            let mut f = frame(mac(2), mac(1), None);
            f[20] = 0x55; // tell it from the first
            f
        };
        h1.push_rx(&good);
        h1.push_rx(&known);
        w.run_until_idle(4);
        let recs: Vec<TraceRecord> = rx.try_iter().collect();
        assert_eq!(recs.len(), 3, "{recs:#?}");
        let (flood, runt, uni) = (&recs[0], &recs[1], &recs[2]);
        assert_eq!((flood.seq, flood.ingress, flood.network), (1, 1, Some(1)));
        assert_eq!(flood.learn, "new");
        assert_eq!(flood.lookup, "miss");
        assert_eq!(flood.decision, "flood");
        let mut outs = flood.outputs.clone();
        outs.sort();
        assert_eq!(outs, vec![2, 3]);
        assert_eq!(runt.decision, "drop");
        assert_eq!(runt.drop_reason.as_deref(), Some("runt"));
        assert_eq!(runt.learn, "-");
        assert_eq!(uni.lookup, "hit port 2");
        assert_eq!(uni.decision, "unicast");
        assert_eq!(uni.outputs, vec![2]);
        assert!(
            uni.learn == "refreshed" || uni.learn == "new",
            "{}",
            uni.learn
        );
        assert!(
            uni.text().contains("decision unicast -> port 2"),
            "{}",
            uni.text()
        );
        // Everything was forwarded as without a trace: b got the flood and the unicast, in
        // order; c only the flood; the tagged frame after the trace ended was dropped.
        assert_eq!(h2.sent(), vec![unknown.clone(), good]);
        assert_eq!(h3.sent(), vec![unknown]);
        assert_eq!(h1.sent(), vec![frame(mac(1), mac(2), None)]);
        let snap = w.snapshot();
        assert_eq!(snap.counters.drop_count(DropReason::Filtered), 1);
    }

    /// A container port added with a policy: the worker hands it to the pipeline, so a frame
    /// with another source MAC never leaves, and the drop is counted on that port.
    #[test]
    fn worker_applies_a_ports_policy() {
        use crate::pipeline::{PortPolicy, PortSecurity};
        let w = WorkerHandle::spawn(PipelineConfig::default()).unwrap();
        w.send(Command::AddNetwork {
            id: NetworkId(1),
            gateway: None,
        });
        let p2 = MemPort::new("b", 64);
        let h2 = p2.handle();
        w.add_port(
            PortId(2),
            Box::new(p2),
            PortRole::Access {
                network: NetworkId(1),
            },
        )
        .unwrap();
        let mut p1 = MemPort::new("a", 64);
        let mut good = frame(mac(2), mac(1), None);
        good[12..14].copy_from_slice(&[0x88, 0xb5]); // not IP: only the MAC is checked
        p1.push_rx(&frame(mac(2), mac(9), None)); // not its MAC
                                                  // Its MAC, but the IPv4 source (0xab bytes after 0x45) is not its lease.
        p1.push_rx(&frame(mac(2), mac(1), None));
        p1.push_rx(&good);
        let policy = PortPolicy {
            security: Some(PortSecurity {
                mac: mac(1),
                ipv4: Ipv4Addr::new(10, 0, 0, 1),
            }),
            flood: None,
        };
        w.add_port_with(
            PortId(1),
            Box::new(p1),
            PortRole::Access {
                network: NetworkId(1),
            },
            policy,
        )
        .unwrap();
        assert_eq!(wait_sent(&h2, 1), vec![good]);
        let snap = w.snapshot().unwrap();
        let pc = snap.counters.port(PortId(1)).unwrap();
        assert_eq!((pc.spoofed_mac, pc.spoofed_ip), (1, 1));
        assert_eq!(snap.counters.drop_count(DropReason::SpoofedMac), 1);
    }

    /// The worker path of a trunk: tagged frames in, untagged out on access ports; untagged in,
    /// tagged out on the trunk; a trunk-to-trunk frame with its VID rewritten.
    #[test]
    fn worker_tags_and_untags_between_trunks_and_access_ports() {
        let w = WorkerHandle::spawn(PipelineConfig::default()).unwrap();
        for id in [1, 2] {
            w.send(Command::AddNetwork {
                id: NetworkId(id),
                gateway: None,
            });
        }
        // Trunk 9 (empty; receives): network 1 untagged, network 2 on VLAN 10.
        let p9 = MemPort::new("t9", 64);
        let h9 = p9.handle();
        let trunk9 = PortRole::Trunk {
            native: Some(NetworkId(1)),
            vlans: vec![(10, NetworkId(2))],
        };
        w.add_port(PortId(9), Box::new(p9), trunk9).unwrap();
        let p1 = MemPort::new("a1", 64);
        let h1 = p1.handle();
        w.add_port(
            PortId(1),
            Box::new(p1),
            PortRole::Access {
                network: NetworkId(1),
            },
        )
        .unwrap();
        w.send(Command::AddStatic {
            network: NetworkId(2),
            mac: mac(2),
            port: PortId(2),
        });
        // Access port 2 (network 2) sends to an unknown MAC as it is added: the flood reaches
        // trunk 9 tagged with VLAN 10.
        let mut p2 = MemPort::new("a2", 64);
        let h2 = p2.handle();
        p2.push_rx(&frame(mac(0x80), mac(2), None));
        w.add_port(
            PortId(2),
            Box::new(p2),
            PortRole::Access {
                network: NetworkId(2),
            },
        )
        .unwrap();
        let sent = wait_sent(&h9, 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(vid_of(&sent[0]), Some(10));
        assert_eq!(sent[0][..12], frame(mac(0x80), mac(2), None)[..12]);
        assert_eq!(sent[0][18], 0x45);
        h9.clear_sent();

        // Uplink 8 carries network 2 on VLAN 20 and network 1 untagged. Its frames: VLAN 20 to
        // the container on port 2 (stripped), VLAN 20 broadcast (stripped for port 2, rewritten
        // to 10 for trunk 9), and an untagged broadcast of network 1 (as is to ports 1 and 9).
        let mut p8 = MemPort::new("t8", 64);
        for f in [
            frame(mac(2), mac(0x81), Some(20)),
            frame(mac(0x99), mac(0x81), Some(20)), // unknown unicast from an uplink: dropped
            frame(MacAddr::BROADCAST, mac(0x81), Some(20)),
            frame(MacAddr::BROADCAST, mac(0x82), None),
        ] {
            p8.push_rx(&f);
        }
        let trunk8 = PortRole::Trunk {
            native: Some(NetworkId(1)),
            vlans: vec![(20, NetworkId(2))],
        };
        w.add_uplink(PortId(8), Box::new(p8), trunk8).unwrap();
        let to2 = wait_sent(&h2, 2);
        assert_eq!(to2.len(), 2, "{to2:?}");
        assert_eq!(to2[0], frame(mac(2), mac(0x81), None));
        assert_eq!(to2[1], frame(MacAddr::BROADCAST, mac(0x81), None));
        let to9 = wait_sent(&h9, 2);
        assert_eq!(to9.len(), 2);
        assert_eq!(to9[0], frame(MacAddr::BROADCAST, mac(0x81), Some(10)));
        assert_eq!(to9[1], frame(MacAddr::BROADCAST, mac(0x82), None));
        let to1 = wait_sent(&h1, 1);
        assert_eq!(to1, vec![frame(MacAddr::BROADCAST, mac(0x82), None)]);
        let snap = w.snapshot().unwrap();
        assert_eq!(snap.counters.drop_count(DropReason::NotLocal), 1);

        // SetPortRole moves network 2 of trunk 9 to VLAN 30 without closing the port.
        w.send(Command::SetPortRole {
            id: PortId(9),
            role: PortRole::Trunk {
                native: None,
                vlans: vec![(30, NetworkId(2))],
            },
        });
        let snap = w.snapshot().unwrap();
        assert!(snap.ports.iter().any(|p| p.id == PortId(9)));
    }

    /// A worker with network 1 and two memory ports on it, 1 ("a") and 2 ("b"), and their
    /// handles.
    fn two_access_ports() -> (ManualWorker, MemHandle, MemHandle) {
        let mut w = ManualWorker::new(PipelineConfig::default(), false).unwrap();
        w.command(Command::AddNetwork {
            id: NetworkId(1),
            gateway: None,
        });
        let access = || PortRole::Access {
            network: NetworkId(1),
        };
        let (p1, p2) = (MemPort::new("a", 64), MemPort::new("b", 64));
        let (h1, h2) = (p1.handle(), p2.handle());
        w.add_port(PortId(1), Box::new(p1), access()).unwrap();
        w.add_port(PortId(2), Box::new(p2), access()).unwrap();
        (w, h1, h2)
    }

    /// A capture in the worker: each frame in on its ingress port and out on its output port,
    /// only what the filter admits; nothing once stopped, and the reader is told.
    #[test]
    fn a_capture_sees_frames_in_and_out_through_its_filter_until_stopped() {
        use crate::capture::{tap, CaptureSpec, Filter};
        let (mut w, h1, h2) = two_access_ports();
        let (t, r) = tap(CaptureSpec {
            ports: vec![PortId(1), PortId(2)],
            dir_in: true,
            dir_out: true,
            filter: Filter::parse(&["ether".into(), mac(1).to_string()]).unwrap(),
            snaplen: 2048,
            slots: 16,
            outer: false,
            vni: None,
        });
        w.command(Command::CaptureStart { tap: Box::new(t) });
        let a = frame(MacAddr::BROADCAST, mac(1), None);
        h1.push_rx(&a);
        h1.push_rx(&frame(MacAddr::BROADCAST, mac(3), None)); // not mac(1): filtered out
        w.run_until_idle(8);
        assert_eq!(h2.sent_len(), 2, "both frames were flooded to port 2");
        let (got, live) = r.drain(16);
        assert!(live);
        let seen: Vec<(u16, bool, Vec<u8>)> = got
            .iter()
            .map(|c| (c.port.0, c.out, c.data.clone()))
            .collect();
        assert_eq!(seen, vec![(1, false, a.clone()), (2, true, a.clone())]);
        w.command(Command::CaptureStop);
        h1.push_rx(&a);
        w.run_until_idle(8);
        assert_eq!(h2.sent_len(), 3);
        assert_eq!(r.drain(16), (vec![], false), "stopped: nothing more");
    }

    /// An outer capture goes to the tunnel ports it names, not to the worker: a datagram the
    /// tunnel port receives is captured (outer headers, inbound, though decap drops it) while
    /// frames the worker switches are not; a stop takes every port's end (the reader sees the
    /// end); an outer capture that names no tunnel port ends at once.
    #[test]
    fn an_outer_capture_is_fed_by_the_tunnel_ports_it_names() {
        use crate::capture::{tap, CaptureSpec, Filter};
        use std::net::SocketAddrV4;
        let (mut w, h1, _h2) = two_access_ports();
        let at = SocketAddrV4::new(
            Ipv4Addr::new(127, 0, 0, 51),
            46000 + (std::process::id() % 1000) as u16,
        );
        let vx = VxlanPort::open(at).unwrap();
        w.add_port(PortId(3), Box::new(vx), PortRole::Tunnel)
            .unwrap();
        let outer = |ports: Vec<PortId>| {
            tap(CaptureSpec {
                ports,
                dir_in: true,
                dir_out: true,
                filter: Filter::default(),
                snaplen: 2048,
                slots: 16,
                outer: true,
                vni: None,
            })
        };
        // Naming no tunnel port: nobody feeds it.
        let (t, r) = outer(vec![PortId(1)]);
        w.command(Command::CaptureStart { tap: Box::new(t) });
        assert_eq!(r.drain(16), (vec![], false), "no tunnel port: ended");

        let (t, r) = outer(vec![PortId(1), PortId(3)]);
        w.command(Command::CaptureStart { tap: Box::new(t) });
        h1.push_rx(&frame(MacAddr::BROADCAST, mac(1), None));
        let stranger = std::net::UdpSocket::bind("127.0.0.52:0").unwrap();
        let mut d = encap::vxlan::header_bytes(encap::Vni::new(7).unwrap()).to_vec();
        d.extend_from_slice(&frame(MacAddr::BROADCAST, mac(9), None));
        stranger.send_to(&d, at).unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(2) {
            w.run_until_idle(8);
            got = r.drain(16).0;
        }
        assert_eq!(got.len(), 1, "the datagram only, not the switched frame");
        let c = &got[0];
        assert_eq!((c.port, c.out), (PortId(3), false));
        assert_eq!(c.data.len(), 28 + d.len());
        assert_eq!(c.data[16..20], [127, 0, 0, 51], "to the tunnel's address");
        assert_eq!(c.data[28..], d[..]);
        w.command(Command::CaptureStop);
        assert_eq!(r.drain(16), (vec![], false), "stopped: every end dropped");
    }

    /// Busy polling's gate: a ping's rate lets it spin, a TCP stream's does not, and the
    /// verdict changes only once a window has passed.
    #[test]
    fn busy_polling_spins_at_a_pings_rate_and_not_at_a_streams() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut g = SpinGate::new(t0);
        assert!(g.allows());
        // 2 frames in 10 ms (a ping and its reply): 200 frames/s.
        g.update(ms(10), 2);
        assert!(g.allows());
        // 300 frames in the next 10 ms: 30,000 frames/s.
        g.update(ms(15), 302);
        assert!(g.allows(), "judged before its window ended");
        g.update(ms(20), 302);
        assert!(!g.allows());
        // Exactly the limit is allowed; one frame over it is not.
        let per_window = BUSY_POLL_MAX_FPS / 100;
        g.update(ms(30), 302 + per_window);
        assert!(g.allows());
        g.update(ms(40), 302 + 2 * per_window + 1);
        assert!(!g.allows());
        // A long quiet spell, then a frame: allowed again.
        g.update(ms(5_040), 302 + 2 * per_window + 2);
        assert!(g.allows());
    }

    /// The loop's load: a burst of 64 frames and one of 36 land in the 33-64 bucket, two of 1
    /// and 3 frames in theirs; the busy time is counted and is part of the time the worker ran.
    #[test]
    fn the_worker_counts_its_busy_time_and_burst_sizes() {
        assert_eq!(BATCH_BUCKETS, 7, "bursts of 1, 2, 3-4, ..., 33-64 frames");
        let w = WorkerHandle::spawn(PipelineConfig::default()).unwrap();
        w.send(Command::AddNetwork {
            id: NetworkId(1),
            gateway: None,
        });
        let access = || PortRole::Access {
            network: NetworkId(1),
        };
        let p2 = MemPort::new("b", 256);
        let h2 = p2.handle();
        w.add_port(PortId(2), Box::new(p2), access()).unwrap();
        let mut p1 = MemPort::new("a", 256);
        for i in 0..100u8 {
            let mut f = frame(mac(2), mac(1), None);
            f[20] = i;
            p1.push_rx(&f);
        }
        w.add_port(PortId(1), Box::new(p1), access()).unwrap();
        assert_eq!(wait_sent(&h2, 100).len(), 100);
        let mut p3 = MemPort::new("c", 256);
        p3.push_rx(&frame(mac(2), mac(3), None));
        w.add_port(PortId(3), Box::new(p3), access()).unwrap();
        assert_eq!(wait_sent(&h2, 101).len(), 101);
        let mut p4 = MemPort::new("d", 256);
        for _ in 0..3 {
            p4.push_rx(&frame(mac(2), mac(4), None));
        }
        w.add_port(PortId(4), Box::new(p4), access()).unwrap();
        assert_eq!(wait_sent(&h2, 104).len(), 104);
        let load = w.snapshot().unwrap().load;
        assert_eq!(load.batches, [1, 0, 1, 0, 0, 0, 2], "{load:?}");
        assert_eq!((load.bursts(), load.batch_frames), (4, 104));
        assert!(load.busy_ns > 0, "{load:?}");
        assert!(load.run_ns > load.busy_ns, "{load:?}");
    }

    /// Frames the gateway builds are captured going out on the port they are sent to: its ARP
    /// and ping answers to a container, through the capture's filter; the container's own
    /// frames only with direction `in`.
    #[test]
    fn a_capture_sees_the_gateways_answers_go_out() {
        use crate::capture::{tap, CaptureSpec, Filter};
        use crate::gateway::tests::{arp_request, c_mac, echo_request, gw_mac, GW_IP};
        let mut w = ManualWorker::new(PipelineConfig::default(), false).unwrap();
        w.command(Command::AddNetwork {
            id: NetworkId(1),
            gateway: Some((gw_mac(), GW_IP)),
        });
        let p1 = MemPort::new("a", 64);
        let h1 = p1.handle();
        let access = PortRole::Access {
            network: NetworkId(1),
        };
        w.add_port(PortId(1), Box::new(p1), access).unwrap();
        let capture = |words: &[&str]| {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            tap(CaptureSpec {
                ports: vec![PortId(1)],
                dir_in: false,
                dir_out: true,
                filter: Filter::parse(&words).unwrap(),
                snaplen: 2048,
                slots: 16,
                outer: false,
                vni: None,
            })
        };
        let (t, r) = capture(&[]);
        w.command(Command::CaptureStart { tap: Box::new(t) });
        h1.push_rx(&arp_request(GW_IP));
        h1.push_rx(&echo_request(GW_IP));
        w.run_until_idle(8);
        let answers = h1.sent();
        assert_eq!(answers.len(), 2, "the gateway answered both");
        let (got, _) = r.drain(16);
        let seen: Vec<(u16, bool, Vec<u8>)> = got
            .iter()
            .map(|c| (c.port.0, c.out, c.data.clone()))
            .collect();
        let want: Vec<(u16, bool, Vec<u8>)> =
            answers.iter().map(|a| (1, true, a.clone())).collect();
        assert_eq!(seen, want, "both answers, out on the port, nothing else");
        assert_eq!(
            crate::trace::summary(&got[1].data),
            format!("{GW_IP} > {} ICMP echo reply", crate::gateway::tests::C_IP)
        );
        assert_eq!(
            &got[0].data[..6],
            &c_mac().0,
            "the ARP reply is to the container"
        );
        // Through a filter: only the ping's answer.
        let (t, r) = capture(&["icmp"]);
        w.command(Command::CaptureStart { tap: Box::new(t) });
        h1.push_rx(&arp_request(GW_IP));
        h1.push_rx(&echo_request(GW_IP));
        w.run_until_idle(8);
        let (got, _) = r.drain(16);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            crate::trace::summary(&got[0].data),
            format!("{GW_IP} > {} ICMP echo reply", crate::gateway::tests::C_IP)
        );
    }

    /// A panicking worker reports itself with its message and source location as soon as it
    /// is gone, its ports are closed by then, and requests to it fail at once rather than
    /// waiting out their timeout.
    #[test]
    fn a_panicking_worker_reports_its_exit_and_fails_requests_at_once() {
        let (exits, deaths) = crossbeam_channel::unbounded();
        let w = WorkerHandle::spawn_supervised(
            PipelineConfig::default(),
            7,
            exits,
            WorkerTuning::default(),
        )
        .unwrap();
        w.send(Command::AddNetwork {
            id: NetworkId(1),
            gateway: None,
        });
        let p = MemPort::new("p1", 64);
        let h = p.handle();
        w.add_port(
            PortId(1),
            Box::new(p),
            PortRole::Access {
                network: NetworkId(1),
            },
        )
        .unwrap();
        assert!(w.is_running());
        assert_eq!(deaths.try_recv().ok(), None, "no exit before the panic");

        let t0 = Instant::now();
        w.send(Command::InjectPanic);
        let exit = deaths
            .recv_timeout(Duration::from_secs(1))
            .expect("the supervisor hears of the panic within a second");
        assert_eq!(exit.generation, 7);
        assert!(exit.message.starts_with(INJECTED_PANIC), "{}", exit.message);
        assert!(
            exit.message.contains("worker.rs:"),
            "the message names where it panicked: {}",
            exit.message
        );
        assert!(
            h.is_closed(),
            "the worker's ports are closed when it reports"
        );
        let e = w.snapshot().unwrap_err().to_string();
        assert!(e.contains("not running"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a request to a dead worker returns at once ({:?})",
            t0.elapsed()
        );
        let t1 = Instant::now();
        while w.is_running() && t1.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!w.is_running(), "the thread has ended");
    }

    /// A supervised worker that shuts down normally reports nothing.
    #[test]
    fn a_shutdown_is_not_an_exit() {
        let (exits, deaths) = crossbeam_channel::unbounded();
        let mut w = WorkerHandle::spawn_supervised(
            PipelineConfig::default(),
            1,
            exits,
            WorkerTuning::default(),
        )
        .unwrap();
        w.shutdown();
        assert!(!w.is_running());
        assert_eq!(deaths.try_recv().ok(), None);
    }
}
