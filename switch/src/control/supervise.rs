//! Supervision of the switch worker: a worker thread that panics is noticed at once, logged,
//! counted, and replaced by a new worker programmed from the daemon's state.
//!
//! * The worker thread runs its loop under `catch_unwind` and, once the dead worker has been
//!   dropped (its ports' descriptors closed), sends a [`WorkerExit`] with the panic message and
//!   location ([`crate::worker`]). The supervisor thread ([`supervise`]) blocks on that channel:
//!   it logs the panic the moment it arrives, without waiting for the daemon's lock.
//! * It then takes the daemon's lock and calls [`Daemon::restart_worker`]: a new worker, the
//!   daemon's runtime tables of ports and tunnels emptied, and [`Daemon::restore`] — the same
//!   function that programs the first worker at start — run again: networks and gateway
//!   addresses, the host's ports, overlay tunnels and peers, macvlan uplinks and their static
//!   MAC entries, every container endpoint (a veth host end opened again by name, a persistent
//!   TAP attached to again inside its namespace), DNS names and published ports. Containers
//!   keep their links, addresses and routes; learned MACs are learned again; the pipeline's
//!   and ports' counters start from zero; connections through the gateway's NAT (egress and
//!   published ports) are cut, as their sockets lived in the worker.
//! * The worker is its own thread: it never holds the daemon's lock, so its panic cannot
//!   poison it. A request that was waiting on the worker when it died gets an error at once
//!   (its reply channel is dropped with the dead worker's queue); a request between the panic
//!   and the restart fails the same way ("the switch worker is not running"), and whatever it
//!   changed in the daemon's state is programmed by the restart.
//! * A panic loop (a frame that kills every worker on arrival) is bounded: the first
//!   [`FAST_RESTARTS`] restarts within a minute happen at once; after that the supervisor
//!   logs an error and restarts the worker only every [`SLOW_RESTART_DELAY`] until it stays
//!   up, so a bad frame costs a restore every 10 s, not a busy loop.

use super::Daemon;
use crate::control::error::{bail, Context, Result};
use crate::worker::{WorkerExit, WorkerHandle};
use crossbeam_channel::Receiver;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Restarts within [`BACKOFF_WINDOW`] that happen at once.
pub const FAST_RESTARTS: usize = 5;
/// The window over which restarts are counted.
pub const BACKOFF_WINDOW: Duration = Duration::from_secs(60);
/// Least time between two restarts once [`FAST_RESTARTS`] were used up within the window.
pub const SLOW_RESTART_DELAY: Duration = Duration::from_secs(10);

/// When to start the next worker: at once, unless [`FAST_RESTARTS`] restarts happened within
/// the last [`BACKOFF_WINDOW`]; then [`SLOW_RESTART_DELAY`] after the last one.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Times of the restarts within the window, oldest first.
    recent: VecDeque<Instant>,
}

