//! Many hosts, one network: daemons on the same etcd store (`vswitch daemon --store`) serve
//! global overlay networks with no `-o peers=` anywhere. Each "host" is a namespace of its own
//! on a veth underlay with its own daemon; the three-member etcd cluster runs in the
//! underlay's own namespace on the bridge's address (tests/src/etcd.rs).

use e2e::etcd::Cluster;
use e2e::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "/vswitch/v1";

/// A daemon on host `k` (1-based) of `ul`, on the store of `cl`.
fn store_daemon(ul: &Underlay, cl: &Cluster, tag: &str, k: usize, extra: &[&str]) -> Daemon {
    let url = cl.url();
    let host = format!("host{k}");
    let mut args = vec!["--store", &url, "--store-host", &host];
    args.extend_from_slice(extra);
    Daemon::start_in_netns(&format!("{tag}{k}"), &ul.hosts[k - 1].name, &args)
}

/// The overlay peers (VTEP addresses) daemon `d` has on network `net` now.
fn peers(d: &Daemon, net: &str) -> BTreeSet<String> {
    let o = d.cli(&["network", "inspect", net]);
    if !o.status.success() {
        return BTreeSet::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v[0]["peers"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

/// `network create` arguments of a global overlay network `name` on `subnet`.
fn global_overlay_args<'a>(subnet: &'a str, name: &'a str) -> [&'a str; 9] {
    [
        "network", "create", "--driver", "overlay", "--scope", "global", "--subnet", subnet, name,
    ]
}

/// Waits until each of two hosts has the other (and only it) as its peer on `net`.
fn wait_two_peered(ul: &Underlay, ds: &[Daemon], net: &str) {
    wait_until(
        &format!("both hosts peered on {net}"),
        Duration::from_secs(10),
        || peers(&ds[0], net) == set(&[&ul.ip(2)]) && peers(&ds[1], net) == set(&[&ul.ip(1)]),
    );
}

/// Waits until `f` holds and returns how long it took.
fn converge(what: &str, deadline: Duration, f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    wait_until(what, deadline, f);
    t0.elapsed()
}

#[test]
fn global_overlay_three_hosts_without_peers_a_fourth_joins_and_a_killed_host_leaves() {
    if !need_root("global_overlay") || !e2e::etcd::available() {
        return;
    }
    let ul = Underlay::new("gs", 4);
    let cl = Cluster::on_underlay("gs", &ul);
    let mut ds: Vec<Daemon> = (1..=3)
        .map(|k| store_daemon(&ul, &cl, "gs", k, &[]))
        .collect();
    ds[0].ok(&global_overlay_args("10.61.0.0/16", "ov"));
    // In the store: the network and its VNI; every host's VTEP on its lease.
    let keys = cl.keys(&format!("{PREFIX}/"));
    assert!(keys.contains(&format!("{PREFIX}/networks/ov")), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{PREFIX}/vnis/"))),
        "{keys:?}"
    );
    // Every host serves it, each with the two others as peers.
    let all = [ul.ip(1), ul.ip(2), ul.ip(3)];
    let t = converge(
        "every host serving ov with the two others as peers",
        Duration::from_secs(10),
        || {
            (0..3).all(|k| {
                let want: Vec<&str> = all
                    .iter()
                    .filter(|ip| **ip != ul.ip(k + 1))
                    .map(String::as_str)
                    .collect();
                peers(&ds[k], "ov") == set(&want)
            })
        },
    );
    eprintln!("measured: network on three hosts with full membership {t:?} after create");
    let net: serde_json::Value =
        serde_json::from_str(&ds[1].ok(&["network", "inspect", "ov"])).unwrap();
    assert_eq!(
        net[0]["options"]["vtep"],
        ul.ip(2),
        "each host its own vtep"
    );
    assert_eq!(net[0]["options"]["scope"], "global");
    // A second create of the name fails on any host: the store has it.
    let e = ds[2].fails(&global_overlay_args("10.62.0.0/16", "ov"));
    assert!(e.contains("already exists"), "{e}");
    // Containers on every host reach each other.
    let names: Vec<String> = (0..3).map(|k| unique(&format!("gc{k}"))).collect();
    for (k, d) in ds.iter().enumerate() {
        d.run(&names[k], &["--network", "ov"]);
    }
    let ips: Vec<String> = (0..3).map(|k| ds[k].ip_of(&names[k])).collect();
    assert_eq!(ips.iter().collect::<BTreeSet<_>>().len(), 3, "{ips:?}");
    for a in 0..3 {
        for (b, ip) in ips.iter().enumerate() {
            if a != b {
                assert!(
                    ds[a].ping(&names[a], ip),
                    "host {a} -> host {b} ({ip})\n{}",
                    ds[a].log()
                );
            }
        }
    }
    // A new container is reachable from another host right after it is created.
    let late = unique("gl");
    let t0 = Instant::now();
    ds[1].run(&late, &["--network", "ov"]);
    let late_ip = ds[1].ip_of(&late);
    wait_until(
        "the new container reachable from host 1",
        Duration::from_secs(10),
        || {
            ds[0]
                .exec(&names[0], &["ping", "-c", "1", "-W", "1", &late_ip])
                .status
                .success()
        },
    );
    eprintln!(
        "measured: container reachable from another host {:?} after `run` began",
        t0.elapsed()
    );
    // A fourth host joins: it serves ov and the others add it.
    let t0 = Instant::now();
    let d4 = store_daemon(&ul, &cl, "gs", 4, &[]);
    let ip4 = ul.ip(4);
    wait_until(
        "host 4 in every other host's peers",
        Duration::from_secs(10),
        || (0..3).all(|k| peers(&ds[k], "ov").contains(&ip4)) && peers(&d4, "ov").len() == 3,
    );
    eprintln!(
        "measured: host join visible on the others {:?} after its daemon started",
        t0.elapsed()
    );
    let n4 = unique("gc4");
    d4.run(&n4, &["--network", "ov"]);
    let ip4c = d4.ip_of(&n4);
    assert!(
        ds[0].ping(&names[0], &ip4c),
        "host 1 -> host 4 ({ip4c})\n{}",
        d4.log()
    );
    assert!(d4.ping(&n4, &ips[2]), "host 4 -> host 3");
    // Its container's endpoint is in the store on host 4's lease, and programmed on host 1.
    let mac4 = mac_of(&d4, &n4);
    let ep4 = format!("{PREFIX}/endpoints/ov/{mac4}");
    assert_eq!(cl.keys(&ep4), vec![ep4.clone()]);
    wait_until(
        "host 4's endpoint on host 1",
        Duration::from_secs(10),
        || has_static(&ds[0], "ov", &mac4),
    );
    // Host 4 dies: its vtep leaves the others within the lease TTL (15 s).
    let mut d4 = d4;
    let t0 = Instant::now();
    d4.stop(true);
    wait_until(
        "host 4 gone from every peer list",
        Duration::from_secs(25),
        || (0..3).all(|k| !peers(&ds[k], "ov").contains(&ip4)),
    );
    let left = t0.elapsed();
    eprintln!(
        "measured: killed host gone from the others' peers {left:?} after SIGKILL (TTL 15 s)"
    );
    assert!(
        left >= Duration::from_secs(5),
        "gone before its lease could expire: {left:?}"
    );
    // Its endpoints went with its lease, and the other hosts forgot them.
    assert!(
        cl.keys(&ep4).is_empty(),
        "host 4's endpoint outlived its lease"
    );
    assert!(!has_static(&ds[0], "ov", &mac4));
    // Its address claim stands (not reused) while its container's record is there.
    let claims = cl.keys(&format!("{PREFIX}/ips/ov/"));
    assert!(
        claims.contains(&format!("{PREFIX}/ips/ov/{ip4c}")),
        "{claims:?}"
    );
    // Still everyone else reaches everyone.
    assert!(ds[2].ping(&names[2], &ips[0]));
    // Restarted, a daemon rebuilds its networks and tunnels from the store; its containers
    // keep their addresses.
    ds[2].restart(false);
    wait_until(
        "host 3 with its peers again after a restart",
        Duration::from_secs(10),
        || peers(&ds[2], "ov") == set(&[&ul.ip(1), &ul.ip(2)]),
    );
    assert_eq!(ds[2].ip_of(&names[2]), ips[2]);
    assert!(
        ds[0].ping(&names[0], &ips[2]),
        "host 1 -> host 3 after its restart"
    );
    drop(d4);
}

#[test]
fn global_ipam_three_hosts_thirty_containers_each_at_once_get_distinct_addresses() {
    if !need_root("global_ipam") || !e2e::etcd::available() {
        return;
    }
    let ul = Underlay::new("gi", 3);
    let cl = Cluster::on_underlay("gi", &ul);
    let ds: Vec<Daemon> = (1..=3)
        .map(|k| store_daemon(&ul, &cl, "gi", k, &[]))
        .collect();
    ds[1].ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--scope",
        "global",
        "--subnet",
        "10.63.0.0/24",
        "-o",
        "vni=6363",
        "ipn",
    ]);
    wait_until("ipn on every host", Duration::from_secs(10), || {
        ds.iter()
            .all(|d| d.cli(&["network", "inspect", "ipn"]).status.success())
    });
    let per_host = 30;
    let names: Vec<Vec<String>> = (0..3)
        .map(|k| {
            (0..per_host)
                .map(|i| unique(&format!("g{k}i{i}_")))
                .collect()
        })
        .collect();
    for (k, d) in ds.iter().enumerate() {
        for n in &names[k] {
            d.track(n);
        }
    }
    // Every container of every host at once: 90 clients, three daemons racing for blocks.
    let t0 = Instant::now();
    let mut children = Vec::new();
    for (k, d) in ds.iter().enumerate() {
        for n in &names[k] {
            let c = Command::new(vswitch_bin())
                .arg("--socket")
                .arg(&d.socket)
                .args(["run", "--name", n, "--network", "ipn", "--attach", "veth"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn vswitch run");
            children.push((n.clone(), c));
        }
    }
    for (n, c) in children {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "run {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!(
        "measured: 90 containers on three hosts created at once in {:?}",
        t0.elapsed()
    );
    let mut ips = BTreeSet::new();
    for (k, d) in ds.iter().enumerate() {
        for n in &names[k] {
            assert!(ips.insert(d.ip_of(n)), "address of {n} handed out twice");
        }
    }
    assert_eq!(ips.len(), 90);
    let claims = cl.keys(&format!("{PREFIX}/ips/ipn/"));
    assert_eq!(claims.len(), 90, "one claim per container");
    // Each host allocated from blocks of its own: /26 blocks of a /24 are 4 (62 usable + 2
    // edge addresses each); 90 addresses over three hosts need at least two.
    let blocks = cl.keys(&format!("{PREFIX}/blocks/ipn/"));
    assert!(blocks.len() >= 2, "{blocks:?}");
    // Removing the containers gives the claims back, and empty blocks are released.
    for (k, d) in ds.iter().enumerate() {
        for n in &names[k] {
            d.ok(&["rm", "-f", n]);
        }
    }
    assert!(cl.keys(&format!("{PREFIX}/ips/ipn/")).is_empty());
    assert!(cl.keys(&format!("{PREFIX}/blocks/ipn/")).is_empty());
}

#[test]
fn store_failures_a_member_dies_quorum_is_lost_and_comes_back_a_lease_is_lost() {
    if !need_root("store_failures") || !e2e::etcd::available() {
        return;
    }
    let ul = Underlay::new("gf", 2);
    let mut cl = Cluster::on_underlay("gf", &ul);
    let ds: Vec<Daemon> = (1..=2)
        .map(|k| store_daemon(&ul, &cl, "gf", k, &[]))
        .collect();
    ds[0].ok(&global_overlay_args("10.64.0.0/16", "fo"));
    wait_two_peered(&ul, &ds, "fo");
    let (a, b) = (unique("gfa"), unique("gfb"));
    ds[0].run(&a, &["--network", "fo"]);
    ds[1].run(&b, &["--network", "fo"]);
    let ip_b = ds[1].ip_of(&b);
    assert!(ds[0].ping(&a, &ip_b));

    // One member of three killed: traffic is untouched, a new container waits for at most the
    // election and is made.
    cl.kill(0);
    assert!(ds[0].ping(&a, &ip_b), "traffic with one etcd member down");
    let c1 = unique("gfc");
    ds[1].track(&c1);
    let t0 = Instant::now();
    loop {
        let o = ds[1].cli(&["run", "--name", &c1, "--network", "fo"]);
        if o.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "run with one member down: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!(
        "measured: run with one member of three killed took {:?}",
        t0.elapsed()
    );

    // Quorum lost: the dataplane forwards on its last state; new containers and networks get a
    // clear error.
    cl.kill(1);
    assert!(ds[0].ping(&a, &ip_b), "traffic without quorum");
    let c2 = unique("gfd");
    ds[0].track(&c2);
    let e = ds[0].fails(&["run", "--name", &c2, "--network", "fo"]);
    assert!(e.contains("the store has no quorum; try again"), "{e}");
    assert!(
        ds[0].container(&c2).is_null(),
        "nothing of the failed run stays"
    );
    let e = ds[1].fails(&global_overlay_args("10.65.0.0/16", "fo2"));
    assert!(e.contains("the store has no quorum; try again"), "{e}");
    // Local networks do not need the store.
    ds[1].ok(&["network", "create", "--subnet", "10.66.0.0/24", "loc"]);
    assert!(ds[0].ping(&a, &ip_b), "traffic without quorum, later");

    // Quorum back: everything converges; the refused run goes through.
    cl.restart(0);
    cl.restart(1);
    cl.wait_healthy(Duration::from_secs(20));
    let t0 = Instant::now();
    wait_until("a run once quorum is back", Duration::from_secs(20), || {
        ds[0]
            .cli(&["run", "--name", &c2, "--network", "fo"])
            .status
            .success()
    });
    eprintln!(
        "measured: run succeeded {:?} after the cluster was healthy again",
        t0.elapsed()
    );
    let ip_c2 = ds[0].ip_of(&c2);
    assert!(
        ds[1].ping(&b, &ip_c2),
        "host 2 -> the container made after quorum came back"
    );

    // Host 2's lease lost (revoked behind its back): its vtep leaves host 1, then it
    // registers again and is back.
    let leases = cl.ctl(&["lease", "list"]);
    let ids: Vec<&str> = leases
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(ids.len(), 2, "{leases}");
    let host2 = format!("{PREFIX}/hosts/host2");
    let lease2 = ids
        .iter()
        .find(|id| {
            cl.ctl(&["lease", "timetolive", "--keys", id])
                .contains(&host2)
        })
        .expect("host 2's lease")
        .to_string();
    let t0 = Instant::now();
    cl.ctl(&["lease", "revoke", &lease2]);
    wait_until("host 2 registered again", Duration::from_secs(20), || {
        cl.keys(&host2).len() == 1
            && cl.keys(&format!("{PREFIX}/vteps/fo/host2")).len() == 1
            && peers(&ds[0], "fo") == set(&[&ul.ip(2)])
    });
    eprintln!("measured: a lost lease re-registered in {:?}", t0.elapsed());
    assert!(
        ds[0].ping(&a, &ip_b),
        "traffic after host 2 registered again"
    );
}

/// The MAC of container `name`'s first endpoint.
fn mac_of(d: &Daemon, name: &str) -> String {
    d.container(name)["endpoints"][0]["mac"]
        .as_str()
        .expect("container has a MAC")
        .to_string()
}

/// Whether daemon `d` has a static MAC table entry for `mac` on `net` (on a VTEP's port).
fn has_static(d: &Daemon, net: &str, mac: &str) -> bool {
    let o = d.cli(&["fdb", net, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array().is_some_and(|l| {
        l.iter().any(|e| {
            e["mac"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case(mac))
                && e["is_static"] == true
                && e["port"].as_str().is_some_and(|p| p.starts_with("vtep:"))
        })
    })
}

/// A live tshark on the underlay's bridge printing one line per ARP packet carried in VXLAN
/// (opcode, sender IP, target IP): every host's tunnel traffic crosses that bridge.
struct ArpWatch {
    child: std::process::Child,
    out: StreamLines,
    _err: StreamLines,
}

impl ArpWatch {
    fn start(ul: &Underlay) -> ArpWatch {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ul.sw.name,
                "tshark",
                "-l",
                "-n",
                "-i",
                "br0",
            ])
            .args([
                "-f",
                "udp port 4789",
                "-d",
                "udp.port==4789,vxlan",
                "-Y",
                "arp",
            ])
            .args([
                "-T",
                "fields",
                "-e",
                "arp.opcode",
                "-e",
                "arp.src.proto_ipv4",
            ])
            .args(["-e", "arp.dst.proto_ipv4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tshark (apt-get install tshark)");
        let err = StreamLines::take(&mut child);
        err.wait_for("Capturing on", "tshark on br0", Duration::from_secs(20));
        let out = StreamLines::of(child.stdout.take().expect("stdout piped"));
        ArpWatch {
            child,
            out,
            _err: err,
        }
    }

    /// Pings `mark`, an address nobody has on a network without the store, from `from` on
    /// daemon `d` until the capture shows the ARP request flooded for it: proof that the
    /// capture has shown everything that crossed before (tshark prints in capture order, and
    /// late: a marker is what tells its output is complete up to a point). Each call needs
    /// a fresh `mark`; a retry takes the next address.
    fn mark(&self, d: &Daemon, from: &str, mark: [u8; 4]) {
        let t0 = Instant::now();
        for k in 0u8.. {
            let ip = std::net::Ipv4Addr::from([mark[0], mark[1], mark[2], mark[3] + k]);
            let _ = d.exec(from, &["ping", "-c", "1", "-W", "1", &ip.to_string()]);
            let needle = format!("\t{ip}");
            let seen = Instant::now();
            while seen.elapsed() < Duration::from_secs(2) {
                if self.out.text().lines().any(|l| l.ends_with(&needle)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the capture never showed the marker ARP for {ip}:\n{}",
                self.out.text()
            );
        }
    }

    /// ARP packets seen so far whose sender or target starts with `prefix` (e.g. "10.67.").
    fn count(&self, prefix: &str) -> usize {
        self.out
            .text()
            .lines()
            .filter(|l| l.split('\t').skip(1).any(|ip| ip.starts_with(prefix)))
            .count()
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn store_endpoints_program_remote_macs_and_a_first_ping_sends_no_arp_across_hosts() {
    if !need_root("store_endpoints")
        || !e2e::etcd::available()
        || !require_tools(&["tshark", "iperf3"])
    {
        return;
    }
    let ul = Underlay::new("ge", 3);
    let cl = Cluster::on_underlay("ge", &ul);
    let ds: Vec<Daemon> = (1..=3)
        .map(|k| store_daemon(&ul, &cl, "ge", k, &[]))
        .collect();
    ds[0].ok(&global_overlay_args("10.67.0.0/16", "ev"));
    wait_until(
        "every host serving ev with both others as peers",
        Duration::from_secs(10),
        || (0..3).all(|k| peers(&ds[k], "ev").len() == 2),
    );
    // Before: an overlay without the store (static peers, local to each daemon) on the same
    // hosts and tunnels: its first ping floods an ARP request to every other host.
    ul.overlay(&ds, 68, 6868);
    let (s1, s2) = (unique("ges1"), unique("ges2"));
    ds[0].run(&s1, &["--network", "ov"]);
    ds[1].run(&s2, &["--network", "ov"]);
    let s2_ip = ds[1].ip_of(&s2);
    let watch = ArpWatch::start(&ul);
    watch.mark(&ds[0], &s1, [10, 68, 3, 1]);
    assert!(ds[0]
        .exec(&s1, &["ping", "-c", "1", "-W", "2", &s2_ip])
        .status
        .success());
    watch.mark(&ds[0], &s1, [10, 68, 4, 1]);
    let before = watch.count(&s2_ip);
    assert!(before >= 1, "{}", watch.out.text());

    // The store's endpoints: each container is programmed on the other hosts, as a static
    // MAC entry towards its host's VTEP.
    let names: Vec<String> = (0..3).map(|k| unique(&format!("geg{k}"))).collect();
    let mut took = Vec::new();
    for (k, d) in ds.iter().enumerate() {
        d.run(&names[k], &["--network", "ev"]);
        let mac = mac_of(d, &names[k]);
        let t0 = Instant::now();
        wait_until(
            "the new endpoint programmed on both other hosts",
            Duration::from_secs(10),
            || {
                (0..3)
                    .filter(|&j| j != k)
                    .all(|j| has_static(&ds[j], "ev", &mac))
            },
        );
        took.push(t0.elapsed());
    }
    let ips: Vec<String> = (0..3).map(|k| ds[k].ip_of(&names[k])).collect();
    // First pings across hosts, every direction: no ARP crosses the underlay.
    for a in 0..3 {
        for (b, ip) in ips.iter().enumerate() {
            if a != b {
                assert!(
                    ds[a]
                        .exec(&names[a], &["ping", "-c", "1", "-W", "2", ip])
                        .status
                        .success(),
                    "first ping host {a} -> host {b} ({ip})\n{}",
                    ds[a].log()
                );
            }
        }
    }
    // Everything before this marker was captured.
    watch.mark(&ds[0], &s1, [10, 68, 5, 1]);
    let after = watch.count("10.67.");
    eprintln!(
        "measured: ARP packets across the underlay for a first ping: {before} without the store's endpoints, {after} for 6 first pings with them"
    );
    assert_eq!(after, 0, "ARP crossed the underlay:\n{}", watch.out.text());
    let stats: serde_json::Value = serde_json::from_str(&ds[0].ok(&["stats", "--json"])).unwrap();
    assert!(
        stats["counters"]["arp_suppressed"].as_u64() >= Some(2),
        "host 1 answered its container's ARP requests itself: {stats}"
    );
    // A few more, to measure how soon a new endpoint is programmed elsewhere.
    let mut late = Vec::new();
    for i in 0..4 {
        let n = unique(&format!("gel{i}"));
        ds[1].run(&n, &["--network", "ev"]);
        let mac = mac_of(&ds[1], &n);
        let t0 = Instant::now();
        wait_until(
            "a new endpoint on hosts 1 and 3",
            Duration::from_secs(10),
            || has_static(&ds[0], "ev", &mac) && has_static(&ds[2], "ev", &mac),
        );
        took.push(t0.elapsed());
        late.push((n, mac));
    }
    eprintln!(
        "measured: a new endpoint programmed on the other hosts {:?} (median of {}) after `run` returned",
        median(took.clone()),
        took.len()
    );
    // A removed container's entry leaves the other hosts, and its address is asked for again
    // (and no longer answered) there.
    let (gone, gone_mac) = late.pop().unwrap();
    let gone_ip = ds[1].ip_of(&gone);
    ds[1].ok(&["rm", "-f", &gone]);
    let t0 = Instant::now();
    wait_until(
        "the removed endpoint gone from hosts 1 and 3",
        Duration::from_secs(10),
        || !has_static(&ds[0], "ev", &gone_mac) && !has_static(&ds[2], "ev", &gone_mac),
    );
    eprintln!(
        "measured: a removed endpoint left the other hosts in {:?}",
        t0.elapsed()
    );
    assert!(!ds[0].ping(&names[0], &gone_ip), "nobody answers for it");
    // iperf3 across hosts on the store's network.
    let log = ds[1].dir.join("iperf-ge.log");
    let srv = e2e::Iperf3Server::start(ds[1].container(&names[1])["netns"].as_str().unwrap(), &log);
    let out = ds[0].exec(&names[0], &["iperf3", "-c", &ips[1], "-t", "3", "-J"]);
    drop(srv);
    assert!(
        out.status.success(),
        "iperf3 host 1 -> host 2: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    eprintln!(
        "measured: iperf3 across hosts on the store's network: {:.2} Gbit/s",
        bps / 1e9
    );
    assert!(bytes > 10e6, "iperf3 moved {bytes} bytes in 3 s");
}

#[test]
fn store_watch_stuck_on_a_frozen_member_is_noticed_and_replaced() {
    if !need_root("store_watch_frozen") || !e2e::etcd::available() {
        return;
    }
    let ul = Underlay::new("gw", 2);
    let cl = Cluster::on_underlay("gw", &ul);
    let ds: Vec<Daemon> = (1..=2)
        .map(|k| store_daemon(&ul, &cl, "gw", k, &[]))
        .collect();
    ds[0].ok(&global_overlay_args("10.69.0.0/16", "wv"));
    wait_two_peered(&ul, &ds, "wv");
    let (a, b) = (unique("gwa"), unique("gwb"));
    ds[0].run(&a, &["--network", "wv"]);
    // Both daemons talk to (and watch on) the first member. Frozen, it keeps their
    // connections open and says nothing: the cluster has quorum without it, requests fail
    // over after their timeout, but a watch on it would wait forever.
    cl.freeze(0);
    let t0 = Instant::now();
    ds[1].run(&b, &["--network", "wv"]);
    let mac_b = mac_of(&ds[1], &b);
    wait_until(
        "host 1 programming host 2's new container although its watch sat on a frozen member",
        Duration::from_secs(30),
        || has_static(&ds[0], "wv", &mac_b),
    );
    eprintln!(
        "measured: a watch on a frozen member replaced, and the change seen, {:?} after `run` began",
        t0.elapsed()
    );
    let log = ds[0].log();
    assert!(log.contains("missed changes"), "{log}");
    assert!(ds[0].ping(&a, &ds[1].ip_of(&b)), "host 1 -> host 2");
    cl.thaw(0);
}

#[test]
fn store_claims_of_a_dead_host_are_released_after_the_grace_period_never_before() {
    if !need_root("store_claims_gc") || !e2e::etcd::available() {
        return;
    }
    let ul = Underlay::new("gg", 2);
    let cl = Cluster::on_underlay("gg", &ul);
    // Host 1 releases claims of hosts gone for 4 s; host 2's lease lives 3 s.
    let d1 = store_daemon(&ul, &cl, "gg", 1, &["--store-claim-grace", "4"]);
    let mut d2 = store_daemon(&ul, &cl, "gg", 2, &["--store-ttl", "3"]);
    d1.ok(&global_overlay_args("10.70.0.0/24", "cg"));
    wait_until("cg on host 2", Duration::from_secs(10), || {
        d2.cli(&["network", "inspect", "cg"]).status.success()
    });
    let (keep, lost) = (unique("ggk"), unique("ggl"));
    d2.run(&keep, &["--network", "cg"]);
    d2.run(&lost, &["--network", "cg"]);
    let (ip_keep, ip_lost) = (d2.ip_of(&keep), d2.ip_of(&lost));
    let claim = |ip: &str| cl.keys(&format!("{PREFIX}/ips/cg/{ip}")).len() == 1;
    assert!(claim(&ip_keep) && claim(&ip_lost));
    // A claim of a host that never had a lease here: released once host 1 saw it for 4 s.
    // Host 2's claims, on a live host, stand all the while.
    let ghost = format!("{PREFIX}/ips/cg/10.70.0.250");
    cl.ctl(&["put", &ghost, r#"{"host":"ghost","container":"x"}"#]);
    let t0 = Instant::now();
    wait_until(
        "the ghost host's claim released",
        Duration::from_secs(30),
        || cl.keys(&ghost).is_empty(),
    );
    let took = t0.elapsed();
    eprintln!(
        "measured: a lease-less host's claim released {took:?} after it appeared (grace 4 s)"
    );
    assert!(
        took >= Duration::from_secs(4),
        "released within the grace: {took:?}"
    );
    assert!(
        claim(&ip_keep) && claim(&ip_lost),
        "a live host's claims were released"
    );
    // Host 2 restarts after one of its containers was removed while it was away: that
    // container's claim is released on its start, the other one stands.
    d2.stop(true);
    sh_ok("ip", &["netns", "del", &lost]);
    d2.restart(false);
    wait_until(
        "the gone container's claim released by its host's restart",
        Duration::from_secs(10),
        || !claim(&ip_lost),
    );
    assert!(claim(&ip_keep), "the running container's claim stands");
    assert_eq!(d2.ip_of(&keep), ip_keep);
    // Host 2 dies: its claim stands through its lease and the grace, then goes; so does
    // its block, now empty.
    d2.stop(true);
    let t0 = Instant::now();
    assert!(claim(&ip_keep));
    wait_until(
        "the dead host's claim released",
        Duration::from_secs(40),
        || !claim(&ip_keep),
    );
    let took = t0.elapsed();
    eprintln!(
        "measured: a killed host's claims released {took:?} after SIGKILL (TTL 3 s, grace 4 s)"
    );
    assert!(
        took >= Duration::from_secs(6),
        "released too soon: {took:?}\n{}",
        d1.log()
    );
    assert!(
        cl.keys(&format!("{PREFIX}/blocks/cg/")).is_empty(),
        "{:?}",
        cl.keys(&format!("{PREFIX}/blocks/cg/"))
    );
    // The address is free again: host 1 gets it (the first of the block).
    let n1 = unique("gg1");
    d1.run(&n1, &["--network", "cg"]);
    assert_eq!(
        d1.ip_of(&n1),
        ip_keep,
        "the released address is handed out again"
    );
}
