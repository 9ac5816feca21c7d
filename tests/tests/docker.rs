//! Docker on vswitch, end to end, with a real dockerd (Debian's docker.io 20.10) per test and
//! a busybox-static image: the plugin (`docker network create -d PLUGIN --ipam-driver PLUGIN`),
//! what Docker users expect of such networks, restarts of each side, the errors Docker prints,
//! and `vswitch attach` of a container started with `--network none`.
//!
//! Each test has its own vswitch daemon serving the plugin under a name of its own
//! (`--docker-plugin NAME`, socket /run/docker/plugins/NAME.sock), its own dockerd and its own
//! subnets, so the tests run in parallel.

use e2e::dockerd::{self, Dockerd, IMAGE};
use e2e::*;
use std::time::Duration;

/// The `k`-th /24 of this test process (k < 8): `10.A.B` with A, B from the PID.
fn prefix(k: u32) -> String {
    let pid = std::process::id();
    format!("10.{}.{}", 70 + pid % 8, (pid / 8 % 30) * 8 + k)
}

fn ready(tag: &str) -> Option<(Daemon, Dockerd, String)> {
    if !need_root(tag) || !dockerd::available() {
        return None;
    }
    let plugin = unique("vst");
    // dockerd first: vswitch asks its API for Docker's names (dockerd finds the plugin's
    // socket when a network first names the driver).
    let dk = Dockerd::start(tag);
    let api = format!("unix://{}", dk.sock.display());
    let d = Daemon::start_with(tag, &["--docker-plugin", &plugin, "--docker-host", &api]);
    Some((d, dk, plugin))
}

/// `docker network create -d PLUGIN --ipam-driver PLUGIN ARGS... NAME`; returns the vswitch
/// name of the network (the first 12 digits of Docker's id).
fn create_network(dk: &Dockerd, plugin: &str, name: &str, args: &[&str]) -> String {
    let mut a = vec!["network", "create", "-d", plugin, "--ipam-driver", plugin];
    a.extend_from_slice(args);
    a.push(name);
    let id = dk.ok(&a);
    id.get(..12).expect("a network id").to_string()
}

fn run_sleeper(dk: &Dockerd, name: &str, args: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name];
    a.extend_from_slice(args);
    a.extend_from_slice(&[IMAGE, "sleep", "600"]);
    dk.ok(&a);
}

