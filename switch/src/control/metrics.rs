//! Prometheus metrics: what the switch counts, as the text exposition format 0.0.4, served on an
//! opt-in TCP listener (`vswitch daemon --metrics 127.0.0.1:9180`; no listener without it) and
//! over the control socket (`{"op":"metrics"}`, which `vswitch top` reads).
//!
//! Nothing here costs the dataplane anything: a scrape asks the worker for the snapshot that
//! `vswitch stats` asks for (one command over its channel) and renders what it already counts.
//! The counters added for metrics: the per-port drop count by reason, incremented on the
//! pipeline's drop paths next to the per-port total it already kept, and the worker loop's
//! load ([`crate::worker::Load`]: one clock read per poll iteration, one add per receive burst).
//! Bytes sent are the kernel's count for the port's interface, read here at scrape time.
//!
//! The listener is a small blocking HTTP/1.1 responder on its own thread: `GET /metrics`, one
//! request per connection, at most [`MAX_SCRAPERS`] connections at once, each with
//! [`SCRAPE_TIMEOUT`] to send its request (requests are parsed by the bounded
//! [`super::super::http`] parser).

use super::super::http;
use super::Daemon;
use crate::pipeline::DropReason;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most scrape connections served at once; more are closed at once.
pub const MAX_SCRAPERS: usize = 8;
/// Time a scraper has to send its request (and to take the answer).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Samples `NAME_bucket{le=...}` (cumulative), `NAME_sum` and `NAME_count`.
    Histogram,
}

/// A sample's value: a count, or a measure in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// One sample of a family: the suffix of its name (`_bucket`, `_sum`, `_count` of a histogram;
/// empty otherwise), its label pairs and its value.
type FamilySample = (&'static str, Vec<(&'static str, String)>, Value);

/// One metric family: its name, help, type and samples.
#[derive(Clone, Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<FamilySample>,
}

