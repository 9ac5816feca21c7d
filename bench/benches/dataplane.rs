//! Data-plane benchmarks: header parsing, MAC table lookup/learn at 1k/100k/1M entries, the
//! pipeline's L2 forwarding with learning (batch 1/32/64, 2 and 64 ports, 1k and 1M MACs),
//! flooding, and the "floor": moving frames from an RX batch to a TX list with no decision.
//! All with 64-byte frames; throughput in frames (elements) per second.
//!
//! `cargo bench -p bench` (about two minutes on this machine).

use bench::*;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use switch::batch::{Batch, BATCH_SIZE};
use switch::fdb::{fdb_key, Fdb, FdbConfig};
use switch::pipeline::Dispatch;
use switch::wire::PortId;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let b = &unicast_batches(1000, 2, 32, 1, 7)[0].1;
    g.throughput(Throughput::Elements(b.len() as u64));
    g.bench_function("eth_header_64B", |it| {
        it.iter(|| {
            let mut acc = 0u64;
            for i in 0..b.len() {
                let f = black_box(b).frame(i);
                let Some(h) = f.first_chunk::<14>() else {
                    continue;
                };
                let dst = u64::from_be_bytes([0, 0, h[0], h[1], h[2], h[3], h[4], h[5]]);
                let src = u64::from_be_bytes([0, 0, h[6], h[7], h[8], h[9], h[10], h[11]]);
                let ty = u16::from_be_bytes([h[12], h[13]]);
                acc = acc.wrapping_add(dst ^ src.rotate_left(7) ^ ty as u64);
            }
            acc
        })
    });
    g.finish();
}

fn fdb(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    const PROBES: usize = 4096;
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut f = Fdb::new(FdbConfig {
            capacity: n as usize,
            max_per_network: n as usize,
            max_per_port: n as usize,
            ..FdbConfig::default()
        });
        for h in 0..n {
            f.learn(NET, host_mac(h), host_port(h, 64), 0);
        }
        if n == 1_000_000 {
            eprintln!(
                "fdb memory at {n} entries: {} bytes = {:.1} bytes/entry",
                f.memory_bytes(),
                f.memory_bytes() as f64 / n as f64
            );
        }
        // A long stream of random keys, consumed 4096 at a time, so that at 1M entries the
        // probes really go to memory instead of re-hitting a cached subset of the table.
        let mut rng = Rng::new(11);
        let keys: Vec<(u64, PortId)> = (0..1 << 20)
            .map(|_| {
                let h = rng.below(n as u64) as u32;
                (fdb_key(NET, host_mac(h)), host_port(h, 64))
            })
            .collect();
        let chunks: Vec<&[(u64, PortId)]> = keys.chunks(PROBES).collect();
        g.throughput(Throughput::Elements(PROBES as u64));
        let mut k = 0;
        g.bench_function(BenchmarkId::new("lookup", n), |it| {
            it.iter(|| {
                k = (k + 1) % chunks.len();
                let mut acc = 0u32;
                for &(key, _) in chunks[k] {
                    acc += f.lookup_key(key).unwrap_or(PortId(0)).0 as u32;
                }
                acc
            })
        });
        g.bench_function(BenchmarkId::new("learn_known", n), |it| {
            it.iter(|| {
                k = (k + 1) % chunks.len();
                for &(key, p) in chunks[k] {
                    black_box(f.learn_key(key, p, 0));
                }
            })
        });
    }
    g.finish();
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_l2");
    let mut out = Dispatch::new();
    let mut run = |g: &mut criterion::BenchmarkGroup<'_, _>,
                   name: String,
                   hosts: u32,
                   ports: u16,
                   size: usize,
                   count: usize| {
        let mut p = pipeline(ports, (hosts as usize).max(1024));
        learn_hosts(&mut p, hosts, ports, 0);
        let floods = p.counters().flood;
        let mut stream = MacStream::new(hosts, ports, size, count, 3);
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(name, |it| {
            it.iter(|| {
                let (in_port, b) = stream.next_batch();
                p.process(in_port, b, 1, &mut out);
            })
        });
        assert_eq!(p.counters().total_drops(), 0);
        assert_eq!(p.counters().flood, floods, "all destinations known");
    };
    for ports in [2u16, 64] {
        for size in [1usize, 32, BATCH_SIZE] {
            run(
                &mut g,
                format!("1k_macs/{ports}_ports/batch_{size}"),
                1000,
                ports,
                size,
                256,
            );
        }
    }
    run(
        &mut g,
        "1M_macs/2_ports/batch_32".into(),
        1_000_000,
        2,
        32,
        4096,
    );
    g.finish();
}

fn flood(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_flood");
    let mut out = Dispatch::new();
    for ports in [8u16, 64] {
        let mut p = pipeline(ports, 4096);
        let b = broadcast_batch(32, ports);
        g.throughput(Throughput::Elements(b.len() as u64));
        g.bench_function(format!("broadcast/{ports}_ports/batch_32"), |it| {
            it.iter(|| p.process(PortId(0), &b, 1, &mut out))
        });
    }
    g.finish();
}

fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    let mut out = Dispatch::new();
    for size in [32usize, BATCH_SIZE] {
        let b: Batch = unicast_batches(1000, 2, size, 1, 5).remove(0).1;
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(format!("rx_to_tx_lists/batch_{size}"), |it| {
            it.iter(|| {
                out.clear();
                for i in 0..black_box(&b).len() {
                    out.push(PortId(1), None, i as u16);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = parse, fdb, forward, flood, floor
}
criterion_main!(benches);
