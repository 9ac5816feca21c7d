//! `vswitch-load`: packet generator and RFC 2544 / RFC 2889 harness (see bench/src/load).
//!
//! ```text
//! vswitch-load rfc2544 --quick                    # vswitch, kbr, ovs: table + JSON + PNGs
//! vswitch-load rfc2889 --fdb-size 2048 --quick    # address tests, errored frames, mesh, broadcast
//! vswitch-load gen --target vswitch --size 64 --rate 500000 --flows 64 --hosts 16
//! vswitch-load selftest                           # generator ceiling vs trafgen on a plain veth
//! ```

use anyhow::{bail, Context, Result};
use bench::load::frame::RFC2544_SIZES;
use bench::load::gen::{learn, run_trial, Traffic, TrialSpec};
use bench::load::report::{line_plot, pps, Progress, Series, Table};
use bench::load::suite::{self, AddressSettings, Rfc2544Size, Settings};
use bench::load::target::{sh, Kind, OvsDaemons, Topology, VswitchOpts};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "vswitch-load",
    about = "Packet generator and RFC 2544/2889 harness for vswitch, the kernel bridge and OVS"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Targets, comma separated: vswitch, xdp (vswitch with `--attach xdp`), kbr, ovs (veth:
    /// no switch).
    #[arg(long, default_value = "vswitch,xdp,kbr,ovs", value_delimiter = ',')]
    targets: Vec<String>,
    /// The vswitch binary.
    #[arg(long, env = "VSWITCH_BIN")]
    vswitch_bin: Option<PathBuf>,
    /// Quick mode: 64/512/1518-byte frames, 1 s trials, coarser search.
    #[arg(long)]
    quick: bool,
    /// Frame sizes (with FCS), comma separated (default: RFC 2544's seven, or three in --quick).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Seconds per trial (default 5, or 1 in --quick).
    #[arg(long)]
    trial: Option<f64>,
    /// Loss tolerated by a "zero-loss" trial, percent (RFC 2544: 0).
    #[arg(long, default_value_t = 0.0)]
    tolerance: f64,
    /// Binary search resolution, percent of the highest rate.
    #[arg(long)]
    resolution: Option<f64>,
    /// Flows (UDP port pairs) per stream.
    #[arg(long, default_value_t = 16)]
    flows: u16,
    /// Emulated hosts (MAC addresses) behind each port.
    #[arg(long, default_value_t = 4)]
    hosts: u32,
    /// Highest offered load, frames/s (default: as fast as the generator goes).
    #[arg(long)]
    max_rate: Option<f64>,
    /// Where to write JSON and PNGs.
    #[arg(long, default_value = "bench/results/load")]
    out: PathBuf,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// RFC 2544: throughput, latency, frame loss rate, back-to-back, per target and size.
    Rfc2544 {
        #[command(flatten)]
        c: Common,
        /// Skip the back-to-back test.
        #[arg(long)]
        no_b2b: bool,
    },
    /// RFC 2889: address caching capacity, learning rate, fair eviction under a MAC flood,
    /// broadcast forwarding, errored frames filtering, fully meshed throughput.
    Rfc2889 {
        #[command(flatten)]
        c: Common,
        /// MAC table capacity given to the vswitch daemon (--fdb-size).
        #[arg(long, default_value_t = 2048)]
        fdb_size: usize,
        /// MAC table aging given to the vswitch daemon (trials wait this long plus 2 s).
        #[arg(long, default_value_t = 3)]
        aging: u32,
        /// Ports of the fully meshed test.
        #[arg(long, default_value_t = 4)]
        mesh_ports: usize,
    },
    /// One trial: traffic from port 0 to port 1 at a rate; prints counts and latency.
    Gen {
        #[command(flatten)]
        c: Common,
        /// Frame size with FCS.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Frames per second (omit: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Number of frames (a burst) instead of a duration.
        #[arg(long)]
        count: Option<u64>,
    },
    /// The generator's ceiling on a plain veth pair, next to trafgen's (netsniff-ng).
    Selftest {
        /// Seconds per run.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("vswitch-load: {e:#}");
        std::process::exit(1);
    }
}

fn settings(c: &Common) -> Settings {
    Settings {
        trial: Duration::from_secs_f64(c.trial.unwrap_or(if c.quick { 1.0 } else { 5.0 })),
        tolerance: c.tolerance / 100.0,
        resolution: c.resolution.unwrap_or(if c.quick { 5.0 } else { 2.0 }) / 100.0,
        flows: c.flows,
        hosts: c.hosts.max(1),
        max_rate: c.max_rate,
        loss_step_pct: if c.quick { 20 } else { 10 },
    }
}