/// A set of metric families in the order they were first named, rendered as the text format.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// Adds a sample of family `name` (declared on first use with `help` and `kind`).
    pub fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.push(name, help, kind, "", labels, Value::Int(value));
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        suffix: &'static str,
        labels: &[(&'static str, &str)],
        value: Value,
    ) {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.families[i].samples.push((suffix, labels, value));
    }

    /// A counter of seconds (a fraction).
    pub fn seconds(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        secs: f64,
    ) {
        self.push(name, help, Kind::Counter, "", labels, Value::Float(secs));
    }

    /// A histogram: `buckets` are (upper bound, observations in that bucket alone), in
    /// increasing bounds; rendered cumulative, with the `+Inf` bucket, `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        buckets: &[(u64, u64)],
        sum: u64,
    ) {
        let mut total = 0u64;
        let mut bounds: Vec<(String, u64)> = (buckets.iter())
            .map(|(le, n)| {
                total += n;
                (le.to_string(), total)
            })
            .collect();
        bounds.push(("+Inf".to_string(), total));
        let h = Kind::Histogram;
        for (le, n) in &bounds {
            let mut l = labels.to_vec();
            l.push(("le", le));
            self.push(name, help, h, "_bucket", &l, Value::Int(*n));
        }
        self.push(name, help, h, "_sum", labels, Value::Int(sum));
        self.push(name, help, h, "_count", labels, Value::Int(total));
    }

    /// A counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.add(name, help, Kind::Counter, labels, value);
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.add(name, help, Kind::Gauge, labels, value);
    }

    /// The text exposition format 0.0.4: `# HELP`, `# TYPE`, then one line per sample.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (suffix, labels, v) in &f.samples {
                out.push_str(f.name);
                out.push_str(suffix);
                if !labels.is_empty() {
                    out.push('{');
                    for (j, (k, val)) in labels.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {v}");
            }
        }
        out
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample read back from the text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `k`, if present.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the samples of a text exposition (comments skipped); an error names the first line
/// that is not `NAME[{LABELS}] VALUE [TIMESTAMP]`. `vswitch top` reads the daemon's metrics
/// with it.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut b = s.bytes();
    let first_ok = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
    b.next().is_some_and(first_ok) && b.all(|c| first_ok(c) || c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = line.get(..end).unwrap_or_default();
    if !is_name(name, true) {
        return Err("bad metric name");
    }
    let mut rest = line.get(end..).unwrap_or_default();
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or("label without '='")?;
            let k = r.get(..eq).unwrap_or_default();
            if !is_name(k, false) {
                return Err("bad label name");
            }
            r = r
                .get(eq + 1..)
                .and_then(|s| s.strip_prefix('"'))
                .ok_or("label value not quoted")?;
            let mut v = String::new();
            let mut chars = r.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err("unterminated label value"),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => v.push('\\'),
                        Some((_, '"')) => v.push('"'),
                        Some((_, 'n')) => v.push('\n'),
                        _ => return Err("bad escape in a label value"),
                    },
                    Some((_, c)) => v.push(c),
                }
            };
            labels.push((k.to_string(), v));
            r = r.get(close + 1..).unwrap_or_default();
            if let Some(after) = r.strip_prefix(',') {
                r = after;
            } else if !r.starts_with('}') {
                return Err("expected ',' or '}' after a label");
            }
        }
        rest = r;
    }
    let mut parts = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match parts.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| "bad value")?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if parts.next().is_some() {
        return Err("trailing fields");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The daemon's resident set size in bytes (`VmRSS` of /proc/self/status), 0 if unknown.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const PORT_LABELS: [&str; 3] = ["port", "container", "network"];

/// Bytes the switch sent on a port, as the kernel counted them on the port's interface in the
/// daemon's namespace: a veth end's `tx_bytes` (what the switch's AF_PACKET socket sent on it;
/// the switch side has no IPv6 and no address, so nothing else is sent there), a TAP's
/// `rx_bytes` (what the switch wrote into it is what the interface received). `None` for other
/// kinds (an uplink's parent also carries the host's own traffic; a tunnel has no interface) and
/// for an interface not in this namespace (a container's TAP).
fn tx_bytes_of(name: &str, kind: &str) -> Option<u64> {
    let stat = if kind.starts_with("veth/") {
        "tx_bytes"
    } else if kind.starts_with("tap") {
        "rx_bytes"
    } else {
        return None;
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let path = format!("/sys/class/net/{name}/statistics/{stat}");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Daemon {
    /// Every metric the daemon has now, as the text exposition format.
    pub fn metrics(&self) -> String {
        let mut e = Exposition::default();
        let health = self.worker_health();
        let h = |k: &str| health.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let running = health.get("worker_state").and_then(|v| v.as_str()) == Some("running");
        e.gauge(
            "vswitch_worker_up",
            "1 while the switch worker runs, 0 between a panic and its restart.",
            &[],
            u64::from(running),
        );
        e.counter(
            "vswitch_worker_panics_total",
            "Panics of the switch worker since the daemon started.",
            &[],
            h("worker_panics"),
        );
        e.counter(
            "vswitch_worker_restarts_total",
            "Workers started after a panic (each starts its counters from zero).",
            &[],
            h("worker_restarts"),
        );
        e.gauge(
            "process_resident_memory_bytes",
            "Resident memory of the vswitch daemon (VmRSS).",
            &[],
            resident_bytes(),
        );
        match self.worker.snapshot() {
            Ok(snap) => self.worker_metrics(&mut e, &snap),
            Err(e2) => tracing::debug!("metrics without the worker's counters: {e2}"),
        }
        e.render()
    }

    fn worker_metrics(&self, e: &mut Exposition, snap: &crate::worker::Snapshot) {
        // Ports: what the worker read and sent, what the pipeline decided and dropped.
        for (id, rec) in &self.ports.0 {
            let s = snap.ports.iter().find(|s| s.id == *id);
            let c = snap.counters.port(*id).copied().unwrap_or_default();
            let l = [rec.name.as_str(), &rec.container, &rec.network];
            let labels: Vec<(&'static str, &str)> = PORT_LABELS.into_iter().zip(l).collect();
            let sv = |f: fn(&crate::worker::PortStats) -> u64| s.map_or(0, f);
            // A virtual port (an overlay peer) has no socket of its own: what the pipeline
            // queued towards it (frames from it are counted on its tunnel port).
            let (rx, tx) = match s {
                Some(s) => (s.rx_frames, s.tx_frames),
                None => (c.rx, c.tx),
            };
            e.counter(
                "vswitch_port_rx_frames_total",
                "Frames the switch received on the port.",
                &labels,
                rx,
            );
            e.counter(
                "vswitch_port_rx_bytes_total",
                "Bytes of the frames the switch received on the port (as received: a GSO frame counts whole).",
                &labels,
                c.rx_bytes,
            );
            e.counter(
                "vswitch_port_tx_frames_total",
                "Frames the switch sent on the port (an overlay peer's: queued towards it).",
                &labels,
                tx,
            );
            if let Some(b) = tx_bytes_of(&rec.name, rec.kind) {
                e.counter(
                    "vswitch_port_tx_bytes_total",
                    "Bytes the switch sent on the port, as the kernel counted them on its interface (veth and host TAP ports; a GSO frame counts whole).",
                    &labels,
                    b,
                );
            }
            e.counter(
                "vswitch_port_tx_dropped_total",
                "Frames for the port that its transmit queue refused.",
                &labels,
                sv(|s| s.tx_dropped),
            );
            e.counter(
                "vswitch_port_rx_kernel_dropped_total",
                "Frames the kernel dropped before the switch read them (the port's socket was full).",
                &labels,
                sv(|s| s.rx_dropped),
            );
            for (decision, v) in [
                ("unicast", c.unicast),
                ("flood", c.flood),
                ("gateway", c.gateway),
            ] {
                let mut l = labels.clone();
                l.push(("decision", decision));
                e.counter(
                    "vswitch_port_forwarded_total",
                    "Frames from the port by decision: to one known port, flooded, to the gateway.",
                    &l,
                    v,
                );
            }
            for r in DropReason::ALL {
                if r == DropReason::TxFull {
                    continue; // counted on the output port: vswitch_port_tx_dropped_total
                }
                let mut l = labels.clone();
                l.push(("reason", r.name()));
                e.counter(
                    "vswitch_port_drops_total",
                    "Frames from the port the pipeline dropped, by reason.",
                    &l,
                    c.drop_count(r),
                );
            }
            e.counter(
                "vswitch_port_storm_holds_total",
                "Times the port was held for a broadcast storm.",
                &labels,
                sv(|s| s.storm_holds),
            );
            e.counter(
                "vswitch_port_storm_held_frames_total",
                "Frames the kernel dropped while the port was held for a storm.",
                &labels,
                sv(|s| s.storm_held),
            );
        }
        // The switch as a whole.
        let c = &snap.counters;
        e.counter(
            "vswitch_rx_frames_total",
            "Frames the pipeline received, all ports.",
            &[],
            c.rx,
        );
        e.counter(
            "vswitch_tx_frames_total",
            "Frames the pipeline queued for transmission, all ports (each flooded copy counts).",
            &[],
            c.tx,
        );
        // The worker loop: how busy, and how full its receive bursts are.
        let load = &snap.load;
        e.seconds(
            "vswitch_worker_busy_seconds_total",
            "Seconds the worker spent in loop iterations that received frames (busy ratio: its rate over the rate of vswitch_worker_run_seconds_total).",
            &[],
            load.busy_ns as f64 / 1e9,
        );
        e.seconds(
            "vswitch_worker_run_seconds_total",
            "Seconds the worker has run, busy or waiting.",
            &[],
            load.run_ns as f64 / 1e9,
        );
        e.counter(
            "vswitch_worker_spin_declined_total",
            "Times busy polling (--busy-poll) slept inside its window because another thread of the host was waiting for a CPU.",
            &[],
            load.spin_declined,
        );
        let buckets: Vec<(u64, u64)> = (load.batches.iter().enumerate())
            .map(|(k, n)| (1u64 << k, *n))
            .collect();
        e.histogram(
            "vswitch_worker_batch_frames",
            "Frames per receive burst that received any (a burst holds at most 64).",
            &[],
            &buckets,
            load.batch_frames,
        );
        for r in DropReason::ALL {
            e.counter(
                "vswitch_drops_total",
                "Frames dropped, all ports, by reason.",
                &[("reason", r.name())],
                c.drop_count(r),
            );
        }
        // Networks: their MAC table entries and ports.
        let mut nets: Vec<(&str, u16, &str)> = (self.state.networks.values())
            .map(|n| (n.name.as_str(), n.id, n.driver.as_str()))
            .collect();
        nets.sort();
        for (name, id, driver) in nets {
            let macs = snap.fdb.iter().filter(|f| f.network.0 == id).count() as u64;
            let ports = self.ports.0.values().filter(|p| p.network == name).count() as u64;
            let l = [("network", name), ("driver", driver)];
            e.gauge(
                "vswitch_network_mac_entries",
                "Entries of the MAC table in the network.",
                &l,
                macs,
            );
            e.gauge(
                "vswitch_network_ports",
                "Ports of the switch in the network.",
                &l,
                ports,
            );
        }
        let f = &snap.fdb_counters;
        e.gauge(
            "vswitch_fdb_entries",
            "Entries of the MAC table, all networks.",
            &[],
            snap.fdb.len() as u64,
        );
        for (name, help, v) in [
            (
                "vswitch_fdb_learned_total",
                "MAC addresses learned (new entries).",
                f.learned,
            ),
            (
                "vswitch_fdb_moved_total",
                "MAC addresses that moved to another port.",
                f.moved,
            ),
            (
                "vswitch_fdb_aged_total",
                "MAC entries removed by aging.",
                f.aged,
            ),
            (
                "vswitch_fdb_evicted_total",
                "MAC entries evicted to make room under a limit.",
                f.evicted,
            ),
            (
                "vswitch_fdb_refused_total",
                "MAC addresses not learned: a limit was reached and nothing could be evicted.",
                f.refused,
            ),
        ] {
            e.counter(name, help, &[], v);
        }
        self.nat_metrics(e);
        self.tunnel_metrics(e, snap);
    }

    fn nat_metrics(&self, e: &mut Exposition) {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.worker.send(crate::worker::Command::Gateway(
            crate::gateway::GatewayCommand::Counters { reply },
        ));
        let Ok(n) = rx.recv_timeout(Duration::from_secs(5)) else {
            return;
        };
        for (proto, flows, opened) in [
            ("tcp", n.tcp_flows, n.tcp_opened),
            ("udp", n.udp_flows, n.udp_opened),
            ("icmp", n.icmp_flows, n.icmp_opened),
        ] {
            e.gauge(
                "vswitch_nat_flows",
                "NAT flows open now, by protocol.",
                &[("proto", proto)],
                flows,
            );
            e.counter(
                "vswitch_nat_flows_opened_total",
                "NAT flows opened, by protocol.",
                &[("proto", proto)],
                opened,
            );
        }
        for (reason, v) in [
            ("table_full", n.drop_table_full),
            ("no_egress", n.drop_no_egress),
            ("socket_error", n.drop_socket_error),
            ("too_big", n.drop_too_big),
            ("bad_frame", n.drop_bad_frame),
            ("send_failed", n.drop_send_failed),
            ("no_neighbor", n.drop_no_neighbor),
        ] {
            e.counter(
                "vswitch_nat_refused_total",
                "Packets the NAT stage refused, by reason (table_full: a new flow over the table's limit).",
                &[("reason", reason)],
                v,
            );
        }
        e.counter(
            "vswitch_nat_published_accepts_total",
            "Connections accepted on published ports.",
            &[],
            n.published_accepts,
        );
        for (how, v) in [("local", n.dns_answers), ("forwarded", n.dns_forwarded)] {
            e.counter(
                "vswitch_dns_queries_total",
                "DNS queries the gateway answered itself or forwarded upstream.",
                &[("answer", how)],
                v,
            );
        }
    }

    fn tunnel_metrics(&self, e: &mut Exposition, snap: &crate::worker::Snapshot) {
        for (id, s) in &snap.tunnels {
            // One tunnel (one VTEP address and UDP port) carries every overlay network.
            let name = (self.ports.0.get(id)).map_or(format!("#{id}"), |p| p.name.clone());
            let l = [("tunnel", name.as_str())];
            for (metric, help, v) in [
                (
                    "vswitch_tunnel_rx_datagrams_total",
                    "VXLAN datagrams the tunnel received.",
                    s.rx_datagrams,
                ),
                (
                    "vswitch_tunnel_rx_decapsulated_total",
                    "Frames the tunnel decapsulated.",
                    s.decap.ok,
                ),
                (
                    "vswitch_tunnel_tx_frames_total",
                    "Frames the tunnel encapsulated and sent.",
                    s.tx_frames,
                ),
                (
                    "vswitch_tunnel_tx_datagrams_total",
                    "VXLAN datagrams the tunnel sent.",
                    s.tx_datagrams,
                ),
                (
                    "vswitch_tunnel_tx_too_big_total",
                    "Frames larger than the peer's path MTU allows (answered with ICMP).",
                    s.tx_too_big,
                ),
                (
                    "vswitch_tunnel_tx_errors_total",
                    "Sends the tunnel's socket refused.",
                    s.tx_errors + s.tx_tunnel_errors,
                ),
            ] {
                e.counter(metric, help, &l, v);
            }
            for r in encap::DecapReason::ALL {
                e.counter(
                    "vswitch_tunnel_rx_decap_drops_total",
                    "Datagrams the tunnel dropped while decapsulating, by reason.",
                    &[("tunnel", name.as_str()), ("reason", r.as_str())],
                    s.decap.dropped(r),
                );
            }
        }
        // Peers are the tunnels' virtual ports: frames sent towards each.
        for n in self.network_ls() {
            for (peer, info) in &n.peers {
                let tx = snap
                    .counters
                    .port(crate::port::PortId(info.port_id))
                    .map_or(0, |c| c.tx);
                let peer = peer.to_string();
                let l = [("network", n.name.as_str()), ("peer", peer.as_str())];
                e.counter(
                    "vswitch_tunnel_peer_tx_frames_total",
                    "Frames the switch queued towards an overlay peer (a remote VTEP).",
                    &l,
                    tx,
                );
                e.gauge(
                    "vswitch_tunnel_peer_mtu",
                    "Largest inner IP packet sent to the peer (the underlay's path MTU minus 50).",
                    &l,
                    u64::from(info.mtu),
                );
            }
        }
    }
}

/// Binds the metrics listener (`vswitch daemon --metrics ADDR`).
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves `GET /metrics` on `listener` from a thread of its own, for as long as the process
/// runs. Returns the bound address.
pub fn serve(listener: TcpListener, daemon: Arc<Mutex<Daemon>>) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vswitch-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if active.load(Ordering::SeqCst) >= MAX_SCRAPERS {
                    let _ = answer(&conn, 503, "Service Unavailable", "text/plain", b"busy\n");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let slot = super::super::server::Slot(Arc::clone(&active));
                let d = Arc::clone(&daemon);
                let _ = std::thread::Builder::new()
                    .name("vswitch-scrape".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = scrape(conn, &d) {
                            tracing::debug!("metrics: a scrape failed: {e}");
                        }
                    });
            }
        })?;
    Ok(addr)
}

