//! Is a CPU going spare? The question busy polling asks before it spins.
//!
//! A worker that polls instead of sleeping (`vswitch daemon --busy-poll`) saves the wakeup a
//! sparse frame would otherwise pay, but it spins at nice -10 and takes its CPU from whatever
//! else the host runs: with two CPU-bound processes beside a ping 100 times a second through
//! the switch, they got half the CPU time they got without busy polling. So the worker spins
//! only while no thread of the host waits for a CPU: the kernel's count of runnable threads
//! (the fourth field of `/proc/loadavg`, `R/T`, an instantaneous count that includes the
//! caller) is at most the number of online CPUs. As soon as one more thread is runnable, the
//! worker sleeps in `epoll_wait` as it does without busy polling, and its CPU goes to that
//! thread.
//!
//! One `pread` of a file the kernel generates, about a microsecond, made only when the worker
//! has nothing to do and would otherwise spin.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Consecutive reads that must see more runnable threads than CPUs before the worker gives
/// its CPU up. A thread is counted runnable from its wakeup until it is off the CPU again,
/// so a ping woken by its reply, or a kernel worker with a moment's work, makes one read
/// over: on a quiet machine a single over-read made the worker sleep at a quarter of 50
/// pings. A thread that really wants a CPU is still there after a few more polls (each a
/// microsecond or two).
const PATIENCE: u8 = 8;

/// The kernel's count of runnable threads, read from `/proc/loadavg`.
#[derive(Debug)]
pub struct SpareCpu {
    file: Option<File>,
    cpus: u32,
    buf: [u8; 128],
    /// Consecutive reads over the CPUs.
    over: u8,
}

impl SpareCpu {
    /// Opens `/proc/loadavg`. If it cannot be opened, [`SpareCpu::spare`] always says no (the
    /// worker then sleeps as it would without busy polling).
    pub fn new() -> SpareCpu {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        SpareCpu {
            file: File::open("/proc/loadavg").ok(),
            cpus: u32::try_from(online).unwrap_or(1).max(1),
            buf: [0; 128],
            over: 0,
        }
    }

    /// True unless the last [`PATIENCE`] reads each found a thread of the host waiting for a
    /// CPU: while it is true, the calling thread may keep one busy.
    pub fn spare(&mut self) -> bool {
        if self.read_spare() {
            self.over = 0;
            return true;
        }
        self.over = self.over.saturating_add(1);
        self.over < PATIENCE
    }

    /// One read: no thread is waiting for a CPU.
    fn read_spare(&mut self) -> bool {
        let Some(f) = &self.file else {
            return false;
        };
        let Ok(n) = f.read_at(&mut self.buf, 0) else {
            return false;
        };
        runnable(self.buf.get(..n).unwrap_or(&[])).is_some_and(|r| r <= self.cpus)
    }
}

impl Default for SpareCpu {
    fn default() -> Self {
        Self::new()
    }
}

/// The runnable count of a `/proc/loadavg` line (`0.50 0.40 0.30 2/345 12345`: 2), or `None`
/// if the line does not have that shape.
pub fn runnable(line: &[u8]) -> Option<u32> {
    let field = line.split(|&b| b == b' ').nth(3)?;
    let slash = field.iter().position(|&b| b == b'/')?;
    let digits = field.get(..slash)?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count_and_refuses_other_shapes() {
        assert_eq!(runnable(b"0.50 0.40 0.30 2/345 12345\n"), Some(2));
        assert_eq!(runnable(b"12.00 9.10 3.30 17/1021 99"), Some(17));
        for bad in [
            &b""[..],
            b"0.50 0.40 0.30",
            b"0.50 0.40 0.30 /345 1",
            b"0.50 0.40 0.30 x/345 1",
            b"0.50 0.40 0.30 2345 1",
            b"0.50 0.40 0.30 9999999999/345 1",
        ] {
            assert_eq!(runnable(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// More CPU-bound threads than CPUs: none is spare, for as long as they run.
    #[test]
    fn busy_threads_beyond_the_cpus_leave_none_spare() {
        let mut s = SpareCpu::new();
        assert!(s.file.is_some());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..=s.cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let spare = (0..20).filter(|_| s.read_spare()).count();
        // And what the worker asks: yes for the first reads (patience), then no.
        let answers: Vec<bool> = (0..PATIENCE + 4).map(|_| s.spare()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in spinners {
            t.join().unwrap();
        }
        assert_eq!(spare, 0);
        let want: Vec<bool> = (0..PATIENCE + 4).map(|i| i + 1 < PATIENCE).collect();
        assert_eq!(answers, want);
    }
}
