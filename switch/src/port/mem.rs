//! In-memory port for tests and benchmarks.
//!
//! A [`MemPort`] has a receive queue that a test fills ([`MemPort::push_rx`], or through a
//! [`MemHandle`] from another thread while a worker owns the port) and a transmit side that
//! either records copies of the frames sent ([`TxMode::Record`], bounded: beyond `depth`
//! frames a burst is cut short, which is how tests make TX-full drops) or only counts them
//! ([`TxMode::Count`], for benchmarks). Frame buffers are allocated up front and recycled, so
//! a warmed-up port does not allocate.

use super::{Port, PortCaps};
use crate::batch::{Batch, VnetHdr};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// Initial capacity of each recycled frame buffer.
const BUF_CAP: usize = 2048;

/// What the transmit side of a [`MemPort`] does with frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Keep a copy of every frame sent, up to the port's depth.
    Record,
    /// Count frames and bytes only; every frame is accepted.
    Count,
}

#[derive(Debug)]
struct Queues {
    depth: usize,
    mode: TxMode,
    rx: VecDeque<(Vec<u8>, VnetHdr)>,
    tx: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    /// Most frames one `send_burst` accepts (None: no limit but the depth).
    tx_burst_limit: Option<usize>,
    tx_frames: u64,
    tx_bytes: u64,
    rx_frames: u64,
    /// The port itself has been dropped (its owner closed it).
    closed: bool,
}

impl Queues {
    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_CAP));
        b.clear();
        b
    }
}

/// A cloneable handle to a [`MemPort`]'s queues, for a test thread while a worker owns the
/// port.
#[derive(Clone, Debug)]
pub struct MemHandle {
    q: Arc<Mutex<Queues>>,
}

fn lock(q: &Mutex<Queues>) -> MutexGuard<'_, Queues> {
    // A panic while holding the lock leaves plain queues behind: still usable.
    q.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemHandle {
    /// Queues `frame` for the port to receive. False when the receive queue is full.
    pub fn push_rx(&self, frame: &[u8]) -> bool {
        self.push_rx_vnet(frame, VnetHdr::default())
    }

    /// Queues `frame` with offload metadata `vnet`. False when the receive queue is full.
    pub fn push_rx_vnet(&self, frame: &[u8], vnet: VnetHdr) -> bool {
        let mut q = lock(&self.q);
        if q.rx.len() >= q.depth {
            return false;
        }
        let mut b = q.buffer();
        b.extend_from_slice(frame);
        q.rx.push_back((b, vnet));
        true
    }

    /// Frames waiting to be received.
    pub fn rx_pending(&self) -> usize {
        lock(&self.q).rx.len()
    }

    /// Copies of the frames sent so far (record mode), oldest first.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        lock(&self.q).tx.iter().cloned().collect()
    }

    /// Number of recorded frames (record mode).
    pub fn sent_len(&self) -> usize {
        lock(&self.q).tx.len()
    }

    /// Forgets the recorded frames (their buffers are recycled).
    pub fn clear_sent(&self) {
        let mut q = lock(&self.q);
        while let Some(b) = q.tx.pop_front() {
            q.free.push(b);
        }
    }

    /// Frames and bytes accepted by `send_burst` since creation.
    pub fn tx_counts(&self) -> (u64, u64) {
        let q = lock(&self.q);
        (q.tx_frames, q.tx_bytes)
    }

    /// Frames handed to the switch by `recv_burst` since creation.
    pub fn rx_frames(&self) -> u64 {
        lock(&self.q).rx_frames
    }

    /// True once the port has been dropped (e.g. by a worker that removed it or died).
    pub fn is_closed(&self) -> bool {
        lock(&self.q).closed
    }

    /// Makes every `send_burst` accept at most `limit` frames (None: no limit), to simulate
    /// a full transmit queue.
    pub fn set_tx_burst_limit(&self, limit: Option<usize>) {
        lock(&self.q).tx_burst_limit = limit;
    }
}

/// An in-memory port. See the module documentation.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    caps: PortCaps,
    h: MemHandle,
}

impl MemPort {
    /// A recording port whose queues hold up to `depth` frames each.
    pub fn new(name: &str, depth: usize) -> MemPort {
        Self::with_mode(name, depth, TxMode::Record)
    }

    /// A port that only counts what it sends (for benchmarks).
    pub fn counting(name: &str, depth: usize) -> MemPort {
        Self::with_mode(name, depth, TxMode::Count)
    }

    /// A port with the given transmit mode; `depth` buffers are allocated now.
    pub fn with_mode(name: &str, depth: usize, mode: TxMode) -> MemPort {
        let depth = depth.max(1);
        let bufs = match mode {
            TxMode::Record => 2 * depth,
            TxMode::Count => depth,
        };
        let q = Queues {
            depth,
            mode,
            rx: VecDeque::with_capacity(depth),
            tx: VecDeque::with_capacity(depth),
            free: (0..bufs).map(|_| Vec::with_capacity(BUF_CAP)).collect(),
            tx_burst_limit: None,
            tx_frames: 0,
            tx_bytes: 0,
            rx_frames: 0,
            closed: false,
        };
        MemPort {
            name: name.to_string(),
            caps: PortCaps::default(),
            h: MemHandle {
                q: Arc::new(Mutex::new(q)),
            },
        }
    }

