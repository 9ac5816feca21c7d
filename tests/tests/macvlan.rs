//! macvlan networks end to end: a LAN of the test's own (a namespace playing another machine,
//! joined by a veth to the parent interface), containers as their own stations on it, 802.1Q
//! VLANs over one parent, and the parent's promiscuous flag.

use e2e::lan::Lan;
use e2e::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ping_from_lan(lan: &Lan, args: &[&str]) -> bool {
    ping_in(&lan.ns, args)
}

fn ping_in(ns: &Netns, args: &[&str]) -> bool {
    let mut a = vec!["ping", "-c", "2", "-i", "0.2", "-W", "2"];
    a.extend_from_slice(args);
    ns.exec(&a).status.success()
}

fn stats(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap()
}

/// Counter `name` of the switch port called `port` (an uplink: the parent's name).
fn port_counter(d: &Daemon, port: &str, name: &str) -> u64 {
    let s = stats(d);
    let p = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {s}"))
        .clone();
    p[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {p}"))
}

fn endpoint(d: &Daemon, c: &str) -> serde_json::Value {
    d.container(c)["endpoints"][0].clone()
}

/// iperf3 from the LAN machine to `server_ip` in container `server`; returns bits/s and the
/// address the server saw the client connect from.
fn iperf_from(d: &Daemon, client: &Netns, server: &str, server_ip: &str) -> (f64, String) {
    iperf_between(d, client, server, server_ip, false)
}

/// [`iperf_from`], with the container sending (`-R`) when `reverse`.
fn iperf_between(
    d: &Daemon,
    client: &Netns,
    server: &str,
    server_ip: &str,
    reverse: bool,
) -> (f64, String) {
    let log = d.dir.join(format!("iperf-{server}.log"));
    let srv = Iperf3Server::start(d.container(server)["netns"].as_str().unwrap(), &log);
    let mut args = vec!["iperf3", "-c", server_ip, "-t", "2", "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.exec(&args);
    drop(srv);
    assert!(
        out.status.success(),
        "iperf3 to {server_ip} failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let from = seen
        .lines()
        .find_map(|l| l.split("Accepted connection from ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    (bps, from)
}

#[test]
fn lan_machine_reaches_containers_by_address_without_nat() {
    if !need_root("macvlan_lan") {
        return;
    }
    let lan = Lan::new("10.97.1.1/24");
    let d = Daemon::start("mvl");
    assert!(!lan.parent_promiscuous());
    let p = lan.parent.clone();
    d.ok(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "-o",
        &format!("parent={p}"),
        "--subnet",
        "10.97.1.0/24",
        "--gateway",
        "10.97.1.1",
        "--ip-range",
        "10.97.1.64/26",
        "lanmv",
    ]);
    assert!(
        lan.parent_promiscuous(),
        "the parent is promiscuous while the network exists"
    );
    let (c1, c2) = (unique("m"), unique("m"));
    d.run(&c1, &["--network", "lanmv"]);
    d.run(&c2, &["--network", "lanmv"]);
    let (ip1, ip2) = (d.ip_of(&c1), d.ip_of(&c2));
    for ip in [&ip1, &ip2] {
        assert!(
            ip.starts_with("10.97.1.")
                && ip.split('.').nth(3).unwrap().parse::<u8>().unwrap() >= 64,
            "{ip} from the ip-range"
        );
    }
    // The LAN machine pings both containers by address...
    assert!(ping_from_lan(&lan, &[&ip1]), "lan -> {ip1}\n{}", d.log());
    assert!(ping_from_lan(&lan, &[&ip2]), "lan -> {ip2}");
    // ...and knows them as stations with their own MACs (no proxy, no NAT).
    for (c, ip) in [(&c1, &ip1), (&c2, &ip2)] {
        let neigh =
            String::from_utf8_lossy(&lan.exec(&["ip", "neigh", "show", ip]).stdout).to_string();
        let mac = endpoint(&d, c)["mac"].as_str().unwrap().to_string();
        assert!(
            neigh.contains(&mac),
            "lan's neighbour entry for {ip}: {neigh:?}, expected {mac}"
        );
    }
    // Containers reach each other through the switch, and the LAN's gateway is their route.
    assert!(d.ping(&c1, &ip2), "c1 -> c2");
    assert!(d.ping(&c2, "10.97.1.1"), "c2 -> the LAN machine");
    let route = String::from_utf8_lossy(&d.exec(&c1, &["ip", "route", "show", "default"]).stdout)
        .to_string();
    assert!(route.contains("via 10.97.1.1"), "{route}");
    // The switch does not answer for the gateway address: it is the LAN's.
    let st = stats(&d);
    assert_eq!(st["counters"]["gateway"], 0, "{st}");
    // iperf3 from the LAN to each container: the server sees the LAN machine's own address.
    for (c, ip) in [(&c1, &ip1), (&c2, &ip2)] {
        let (bps, from) = iperf_from(&d, &lan.ns, c, ip);
        assert!(bps > 1e6, "iperf3 to {c} moved only {bps} bit/s");
        assert_eq!(from, "10.97.1.1", "{c} saw the client as {from:?}");
    }
    // The uplink learned the LAN machine's MAC; the containers' MACs are static on their ports.
    let fdb: serde_json::Value = serde_json::from_str(&d.ok(&["fdb", "--json", "lanmv"])).unwrap();
    let lan_mac =
        String::from_utf8_lossy(&lan.exec(&["cat", "/sys/class/net/eth0/address"]).stdout)
            .trim()
            .to_string();
    let rows = fdb.as_array().unwrap();
    assert!(
        rows.iter()
            .any(|e| e["mac"] == lan_mac.as_str() && e["port"] == p.as_str()),
        "{fdb}"
    );
    for c in [&c1, &c2] {
        let ep = endpoint(&d, c);
        assert!(
            rows.iter().any(|e| e["mac"] == ep["mac"]
                && e["port"] == ep["port_name"]
                && e["is_static"] == true),
            "{c}: {fdb}"
        );
    }
    // LAN traffic for nobody here (unicast to a MAC no container owns) is dropped, never
    // flooded to the containers.
    let before = stats(&d)["counters"]["drop_not_local"].as_u64().unwrap();
    lan.exec(&[
        "ip",
        "neigh",
        "replace",
        "10.97.1.250",
        "lladdr",
        "02:00:00:97:01:fa",
        "dev",
        "eth0",
    ]);
    assert!(!ping_from_lan(&lan, &["10.97.1.250"]));
    let after = stats(&d)["counters"]["drop_not_local"].as_u64().unwrap();
    assert!(after >= before + 2, "not_local drops {before} -> {after}");

    // Removing the network restores the parent's flag and closes the uplink.
    d.ok(&["rm", "-f", &c1]);
    d.ok(&["rm", "-f", &c2]);
    d.ok(&["network", "rm", "lanmv"]);
    assert!(!lan.parent_promiscuous(), "promiscuous flag restored");
    assert!(!d.ok(&["ports"]).contains(&p), "uplink closed");
}

#[test]
fn vlans_over_one_parent_are_tagged_and_isolated() {
    if !need_root("macvlan_vlans") {
        return;
    }
    let lan = Lan::with_vlans(
        "10.97.2.1/24",
        &[(10, "10.97.10.1/24"), (20, "10.97.20.1/24")],
    );
    let d = Daemon::start("mvv");
    let p = lan.parent.clone();
    for (name, parent, subnet) in [
        ("mvu", p.clone(), "10.97.2.0/24"),
        ("mv10", format!("{p}.10"), "10.97.10.0/24"),
        ("mv20", format!("{p}.20"), "10.97.20.0/24"),
    ] {
        d.ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            &format!("parent={parent}"),
            "--subnet",
            subnet,
            name,
        ]);
    }
    // One uplink port for the three networks.
    let ports = d.ok(&["ports"]);
    assert_eq!(
        ports.lines().filter(|l| l.contains(&p)).count(),
        1,
        "{ports}"
    );
    let (cu, c10, c20) = (unique("u"), unique("v"), unique("w"));
    d.run(&cu, &["--network", "mvu"]);
    d.run(&c10, &["--network", "mv10"]);
    d.run(&c20, &["--network", "mv20"]);
    let (ipu, ip10, ip20) = (d.ip_of(&cu), d.ip_of(&c10), d.ip_of(&c20));

    // tshark on the parent sees the tags while the LAN machine pings each container.
    let mut cap = Command::new("tshark")
        .args([
            "-i",
            &p,
            "-n",
            "-l",
            "-a",
            "duration:60",
            "-T",
            "fields",
            "-e",
            "vlan.id",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-Y",
            "icmp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (apt-get install tshark)");
    let cap_err = StreamLines::take(&mut cap);
    let cap_out = StreamLines::of(cap.stdout.take().expect("tshark stdout"));
    cap_err.wait_for(
        "Capturing on",
        "tshark on the parent",
        Duration::from_secs(20),
    );
    assert!(
        ping_in(lan.station(10), &[&ip10]),
        "VLAN 10 station -> {ip10}\n{}",
        d.log()
    );
    assert!(
        ping_in(lan.station(20), &[&ip20]),
        "VLAN 20 station -> {ip20}"
    );
    assert!(ping_from_lan(&lan, &[&ipu]), "lan eth0 -> {ipu}");
    let has = |seen: &str, vid: &str, a: &str, b: &str| {
        seen.lines().any(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 3 && f[0] == vid && f[1] == a && f[2] == b
        })
    };
    let want = [
        ("10", "10.97.10.1", ip10.as_str()),
        ("20", "10.97.20.1", ip20.as_str()),
        ("", "10.97.2.1", ipu.as_str()),
    ];
    // tshark prints each packet as it decodes it (`-l`): wait until every request and reply
    // is there (or 15 s), then stop it.
    let t0 = std::time::Instant::now();
    while !want
        .iter()
        .all(|(v, a, b)| has(&cap_out.text(), v, a, b) && has(&cap_out.text(), v, b, a))
        && t0.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sh("kill", &["-INT", &cap.id().to_string()]);
    let st = cap.wait().unwrap();
    assert!(
        st.success(),
        "tshark on the parent ended with {st}: {}",
        cap_err.text()
    );
    let seen = cap_out.text();
    let has = |vid: &str, a: &str, b: &str| has(&seen, vid, a, b);
    for (vid, lanip, ip) in [
        ("10", "10.97.10.1", &ip10),
        ("20", "10.97.20.1", &ip20),
        ("", "10.97.2.1", &ipu),
    ] {
        assert!(
            has(vid, lanip, ip),
            "request {lanip} -> {ip} with tag {vid:?} not seen:\n{seen}\n{}",
            cap_err.text()
        );
        assert!(
            has(vid, ip, lanip),
            "reply {ip} -> {lanip} with tag {vid:?} not seen:\n{seen}"
        );
    }
    // A tagged network's traffic runs at speed too, both ways. Container -> LAN: the
    // container's 64 KiB TCP frames leave through the uplink whole, as GSO frames tagged by the
    // switch (counted by the uplink), not cut into segments first.
    let (bps, from) = iperf_from(&d, lan.station(10), &c10, &ip10);
    assert!(bps > 1e6 && from == "10.97.10.1", "{bps} {from}");
    let gso0 = port_counter(&d, &p, "tx_gso_frames");
    let (bps, from) = iperf_between(&d, lan.station(10), &c10, &ip10, true);
    assert!(bps > 1e6 && from == "10.97.10.1", "reverse: {bps} {from}");
    let gso = port_counter(&d, &p, "tx_gso_frames") - gso0;
    assert!(gso > 100, "only {gso} GSO frames sent tagged on the uplink");

    // Isolation at layer 2: even with a route that points there, nothing crosses.
    for (c, dst) in [
        (&c10, "10.97.20.1"),  // VLAN 10 -> the LAN's VLAN 20 station
        (&c10, ip20.as_str()), // VLAN 10 -> VLAN 20's container
        (&c10, "10.97.2.1"),   // VLAN 10 -> untagged LAN
        (&c20, ip10.as_str()),
        (&cu, "10.97.10.1"), // untagged -> the LAN's VLAN 10 station
        (&cu, ip10.as_str()),
    ] {
        let net = format!("{}/32", dst);
        let r = d.exec(c, &["ip", "route", "replace", &net, "dev", "eth0"]);
        assert!(r.status.success(), "route to {dst} in {c}");
        assert!(!d.ping(c, dst), "{c} reached {dst} across VLANs");
    }
    // The positive path next to it: the same containers reach their own VLAN's station.
    for (c, own) in [
        (&c10, "10.97.10.1"),
        (&c20, "10.97.20.1"),
        (&cu, "10.97.2.1"),
    ] {
        assert!(d.ping(c, own), "{c} cannot reach {own} on its own VLAN");
    }
    // The VLAN networks still work afterwards (nothing was learned across).
    assert!(ping_in(lan.station(10), &[&ip10]));

    // Removing the VLAN networks one by one keeps the others working on the same port.
    d.ok(&["rm", "-f", &c20]);
    d.ok(&["network", "rm", "mv20"]);
    assert!(
        ping_in(lan.station(10), &[&ip10]),
        "VLAN 10 after VLAN 20 went"
    );
    assert!(ping_from_lan(&lan, &[&ipu]), "untagged after VLAN 20 went");
    assert!(lan.parent_promiscuous());
    d.ok(&["rm", "-f", &cu]);
    d.ok(&["rm", "-f", &c10]);
    d.ok(&["network", "rm", "mvu"]);
    assert!(lan.parent_promiscuous(), "mv10 still uses the parent");
    d.ok(&["network", "rm", "mv10"]);
    assert!(!lan.parent_promiscuous());
}

#[test]
fn clear_errors_and_the_flag_survives_a_crash() {
    if !need_root("macvlan_errors") {
        return;
    }
    let lan = Lan::new("10.97.3.1/24");
    let mut d = Daemon::start("mve");
    let p = lan.parent.clone();
    let par = format!("parent={p}");
    let create = |extra: &[&str], name: &str| {
        let mut a = vec!["network", "create", "--driver", "macvlan"];
        a.extend_from_slice(extra);
        a.push(name);
        a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let fails = |d: &Daemon, a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        d.fails(&a)
    };
    let e = fails(
        &d,
        create(
            &["-o", "parent=nosuchif0", "--subnet", "10.97.4.0/24"],
            "x1",
        ),
    );
    assert!(e.contains("nosuchif0") && e.contains("not found"), "{e}");
    let e = fails(&d, create(&["--subnet", "10.97.4.0/24"], "x2"));
    assert!(e.contains("-o parent="), "{e}");
    let e = fails(&d, create(&["-o", &par], "x3"));
    assert!(e.contains("--subnet"), "{e}");
    let e = fails(
        &d,
        create(
            &["-o", &format!("{par}.4095"), "--subnet", "10.97.4.0/24"],
            "x4",
        ),
    );
    assert!(e.contains("4094"), "{e}");
    assert!(
        !lan.parent_promiscuous(),
        "failed creates leave the parent alone"
    );

    d.ok(&create(
        &[
            "-o",
            &par,
            "--subnet",
            "10.97.3.0/24",
            "--gateway",
            "10.97.3.1",
        ],
        "mva",
    )
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    let e = fails(&d, create(&["-o", &par, "--subnet", "10.97.5.0/24"], "x5"));
    assert!(
        e.contains("already used untagged") && e.contains("mva"),
        "{e}"
    );
    d.ok(&create(
        &["-o", &format!("{par}.30"), "--subnet", "10.97.30.0/24"],
        "mvb",
    )
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    let e = fails(
        &d,
        create(
            &["-o", &format!("{par}.30"), "--subnet", "10.97.31.0/24"],
            "x6",
        ),
    );
    assert!(e.contains("VLAN 30") && e.contains("mvb"), "{e}");
    let e = fails(
        &d,
        create(
            &["-o", &format!("{par}.31"), "--subnet", "10.97.3.128/25"],
            "x7",
        ),
    );
    assert!(e.contains("overlaps") && e.contains("mva"), "{e}");
    let e = d.fails(&["network", "create", "--subnet", "10.97.3.0/26", "brx"]);
    assert!(
        e.contains("overlaps"),
        "a bridge network overlapping a macvlan one: {e}"
    );

    // Crash with the parent promiscuous: the restarted daemon re-opens the uplink, the
    // container is still reachable, and removing the networks restores the original flag.
    let c = unique("k");
    d.run(&c, &["--network", "mva"]);
    let ip = d.ip_of(&c);
    assert!(ping_from_lan(&lan, &[&ip]));
    d.restart(true);
    assert!(lan.parent_promiscuous());
    assert!(ping_from_lan(&lan, &[&ip]), "after a crash\n{}", d.log());
    d.ok(&["rm", "-f", &c]);
    d.ok(&["network", "rm", "mva"]);
    d.restart(false);
    assert!(lan.parent_promiscuous(), "mvb still uses the parent");
    d.ok(&["network", "rm", "mvb"]);
    assert!(
        !lan.parent_promiscuous(),
        "restored after crash and restart"
    );

    // A parent that was promiscuous before stays so afterwards.
    sh_ok("ip", &["link", "set", &p, "promisc", "on"]);
    d.ok(&create(&["-o", &par, "--subnet", "10.97.3.0/24"], "mvc")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    d.ok(&["network", "rm", "mvc"]);
    assert!(lan.parent_promiscuous(), "the parent's own flag was on");
}
