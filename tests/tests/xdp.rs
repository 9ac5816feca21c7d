//! The AF_XDP attach mode end to end: containers attached with `--attach xdp` (a veth whose
//! host end the switch reads through an AF_XDP socket, an XDP program redirecting to it) talk
//! to veth containers and the gateway (ping, iperf3 TCP both ways), the mode is chosen per
//! request, per network and per daemon, a leaving container takes its program with it, and a
//! daemon killed with SIGKILL leaves no program behind and attaches a new one on restart.
//!
//! Where `bpf(2)` is not permitted the tests skip (through [`switch::testing`], so a strict
//! run fails instead) with the daemon's own message.

use e2e::*;
use serde_json::Value;
use std::time::Duration;
use switch::port::bpf::program_exists;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs container `name` with `args`; `false` (the test skipped) when the daemon says bpf(2)
/// is not permitted here.
fn run_or_skip(d: &Daemon, name: &str, args: &[&str]) -> bool {
    d.track(name);
    let mut a = vec!["run", "--name", name];
    a.extend_from_slice(args);
    let o = d.cli(&a);
    if o.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if err.contains("is not permitted here") {
        return require(false, format!("bpf(2) is not permitted here: {err}"));
    }
    panic!(
        "vswitch {a:?} failed: {err}\n--- daemon log ---\n{}",
        d.log()
    );
}

/// `ip -d link show NAME` (empty when the link is gone).
fn link_detail(name: &str) -> String {
    String::from_utf8_lossy(&sh("ip", &["-d", "link", "show", name]).stdout).into_owned()
}

