//! Port security and storm control, end to end: containers in real namespaces try to steal a
//! neighbour's IP address (ARP poisoning, using its address) and MAC address, flood broadcasts
//! and random source MACs; the switch drops and counts what the policy forbids while the others
//! keep talking. Attacks are written on raw sockets with python3 (one of the CI's packages).

use e2e::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends ARP packets from `IFACE` with its own MAC as Ethernet source and sender hardware
/// address: `OP SPA TPA DST_MAC COUNT GAP_SECS`.
const ARP_SEND: &str = r#"import socket,struct,sys,time
ifn,op,spa,tpa,dst,n,gap=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4],sys.argv[5],int(sys.argv[6]),float(sys.argv[7])
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)
s.bind((ifn,0))
mac=s.getsockname()[4]
d=bytes.fromhex(dst.replace(':',''))
tha=b'\0'*6 if d==b'\xff'*6 else d
f=d+mac+b'\x08\x06'+struct.pack('!HHBBH',1,0x0800,6,4,op)+mac+socket.inet_aton(spa)+tha+socket.inet_aton(tpa)
for i in range(n):
    s.send(f)
    time.sleep(gap)
"#;

/// Sends COUNT frames of EtherType 0x88b5 from eth0 to DST_MAC, PER_MS frames per millisecond
/// at most, from its own MAC or (RANDOM=1) from random unicast MACs; prints the seconds taken.
const FRAMES_SEND: &str = r#"import socket,os,sys,time
dst,n,rnd,per=bytes.fromhex(sys.argv[1].replace(':','')),int(sys.argv[2]),sys.argv[3]=='1',int(sys.argv[4])
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)
s.bind(('eth0',0))
own=s.getsockname()[4]
r=os.urandom(6*n)
t0=time.monotonic()
for i in range(n):
    src=bytes([(r[6*i]&0xfc)|0x02])+r[6*i+1:6*i+6] if rnd else own
    s.send(dst+src+b'\x88\xb5'+i.to_bytes(4,'big')+b'\0'*42)
    if i%per==per-1: time.sleep(0.001)
print(time.monotonic()-t0,flush=True)
"#;

/// Counts frames of EtherType 0x88b5 on eth0 until none came for IDLE_SECS; says `ready` first.
const FRAMES_COUNT: &str = r#"import socket,sys
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x88b5))
s.bind(('eth0',0))
s.settimeout(float(sys.argv[1]))
print('ready',flush=True)
n=0
try:
    while True:
        s.recv(2048); n+=1
except socket.timeout:
    pass
print(n,flush=True)
"#;