fn ports(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&d.ok(&["ports", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The vswitch ports of containers (not the host's) on network `net`.
fn container_ports(d: &Daemon, net: &str) -> Vec<serde_json::Value> {
    ports(d)
        .into_iter()
        .filter(|p| p["network"] == net && p["container"] != "(host)")
        .collect()
}

fn netns_of(dk: &Dockerd, c: &str) -> String {
    format!("/proc/{}/ns/net", dk.pid_of(c))
}

#[test]
fn two_containers_talk_through_vswitch_by_name_and_publish_a_port() {
    let Some((d, dk, plugin)) = ready("dkrun") else {
        return;
    };
    let p = prefix(0);
    // A gateway other than the subnet's first address: Docker passes it to the plugin, which
    // keeps it (`docker network inspect` shows a gateway only when it was given, with any
    // driver: with only --subnet, Docker lists the user's configuration as it was given).
    let gw = format!("{p}.254");
    let net = create_network(
        &dk,
        &plugin,
        "app",
        &["--subnet", &format!("{p}.0/24"), "--gateway", &gw],
    );
    // An ordinary vswitch network, named by Docker's short id.
    assert!(d.ok(&["network", "ls", "--json"]).contains(&net));
    let host_port = 20000 + std::process::id() % 20000;
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "app",
        "-p",
        &format!("{host_port}:80"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    run_sleeper(&dk, "cli", &["--network", "app"]);
    let (web, cli) = (dk.ip_on("web", "app"), dk.ip_on("cli", "app"));
    assert!(web.starts_with(&format!("{p}.")) && cli.starts_with(&format!("{p}.")));
    // Each container's eth0 is a vswitch port.
    assert_eq!(container_ports(&d, &net).len(), 2, "{:?}", ports(&d));
    // vswitch's listings show Docker's names (looked up in dockerd's API after Join); the
    // JSON keeps vswitch's names, with Docker's beside them.
    let docker_names = |d: &Daemon| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["runtime"]["name"].as_str().map(String::from))
            .collect();
        n.sort();
        n
    };
    wait_until(
        "Docker's names in vswitch ps",
        Duration::from_secs(15),
        || docker_names(&d) == ["cli", "web"],
    );
    let ps = d.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web ") && l.contains(" app ")),
        "{ps}"
    );
    let ls = d.ok(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("app")),
        "{ls}"
    );
    let table = d.ok(&["ports"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(" app ") && l.contains(" web ")),
        "{table}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(inspect[0]["frontend"]["name"], "app", "{inspect}");
    // Docker's name is not vswitch's key, and the error says which is.
    let e = d.fails(&["network", "inspect", "app"]);
    assert!(e.contains(&net), "{e}");
    // Docker's embedded DNS names them; they ping each other and the gateway.
    assert!(dk.ping("cli", "web"), "cli cannot ping web by name");
    assert!(dk.ping("web", &cli));
    assert!(dk.ping("cli", &gw), "no answer from the gateway");
    let page = dk.ok(&["exec", "cli", "wget", "-qO-", "http://web/index.html"]);
    assert!(page.contains("hello from vswitch"), "{page}");
    // The published port answers on the host, through the switch's gateway.
    let url = format!("http://127.0.0.1:{host_port}/index.html");
    let o = sh("curl", &["-s", "-m", "5", &url]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello from vswitch"),
        "published port {host_port}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // iperf3 between the containers' namespaces (the host's iperf3 inside them).
    let log = dk.dir.join("iperf3.log");
    let srv = Iperf3Server::start(&netns_of(&dk, "web"), &log);
    let o = sh(
        "nsenter",
        &[
            &format!("--net={}", netns_of(&dk, "cli")),
            "iperf3",
            "-c",
            &web,
            "-t",
            "2",
            "-J",
        ],
    );
    drop(srv);
    assert!(
        o.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!("docker on vswitch: iperf3 {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 100e6, "iperf3 moved only {bps} bit/s");
    // Those frames crossed the switch: both ports counted them.
    for port in container_ports(&d, &net) {
        assert!(port["rx_frames"].as_u64().unwrap() > 1000, "{port}");
    }
    // The containers route through that gateway.
    let routes = dk.ok(&["exec", "cli", "ip", "route"]);
    assert!(routes.contains(&format!("default via {gw}")), "{routes}");
    // Docker shows the pool, the gateway and each container's address.
    let ins: serde_json::Value =
        serde_json::from_str(&dk.ok(&["network", "inspect", "app"])).unwrap();
    let cfg = &ins[0]["IPAM"]["Config"];
    assert_eq!(cfg.as_array().map(Vec::len), Some(1), "{ins}");
    assert_eq!(cfg[0]["Subnet"], format!("{p}.0/24"), "{ins}");
    assert_eq!(cfg[0]["Gateway"], gw.as_str(), "{ins}");
    let shown: std::collections::BTreeMap<String, String> = ins[0]["Containers"]
        .as_object()
        .unwrap_or_else(|| panic!("no containers: {ins}"))
        .values()
        .map(|c| {
            let name = c["Name"].as_str().unwrap_or_default().to_string();
            (
                name,
                c["IPv4Address"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("cli".to_string(), format!("{cli}/24")),
        ("web".to_string(), format!("{web}/24")),
    ]
    .into();
    assert_eq!(shown, want, "{ins}");
    // ... and the same as vswitch's own view of the network.
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(v[0]["subnet"], format!("{p}.0/24"), "{v}");
    assert_eq!(v[0]["gateway"], gw.as_str(), "{v}");
}

#[test]
fn connect_disconnect_restart_and_rm_leave_nothing_behind() {
    let Some((d, dk, plugin)) = ready("dklife") else {
        return;
    };
    let (pa, pb) = (prefix(1), prefix(2));
    let na = create_network(&dk, &plugin, "a", &["--subnet", &format!("{pa}.0/24")]);
    let nb = create_network(&dk, &plugin, "b", &["--subnet", &format!("{pb}.0/24")]);
    run_sleeper(&dk, "c1", &["--network", "a"]);
    run_sleeper(&dk, "c2", &["--network", "b"]);
    let c2 = dk.ip_on("c2", "b");
    assert!(
        !dk.ping("c1", &c2),
        "c1 reached network b before connecting"
    );
    dk.ok(&["network", "connect", "b", "c1"]);
    assert!(dk.ping("c1", &c2), "c1 cannot reach c2 after connect");
    assert_eq!(container_ports(&d, &nb).len(), 2);
    dk.ok(&["network", "disconnect", "b", "c1"]);
    assert!(
        !dk.ping("c1", &c2),
        "c1 still reaches network b after disconnect"
    );
    assert_eq!(container_ports(&d, &nb).len(), 1, "{:?}", ports(&d));
    // A restart makes new endpoints; the container talks again.
    dk.ok(&["restart", "-t", "0", "c1"]);
    assert!(
        dk.ping("c1", &format!("{pa}.1")),
        "c1 cannot reach its gateway after restart"
    );
    assert_eq!(container_ports(&d, &na).len(), 1, "{:?}", ports(&d));
    // rm -f: no port, no link, no lease stays.
    let names: Vec<String> = ports(&d)
        .iter()
        .filter(|p| p["container"] != "(host)")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);
    let c1_ip = dk.ip_on("c1", "a");
    dk.ok(&["rm", "-f", "c1", "c2"]);
    assert!(container_ports(&d, &na).is_empty() && container_ports(&d, &nb).is_empty());
    let ps: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 0, "{ps}");
    for n in &names {
        assert!(
            !sh("ip", &["link", "show", n]).status.success(),
            "{n} is left"
        );
        let peer = format!("vsp{}", &n[3..]);
        assert!(
            !sh("ip", &["link", "show", &peer]).status.success(),
            "{peer} is left"
        );
    }
    // The address is free again: --ip takes it.
    run_sleeper(&dk, "c3", &["--network", "a", "--ip", &c1_ip]);
    assert_eq!(dk.ip_on("c3", "a"), c1_ip);
    // A network with no endpoints goes; vswitch forgets it.
    dk.ok(&["rm", "-f", "c3"]);
    dk.ok(&["network", "rm", "a", "b"]);
    let ls = d.ok(&["network", "ls"]);
    assert!(!ls.contains(&na) && !ls.contains(&nb), "{ls}");
}

#[test]
fn internal_network_with_static_ip_and_mtu_cannot_get_out() {
    let Some((d, dk, plugin)) = ready("dkint") else {
        return;
    };
    let p = prefix(3);
    let net = create_network(
        &dk,
        &plugin,
        "int",
        &[
            "--internal",
            "-o",
            "mtu=1400",
            "--subnet",
            &format!("{p}.0/24"),
        ],
    );
    let fixed = format!("{p}.77");
    run_sleeper(&dk, "i1", &["--network", "int", "--ip", &fixed]);
    run_sleeper(&dk, "i2", &["--network", "int"]);
    assert_eq!(dk.ip_on("i1", "int"), fixed);
    assert_eq!(
        dk.ok(&["exec", "i1", "cat", "/sys/class/net/eth0/mtu"]),
        "1400"
    );
    assert!(dk.ping("i2", &fixed));
    assert!(
        dk.ping("i2", "i1"),
        "names do not resolve on an internal network"
    );
    // No default route; forced through the gateway, nothing gets out: dropped and counted.
    let routes = dk.ok(&["exec", "i1", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let ns = netns_of(&dk, "i1");
    sh_ok(
        "nsenter",
        &[
            &format!("--net={ns}"),
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("{p}.1"),
        ],
    );
    let no_egress = || {
        let s: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
        s["nat"]["drop_no_egress"]
            .as_u64()
            .expect("nat.drop_no_egress")
    };
    let before = no_egress();
    // 192.0.2.1 (TEST-NET-1): the gateway must drop it, and would never route it anyway.
    assert!(
        !dk.ping("i1", "192.0.2.1"),
        "an internal network reached the outside"
    );
    assert!(
        no_egress() >= before + 2,
        "the gateway did not drop the pings"
    );
    // Nothing is published from it: Docker itself does not program external connectivity
    // of an internal network (the run succeeds, no port is bound).
    let port = 20000 + std::process::id() % 20000;
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--network",
        "int",
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "sleep",
        "60",
    ]);
    let ps: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    for c in ps.as_array().unwrap() {
        assert_eq!(c["ports"].as_array().map(Vec::len), Some(0), "{c}");
    }
    assert_eq!(container_ports(&d, &net).len(), 3, "{:?}", ports(&d));
}

#[test]
fn containers_keep_talking_across_a_kill_9_of_vswitch_and_a_dockerd_restart() {
    let Some((mut d, mut dk, plugin)) = ready("dkkill") else {
        return;
    };
    let p = prefix(4);
    let net = create_network(&dk, &plugin, "app", &["--subnet", &format!("{p}.0/24")]);
    run_sleeper(&dk, "k1", &["--network", "app", "--restart", "always"]);
    run_sleeper(&dk, "k2", &["--network", "app", "--restart", "always"]);
    let k2 = dk.ip_on("k2", "app");
    assert!(dk.ping("k1", &k2));
    d.restart(true);
    // The switch is back with the same ports; the containers never noticed.
    assert!(dk.ping("k1", &k2), "k1 lost k2 after kill -9 of vswitch");
    assert!(dk.ping("k2", &format!("{p}.1")));
    assert_eq!(container_ports(&d, &net).len(), 2);
    // The restarted plugin answers dockerd: a new container, and a removal.
    run_sleeper(&dk, "k3", &["--network", "app"]);
    assert!(dk.ping("k3", "k1"));
    dk.ok(&["rm", "-f", "k3"]);
    assert_eq!(container_ports(&d, &net).len(), 2);
    // dockerd restarts: its containers stop, and come back (--restart always) through the
    // plugin, which still knows the network.
    dk.restart();
    wait_until("k1 and k2 running again", Duration::from_secs(30), || {
        dk.ok(&["ps", "-q"]).lines().count() == 2
    });
    let k2 = dk.ip_on("k2", "app");
    assert!(dk.ping("k1", &k2), "no traffic after the dockerd restart");
    assert_eq!(container_ports(&d, &net).len(), 2, "{:?}", ports(&d));
}

#[test]
fn errors_reach_the_docker_user() {
    let Some((d, dk, plugin)) = ready("dkerr") else {
        return;
    };
    let p = prefix(5);
    let nets0 = d.ok(&["network", "ls"]);
    // Unknown option: refused, nothing made, and the subnet is free again afterwards.
    let e = dk.fails(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--subnet",
        &format!("{p}.0/24"),
        "-o",
        "colour=blue",
        "bad",
    ]);
    assert!(
        e.contains("unknown option -o colour") && e.contains("mtu"),
        "{e}"
    );
    assert_eq!(d.ok(&["network", "ls"]), nets0);
    create_network(&dk, &plugin, "small", &["--subnet", &format!("{p}.0/30")]);
    // Overlap.
    let e = dk.fails(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--subnet",
        &format!("{p}.0/24"),
        "over",
    ]);
    assert!(
        e.contains("overlaps") && e.contains("choose another --subnet"),
        "{e}"
    );
    // Pool exhausted: a /30 holds the gateway and one container.
    run_sleeper(&dk, "s1", &["--network", "small"]);
    let e = dk.fails(&[
        "run",
        "-d",
        "--name",
        "s2",
        "--network",
        "small",
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(e.contains("is full") && e.contains("larger subnet"), "{e}");
    // --ip outside the pool: dockerd 20.10 checks it against the subnet itself before it asks
    // the plugin (whose own answer, "outside the pool ... pick an --ip inside", is what an
    // engine without that check prints).
    let e = dk.fails(&[
        "run",
        "-d",
        "--name",
        "s3",
        "--network",
        "small",
        "--ip",
        "10.254.254.9",
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(e.contains("10.254.254.9") && e.contains("subnet"), "{e}");
    // IPv6 is refused with what to do.
    let e = dk.fails(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--ipv6",
        "--subnet",
        &format!("{}.0/24", prefix(6)),
        "--subnet",
        "fd00:70::/64",
        "six",
    ]);
    assert!(e.contains("IPv6"), "{e}");
    // None of the failures left a port or a lease behind: one container, one lease.
    let net = dk.ok(&["network", "inspect", "-f", "{{.Id}}", "small"]);
    assert_eq!(container_ports(&d, &net[..12]).len(), 1, "{:?}", ports(&d));
    let ins: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", &net[..12]])).unwrap();
    assert_eq!(
        ins[0]["containers"].as_object().map(|m| m.len()),
        Some(1),
        "{ins}"
    );
}

#[test]
fn attach_by_pid_and_by_netns_of_a_docker_container() {
    if !need_root("dkatt") || !dockerd::available() {
        return;
    }
    let d = Daemon::start("dkatt");
    let dk = Dockerd::start("dkatt");
    let p = prefix(7);
    let net = unique("n");
    d.ok(&["network", "create", "--subnet", &format!("{p}.0/24"), &net]);
    let peer = unique("p");
    d.run(&peer, &["--network", &net]);
    let (a, b) = (unique("a"), unique("b"));
    run_sleeper(&dk, &a, &["--network", "none"]);
    run_sleeper(&dk, &b, &["--network", "none"]);
    d.track(&a);
    d.track(&b);
    d.ok(&[
        "attach",
        "--name",
        &a,
        "--pid",
        &dk.pid_of(&a).to_string(),
        &net,
    ]);
    d.ok(&["attach", "--name", &b, "--netns", &netns_of(&dk, &b), &net]);
    assert!(
        dk.ping(&a, &d.ip_of(&peer)),
        "{a} cannot reach a vswitch container"
    );
    assert!(dk.ping(&a, &d.ip_of(&b)), "{a} cannot reach {b}");
    // What is not a network namespace is refused, saying so.
    let e = d.fails(&[
        "attach",
        "--name",
        &unique("x"),
        "--netns",
        "/etc/hostname",
        &net,
    ]);
    assert!(e.contains("not a network namespace"), "{e}");
    let e = d.fails(&["attach", "--name", &unique("x"), "--pid", "999999999", &net]);
    assert!(e.contains("/proc/999999999/ns/net"), "{e}");
}

#[test]
fn a_macvlan_network_through_docker_puts_containers_on_the_lan() {
    let Some((d, dk, plugin)) = ready("dkmvl") else {
        return;
    };
    let p = prefix(6);
    let lan = e2e::lan::Lan::new(&format!("{p}.1/24"));
    let net = create_network(
        &dk,
        &plugin,
        "lan",
        &[
            "-o",
            "vswitch.driver=macvlan",
            "-o",
            &format!("parent={}", lan.parent),
            "--subnet",
            &format!("{p}.0/24"),
            "--gateway",
            &format!("{p}.1"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(v[0]["driver"], "macvlan", "{v}");
    run_sleeper(&dk, "m1", &["--network", "lan"]);
    let ip = dk.ip_on("m1", "lan");
    // The LAN machine reaches the container directly, and the container its router.
    assert!(
        lan.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip])
            .status
            .success(),
        "the LAN cannot reach {ip}"
    );
    assert!(dk.ping("m1", &format!("{p}.1")));
    let routes = dk.ok(&["exec", "m1", "ip", "route"]);
    assert!(routes.contains(&format!("default via {p}.1")), "{routes}");
}

/// A /24 of this test process outside [`prefix`]'s (its third octets stop at 239): `10.A.C`
/// with C in 240..=255 (k < 2).
fn spare(k: u32) -> String {
    let pid = std::process::id();
    format!("10.{}.{}", 70 + pid % 8, 240 + (pid / 8 % 8) * 2 + k)
}

#[test]
fn an_overlay_network_through_docker_reaches_a_linux_vxlan_peer() {
    let Some((mut d, dk, plugin)) = ready("dkovl") else {
        return;
    };
    let (p, ul) = (spare(0), spare(1));
    // Another host: Linux's own vxlan device (VNI 4242, a UDP port of this test) in a
    // namespace behind an underlay veth, with the overlay address .200.
    let port = (4800 + std::process::id() % 400) as u16;
    let peer = e2e::vxlan::VxlanPeer::new(&ul, 4242, port, &format!("{p}.200/24"));
    let net = create_network(
        &dk,
        &plugin,
        "ov",
        &[
            "-o",
            "vswitch.driver=overlay",
            "-o",
            "vni=4242",
            "-o",
            &format!("vtep={}", peer.local),
            "-o",
            &format!("peers={}", peer.remote),
            "-o",
            &format!("port={port}"),
            "--subnet",
            &format!("{p}.0/24"),
            "--ip-range",
            &format!("{p}.0/25"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(v[0]["driver"], "overlay", "{v}");
    assert_eq!(v[0]["mtu"], 1450, "the underlay's 1500 minus 50: {v}");
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "o1",
        "--network",
        "ov",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip = dk.ip_on("o1", "ov");
    assert!(ip.starts_with(&format!("{p}.")), "{ip}");
    // The container got the overlay's MTU: full-sized packets fit in the tunnel.
    assert_eq!(
        dk.ok(&["exec", "o1", "cat", "/sys/class/net/eth0/mtu"]),
        "1450"
    );
    // Across the tunnel both ways, full-sized packets included.
    let remote = format!("{p}.200");
    assert!(
        dk.ping("o1", &remote),
        "container -> Linux vxlan peer\n{}",
        d.ok(&["stats", "--json"])
    );
    assert!(peer.ping(&ip), "Linux vxlan peer -> container");
    // (The host's ping in the container's namespace: busybox's has no -M.)
    let big = sh(
        "nsenter",
        &[
            &format!("--net={}", netns_of(&dk, "o1")),
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-s",
            "1422",
            "-M",
            "do",
            &remote,
        ],
    );
    assert!(
        big.status.success(),
        "1450-byte packets do not cross: {}{}",
        String::from_utf8_lossy(&big.stdout),
        String::from_utf8_lossy(&big.stderr)
    );
    // The peer's MAC is learned against its VTEP, and the frames went through vswitch's
    // tunnel.
    peer.assert_learned_by(&d, &net);
    let s: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    let t = &s["tunnels"][0];
    assert!(
        t["rx_datagrams"].as_u64() >= Some(4) && t["tx_datagrams"].as_u64() >= Some(4),
        "{t}"
    );
    // TCP both ways across the tunnel: iperf3 between the container's namespace and the peer.
    let log = dk.dir.join("iperf3-ov.log");
    for rev in [false, true] {
        let srv = Iperf3Server::start(&format!("/run/netns/{}", peer.ns.name), &log);
        let mut a = vec![format!("--net={}", netns_of(&dk, "o1"))];
        a.extend(["iperf3", "-c", &remote, "-t", "2", "-J"].map(String::from));
        if rev {
            a.push("-R".into());
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = sh("nsenter", &a);
        drop(srv);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        eprintln!(
            "docker overlay (reverse {rev}): iperf3 {:.2} Gbit/s",
            bps / 1e9
        );
        assert!(
            bps > 10e6,
            "iperf3 (reverse {rev}) moved only {bps} bit/s: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let page = sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            &peer.ns.name,
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{ip}/index.html"),
        ],
    );
    assert!(page.contains("hello from vswitch"), "{page}");
    // A kill -9 of vswitch: the tunnel comes back with the network from the state file.
    d.restart(true);
    assert!(
        dk.ping("o1", &remote),
        "no tunnel after vswitch restarted\n{}",
        d.log()
    );
    assert!(
        peer.ping(&ip),
        "Linux vxlan peer -> container after the restart"
    );
    // Removing the container and the network closes the tunnel.
    dk.ok(&["rm", "-f", "o1"]);
    dk.ok(&["network", "rm", "ov"]);
    assert!(!d.ok(&["ports"]).contains("vxlan"), "{}", d.ok(&["ports"]));
}
