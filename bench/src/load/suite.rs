//! The RFC 2544 and RFC 2889 procedures over a [`Topology`], built from trials
//! ([`run_trial`]) and the pure search logic ([`BinarySearch`], [`next_loss_step`]).

use super::frame::Errored;
use super::gen::{learn, run_trial, Live, Pattern, Traffic, TrialResult, TrialSpec};
use super::report::Progress;
use super::search::{next_loss_step, passes, BinarySearch};
use super::target::{sh, Topology};
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

/// Settings shared by the procedures.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Length of one trial (RFC 2544 asks for 60 s; the quick mode uses 1-2 s).
    pub trial: Duration,
    /// Loss tolerated by a "zero-loss" trial, as a fraction (0 = RFC 2544 exactly).
    pub tolerance: f64,
    /// Binary search resolution, as a fraction of the highest rate tried.
    pub resolution: f64,
    /// Flows (UDP port pairs) per stream.
    pub flows: u16,
    /// Emulated hosts (source MACs) per port; destination hosts likewise.
    pub hosts: u32,
    /// Upper bound of offered load in frames/s (None: as fast as the generator goes).
    pub max_rate: Option<f64>,
    /// Loss-versus-load step, percent.
    pub loss_step_pct: u32,
}

/// One trial as reported.
#[derive(Clone, Debug, Serialize)]
pub struct TrialRow {
    /// Asked rate (frames/s; infinite = unpaced).
    pub target_pps: Option<f64>,
    /// Measured offered rate.
    pub offered_pps: f64,
    /// Deliveries per second.
    pub received_pps: f64,
    /// Frames sent.
    pub sent: u64,
    /// Expected deliveries lost.
    pub lost: u64,
    /// Lost fraction.
    pub loss_ratio: f64,
    /// Dropped by the receiving sockets (counted in `lost`; a measurement artefact).
    pub rx_socket_drops: u64,
    /// Unicast frames delivered to a port they were not meant for.
    pub flooded: u64,
    /// Whether the trial passed.
    pub passed: bool,
}

impl TrialRow {
    fn of(target: f64, r: &TrialResult, tol: f64) -> TrialRow {
        TrialRow {
            target_pps: target.is_finite().then_some(target),
            offered_pps: r.offered_pps(),
            received_pps: r.received_pps(),
            sent: r.sent(),
            lost: r.lost(),
            loss_ratio: r.loss_ratio(),
            rx_socket_drops: r.rx_socket_drops(),
            flooded: r.flooded(),
            passed: passes(r.expected(), r.lost(), tol),
        }
    }
}

/// A throughput result (RFC 2544 §26.1; RFC 2889 fully meshed and broadcast use it too).
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Frame size (with FCS).
    pub size: usize,
    /// Highest offered rate (frames/s, all senders) with loss within tolerance; 0 if none.
    pub rate_pps: f64,
    /// Deliveries per second at that rate (for broadcast: rate x receivers).
    pub delivered_pps: f64,
    /// The same in Mbit/s of frames (size x 8 x rate).
    pub mbps: f64,
    /// Highest rate the generator offered (the search's upper bound).
    pub max_offered_pps: f64,
    /// The first, unpaced trial passed: the device forwarded all the generator could send,
    /// so `rate_pps` is a lower bound set by the generator (and the CPU it shares).
    pub generator_limited: bool,
    /// All trials of the search.
    pub trials: Vec<TrialRow>,
}

/// Latency at a rate (RFC 2544 §26.2), microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Frame size.
    pub size: usize,
    /// Offered rate.
    pub rate_pps: f64,
    /// Frames measured.
    pub samples: u64,
    /// Minimum.
    pub min_us: f64,
    /// Mean.
    pub avg_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// One point of frame loss versus offered load (RFC 2544 §26.3).
#[derive(Clone, Debug, Serialize)]
pub struct LossPoint {
    /// Frame size.
    pub size: usize,
    /// Offered load, percent of the maximum.
    pub load_pct: f64,
    /// The trial.
    pub trial: TrialRow,
}