/// The id of the XDP program on `ifname` (`prog/xdp id N` in `ip -d link`), if any.
fn xdp_prog_id(ifname: &str) -> Option<u32> {
    let d = link_detail(ifname);
    let at = d.find("prog/xdp id ")? + "prog/xdp id ".len();
    d[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The `ports --json` entry of interface `name`.
fn port_entry(d: &Daemon, name: &str) -> Value {
    json(&d.ok(&["ports", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn xdp_container_pings_and_carries_tcp_with_a_veth_container() {
    if !need_root("xdp_ping_iperf") || !require_tools(&["iperf3", "ethtool"]) {
        return;
    }
    let d = Daemon::start("xdp");
    d.ok(&["network", "create", "--subnet", "10.244.1.0/24", "xnet"]);
    let (x, v) = (unique("x"), unique("v"));
    if !run_or_skip(&d, &x, &["-d", "--network", "xnet", "--attach", "xdp"]) {
        return;
    }
    d.run(&v, &["-d", "--network", "xnet"]);
    assert_eq!(d.container(&x)["endpoints"][0]["attach"], "xdp");
    assert_eq!(d.container(&v)["endpoints"][0]["attach"], "veth");
    let px = d.port_name(&x);
    assert_eq!(
        port_entry(&d, &px)["kind"],
        "veth/af_xdp",
        "ports lists the mode"
    );
    let ps = d.ok(&["ps"]);
    let line = ps.lines().find(|l| l.starts_with(&x)).expect("listed");
    assert!(line.contains(" xdp "), "ps shows the attach mode: {line}");
    let detail = link_detail(&px);
    assert!(
        detail.contains("xdp") && xdp_prog_id(&px).is_some(),
        "the host end carries an XDP program: {detail}"
    );
    // The container's end finishes its checksums and segments in software.
    let k = stdout(&d.exec(&x, &["ethtool", "-k", "eth0"]));
    for f in [
        "tx-checksumming: off",
        "scatter-gather: off",
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
    ] {
        assert!(k.contains(f), "{f} in the xdp container:\n{k}");
    }

    let (ipx, ipv) = (d.ip_of(&x), d.ip_of(&v));
    let gw = json(&d.ok(&["network", "inspect", "xnet"]))[0]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.ping(&x, &ipv), "xdp -> veth\n{}", d.log());
    assert!(d.ping(&v, &ipx), "veth -> xdp");
    assert!(d.ping(&x, &gw), "xdp -> gateway {gw}");

    // TCP both ways: into the xdp container the switch segments the veth side's GSO frames
    // and finishes their checksums; out of it the container did both itself.
    let to_xdp = iperf3(&d, &x, &v, &ipx, 2);
    let from_xdp = iperf3(&d, &v, &x, &ipv, 2);
    eprintln!(
        "iperf3 veth -> xdp {:.2} Gbit/s, xdp -> veth {:.2} Gbit/s",
        to_xdp / 1e9,
        from_xdp / 1e9
    );
    for (what, bps) in [("veth -> xdp", to_xdp), ("xdp -> veth", from_xdp)] {
        assert!(
            bps > 100e6,
            "{what}: {:.3} Gbit/s is not a sane TCP rate\n{}",
            bps / 1e9,
            d.log()
        );
    }
    let p = port_entry(&d, &px);
    assert!(
        p["rx_frames"].as_u64().unwrap_or(0) > 1000,
        "the xdp port carried the traffic: {p}"
    );
}

#[test]
fn xdp_leaving_container_takes_its_program_and_a_restart_attaches_a_new_one() {
    if !need_root("xdp_leave_restart") {
        return;
    }
    let mut d = Daemon::start("xdpr");
    d.ok(&["network", "create", "--subnet", "10.244.2.0/24", "xrnet"]);
    let (x1, x2, v) = (unique("x"), unique("x"), unique("v"));
    if !run_or_skip(&d, &x1, &["-d", "--network", "xrnet", "--attach", "xdp"]) {
        return;
    }
    d.run(&x2, &["-d", "--network", "xrnet", "--attach", "xdp"]);
    d.run(&v, &["-d", "--network", "xrnet"]);
    let (p1, p2) = (d.port_name(&x1), d.port_name(&x2));
    let id1 = xdp_prog_id(&p1).expect("x1's program");
    assert!(program_exists(id1).unwrap(), "program {id1} is loaded");
    assert!(d.ping(&x1, &d.ip_of(&x2)), "xdp -> xdp");

    // A container leaving: its link and its program are gone.
    d.ok(&["rm", "-f", &x1]);
    assert!(
        link_detail(&p1).is_empty(),
        "x1's host end is gone: {}",
        link_detail(&p1)
    );
    wait_until(
        "x1's XDP program to leave the kernel",
        Duration::from_secs(5),
        || !program_exists(id1).unwrap(),
    );

    // The daemon killed: the link stays (the veth is the container's), the program does not
    // (its BPF link was a descriptor of the dead process).
    let id2 = xdp_prog_id(&p2).expect("x2's program");
    d.stop(true);
    wait_until(
        "x2's program to be detached after SIGKILL",
        Duration::from_secs(5),
        || xdp_prog_id(&p2).is_none() && !program_exists(id2).unwrap(),
    );
    assert!(
        !link_detail(&p2).is_empty(),
        "x2's veth outlived the daemon"
    );
    d.restart(false);
    wait_until(
        "x2's port to be restored in xdp mode",
        Duration::from_secs(10),
        || port_entry(&d, &p2)["kind"] == "veth/af_xdp",
    );
    let id3 = xdp_prog_id(&p2).expect("a new program on x2's host end");
    assert_ne!(id3, id2, "a new program was loaded");
    assert_eq!(d.container(&x2)["endpoints"][0]["attach"], "xdp");
    let (ip2, ipv) = (d.ip_of(&x2), d.ip_of(&v));
    wait_until("x2 -> v after the restart", Duration::from_secs(10), || {
        d.ping(&x2, &ipv)
    });
    assert!(d.ping(&v, &ip2), "v -> x2 after the restart");
}

#[test]
fn xdp_mode_per_network_per_connect_and_per_daemon_and_refusals() {
    if !need_root("xdp_modes") {
        return;
    }
    let d = Daemon::start("xdpm");
    // Parse errors list the modes.
    let e = d.fails(&["run", "--name", "nope", "--attach", "vhost"]);
    assert!(e.contains("veth, tap or xdp"), "{e}");
    let e = d.fails(&["network", "create", "-o", "attach=fast", "badnet"]);
    assert!(e.contains("veth, tap or xdp"), "{e}");

    // Per network.
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.244.3.0/24",
        "-o",
        "attach=xdp",
        "xonet",
    ]);
    let a = unique("a");
    if !run_or_skip(&d, &a, &["-d", "--network", "xonet"]) {
        return;
    }
    assert_eq!(d.container(&a)["endpoints"][0]["attach"], "xdp");
    // A request overrides the network.
    let b = unique("b");
    d.run(&b, &["-d", "--network", "xonet", "--attach", "veth"]);
    assert_eq!(d.container(&b)["endpoints"][0]["attach"], "veth");
    assert!(d.ping(&a, &d.ip_of(&b)));

    // Per connect.
    d.ok(&["network", "create", "--subnet", "10.244.4.0/24", "xcnet"]);
    d.ok(&["network", "connect", "--attach", "xdp", "xcnet", &b]);
    let ep = d.container(&b)["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network"] == "xcnet")
        .cloned()
        .expect("b on xcnet");
    assert_eq!(ep["attach"], "xdp");
    let pb = ep["port_name"].as_str().unwrap().to_string();
    assert!(xdp_prog_id(&pb).is_some(), "{}", link_detail(&pb));
    // Disconnecting detaches it.
    d.ok(&["network", "disconnect", "xcnet", &b]);
    assert!(link_detail(&pb).is_empty(), "{}", link_detail(&pb));

    // An MTU native XDP on veth cannot take: refused, nothing left half attached.
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.244.5.0/24",
        "-o",
        "mtu=9000",
        "jumbo",
    ]);
    let j = unique("j");
    d.track(&j);
    let e = d.fails(&["run", "--name", &j, "--network", "jumbo", "--attach", "xdp"]);
    assert!(e.contains("MTU 9000") && e.contains("xdp"), "{e}");
    assert!(d.container(&j).is_null(), "no half-attached container");
    let links = stdout(&sh("ip", &["-o", "link", "show"]));
    let leftovers: Vec<&str> = links
        .lines()
        .filter(|l| l.contains("mtu 9000 xdp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Per daemon.
    let d2 = Daemon::start_with("xdpd", &["--attach", "xdp"]);
    let c = unique("c");
    d2.run(&c, &["-d"]);
    assert_eq!(d2.container(&c)["endpoints"][0]["attach"], "xdp");
    let pc = d2.port_name(&c);
    assert_eq!(port_entry(&d2, &pc)["kind"], "veth/af_xdp");
}

/// A worker that panics takes its ports with it; the new worker opens new AF_XDP sockets and
/// attaches new programs (the old BPF links closed with the old ports), and traffic flows.
#[test]
fn xdp_ports_come_back_after_a_worker_panic() {
    if !need_root("xdp_worker_panic") {
        return;
    }
    let d = Daemon::start_with("xdpp", &["--test-hooks"]);
    d.ok(&["network", "create", "--subnet", "10.244.6.0/24", "xpnet"]);
    let (x, v) = (unique("x"), unique("v"));
    if !run_or_skip(&d, &x, &["-d", "--network", "xpnet", "--attach", "xdp"]) {
        return;
    }
    d.run(&v, &["-d", "--network", "xpnet"]);
    let (ipx, ipv) = (d.ip_of(&x), d.ip_of(&v));
    assert!(d.ping(&x, &ipv));
    let px = d.port_name(&x);
    let before = xdp_prog_id(&px).expect("a program before the panic");
    let o = d.cli(&["stats", "--json"]);
    assert_eq!(json(&stdout(&o))["worker_restarts"], 0);
    // The test hook, over the control socket.
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    s.write_all(b"{\"op\":\"inject_panic\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    wait_until("a new worker", Duration::from_secs(10), || {
        json(&d.ok(&["stats", "--json"]))["worker_restarts"] == 1
    });
    let t0 = std::time::Instant::now();
    while !(port_entry(&d, &px)["kind"] == "veth/af_xdp"
        && xdp_prog_id(&px).is_some_and(|id| id != before))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out after 10 s waiting for x's port back in xdp mode with a new program \
             (ports: {}; {})\n--- daemon log ---\n{}",
            port_entry(&d, &px),
            link_detail(&px),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !program_exists(before).unwrap(),
        "the old worker's program was unloaded"
    );
    wait_until(
        "x -> v after the worker panic",
        Duration::from_secs(10),
        || d.ping(&x, &ipv),
    );
    assert!(
        d.ping(&v, &ipx),
        "v -> x after the worker panic\n{}",
        d.log()
    );
}

