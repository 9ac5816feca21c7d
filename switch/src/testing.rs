//! Preconditions of tests (root, a kernel feature, a tool on `PATH`), decided in one place so a
//! test that cannot run is never silently green.
//!
//! A test asks [`require`] (or [`require_root`], [`require_tool`]) before doing anything that
//! needs the precondition:
//!
//! * when it holds, the call returns `true` and the test goes on;
//! * when it does not hold and the run is *strict* — `CI=true` (CI sets it; `.ci/run` exports it)
//!   or `VSWITCH_TESTS_REQUIRE_ALL=1` — the call panics, so the test fails naming itself and the
//!   missing precondition;
//! * otherwise the skip is printed (`eprintln`, which cargo shows only for failing tests) and
//!   appended as one line `test<TAB>reason` to `target/vswitch-skips.txt` (or the file named by
//!   `VSWITCH_SKIPS_FILE`), and the call returns `false`: the test returns early. `tests/test.sh`
//!   empties that file, runs `cargo test`, and prints the skips grouped by reason at the end.
//!
//! Used by the unit tests of this crate and by the end-to-end tests (`tests/`), which is why it is
//! a (hidden) public module rather than `cfg(test)`.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;

/// What a test does about one precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The precondition holds: run.
    Run,
    /// It does not, and the run is not strict: record the skip and return early.
    Skip,
    /// It does not, and the run is strict: fail with this message.
    Fail(String),
}

/// Whether a missing precondition fails the test, from the values of `CI` and
/// `VSWITCH_TESTS_REQUIRE_ALL` (pure, for tests; [`strict`] reads the environment).
pub fn strict_from(ci: Option<&str>, require_all: Option<&str>) -> bool {
    let yes = |v: Option<&str>| {
        matches!(
            v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
            Some("true" | "1" | "yes")
        )
    };
    yes(ci) || yes(require_all)
}

/// Whether this run is strict (`CI=true` or `VSWITCH_TESTS_REQUIRE_ALL=1`).
pub fn strict() -> bool {
    let ci = std::env::var("CI").ok();
    let all = std::env::var("VSWITCH_TESTS_REQUIRE_ALL").ok();
    strict_from(ci.as_deref(), all.as_deref())
}

/// The one decision: `missing` is `None` when the precondition holds, else why it does not.
pub fn decide(strict: bool, test: &str, missing: Option<&str>) -> Verdict {
    match missing {
        None => Verdict::Run,
        Some(reason) if strict => Verdict::Fail(format!(
            "{test}: precondition missing: {reason} (a strict run — CI=true or \
             VSWITCH_TESTS_REQUIRE_ALL=1 — does not skip)"
        )),
        Some(_) => Verdict::Skip,
    }
}

/// The name of the running test: libtest names each test's thread after it.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// Where skips are recorded: `VSWITCH_SKIPS_FILE`, else `vswitch-skips.txt` in the cargo target
/// directory this test binary was built in (`target/<profile>/deps/<exe>` → `target/`).
pub fn skips_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VSWITCH_SKIPS_FILE") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    Some(target.join("vswitch-skips.txt"))
}

/// Returns `true` when the test may go on. When `holds` is false: under a strict run, panics
/// naming the test and `reason`; otherwise prints and records the skip and returns `false`.
pub fn require(holds: bool, reason: impl Display) -> bool {
    require_named(&current_test(), holds, reason)
}