fn sizes(c: &Common) -> Vec<usize> {
    if !c.sizes.is_empty() {
        return c.sizes.clone();
    }
    if c.quick {
        vec![64, 512, 1518]
    } else {
        RFC2544_SIZES.to_vec()
    }
}

fn vs_opts(c: &Common) -> VswitchOpts {
    let bin = c.vswitch_bin.clone().unwrap_or_else(|| {
        let here = std::env::current_exe().ok();
        // target/release/vswitch-load sits beside target/release/vswitch.
        here.and_then(|p| p.parent().map(|d| d.join("vswitch")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("target/release/vswitch"))
    });
    VswitchOpts {
        bin,
        ..Default::default()
    }
}

fn kinds(c: &Common) -> Result<Vec<Kind>> {
    c.targets.iter().map(|t| Kind::parse(t)).collect()
}

fn preflight(kinds: &[Kind]) -> Result<Option<OvsDaemons>> {
    if !sh(&["id", "-u"]).map(|s| s.trim() == "0").unwrap_or(false) {
        bail!("needs root (network namespaces, veth pairs, AF_PACKET sockets)");
    }
    sh(&["ip", "-V"]).context("iproute2 is needed: apt-get install -y iproute2")?;
    if kinds.contains(&Kind::Ovs) {
        sh(&["ovs-vsctl", "--version"])
            .context("OVS is needed for the ovs target: apt-get install -y openvswitch-switch")?;
        return Ok(Some(OvsDaemons::ensure()?));
    }
    Ok(None)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "date": sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default().trim(),
        "host": sh(&["uname", "-n"]).unwrap_or_default().trim(),
        "kernel": sh(&["uname", "-r"]).unwrap_or_default().trim(),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Rfc2544 { c, no_b2b } => rfc2544(&c, !no_b2b),
        Cmd::Rfc2889 {
            c,
            fdb_size,
            aging,
            mesh_ports,
        } => rfc2889(&c, fdb_size, aging, mesh_ports),
        Cmd::Gen {
            c,
            size,
            rate,
            count,
        } => gen(&c, size, rate, count),
        Cmd::Selftest { secs } => selftest(secs),
    }
}