/// A daemon with network `net` (`subnet`) and two containers on it in xdp mode, `a` reaching
/// `b`, and a trafgen configuration in the daemon's directory sending 64-byte UDP frames from
/// `a` to `b`'s MAC: (daemon, a, b, configuration). `None` where xdp mode is not available.
fn xdp_pair_with_flood(
    tag: &str,
    subnet: &str,
    net: &str,
) -> Option<(Daemon, String, String, std::path::PathBuf)> {
    let d = Daemon::start(tag);
    d.ok(&["network", "create", "--subnet", subnet, net]);
    let (a, b) = (unique(&format!("{tag}a")), unique(&format!("{tag}b")));
    for c in [&a, &b] {
        if !run_or_skip(&d, c, &["-d", "--network", net, "--attach", "xdp"]) {
            return None;
        }
    }
    let ipb = d.ip_of(&b);
    assert!(d.ping(&a, &ipb), "no connectivity\n{}", d.log());
    let brief = stdout(&d.exec(&b, &["ip", "-br", "link", "show", "eth0"]));
    let mac = brief.split_whitespace().nth(2).expect("a MAC").to_string();
    let cfg = d.dir.join("udp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "{{ eth(da={mac}), ipv4(saddr={}, daddr={ipb}), udp(sp=9, dp=9), fill(0x00, 18) }}\n",
            d.ip_of(&a)
        ),
    )
    .unwrap();
    Some((d, a, b, cfg))
}