/// [`require`] with an explicit test name (for helpers that know better than the thread name).
pub fn require_named(test: &str, holds: bool, reason: impl Display) -> bool {
    let reason = (!holds).then(|| reason.to_string());
    match decide(strict(), test, reason.as_deref()) {
        Verdict::Run => true,
        Verdict::Fail(msg) => panic!("{msg}"),
        Verdict::Skip => {
            let reason = reason.unwrap_or_default();
            eprintln!("{test}: SKIPPED: {reason}");
            if let Some(path) = skips_file() {
                // One short O_APPEND write per skip, so parallel tests do not interleave lines.
                let line = format!("{test}\t{reason}\n");
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            false
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// [`require`]s root (network namespaces, veth pairs, TAP devices, AF_PACKET).
pub fn require_root() -> bool {
    require(
        is_root(),
        "not root (needs network namespaces, veth, TAP, AF_PACKET)",
    )
}

/// Whether the running kernel is at least `major.minor` (from `/proc/sys/kernel/osrelease`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = r
        .split(['.', '-'])
        .map(|x| x.trim().parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
}

/// Whether an executable named `tool` is on `PATH`.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// [`require`]s each of `tools` on `PATH`.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    require(
        missing.is_empty(),
        format_args!("missing tool(s) on PATH: {}", missing.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn strictness_comes_from_ci_or_require_all() {
        assert!(strict_from(Some("true"), None));
        assert!(strict_from(Some("1"), None));
        assert!(strict_from(None, Some("1")));
        assert!(strict_from(Some("false"), Some("1")));
        assert!(!strict_from(None, None));
        assert!(!strict_from(Some("false"), Some("0")));
        assert!(!strict_from(Some(""), None));
    }

    #[test]
    fn a_missing_precondition_fails_a_strict_run_naming_it() {
        assert_eq!(decide(true, "t", None), Verdict::Run);
        assert_eq!(decide(false, "t", None), Verdict::Run);
        assert_eq!(decide(false, "t", Some("no tshark")), Verdict::Skip);
        match decide(true, "my_test", Some("no tshark")) {
            Verdict::Fail(m) => assert!(m.contains("my_test") && m.contains("no tshark"), "{m}"),
            v => panic!("expected a failure, got {v:?}"),
        }
    }

    /// A test whose precondition never holds; run only by the test below, as a child process.
    #[test]
    #[ignore = "run as a child by under_ci_a_missing_precondition_fails_the_test"]
    fn probe_missing_precondition() {
        if !require(false, "probe: the frobnicator is missing") {
            return;
        }
        unreachable!("require(false, ..) returned true");
    }

    fn run_probe(env: &[(&str, &str)], skips: &std::path::Path) -> std::process::Output {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--ignored",
            "--exact",
            "testing::tests::probe_missing_precondition",
            "--nocapture",
        ])
        .env_remove("CI")
        .env_remove("VSWITCH_TESTS_REQUIRE_ALL")
        .env("VSWITCH_SKIPS_FILE", skips);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// The real thing, end to end: the same test binary, run with `CI=true`, fails the test
    /// naming the precondition; run without it, passes, says SKIPPED and records the skip.
    #[test]
    fn under_ci_a_missing_precondition_fails_the_test() {
        let skips = std::env::temp_dir().join(format!("vswitch-skips-{}.txt", std::process::id()));
        let _ = std::fs::remove_file(&skips);

        let out = run_probe(&[("CI", "true")], &skips);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "CI=true should fail: {text}");
        assert!(
            text.contains("probe_missing_precondition")
                && text.contains("the frobnicator is missing"),
            "{text}"
        );
        assert!(!skips.exists(), "a failure is not a skip");

        let out = run_probe(&[("VSWITCH_TESTS_REQUIRE_ALL", "1")], &skips);
        assert!(!out.status.success(), "VSWITCH_TESTS_REQUIRE_ALL=1 fails");

        let out = run_probe(&[], &skips);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "without CI the test skips: {text}");
        assert!(text.contains("SKIPPED: probe: the frobnicator"), "{text}");
        let rec = std::fs::read_to_string(&skips).unwrap();
        let _ = std::fs::remove_file(&skips);
        assert_eq!(
            rec,
            "testing::tests::probe_missing_precondition\tprobe: the frobnicator is missing\n"
        );
    }
}

/// A fake switch worker for tests of the control plane: it takes the daemon's commands from
/// the worker channel, keeps the ports it is given (open, as the worker does), answers the
/// commands that wait for a reply, and records what the switch would be programmed with. It
/// can be told to refuse ports, to test that a failed step leaves nothing behind.
#[derive(Clone, Default)]
pub struct FakeWorker {
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
}

/// What a [`FakeWorker`] holds.
#[derive(Default)]
pub struct FakeState {
    /// Networks registered (`AddNetwork`), with the gateway's address.
    pub networks: Vec<(crate::pipeline::NetworkId, Option<std::net::Ipv4Addr>)>,
    /// Ports added and not removed: id and interface name.
    pub ports: Vec<(crate::port::PortId, String)>,
    /// Gateway endpoints announced: network, address and port.
    pub endpoints: Vec<(
        crate::pipeline::NetworkId,
        std::net::Ipv4Addr,
        crate::port::PortId,
    )>,
    /// `AddPort` is answered with an error while this is set.
    pub refuse_ports: bool,
    /// Commands received, by kind, in order.
    pub log: Vec<&'static str>,
}

impl FakeWorker {
    /// The daemon's [`crate::control::daemon::Spawner`] for this fake: every worker it starts
    /// (at start, after a panic) shares this fake's state.
    pub fn spawner(&self) -> crate::control::daemon::Spawner {
        let state = self.state.clone();
        std::sync::Arc::new(move |_cfg, _generation, _exits| {
            let state = state.clone();
            crate::worker::WorkerHandle::spawn_fake(move |rx| serve_fake(&state, rx))
                .map_err(|e| crate::control::error::Error::Msg(format!("fake worker: {e}")))
        })
    }

    /// Runs `f` on the fake's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Names of the ports the fake holds now, sorted.
    pub fn port_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.with(|s| s.ports.iter().map(|p| p.1.clone()).collect());
        v.sort();
        v
    }
}