    /// Sets the capabilities the port reports.
    pub fn with_caps(mut self, caps: PortCaps) -> MemPort {
        self.caps = caps;
        self
    }

    /// A handle to the queues that stays usable after the port is moved into a worker.
    pub fn handle(&self) -> MemHandle {
        self.h.clone()
    }

    /// See [`MemHandle::push_rx`].
    pub fn push_rx(&mut self, frame: &[u8]) -> bool {
        self.h.push_rx(frame)
    }

    /// See [`MemHandle::sent`].
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.h.sent()
    }

    /// See [`MemHandle::clear_sent`].
    pub fn clear_sent(&mut self) {
        self.h.clear_sent()
    }

    /// See [`MemHandle::tx_counts`].
    pub fn tx_counts(&self) -> (u64, u64) {
        self.h.tx_counts()
    }
}

impl Drop for MemPort {
    fn drop(&mut self) {
        lock(&self.h.q).closed = true;
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }

    fn recv_burst(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let mut q = lock(&self.h.q);
        let mut n = 0;
        while !batch.is_full() {
            let Some((buf, vnet)) = q.rx.pop_front() else {
                break;
            };
            // A frame larger than a slot is dropped, as a real port truncates or drops it.
            if batch.push(&buf, vnet) {
                n += 1;
            }
            q.free.push(buf);
        }
        q.rx_frames += n as u64;
        Ok(n)
    }

    fn send_burst(&mut self, batch: &Batch, sel: &[u16]) -> io::Result<usize> {
        let mut q = lock(&self.h.q);
        let mut take = sel.len();
        if let Some(l) = q.tx_burst_limit {
            take = take.min(l);
        }
        if q.mode == TxMode::Record {
            take = take.min(q.depth - q.tx.len());
        }
        let mut bytes = 0u64;
        for &i in &sel[..take] {
            let f = batch.frame(i as usize);
            bytes += f.len() as u64;
            if q.mode == TxMode::Record {
                let mut b = q.buffer();
                b.extend_from_slice(f);
                q.tx.push_back(b);
            }
        }
        q.tx_frames += take as u64;
        q.tx_bytes += bytes;
        Ok(take)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BATCH_SIZE, MTU_SLOT};

    #[test]
    fn receive_in_bursts_and_record_sends() {
        let mut p = MemPort::new("m0", 100);
        for i in 0..70u8 {
            assert!(p.push_rx(&[i; 60]));
        }
        let mut b = Batch::new(MTU_SLOT);
        assert_eq!(p.recv_burst(&mut b).unwrap(), BATCH_SIZE);
        assert_eq!(b.frame(3), &[3; 60]);
        assert_eq!(p.recv_burst(&mut b).unwrap(), 0, "batch full");
        assert_eq!(p.send_burst(&b, &[5, 1]).unwrap(), 2);
        assert_eq!(p.sent(), vec![vec![5; 60], vec![1; 60]]);
        assert_eq!(p.tx_counts(), (2, 120));
        b.clear();
        assert_eq!(p.recv_burst(&mut b).unwrap(), 6);
        assert_eq!(b.frame(0), &[64; 60]);
        assert_eq!(p.handle().rx_frames(), 70);
        assert_eq!(p.raw_fd(), None);
        assert_eq!(p.name(), "m0");
    }

    #[test]
    fn queues_are_bounded() {
        let mut p = MemPort::new("m1", 2);
        assert!(p.push_rx(&[1; 20]));
        assert!(p.push_rx(&[2; 20]));
        assert!(!p.push_rx(&[3; 20]), "rx queue full");
        let mut b = Batch::new(MTU_SLOT);
        p.recv_burst(&mut b).unwrap();
        assert_eq!(p.send_burst(&b, &[0, 1, 0]).unwrap(), 2, "record depth 2");
        assert_eq!(p.send_burst(&b, &[0]).unwrap(), 0);
        p.clear_sent();
        let h = p.handle();
        h.set_tx_burst_limit(Some(1));
        assert_eq!(p.send_burst(&b, &[0, 1]).unwrap(), 1);
        assert_eq!(h.sent_len(), 1);
    }

    #[test]
    fn counting_mode_accepts_everything_and_keeps_nothing() {
        let mut p = MemPort::counting("c", 4);
        let mut b = Batch::new(MTU_SLOT);
        b.push(&[0; 64], VnetHdr::default());
        for _ in 0..1000 {
            assert_eq!(p.send_burst(&b, &[0, 0, 0]).unwrap(), 3);
        }
        assert_eq!(p.tx_counts(), (3000, 192_000));
        assert!(p.sent().is_empty());
    }

    #[test]
    fn handle_works_across_threads() {
        let mut p = MemPort::new("t", 8);
        let h = p.handle();
        std::thread::spawn(move || assert!(h.push_rx(&[7; 30])))
            .join()
            .unwrap();
        let mut b = Batch::new(MTU_SLOT);
        assert_eq!(p.recv_burst(&mut b).unwrap(), 1);
        assert_eq!(b.frame(0), &[7; 30]);
    }
}
