//! The control socket and the state file, end to end against the real daemon: request size
//! limit, request timeout, client limit, a corrupt state file at start, the socket's mode and
//! the absence of any TCP listener. Each test has its own daemon, socket and state directory.

use e2e::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PING: &[u8] = b"{\"op\":\"ping\"}\n";

/// A raw client of the daemon's socket; reads give up after 20 s rather than hang the test.
fn connect(socket: &Path) -> UnixStream {
    let s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one reply line (without the newline).
fn read_line(s: &mut UnixStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ping(s: &mut UnixStream) -> String {
    s.write_all(PING).unwrap();
    read_line(s)
}

fn is_ok(reply: &str) -> bool {
    reply.starts_with("{\"status\":\"ok\"")
}

/// True when the daemon has closed `s`: end of file, or a reset because what the client sent
/// went unread. A read timeout (still open) is false.
fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn oversized_request_is_refused_while_another_client_is_served() {
    if !need_root("oversized_request") {
        return;
    }
    let d = Daemon::start("big");
    let mut other = connect(&d.socket);
    assert!(is_ok(&ping(&mut other)));
    // 2 MiB with no newline, written from a thread: the daemon answers once it has read
    // 1 MiB and closes while the rest is still coming.
    let mut big = connect(&d.socket);
    let mut w = big.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&vec![b'x'; 2 << 20]).is_ok());
    let reply = read_line(&mut big);
    assert!(
        reply.contains("\"status\":\"error\"")
            && reply.contains("request too long: more than 1048576 bytes without a newline"),
        "{reply}\n{}",
        d.log()
    );
    assert!(closed(&mut big), "the connection is closed after the error");
    assert!(
        !writer.join().unwrap(),
        "the daemon stopped reading before the 2 MiB were sent"
    );
    // The other client and new ones are served all along.
    assert!(is_ok(&ping(&mut other)));
    d.ok(&["network", "ls"]);
}

#[test]
fn slow_and_idle_clients_time_out() {
    if !need_root("slow_client") {
        return;
    }
    let d = Daemon::start_with("slow", &["--request-timeout", "1"]);
    // Half a request, then nothing more.
    let mut slow = connect(&d.socket);
    let t0 = Instant::now();
    slow.write_all(b"{\"op\":").unwrap();
    // Meanwhile other clients are served.
    d.ok(&["network", "ls"]);
    let reply = read_line(&mut slow);
    let took = t0.elapsed();
    assert!(
        reply.contains(
            "request timed out: no whole request (one JSON object and a newline) within 1s"
        ),
        "{reply}\n{}",
        d.log()
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(closed(&mut slow));
    // A client that is served and then idles is closed the same way.
    let mut idle = connect(&d.socket);
    assert!(is_ok(&ping(&mut idle)));
    assert!(read_line(&mut idle).contains("request timed out"));
    assert!(closed(&mut idle));
    // `vswitch run --rm` with a command that outlasts the timeout still removes its container
    // (it reconnects for the removal).
    let c = unique("rm");
    d.track(&c);
    d.ok(&["run", "--rm", "--name", &c, "--", "sleep", "1.5"]);
    assert!(
        d.container(&c).is_null(),
        "container {c} removed after the command"
    );
}

#[test]
fn clients_beyond_the_limit_get_an_error_until_one_leaves() {
    if !need_root("client_limit") {
        return;
    }
    let d = Daemon::start_with("lim", &["--max-clients", "3"]);
    let mut held: Vec<UnixStream> = (0..3).map(|_| connect(&d.socket)).collect();
    for s in &mut held {
        assert!(is_ok(&ping(s)), "{}", d.log());
    }
    // A fourth client: one error line, then closed.
    let mut extra = connect(&d.socket);
    let reply = read_line(&mut extra);
    assert!(
        reply.contains(
            "too many clients: 3 are connected to the daemon, the most it serves at once"
        ),
        "{reply}"
    );
    assert!(closed(&mut extra));
    // The CLI shows that answer.
    let e = d.fails(&["network", "ls"]);
    assert!(e.contains("too many clients"), "{e}");
    // The held clients are still served; when one leaves, the CLI gets in again.
    assert!(is_ok(&ping(&mut held[0])));
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.cli(&["network", "ls"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "no client served 10 s after one of 3 left\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log().contains("refusing clients: 3 connected"),
        "{}",
        d.log()
    );
}

#[test]
fn corrupt_state_file_stops_the_daemon_and_the_backup_restores() {
    if !need_root("corrupt_state") {
        return;
    }
    let mut d = Daemon::start("bad");
    d.ok(&["network", "create", "--subnet", "10.251.1.0/24", "keep1"]);
    d.ok(&["network", "create", "--subnet", "10.251.2.0/24", "last2"]);
    d.stop(false);
    let state = d.state_dir.join("state.json");
    let bak = d.state_dir.join("state.json.bak");
    let full = std::fs::read(&state).unwrap();
    let kept = std::fs::read(&bak).expect("a save keeps state.json.bak");
    // A torn write from outside (vswitch's own writes are atomic): half the file.
    std::fs::write(&state, &full[..full.len() / 2]).unwrap();
    let mut child = Command::new(vswitch_bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("daemon")
        .arg("--state-dir")
        .arg(&d.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not exit on a corrupt state file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "exit status {status}: {err}");
    for want in [
        format!("state file {} is corrupt: it ends early", state.display()),
        "does not start on it".to_string(),
        format!(
            "The last good copy is {} (3 networks, 0 containers",
            bak.display()
        ),
        format!("cp {} {}", bak.display(), state.display()),
    ] {
        assert!(err.contains(&want), "missing {want:?} in: {err}");
    }
    // Both files as they were, and no socket left for clients to hang on.
    assert_eq!(std::fs::read(&state).unwrap(), &full[..full.len() / 2]);
    assert_eq!(std::fs::read(&bak).unwrap(), kept);
    assert!(!d.socket.exists(), "socket left behind");
    // The advice works: the daemon starts on the backup, with the networks it holds.
    std::fs::copy(&bak, &state).unwrap();
    d.restart(false);
    let nets = d.ok(&["network", "ls"]);
    assert!(nets.contains("keep1") && nets.contains("last2"), "{nets}");
}

/// Inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect()
}

/// Local addresses of the TCP sockets in LISTEN state that process `pid` holds, from
/// /proc/PID/net/tcp and tcp6 (which list the whole namespace; the inode says whose).
fn tcp_listeners(pid: u32) -> Vec<String> {
    let mine = socket_inodes(pid);
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if cols.get(3) == Some(&"0A") && cols.get(9).is_some_and(|i| mine.contains(*i)) {
                out.push(format!("{f} {}", cols[1]));
            }
        }
    }
    out
}

