//! Quick, noise-resistant pipeline timing for profiling sessions on a shared machine: runs each
//! configuration in short repetitions, times them in this thread's CPU time (from
//! CLOCK_THREAD_CPUTIME_ID, so time spent preempted by other processes does not count),
//! and prints the fastest. `cargo run --release -p bench --example quick [filter]`.

use bench::*;

/// CPU time of this thread in nanoseconds (first field of /proc/thread-self/schedstat).
fn cpu_ns() -> u64 {
    // CLOCK_THREAD_CPUTIME_ID counts the running slice up to now; schedstat's runtime is only
    // brought up to date at scheduler ticks (4 ms on this VM), which quantized every number.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
use switch::pipeline::Dispatch;
use switch::wire::PortId;

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let configs: &[(&str, u32, u16, usize, usize)] = &[
        ("1k_macs/2_ports/batch_32", 1000, 2, 32, 256),
        ("1k_macs/64_ports/batch_32", 1000, 64, 32, 256),
        ("1M_macs/2_ports/batch_32", 1_000_000, 2, 32, 65536),
    ];
    let mut out = Dispatch::new();
    for &(name, hosts, ports, size, count) in configs {
        if !name.contains(&filter) {
            continue;
        }
        let mut p = pipeline(ports, (hosts as usize).max(1024));
        learn_hosts(&mut p, hosts, ports, 0);
        let mut stream = MacStream::new(hosts, ports, size, count, 3);
        let mut best = f64::MAX;
        for _ in 0..40 {
            let t = cpu_ns();
            let iters = 20_000;
            for _ in 0..iters {
                let (ip, b) = stream.next_batch();
                p.process(ip, b, 1, &mut out);
            }
            let ns = (cpu_ns() - t) as f64 / (iters * size) as f64;
            best = best.min(ns);
        }
        println!("{name}: {best:.2} ns/frame = {:.1} Mpps", 1000.0 / best);
    }
    // Port security's cost: one container (host 0, port 0) sending IPv4 from its own MAC and
    // address to 32 hosts behind port 1, with and without its port's policy. The frames pass
    // the check, so the secured case pays the compares and nothing is dropped.
    for secured in [false, true] {
        let name = if secured {
            "one_sender/secured/batch_32"
        } else {
            "one_sender/open/batch_32"
        };
        if !name.contains(&filter) {
            continue;
        }
        let mut p = pipeline(2, 1024);
        learn_hosts(&mut p, 1000, 2, 0);
        let lease = [10, 0, 0, 2];
        let frames: Vec<[u8; 64]> = (0..32u32)
            .map(|k| {
                let mut f = eth_frame(host_mac(2 * k + 1), host_mac(0), None);
                f[26..30].copy_from_slice(&lease);
                f
            })
            .collect();
        let b = batch_of(&frames);
        if secured {
            p.set_policy(
                PortId(0),
                switch::guard::PortPolicy {
                    security: Some(switch::guard::PortSecurity {
                        mac: host_mac(0),
                        ipv4: lease.into(),
                    }),
                    flood: None,
                },
            );
        }
        let mut best = f64::MAX;
        for _ in 0..40 {
            let t = cpu_ns();
            let iters = 20_000;
            for _ in 0..iters {
                p.process(PortId(0), std::hint::black_box(&b), 1, &mut out);
            }
            best = best.min((cpu_ns() - t) as f64 / (iters * 32) as f64);
        }
        let sent: usize = out.outputs().map(|(_, sel, _)| sel.len()).sum();
        assert_eq!(sent, 32, "every frame passes");
        println!("{name}: {best:.2} ns/frame = {:.1} Mpps", 1000.0 / best);
    }
    if "floor".contains(&filter) || filter.is_empty() {
        // The floor: the same frames moved from the RX batch to a TX list, no decision.
        let b = unicast_batches(1000, 2, 32, 1, 5).remove(0).1;
        let mut best = f64::MAX;
        for _ in 0..40 {
            let t = cpu_ns();
            let iters = 200_000;
            for _ in 0..iters {
                out.clear();
                for i in 0..std::hint::black_box(&b).len() {
                    out.push(PortId(1), None, i as u16);
                }
            }
            best = best.min((cpu_ns() - t) as f64 / (iters * 32) as f64);
        }
        println!(
            "floor/batch_32: {best:.2} ns/frame = {:.1} Mpps",
            1000.0 / best
        );
    }
}
