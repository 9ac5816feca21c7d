//! Seeing what the switch does (issue 21): the Prometheus endpoint (`vswitch daemon --metrics`)
//! scraped and parsed while containers talk, and `vswitch top` showing their rates.

use e2e::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One sample of the text format: name, labels (sorted), value.
type Series = (String, BTreeMap<String, String>);

/// A strict reader of the Prometheus text format 0.0.4, written apart from the daemon's own:
/// every line must be `# HELP NAME TEXT`, `# TYPE NAME counter|gauge|histogram` (once per name,
/// before its samples) or `NAME{LABEL="VALUE",...} VALUE` with a declared NAME (for a histogram:
/// `NAME_bucket` with an `le` label, `NAME_sum`, `NAME_count`); no series twice; counters are
/// named `*_total`; values are finite and not negative; a histogram's buckets are cumulative,
/// end with `le="+Inf"` and equal its `_count`. Panics naming the first bad line.
fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
    fn name_ok(s: &str) -> bool {
        let mut b = s.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", n + 1) };
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| bad("HELP without text"));
            if !name_ok(name) || help.is_empty() || !helps.insert(name.to_string()) {
                bad("bad or repeated HELP");
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| bad("TYPE without type"));
            if !name_ok(name) || !["counter", "gauge", "histogram"].contains(&kind) {
                bad("bad TYPE");
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                bad("TYPE given twice");
            }
            if kind == "counter" && !name.ends_with("_total") {
                bad("a counter not named *_total");
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            bad("a comment or blank line that is neither HELP nor TYPE");
        }
        let cut = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
        let name = &line[..cut];
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"));
        if !name_ok(name)
            || !(types.contains_key(name) && types[name] != "histogram" || histogram.is_some())
        {
            bad("a sample of an undeclared or badly named metric");
        }
        let mut rest = &line[cut..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let close = r.find('}').unwrap_or_else(|| bad("labels not closed"));
            let body = &r[..close];
            rest = &r[close + 1..];
            // vswitch's label values hold no ',', '"', '}' or '\': split plainly and check.
            for pair in body.split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| bad("label without ="));
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| bad("label value not quoted"));
                if !name_ok(k) || k.contains(':') || v.contains(['"', '\\']) {
                    bad("bad label");
                }
                if labels.insert(k.to_string(), v.to_string()).is_some() {
                    bad("a label twice");
                }
            }
        }
        let value: f64 = rest
            .strip_prefix(' ')
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| bad("bad value"));
        if !value.is_finite() || value < 0.0 {
            bad("a value that is not a finite count");
        }
        if name.ends_with("_bucket") && histogram.is_some() && !labels.contains_key("le") {
            bad("a histogram bucket without le");
        }
        if out.insert((name.to_string(), labels), value).is_some() {
            bad("the same series twice");
        }
    }
    assert!(!out.is_empty(), "no samples");
    for (h, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        // Buckets by bound, cumulative, the last +Inf and equal to the count.
        let mut buckets: Vec<(f64, f64)> = out
            .iter()
            .filter(|((n, _), _)| *n == format!("{h}_bucket"))
            .map(|((_, l), v)| {
                let le = match l["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    b => b.parse().unwrap_or_else(|_| panic!("{h}: le={b}")),
                };
                (le, *v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{h}: buckets not cumulative: {buckets:?}"
        );
        let last = buckets.last().unwrap_or_else(|| panic!("{h}: no buckets"));
        assert!(last.0.is_infinite(), "{h}: no +Inf bucket");
        let count = out
            .iter()
            .find(|((n, _), _)| *n == format!("{h}_count"))
            .map(|(_, v)| *v);
        assert_eq!(Some(last.1), count, "{h}: +Inf bucket vs count");
        assert!(
            out.keys().any(|(n, _)| *n == format!("{h}_sum")),
            "{h}: no sum"
        );
    }
    out
}

/// `GET path` over HTTP/1.1 to `addr`: the status line, the headers and the body.
fn http_get(addr: &str, method: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// The metrics address the daemon logged (`--metrics 127.0.0.1:0` binds any free port).
fn metrics_addr(d: &Daemon) -> String {
    let mut addr = String::new();
    wait_until(
        "the daemon to log its metrics address",
        Duration::from_secs(10),
        || {
            addr = d
                .log()
                .lines()
                .find_map(|l| l.split("metrics on http://").nth(1))
                .and_then(|r| r.strip_suffix("/metrics"))
                .unwrap_or_default()
                .to_string();
            !addr.is_empty()
        },
    );
    addr
}

fn scrape(addr: &str) -> BTreeMap<Series, f64> {
    let (status, headers, body) = http_get(addr, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(
        headers
            .lines()
            .any(|h| h
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{headers}"
    );
    parse_exposition(&body)
}

/// The value of `name` with exactly `labels` (a subset matched for per-port series).
fn value(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = m
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?}: {} series", hits.len());
    hits[0]
}

/// TCP ports process `pid` listens on (`ss -Hltnp`).
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let out = sh_ok("ss", &["-Hltnp"]);
    out.lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_endpoint_serves_prometheus_text_that_moves_with_traffic() {
    if !need_root("metrics") || !require_tools(&["ping", "ss"]) {
        return;
    }
    let d = Daemon::start_with("mt", &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&d);
    let listeners = tcp_listeners_of(d.pid());
    assert_eq!(
        listeners.len(),
        1,
        "one TCP listener, metrics': {listeners:?}"
    );
    assert!(listeners[0].contains(&addr), "{listeners:?} vs {addr}");
    let (c1, c2) = (unique("ma"), unique("mb"));
    d.run(&c1, &[]);
    d.run(&c2, &[]);
    let ip2 = d.ip_of(&c2);
    let (p1, p2) = (d.port_name(&c1), d.port_name(&c2));
    let before = scrape(&addr);
    assert!(d.ping(&c1, &ip2), "c1 -> c2");
    let after = scrape(&addr);

    let l1 = [
        ("port", p1.as_str()),
        ("container", c1.as_str()),
        ("network", "bridge"),
    ];
    let l2 = [
        ("port", p2.as_str()),
        ("container", c2.as_str()),
        ("network", "bridge"),
    ];
    let moved = |name: &str, l: &[(&str, &str)]| value(&after, name, l) - value(&before, name, l);
    // `ping -c 2`: two echo requests from c1 to c2 and two replies back (ARP on top).
    assert!(moved("vswitch_port_rx_frames_total", &l1) >= 2.0, "c1 sent");
    assert!(
        moved("vswitch_port_tx_frames_total", &l2) >= 2.0,
        "c2 was sent"
    );
    assert!(
        moved("vswitch_port_rx_frames_total", &l2) >= 2.0,
        "c2 replied"
    );
    assert!(
        moved("vswitch_port_tx_frames_total", &l1) >= 2.0,
        "c1 got replies"
    );
    // 98-byte echo frames (56 bytes of data): the bytes follow the frames, both ways.
    assert!(
        moved("vswitch_port_rx_bytes_total", &l1) >= 2.0 * 98.0,
        "c1's bytes"
    );
    assert!(
        moved("vswitch_port_tx_bytes_total", &l2) >= 2.0 * 98.0,
        "bytes sent to c2"
    );
    assert!(
        moved("vswitch_port_tx_bytes_total", &l1) >= 2.0 * 98.0,
        "bytes sent to c1"
    );
    // The worker's load: bursts were received (each a bucket, the sum their frames), and time
    // was spent moving them, within the time the worker ran.
    let bursts = moved("vswitch_worker_batch_frames_count", &[]);
    assert!(bursts >= 4.0, "at least a burst per echo frame: {bursts}");
    assert!(moved("vswitch_worker_batch_frames_sum", &[]) >= bursts);
    assert!(
        moved("vswitch_worker_batch_frames_bucket", &[("le", "+Inf")]) == bursts,
        "the +Inf bucket counts every burst"
    );
    let busy = moved("vswitch_worker_busy_seconds_total", &[]);
    let run = moved("vswitch_worker_run_seconds_total", &[]);
    assert!(busy > 0.0 && busy < run, "busy {busy} s of {run} s");
    let mut unicast = l1.to_vec();
    unicast.push(("decision", "unicast"));
    assert!(moved("vswitch_port_forwarded_total", &unicast) >= 2.0);
    assert!(moved("vswitch_rx_frames_total", &[]) >= 4.0);
    // Every drop reason of a port is a series of its own, from zero.
    let mut spoofed = l1.to_vec();
    spoofed.push(("reason", "spoofed_mac"));
    assert_eq!(value(&after, "vswitch_port_drops_total", &spoofed), 0.0);
    assert_eq!(
        after
            .keys()
            .filter(|(n, l)| n == "vswitch_port_drops_total" && l.get("port") == Some(&p1))
            .count(),
        13,
        "13 reasons per port (tx_full is counted on the output port)"
    );
    // The MAC table knows both containers; the worker is up; the daemon has memory.
    assert!(
        value(
            &after,
            "vswitch_network_mac_entries",
            &[("network", "bridge")]
        ) >= 2.0
    );
    assert!(value(&after, "vswitch_fdb_learned_total", &[]) >= 2.0);
    assert_eq!(value(&after, "vswitch_worker_up", &[]), 1.0);
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
    for proto in ["tcp", "udp", "icmp"] {
        value(&after, "vswitch_nat_flows", &[("proto", proto)]);
    }
    // The same text over the control socket (`vswitch metrics`).
    let cli = parse_exposition(&d.ok(&["metrics"]));
    assert!(
        value(&cli, "vswitch_port_rx_frames_total", &l1)
            >= value(&after, "vswitch_port_rx_frames_total", &l1)
    );
    // The Grafana dashboard reads these metrics: every name it queries is in the scrape (the
    // tunnels' only exist with an overlay network: those are checked against the source).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dash = std::fs::read_to_string(format!("{root}/switch/dist/grafana-dashboard.json"))
        .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("the dashboard is JSON");
    let source = std::fs::read_to_string(format!("{root}/switch/src/control/metrics.rs")).unwrap();
    let mut queried = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for w in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if w.starts_with("vswitch_") || w.starts_with("process_") {
                    queried.insert(w.to_string());
                }
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    for name in &queried {
        if name.starts_with("vswitch_tunnel_") {
            assert!(
                source.contains(&format!("\"{name}\"")),
                "the dashboard reads {name}, never served"
            );
        } else {
            assert!(
                after.keys().any(|(n, _)| n == name),
                "the dashboard reads {name}, not in the scrape"
            );
        }
    }
    // Anything but GET /metrics is refused.
    assert_eq!(
        http_get(&addr, "GET", "/nothing").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http_get(&addr, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
}

#[test]
fn no_tcp_listener_without_metrics() {
    if !need_root("no_metrics") || !require_tools(&["ss"]) {
        return;
    }
    let d = Daemon::start("nm");
    assert_eq!(tcp_listeners_of(d.pid()), Vec::<String>::new());
}

/// A child killed and reaped on drop (also when the test fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A rate as `vswitch top` prints it ("12.5", "1.2k", "3.4M").
fn rate(s: &str) -> f64 {
    let (n, mult) = match s.as_bytes().last() {
        Some(b'k') => (&s[..s.len() - 1], 1e3),
        Some(b'M') => (&s[..s.len() - 1], 1e6),
        Some(b'G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    n.parse::<f64>()
        .unwrap_or_else(|_| panic!("not a rate: {s:?}"))
        * mult
}

#[test]
fn top_shows_the_rate_of_the_port_that_moves_frames() {
    if !need_root("top") || !require_tools(&["ping"]) {
        return;
    }
    let d = Daemon::start("tp");
    let (c1, c2, c3) = (unique("ta"), unique("tb"), unique("tc"));
    for c in [&c1, &c2, &c3] {
        d.run(c, &[]);
    }
    let ip2 = d.ip_of(&c2);
    assert!(d.ping(&c1, &ip2), "c1 -> c2");
    // c1 pings c2 50 times a second for up to 20 s; c3 sends nothing of its own.
    let ping = Command::new(vswitch_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "exec", &c1, "--", "ping", "-q", "-i", "0.02", "-w", "20", &ip2,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ping");
    let _ping = Reaped(ping);
    let out = d.ok(&["top", "--count", "2"]);
    drop(_ping);
    // Two refreshes, plain (the output is no terminal): a header, the ports, the networks.
    let refreshes: Vec<&str> = out
        .split("vswitch top: ")
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(refreshes.len(), 2, "{out}");
    assert!(
        !out.contains('\x1b'),
        "no terminal escapes in plain output: {out:?}"
    );
    let last = refreshes[1];
    let row = |name: &str| -> Option<Vec<&str>> {
        last.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&name))
    };
    let r1 = row(&c1).unwrap_or_else(|| panic!("no row for {c1}:\n{out}"));
    let (rx, tx, bits) = (rate(r1[3]), rate(r1[4]), rate(r1[5]));
    assert!(
        (10.0..=200.0).contains(&rx),
        "{c1} sends ~50 echo requests/s: {rx}\n{out}"
    );
    assert!(tx >= 10.0, "{c1} gets ~50 replies/s: {tx}\n{out}");
    assert!(
        bits >= rx * 98.0 * 8.0 * 0.9,
        "98-byte frames: {bits} bit/s\n{out}"
    );
    let tx_bits = rate(r1[6]);
    assert!(
        tx_bits >= tx * 98.0 * 8.0 * 0.9,
        "98-byte replies sent: {tx_bits} bit/s\n{out}"
    );
    // The worker moved frames part of the time, and said how much.
    let busy: f64 = last
        .split("worker busy ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no busy share in the header:\n{out}"));
    assert!(busy > 0.0 && busy < 100.0, "busy {busy}%\n{out}");
    let r2 = row(&c2).unwrap_or_else(|| panic!("no row for {c2}:\n{out}"));
    assert!(rate(r2[3]) >= 10.0, "{c2} replies: {r2:?}");
    // c3 only sends what a new interface does (IPv6 router and neighbour solicitations): a
    // few frames a second at most, if it is listed at all.
    if let Some(r3) = row(&c3) {
        assert!(rate(r3[3]) < rx / 4.0, "{c3} is idle: {r3:?}\n{out}");
    }
    let net = last
        .lines()
        .find(|l| l.starts_with("bridge "))
        .unwrap_or_else(|| panic!("no network row:\n{out}"));
    let f: Vec<&str> = net.split_whitespace().collect();
    assert_eq!(f[1], "4", "three containers and the host: {net}");
    assert!(rate(f[4]) >= 20.0, "both directions on the network: {net}");
    // --all lists the idle port too, at zero.
    let all = d.ok(&["top", "--once", "--all"]);
    assert!(
        all.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(c3.as_str())),
        "{all}"
    );
}

/// `vswitch capture ARGS` against `d` in the background, its stderr read line by line; the
/// capture is running once it has said on which ports.
fn start_capture(d: &Daemon, args: &[&str]) -> (Reaped, StreamLines) {
    let mut child = Command::new(vswitch_bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("capture")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitch capture");
    let err = StreamLines::take(&mut child);
    err.wait_for("capturing on", "vswitch capture", Duration::from_secs(10));
    (Reaped(child), err)
}

/// Waits (up to 10 s) for the capture to exit; `what` says what should end it.
fn wait_exit(cap: &mut Reaped, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(what, Duration::from_secs(10), || {
        status = cap.0.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Waits (up to 10 s) for the capture to end by itself (`--count` reached).
fn wait_capture(cap: &mut Reaped, err: &StreamLines) {
    let status = wait_exit(cap, "vswitch capture to reach its --count");
    assert!(status.success(), "vswitch capture failed: {}", err.text());
}

/// Every frame of a pcapng file as tshark reads it: interface name, direction flags
/// (`0x00000001` inbound, `0x00000002` outbound), protocol stack, ICMP type, IP source and
/// destination. Panics if tshark reports the file damaged or cut short.
fn tshark_frames(file: &std::path::Path) -> Vec<Vec<String>> {
    let f = file.to_str().unwrap();
    let o = sh(
        "tshark",
        &[
            "-r",
            f,
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.packet_flags_direction",
            "-e",
            "frame.protocols",
            "-e",
            "icmp.type",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "tshark failed: {err}");
    for bad in ["damaged", "cut short", "corrupt", "isn't a capture file"] {
        assert!(!err.contains(bad), "tshark: {err}");
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn capture_of_a_ping_reads_back_in_tshark_with_ports_and_directions() {
    if !need_root("capture") || !require_tools(&["ping", "tshark"]) {
        return;
    }
    let d = Daemon::start("cp");
    let (c1, c2) = (unique("ca"), unique("cb"));
    d.run(&c1, &[]);
    d.run(&c2, &[]);
    let (ip1, ip2) = (d.ip_of(&c1), d.ip_of(&c2));
    assert!(d.ping(&c1, &ip2), "c1 -> c2 (the MAC table learns both)");
    let (p1, p2) = (d.port_name(&c1), d.port_name(&c2));
    let file = d.dir.join("ping.pcapng");
    let f = file.to_str().unwrap();
    let (mut cap, err) = start_capture(&d, &["--network", "bridge", "-c", "8", "-w", f, "icmp"]);
    assert!(d.ping(&c1, &ip2), "c1 -> c2 while capturing");
    wait_capture(&mut cap, &err);
    assert!(err.text().contains("8 frames captured"), "{}", err.text());

    let frames = tshark_frames(&file);
    assert_eq!(frames.len(), 8, "{frames:?}");
    let (inb, outb) = ("0x00000001", "0x00000002");
    let mut seen = BTreeMap::new();
    for fr in &frames {
        assert_eq!(
            fr[2], "eth:ethertype:ip:icmp:data",
            "every frame decodes: {fr:?}"
        );
        *seen
            .entry((fr[0].clone(), fr[1].clone(), fr[3].clone()))
            .or_insert(0) += 1;
        let pair = (fr[4].as_str(), fr[5].as_str());
        let want = if fr[3] == "8" {
            (ip1.as_str(), ip2.as_str())
        } else {
            (ip2.as_str(), ip1.as_str())
        };
        assert_eq!(pair, want, "{fr:?}");
    }
    // Each echo request comes in on c1's port and goes out on c2's; each reply the other way.
    let want: BTreeMap<(String, String, String), i32> = [
        ((p1.clone(), inb, "8"), 2),
        ((p2.clone(), outb, "8"), 2),
        ((p2.clone(), inb, "0"), 2),
        ((p1.clone(), outb, "0"), 2),
    ]
    .into_iter()
    .map(|((p, dir, t), n)| ((p, dir.to_string(), t.to_string()), n))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn capture_stopped_by_sigint_keeps_its_file_and_says_what_it_kept() {
    if !need_root("capture_sigint") || !require_tools(&["ping", "tshark"]) {
        return;
    }
    let d = Daemon::start("cs");
    let (c1, c2) = (unique("sa"), unique("sb"));
    d.run(&c1, &[]);
    d.run(&c2, &[]);
    let ip2 = d.ip_of(&c2);
    assert!(d.ping(&c1, &ip2), "c1 -> c2 (the MAC table learns both)");
    let file = d.dir.join("sigint.pcapng");
    let f = file.to_str().unwrap();
    // No --count: it runs until the operator's Ctrl-C.
    let (mut cap, err) = start_capture(&d, &["--network", "bridge", "-w", f, "icmp"]);
    let one = d.exec(&c1, &["ping", "-c", "1", "-W", "2", &ip2]);
    assert!(one.status.success(), "c1 -> c2 while capturing");
    let pid = cap.0.id() as libc::pid_t;
    // Our own child, by PID.
    // SAFETY: kill(2) with a signal number; no memory is passed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = wait_exit(&mut cap, "vswitch capture to end on SIGINT");
    assert!(
        status.success(),
        "a capture ended by SIGINT exits 0: {status:?} {}",
        err.text()
    );
    err.wait_for(
        "frames captured",
        "the capture's summary",
        Duration::from_secs(5),
    );
    // One echo request and its reply, each in on one port and out on the other.
    assert!(
        err.text().contains("4 frames captured, 0 dropped"),
        "{}",
        err.text()
    );
    let frames = tshark_frames(&file);
    assert_eq!(frames.len(), 4, "the file holds what it said: {frames:?}");
}

#[test]
fn capture_with_a_filter_keeps_only_what_it_names() {
    if !need_root("capture_filter") || !require_tools(&["ping", "tshark"]) {
        return;
    }
    let d = Daemon::start("cf");
    let (c1, c2, c3) = (unique("fa"), unique("fb"), unique("fc"));
    for c in [&c1, &c2, &c3] {
        d.run(c, &[]);
    }
    let (ip2, ip3) = (d.ip_of(&c2), d.ip_of(&c3));
    let file = d.dir.join("host.pcapng");
    let f = file.to_str().unwrap();
    let filter = format!("icmp and host {ip3}");
    let (mut cap, err) = start_capture(&d, &["--network", "bridge", "-c", "4", "-w", f, &filter]);
    // c1 pings c2 first (not captured), then c3 once: request and reply, each in and out.
    assert!(d.ping(&c1, &ip2), "c1 -> c2");
    let one = d.exec(&c1, &["ping", "-c", "1", "-W", "2", &ip3]);
    assert!(one.status.success(), "c1 -> c3");
    wait_capture(&mut cap, &err);
    let frames = tshark_frames(&file);
    assert_eq!(frames.len(), 4, "{frames:?}");
    for fr in &frames {
        assert!(
            fr[4] == ip3 || fr[5] == ip3,
            "only frames to or from {ip3}: {fr:?}"
        );
        assert!(
            fr[4] != ip2 && fr[5] != ip2,
            "c1 -> c2 was filtered out: {fr:?}"
        );
    }
}

#[test]
fn capture_shows_what_the_gateway_answers_going_out() {
    if !need_root("capture_gateway") || !require_tools(&["ping", "tshark"]) {
        return;
    }
    let d = Daemon::start("cg");
    let c1 = unique("ga");
    d.run(&c1, &[]);
    let ip1 = d.ip_of(&c1);
    let net: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).unwrap();
    let gw = net[0]["gateway"].as_str().unwrap().to_string();
    let port = d.port_name(&c1);
    let file = d.dir.join("gw.pcapng");
    let f = file.to_str().unwrap();
    // Only what the switch sends to c1: the switch's gateway answers the pings itself.
    let (mut cap, err) = start_capture(
        &d,
        &[
            "--container",
            &c1,
            "--direction",
            "out",
            "-c",
            "2",
            "-w",
            f,
            "icmp",
        ],
    );
    assert!(d.ping(&c1, &gw), "c1 -> its gateway {gw}");
    wait_capture(&mut cap, &err);
    let frames = tshark_frames(&file);
    assert_eq!(frames.len(), 2, "{frames:?}");
    for fr in &frames {
        assert_eq!(
            (fr[0].as_str(), fr[1].as_str(), fr[3].as_str()),
            (port.as_str(), "0x00000002", "0"),
            "an echo reply out on c1's port: {fr:?}"
        );
        assert_eq!(
            (fr[4].as_str(), fr[5].as_str()),
            (gw.as_str(), ip1.as_str())
        );
        assert_eq!(fr[2], "eth:ethertype:ip:icmp:data", "{fr:?}");
    }
}

/// Every frame of an outer (`--outer`) capture as tshark reads it, with IPv4 header checksums
/// checked: interface, direction flags, protocol stack, IPv4 sources and destinations (outer,
/// then inner, comma-separated), VXLAN VNI, ICMP type, IPv4 checksum statuses (1: good), UDP
/// destination ports. Panics if tshark reports the file damaged or cut short.
fn tshark_outer(file: &std::path::Path) -> Vec<Vec<String>> {
    let f = file.to_str().unwrap();
    let mut a = vec!["-r", f, "-o", "ip.check_checksum:TRUE", "-T", "fields"];
    a.extend_from_slice(&["-E", "separator=/t"]);
    for field in [
        "frame.interface_name",
        "frame.packet_flags_direction",
        "frame.protocols",
        "ip.src",
        "ip.dst",
        "vxlan.vni",
        "icmp.type",
        "ip.checksum.status",
        "udp.dstport",
    ] {
        a.extend_from_slice(&["-e", field]);
    }
    let o = sh("tshark", &a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "tshark failed: {err}");
    for bad in ["damaged", "cut short", "corrupt", "isn't a capture file"] {
        assert!(!err.contains(bad), "tshark: {err}");
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Two hosts (namespaces, each with its daemon) joined by an overlay network `ov` (VNI 4343,
/// 10.93.0.0/16), a container on each; the first has pinged the second once.
struct OverlayPair {
    daemons: Vec<Daemon>,
    _ul: Underlay,
    names: [String; 2],
    ips: [String; 2],
}

impl OverlayPair {
    fn new(tag: &str) -> OverlayPair {
        let ul = Underlay::new(tag, 2);
        let daemons = ul.daemons(tag, &[]);
        ul.overlay(&daemons, 93, 4343);
        let names = [unique(&format!("{tag}a")), unique(&format!("{tag}b"))];
        for (d, n) in daemons.iter().zip(&names) {
            d.run(n, &["--network", "ov"]);
        }
        let ips = [daemons[0].ip_of(&names[0]), daemons[1].ip_of(&names[1])];
        assert!(
            daemons[0].ping(&names[0], &ips[1]),
            "host 1 -> host 2 over the overlay\n{}",
            daemons[0].log()
        );
        OverlayPair {
            daemons,
            _ul: ul,
            names,
            ips,
        }
    }
}

/// `--outer` on host 1's tunnel port: the VXLAN datagrams of a ping across the overlay, read
/// back by tshark as IPv4/UDP/VXLAN/Ethernet/IPv4/ICMP with valid IPv4 checksums, the
/// network's VNI, the two VTEP addresses outside and the containers inside, the requests
/// outbound and the replies inbound. Then `--network ov --outer --direction in`: the same
/// tunnel, only what it received.
#[test]
fn outer_capture_of_a_ping_over_the_overlay_decodes_as_vxlan_in_tshark() {
    if !need_root("capture_outer") || !require_tools(&["ping", "tshark"]) {
        return;
    }
    let p = OverlayPair::new("co");
    let d = &p.daemons[0];
    let (vtep1, vtep2) = ("192.168.77.1", "192.168.77.2");
    let tunnel = format!("vxlan:{vtep1}:4789");
    let file = d.dir.join("outer.pcapng");
    let f = file.to_str().unwrap();
    let (mut cap, err) = start_capture(
        d,
        &["--port", &tunnel, "--outer", "-c", "4", "-w", f, "icmp"],
    );
    assert!(
        err.text()
            .contains(&format!("1 port(s) (outer: VXLAN datagrams): {tunnel}")),
        "{}",
        err.text()
    );
    assert!(d.ping(&p.names[0], &p.ips[1]), "ping while capturing");
    wait_capture(&mut cap, &err);
    let frames = tshark_outer(&file);
    assert_eq!(frames.len(), 4, "{frames:?}");
    let (inb, outb) = ("0x00000001", "0x00000002");
    let mut seen = BTreeMap::new();
    for fr in &frames {
        assert_eq!(fr[0], tunnel, "{fr:?}");
        assert_eq!(
            fr[2], "raw:ip:udp:vxlan:eth:ethertype:ip:icmp:data",
            "every frame decodes: {fr:?}"
        );
        assert_eq!(fr[5], "4343", "the network's VNI: {fr:?}");
        assert_eq!(fr[7], "1,1", "both IPv4 header checksums good: {fr:?}");
        assert_eq!(fr[8], "4789", "{fr:?}");
        let (src, dst) = (fr[3].as_str(), fr[4].as_str());
        let want = match fr[6].as_str() {
            "8" => (
                format!("{vtep1},{}", p.ips[0]),
                format!("{vtep2},{}", p.ips[1]),
            ),
            "0" => (
                format!("{vtep2},{}", p.ips[1]),
                format!("{vtep1},{}", p.ips[0]),
            ),
            t => panic!("ICMP type {t}: {fr:?}"),
        };
        assert_eq!((src.to_string(), dst.to_string()), want, "{fr:?}");
        *seen.entry((fr[1].clone(), fr[6].clone())).or_insert(0) += 1;
    }
    let want: BTreeMap<(String, String), i32> = [((outb, "8"), 2), ((inb, "0"), 2)]
        .into_iter()
        .map(|((dir, t), n)| ((dir.to_string(), t.to_string()), n))
        .collect();
    assert_eq!(seen, want, "requests sent, replies received");

    // The overlay network's tunnel, by the network's name, one direction.
    let file = d.dir.join("outer-in.pcapng");
    let f = file.to_str().unwrap();
    let (mut cap, err) = start_capture(
        d,
        &[
            "--network",
            "ov",
            "--outer",
            "--direction",
            "in",
            "-c",
            "2",
            "-w",
            f,
            "icmp",
        ],
    );
    assert!(d.ping(&p.names[0], &p.ips[1]), "ping while capturing");
    wait_capture(&mut cap, &err);
    let frames = tshark_outer(&file);
    assert_eq!(frames.len(), 2, "{frames:?}");
    for fr in &frames {
        assert_eq!((fr[0].as_str(), fr[1].as_str()), (tunnel.as_str(), inb));
        assert_eq!(fr[6], "0", "replies only: {fr:?}");
        assert_eq!(fr[5], "4343");
    }
}

/// A filter applies to the inner frame: `udp and port 7777` leaves out a whole ping across
/// the overlay, and catches the one UDP datagram sent after it; `--outer` on what is not a
/// tunnel port is refused with a clear error.
#[test]
fn outer_capture_filters_the_inner_frame_and_refuses_what_is_not_a_tunnel() {
    if !need_root("capture_outer_filter") || !require_tools(&["ping", "tshark", "bash"]) {
        return;
    }
    let p = OverlayPair::new("cq");
    let d = &p.daemons[0];
    let tunnel = "vxlan:192.168.77.1:4789";
    let file = d.dir.join("outer-udp.pcapng");
    let f = file.to_str().unwrap();
    let (mut cap, err) = start_capture(
        d,
        &["--outer", "-c", "1", "-w", f, "udp", "and", "port", "7777"],
    );
    assert!(d.ping(&p.names[0], &p.ips[1]), "ping while capturing");
    let send = format!("echo hello > /dev/udp/{}/7777", p.ips[1]);
    let o = d.exec(&p.names[0], &["bash", "-c", &send]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_capture(&mut cap, &err);
    let frames = tshark_outer(&file);
    assert_eq!(frames.len(), 1, "only the UDP datagram: {frames:?}");
    let fr = &frames[0];
    assert_eq!(fr[0], tunnel);
    assert_eq!(fr[1], "0x00000002");
    assert_eq!(
        fr[2], "raw:ip:udp:vxlan:eth:ethertype:ip:udp:data",
        "{fr:?}"
    );
    assert_eq!(fr[8], "4789,7777", "{fr:?}");

    // Not a tunnel: a container's port, a container, a bridge network.
    let port = d.port_name(&p.names[0]);
    let e = d.fails(&["capture", "--outer", "--port", &port, "-c", "1"]);
    assert!(
        e.contains(&format!("port {port} is a")) && e.contains("not a VXLAN tunnel port"),
        "{e}"
    );
    let e = d.fails(&["capture", "--outer", "--container", &p.names[0], "-c", "1"]);
    assert!(e.contains("--outer captures tunnel ports"), "{e}");
    let e = d.fails(&["capture", "--outer", "--network", "bridge", "-c", "1"]);
    assert!(
        e.contains("network bridge is a bridge network")
            && e.contains("--outer captures the VXLAN datagrams of overlay networks"),
        "{e}"
    );
    let e = d.fails(&["capture", "--outer", "--port", "nosuch", "-c", "1"]);
    assert!(e.contains("no port nosuch"), "{e}");
}