fn answer(
    mut conn: &TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// One connection: read one request, answer it, close.
fn scrape(mut conn: TcpStream, daemon: &Mutex<Daemon>) -> io::Result<()> {
    conn.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    conn.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let deadline = std::time::Instant::now() + SCRAPE_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let req = loop {
        match http::parse(&buf) {
            Ok(Some((r, _))) => break r,
            Ok(None) => {}
            Err(e) => {
                let (code, reason) = e.status();
                return answer(
                    &conn,
                    code,
                    reason,
                    "text/plain",
                    format!("{e}\n").as_bytes(),
                );
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no request"));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let path = req.path.split('?').next().unwrap_or_default();
    match (req.method.as_str(), path) {
        ("GET" | "HEAD", "/metrics") => {
            let text = super::super::server::lock(daemon).metrics();
            let body = if req.method == "HEAD" {
                &[][..]
            } else {
                text.as_bytes()
            };
            answer(&conn, 200, "OK", CONTENT_TYPE, body)
        }
        ("GET" | "HEAD", "/") => answer(
            &conn,
            200,
            "OK",
            "text/plain",
            b"vswitch: metrics at /metrics\n",
        ),
        ("GET" | "HEAD", _) => answer(&conn, 404, "Not Found", "text/plain", b"try /metrics\n"),
        _ => answer(
            &conn,
            405,
            "Method Not Allowed",
            "text/plain",
            b"only GET /metrics\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back_with_escapes() {
        let mut e = Exposition::default();
        e.counter("a_total", "Help with \\ and\nnewline.", &[], 3);
        e.gauge("b", "B.", &[("x", "q\"uo\\te\nd"), ("y", "")], 7);
        e.counter("a_total", "ignored", &[("k", "v")], 4);
        let text = e.render();
        assert_eq!(
            text,
            "# HELP a_total Help with \\\\ and\\nnewline.\n# TYPE a_total counter\na_total 3\na_total{k=\"v\"} 4\n\
             # HELP b B.\n# TYPE b gauge\nb{x=\"q\\\"uo\\\\te\\nd\",y=\"\"} 7\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].name, "b");
        assert_eq!(s[2].label("x"), Some("q\"uo\\te\nd"));
        assert_eq!(s[2].label("y"), Some(""));
        assert_eq!(s[2].value, 7.0);
        assert_eq!((s[1].label("k"), s[1].value), (Some("v"), 4.0));
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut e = Exposition::default();
        e.histogram("h", "H.", &[("w", "1")], &[(1, 2), (2, 0), (4, 3)], 15);
        e.seconds("s_seconds_total", "S.", &[], 1.25);
        assert_eq!(
            e.render(),
            "# HELP h H.\n# TYPE h histogram\n\
             h_bucket{w=\"1\",le=\"1\"} 2\nh_bucket{w=\"1\",le=\"2\"} 2\nh_bucket{w=\"1\",le=\"4\"} 5\n\
             h_bucket{w=\"1\",le=\"+Inf\"} 5\nh_sum{w=\"1\"} 15\nh_count{w=\"1\"} 5\n\
             # HELP s_seconds_total S.\n# TYPE s_seconds_total counter\ns_seconds_total 1.25\n"
        );
        assert!(parse(&e.render()).is_ok());
    }

    #[test]
    fn parse_refuses_what_is_not_the_format() {
        for bad in [
            "1abc 3",
            "a{b=c} 1",
            "a{b=\"c\" 1",
            "a{b=\"c\"}",
            "a x",
            "a{=\"c\"} 1",
            "a{b=\"\\x\"} 1",
            "a 1 2 3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let ok = parse("a:b_c{d=\"e\",} 1.5e3 1700000000000\nx NaN\n").unwrap();
        assert_eq!(ok[0].value, 1500.0);
        assert!(ok[1].value.is_nan());
    }

    #[test]
    fn resident_memory_is_known() {
        assert!(resident_bytes() > 1 << 20, "{}", resident_bytes());
    }
}