/// A bash script that sources bench/trafgen.sh (its work directory the daemon's) and defines
/// `V` (the CLI on the daemon's socket) and `rx` (frames received by `b`'s eth0), then `body`.
fn trafgen_script(d: &Daemon, b: &str, body: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    format!(
        r#"WORK={dir}; . {root}/bench/trafgen.sh
V() {{ {bin} --socket {sock} "$@"; }}
rx() {{ V exec {b} -- ip -s link show eth0 | awk '/RX:/{{getline; print $2}}'; }}
{body}"#,
        dir = d.dir.display(),
        root = root.display(),
        bin = vswitch_bin().display(),
        sock = d.socket.display(),
    )
}

/// Puts `net.core.wmem_default` back to the value it had when the guard was made, should the
/// helper under test have left it raised (a failed or interrupted run).
struct WmemDefault(String);

fn wmem_default() -> String {
    sh_ok("sysctl", &["-n", "net.core.wmem_default"])
        .trim()
        .to_string()
}

impl Drop for WmemDefault {
    fn drop(&mut self) {
        if wmem_default() != self.0 {
            sh(
                "sysctl",
                &["-qw", &format!("net.core.wmem_default={}", self.0)],
            );
        }
    }
}

/// The benchmarks' trafgen helper (`bench/trafgen.sh`, used by `bench/compare.sh`) against the
/// one kind of port that holds a sender's skbs, an xdp port. Without the send buffer the helper
/// raises, trafgen in a container aborts within 100 ms here ("Flushing TX_RING failed") and a
/// 3-second rate read 5-30 times too low; with it trafgen runs its whole time and the frames
/// are counted at the receiver. A trafgen that stops early fails the measurement (status 1 and
/// the reason) instead of being read as a slow switch, and the host's sysctl is back afterwards.
#[test]
fn bench_trafgen_helper_runs_the_whole_time_into_an_xdp_port() {
    if !need_root("xdp_bench_trafgen") || !require_tools(&["trafgen", "bash"]) {
        return;
    }
    let Some((d, a, b, cfg)) = xdp_pair_with_flood("xtg", "10.244.7.0/24", "xtnet") else {
        return;
    };
    let _guard = WmemDefault(wmem_default());
    // Both cores sending (trafgen's default), the case that aborted; then a trafgen that
    // cannot start (no such device) must fail the measurement.
    let cfg = cfg.display();
    let script = trafgen_script(
        &d,
        &b,
        &format!(
            "tg_kpps 2 rx V exec {a} -- timeout 2 trafgen --dev eth0 --conf {cfg} -q -b 0 || exit 3
if tg_kpps 2 rx V exec {a} -- timeout 2 trafgen --dev nosuchdev0 --conf {cfg} -q -b 0; then exit 4; fi
exit 0"
        ),
    );
    let o = sh("bash", &["-c", &script]);
    let (out, err) = (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(
        o.status.success(),
        "helper failed ({:?}):\n{out}\n{err}",
        o.status.code()
    );
    let kpps: u64 = out
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate: {out}\n{err}"));
    assert!(kpps > 0, "frames reached the receiver: {kpps} kpps");
    assert!(
        err.contains("trafgen stopped after") && err.contains("(exit "),
        "the early stop is reported: {err}"
    );
    assert_eq!(
        wmem_default(),
        _guard.0,
        "the helper put net.core.wmem_default back"
    );
}

/// The descriptors registered in each epoll instance of process `pid`, by the epoll's own
/// descriptor (`tfd:` lines of /proc/PID/fdinfo).
fn epoll_sets(pid: u32) -> std::collections::BTreeMap<String, Vec<u32>> {
    let mut sets = std::collections::BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).expect("fdinfo").flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut fds: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("tfd:"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        if !fds.is_empty() {
            fds.sort_unstable();
            sets.insert(e.file_name().to_string_lossy().into_owned(), fds);
        }
    }
    sets
}

