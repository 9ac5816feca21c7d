//! Container and network life cycle, end to end: TAP attachment, `network connect` and
//! `disconnect`, detached commands and `rm`, `--rm`, internal networks, MTU, address ranges,
//! `network rm`, counters and the daemon's memory. Real namespaces and real clients; every
//! name is unique to the test and everything is removed in `Drop`.

use e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// True when the container's `ifname` is a tun/tap device.
fn is_tap(d: &Daemon, c: &str, ifname: &str) -> bool {
    let o = d.exec(c, &["ethtool", "-i", ifname]);
    let by_ethtool = stdout(&o).lines().any(|l| l.trim() == "driver: tun");
    let flags = format!("/sys/class/net/{ifname}/tun_flags");
    let by_sysfs = d.exec(c, &["test", "-e", &flags]).status.success();
    by_ethtool || by_sysfs
}

/// The network's JSON from `network inspect`.
fn inspect(d: &Daemon, net: &str) -> Value {
    json(&d.ok(&["network", "inspect", net]))[0].clone()
}

/// The endpoint of container `c` on `network`.
fn endpoint(d: &Daemon, c: &str, network: &str) -> Value {
    d.container(c)["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["network"] == network))
        .cloned()
        .unwrap_or(Value::Null)
}

fn network_names(d: &Daemon) -> Vec<String> {
    json(&d.ok(&["network", "ls", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tap_attach_ping_iperf_and_restart() {
    if !need_root("tap_attach") {
        return;
    }
    let mut d = Daemon::start("tap");
    d.ok(&["network", "create", "--subnet", "10.241.1.0/24", "tapnet"]);
    let (t1, t2) = (unique("t"), unique("t"));
    d.run(&t1, &["--network", "tapnet", "--attach", "tap"]);
    d.run(&t2, &["--network", "tapnet", "--attach", "tap"]);
    for c in [&t1, &t2] {
        assert!(is_tap(&d, c, "eth0"), "{c}'s eth0 is a tun/tap device");
        assert_eq!(d.container(c)["endpoints"][0]["attach"], "tap");
    }
    // The switch reports the port as a TAP, not as an AF_PACKET port.
    let ports = json(&d.ok(&["ports", "--json"]));
    for p in ports.as_array().unwrap() {
        let kind = p["kind"].as_str().unwrap();
        assert!(kind.starts_with("tap"), "TAP port listed as {kind}: {p}");
    }
    let (ip1, ip2) = (d.ip_of(&t1), d.ip_of(&t2));
    let gw = inspect(&d, "tapnet")["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.ping(&t1, &ip2), "t1 -> t2 over TAP\n{}", d.log());
    assert!(d.ping(&t2, &ip1), "t2 -> t1 over TAP");
    assert!(d.ping(&t1, &gw), "t1 -> gateway {gw}");
    let bps = iperf3(&d, &t2, &t1, &ip2, 2);
    eprintln!("iperf3 over TAP: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 1e6, "iperf3 over TAP moved only {bps} bit/s");

    // The TAP is persistent: the container keeps the very same eth0 while the switch is away
    // (same link, addresses and routes), and the restarted daemon attaches to it again.
    let index = |d: &Daemon, c: &str| {
        let o = stdout(&d.exec(c, &["ip", "-o", "link", "show", "eth0"]));
        o.split(':').next().unwrap_or("").trim().to_string()
    };
    let eth0 = index(&d, &t1);
    assert!(!eth0.is_empty(), "t1 has an eth0");
    for kill9 in [false, true] {
        d.restart(kill9);
        assert_eq!(d.ip_of(&t1), ip1, "lease kept (kill9={kill9})");
        assert!(is_tap(&d, &t1, "eth0"), "eth0 is a TAP (kill9={kill9})");
        assert_eq!(
            index(&d, &t1),
            eth0,
            "the same eth0, not a new one (kill9={kill9})\n{}",
            d.log()
        );
        let route = stdout(&d.exec(&t1, &["ip", "route", "show", "default"]));
        assert!(route.contains(&gw), "default route restored: {route:?}");
        assert!(
            d.ping(&t1, &ip2),
            "TAP traffic after restart (kill9={kill9})\n{}",
            d.log()
        );
        assert!(d.ping(&t2, &gw), "gateway after restart (kill9={kill9})");
    }
    let ports = json(&d.ok(&["ports", "--json"]));
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "eth0"),
        "a re-attached TAP is listed under its port name: {ports}"
    );
    // Persistent means the switch deletes it: a disconnected container has no eth0 left.
    d.ok(&["network", "disconnect", "tapnet", &t2]);
    let o = d.exec(&t2, &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        !o.status.success(),
        "eth0 gone after disconnect: {}",
        stdout(&o)
    );
}

#[test]
fn daemon_attach_tap_is_the_default() {
    if !need_root("attach_default") {
        return;
    }
    let d = Daemon::start_with("tapdef", &["--attach", "tap"]);
    let (c, v) = (unique("td"), unique("tv"));
    d.run(&c, &[]);
    assert_eq!(d.container(&c)["endpoints"][0]["attach"], "tap");
    assert!(is_tap(&d, &c, "eth0"));
    // A request can still ask for a veth.
    d.run(&v, &["--attach", "veth"]);
    assert_eq!(d.container(&v)["endpoints"][0]["attach"], "veth");
    assert!(!is_tap(&d, &v, "eth0"));
    assert!(
        d.ping(&v, &d.ip_of(&c)),
        "veth and TAP containers share the network"
    );
}

#[test]
fn network_connect_and_disconnect() {
    if !need_root("connect") {
        return;
    }
    let d = Daemon::start("conn");
    d.ok(&["network", "create", "--subnet", "10.242.1.0/24", "cna"]);
    d.ok(&["network", "create", "--subnet", "10.242.2.0/24", "cnb"]);
    d.ok(&["network", "create", "--subnet", "10.242.3.0/24", "cnc"]);
    let (a, b) = (unique("ca"), unique("cb"));
    d.run(&a, &["--network", "cna"]);
    d.run(&b, &["--network", "cnb"]);
    let bip = d.ip_of(&b);
    assert!(!d.ping(&a, &bip), "not connected yet");

    d.ok(&["network", "connect", "--ip", "10.242.2.77", "cnb", &a]);
    let ep = endpoint(&d, &a, "cnb");
    assert_eq!(ep["ifname"], "eth1", "{ep}");
    assert_eq!(ep["ip"], "10.242.2.77");
    let addr = stdout(&d.exec(&a, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]));
    assert!(
        addr.contains("10.242.2.77/24"),
        "eth1 has B's address: {addr}"
    );
    // The default route stays on the first network.
    let route = stdout(&d.exec(&a, &["ip", "route", "show", "default"]));
    assert!(
        route.contains("10.242.1.1") && route.lines().count() == 1,
        "{route}"
    );
    assert!(d.ping(&a, &bip), "a reaches b through eth1\n{}", d.log());
    assert!(d.ping(&b, "10.242.2.77"), "b reaches a");
    assert!(inspect(&d, "cnb")["containers"].get(&a).is_some());
    let e = d.fails(&["network", "connect", "cnb", &a]);
    assert!(e.contains("already connected"), "{e}");

    d.ok(&["network", "disconnect", "cnb", &a]);
    assert!(
        !d.exec(&a, &["ip", "link", "show", "eth1"]).status.success(),
        "eth1 gone"
    );
    assert!(!d.ping(&a, &bip), "a still reaches b after disconnect");
    assert_eq!(endpoint(&d, &a, "cnb"), Value::Null);
    assert!(inspect(&d, "cnb")["containers"].get(&a).is_none());
    let e = d.fails(&["network", "disconnect", "cnb", &a]);
    assert!(e.contains("not connected"), "{e}");
    // The address is free again.
    let c = unique("cc");
    d.run(&c, &["--network", "cnb", "--ip", "10.242.2.77"]);
    assert!(d.ping(&b, "10.242.2.77"));

    // Interface names are reused without colliding: connect B again, drop A (eth0), add C.
    d.ok(&["network", "connect", "cnb", &a]);
    assert_eq!(endpoint(&d, &a, "cnb")["ifname"], "eth1");
    d.ok(&["network", "disconnect", "cna", &a]);
    // The default route moves to the remaining network.
    let route = stdout(&d.exec(&a, &["ip", "route", "show", "default"]));
    assert!(route.contains("via 10.242.2.1 dev eth1"), "{route}");
    d.ok(&["network", "connect", "cnc", &a]);
    let ep_c = endpoint(&d, &a, "cnc");
    assert_eq!(ep_c["ifname"], "eth0", "the free name is reused: {ep_c}");
    let links = stdout(&d.exec(&a, &["ip", "-o", "-4", "addr"]));
    assert!(links.contains(ep_c["ip"].as_str().unwrap()), "{links}");
    assert!(d.ping(&a, &bip), "b still reachable over eth1");
}

#[test]
fn connect_tap_endpoint_to_second_network() {
    if !need_root("connect_tap") {
        return;
    }
    // `network connect` attaches with the daemon's default mode: make that TAP.
    let mut d = Daemon::start_with("ctap", &["--attach", "tap"]);
    d.ok(&["network", "create", "--subnet", "10.242.11.0/24", "cta"]);
    d.ok(&["network", "create", "--subnet", "10.242.12.0/24", "ctb"]);
    let (a, b) = (unique("ta"), unique("tb"));
    d.run(&a, &["--network", "cta", "--attach", "tap"]);
    d.run(&b, &["--network", "ctb", "--attach", "tap"]);
    d.ok(&["network", "connect", "ctb", &a]);
    assert!(is_tap(&d, &a, "eth1"));
    let bip = d.ip_of(&b);
    assert!(
        d.ping(&a, &bip),
        "a reaches b over its second TAP\n{}",
        d.log()
    );
    // Both TAPs come back after a restart, the default route on the first network.
    d.restart(true);
    assert!(is_tap(&d, &a, "eth1"));
    assert!(d.ping(&a, &bip), "second TAP after restart\n{}", d.log());
    let route = stdout(&d.exec(&a, &["ip", "route", "show", "default"]));
    assert!(route.contains("10.242.11.1"), "{route}");
}

#[test]
fn detached_command_rm_and_foreground_rm() {
    if !need_root("detached") {
        return;
    }
    let d = Daemon::start("det");
    let x = unique("x");
    d.run(&x, &["-d", "--", "sleep", "1000"]);
    let info = d.container(&x);
    assert_eq!(info["status"], "running", "{info}");
    let pid = info["pid"].as_u64().expect("running container has a pid") as u32;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // The process runs inside the container's namespace.
    let ns_of_pid = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ns_of_self = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        ns_of_pid, ns_of_self,
        "sleep runs in the container's namespace"
    );
    let ps = d.ok(&["ps"]);
    let line = ps.lines().find(|l| l.starts_with(&x)).expect("listed");
    assert!(
        line.contains("running") && line.contains(&pid.to_string()),
        "{line}"
    );

    let e = d.fails(&["rm", &x]);
    assert!(
        e.contains("-f"),
        "rm of a running container mentions -f: {e}"
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "refused rm left it running"
    );
    d.ok(&["rm", "-f", &x]);
    // The daemon waited for its child: no zombie, no process.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    assert!(
        !Path::new("/run/netns").join(&x).exists(),
        "namespace removed"
    );
    assert_eq!(d.container(&x), Value::Null);

    // Foreground with --rm: the exit code comes through and the container goes.
    let y = unique("y");
    d.track(&y);
    let o = d.cli(&["run", "--rm", "--name", &y, "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(d.container(&y), Value::Null, "--rm removed the container");
    assert!(!Path::new("/run/netns").join(&y).exists());
    let z = unique("z");
    d.track(&z);
    let o = d.cli(&["run", "--rm", "--name", &z, "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(d.container(&z), Value::Null);
    // The command sees the container's network.
    let w = unique("w");
    d.track(&w);
    let o = d.cli(&[
        "run", "--rm", "--name", &w, "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert!(
        o.status.success() && stdout(&o).contains("inet 172."),
        "{}",
        stdout(&o)
    );
    let e = d.fails(&["run", "--rm", "-d", "--name", &unique("v"), "--", "true"]);
    assert!(e.contains("--rm"), "{e}");
    assert!(ps_names(&d).is_empty(), "nothing left: {:?}", ps_names(&d));
}

fn ps_names(d: &Daemon) -> Vec<String> {
    json(&d.ok(&["ps", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn internal_network_has_no_default_route() {
    if !need_root("internal") {
        return;
    }
    let d = Daemon::start("int");
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.243.0.0/24",
        "inner",
    ]);
    assert_eq!(inspect(&d, "inner")["internal"], true);
    let (a, b) = (unique("ia"), unique("ib"));
    d.run(&a, &["--network", "inner"]);
    d.run(&b, &["--network", "inner", "--attach", "tap"]);
    for c in [&a, &b] {
        let r = d.exec(c, &["ip", "route", "show", "default"]);
        assert!(r.status.success());
        assert_eq!(stdout(&r).trim(), "", "{c} has a default route");
    }
    assert!(
        d.ping(&a, &d.ip_of(&b)),
        "internal containers reach each other"
    );
    assert!(d.ping(&b, &d.ip_of(&a)));
}

#[test]
fn mtu_option() {
    if !need_root("mtu") {
        return;
    }
    let d = Daemon::start("mtu");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.244.0.0/24",
        "-o",
        "mtu=1400",
        "small",
    ]);
    assert_eq!(inspect(&d, "small")["mtu"], 1400);
    let (a, b) = (unique("ma"), unique("mb"));
    d.run(&a, &["--network", "small"]);
    d.run(&b, &["--network", "small", "--attach", "tap"]);
    for c in [&a, &b] {
        let l = stdout(&d.exec(c, &["ip", "-o", "link", "show", "eth0"]));
        assert!(l.contains("mtu 1400 "), "{c}: {l}");
    }
    // A full-size frame at 1400 crosses the switch; one byte more does not fit.
    let bip = d.ip_of(&b);
    let ok = d.exec(
        &a,
        &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", &bip],
    );
    assert!(ok.status.success(), "1400-byte packet: {}", stdout(&ok));
    let big = d.exec(
        &a,
        &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1373", &bip],
    );
    assert!(!big.status.success());
    for bad in ["mtu=abc", "mtu=20", "mtu=70000", "mtu"] {
        let e = d.fails(&[
            "network",
            "create",
            "--subnet",
            "10.244.1.0/24",
            "-o",
            bad,
            "bad",
        ]);
        assert!(e.contains("mtu"), "{bad}: {e}");
        assert!(e.lines().count() == 1, "one line: {e}");
    }
    assert!(
        !network_names(&d).contains(&"bad".to_string()),
        "failed create left a network"
    );
    // The subnet of the refused networks is still free.
    d.ok(&["network", "create", "--subnet", "10.244.1.0/24", "good"]);
}

#[test]
fn ip_range_and_aux_addresses() {
    if !need_root("ip_range") {
        return;
    }
    let d = Daemon::start("rng");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.245.0.0/24",
        "--gateway",
        "10.245.0.254",
        "--ip-range",
        "10.245.0.16/29",
        "--aux-address",
        "printer=10.245.0.18",
        "--aux-address",
        "outside=10.245.0.100",
        "rng",
    ]);
    let mut names = Vec::new();
    let mut ips = Vec::new();
    // 8 addresses in the range, one reserved: 7 containers fit.
    for _ in 0..7 {
        let c = unique("r");
        d.run(&c, &["--network", "rng"]);
        let ip: std::net::Ipv4Addr = d.ip_of(&c).parse().unwrap();
        let o = ip.octets();
        assert!(
            o[..3] == [10, 245, 0] && (16..24).contains(&o[3]),
            "{ip} outside the range"
        );
        assert_ne!(ip.to_string(), "10.245.0.18", "aux address handed out");
        assert!(!ips.contains(&ip), "{ip} handed out twice");
        ips.push(ip);
        names.push(c);
    }
    let full = unique("r");
    let e = d.fails(&["run", "--name", &full, "--network", "rng"]);
    assert!(e.contains("full"), "{e}");
    assert!(
        !Path::new("/run/netns").join(&full).exists(),
        "failed run left its namespace"
    );
    assert_eq!(d.container(&full), Value::Null);
    // The aux address cannot be taken as a static address either.
    let e = d.fails(&[
        "run",
        "--name",
        &unique("r"),
        "--network",
        "rng",
        "--ip",
        "10.245.0.18",
    ]);
    assert!(e.contains("10.245.0.18"), "{e}");
    // A static address outside the range but inside the subnet is allowed (Docker's rule).
    let s = unique("s");
    d.run(&s, &["--network", "rng", "--ip", "10.245.0.50"]);
    assert!(d.ping(&s, &ips[0].to_string()));
    assert!(
        d.ping(&names[0], "10.245.0.254"),
        "the given gateway answers"
    );

    let n = inspect(&d, "rng");
    assert_eq!(n["subnet"], "10.245.0.0/24");
    assert_eq!(n["gateway"], "10.245.0.254");
    assert_eq!(n["ip_range"], "10.245.0.16/29");
    assert_eq!(n["aux_addresses"]["printer"], "10.245.0.18");
    assert_eq!(n["aux_addresses"]["outside"], "10.245.0.100");
    let members = n["containers"].as_object().unwrap();
    assert_eq!(members.len(), 8, "{n}");
    for (c, ip) in names.iter().zip(&ips) {
        assert_eq!(members[c]["ip"], ip.to_string());
    }
    assert_eq!(members[&s]["ip"], "10.245.0.50");
    // Removing one frees exactly its address for the next.
    d.ok(&["rm", &names[3]]);
    let again = unique("r");
    d.run(&again, &["--network", "rng"]);
    assert_eq!(d.ip_of(&again), ips[3].to_string());
}

#[test]
fn network_rm_refuses_while_used_and_stays_gone() {
    if !need_root("network_rm") {
        return;
    }
    let mut d = Daemon::start("nrm");
    d.ok(&["network", "create", "--subnet", "10.246.0.0/24", "doomed"]);
    let (a, b) = (unique("na"), unique("nb"));
    d.run(&a, &["--network", "doomed"]);
    d.run(&b, &[]);
    d.ok(&["network", "connect", "doomed", &b]);
    let e = d.fails(&["network", "rm", "doomed"]);
    assert!(e.contains(&a) && e.contains(&b), "names the users: {e}");
    assert!(network_names(&d).contains(&"doomed".to_string()));
    d.ok(&["rm", &a]);
    d.ok(&["network", "disconnect", "doomed", &b]);
    d.ok(&["network", "rm", "doomed"]);
    assert!(!network_names(&d).contains(&"doomed".to_string()));
    let e = d.fails(&["network", "inspect", "doomed"]);
    assert!(e.contains("not found"), "{e}");
    for kill9 in [false, true] {
        d.restart(kill9);
        assert!(
            !network_names(&d).contains(&"doomed".to_string()),
            "came back (kill9={kill9})"
        );
        let gw = inspect(&d, "bridge")["gateway"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            d.ping(&b, &gw),
            "the bridge network still works (kill9={kill9})"
        );
    }
    // Its subnet and name are free again.
    d.ok(&["network", "create", "--subnet", "10.246.0.0/24", "doomed"]);
    let c = unique("nc");
    d.run(&c, &["--network", "doomed"]);
    assert!(d.ip_of(&c).starts_with("10.246.0."));
}

fn counter(v: &Value, k: &str) -> u64 {
    v["counters"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {k}: {v}"))
}

fn port_rx_tx(d: &Daemon, port: &str) -> (u64, u64) {
    let ports = json(&d.ok(&["ports", "--json"]));
    let p = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .cloned()
        .unwrap_or_else(|| panic!("port {port} not listed: {ports}"));
    (
        p["rx_frames"].as_u64().unwrap(),
        p["tx_frames"].as_u64().unwrap(),
    )
}

#[test]
fn stats_and_ports_counters_grow() {
    if !need_root("stats") {
        return;
    }
    let d = Daemon::start("st");
    let (a, b) = (unique("sa"), unique("sb"));
    d.run(&a, &[]);
    d.run(&b, &[]);
    let (pa, pb) = (d.port_name(&a), d.port_name(&b));
    assert!(d.ping(&a, &d.ip_of(&b)));
    let s0 = json(&d.ok(&["stats", "--json"]));
    let (a_rx0, a_tx0) = port_rx_tx(&d, &pa);
    let (b_rx0, b_tx0) = port_rx_tx(&d, &pb);
    let o = d.exec(
        &a,
        &["ping", "-c", "20", "-i", "0.01", "-W", "2", &d.ip_of(&b)],
    );
    assert!(o.status.success());
    let s1 = json(&d.ok(&["stats", "--json"]));
    let (a_rx1, a_tx1) = port_rx_tx(&d, &pa);
    let (b_rx1, b_tx1) = port_rx_tx(&d, &pb);
    assert!(counter(&s1, "rx") >= counter(&s0, "rx") + 40, "{s0}\n{s1}");
    assert!(counter(&s1, "tx") >= counter(&s0, "tx") + 40);
    assert!(counter(&s1, "unicast") >= counter(&s0, "unicast") + 40);
    assert!(
        a_rx1 >= a_rx0 + 20 && a_tx1 >= a_tx0 + 20,
        "a: {a_rx0}/{a_tx0} -> {a_rx1}/{a_tx1}"
    );
    assert!(
        b_rx1 >= b_rx0 + 20 && b_tx1 >= b_tx0 + 20,
        "b: {b_rx0}/{b_tx0} -> {b_rx1}/{b_tx1}"
    );
    assert!(s1["fdb_entries"].as_u64().unwrap() >= 2);
    // Every drop reason has a counter (a number), in the JSON and in the text form, and no
    // counter names a reason the switch does not have.
    let text = d.ok(&["stats"]);
    let counters = s1["counters"].as_object().unwrap();
    for r in switch::pipeline::DropReason::ALL {
        let key = format!("drop_{}", r.name());
        assert!(
            counters.get(&key).is_some_and(|v| v.is_u64()),
            "{key}: {s1}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(key.as_str())),
            "{key} not in `stats`:\n{text}"
        );
    }
    let drops = counters.keys().filter(|k| k.starts_with("drop_")).count();
    assert_eq!(drops, switch::pipeline::DropReason::COUNT, "{s1}");
    assert!(
        text.contains("unicast") && text.contains("fdb_entries"),
        "{text}"
    );
    let text = d.ok(&["ports"]);
    assert!(text.contains(&pa) && text.contains(&a), "{text}");
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn daemon_memory_with_two_idle_containers() {
    if !need_root("memory") {
        return;
    }
    let d = Daemon::start("mem");
    let (a, b) = (unique("ma"), unique("mb"));
    d.run(&a, &[]);
    d.run(&b, &["--attach", "tap"]);
    assert!(d.ping(&a, &d.ip_of(&b)));
    // Idle: measured once the resident size has stopped changing (two reads 200 ms apart).
    let mut kib = vm_rss_kib(d.pid());
    wait_until(
        "the daemon's memory to settle",
        Duration::from_secs(10),
        || {
            std::thread::sleep(Duration::from_millis(200));
            let now = vm_rss_kib(d.pid());
            std::mem::replace(&mut kib, now) == now
        },
    );
    eprintln!(
        "daemon VmRSS with two idle containers (veth + TAP): {kib} kB ({:.1} MiB)",
        kib as f64 / 1024.0
    );
    assert!(
        kib < 64 * 1024,
        "daemon uses {kib} kB, goal is under 64 MiB"
    );
}

#[test]
fn detached_command_across_restart_and_exit() {
    if !need_root("detached_restart") {
        return;
    }
    let mut d = Daemon::start("detr");
    let x = unique("x");
    d.run(&x, &["-d", "--", "sleep", "1000"]);
    let pid = d.container(&x)["pid"].as_u64().expect("pid") as u32;
    d.restart(true);
    let info = d.container(&x);
    assert_eq!(
        info["status"], "running",
        "the command outlives the daemon: {info}"
    );
    assert_eq!(info["pid"].as_u64(), Some(pid as u64));
    let e = d.fails(&["rm", &x]);
    assert!(e.contains("rm -f"), "{e}");
    d.ok(&["rm", "-f", &x]);
    // Not our child any more: the kill is checked by the process being gone or a zombie.
    let t0 = std::time::Instant::now();
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    while !gone() && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone(), "pid {pid} still runs after rm -f");
    assert!(!Path::new("/run/netns").join(&x).exists());

    // A command that ends by itself: `exited`, and a plain rm works.
    let y = unique("y");
    d.run(&y, &["-d", "--", "sh", "-c", "echo hello; exit 0"]);
    let t0 = std::time::Instant::now();
    while d.container(&y)["status"] != "exited" && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let info = d.container(&y);
    assert_eq!(info["status"], "exited", "{info}");
    assert_eq!(info["pid"], Value::Null);
    let log = std::fs::read_to_string(d.state_dir.join("logs").join(format!("{y}.log")));
    assert_eq!(
        log.unwrap_or_default().trim(),
        "hello",
        "output goes to the log"
    );
    d.ok(&["rm", &y]);
    assert_eq!(d.container(&y), Value::Null);
}