impl Backoff {
    /// How long to wait at `now` before the next restart.
    pub fn delay(&mut self, now: Instant) -> Duration {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= BACKOFF_WINDOW)
        {
            self.recent.pop_front();
        }
        match self.recent.back() {
            Some(last) if self.recent.len() >= FAST_RESTARTS => {
                SLOW_RESTART_DELAY.saturating_sub(now.saturating_duration_since(*last))
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a restart made at `at`.
    pub fn record(&mut self, at: Instant) {
        self.recent.push_back(at);
        // Only the last FAST_RESTARTS matter; the slow delay never lets more pile up.
        while self.recent.len() > FAST_RESTARTS {
            self.recent.pop_front();
        }
    }

    /// True when the next restart waits (the fast restarts of the window are used up).
    pub fn slowed(&self) -> bool {
        self.recent.len() >= FAST_RESTARTS
    }
}

/// What `vswitch stats` shows of the worker's health.
#[derive(Debug, Default)]
pub struct Health {
    /// The running worker's generation (0 for the first).
    generation: u64,
    /// Panics seen.
    panics: u64,
    /// Workers started after a panic.
    restarts: u64,
    /// The last panic's message and location.
    last_panic: Option<String>,
    /// When it happened (seconds since the Unix epoch).
    last_panic_at: Option<u64>,
    backoff: Backoff,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Daemon {
    /// Starts the worker of generation `generation`, reporting a panic to the daemon's channel.
    pub(super) fn spawn_worker(
        cfg: &super::Config,
        generation: u64,
        exits: crossbeam_channel::Sender<WorkerExit>,
    ) -> Result<WorkerHandle> {
        WorkerHandle::spawn_supervised(cfg.pipeline.clone(), generation, exits, cfg.worker)
            .context("cannot start the switch worker")
    }

    /// The channel on which workers that panicked report (for [`supervise`]).
    pub fn worker_exits(&self) -> Receiver<WorkerExit> {
        self.exits.1.clone()
    }

    /// Counts a worker's panic and returns how long to wait before starting a new one (`None`
    /// when `exit` is about a worker that was already replaced).
    pub fn worker_panicked(&mut self, exit: &WorkerExit, now: Instant) -> Option<Duration> {
        if exit.generation != self.health.generation {
            return None;
        }
        let h = &mut self.health;
        h.panics += 1;
        h.last_panic = Some(exit.message.clone());
        h.last_panic_at = Some(unix_now());
        let wait = h.backoff.delay(now);
        if !wait.is_zero() {
            tracing::error!(
                "the switch worker panicked {} times within {} s; from now on a new worker is started only every {} s until one stays up (the dataplane is down in between). This is a bug in vswitch: please report it with this log. Last panic: {}",
                h.backoff.recent.len() + 1,
                BACKOFF_WINDOW.as_secs(),
                SLOW_RESTART_DELAY.as_secs(),
                exit.message
            );
        }
        Some(wait)
    }

    /// Replaces a dead worker by a new one programmed from the daemon's state (see the module
    /// documentation). An error means no worker could be started; what could not be restored
    /// on the new one is logged.
    pub fn restart_worker(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let generation = self.health.generation + 1;
        let worker = (self.spawner)(&self.cfg, generation, self.exits.0.clone())?;
        // The old handle joins its thread, which has ended after reporting its exit.
        drop(std::mem::replace(&mut self.worker, worker));
        self.health.generation = generation;
        self.health.restarts += 1;
        self.health.backoff.record(t0);
        // The dead worker's ports, tunnels and peers went with it.
        self.ports.0.clear();
        for d in self.drivers.all_mut() {
            d.reset();
        }
        if let Err(e) = self.restore() {
            tracing::warn!("restoring the new switch worker's state: {e:#}");
        }
        tracing::info!(
            "a new switch worker is running (restart {}): {} ports, {} networks and {} containers restored in {} ms",
            self.health.restarts,
            self.ports.0.len(),
            self.state.networks.len(),
            self.state.containers.len(),
            t0.elapsed().as_millis()
        );
        Ok(())
    }

    /// The worker's health for `vswitch stats`: `worker_state`, `worker_panics`,
    /// `worker_restarts`, `worker_last_panic`, `worker_last_panic_at`.
    pub(super) fn worker_health(&self) -> serde_json::Map<String, serde_json::Value> {
        let h = &self.health;
        let state = if self.worker.is_running() {
            "running"
        } else {
            "down"
        };
        let mut m = serde_json::Map::new();
        m.insert("worker_state".into(), state.into());
        m.insert("worker_panics".into(), h.panics.into());
        m.insert("worker_restarts".into(), h.restarts.into());
        m.insert("worker_last_panic".into(), h.last_panic.clone().into());
        m.insert("worker_last_panic_at".into(), h.last_panic_at.into());
        m
    }

    /// The test hook behind `{"op":"inject_panic"}`: panics the worker, when the daemon was
    /// started with test hooks on.
    pub(super) fn inject_panic(&self) -> Result<()> {
        if !self.cfg.test_hooks {
            bail!("inject_panic is a test hook, and this daemon was started without test hooks (vswitch daemon --test-hooks or VSWITCH_TEST_HOOKS=1)");
        }
        tracing::info!("test hook: panicking the switch worker");
        self.worker.send(crate::worker::Command::InjectPanic);
        Ok(())
    }
}

/// The daemon's lock, also after a request handler panicked while holding it: the dataplane
/// is brought back whatever state the control plane is in.
fn lock(d: &Mutex<Daemon>) -> MutexGuard<'_, Daemon> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the supervisor thread: it waits for workers that panicked and replaces them (see the
/// module documentation).
pub fn supervise(daemon: Arc<Mutex<Daemon>>) -> std::io::Result<()> {
    let exits = lock(&daemon).worker_exits();
    std::thread::Builder::new()
        .name("vswitch-supervisor".into())
        .spawn(move || {
            for exit in exits.iter() {
                tracing::warn!(
                    "the switch worker panicked: {}; starting a new one",
                    exit.message
                );
                let Some(mut wait) = lock(&daemon).worker_panicked(&exit, Instant::now()) else {
                    continue;
                };
                loop {
                    // Backoff of a panic loop, outside the lock: the CLI keeps answering.
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    let started = lock(&daemon).restart_worker();
                    match started {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(
                                "cannot start a new switch worker: {e:#}; trying again in {} s",
                                SLOW_RESTART_DELAY.as_secs()
                            );
                            wait = SLOW_RESTART_DELAY;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_restarts_at_once_then_slows_down_then_recovers() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Backoff::default();
        // The first FAST_RESTARTS restarts of a minute: at once.
        for i in 0..FAST_RESTARTS as u64 {
            let now = t0 + s(i);
            assert_eq!(b.delay(now), Duration::ZERO, "restart {i}");
            b.record(now);
        }
        assert!(b.slowed());
        // The next one waits SLOW_RESTART_DELAY after the last.
        let last = t0 + s(FAST_RESTARTS as u64 - 1);
        assert_eq!(b.delay(last), SLOW_RESTART_DELAY);
        assert_eq!(b.delay(last + s(4)), SLOW_RESTART_DELAY - s(4));
        assert_eq!(b.delay(last + s(30)), Duration::ZERO, "already waited");
        // A panic loop at the slow rate stays slow (every restart within the window)...
        let mut now = last;
        for _ in 0..20 {
            now += b.delay(now);
            b.record(now);
            assert_eq!(b.delay(now), SLOW_RESTART_DELAY);
        }
        // ...and a worker that stays up for a minute gets fast restarts again.
        now += BACKOFF_WINDOW;
        assert_eq!(b.delay(now), Duration::ZERO);
        assert!(!b.slowed());
    }

    #[test]
    fn backoff_counts_only_the_window() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        // One restart every 15 s never piles up FAST_RESTARTS within a minute.
        for i in 0..50u64 {
            let now = t0 + Duration::from_secs(15 * i);
            assert_eq!(b.delay(now), Duration::ZERO, "restart {i}");
            b.record(now);
        }
    }
}