/// Back-to-back frames (RFC 2544 §26.4).
#[derive(Clone, Debug, Serialize)]
pub struct BackToBack {
    /// Frame size.
    pub size: usize,
    /// Longest burst at the generator's full rate forwarded without loss (0: none).
    pub burst_frames: u64,
    /// Longest burst tried.
    pub max_burst: u64,
    /// Trials.
    pub trials: Vec<TrialRow>,
}

/// Everything RFC 2544 measured for one target and size.
#[derive(Clone, Debug, Serialize)]
pub struct Rfc2544Size {
    /// Throughput.
    pub throughput: Throughput,
    /// Latency at the throughput rate (or at 10% of the maximum if nothing passed).
    pub latency: Latency,
    /// Loss versus load.
    pub loss: Vec<LossPoint>,
    /// Back-to-back.
    pub back_to_back: Option<BackToBack>,
}

fn spec(topo: &Topology, traffic: Vec<Traffic>, dur: Duration) -> TrialSpec {
    TrialSpec {
        ports: topo.ports.clone(),
        traffic,
        duration: dur,
        settle: Duration::from_millis(300),
    }
}

fn trial(
    topo: &Topology,
    traffic: Vec<Traffic>,
    dur: Duration,
    prog: &mut Progress,
    what: &str,
) -> Result<TrialResult> {
    let target: f64 = traffic.iter().map(|t| t.rate).sum();
    prog.start_trial(what, target, dur);
    let r = run_trial(&spec(topo, traffic, dur), |el, live: &Live| {
        prog.tick(el, live)
    })?;
    prog.end_trial(&r);
    Ok(r)
}

/// Traffic of a test at `rate` frames/s in total.
pub type MakeTraffic<'a> = dyn Fn(f64) -> Vec<Traffic> + 'a;

/// Binary search for the highest rate with loss within tolerance. The first trial runs
/// unpaced (or at `max_rate`) and its measured offered rate bounds the search.
pub fn throughput(
    topo: &Topology,
    size: usize,
    make: &MakeTraffic<'_>,
    s: &Settings,
    prog: &mut Progress,
) -> Result<Throughput> {
    learn(
        &topo.ports,
        &make(1000.0),
        20_000.0,
        Duration::from_millis(200),
    )?;
    let first = s.max_rate.unwrap_or(f64::INFINITY);
    let r = trial(topo, make(first), s.trial, prog, "throughput")?;
    let mut rows = vec![TrialRow::of(first, &r, s.tolerance)];
    let max = if first.is_finite() {
        first
    } else {
        r.offered_pps()
    };
    let mut best = rows[0].passed.then_some((max, r.received_pps()));
    if best.is_none() {
        let res = ((max * s.resolution) as u64).max(1);
        let mut search = BinarySearch::new((max / 100.0) as u64, max as u64, res);
        search.record(max as u64, false);
        prog.plan_left(search.remaining_bound());
        while let Some(rate) = search.next() {
            let r = trial(topo, make(rate as f64), s.trial, prog, "throughput")?;
            let row = TrialRow::of(rate as f64, &r, s.tolerance);
            search.record(rate, row.passed);
            if row.passed && best.is_none_or(|(b, _)| rate as f64 > b) {
                best = Some((rate as f64, r.received_pps()));
            }
            rows.push(row);
            prog.plan_left(search.remaining_bound());
        }
    }
    let (rate, delivered) = best.unwrap_or((0.0, 0.0));
    Ok(Throughput {
        size,
        rate_pps: rate,
        delivered_pps: delivered,
        mbps: rate * size as f64 * 8.0 / 1e6,
        max_offered_pps: max,
        generator_limited: rows[0].passed,
        trials: rows,
    })
}

fn latency_of(size: usize, rate: f64, r: &TrialResult) -> Latency {
    let h = &r.latency;
    let us = |ns: u64| ns as f64 / 1000.0;
    Latency {
        size,
        rate_pps: rate,
        samples: h.len(),
        min_us: if h.is_empty() { 0.0 } else { us(h.min()) },
        avg_us: h.mean() / 1000.0,
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        max_us: us(h.max()),
    }
}

