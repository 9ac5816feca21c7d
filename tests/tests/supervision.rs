//! Supervision of the switch worker, end to end: a panic injected into the worker through the
//! daemon's test hook is logged and counted, and forwarding comes back with no command from the
//! user — bridge containers (veth and TAP), the gateway and its DNS, a published port, and a
//! macvlan container on a LAN of the test's own (its uplink and static MAC entry), and an
//! overlay network between two "hosts" (its tunnel port and peer VTEPs).

use e2e::lan::Lan;
use e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// What the injected panic says (`switch::worker::INJECTED_PANIC`).
const INJECTED: &str = "panic injected by a test hook";
/// The target of the supervisor's log lines (the daemon logs through `tracing`: time, level,
/// target, message).
const SUPERVISOR: &str = "switch::control::daemon::supervise";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Sends one raw JSON request line to the daemon's socket and returns its reply.
fn request(d: &Daemon, line: &str) -> Value {
    let mut s = UnixStream::connect(&d.socket).expect("connect to the daemon's socket");
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    json(&reply)
}

fn stats(d: &Daemon) -> Value {
    json(&d.ok(&["stats", "--json"]))
}

/// Waits until `f` holds, `secs` at most; returns how long it took.
fn wait_for(what: &str, secs: u64, d: &Daemon, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}\n--- daemon log ---\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ifindex of `eth0` in a container.
fn eth0_index(d: &Daemon, c: &str) -> String {
    let o = out(&d.exec(c, &["ip", "-o", "link", "show", "eth0"]));
    o.split(':').next().unwrap_or("").trim().to_string()
}

/// Everything the test checks forwards: container to container over veth and TAP, the
/// gateway, DNS names, a published port from the host, the LAN to a macvlan container, and a
/// TCP stream.
struct Setup<'a> {
    d: &'a Daemon,
    lan: &'a Lan,
    web: String,
    cli: String,
    mv: String,
    web_ip: String,
    mv_ip: String,
    host_port: String,
}

impl Setup<'_> {
    fn check_forwarding(&self, when: &str) {
        let d = self.d;
        assert!(
            d.ping(&self.cli, &self.web_ip),
            "{when}: cli (TAP) -> web (veth)\n{}",
            d.log()
        );
        assert!(d.ping(&self.cli, "10.247.1.1"), "{when}: cli -> gateway");
        let r = d.exec(&self.cli, &["getent", "hosts", &self.web]);
        assert!(
            out(&r).contains(&self.web_ip),
            "{when}: the gateway's DNS answers for {}: {}",
            self.web,
            out(&r)
        );
        let url = format!("http://127.0.0.1:{}/", self.host_port);
        let r = sh(
            "curl",
            &[
                "-s",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        );
        assert_eq!(out(&r).trim(), "200", "{when}: published port {url}");
        let r = self
            .lan
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &self.mv_ip]);
        assert!(
            r.status.success(),
            "{when}: LAN -> macvlan container {}: {}",
            self.mv_ip,
            out(&r)
        );
        // The macvlan container's MAC is a static entry on its port.
        let fdb = json(&d.ok(&["fdb", "--json", "supmv"]));
        let ep = d.container(&self.mv)["endpoints"][0].clone();
        assert!(
            fdb.as_array().unwrap().iter().any(|e| e["mac"] == ep["mac"]
                && e["port"] == ep["port_name"]
                && e["is_static"] == true),
            "{when}: static MAC of {}: {fdb}",
            self.mv
        );
        let bps = iperf3(d, &self.web, &self.cli, &self.web_ip, 1);
        assert!(bps > 1e6, "{when}: iperf3 moved only {bps} bit/s");
    }
}

