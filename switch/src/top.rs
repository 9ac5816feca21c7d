//! `vswitch top`: per-port and per-network rates, from two readings of the daemon's metrics
//! (`{"op":"metrics"}`, the text `GET /metrics` serves) one interval apart.

use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use switch::control::api::Request;
use switch::control::daemon::metrics::{parse, Sample};
use switch::control::server::Client;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Show this many refreshes, then exit (default: until interrupted).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u32).range(1..))]
    count: Option<u32>,
    /// Show one refresh (rates over one interval) and exit: `--count 1`.
    #[arg(long, conflicts_with = "count")]
    once: bool,
    /// Seconds between refreshes (the rates are averages over it).
    #[arg(short, long, default_value = "1", value_parser = parse_interval)]
    interval: Duration,
    /// Plain output: each refresh printed after the previous one, no screen clearing (the
    /// default when the output is not a terminal).
    #[arg(long)]
    plain: bool,
    /// Also list ports that moved nothing during the interval.
    #[arg(short, long)]
    all: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?}: give seconds between 0.1 and 3600")),
    }
}

/// One port's counters in one reading.
#[derive(Clone, Copy, Debug, Default)]
struct PortCounts {
    rx: f64,
    tx: f64,
    rx_bytes: f64,
    tx_bytes: f64,
    drops: f64,
}

/// Ports by (port, container, network); networks' MAC entries by name; the worker's busy and
/// running seconds.
#[derive(Debug, Default)]
struct Reading {
    ports: BTreeMap<(String, String, String), PortCounts>,
    macs: BTreeMap<String, f64>,
    busy_secs: f64,
    run_secs: f64,
}

fn reading(samples: &[Sample]) -> Reading {
    let mut r = Reading::default();
    for s in samples {
        if let Some(n) = s.name.strip_prefix("vswitch_port_") {
            let key = (
                s.label("port").unwrap_or_default().to_string(),
                s.label("container").unwrap_or_default().to_string(),
                s.label("network").unwrap_or_default().to_string(),
            );
            let p = r.ports.entry(key).or_default();
            match n {
                "rx_frames_total" => p.rx += s.value,
                "tx_frames_total" => p.tx += s.value,
                "rx_bytes_total" => p.rx_bytes += s.value,
                "tx_bytes_total" => p.tx_bytes += s.value,
                "drops_total" | "tx_dropped_total" | "rx_kernel_dropped_total" => {
                    p.drops += s.value
                }
                _ => {}
            }
        } else if s.name == "vswitch_network_mac_entries" {
            let net = s.label("network").unwrap_or_default().to_string();
            *r.macs.entry(net).or_default() += s.value;
        } else if s.name == "vswitch_worker_busy_seconds_total" {
            r.busy_secs = s.value;
        } else if s.name == "vswitch_worker_run_seconds_total" {
            r.run_secs = s.value;
        }
    }
    r
}

/// Counter increase between two readings; a counter that went down was reset (a new worker
/// after a panic) and counts from zero.
fn delta(old: f64, new: f64) -> f64 {
    if new >= old {
        new - old
    } else {
        new
    }
}

/// A rate for people: 1234 -> "1.2k", 12345678 -> "12.3M".
fn human(v: f64) -> String {
    let (v, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    if unit.is_empty() {
        format!("{v:.1}")
    } else {
        format!("{v:.1}{unit}")
    }
}

fn fetch(client: &impl Fn() -> Result<Client>) -> Result<Reading> {
    let v = client()?.call(&Request::Metrics)?;
    let text = v["text"].as_str().context("the daemon sent no metrics")?;
    Ok(reading(&parse(text).map_err(anyhow::Error::msg)?))
}

/// Rates of one port or network over one interval.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    rx: f64,
    tx: f64,
    bits: f64,
    tx_bits: f64,
    drops: f64,
}

impl Rates {
    fn add(&mut self, o: Rates) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.bits += o.bits;
        self.tx_bits += o.tx_bits;
        self.drops += o.drops;
    }
    fn idle(&self) -> bool {
        self.rx == 0.0 && self.tx == 0.0 && self.drops == 0.0
    }
}

fn render(old: &Reading, new: &Reading, secs: f64, all: bool) -> String {
    let mut out = String::new();
    let mut ports: Vec<(&(String, String, String), Rates)> = new
        .ports
        .iter()
        .map(|(k, n)| {
            let o = old.ports.get(k).copied().unwrap_or_default();
            let r = Rates {
                rx: delta(o.rx, n.rx) / secs,
                tx: delta(o.tx, n.tx) / secs,
                bits: delta(o.rx_bytes, n.rx_bytes) * 8.0 / secs,
                tx_bits: delta(o.tx_bytes, n.tx_bytes) * 8.0 / secs,
                drops: delta(o.drops, n.drops) / secs,
            };
            (k, r)
        })
        .collect();
    let mut nets: BTreeMap<&str, (usize, Rates)> = BTreeMap::new();
    for (k, r) in &ports {
        let e = nets.entry(k.2.as_str()).or_default();
        e.0 += 1;
        e.1.add(*r);
    }
    for n in new.macs.keys() {
        nets.entry(n.as_str()).or_default();
    }
    ports.sort_by(|a, b| {
        (b.1.rx + b.1.tx)
            .total_cmp(&(a.1.rx + a.1.tx))
            .then(a.0.cmp(b.0))
    });
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    out.push_str(&format!(
        "{:<16} {:<16} {:<14} {:>10} {:>10} {:>12} {:>12} {:>10}\n",
        "PORT", "CONTAINER", "NETWORK", "RX/s", "TX/s", "RX-bit/s", "TX-bit/s", "DROP/s"
    ));
    let shown = ports.iter().filter(|(_, r)| all || !r.idle());
    for ((port, container, network), r) in shown {
        out.push_str(&format!(
            "{:<16} {:<16} {:<14} {:>10} {:>10} {:>12} {:>12} {:>10}\n",
            port,
            dash(container),
            dash(network),
            human(r.rx),
            human(r.tx),
            human(r.bits),
            human(r.tx_bits),
            human(r.drops)
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<16} {:>5} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10}\n",
        "NETWORK", "PORTS", "MACS", "RX/s", "TX/s", "RX-bit/s", "TX-bit/s", "DROP/s"
    ));
    for (net, (n, r)) in &nets {
        out.push_str(&format!(
            "{:<16} {:>5} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10}\n",
            dash(net),
            n,
            new.macs.get(*net).copied().unwrap_or(0.0),
            human(r.rx),
            human(r.tx),
            human(r.bits),
            human(r.tx_bits),
            human(r.drops)
        ));
    }
    out
}