/// The RFC 2544 suite for one frame size on a two-port topology (port 0 -> port 1).
pub fn rfc2544_size(
    topo: &Topology,
    size: usize,
    s: &Settings,
    b2b: bool,
    prog: &mut Progress,
) -> Result<Rfc2544Size> {
    let mk = |rate: f64| {
        vec![Traffic {
            src_count: s.hosts,
            dst_count: s.hosts,
            flows: s.flows,
            ..Traffic::stream(0, 1, size, rate)
        }]
    };
    prog.section(&format!("{size}B throughput"));
    let tp = throughput(topo, size, &mk, s, prog)?;
    prog.section(&format!("{size}B latency"));
    let lat_rate = if tp.rate_pps > 0.0 {
        tp.rate_pps
    } else {
        tp.max_offered_pps / 10.0
    };
    let r = trial(topo, mk(lat_rate), s.trial, prog, "latency")?;
    let latency = latency_of(size, lat_rate, &r);
    prog.section(&format!("{size}B loss vs load"));
    let mut loss = Vec::new();
    let mut losses = Vec::new();
    while let Some(frac) = next_loss_step(&losses, s.loss_step_pct) {
        let rate = tp.max_offered_pps * frac;
        let r = trial(topo, mk(rate), s.trial, prog, "loss")?;
        losses.push(r.lost());
        loss.push(LossPoint {
            size,
            load_pct: frac * 100.0,
            trial: TrialRow::of(rate, &r, s.tolerance),
        });
    }
    let back_to_back = if b2b {
        prog.section(&format!("{size}B back-to-back"));
        Some(back_to_back(topo, size, tp.max_offered_pps, s, prog)?)
    } else {
        None
    };
    Ok(Rfc2544Size {
        throughput: tp,
        latency,
        loss,
        back_to_back,
    })
}

/// RFC 2544 §26.4: the longest burst at full speed forwarded without loss.
pub fn back_to_back(
    topo: &Topology,
    size: usize,
    max_rate: f64,
    s: &Settings,
    prog: &mut Progress,
) -> Result<BackToBack> {
    let max_burst = ((max_rate * s.trial.as_secs_f64()) as u64).max(100);
    let mut search = BinarySearch::new(1, max_burst, (max_burst / 50).max(1));
    let mut rows = Vec::new();
    prog.plan_left(search.remaining_bound());
    while let Some(len) = search.next() {
        let mut t = Traffic::stream(0, 1, size, f64::INFINITY);
        t.limit = Some(len);
        let r = trial(topo, vec![t], s.trial * 2, prog, &format!("burst {len}"))?;
        let row = TrialRow::of(f64::INFINITY, &r, 0.0);
        search.record(len, row.passed);
        rows.push(row);
        prog.plan_left(search.remaining_bound());
    }
    Ok(BackToBack {
        size,
        burst_frames: search.result().unwrap_or(0),
        max_burst,
        trials: rows,
    })
}

// ---------------------------------------------------------------- RFC 2889

/// RFC 2889 §5.3 fully meshed throughput across all ports of the topology.
pub fn fully_meshed(
    topo: &Topology,
    size: usize,
    s: &Settings,
    prog: &mut Progress,
) -> Result<Throughput> {
    let n = topo.ports.len();
    let mk = |rate: f64| {
        (0..n)
            .map(|p| Traffic {
                port: p,
                rate: rate / n as f64,
                size,
                src_first: 0,
                src_count: s.hosts,
                dst_count: s.hosts,
                flows: s.flows,
                pattern: Pattern::Unicast((0..n).filter(|&q| q != p).collect()),
                limit: None,
            })
            .collect()
    };
    prog.section(&format!("fully meshed {n} ports {size}B"));
    throughput(topo, size, &mk, s, prog)
}

/// RFC 2889 §5.9 broadcast forwarding: highest broadcast rate from port 0 that every other
/// port receives without loss.
pub fn broadcast(
    topo: &Topology,
    size: usize,
    s: &Settings,
    prog: &mut Progress,
) -> Result<Throughput> {
    let mk = |rate: f64| {
        vec![Traffic {
            pattern: Pattern::Broadcast,
            ..Traffic::stream(0, 1, size, rate)
        }]
    };
    prog.section(&format!("broadcast {size}B"));
    throughput(topo, size, &mk, s, prog)
}

