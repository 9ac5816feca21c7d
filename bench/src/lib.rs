//! Benchmark support: frame generators and traffic set-ups shared by the criterion benches
//! (and usable by a packet generator). Everything here is deterministic: a fixed-seed
//! xorshift generator picks hosts, so two runs measure the same traffic.

pub mod load;

use switch::batch::{Batch, VnetHdr};
use switch::fdb::NetworkId;
use switch::pipeline::{Dispatch, Pipeline, PipelineConfig, PortRole};
use switch::port::PortId;
use switch::wire::MacAddr;

/// Slot size of bench batches: a 64-byte frame plus headroom, so many batches fit in memory.
pub const BENCH_SLOT: usize = 256;
/// The network all bench ports are on.
pub const NET: NetworkId = NetworkId(1);

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// The MAC of host `i`: locally administered unicast, distinct for every `i`.
pub fn host_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0xbe, b[0], b[1], b[2], b[3]])
}

/// The port host `i` sits behind when `ports` ports share the hosts.
pub fn host_port(i: u32, ports: u16) -> PortId {
    PortId((i % ports as u32) as u16)
}

/// A 64-byte Ethernet frame (IPv4/UDP-shaped payload), optionally 802.1Q-tagged
/// (the tag is inserted after the MAC addresses; the frame stays 64 bytes).
pub fn eth_frame(dst: MacAddr, src: MacAddr, vlan: Option<u16>) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    let mut at = 12;
    if let Some(v) = vlan {
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[14..16].copy_from_slice(&(v & 0x0fff).to_be_bytes());
        at = 16;
    }
    f[at..at + 2].copy_from_slice(&0x0800u16.to_be_bytes());
    // IPv4 header: version/IHL, total length 46, TTL 64, protocol UDP.
    let ip = at + 2;
    f[ip] = 0x45;
    f[ip + 3] = 46;
    f[ip + 8] = 64;
    f[ip + 9] = 17;
    f
}

/// A batch of the given frames (at most `BATCH_SIZE`).
pub fn batch_of(frames: &[[u8; 64]]) -> Batch {
    let mut b = Batch::new(BENCH_SLOT);
    for f in frames {
        assert!(b.push(f, VnetHdr::default()), "batch full");
    }
    b
}

/// A pipeline with `ports` access ports on [`NET`] and a MAC table for `capacity` entries
/// (no per-port or per-network limit below the capacity).
pub fn pipeline(ports: u16, capacity: usize) -> Pipeline {
    let mut p = Pipeline::new(PipelineConfig {
        fdb_capacity: capacity,
        fdb_max_per_network: capacity,
        fdb_max_per_port: capacity,
        aging_secs: 300,
    });
    p.add_network(NET, Some(MacAddr([0x02, 0x42, 0, 0, 0, 1])));
    for port in 0..ports {
        p.add_port(PortId(port), PortRole::Access { network: NET });
    }
    p
}

/// Teaches `p` every host `0..hosts` on its port (one frame per host, broadcast, as ARP
/// would), at time `now`.
pub fn learn_hosts(p: &mut Pipeline, hosts: u32, ports: u16, now: u32) {
    let mut out = Dispatch::new();
    let mut b = Batch::new(BENCH_SLOT);
    for port in 0..ports {
        let mut h = port as u32;
        while h < hosts {
            b.clear();
            while !b.is_full() && h < hosts {
                b.push(
                    &eth_frame(MacAddr::BROADCAST, host_mac(h), None),
                    VnetHdr::default(),
                );
                h += ports as u32;
            }
            p.process(PortId(port), &b, now, &mut out);
        }
    }
}

/// The 12 MAC bytes (destination, source) of `count` bursts of `size` known-unicast frames:
/// burst `k` enters on port `k % ports`, each frame from a random host behind that port to a
/// random host behind another port.
pub fn unicast_headers(
    hosts: u32,
    ports: u16,
    size: usize,
    count: usize,
    seed: u64,
) -> Vec<(PortId, Vec<[u8; 12]>)> {
    assert!(ports >= 2 && hosts >= 2 * ports as u32);
    let mut rng = Rng::new(seed);
    let per_port = hosts / ports as u32;
    (0..count)
        .map(|k| {
            let in_port = PortId((k % ports as usize) as u16);
            let hdrs = (0..size)
                .map(|_| {
                    let src = rng.below(per_port as u64) as u32 * ports as u32 + in_port.0 as u32;
                    let mut out_port = rng.below(ports as u64 - 1) as u32;
                    if out_port >= in_port.0 as u32 {
                        out_port += 1;
                    }
                    let dst = rng.below(per_port as u64) as u32 * ports as u32 + out_port;
                    let mut h = [0u8; 12];
                    h[..6].copy_from_slice(&host_mac(dst).0);
                    h[6..].copy_from_slice(&host_mac(src).0);
                    h
                })
                .collect();
            (in_port, hdrs)
        })
        .collect()
}