fn rfc2544(c: &Common, b2b: bool) -> Result<()> {
    let kinds = kinds(c)?;
    let _ovs = preflight(&kinds)?;
    let s = settings(c);
    let sizes = sizes(c);
    let vs = vs_opts(c);
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let mut prog = Progress::new(c.quiet);
    prog.planned_rest = (kinds.len() * sizes.len() * if b2b { 4 } else { 3 }) as u32;
    let mut results: Vec<(Kind, Vec<Rfc2544Size>)> = Vec::new();
    for &k in &kinds {
        prog.target(k.name());
        let topo = Topology::setup(k, 2, &vs)
            .with_context(|| format!("building the {} topology", k.name()))?;
        let mut per = Vec::new();
        for &size in &sizes {
            per.push(suite::rfc2544_size(&topo, size, &s, b2b, &mut prog)?);
        }
        results.push((k, per));
    }
    // Table.
    let mut t = Table {
        head: [
            "target",
            "frame",
            "zero-loss rate",
            "Mbit/s",
            "lat avg us",
            "lat p99 us",
            "lat max us",
            "b2b burst",
            "loss @100%",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    for (k, per) in &results {
        for r in per {
            t.rows.push(vec![
                k.name().into(),
                r.throughput.size.to_string(),
                format!(
                    "{}{}",
                    if r.throughput.generator_limited {
                        ">= "
                    } else {
                        ""
                    },
                    pps(r.throughput.rate_pps)
                ),
                format!("{:.0}", r.throughput.mbps),
                format!("{:.1}", r.latency.avg_us),
                format!("{:.1}", r.latency.p99_us),
                format!("{:.1}", r.latency.max_us),
                r.back_to_back
                    .as_ref()
                    .map(|b| b.burst_frames.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.loss
                    .first()
                    .map(|l| format!("{:.2}%", l.trial.loss_ratio * 100.0))
                    .unwrap_or_default(),
            ]);
        }
    }
    // Ratios of each vswitch row (veth, xdp) to each peer per size.
    let mut ratios = Table {
        head: vec!["frame".into()],
        ..Default::default()
    };
    let peers: Vec<_> = results.iter().filter(|(k, _)| !k.is_vswitch()).collect();
    for (sk, v) in results.iter().filter(|(k, _)| k.is_vswitch()) {
        for (k, _) in &peers {
            ratios.head.push(format!("{}/{} rate", sk.name(), k.name()));
            ratios.head.push(format!("{}/{} p99", sk.name(), k.name()));
        }
        for (i, r) in v.iter().enumerate() {
            if ratios.rows.len() <= i {
                ratios.rows.push(vec![r.throughput.size.to_string()]);
            }
            let row = &mut ratios.rows[i];
            for (_, p) in &peers {
                let Some(q) = p.get(i) else { continue };
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}x", a / b)
                    } else {
                        "-".into()
                    }
                };
                row.push(ratio(r.throughput.rate_pps, q.throughput.rate_pps));
                row.push(ratio(r.latency.p99_us, q.latency.p99_us));
            }
        }
    }
    let m = machine();
    println!("\nRFC 2544, {} ({} cores, kernel {}), {}: trials of {:.1} s, loss tolerance {}%, {} flows, {} hosts per port, unidirectional port 0 -> port 1\n",
        m["cpu"].as_str().unwrap_or(""), m["cores"], m["kernel"].as_str().unwrap_or(""), m["date"].as_str().unwrap_or(""),
        s.trial.as_secs_f64(), c.tolerance, s.flows, s.hosts);
    print!("{}", t.render());
    println!("\n\">=\": the target lost nothing at the generator's full speed, so the rate is the generator's (and the shared CPU's) limit, not the target's.");
    if ratios.head.len() > 1 {
        println!();
        print!("{}", ratios.render());
    }
    // JSON.
    let j = json!({
        "machine": m,
        "settings": s,
        "results": results.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "table": t.render(),
        "ratios": ratios.render(),
    });
    let jp = c.out.join("rfc2544.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&j)?)?;
    // Plots.
    let tp: Vec<Series> = results
        .iter()
        .map(|(k, v)| Series {
            name: k.name().into(),
            points: v
                .iter()
                .map(|r| (r.throughput.size as f64, r.throughput.rate_pps / 1e6))
                .collect(),
            dashed: false,
        })
        .collect();
    let p1 = c.out.join("throughput.png");
    line_plot(
        &p1,
        "RFC 2544 zero-loss throughput",
        "frame size (bytes, log scale)",
        "Mpps",
        &tp,
        true,
    )?;
    let mut lat = Vec::new();
    for (k, v) in &results {
        lat.push(Series {
            name: format!("{} avg", k.name()),
            points: v
                .iter()
                .map(|r| (r.latency.size as f64, r.latency.avg_us))
                .collect(),
            dashed: false,
        });
        lat.push(Series {
            name: format!("{} p99", k.name()),
            points: v
                .iter()
                .map(|r| (r.latency.size as f64, r.latency.p99_us))
                .collect(),
            dashed: true,
        });
    }
    let p2 = c.out.join("latency.png");
    line_plot(
        &p2,
        "One-way latency at the zero-loss rate (avg solid, p99 dashed)",
        "frame size (bytes, log scale)",
        "microseconds",
        &lat,
        true,
    )?;
    let loss: Vec<Series> = results
        .iter()
        .map(|(k, v)| Series {
            name: k.name().into(),
            points: v[0]
                .loss
                .iter()
                .map(|l| (l.trial.offered_pps / 1e6, l.trial.loss_ratio * 100.0))
                .collect(),
            dashed: false,
        })
        .collect();
    let p3 = c.out.join("loss.png");
    line_plot(
        &p3,
        &format!("Frame loss versus offered load, {}-byte frames", sizes[0]),
        "offered Mpps",
        "loss %",
        &loss,
        false,
    )?;
    println!(
        "\nwrote {}, {}, {}, {}",
        jp.display(),
        p1.display(),
        p2.display(),
        p3.display()
    );
    Ok(())
}

fn rfc2889(c: &Common, fdb_size: usize, aging: u32, mesh_ports: usize) -> Result<()> {
    let kinds = kinds(c)?;
    let _ovs = preflight(&kinds)?;
    let s = settings(c);
    let mut vs = vs_opts(c);
    vs.fdb_size = Some(fdb_size);
    vs.fdb_max_per_port = Some(fdb_size);
    vs.aging = Some(aging);
    std::fs::create_dir_all(&c.out)?;
    let mut prog = Progress::new(c.quiet);
    prog.planned_rest = (kinds.len() * 6) as u32;
    let a = AddressSettings {
        aging_secs: aging,
        learn_rate: 20_000.0,
        probe_rate: 20_000.0,
        max_addresses: (fdb_size as u32) * 2,
        rate_addresses: (fdb_size as u32 / 2).max(16),
    };
    let mut out = serde_json::Map::new();
    let mut t = Table {
        head: ["target", "test", "result", "detail"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    for &k in &kinds {
        prog.target(k.name());
        let mut r = serde_json::Map::new();
        {
            let topo = Topology::setup(k, 4, &vs)?;
            let fe = suite::fair_eviction(
                &topo,
                (fdb_size as u32) * 4,
                50_000.0,
                20_000.0,
                s.trial * 3,
                &mut prog,
            )?;
            t.rows.push(vec![k.name().into(), "fair eviction (MAC flood from port 0)".into(),
                format!("{} delivered{}", pct(fe.delivered), if fe.passed { " PASS" } else { " FAIL" }),
                format!("{} addresses at {}; other streams {} each, {} delivered alone; {} of their frames flooded", fe.flood_addresses, pps(fe.flood_pps), pps(fe.stream_pps), pct(fe.baseline_delivered), fe.flooded)]);
            r.insert("fair_eviction".into(), json!(fe));
            let mesh_sizes = if c.quick {
                vec![64]
            } else {
                vec![64, 512, 1518]
            };
            let mut mesh = Vec::new();
            for size in mesh_sizes {
                let m = suite::fully_meshed(&topo, size, &s, &mut prog)?;
                t.rows.push(vec![
                    k.name().into(),
                    format!("fully meshed, 4 ports, {size}B"),
                    pps(m.rate_pps),
                    format!("{:.0} Mbit/s of frames", m.mbps),
                ]);
                mesh.push(m);
            }
            r.insert("fully_meshed".into(), json!(mesh));
            let b = suite::broadcast(&topo, 64, &s, &mut prog)?;
            t.rows.push(vec![
                k.name().into(),
                "broadcast forwarding, 64B, 1 to 3".into(),
                pps(b.rate_pps),
                format!("{} deliveries/s", pps(b.delivered_pps)),
            ]);
            r.insert("broadcast".into(), json!(b));
            let _ = mesh_ports;
        }
        {
            let topo = Topology::setup(k, 3, &vs)?;
            let e = suite::errored_frames(&topo, 20_000.0, s.trial * 2, &mut prog)?;
            t.rows.push(vec![
                k.name().into(),
                "errored frames filtering".into(),
                format!(
                    "{} errored delivered, {} good lost{}",
                    e.delivered,
                    e.good_lost,
                    if e.passed { " PASS" } else { " FAIL" }
                ),
                format!(
                    "sent {}; refused by the sender's kernel {}; switch drops {}; dropped by the veth pair (MTU) {}; runts never reach a switch (the receiving interface's VLAN untagging drops them)",
                    e.sent
                        .iter()
                        .map(|(k, n)| format!("{k:?} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    e.refused,
                    e.switch_drops
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    e.oversize_dropped_by_veth
                ),
            ]);
            r.insert("errored_frames".into(), json!(e));
            let cap = suite::address_caching(&topo, &a, &mut prog)?;
            let full = cap
                .trials
                .iter()
                .filter(|t| t.passed)
                .max_by_key(|t| t.addresses)
                .and_then(|t| t.fdb_entries);
            t.rows.push(vec![k.name().into(), "address caching capacity".into(), cap.capacity.to_string(),
                if k.is_vswitch() { format!("--fdb-size {fdb_size}; table held {} entries at the largest passing trial (+2: the prober's and monitor's addresses)", full.map(|x| x.to_string()).unwrap_or_else(|| "?".into())) } else { String::new() }]);
            r.insert("address_caching".into(), json!(cap));
            let lr = suite::learning_rate(&topo, &a, 1_000_000.0, &mut prog)?;
            t.rows.push(vec![
                k.name().into(),
                format!("address learning rate ({} addresses)", lr.addresses),
                format!(
                    "{}{:.0} addresses/s",
                    if lr.generator_limited { ">= " } else { "" },
                    lr.rate
                ),
                if lr.generator_limited {
                    "all learned at the generator's full speed".into()
                } else {
                    String::new()
                },
            ]);
            r.insert("learning_rate".into(), json!(lr));
        }
        out.insert(k.name().into(), serde_json::Value::Object(r));
    }
    let m = machine();
    println!(
        "\nRFC 2889, {} ({} cores, kernel {}), {}\n",
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["kernel"].as_str().unwrap_or(""),
        m["date"].as_str().unwrap_or("")
    );
    print!("{}", t.render());
    let jp = c.out.join("rfc2889.json");
    std::fs::write(
        &jp,
        serde_json::to_string_pretty(
            &json!({"machine": m, "settings": s, "fdb_size": fdb_size, "aging": aging, "results": out, "table": t.render()}),
        )?,
    )?;
    println!("\nwrote {}", jp.display());
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn gen(c: &Common, size: usize, rate: Option<f64>, count: Option<u64>) -> Result<()> {
    let kinds = kinds(c)?;
    let _ovs = preflight(&kinds)?;
    let s = settings(c);
    let vs = vs_opts(c);
    let mut prog = Progress::new(c.quiet);
    for k in kinds {
        prog.target(k.name());
        let topo = Topology::setup(k, 2, &vs)?;
        let t = Traffic {
            src_count: s.hosts,
            dst_count: s.hosts,
            flows: s.flows,
            limit: count,
            ..Traffic::stream(0, 1, size, rate.unwrap_or(f64::INFINITY))
        };
        learn(
            &topo.ports,
            std::slice::from_ref(&t),
            20_000.0,
            Duration::from_millis(200),
        )?;
        prog.section(&format!("{size}B"));
        prog.start_trial("gen", t.rate, s.trial);
        let r = run_trial(
            &TrialSpec {
                ports: topo.ports.clone(),
                traffic: vec![t],
                duration: s.trial,
                settle: Duration::from_millis(300),
            },
            |el, l| prog.tick(el, l),
        )?;
        prog.end_trial(&r);
        let h = &r.latency;
        println!(
            "{}: sent {} ({}), received {} ({}), lost {} ({:.3}%), receiver socket drops {}, flooded {}, reordered {}; latency us min {:.1} avg {:.1} p99 {:.1} max {:.1}",
            k.name(), r.sent(), pps(r.offered_pps()), r.received(), pps(r.received_pps()), r.lost(), r.loss_ratio() * 100.0,
            r.rx_socket_drops(), r.flooded(), r.ports.iter().map(|p| p.reordered).sum::<u64>(),
            h.min() as f64 / 1e3, h.mean() / 1e3, h.value_at_quantile(0.99) as f64 / 1e3, h.max() as f64 / 1e3
        );
    }
    Ok(())
}

fn selftest(secs: f64) -> Result<()> {
    preflight(&[])?;
    let vs = VswitchOpts::default();
    let mut rows = Vec::new();
    // Our generator, unpaced, 64-byte frames, counted by the peer's kernel counters.
    {
        let topo = Topology::setup(Kind::Veth, 2, &vs)?;
        let before = topo.eth0_counter(1, "rx_packets");
        let r = run_trial(
            &TrialSpec {
                ports: topo.ports[..1].to_vec(),
                traffic: vec![Traffic::stream(0, 1, 64, f64::INFINITY)],
                duration: Duration::from_secs_f64(secs),
                settle: Duration::from_millis(100),
            },
            |_, _| {},
        )?;
        let got = topo.eth0_counter(1, "rx_packets") - before;
        rows.push((
            "vswitch-load (sendmmsg)",
            r.offered_pps(),
            got as f64 * 1e9 / r.ports[0].send_ns.max(1) as f64,
        ));
    }
    if sh(&["which", "trafgen"]).is_ok() {
        let topo = Topology::setup(Kind::Veth, 2, &vs)?;
        let cfg = topo.work().join("t.cfg");
        std::fs::write(&cfg, "{ eth(da=02:4c:01:00:00:00, sa=02:4c:00:00:00:00), ipv4(saddr=198.18.0.1, daddr=198.19.0.1), udp(sp=9, dp=9), fill(0x00, 18) }\n")?;
        let before = topo.eth0_counter(1, "rx_packets");
        let t0 = std::time::Instant::now();
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            topo.ns_name(0),
            "timeout",
            &format!("{secs}"),
            "trafgen",
            "--dev",
            "eth0",
            "--conf",
            cfg.to_str().unwrap_or(""),
            "-q",
            "-b",
            "0",
        ]);
        let el = t0.elapsed().as_secs_f64();
        let got = topo.eth0_counter(1, "rx_packets") - before;
        rows.push(("trafgen (netsniff-ng)", f64::NAN, got as f64 / el));
    } else {
        eprintln!("trafgen not installed (apt-get install -y netsniff-ng): no comparison");
    }
    println!("64-byte frames from one namespace into a plain veth, {secs} s, counted at the peer:");
    for (n, sent, got) in &rows {
        println!(
            "  {n:<26} {:>12} sent  {:>12} arrived",
            if sent.is_nan() {
                "-".into()
            } else {
                pps(*sent)
            },
            pps(*got)
        );
    }
    if rows.len() == 2 && rows[1].2 > 0.0 {
        println!(
            "  ratio vswitch-load / trafgen: {:.2}x",
            rows[0].2 / rows[1].2
        );
    }
    Ok(())
}