#[test]
fn a_worker_panic_is_logged_counted_and_forwarding_resumes() {
    if !need_root("supervision") {
        return;
    }
    let lan = Lan::new("10.97.50.1/24");
    let d = Daemon::start_with("sup", &["--test-hooks"]);
    d.ok(&["network", "create", "--subnet", "10.247.1.0/24", "supnet"]);
    d.ok(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "-o",
        &format!("parent={}", lan.parent),
        "--subnet",
        "10.97.50.0/24",
        "--gateway",
        "10.97.50.1",
        "--ip-range",
        "10.97.50.64/26",
        "supmv",
    ]);
    let (web, cli, mv) = (unique("w"), unique("c"), unique("m"));
    d.run(
        &web,
        &[
            "-d",
            "--network",
            "supnet",
            "-p",
            "0:8000",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
    d.run(&cli, &["--network", "supnet", "--attach", "tap"]);
    d.run(&mv, &["--network", "supmv"]);
    let ports = d.container(&web)["ports"][0].as_str().unwrap().to_string();
    let host_port = ports.split(':').nth(1).unwrap().split('-').next().unwrap();
    let s = Setup {
        d: &d,
        lan: &lan,
        web_ip: d.ip_of(&web),
        mv_ip: d.ip_of(&mv),
        host_port: host_port.to_string(),
        web: web.clone(),
        cli: cli.clone(),
        mv: mv.clone(),
    };
    let url = format!("http://{}:8000/", s.web_ip);
    wait_for("the web container's HTTP server", 20, &d, || {
        sh("curl", &["-s", "-m", "2", "-o", "/dev/null", &url])
            .status
            .success()
    });
    s.check_forwarding("before the panic");
    let st = stats(&d);
    assert_eq!(st["worker_state"], "running", "{st}");
    assert_eq!(st["worker_restarts"], 0, "{st}");
    assert_eq!(st["worker_last_panic"], Value::Null, "{st}");
    let links: Vec<String> = [&web, &cli, &mv]
        .iter()
        .map(|c| eth0_index(&d, c))
        .collect();
    let n_ports = json(&d.ok(&["ports", "--json"])).as_array().unwrap().len();
    // The worker runs ahead of the host's busy threads (`--worker-nice`, -10 by default) ...
    assert_eq!(d.worker_nice(), Some(-10), "the worker's nice value");

    // The panic: the daemon names it in its log at once, then starts a new worker.
    let r = request(&d, r#"{"op":"inject_panic"}"#);
    assert_eq!(r["status"], "ok", "{r}");
    let noticed = wait_for("the daemon to log the worker's panic", 1, &d, || {
        d.log().contains(&format!(
            "WARN {SUPERVISOR}: the switch worker panicked: {INJECTED}"
        ))
    });
    let restarted = wait_for("a new worker", 10, &d, || stats(&d)["worker_restarts"] == 1);
    // Forwarding resumes without any command from the user.
    let forwarding = wait_for("ping from cli to web after the panic", 10, &d, || {
        d.exec(&cli, &["ping", "-c", "1", "-W", "1", &s.web_ip])
            .status
            .success()
    });
    eprintln!(
        "worker panic: logged after {noticed:?}, new worker after {restarted:?}, ping through it after {forwarding:?}"
    );
    // ... and so does the worker that replaced it.
    assert_eq!(d.worker_nice(), Some(-10), "the new worker's nice value");

    let st = stats(&d);
    assert_eq!(st["worker_state"], "running", "{st}");
    assert_eq!(st["worker_panics"], 1, "{st}");
    assert_eq!(st["worker_restarts"], 1, "{st}");
    let msg = st["worker_last_panic"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(INJECTED) && msg.contains("worker.rs:"),
        "the last panic's message and location: {st}"
    );
    assert!(st["worker_last_panic_at"].as_u64().is_some(), "{st}");
    let text = d.ok(&["stats"]);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["worker_restarts", "1"]),
        "{text}"
    );
    assert!(text.contains(INJECTED), "{text}");
    let log = d.log();
    assert!(
        log.contains("thread 'vswitch-worker'") && log.contains(INJECTED),
        "the daemon log names the panic:\n{log}"
    );
    assert!(
        log.contains("a new switch worker is running (restart 1)"),
        "{log}"
    );

    // Every port is back; the containers kept their very links (and so their addresses).
    s.check_forwarding("after the panic");
    let again: Vec<String> = [&web, &cli, &mv]
        .iter()
        .map(|c| eth0_index(&d, c))
        .collect();
    assert_eq!(
        links, again,
        "containers keep their eth0 across the restart"
    );
    let ports = json(&d.ok(&["ports", "--json"]));
    assert_eq!(ports.as_array().unwrap().len(), n_ports, "{ports}");
}

