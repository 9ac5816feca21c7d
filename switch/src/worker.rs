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

use crate::batch::{Batch, BATCH_SIZE, GSO_SLOT};
use crate::fdb::FdbEntryView;
use crate::gateway::{emit::Sink, nat, Gateway, GatewayCommand};
use crate::pipeline::{
    Counters, Dispatch, DropReason, NetworkId, Pipeline, PipelineConfig, PortRole,
};
use crate::port::{Port, PortId};
use crate::wire::{insert_vlan_tag, MacAddr, VlanTag, VLAN_TAG_LEN};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// How many MAC table slots one aging slice may visit.
const AGING_BUDGET: usize = 4096;
/// Time between aging slices when idle.
const TICK: Duration = Duration::from_millis(500);
/// Longest sleep while the gateway has flows (their retransmission timers).
const NAT_TICK: Duration = Duration::from_millis(50);

/// Per-port counters published to the control plane.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PortStats {
    pub id: PortId,
    pub name: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// A published snapshot of the worker's state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ports: Vec<PortStats>,
    pub counters: Counters,
    pub fdb: Vec<FdbEntryView>,
}

/// Commands from the control plane.
pub enum Command {
    /// Registers a network and the switch's gateway address on it.
    AddNetwork {
        id: NetworkId,
        gateway: Option<(MacAddr, Ipv4Addr)>,
    },
    /// Removes a network (its MAC entries are flushed).
    RemoveNetwork { id: NetworkId },
    /// Adds a port in the given role.
    AddPort {
        id: PortId,
        port: Box<dyn Port>,
        role: PortRole,
        done: Sender<io::Result<()>>,
    },
    /// Removes a port and drops it (closing its descriptors).
    RemovePort { id: PortId, done: Sender<()> },
    /// Asks for a snapshot of counters and the MAC table.
    Snapshot { reply: Sender<Snapshot> },
    /// NAT, publishing and DNS requests for the gateway stage.
    Gateway(GatewayCommand),
    /// Ends the loop.
    Shutdown,
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

impl WorkerHandle {
    /// Starts a worker thread.
    pub fn spawn(cfg: PipelineConfig) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("vswitch-worker".into())
            .spawn(move || Worker::new(poll, rx, cfg).run())?;
        Ok(WorkerHandle {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// Sends a command and wakes the loop.
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Adds a port and waits until the worker has registered it.
    pub fn add_port(&self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        let (done, rx) = crossbeam_channel::bounded(1);
        self.send(Command::AddPort {
            id,
            port,
            role,
            done,
        });
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("the switch worker did not answer"))?
    }

    /// Removes a port and waits until it is closed.
    pub fn remove_port(&self, id: PortId) {
        let (done, rx) = crossbeam_channel::bounded(1);
        self.send(Command::RemovePort { id, done });
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }

    /// A snapshot of counters and tables.
    pub fn snapshot(&self) -> io::Result<Snapshot> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Snapshot { reply });
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("the switch worker did not answer"))
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
}

struct Worker {
    poll: Poll,
    rx: Receiver<Command>,
    pipeline: Pipeline,
    gateway: Gateway,
    ports: Vec<Option<PortSlot>>,
    ready: Vec<PortId>,
    batch: Batch,
    /// Scratch batch for copies that get an 802.1Q tag on egress (trunk ports).
    tagged: Batch,
    dispatch: Dispatch,
    epoch: Instant,
    running: bool,
}

/// True when port `id` carries vnet headers (GSO frames and partial checksums).
fn slot_vnet(ports: &[Option<PortSlot>], id: PortId) -> bool {
    matches!(ports.get(id as usize), Some(Some(s)) if s.port.caps().vnet_hdr)
}

/// Selection of every frame of a batch, in order.
static ALL: [u16; BATCH_SIZE] = {
    let mut a = [0u16; BATCH_SIZE];
    let mut i = 0;
    while i < BATCH_SIZE {
        a[i] = i as u16;
        i += 1;
    }
    a
};

/// Copies the frames `sel` of `src` into `dst` with an 802.1Q tag `vid` inserted, fixing the
/// offsets of their vnet headers (the tag moves the L3 header 4 bytes further).
fn tag_into(src: &Batch, sel: &[u16], vid: u16, dst: &mut Batch) {
    dst.clear();
    for &i in sel {
        let meta = *src.meta(i as usize);
        if !dst.push(src.frame(i as usize), meta.vnet) {
            continue;
        }
        let last = dst.len() - 1;
        let (slot, m) = dst.slot_mut(last);
        match insert_vlan_tag(
            slot,
            m.offset as usize,
            m.len as usize,
            VlanTag::new(0, vid),
        ) {
            Ok(off) => {
                m.offset = off as u32;
                m.len += VLAN_TAG_LEN as u32;
                if m.vnet.needs_csum() {
                    m.vnet.csum_start += VLAN_TAG_LEN as u16;
                }
                if m.vnet.hdr_len != 0 {
                    m.vnet.hdr_len += VLAN_TAG_LEN as u16;
                }
            }
            Err(_) => dst.clear_last(),
        }
    }
}