/// Settings of the address tests.
#[derive(Clone, Debug, Serialize)]
pub struct AddressSettings {
    /// The switch's aging time (s): trials wait this long (plus 2 s) for the table to empty.
    pub aging_secs: u32,
    /// Learning frames per second of the caching test.
    pub learn_rate: f64,
    /// Test frames per second (port 1 to the learned addresses).
    pub probe_rate: f64,
    /// Upper bound of the caching search.
    pub max_addresses: u32,
    /// Addresses of the learning-rate test.
    pub rate_addresses: u32,
}

/// One address trial.
#[derive(Clone, Debug, Serialize)]
pub struct AddressTrial {
    /// Addresses taught from port 0.
    pub addresses: u32,
    /// Learning rate asked.
    pub learn_rate: f64,
    /// Learning rate the generator achieved (frames/s).
    pub achieved_rate: f64,
    /// Probes port 0 received (one per address).
    pub received: u64,
    /// Probes flooded to the monitor port (addresses the switch did not know).
    pub flooded: u64,
    /// The switch's table size after learning (vswitch only).
    pub fdb_entries: Option<u64>,
    /// Passed: every probe reached port 0 and none was flooded.
    pub passed: bool,
}

fn address_trial(
    topo: &Topology,
    n: u32,
    rate: f64,
    a: &AddressSettings,
    prog: &mut Progress,
) -> Result<AddressTrial> {
    prog.start_trial(
        &format!("{n} addresses @ {:.0}/s", rate),
        rate,
        Duration::from_secs(a.aging_secs as u64 + 2),
    );
    std::thread::sleep(Duration::from_secs(a.aging_secs as u64 + 2)); // let old entries age out
                                                                      // Port 1 (the prober) and port 2 (the monitor) announce themselves, then port 0 teaches.
    let announce = |port: usize| Traffic {
        pattern: Pattern::Learn,
        limit: Some(1),
        ..Traffic::stream(port, 0, 64, 1000.0)
    };
    run_trial(
        &spec(
            topo,
            vec![announce(1), announce(2)],
            Duration::from_millis(200),
        ),
        |_, _| {},
    )?;
    let teach = Traffic {
        src_count: n,
        pattern: Pattern::Learn,
        limit: Some(n as u64),
        ..Traffic::stream(0, 1, 64, rate)
    };
    let taught = run_trial(
        &spec(
            topo,
            vec![teach],
            Duration::from_secs_f64(n as f64 / rate + 1.0),
        ),
        |_, _| {},
    )?;
    let achieved_rate = taught.ports[0].sent as f64 * 1e9 / taught.ports[0].send_ns.max(1) as f64;
    let fdb_entries = topo.vswitch_stats().and_then(|v| v["fdb_entries"].as_u64());
    // Port 1 sends one frame to each taught address; port 2 must see none of them.
    let probe = Traffic {
        src_count: 1,
        dst_count: n,
        limit: Some(n as u64),
        pattern: Pattern::Unicast(vec![0]),
        ..Traffic::stream(1, 0, 64, a.probe_rate)
    };
    // The probe's destinations are host_mac(0, 0..n): exactly the taught addresses.
    let r = run_trial(
        &spec(
            topo,
            vec![probe],
            Duration::from_secs_f64(n as f64 / a.probe_rate + 1.0),
        ),
        |_, _| {},
    )?;
    let received = r.ports[0].received;
    let flooded = r.ports[2].flooded_in;
    let t = AddressTrial {
        addresses: n,
        learn_rate: rate,
        achieved_rate,
        received,
        flooded,
        fdb_entries,
        passed: flooded == 0 && received == n as u64,
    };
    prog.note(&format!(
        "{n} addresses @ {rate:.0}/s (achieved {achieved_rate:.0}/s): {received} reached port 0, {flooded} flooded{}",
        fdb_entries
            .map(|e| format!(", table {e} entries"))
            .unwrap_or_default()
    ));
    Ok(t)
}