/// The share of the interval the worker spent moving frames, in percent (`None` when the
/// worker restarted in between, or the daemon does not say).
fn busy_percent(old: &Reading, new: &Reading) -> Option<f64> {
    let run = new.run_secs - old.run_secs;
    let busy = new.busy_secs - old.busy_secs;
    (run > 0.0 && busy >= 0.0).then(|| (busy / run * 100.0).min(100.0))
}

/// `vswitch top`.
pub fn run(a: TopArgs, client: impl Fn() -> Result<Client>) -> Result<i32> {
    let count = if a.once { Some(1) } else { a.count };
    let tty = std::io::stdout().is_terminal() && !a.plain;
    let mut old = fetch(&client)?;
    let mut t_old = Instant::now();
    let mut shown = 0u32;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(a.interval);
        let new = fetch(&client)?;
        let now = Instant::now();
        let secs = now.duration_since(t_old).as_secs_f64().max(1e-3);
        let body = render(&old, &new, secs, a.all);
        let busy = busy_percent(&old, &new).map_or("?".to_string(), |b| format!("{b:.1}%"));
        let head = format!(
            "vswitch top: rates over {secs:.2} s, worker busy {busy}{}",
            if tty { ", Ctrl-C to quit" } else { "" }
        );
        let mut out = std::io::stdout().lock();
        if tty {
            write!(out, "\x1b[H\x1b[2J")?;
        } else if shown > 0 {
            writeln!(out)?;
        }
        write!(out, "{head}\n{body}")?;
        out.flush()?;
        shown += 1;
        old = new;
        t_old = now;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rx: u64, bytes: u64, drops: u64) -> String {
        format!(
            "vswitch_port_rx_frames_total{{port=\"va\",container=\"c1\",network=\"bridge\"}} {rx}\n\
             vswitch_port_tx_frames_total{{port=\"va\",container=\"c1\",network=\"bridge\"}} 5\n\
             vswitch_port_rx_bytes_total{{port=\"va\",container=\"c1\",network=\"bridge\"}} {bytes}\n\
             vswitch_port_tx_bytes_total{{port=\"va\",container=\"c1\",network=\"bridge\"}} {}\n\
             vswitch_worker_busy_seconds_total {}\n\
             vswitch_worker_run_seconds_total {}\n\
             vswitch_port_drops_total{{port=\"va\",container=\"c1\",network=\"bridge\",reason=\"runt\"}} {drops}\n\
             vswitch_port_rx_frames_total{{port=\"vb\",container=\"c2\",network=\"bridge\"}} 7\n\
             vswitch_network_mac_entries{{network=\"bridge\",driver=\"bridge\"}} 2\n",
            bytes * 2,
            rx as f64 / 1000.0,
            rx as f64 / 100.0,
        )
    }

    #[test]
    fn rates_per_port_and_network() {
        let old = reading(&parse(&text(100, 10_000, 1)).unwrap());
        let new = reading(&parse(&text(300, 260_000, 5)).unwrap());
        let out = render(&old, &new, 2.0, false);
        let lines: Vec<&str> = out.lines().collect();
        // c1: 200 frames, 250,000 bytes in and 500,000 out, and 4 drops in 2 s; c2 idle: not
        // listed.
        let fields: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            fields,
            ["va", "c1", "bridge", "100.0", "0.0", "1.0M", "2.0M", "2.0"],
            "{out}"
        );
        assert!(!out.contains("vb"), "{out}");
        let net = out.lines().find(|l| l.starts_with("bridge")).unwrap();
        let fields: Vec<&str> = net.split_whitespace().collect();
        assert_eq!(
            fields,
            ["bridge", "2", "2", "100.0", "0.0", "1.0M", "2.0M", "2.0"],
            "{out}"
        );
        assert!(render(&old, &new, 2.0, true).contains("vb"));
        // Busy 0.2 s of the 2 s the worker ran.
        let busy = busy_percent(&old, &new).unwrap();
        assert!((busy - 10.0).abs() < 1e-6, "{busy}");
        assert_eq!(busy_percent(&new, &old), None, "a restarted worker");
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        assert_eq!(delta(100.0, 30.0), 30.0);
        assert_eq!(delta(100.0, 130.0), 30.0);
    }
}
