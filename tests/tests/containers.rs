//! Containers on the switch, end to end: real namespaces, veth pairs, AF_PACKET ports and real
//! clients (ping, iperf3).

use e2e::*;

/// Counter `name` of container `c`'s switch port, from `stats --json`.
fn port_stat(d: &Daemon, c: &str, name: &str) -> u64 {
    let port = d.container(c)["endpoints"][0]["port_name"].clone();
    let s: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    let p = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {s}"));
    p[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {p}"))
}

/// The kernel bridge (`master`) an interface of the host is enslaved to, if any; panics when
/// the interface does not exist (a check on a missing port would pass on nothing).
fn master_of(ifname: &str) -> Option<String> {
    let dir = std::path::Path::new("/sys/class/net").join(ifname);
    assert!(dir.exists(), "no interface {ifname} on the host");
    std::fs::read_link(dir.join("master"))
        .ok()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
}

#[test]
fn default_network_ping_iperf_and_no_kernel_bridge() {
    if !need_root("default_network") {
        return;
    }
    let d = Daemon::start("dn");
    let (c1, c2) = (unique("a"), unique("b"));
    d.run(&c1, &[]);
    d.run(&c2, &[]);
    let ip1 = d.ip_of(&c1);
    let ip2 = d.ip_of(&c2);
    let net: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).unwrap();
    let gw = net[0]["gateway"].as_str().unwrap().to_string();
    let subnet = net[0]["subnet"].as_str().unwrap().to_string();
    assert!(gw.ends_with(".1"), "gateway {gw} is the first address");
    assert!(ip1 != ip2);
    assert!(d.ping(&c1, &ip2), "c1 -> c2\n{}", d.log());
    assert!(d.ping(&c2, &ip1), "c2 -> c1");
    assert!(d.ping(&c1, &gw), "c1 -> gateway {gw} ({subnet})");
    // The containers' default route is the gateway.
    let route = d.exec(&c1, &["ip", "route", "show", "default"]);
    assert!(String::from_utf8_lossy(&route.stdout).contains(&gw));
    let bps = iperf3(&d, &c2, &c1, &ip2, 2);
    assert!(bps > 1e6, "iperf3 moved only {bps} bit/s");
    // No kernel bridge carries the traffic: none of vswitch's ports (the containers' veth host
    // ends, the host's gateway TAP) is enslaved to one (other bridges, docker0, may exist).
    let ports: serde_json::Value = serde_json::from_str(&d.ok(&["ports", "--json"])).unwrap();
    let names: Vec<String> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.len() >= 3, "two containers and the host: {ports}");
    for n in &names {
        assert_eq!(master_of(n), None, "port {n} is on a kernel bridge");
    }
    // ... and they carried it: each container's port moved the iperf3 frames (AF_PACKET, read
    // by recvmmsg in the default mode: no ring blocks).
    for c in [&c1, &c2] {
        let rx = port_stat(&d, c, "rx_frames");
        assert!(rx > 1000, "{c}'s port received only {rx} frames");
        assert_eq!(port_stat(&d, c, "rx_ring_blocks"), 0);
    }
    // The MAC table shows each container's MAC on its own port.
    let fdb: serde_json::Value = serde_json::from_str(&d.ok(&["fdb", "--json"])).unwrap();
    for c in [&c1, &c2] {
        let ep = &d.container(c)["endpoints"][0];
        let hit = fdb
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["mac"] == ep["mac"])
            .unwrap_or_else(|| panic!("MAC of {c} not learned: {fdb}"));
        assert_eq!(hit["port"], ep["port_name"], "{c}'s MAC is on its own port");
        assert_eq!(hit["network"], "bridge");
    }
}