/// RFC 2889 §5.7 address caching capacity: the most addresses port 0 can teach that the
/// switch then forwards to port 0 only (binary search; port 2 watches for floods).
#[derive(Clone, Debug, Serialize)]
pub struct Caching {
    /// Largest number of addresses that passed.
    pub capacity: u32,
    /// Trials.
    pub trials: Vec<AddressTrial>,
}

/// Runs the address caching capacity search (needs 3 ports).
pub fn address_caching(
    topo: &Topology,
    a: &AddressSettings,
    prog: &mut Progress,
) -> Result<Caching> {
    prog.section("address caching capacity");
    let mut search = BinarySearch::new(1, a.max_addresses as u64, 1);
    let mut trials = Vec::new();
    prog.plan_left(search.remaining_bound());
    while let Some(n) = search.next() {
        let t = address_trial(topo, n as u32, a.learn_rate, a, prog)?;
        search.record(n, t.passed);
        trials.push(t);
        prog.plan_left(search.remaining_bound());
    }
    Ok(Caching {
        capacity: search.result().unwrap_or(0) as u32,
        trials,
    })
}

/// RFC 2889 §5.8 address learning rate.
#[derive(Clone, Debug, Serialize)]
pub struct LearningRate {
    /// Addresses taught per trial.
    pub addresses: u32,
    /// Highest learning rate (frames/s, as achieved by the generator) at which all were
    /// learned.
    pub rate: f64,
    /// The fastest trial passed: the rate is the generator's limit, not the switch's.
    pub generator_limited: bool,
    /// Trials.
    pub trials: Vec<AddressTrial>,
}

/// Runs the learning rate search (needs 3 ports).
pub fn learning_rate(
    topo: &Topology,
    a: &AddressSettings,
    max_rate: f64,
    prog: &mut Progress,
) -> Result<LearningRate> {
    prog.section("address learning rate");
    let mut search = BinarySearch::new(1000, max_rate as u64, (max_rate * 0.05) as u64);
    let mut trials = Vec::new();
    prog.plan_left(search.remaining_bound());
    while let Some(rate) = search.next() {
        let t = address_trial(topo, a.rate_addresses, rate as f64, a, prog)?;
        search.record(rate, t.passed);
        trials.push(t);
        prog.plan_left(search.remaining_bound());
    }
    let best = trials
        .iter()
        .filter(|t| t.passed)
        .map(|t| t.achieved_rate)
        .fold(0.0, f64::max);
    Ok(LearningRate {
        addresses: a.rate_addresses,
        rate: best,
        generator_limited: trials.first().is_some_and(|t| t.passed),
        trials,
    })
}

/// Fair eviction under a MAC flood (4 ports): port 0 floods new source addresses while
/// ports 1 and 2 exchange traffic; port 3 watches for their frames being flooded.
#[derive(Clone, Debug, Serialize)]
pub struct FairEviction {
    /// Source addresses port 0 cycles through.
    pub flood_addresses: u32,
    /// Flood frames per second (offered).
    pub flood_pps: f64,
    /// Rate of each of the two other streams.
    pub stream_pps: f64,
    /// Delivered fraction of the two streams without the flood.
    pub baseline_delivered: f64,
    /// Delivered fraction of the two streams during the flood.
    pub delivered: f64,
    /// The streams' frames flooded to the monitor port during the flood (their addresses
    /// were evicted if non-zero).
    pub flooded: u64,
    /// vswitch counters around the flood.
    pub fdb_entries_after: Option<u64>,
    /// Delivered >= 90% and nothing flooded.
    pub passed: bool,
}