/// While the worker is busy its AF_XDP ports are off its event loop and peeked each round (a
/// socket in an epoll set pays a callback per sent frame); it puts them back before it sleeps,
/// so a frame that comes later still wakes it. Watched from outside: during a 64-byte flood
/// through two xdp ports the worker's epoll set loses both sockets; afterwards it has them
/// again, pings are answered and the worker sleeps between them.
#[test]
fn xdp_ports_leave_the_event_loop_while_the_worker_is_busy_and_come_back() {
    if !need_root("xdp_quiet_ports") || !require_tools(&["trafgen", "bash"]) {
        return;
    }
    let Some((d, a, b, cfg)) = xdp_pair_with_flood("xq", "10.244.8.0/24", "xqnet") else {
        return;
    };
    let ipb = d.ip_of(&b);
    let idle = epoll_sets(d.pid());
    assert!(!idle.is_empty(), "no epoll instance in the daemon");
    let _guard = WmemDefault(wmem_default());
    let script = trafgen_script(
        &d,
        &b,
        &format!(
            "tg_kpps 3 rx V exec {a} -- timeout 3 trafgen --dev eth0 --conf {} -q -b 0 -P 1",
            cfg.display()
        ),
    );
    let flood = std::thread::spawn(move || sh("bash", &["-c", &script]));
    // The most descriptors any epoll instance lacked against its idle set during the flood.
    let mut most_gone = 0;
    while !flood.is_finished() {
        for (ep, now) in epoll_sets(d.pid()) {
            if let Some(before) = idle.get(&ep) {
                let gone = before.iter().filter(|fd| !now.contains(fd)).count();
                most_gone = most_gone.max(gone);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = flood.join().expect("flood thread");
    assert!(
        o.status.success(),
        "the flood failed: {}\n{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        most_gone >= 2,
        "during the flood the worker's epoll set lost {most_gone} descriptors, not both xdp \
         sockets (idle sets: {idle:?})"
    );
    wait_until(
        "the xdp sockets back on the worker's event loop",
        Duration::from_secs(5),
        || epoll_sets(d.pid()) == idle,
    );
    let before = d.worker_sleeps().expect("the worker thread's status");
    assert!(d.ping(&a, &ipb), "no ping after the flood\n{}", d.log());
    let slept = d.worker_sleeps().expect("the worker thread's status") - before;
    assert!(
        slept > 0,
        "the worker never slept during the pings after the flood"
    );
}