#[test]
fn user_networks_are_isolated_and_static_ip() {
    if !need_root("isolation") {
        return;
    }
    let d = Daemon::start("iso");
    d.ok(&["network", "create", "--subnet", "10.231.1.0/24", "neta"]);
    d.ok(&["network", "create", "--subnet", "10.231.2.0/24", "netb"]);
    let (a1, a2, b1, b2) = (unique("a"), unique("a"), unique("b"), unique("b"));
    d.run(&a1, &["--network", "neta", "--ip", "10.231.1.50"]);
    d.run(&a2, &["--network", "neta"]);
    d.run(&b1, &["--network", "netb"]);
    d.run(&b2, &["--network", "netb"]);
    assert_eq!(d.ip_of(&a1), "10.231.1.50");
    let a2ip = d.ip_of(&a2);
    assert!(a2ip.starts_with("10.231.1."));
    // The positive path first: each container reaches its own network (a broken container
    // would fail the negative checks below for the wrong reason).
    assert!(d.ping(&a2, "10.231.1.50"));
    assert!(d.ping(&a1, &a2ip), "a1 -> a2 on neta");
    let (bip, b2ip) = (d.ip_of(&b1), d.ip_of(&b2));
    assert!(d.ping(&b1, &b2ip), "b1 -> b2 on netb");
    // b1 gets a route towards neta's subnet through its own interface: still nothing arrives.
    let r = d.exec(&b1, &["ip", "route", "add", "10.231.1.0/24", "dev", "eth0"]);
    assert!(r.status.success(), "route in b1");
    assert!(!d.ping(&b1, "10.231.1.50"), "netb reached neta");
    assert!(!d.ping(&a1, &bip), "neta reached netb");
    // ... while the same containers, with the same routes, still reach their own networks.
    assert!(d.ping(&b1, &b2ip), "b1 -> b2 after the route");
    assert!(d.ping(&a1, &a2ip), "a1 -> a2");
    // A taken static address is refused, naming the holder.
    let err = d.fails(&[
        "run",
        "--name",
        &unique("x"),
        "--network",
        "neta",
        "--ip",
        "10.231.1.50",
    ]);
    assert!(err.contains("10.231.1.50"), "{err}");
}

#[test]
fn none_host_and_container_modes() {
    if !need_root("modes") {
        return;
    }
    let d = Daemon::start("modes");
    let (n, h, base, joiner) = (unique("n"), unique("h"), unique("base"), unique("j"));
    d.run(&n, &["--network", "none"]);
    let links = String::from_utf8_lossy(&d.exec(&n, &["ip", "-o", "link"]).stdout).into_owned();
    assert_eq!(
        links.lines().count(),
        1,
        "none mode has only loopback: {links}"
    );
    assert!(links.contains("lo"));
    d.run(&h, &["--network", "host"]);
    let host_links = sh_ok("ip", &["-o", "link"]);
    let in_host = String::from_utf8_lossy(&d.exec(&h, &["ip", "-o", "link"]).stdout).into_owned();
    assert_eq!(
        in_host.lines().count(),
        host_links.lines().count(),
        "host mode sees the host's links"
    );
    d.run(&base, &[]);
    d.run(&joiner, &["--network", &format!("container:{base}")]);
    let a = String::from_utf8_lossy(&d.exec(&base, &["ip", "-o", "addr"]).stdout).into_owned();
    let b = String::from_utf8_lossy(&d.exec(&joiner, &["ip", "-o", "addr"]).stdout).into_owned();
    assert_eq!(a, b, "container: mode shares the namespace");
    assert!(a.contains(&d.ip_of(&base)));
    // The base cannot go while another container shares its namespace.
    let err = d.fails(&["rm", "-f", &base]);
    assert!(err.contains(&joiner), "{err}");
}

#[test]
fn restart_and_kill9_keep_state_and_traffic() {
    if !need_root("restart") {
        return;
    }
    let mut d = Daemon::start("rs");
    d.ok(&["network", "create", "--subnet", "10.232.0.0/24", "keep"]);
    let (c1, c2) = (unique("r"), unique("r"));
    d.run(&c1, &["--network", "keep"]);
    d.run(&c2, &["--network", "keep"]);
    let (ip1, ip2) = (d.ip_of(&c1), d.ip_of(&c2));
    assert!(d.ping(&c1, &ip2));
    for kill9 in [false, true] {
        d.restart(kill9);
        assert_eq!(d.ip_of(&c1), ip1, "lease kept (kill9={kill9})");
        assert_eq!(d.ip_of(&c2), ip2);
        assert!(d.ok(&["network", "ls"]).contains("keep"));
        assert!(
            d.ping(&c1, &ip2),
            "traffic after restart (kill9={kill9})\n{}",
            d.log()
        );
    }
    // A new container after the restart does not get a leased address.
    let c3 = unique("r");
    d.run(&c3, &["--network", "keep"]);
    let ip3 = d.ip_of(&c3);
    assert!(ip3 != ip1 && ip3 != ip2);
}