#[test]
fn socket_is_private_and_there_is_no_tcp_listener() {
    if !need_root("no_tcp") {
        return;
    }
    let d = Daemon::start("priv");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);
    // The check sees a real listener: this test process's own.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let me = std::process::id();
    assert_eq!(tcp_listeners(me).len(), 1, "{:?}", tcp_listeners(me));
    drop(l);
    // The daemon, serving a client and with a network, listens on no TCP port.
    let c = unique("p");
    d.run(&c, &[]);
    let pid = d.pid();
    assert!(
        !socket_inodes(pid).is_empty(),
        "the daemon holds sockets (control, ports)"
    );
    assert_eq!(tcp_listeners(pid), Vec::<String>::new(), "{}", d.log());
}

/// `--log-format json`: every line the daemon logs is one JSON object with its time, level and
/// target (the module that wrote it), for a log collector; `--log-level debug` lets the
/// control plane's debug lines through.
#[test]
fn json_logs_are_one_object_per_line_with_level_and_target() {
    if !need_root("json_logs") {
        return;
    }
    let d = Daemon::start_with("jlog", &["--log-format", "json", "--log-level", "debug"]);
    let net = unique("jl");
    d.ok(&["network", "create", "--subnet", "10.231.7.0/24", &net]);
    d.ok(&["network", "rm", &net]);
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for l in &lines {
        assert!(l["timestamp"].is_string(), "no timestamp: {l}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&l["level"].as_str().unwrap_or("")),
            "no level: {l}"
        );
        assert!(
            l["target"].as_str().is_some_and(|t| !t.is_empty()),
            "no target: {l}"
        );
    }
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("daemon ready"))),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "--log-level debug logged no debug line: {log}"
    );
}

#[test]
fn sigterm_and_sigint_remove_the_sockets_and_exit_zero() {
    if !need_root("sigterm") {
        return;
    }
    for (sig, kill9) in [("SIGTERM", false), ("SIGINT", true)] {
        let plugins = std::env::temp_dir().join(unique("plugins"));
        std::fs::create_dir_all(&plugins).unwrap();
        let name = unique("vsw");
        let dir = plugins.to_string_lossy().to_string();
        let mut d = Daemon::start_with(
            "stop",
            &["--docker-plugin", &name, "--docker-plugin-dir", &dir],
        );
        let plugin = plugins.join(format!("{name}.sock"));
        wait_until("the Docker plugin socket", Duration::from_secs(10), || {
            plugin.exists()
        });
        assert!(d.socket.exists());
        let status = if kill9 {
            // SIGINT (Ctrl-C in a terminal) stops it the same way.
            let pid = d.pid().to_string();
            let _ = sh("kill", &["-INT", &pid]);
            wait_until(
                "the daemon to exit on SIGINT",
                Duration::from_secs(10),
                || {
                    !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .is_ok_and(|s| s.contains(") Z "))
                },
            );
            d.stop(false)
        } else {
            d.stop(false)
        };
        let status = status.expect("the daemon's exit status");
        assert!(status.success(), "{sig}: exit status {status}\n{}", d.log());
        assert!(!d.socket.exists(), "{sig}: control socket left behind");
        assert!(!plugin.exists(), "{sig}: Docker plugin socket left behind");
        assert!(
            d.log()
                .contains(&format!("vswitch daemon stopping on {sig}")),
            "{}",
            d.log()
        );
        let _ = std::fs::remove_dir_all(&plugins);
    }
}