/// `count` batches of `size` known-unicast frames (see [`unicast_headers`]).
pub fn unicast_batches(
    hosts: u32,
    ports: u16,
    size: usize,
    count: usize,
    seed: u64,
) -> Vec<(PortId, Batch)> {
    unicast_headers(hosts, ports, size, count, seed)
        .into_iter()
        .map(|(in_port, hdrs)| {
            let frames: Vec<[u8; 64]> = hdrs
                .iter()
                .map(|h| {
                    eth_frame(
                        MacAddr::from_slice(&h[..6]),
                        MacAddr::from_slice(&h[6..]),
                        None,
                    )
                })
                .collect();
            (in_port, batch_of(&frames))
        })
        .collect()
}

/// Writes `hdrs` (destination and source MACs) over the first frames of `b`: a stand-in for
/// a port receiving new frames into a reused batch, so traffic can range over a million MACs
/// while the frame bytes stay as hot in cache as right after a real receive.
#[inline]
pub fn rewrite_macs(b: &mut Batch, hdrs: &[[u8; 12]]) {
    for (i, h) in hdrs.iter().enumerate().take(b.len()) {
        b.frame_mut(i)[..12].copy_from_slice(h);
    }
}

/// Traffic over many MACs: a small ring of batches whose MACs are rewritten from a long
/// stream of headers before each use (see [`rewrite_macs`]).
pub struct MacStream {
    ring: Vec<Batch>,
    hdrs: Vec<(PortId, Vec<[u8; 12]>)>,
    k: usize,
}

impl MacStream {
    /// `count` bursts of `size` frames over `hosts` hosts behind `ports` ports.
    pub fn new(hosts: u32, ports: u16, size: usize, count: usize, seed: u64) -> MacStream {
        let hdrs = unicast_headers(hosts, ports, size, count, seed);
        let ring = (0..4)
            .map(|_| batch_of(&vec![eth_frame(host_mac(0), host_mac(1), None); size]))
            .collect();
        MacStream { ring, hdrs, k: 0 }
    }

    /// The next burst: its ingress port and the batch holding it.
    #[inline]
    pub fn next_batch(&mut self) -> (PortId, &Batch) {
        let (port, hdrs) = &self.hdrs[self.k % self.hdrs.len()];
        let b = &mut self.ring[self.k % 4];
        self.k += 1;
        rewrite_macs(b, hdrs);
        (*port, b)
    }
}

/// A batch of `size` broadcast frames from distinct hosts behind port 0.
pub fn broadcast_batch(size: usize, ports: u16) -> Batch {
    let frames: Vec<[u8; 64]> = (0..size as u32)
        .map(|i| eth_frame(MacAddr::BROADCAST, host_mac(i * ports as u32), None))
        .collect();
    batch_of(&frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_traffic_is_forwarded_as_unicast() {
        let mut p = pipeline(4, 4096);
        learn_hosts(&mut p, 1000, 4, 0);
        assert_eq!(p.fdb().live_len(), 1000);
        let batches = unicast_batches(1000, 4, 32, 8, 1);
        let mut out = Dispatch::new();
        for (port, b) in &batches {
            p.process(*port, b, 0, &mut out);
            let n: usize = out
                .outputs()
                .map(|(o, f, _)| {
                    assert_ne!(o, *port);
                    f.len()
                })
                .sum();
            assert_eq!(n, 32);
        }
        assert_eq!(p.counters().unicast, 8 * 32);
        assert_eq!(p.counters().total_drops(), 0);
    }

    #[test]
    fn mac_stream_rewrites_sources_and_destinations() {
        let mut p = pipeline(2, 4096);
        learn_hosts(&mut p, 2000, 2, 0);
        let mut s = MacStream::new(2000, 2, 32, 64, 9);
        let mut out = Dispatch::new();
        for _ in 0..64 {
            let (port, b) = s.next_batch();
            p.process(port, b, 0, &mut out);
        }
        assert_eq!(p.counters().unicast, 64 * 32);
        assert_eq!(p.counters().total_drops(), 0);
        assert_eq!(
            p.fdb().counters().learned,
            2000,
            "every source was already known"
        );
    }

    #[test]
    fn frames_are_64_bytes_and_tagged_on_request() {
        let f = eth_frame(host_mac(1), host_mac(2), Some(10));
        assert_eq!(&f[12..16], &[0x81, 0, 0, 10]);
        assert_eq!(&f[16..18], &[0x08, 0]);
        let b = broadcast_batch(32, 2);
        assert_eq!(b.len(), 32);
        assert_eq!(b.frame(0).len(), 64);
    }
}
