//! Overlay networks across "hosts", end to end. Each host is a network namespace of its own
//! running its own vswitch daemon (own socket and state); the hosts are joined by an underlay
//! of veth links (to a kernel bridge in an "underlay" namespace of the test: the underlay
//! stands for the physical network, container traffic never touches a kernel bridge).
//! Interop: one host runs a Linux `vxlan` device on a kernel bridge instead of vswitch.

use e2e::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `vswitch stats --json` of a daemon, its first tunnel's counters.
fn tunnel_stats(d: &Daemon) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    v["tunnels"][0].clone()
}

fn counter(d: &Daemon, name: &str) -> u64 {
    tunnel_stats(d)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Whether this kernel takes UDP-tunnel GSO packets from a TAP (`TUN_F_UDP_TUNNEL_GSO`,
/// Linux 6.17): there, every tunnel port must have its tunnel TAP.
fn kernel_has_tunnel_gso() -> bool {
    switch::testing::kernel_at_least(6, 17)
}

/// [`require`]s the tunnel TAP: the parts of a test that check it run only where the kernel has
/// it; elsewhere they are a recorded skip (a failure under `CI=true`), never silently absent.
fn require_tunnel_tap() -> bool {
    require(
        kernel_has_tunnel_gso(),
        "kernel older than 6.17: no TUN_F_UDP_TUNNEL_GSO, so no tunnel TAP",
    )
}

/// A tshark capture of VXLAN traffic on `ul0` in namespace `ns`, written to `file`.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
    err: StreamLines,
}

impl Capture {
    /// Starts tshark and waits for its "Capturing on" line and its file. (Measured here: the
    /// first 10-50 ms after that line are not captured yet, so a settle delay stays; a probe
    /// packet sent until the capture shows it would be exact, but needs tshark to dissect every
    /// packet live (`-P`), which cannot keep up with iperf3 on this machine.)
    fn start(ns: &str, file: std::path::PathBuf, port: u16) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tshark", "-q", "-i", "ul0", "-f"])
            .arg(format!("udp port {port}"))
            .arg("-w")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tshark (apt-get install tshark)");
        let err = StreamLines::take(&mut child);
        err.wait_for("Capturing on", "tshark on ul0", Duration::from_secs(20));
        wait_until("tshark's capture file", Duration::from_secs(20), || {
            file.exists()
        });
        std::thread::sleep(Duration::from_millis(500));
        Capture { child, file, err }
    }

    /// Stops the capture and returns the packets matching the display filter `filter`. A
    /// capture that did not end cleanly or wrote no readable file fails the test (a count of
    /// 0 must mean "none seen", never "tshark failed").
    fn count(mut self, filter: &str, port: u16) -> usize {
        // The last frames may still be crossing the veth (no event says all were captured).
        std::thread::sleep(Duration::from_millis(300));
        let _ = sh("kill", &["-INT", &self.child.id().to_string()]);
        let st = self.child.wait().expect("wait for tshark");
        assert!(
            st.success(),
            "tshark capture ended with {st}:\n{}",
            self.err.text()
        );
        decode(&self.file, filter, port).lines().count()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tshark -r FILE -Y FILTER` with VXLAN decoded on `port` (and iperf3's port as plain data);
/// one line per matching packet. A failing tshark (no file, bad filter) fails the test.
fn decode(file: &std::path::Path, filter: &str, port: u16) -> String {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("udp.port=={port},vxlan")])
        // iperf3's random payload must not be taken for some protocol by a heuristic.
        .args(["-d", "tcp.port==5201,data", "-Y", filter])
        .output()
        .expect("run tshark");
    assert!(
        o.status.success(),
        "tshark -r {} -Y {filter:?} failed ({}): {}",
        file.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Turns off offloads on `ul0` so that it behaves like a wire: a capture there sees packets as
/// they are on the wire (with offloads, 64 KiB super-packets before segmentation), and
/// checksums are complete. (A veth with TX checksum offload hands the other side partial
/// inner checksums — a Linux vxlan device's inner TCP checksums stay partial across it, which
/// a userspace receiver cannot tell from wrong ones; a real wire never carries them.)
fn wire_view(ns: &str) {
    let _ = sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ethtool",
            "-K",
            "ul0",
            "tx",
            "off",
            "tso",
            "off",
            "gso",
            "off",
            "tx-udp-segmentation",
            "off",
            "tx-udp_tnl-segmentation",
            "off",
            "gro",
            "off",
        ],
    );
}

/// iperf3 from container `client` of daemon `d` to `server_ip`, the server running in the
/// namespace at `server_netns`; returns the received bit/s.
fn iperf_across(
    d: &Daemon,
    client: &str,
    server_netns: &str,
    server_ip: &str,
    reverse: bool,
) -> f64 {
    let log = d.dir.join(format!("iperf-{client}.log"));
    let srv = Iperf3Server::start(server_netns, &log);
    let mut a = vec!["iperf3", "-c", server_ip, "-t", "2", "-J"];
    if reverse {
        a.push("-R");
    }
    let out = d.exec(client, &a);
    drop(srv);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "iperf3 (reverse {reverse}) failed: {text}
{}",
                d.ok(&["stats", "--json"])
            )
        })
}

#[test]
fn overlay_three_hosts_ping_iperf_local_stays_local_and_flood_reaches_each_peer_once() {
    if !need_root("overlay_three_hosts") {
        return;
    }
    let ul = Underlay::new("ov", 3);
    // Host 3 cuts every frame into datagrams on its socket (no tunnel TAP); hosts 1 and 2 send
    // whole frames where the kernel can. All three must interoperate.
    let daemons = ul.daemons("ov", &["--tunnel-offload", "off"]);
    ul.overlay(&daemons, 90, 4242);
    let net: serde_json::Value =
        serde_json::from_str(&daemons[0].ok(&["network", "inspect", "ov"])).unwrap();
    assert_eq!(net[0]["driver"], "overlay");
    assert_eq!(net[0]["mtu"], 1450, "underlay 1500 minus 50");
    assert!(net[0]["gateway"].is_null(), "no gateway unless asked for");
    let names: Vec<String> = (0..3).map(|k| unique(&format!("oc{k}"))).collect();
    for (k, d) in daemons.iter().enumerate() {
        d.run(&names[k], &["--network", "ov"]);
        // Overlay containers attach by TAP unless told otherwise (cheaper per byte).
        assert_eq!(d.container(&names[k])["endpoints"][0]["attach"], "tap");
    }
    let ips: Vec<String> = (0..3).map(|k| daemons[k].ip_of(&names[k])).collect();
    for (k, ip) in ips.iter().enumerate() {
        assert!(ip.starts_with(&format!("10.90.{}.", k + 1)), "{ip}");
    }
    // The containers got the overlay MTU.
    let mtu = daemons[0].exec(&names[0], &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1450");
    // ... and, without a tunnel TAP, GSO frames no bigger than one UDP GSO send of 44 VXLAN
    // datagrams (8 + 14 + 1450 bytes each in 65507); with one, the kernel's default.
    let segs = |k: usize| {
        let link = daemons[k].exec(&names[k], &["ip", "-d", "link", "show", "eth0"]);
        String::from_utf8_lossy(&link.stdout).into_owned()
    };
    assert!(segs(2).contains("gso_max_segs 44 "), "{}", segs(2));
    assert_eq!(tunnel_stats(&daemons[2])["tunnel_offload"], false);
    if require_tunnel_tap() {
        assert!(segs(0).contains("gso_max_segs 65535 "), "{}", segs(0));
    }
    // Everyone reaches everyone.
    for a in 0..3 {
        for (b, ip) in ips.iter().enumerate() {
            if a != b {
                assert!(
                    daemons[a].ping(&names[a], ip),
                    "host {a} -> host {b}\n{}\n{}",
                    daemons[a].log(),
                    daemons[a].ok(&["stats", "--json"])
                );
            }
        }
    }
    // The MAC of c1 is learned on host 2 against host 1's VTEP.
    let fdb = daemons[1].ok(&["fdb", "ov"]);
    let mac1 = daemons[0].container(&names[0])["endpoints"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let line = fdb
        .lines()
        .find(|l| l.contains(&mac1))
        .unwrap_or_else(|| panic!("{fdb}"));
    assert!(line.contains(&format!("vtep:{}", ul.ip(1))), "{line}");
    // TCP across the tunnel: host 1 <-> host 2, and host 1 <-> host 3 (whole frames one way,
    // datagrams the other).
    for k in [1, 2] {
        let ns = daemons[k].container(&names[k])["netns"]
            .as_str()
            .unwrap()
            .to_string();
        for rev in [false, true] {
            let bps = iperf_across(&daemons[0], &names[0], &ns, &ips[k], rev);
            assert!(bps > 1e6, "iperf3 moved only {bps} bit/s");
            eprintln!(
                "overlay iperf3 host1 <-> host{} (reverse {rev}): {:.2} Gbit/s",
                k + 1,
                bps / 1e9
            );
        }
    }
    assert_eq!(counter(&daemons[2], "tx_tunnel_gso"), 0);
    // Where the kernel can, the containers' 64 KiB TCP frames crossed whole: one tunnel GSO
    // packet each way per frame, received as such on the other host (host 3 too: receiving
    // whole packets needs no TAP).
    if require_tunnel_tap() {
        assert!(counter(&daemons[2], "rx_tunnel_gso") > 100);
        for (k, d) in daemons.iter().take(2).enumerate() {
            let t = tunnel_stats(d);
            assert_eq!(t["tunnel_offload"], true, "host {k}: {t}");
            assert!(counter(d, "tx_tunnel_gso") > 100, "host {k}: {t}");
            assert!(counter(d, "rx_tunnel_gso") > 100, "host {k}: {t}");
            assert_eq!(counter(d, "tx_tunnel_errors"), 0, "host {k}: {t}");
        }
    }

    // Two containers on one host: their traffic stays on the host.
    let local = unique("ocl");
    // A veth container beside host 1's TAP one: both attach modes on one overlay.
    daemons[0].run(&local, &["--network", "ov", "--attach", "veth"]);
    let lip = daemons[0].ip_of(&local);
    assert!(daemons[0].ping(&names[0], &lip));
    let cap = Capture::start(&ul.hosts[0].name, daemons[0].dir.join("local.pcap"), 4789);
    let before = tunnel_stats(&daemons[0])["tx_datagrams"].as_u64().unwrap();
    let out = daemons[0].exec(&names[0], &["ping", "-c", "20", "-i", "0.05", &lip]);
    assert!(out.status.success());
    let after = tunnel_stats(&daemons[0])["tx_datagrams"].as_u64().unwrap();
    let seen = cap.count(&format!("ip.addr == {lip}"), 4789);
    assert_eq!(seen, 0, "local traffic went into the tunnel");
    assert!(
        after - before < 10,
        "{} datagrams into the tunnel during 20 local pings",
        after - before
    );

    // A frame to an unknown MAC reaches every peer exactly once, and is never flooded back.
    let ghost_mac = "02:99:99:99:99:99";
    daemons[0].exec(
        &names[0],
        &[
            "ip",
            "neigh",
            "replace",
            "10.90.9.9",
            "lladdr",
            ghost_mac,
            "dev",
            "eth0",
        ],
    );
    let caps: Vec<Capture> = (0..3)
        .map(|k| {
            Capture::start(
                &ul.hosts[k].name,
                daemons[k].dir.join(format!("cap{k}.pcap")),
                4789,
            )
        })
        .collect();
    let _ = daemons[0].exec(
        &names[0],
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.90.9.9"],
    );
    let filter = format!("eth.dst == {ghost_mac} && ip.dst == 10.90.9.9");
    let counts: Vec<usize> = caps.into_iter().map(|c| c.count(&filter, 4789)).collect();
    // Host 1's capture sees its 2 copies go out (one per peer) and none come back; hosts 2 and
    // 3 each see exactly 1 per ping.
    assert_eq!(counts, vec![6, 3, 3], "captures on ul0 of hosts 1, 2, 3");
}

#[test]
fn overlay_vnis_are_isolated_and_peers_change_without_disturbing_traffic() {
    if !need_root("overlay_vnis") {
        return;
    }
    let ul = Underlay::new("oi", 2);
    let d1 = Daemon::start_in_netns("oi1", &ul.hosts[0].name, &[]);
    let d2 = Daemon::start_in_netns("oi2", &ul.hosts[1].name, &[]);
    let mk = |d: &Daemon, h: usize, name: &str, vni: &str, peers: Option<&str>| {
        let net = if name == "green" { 94 } else { 91 };
        let mut a = vec![
            "network".to_string(),
            "create".into(),
            "--driver".into(),
            "overlay".into(),
            "--subnet".into(),
            format!("10.{net}.0.0/16"),
            "--ip-range".into(),
            format!("10.{net}.{h}.0/24"),
            "-o".into(),
            format!("vni={vni}"),
            "-o".into(),
            format!("vtep={}", ul.ip(h)),
        ];
        if let Some(p) = peers {
            a.push("-o".into());
            a.push(format!("peers={p}"));
        }
        a.push(name.into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        d.ok(&a);
    };
    // Host 1: VNI 100 and 300. Host 2: VNI 200 and 300 (300 without peers at first).
    mk(&d1, 1, "red", "100", Some(&ul.ip(2)));
    mk(&d2, 2, "blue", "200", Some(&ul.ip(1)));
    mk(&d1, 1, "green", "300", Some(&ul.ip(2)));
    mk(&d2, 2, "green", "300", None);
    // The same VNI twice on one switch is refused.
    let err = d1.fails(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.92.0.0/16",
        "-o",
        "vni=100",
        "-o",
        &format!("vtep={}", ul.ip(1)),
        "dup",
    ]);
    assert!(err.contains("vni 100 is already used"), "{err}");
    let (r1, b2, g1, g2) = (unique("r"), unique("b"), unique("g"), unique("g"));
    d1.run(&r1, &["--network", "red"]);
    d2.run(&b2, &["--network", "blue"]);
    d1.run(&g1, &["--network", "green"]);
    d2.run(&g2, &["--network", "green"]);
    let bip = d2.ip_of(&b2);
    let rip = d1.ip_of(&r1);
    assert!(!d1.ping(&r1, &bip), "VNI 100 reached VNI 200");
    assert!(!d2.ping(&b2, &rip), "VNI 200 reached VNI 100");
    let drops = tunnel_stats(&d2)["rx_decap_drops"]["unknown_vni"]
        .as_u64()
        .unwrap();
    assert!(drops > 0, "host 2 counted VNI 100 as unknown");
    // Green: host 2 does not know host 1 yet, so its replies are dropped there...
    let g1ip = d1.ip_of(&g1);
    let g2ip = d2.ip_of(&g2);
    assert!(!d1.ping(&g1, &g2ip));
    assert!(
        tunnel_stats(&d2)["rx_decap_drops"]["unknown_vtep"]
            .as_u64()
            .unwrap()
            > 0
            || tunnel_stats(&d2)["rx_decap_drops"]["unknown_vni"]
                .as_u64()
                .unwrap()
                > drops
    );
    // ...until it is connected as a peer.
    d2.ok(&["network", "connect", "--peer", &ul.ip(1), "green"]);
    // g1's neighbour entry for g2 failed a moment ago: start resolution afresh.
    let _ = d1.exec(&g1, &["ip", "neigh", "flush", "all"]);
    assert!(
        d1.ping(&g1, &g2ip),
        "after connect --peer\n{}\n{}\n{}\n{}",
        d1.ok(&["stats", "--json"]),
        d2.ok(&["stats", "--json"]),
        d2.ok(&["ports"]),
        d2.ok(&["fdb"])
    );
    let net: serde_json::Value =
        serde_json::from_str(&d2.ok(&["network", "inspect", "green"])).unwrap();
    assert_eq!(net[0]["options"]["peers"], ul.ip(1));
    // Peers change while a ping runs on red: connecting and removing a bogus peer on host 1's
    // green network does not lose a single reply of that ping.
    let flood = Command::new(vswitch_bin())
        .arg("--socket")
        .arg(&d1.socket)
        .args([
            "exec", &g1, "--", "ping", "-c", "20", "-i", "0.1", "-W", "1", &g2ip,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..3 {
        d1.ok(&["network", "connect", "--peer", "192.168.77.200", "green"]);
        d1.ok(&["network", "disconnect", "--peer", "192.168.77.200", "green"]);
    }
    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("20 received"),
        "replies lost while peers changed:\n{text}"
    );
    // Peers survive a restart of the daemon.
    let mut d2 = d2;
    d2.restart(false);
    assert!(d1.ping(&g1, &g2ip), "after host 2 restarted");
    assert!(d2.ping(&g2, &g1ip));
    d2.fails(&["network", "connect", "--peer", &ul.ip(1), "green"]);
    // The tunnel port goes with the last overlay network that uses it.
    for c in [&g2, &b2] {
        d2.ok(&["rm", "-f", c]);
    }
    d2.ok(&["network", "rm", "green", "blue"]);
    let ports = d2.ok(&["ports"]);
    assert!(!ports.contains("vxlan"), "{ports}");
}

/// One host runs vswitch; the other a Linux `vxlan` device on a kernel bridge with a
/// namespace behind it. Ping and iperf3 both ways; tshark decodes the underlay traffic as
/// VXLAN with no malformed packet.
#[test]
fn overlay_interop_with_linux_vxlan() {
    if !need_root("overlay_interop") {
        return;
    }
    let ul = Underlay::new("ok", 2);
    let d = Daemon::start_in_netns("ok1", &ul.hosts[0].name, &[]);
    d.ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.93.0.0/16",
        "--ip-range",
        "10.93.1.0/24",
        "-o",
        "vni=77",
        "-o",
        &format!("vtep={}", ul.ip(1)),
        "-o",
        &format!("peers={}", ul.ip(2)),
        "ov",
    ]);
    let c = unique("kc");
    d.run(&c, &["--network", "ov"]);
    let cip = d.ip_of(&c);
    // Host 2: vxlan0 (VNI 77, port 4789) and a veth to namespace k, on kernel bridge br0.
    let h2 = &ul.hosts[1].name;
    let k = Netns::new(&unique("kk"));
    let ip2 = |args: &[&str]| {
        let mut a = vec!["-n", h2.as_str()];
        a.extend_from_slice(args);
        sh_ok("ip", &a);
    };
    ip2(&[
        "link",
        "add",
        "vxlan0",
        "type",
        "vxlan",
        "id",
        "77",
        "dstport",
        "4789",
        "local",
        &ul.ip(2),
        "remote",
        &ul.ip(1),
        "dev",
        "ul0",
    ]);
    ip2(&["link", "add", "br0", "type", "bridge"]);
    ip2(&["link", "set", "vxlan0", "master", "br0", "up"]);
    ip2(&[
        "link", "add", "kv", "type", "veth", "peer", "name", "eth0", "netns", &k.name,
    ]);
    ip2(&["link", "set", "kv", "master", "br0", "mtu", "1450", "up"]);
    ip2(&["link", "set", "br0", "up"]);
    let _ = sh(
        "ip",
        &[
            "netns",
            "exec",
            h2,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=0",
        ],
    );
    sh_ok(
        "ip",
        &["-n", &k.name, "link", "set", "eth0", "mtu", "1450", "up"],
    );
    sh_ok(
        "ip",
        &["-n", &k.name, "addr", "add", "10.93.2.5/16", "dev", "eth0"],
    );

    wire_view(&ul.hosts[0].name);
    wire_view(&ul.hosts[1].name);
    let cap = Capture::start(&ul.hosts[0].name, d.dir.join("interop.pcap"), 4789);
    assert!(
        d.ping(&c, "10.93.2.5"),
        "vswitch -> kernel vxlan\n{}",
        d.ok(&["stats", "--json"])
    );
    let ping = k.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &cip]);
    assert!(ping.status.success(), "kernel vxlan -> vswitch");
    // iperf3 both ways, server in k.
    let mut rates = Vec::new();
    for rev in [false, true] {
        let bps = iperf_across(&d, &c, &format!("/run/netns/{}", k.name), "10.93.2.5", rev);
        assert!(bps > 1e6, "iperf3 (reverse {rev}) moved only {bps} bit/s");
        rates.push(bps);
    }
    eprintln!("interop iperf3: vswitch->kernel {:.2} Gbit/s, kernel->vswitch {:.2} Gbit/s (offloads off on ul0)", rates[0] / 1e9, rates[1] / 1e9);
    let file = cap.file.clone();
    let vxlan = cap.count("vxlan", 4789);
    assert!(vxlan > 1000, "only {vxlan} VXLAN packets decoded");
    let inner_tcp = decode(&file, "vxlan && tcp", 4789).lines().count();
    assert!(inner_tcp > 1000, "{inner_tcp} VXLAN packets with inner TCP");
    let bad = decode(&file, "_ws.malformed || _ws.expert.severity == error", 4789);
    assert!(
        bad.is_empty(),
        "malformed packets:\n{}",
        bad.lines().take(10).collect::<Vec<_>>().join("\n")
    );
    let icmp = decode(&file, "vxlan.vni == 77 && icmp", 4789)
        .lines()
        .count();
    assert!(icmp >= 8, "{icmp} pings decoded with VNI 77");

    // With the offloads of vswitch's side of the underlay on (a veth's defaults), vswitch
    // sends 64 KiB TCP frames as single UDP-tunnel GSO packets, and Linux's vxlan device takes
    // them whole. (The kernel's side stays wire-like: with its offloads on, even its small
    // packets would arrive with partial inner checksums; see `wire_view`.)
    if !require_tunnel_tap() {
        return;
    }
    sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            &ul.hosts[0].name,
            "ethtool",
            "-K",
            "ul0",
            "tx",
            "on",
            "tso",
            "on",
            "gso",
            "on",
            "tx-udp-segmentation",
            "on",
            "tx-udp_tnl-segmentation",
            "on",
        ],
    );
    let tx0 = counter(&d, "tx_tunnel_gso");
    for rev in [false, true] {
        let bps = iperf_across(&d, &c, &format!("/run/netns/{}", k.name), "10.93.2.5", rev);
        assert!(
            bps > 1e6,
            "iperf3 with offloads (reverse {rev}) moved only {bps} bit/s"
        );
        eprintln!(
            "interop iperf3 with offloads (reverse {rev}): {:.2} Gbit/s",
            bps / 1e9
        );
    }
    let t = tunnel_stats(&d);
    assert!(
        counter(&d, "tx_tunnel_gso") > tx0 + 100,
        "vswitch -> kernel: {t}"
    );
    assert_eq!(counter(&d, "tx_tunnel_errors"), 0, "{t}");
}

/// A host whose firewall drops forwarded packets by default (as Docker sets it up) would drop
/// the tunnel TAP's packets. Host 1 has such a firewall and the default `--tunnel-offload
/// auto`: no TAP, the daemon says why and how to have it, and TCP crosses on the socket path.
/// Host 3 has the same firewall plus the accept rule the daemon names, and `--tunnel-offload
/// on`: TCP crosses as whole tunnel GSO packets. (Without the rule it crawls at a few hundred
/// kbit/s: the forwarded packets are dropped.)
#[test]
fn overlay_with_a_forward_drop_policy_keeps_the_socket_path_unless_told() {
    if !need_root("overlay_forward_policy") {
        return;
    }
    if !require_tunnel_tap() {
        return;
    }
    let ul = Underlay::new("of", 3);
    for k in [0, 2] {
        let nft = |rule: &str| sh_ok("ip", &["netns", "exec", &ul.hosts[k].name, "nft", rule]);
        nft("add table inet vswfw");
        nft("add chain inet vswfw fw { type filter hook forward priority 0; policy drop; }");
        if k == 2 {
            nft(r#"insert rule inet vswfw fw iifname "vsx*" accept"#);
        }
    }
    let daemons = ul.daemons("of", &["--tunnel-offload", "on"]);
    ul.overlay(&daemons, 94, 94);
    let why = "firewall drops forwarded packets by default";
    assert!(daemons[0].log().contains(why), "{}", daemons[0].log());
    assert!(
        daemons[0].log().contains("DOCKER-USER"),
        "{}",
        daemons[0].log()
    );
    assert_eq!(tunnel_stats(&daemons[0])["tunnel_offload"], false);
    assert!(!daemons[1].log().contains(why), "{}", daemons[1].log());
    assert_eq!(tunnel_stats(&daemons[2])["tunnel_offload"], true);
    let names: Vec<String> = (0..3).map(|k| unique(&format!("of{k}"))).collect();
    for (k, d) in daemons.iter().enumerate() {
        d.run(&names[k], &["--network", "ov"]);
    }
    let ip2 = daemons[1].ip_of(&names[1]);
    let ns2 = daemons[1].container(&names[1])["netns"]
        .as_str()
        .unwrap()
        .to_string();
    for k in [0, 2] {
        let bps = iperf_across(&daemons[k], &names[k], &ns2, &ip2, false);
        assert!(bps > 1e6, "host {}: iperf3 moved only {bps} bit/s", k + 1);
    }
    assert_eq!(counter(&daemons[0], "tx_tunnel_gso"), 0);
    assert!(counter(&daemons[2], "tx_tunnel_gso") > 100);
}

/// An overlay set above what its underlay carries (`-o mtu=1500` on a 1500-byte underlay, so
/// containers get 1500 where 1450 fits): full-sized packets are answered with ICMP
/// "fragmentation needed" (as Linux's vxlan device does), so TCP lowers its MSS and moves data
/// both ways, host 1 sending through its tunnel TAP (where the kernel has one) and host 2
/// through its socket, and `ping -M do` is told the overlay's real MTU. Without the replies
/// full-sized segments vanish and TCP stalls.
#[test]
fn overlay_above_the_underlay_mtu_answers_full_sized_packets_with_icmp() {
    if !need_root("overlay_pmtu") {
        return;
    }
    let ul = Underlay::new("om", 2);
    let d = [
        Daemon::start_in_netns("om0", &ul.hosts[0].name, &[]),
        Daemon::start_in_netns("om1", &ul.hosts[1].name, &["--tunnel-offload", "off"]),
    ];
    ul.overlay_with(&d, 86, 86, &["-o", "mtu=1500"]);
    let (a1, a2, b) = (unique("oma1"), unique("oma2"), unique("omb"));
    d[0].run(&a1, &["--network", "ov"]);
    d[0].run(&a2, &["--network", "ov"]);
    d[1].run(&b, &["--network", "ov"]);
    let link = d[0].exec(&a1, &["ip", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("mtu 1500"),
        "the container has the network's MTU"
    );
    let b_ip = d[1].ip_of(&b);
    assert!(d[0].ping(&a1, &b_ip), "small packets cross");

    // Each sender fresh (a receiver advertises an MSS from a path MTU it has learnt): a1 to b,
    // then b to a2.
    let netns = |d: &Daemon, c: &str| d.container(c)["netns"].as_str().unwrap().to_string();
    let fwd = iperf_across(&d[0], &a1, &netns(&d[1], &b), &b_ip, false);
    let rev = iperf_across(&d[1], &b, &netns(&d[0], &a2), &d[0].ip_of(&a2), false);
    assert!(
        fwd > 50e6 && rev > 50e6,
        "TCP adapts to the overlay's MTU: {fwd} / {rev} bit/s"
    );
    for h in &d {
        assert!(counter(h, "tx_icmp_too_big") >= 1, "{}", tunnel_stats(h));
        let v: serde_json::Value = serde_json::from_str(&h.ok(&["stats", "--json"])).unwrap();
        assert!(
            v["counters"]["drop_too_big"].as_u64() >= Some(1),
            "the switch counts the drops as too_big: {}",
            v["counters"]
        );
    }

    // A fresh sender (no path MTU cached yet) is told the real MTU by the reply.
    let told = (0..3).any(|_| {
        let o = d[0].exec(
            &a2,
            &[
                "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", &b_ip,
            ],
        );
        String::from_utf8_lossy(&o.stdout).contains("mtu = 1450")
    });
    assert!(
        told,
        "ping -M do -s 1472 gets fragmentation needed, mtu 1450"
    );
    let fits = d[0].exec(
        &a2,
        &[
            "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &b_ip,
        ],
    );
    assert!(fits.status.success(), "1450-byte packets cross");
    let peer_mtu = |k: usize| {
        let v: serde_json::Value =
            serde_json::from_str(&d[k].ok(&["network", "inspect", "ov"])).unwrap();
        v[0]["peers"][ul.ip(2 - k)]["mtu"].as_u64()
    };
    assert_eq!(
        (peer_mtu(0), peer_mtu(1)),
        (Some(1450), Some(1450)),
        "network inspect shows what each peer carries"
    );

    // The underlay shrinks under the running network: each daemon sees the new path MTU
    // within a few seconds and answers with the new limit (host 1 sends through its tunnel
    // TAP, host 2 through its socket).
    for (k, h) in ul.hosts.iter().enumerate() {
        let p = format!("p{}", k + 1);
        sh_ok("ip", &["-n", &ul.sw.name, "link", "set", &p, "mtu", "1400"]);
        sh_ok("ip", &["-n", &h.name, "link", "set", "ul0", "mtu", "1400"]);
    }
    let a2_ip = d[0].ip_of(&a2);
    for (h, from, to) in [(&d[0], &a2, &b_ip), (&d[1], &b, &a2_ip)] {
        let told = (0..20).any(|_| {
            let o = h.exec(
                from,
                &["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1422", to],
            );
            let out = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            out.contains("mtu = 1350") || out.contains("mtu=1350")
        });
        assert!(told, "after the underlay's MTU fell to 1400, 1450-byte packets from {from} get fragmentation needed, mtu 1350");
        let fits = h.exec(
            from,
            &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1322", to],
        );
        assert!(fits.status.success(), "1350-byte packets from {from} cross");
    }
    assert_eq!((peer_mtu(0), peer_mtu(1)), (Some(1350), Some(1350)));
    assert!(
        d[0].log()
            .contains("carries inner packets of up to 1350 bytes (was 1450)"),
        "the change is logged"
    );
}