#[test]
fn rm_frees_port_and_address_and_gone_namespaces_are_dropped() {
    if !need_root("rm") {
        return;
    }
    let d = Daemon::start("rm");
    d.ok(&["network", "create", "--subnet", "10.233.0.0/29", "tiny"]);
    let c1 = unique("f");
    d.run(&c1, &["--network", "tiny", "--ip", "10.233.0.2"]);
    let port = d.port_name(&c1);
    assert!(sh("ip", &["link", "show", &port]).status.success());
    d.ok(&["rm", &c1]);
    assert!(
        !sh("ip", &["link", "show", &port]).status.success(),
        "port link removed"
    );
    assert!(
        !std::path::Path::new("/run/netns").join(&c1).exists(),
        "namespace removed"
    );
    assert!(!d.ok(&["ports"]).contains(&port));
    // The address is free again.
    let c2 = unique("f");
    d.run(&c2, &["--network", "tiny", "--ip", "10.233.0.2"]);
    // A namespace deleted behind the daemon's back: its port and lease go too.
    sh_ok("ip", &["netns", "del", &c2]);
    let t0 = std::time::Instant::now();
    while d.container(&c2) != serde_json::Value::Null && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        d.container(&c2),
        serde_json::Value::Null,
        "container of a deleted namespace dropped"
    );
}

#[test]
fn attach_foreign_namespace() {
    if !need_root("attach") {
        return;
    }
    let d = Daemon::start("att");
    let ns = Netns::new(&unique("ext"));
    let c1 = unique("c");
    d.run(&c1, &[]);
    d.track(&ns.name);
    d.ok(&[
        "attach",
        "--name",
        &ns.name,
        "--netns",
        &format!("/run/netns/{}", ns.name),
        "bridge",
    ]);
    let ip = d.ip_of(&c1);
    assert!(ns
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip])
        .status
        .success());
    // Removing an attached container leaves the foreign namespace in place.
    d.ok(&["rm", &ns.name]);
    assert!(std::path::Path::new("/run/netns").join(&ns.name).exists());
}

#[test]
fn clear_errors() {
    if !need_root("errors") {
        return;
    }
    let d = Daemon::start("err");
    d.ok(&["network", "create", "--subnet", "10.234.0.0/24", "one"]);
    let e = d.fails(&["network", "create", "--subnet", "10.234.0.128/25", "two"]);
    assert!(e.contains("one"), "overlap names the other network: {e}");
    let e = d.fails(&["network", "create", "--subnet", "10.234.1.0/33", "bad"]);
    assert!(e.contains("10.234.1.0/33"), "{e}");
    let e = d.fails(&["network", "create", "--subnet", "10.235.0.0/24", "one"]);
    assert!(e.contains("already exists"), "{e}");
    let e = d.fails(&["run", "--name", &unique("x"), "--network", "nope"]);
    assert!(e.contains("nope") && e.contains("network ls"), "{e}");
    let e = d.fails(&[
        "run",
        "--name",
        &unique("x"),
        "--network",
        "one",
        "--ip",
        "10.9.9.9",
    ]);
    assert!(e.contains("10.9.9.9"), "{e}");
    let c = unique("dup");
    d.run(&c, &["--network", "none"]);
    let e = d.fails(&["run", "--name", &c]);
    assert!(e.contains("already in use"), "{e}");
    let e = d.fails(&["network", "rm", "bridge"]);
    assert!(e.contains("pre-defined"), "{e}");
    // No daemon: a one-line error that says what to do.
    let o = std::process::Command::new(vswitch_bin())
        .args(["--socket", "/nonexistent/vswitch.sock", "ps"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("vswitch daemon") && e.lines().count() == 1,
        "{e}"
    );
}

#[test]
fn ring_receive_mode_forwards() {
    if !need_root("ring_mode") {
        return;
    }
    let d = Daemon::start_with("ring", &["--rx-mode", "ring"]);
    let (c1, c2) = (unique("g"), unique("g"));
    d.run(&c1, &[]);
    d.run(&c2, &[]);
    let ip2 = d.ip_of(&c2);
    assert!(
        d.ping(&c1, &ip2),
        "ping through TPACKET_V3 ring ports\n{}",
        d.log()
    );
    let bps = iperf3(&d, &c2, &c1, &ip2, 2);
    assert!(bps > 1e6, "iperf3 moved only {bps} bit/s");
    // The containers' ports really received through their TPACKET_V3 rings.
    for c in [&c1, &c2] {
        let blocks = port_stat(&d, c, "rx_ring_blocks");
        assert!(blocks > 10, "{c}'s port read {blocks} ring blocks");
    }
    // A bad mode is refused before anything starts.
    let o = std::process::Command::new(vswitch_bin())
        .args([
            "--socket",
            "/nonexistent/x.sock",
            "daemon",
            "--rx-mode",
            "fast",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mmsg or ring"));
}