/// Waits for `cond` up to `secs`, panicking with `what` (and the daemon's log) on timeout.
fn wait_for(d: &Daemon, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for: {what}\n--- daemon log ---\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn mac_of(d: &Daemon, c: &str) -> String {
    d.container(c)["endpoints"][0]["mac"]
        .as_str()
        .expect("container has a MAC")
        .to_string()
}

/// The `ports --json` entry of container `c`'s port.
fn port_stats(d: &Daemon, c: &str) -> serde_json::Value {
    let name = d.port_name(c);
    json(&d.ok(&["ports", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no port {name} of {c}"))
}

fn counter(d: &Daemon, c: &str, key: &str) -> u64 {
    port_stats(d, c)[key].as_u64().expect("a counter")
}

fn drop_count(d: &Daemon, reason: &str) -> u64 {
    json(&d.ok(&["stats", "--json"]))["counters"][format!("drop_{reason}")]
        .as_u64()
        .expect("a drop counter")
}

/// The MAC that container `c`'s neighbour table holds for `ip` (None if it has no entry).
fn neigh(d: &Daemon, c: &str, ip: &str) -> Option<String> {
    let o = d.exec(c, &["ip", "neigh", "show", ip, "dev", "eth0"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut w = text.split_whitespace();
    w.find(|t| *t == "lladdr")?;
    w.next().map(str::to_string)
}

/// The port name holding `mac` in the MAC table.
fn fdb_port(d: &Daemon, mac: &str) -> Option<String> {
    json(&d.ok(&["fdb", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == mac)
        .map(|e| e["port"].as_str().unwrap_or_default().to_string())
}

/// The link-local address Linux derives from `mac` (modified EUI-64).
fn link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]])
    )
}

/// Container `a` sends ARP replies to `c` claiming `ip` (`n` of them, `gap` seconds apart:
/// longer than the kernel's 1 s neighbour lock time in all).
fn arp_claim(d: &Daemon, a: &str, ip: &str, c_ip: &str, c_mac: &str, n: u32, gap: &str) {
    let o = d.exec(
        a,
        &[
            "python3",
            "-c",
            ARP_SEND,
            "eth0",
            "2",
            ip,
            c_ip,
            c_mac,
            &n.to_string(),
            gap,
        ],
    );
    assert!(
        o.status.success(),
        "ARP sender: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ip_in(d: &Daemon, c: &str, args: &[&str]) {
    let mut a = vec!["ip"];
    a.extend_from_slice(args);
    let o = d.exec(c, &a);
    assert!(
        o.status.success(),
        "ip {args:?} in {c}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn port_security_stops_arp_poisoning_and_mac_theft() {
    if !need_root("port_security") {
        return;
    }
    let mut d = Daemon::start("psec");
    d.ok(&["network", "create", "--subnet", "10.236.1.0/24", "psnet"]);
    let (a, b, c) = (unique("psa"), unique("psb"), unique("psc"));
    // The attacker is a namespace made by someone else, attached with a chosen address.
    let _a_ns = Netns::new(&a);
    d.track(&a);
    d.ok(&[
        "attach",
        "--name",
        &a,
        "--netns",
        &format!("/run/netns/{a}"),
        "--ip",
        "10.236.1.50",
        "psnet",
    ]);
    d.run(&b, &["--network", "psnet"]);
    d.run(&c, &["--network", "psnet"]);
    let (a_ip, b_ip, c_ip) = (d.ip_of(&a), d.ip_of(&b), d.ip_of(&c));
    let (a_mac, b_mac, c_mac) = (mac_of(&d, &a), mac_of(&d, &b), mac_of(&d, &c));
    assert_eq!(a_ip, "10.236.1.50");

    // The positive path: everyone talks, over IPv4 and IPv6 link-local, and nothing of it is
    // counted as spoofed.
    assert!(d.ping(&a, &b_ip), "A -> B\n{}", d.log());
    assert!(d.ping(&a, &c_ip), "A -> C");
    assert!(d.ping(&c, &b_ip), "C -> B");
    let b_ll = format!("{}%eth0", link_local(&b_mac));
    wait_for(&d, 10, "A pings B's IPv6 link-local address", || {
        d.exec(&a, &["ping", "-6", "-c", "1", "-W", "1", &b_ll])
            .status
            .success()
    });
    assert_eq!(neigh(&d, &c, &b_ip).as_deref(), Some(b_mac.as_str()));
    for c in [&a, &b, &c] {
        let p = port_stats(&d, c);
        assert_eq!(
            (p["spoofed_mac"].as_u64(), p["spoofed_ip"].as_u64()),
            (Some(0), Some(0)),
            "{c}: {p}"
        );
    }

    // ARP poisoning: A tells C that B's address is at A's MAC, unicast and gratuitously.
    arp_claim(&d, &a, &b_ip, &c_ip, &c_mac, 10, "0.2");
    arp_claim(&d, &a, &b_ip, &b_ip, "ff:ff:ff:ff:ff:ff", 5, "0");
    wait_for(&d, 10, "15 spoofed ARP packets counted on A's port", || {
        counter(&d, &a, "spoofed_ip") >= 15
    });
    assert_eq!(counter(&d, &a, "spoofed_ip"), 15);
    assert_eq!(drop_count(&d, "spoofed_ip"), 15);
    assert_eq!(
        neigh(&d, &c, &b_ip).as_deref(),
        Some(b_mac.as_str()),
        "C still has B's MAC for B's address"
    );
    assert!(d.ping(&c, &b_ip), "C still reaches B");

    // A takes B's address as its own and uses it: nothing from it gets through.
    ip_in(
        &d,
        &a,
        &["addr", "add", &format!("{b_ip}/32"), "dev", "eth0"],
    );
    let o = d.exec(
        &a,
        &[
            "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", &b_ip, &c_ip,
        ],
    );
    assert!(!o.status.success(), "A pinged C from B's address");
    assert!(counter(&d, &a, "spoofed_ip") >= 18);
    ip_in(
        &d,
        &a,
        &["addr", "del", &format!("{b_ip}/32"), "dev", "eth0"],
    );
    assert!(d.ping(&a, &c_ip), "A talks normally again");

    // MAC theft: A sends with B's MAC. The frames are dropped, B's entry does not move, and C
    // still reaches B.
    ip_in(&d, &a, &["link", "set", "dev", "eth0", "address", &b_mac]);
    assert!(!d.ping(&a, &c_ip), "A reached C with B's MAC");
    assert!(counter(&d, &a, "spoofed_mac") >= 2);
    assert_eq!(fdb_port(&d, &b_mac), Some(d.port_name(&b)));
    assert!(d.ping(&c, &b_ip), "C reaches B while A holds B's MAC");
    assert!(drop_count(&d, "spoofed_mac") >= 2);
    ip_in(&d, &a, &["link", "set", "dev", "eth0", "address", &a_mac]);
    assert!(d.ping(&a, &c_ip), "A talks normally with its own MAC");

    // After a restart the restored ports are guarded again (the counters start from zero).
    d.restart(false);
    assert!(d.ping(&a, &b_ip), "A -> B after the restart\n{}", d.log());
    assert!(d.ping(&c, &b_ip), "C -> B after the restart");
    arp_claim(&d, &a, &b_ip, &c_ip, &c_mac, 5, "0");
    wait_for(&d, 10, "5 spoofed ARP packets after the restart", || {
        counter(&d, &a, "spoofed_ip") >= 5
    });
    assert_eq!(neigh(&d, &c, &b_ip).as_deref(), Some(b_mac.as_str()));
}

#[test]
fn without_port_security_the_same_spoofing_works() {
    if !need_root("no_port_security") {
        return;
    }
    let d = Daemon::start("nosec");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.236.2.0/24",
        "-o",
        "port_security=off",
        "nsnet",
    ]);
    let net = json(&d.ok(&["network", "inspect", "nsnet"]));
    assert_eq!(net[0]["options"]["port_security"], "off");
    let (a, b, c) = (unique("nsa"), unique("nsb"), unique("nsc"));
    for x in [&a, &b, &c] {
        d.run(x, &["--network", "nsnet"]);
    }
    let (b_ip, c_ip) = (d.ip_of(&b), d.ip_of(&c));
    let (a_mac, b_mac, c_mac) = (mac_of(&d, &a), mac_of(&d, &b), mac_of(&d, &c));
    assert!(d.ping(&c, &b_ip), "C -> B");
    assert_eq!(neigh(&d, &c, &b_ip).as_deref(), Some(b_mac.as_str()));

    // The same ARP poisoning now takes over C's entry for B: C's traffic for B goes to A.
    arp_claim(&d, &a, &b_ip, &c_ip, &c_mac, 10, "0.2");
    wait_for(&d, 10, "C's entry for B's address points at A", || {
        neigh(&d, &c, &b_ip).as_deref() == Some(a_mac.as_str())
    });
    assert!(!d.ping(&c, &b_ip), "C's pings for B went to A");
    assert_eq!(counter(&d, &a, "spoofed_ip"), 0);

    // And A sending with B's MAC moves B's entry to A's port.
    ip_in(&d, &a, &["link", "set", "dev", "eth0", "address", &b_mac]);
    let _ = d.exec(&a, &["ping", "-c", "2", "-i", "0.2", "-W", "1", &c_ip]);
    wait_for(&d, 10, "B's MAC learned on A's port", || {
        fdb_port(&d, &b_mac) == Some(d.port_name(&a))
    });
    assert_eq!(counter(&d, &a, "spoofed_mac"), 0);
}

/// A child process killed (and reaped) when dropped, also when the test fails.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn storm_control_caps_a_broadcast_storm() {
    if !need_root("storm_control") {
        return;
    }
    let d = Daemon::start("storm");
    let (pps, burst) = (100u64, 20u64);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.236.3.0/24",
        "-o",
        &format!("flood_pps={pps}"),
        "-o",
        &format!("flood_burst={burst}"),
        "stnet",
    ]);
    let (a, b, c) = (unique("sta"), unique("stb"), unique("stc"));
    for x in [&a, &b, &c] {
        d.run(x, &["--network", "stnet"]);
    }
    let b_ip = d.ip_of(&b);
    assert!(d.ping(&c, &b_ip), "C -> B");

    // B counts the storm's frames; A sends 2000 broadcasts in about 0.2 s (10 per ms).
    let mut rx = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &b, "python3", "-c", FRAMES_COUNT, "1.5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the counter"),
    );
    let mut lines = BufReader::new(rx.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let sent = 2000u64;
    let o = d.exec(
        &a,
        &[
            "python3",
            "-c",
            FRAMES_SEND,
            "ff:ff:ff:ff:ff:ff",
            &sent.to_string(),
            "0",
            "10",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secs: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let got: u64 = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.trim().parse().ok())
        .expect("the counter's total");

    // B got the burst and what the rate refilled while the storm lasted (plus half a second
    // for the switch to drain its socket), nowhere near the 2000 sent.
    let bound = burst + (pps as f64 * (secs + 0.5)).ceil() as u64;
    assert!(
        (burst..=bound).contains(&got),
        "B received {got} of {sent} broadcasts in {secs:.2} s; expected {burst}..={bound}"
    );
    let limited = counter(&d, &a, "flood_limited");
    let kernel = counter(&d, &a, "rx_dropped");
    // 2000 frames at a hundred times A's rate: after 256 refusals in a row A's port is held,
    // and the kernel drops what A sends during the hold before the switch reads it.
    let (holds, held) = (
        counter(&d, &a, "storm_holds"),
        counter(&d, &a, "storm_held"),
    );
    assert!(
        holds >= 1 && held > 0,
        "A's port was never held: {holds} holds, {held} frames dropped while held: {}",
        port_stats(&d, &a)
    );
    assert!(
        limited + held + got + kernel >= sent && limited + held >= sent / 2,
        "flood_limited {limited}, held {held}, delivered {got}, kernel drops {kernel} of {sent}"
    );
    assert_eq!(drop_count(&d, "flood_limited"), limited);
    assert_eq!(counter(&d, &c, "flood_limited"), 0, "C's bucket is its own");
    // The others keep talking, and so does A once the storm is over (unicast is never limited,
    // and the hold ends).
    assert!(d.ping(&c, &b_ip), "C -> B after the storm");
    assert!(d.ping(&a, &b_ip), "A -> B after the storm");
}

#[test]
fn a_random_source_mac_flood_keeps_the_mac_table_bounded() {
    if !need_root("mac_flood") {
        return;
    }
    let limit = 300usize;
    let d = Daemon::start_with("macfl", &["--fdb-max-per-port", &limit.to_string()]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.236.4.0/24",
        "-o",
        "port_security=off",
        "mfnet",
    ]);
    let (a, b, c) = (unique("mfa"), unique("mfb"), unique("mfc"));
    for x in [&a, &b, &c] {
        d.run(x, &["--network", "mfnet"]);
    }
    let b_ip = d.ip_of(&b);
    let (b_mac, c_mac) = (mac_of(&d, &b), mac_of(&d, &c));
    assert!(d.ping(&c, &b_ip), "C -> B");

    // 5000 frames to B, each from a new random MAC.
    let o = d.exec(
        &a,
        &["python3", "-c", FRAMES_SEND, &b_mac, "5000", "1", "50"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a_port = d.port_name(&a);
    let on_a = || {
        json(&d.ok(&["fdb", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["port"] == a_port.as_str())
            .count()
    };
    wait_for(&d, 10, "A's port fills its share of the MAC table", || {
        on_a() >= limit
    });
    assert_eq!(on_a(), limit, "A's port holds at most its limit");
    let stats = json(&d.ok(&["stats", "--json"]));
    let entries = stats["fdb_entries"].as_u64().unwrap() as usize;
    assert!(entries <= limit + 10, "{entries} MAC table entries");
    // The others' entries stayed, and they still talk.
    assert_eq!(fdb_port(&d, &b_mac), Some(d.port_name(&b)));
    assert_eq!(fdb_port(&d, &c_mac), Some(d.port_name(&c)));
    assert!(d.ping(&c, &b_ip), "C -> B after the flood");
}