fn serve_fake(
    state: &std::sync::Mutex<FakeState>,
    rx: crossbeam_channel::Receiver<crate::worker::Command>,
) {
    use crate::worker::{Command, PortStats, Snapshot};
    let mut held: Vec<(crate::port::PortId, Box<dyn crate::port::Port>)> = Vec::new();
    for cmd in rx {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        match cmd {
            Command::AddNetwork { id, gateway } => {
                s.log.push("add_network");
                s.networks.retain(|n| n.0 != id);
                s.networks.push((id, gateway.map(|g| g.1)));
            }
            Command::RemoveNetwork { id } => {
                s.log.push("remove_network");
                s.networks.retain(|n| n.0 != id);
            }
            Command::AddPort { id, port, done, .. } | Command::AddUplink { id, port, done, .. } => {
                s.log.push("add_port");
                if s.refuse_ports {
                    let _ = done.send(Err(std::io::Error::other("refused by the fake worker")));
                } else {
                    s.ports.push((id, port.name().to_string()));
                    held.push((id, port));
                    let _ = done.send(Ok(()));
                }
            }
            Command::RemovePort { id, done } => {
                s.log.push("remove_port");
                s.ports.retain(|p| p.0 != id);
                s.endpoints.retain(|e| e.2 != id);
                held.retain(|p| p.0 != id);
                let _ = done.send(());
            }
            Command::AddVtep { done, .. } => {
                s.log.push("add_vtep");
                let _ = done.send(Ok(()));
            }
            Command::RemoveVtep { done, .. } => {
                s.log.push("remove_vtep");
                let _ = done.send(());
            }
            Command::Snapshot { reply } => {
                let ports = s
                    .ports
                    .iter()
                    .map(|(id, name)| PortStats {
                        id: *id,
                        name: name.clone(),
                        ..Default::default()
                    })
                    .collect();
                let _ = reply.send(Snapshot {
                    ports,
                    ..Default::default()
                });
            }
            Command::Gateway(g) => match g {
                crate::gateway::GatewayCommand::Counters { reply } => {
                    let _ = reply.send(Default::default());
                }
                crate::gateway::GatewayCommand::Endpoint { net, ip, port, .. } => {
                    s.log.push("gateway_endpoint");
                    s.endpoints.retain(|e| !(e.0 == net && e.1 == ip));
                    s.endpoints.push((net, ip, port));
                }
                _ => s.log.push("gateway"),
            },
            Command::Shutdown => break,
            Command::SetPortRole { .. } => s.log.push("set_port_role"),
            Command::AddStatic { .. } => s.log.push("add_static"),
            Command::RemoveStatic { .. } => s.log.push("remove_static"),
            Command::ProxyArp { .. } => s.log.push("proxy_arp"),
            Command::SetVtepMtu { .. } => s.log.push("set_vtep_mtu"),
            Command::InjectPanic => s.log.push("inject_panic"),
            Command::Trace(_) => s.log.push("trace"),
            Command::CaptureStart { .. } => s.log.push("capture_start"),
            Command::CaptureStop => s.log.push("capture_stop"),
        }
    }
}