/// The worker's ports as a sink for frames the gateway builds.
struct PortSink<'a>(&'a mut [Option<PortSlot>]);

impl Sink for PortSink<'_> {
    fn send(&mut self, port: PortId, batch: &Batch, sel: &[u16]) -> usize {
        let Some(Some(slot)) = self.0.get_mut(port as usize) else {
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

impl Worker {
    fn new(poll: Poll, rx: Receiver<Command>, cfg: PipelineConfig) -> Worker {
        let mut gateway = Gateway::new();
        if let Ok(reg) = poll.registry().try_clone() {
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
            batch: Batch::new(GSO_SLOT),
            tagged: Batch::new(GSO_SLOT),
            dispatch: Dispatch::new(),
            epoch: Instant::now(),
            running: true,
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
        self.gateway.nat_output(now, &mut PortSink(&mut self.ports));
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_age = Instant::now() + TICK;
        while self.running {
            let timeout = if self.ready.is_empty() {
                let t = next_age.saturating_duration_since(Instant::now());
                if self.gateway.wants_timer() {
                    t.min(NAT_TICK)
                } else {
                    t
                }
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("vswitch worker: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
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
                let id = ev.token().0 as PortId;
                if let Some(Some(slot)) = self.ports.get_mut(id as usize) {
                    if !slot.ready {
                        slot.ready = true;
                        self.ready.push(id);
                    }
                }
            }
            self.commands();
            self.round();
            self.gateway_output();
            let now = Instant::now();
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
        while i < self.ready.len() {
            let id = self.ready[i];
            let more = self.service(id);
            if more {
                i += 1;
            } else {
                if let Some(Some(slot)) = self.ports.get_mut(id as usize) {
                    slot.ready = false;
                }
                self.ready.swap_remove(i);
            }
        }
    }

    /// Receives one batch from `id` and forwards it. Returns true if the port may have more.
    fn service(&mut self, id: PortId) -> bool {
        let now = self.now();
        let Some(Some(slot)) = self.ports.get_mut(id as usize) else {
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
        self.dispatch.clear();
        self.pipeline
            .process(id, &self.batch, now, &mut self.dispatch);
        for (out, sel, vlan) in self.dispatch.outputs() {
            let Some(Some(dst)) = self.ports.get_mut(out as usize) else {
                self.pipeline
                    .counters_mut()
                    .add_drop(DropReason::TxFull, sel.len() as u64);
                continue;
            };
            let (src, sel) = match vlan {
                None => (&self.batch, sel),
                Some(vid) => {
                    tag_into(&self.batch, sel, vid, &mut self.tagged);
                    (&self.tagged, &ALL[..self.tagged.len()])
                }
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
        if !self.dispatch.to_gateway().is_empty() {
            let vnet = slot_vnet(&self.ports, id);
            let now_ms = self.now_ms();
            self.gateway
                .handle_from(&self.batch, self.dispatch.to_gateway(), id, vnet, now_ms);
            if !self.gateway.out.is_empty() {
                self.gateway.out.flush(&mut PortSink(&mut self.ports));
            }
            if let Some(Some(slot)) = self.ports.get_mut(id as usize) {
                let replies = self.gateway.replies();
                if !replies.is_empty() {
                    let sel = self.gateway.reply_sel();
                    let sent = slot.port.send_burst(replies, sel).unwrap_or(0);
                    slot.stats.tx_frames += sent as u64;
                }
            }
            self.gateway.clear();
        }
        n == BATCH_SIZE
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
                    done,
                } => {
                    let _ = done.send(self.add_port(id, port, role));
                }
                Command::RemovePort { id, done } => {
                    self.remove_port(id);
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
                Command::Shutdown => self.running = false,
            }
        }
    }

    fn add_port(&mut self, id: PortId, port: Box<dyn Port>, role: PortRole) -> io::Result<()> {
        let idx = id as usize;
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
        });
        self.ready.push(id);
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) {
        if let Some(slot) = self.ports.get_mut(id as usize).and_then(Option::take) {
            if let Some(fd) = slot.port.raw_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.pipeline.remove_port(id);
            self.gateway.remove_port(id);
            self.ready.retain(|p| *p != id);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            ports: self
                .ports
                .iter()
                .flatten()
                .map(|s| s.stats.clone())
                .collect(),
            counters: self.pipeline.counters().clone(),
            fdb: self.pipeline.fdb().entries(self.now()).collect(),
        }
    }
}