#[test]
fn the_panic_hook_is_refused_without_test_hooks() {
    if !need_root("supervision_refused") {
        return;
    }
    // Also: the worker takes the nice value it is given.
    let d = Daemon::start_with("nohook", &["--worker-nice", "3"]);
    assert_eq!(d.worker_nice(), Some(3), "the worker's nice value");
    let r = request(&d, r#"{"op":"inject_panic"}"#);
    assert_eq!(r["status"], "error", "{r}");
    let m = r["message"].as_str().unwrap_or_default();
    assert!(m.contains("--test-hooks"), "{m}");
    let st = stats(&d);
    assert_eq!(st["worker_state"], "running", "{st}");
    assert_eq!(st["worker_panics"], 0, "{st}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn an_overlay_tunnel_comes_back_after_a_worker_panic() {
    if !need_root("supervision_overlay") {
        return;
    }
    let ul = Underlay::new("sov", 2);
    let ds = [
        Daemon::start_in_netns("sov1", &ul.hosts[0].name, &["--test-hooks"]),
        Daemon::start_in_netns("sov2", &ul.hosts[1].name, &[]),
    ];
    let (d1, d2) = (&ds[0], &ds[1]);
    ul.overlay(&ds, 248, 4248);
    let (a, b) = (unique("oa"), unique("ob"));
    d1.run(&a, &["--network", "ov"]);
    d2.run(&b, &["--network", "ov"]);
    let (ip_a, ip_b) = (d1.ip_of(&a), d2.ip_of(&b));
    assert!(d1.ping(&a, &ip_b), "a -> b over the overlay\n{}", d1.log());
    let tunnels_before = stats(d1)["tunnels"].as_array().map(Vec::len);
    let peers = |d: &Daemon| json(&d.ok(&["network", "inspect", "ov"]))[0]["peers"].clone();
    let peers_before = peers(d1);
    assert!(peers_before.get("192.168.77.2").is_some(), "{peers_before}");

    let r = request(d1, r#"{"op":"inject_panic"}"#);
    assert_eq!(r["status"], "ok", "{r}");
    wait_for("a new worker on host 1", 10, d1, || {
        stats(d1)["worker_restarts"] == 1
    });
    // The tunnel port and the peer are back: both ways across the overlay, and TCP.
    let t = wait_for("ping from b to a across the overlay", 10, d1, || {
        d2.exec(&b, &["ping", "-c", "1", "-W", "1", &ip_a])
            .status
            .success()
    });
    eprintln!("overlay: ping through the new worker after {t:?}");
    assert!(d1.ping(&a, &ip_b), "a -> b after the panic\n{}", d1.log());
    let log = d2.dir.join("iperf-sov.log");
    let srv = Iperf3Server::start(d1.container(&a)["netns"].as_str().unwrap(), &log);
    let o = d2.exec(&b, &["iperf3", "-c", &ip_a, "-t", "1", "-J"]);
    drop(srv);
    assert!(
        o.status.success(),
        "iperf3 b -> a after the panic: {}",
        out(&o)
    );
    let st = stats(d1);
    assert_eq!(
        st["tunnels"].as_array().map(Vec::len),
        tunnels_before,
        "{st}"
    );
    let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&peers(d1)), keys(&peers_before), "the same peers");
    assert_eq!(stats(d2)["worker_panics"], 0, "host 2 saw nothing of it");
}

/// A panic loop: the first five restarts of a minute are immediate, the sixth panic is logged
/// as an error and its restart waits (the daemon keeps answering, the worker is reported down),
/// then the worker comes back and forwards again.
#[test]
fn a_panic_loop_is_slowed_down_and_logged() {
    if !need_root("supervision_loop") {
        return;
    }
    let d = Daemon::start_with("sloop", &["--test-hooks"]);
    d.ok(&["network", "create", "--subnet", "10.247.2.0/24", "loopnet"]);
    let (a, b) = (unique("la"), unique("lb"));
    d.run(&a, &["--network", "loopnet"]);
    d.run(&b, &["--network", "loopnet"]);
    let ip_b = d.ip_of(&b);
    for n in 1..=5u64 {
        let r = request(&d, r#"{"op":"inject_panic"}"#);
        assert_eq!(r["status"], "ok", "{r}");
        wait_for(&format!("restart {n}"), 10, &d, || {
            let st = stats(&d);
            st["worker_restarts"] == n && st["worker_state"] == "running"
        });
    }
    assert!(!d.log().contains("ERROR"), "{}", d.log());
    let t0 = Instant::now();
    let r = request(&d, r#"{"op":"inject_panic"}"#);
    assert_eq!(r["status"], "ok", "{r}");
    wait_for("the panic loop to be logged as an error", 5, &d, || {
        d.log().contains(&format!(
            "ERROR {SUPERVISOR}: the switch worker panicked 6 times within 60 s"
        ))
    });
    let st = stats(&d);
    assert_eq!(st["worker_panics"], 6, "{st}");
    assert_eq!(st["worker_restarts"], 5, "the sixth restart waits: {st}");
    assert_eq!(st["worker_state"], "down", "{st}");
    assert!(st["worker_error"].as_str().is_some(), "{st}");
    assert!(!d.ping(&a, &ip_b), "no forwarding while the worker is down");
    // The slow restart comes 10 s after the fifth one, with no command.
    wait_for("the slow restart", 20, &d, || {
        stats(&d)["worker_restarts"] == 6
    });
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "the sixth restart was not held back ({waited:?})"
    );
    wait_for("ping after the slow restart", 10, &d, || {
        d.exec(&a, &["ping", "-c", "1", "-W", "1", &ip_b])
            .status
            .success()
    });
    eprintln!("panic loop: the sixth restart came {waited:?} after the sixth panic");
}
