//! Processes the daemon starts in containers: liveness by PID *and* start time (so a reused PID
//! is never mistaken for ours), and stopping them.

use std::io;

/// Start time (clock ticks since boot, field 22 of /proc/PID/stat) of a live, non-zombie
/// process; `None` when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Sends SIGKILL to `pid` if it is still the process that started at `start` (so only a process
/// the daemon itself started is ever signalled).
pub fn kill_if_ours(pid: u32, start: u64) -> io::Result<()> {
    if start_time(pid) != Some(start) {
        return Ok(());
    }
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX - 1).is_none());
    }

    #[test]
    fn kill_only_when_start_time_matches() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        kill_if_ours(pid, start + 1).unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "a mismatched start time spares the process"
        );
        kill_if_ours(pid, start).unwrap();
        let st = child.wait().unwrap();
        assert!(!st.success());
    }
}
