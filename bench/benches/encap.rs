//! VXLAN encap and decap of 64-byte and 1500-byte frames (the `encap` crate), and the software
//! segmentation the tunnel port does for a 64 KiB TCP GSO frame.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use encap::{
    decap, decap_udp_payload, encap_in_place, encap_into, EncapTemplate, TemplateConfig, Vni,
    VtepTable, OUTER_LEN,
};
use std::net::Ipv4Addr;
use switch::batch::{VnetHdr, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4};
use switch::wire::NetworkId;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// An Ethernet/IPv4/TCP frame of `len` bytes (`len >= 54`).
fn tcp_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x10;
    f
}

/// The outer header from `src` to `dst` (VNI 42).
fn template_between(src: Ipv4Addr, dst: Ipv4Addr) -> EncapTemplate {
    let vni = Vni::new(42).unwrap();
    EncapTemplate::new(&TemplateConfig::new(
        [2, 0, 0, 0, 0, 0xa],
        [2, 0, 0, 0, 0, 0xb],
        src,
        dst,
        vni,
    ))
    .unwrap()
}

fn template() -> EncapTemplate {
    template_between(LOCAL, PEER)
}

fn table() -> VtepTable {
    let mut t = VtepTable::new();
    let vni = Vni::new(42).unwrap();
    t.add_vni(vni, NetworkId(1)).unwrap();
    t.add_peer(vni, PEER).unwrap();
    t.set_local_ip(Some(LOCAL));
    t
}

fn encap_bench(c: &mut Criterion) {
    let t = template();
    let mut g = c.benchmark_group("vxlan_encap");
    for size in [64usize, 1500] {
        let f = tcp_frame(size);
        g.throughput(Throughput::Bytes(size as u64));
        // In place: the 50 outer bytes go into the slot's headroom (flow hash included).
        let mut slot = vec![0u8; 128 + size];
        slot[128..].copy_from_slice(&f);
        g.bench_function(format!("in_place/{size}B"), |it| {
            it.iter(|| {
                let port = t.src_port_for(&slot[128..]);
                black_box(encap_in_place(&t, black_box(&mut slot), 128, size, port).unwrap())
            })
        });
        // By copy (head-end replication of one frame to several VTEPs).
        let mut out = vec![0u8; OUTER_LEN + size];
        g.bench_function(format!("copy/{size}B"), |it| {
            it.iter(|| {
                let port = t.src_port_for(&f);
                black_box(encap_into(&t, black_box(&f), &mut out, port).unwrap())
            })
        });
    }
    g.finish();
}

fn decap_bench(c: &mut Criterion) {
    // Packets from the peer to us.
    let t = template_between(PEER, LOCAL);
    let tbl = table();
    let mut g = c.benchmark_group("vxlan_decap");
    for size in [64usize, 1500] {
        let f = tcp_frame(size);
        let mut pkt = vec![0u8; OUTER_LEN + size];
        encap_into(&t, &f, &mut pkt, 50000).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        // A whole outer frame (raw uplink): every header checked.
        g.bench_function(format!("frame/{size}B"), |it| {
            it.iter(|| black_box(decap(black_box(&pkt), 4789, &tbl).unwrap()))
        });
        // A UDP payload from the tunnel socket (what the tunnel port does).
        let payload = &pkt[42..];
        g.bench_function(format!("udp_payload/{size}B"), |it| {
            it.iter(|| black_box(decap_udp_payload(black_box(payload), PEER, &tbl).unwrap()))
        });
    }
    g.finish();
}

fn segment_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan_tso");
    let f = tcp_frame(54 + 64 * 1024 - 200);
    let v = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: VNET_GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1398,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut out = vec![0u8; 128 * 1024];
    g.throughput(Throughput::Bytes(f.len() as u64));
    g.bench_function("segment_64KiB_gso_frame", |it| {
        it.iter(|| black_box(switch::wire::gso::segment(black_box(&f), &v, 8, &mut out).unwrap()))
    });
    g.finish();
}

fn checksum_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for size in [1500usize, 64 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("sum/{size}B"), |it| {
            it.iter(|| black_box(switch::wire::checksum::sum(black_box(&data))))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = encap_bench, decap_bench, segment_bench, checksum_bench
}
criterion_main!(benches);