/// Runs the fair-eviction test.
pub fn fair_eviction(
    topo: &Topology,
    flood_addresses: u32,
    flood_pps: f64,
    stream_pps: f64,
    dur: Duration,
    prog: &mut Progress,
) -> Result<FairEviction> {
    prog.section("fair eviction under a MAC flood");
    let streams = vec![
        Traffic::stream(1, 2, 64, stream_pps),
        Traffic::stream(2, 1, 64, stream_pps),
    ];
    learn(&topo.ports, &streams, 1000.0, Duration::from_millis(200))?;
    let delivered = |r: &TrialResult| {
        let sent = r.ports[1].sent + r.ports[2].sent;
        (r.ports[1].received + r.ports[2].received) as f64 / sent.max(1) as f64
    };
    let base = trial(topo, streams.clone(), dur, prog, "streams alone")?;
    let mut with = streams.clone();
    with.push(Traffic {
        src_first: 0,
        src_count: flood_addresses,
        pattern: Pattern::Learn,
        ..Traffic::stream(0, 1, 64, flood_pps)
    });
    let r = trial(topo, with, dur, prog, "streams + MAC flood")?;
    let flooded = r.ports[3].flooded_in + r.ports[0].flooded_in;
    let d = delivered(&r);
    Ok(FairEviction {
        flood_addresses,
        flood_pps: r.ports[0].sent as f64 * 1e9 / r.ports[0].send_ns.max(1) as f64,
        stream_pps,
        baseline_delivered: delivered(&base),
        delivered: d,
        flooded,
        fdb_entries_after: topo.vswitch_stats().and_then(|v| v["fdb_entries"].as_u64()),
        passed: d >= 0.9 && flooded == 0,
    })
}

/// RFC 2889 §5.10 errored frames filtering.
#[derive(Clone, Debug, Serialize)]
pub struct ErroredResult {
    /// Errored frames sent, per kind.
    pub sent: Vec<(Errored, u64)>,
    /// Errored frames the sending kernel refused.
    pub refused: u64,
    /// Errored frames that reached any port (must be 0).
    pub delivered: u64,
    /// Good frames sent and lost.
    pub good_sent: u64,
    /// Good frames lost.
    pub good_lost: u64,
    /// The switch's drop counters that grew (vswitch only): name -> increase.
    pub switch_drops: Vec<(String, u64)>,
    /// Oversize frames dropped by the kernel before the switch (port 1's veth peer MTU).
    pub oversize_dropped_by_veth: u64,
    /// Nothing errored delivered and no good frame lost.
    pub passed: bool,
}

/// Sends good frames from port 0 to port 1 with every tenth one errored (runt, multicast
/// source, zero source, oversize in turn).
pub fn errored_frames(
    topo: &Topology,
    rate: f64,
    dur: Duration,
    prog: &mut Progress,
) -> Result<ErroredResult> {
    prog.section("errored frames filtering");
    // Let oversize frames leave port 0 (its peer keeps the 1500-byte MTU).
    sh(&[
        "ip",
        "-n",
        topo.ns_name(0),
        "link",
        "set",
        "eth0",
        "mtu",
        "9000",
    ])?;
    let t = Traffic {
        pattern: Pattern::Errored { to: 1, every: 10 },
        ..Traffic::stream(0, 1, 64, rate)
    };
    learn(
        &topo.ports,
        std::slice::from_ref(&t),
        1000.0,
        Duration::from_millis(200),
    )?;
    let before = topo.vswitch_stats();
    let tx_drop_before = topo.eth0_counter(0, "tx_dropped");
    let r = trial(topo, vec![t], dur, prog, "good + errored")?;
    let after = topo.vswitch_stats();
    let tx_drop = topo
        .eth0_counter(0, "tx_dropped")
        .saturating_sub(tx_drop_before);
    let mut drops = Vec::new();
    if let (Some(b), Some(a)) = (before, after) {
        if let Some(m) = a["counters"].as_object() {
            for (k, v) in m {
                if k.starts_with("drop_") {
                    let d = v
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(b["counters"][k].as_u64().unwrap_or(0));
                    if d > 0 {
                        drops.push((k.clone(), d));
                    }
                }
            }
        }
    }
    let p = &r.ports[0];
    let delivered: u64 = r.ports.iter().map(|p| p.errored_received).sum();
    Ok(ErroredResult {
        sent: Errored::ALL.iter().copied().zip(p.errored_kinds).collect(),
        refused: p.errored_refused,
        delivered,
        good_sent: r.sent(),
        good_lost: r.lost(),
        switch_drops: drops,
        oversize_dropped_by_veth: tx_drop,
        passed: delivered == 0 && r.lost() == 0,
    })
}
