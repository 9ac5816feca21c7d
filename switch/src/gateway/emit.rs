//! Frames the gateway stage sends towards containers: a preallocated output batch with the
//! destination port of each frame, and builders for Ethernet + IPv4 + TCP/UDP/ICMP headers.
//!
//! Towards a port that carries vnet headers, TCP and UDP checksums are left partial
//! (`NEEDS_CSUM` with the pseudo-header sum in the checksum field, as the kernel does for
//! `CHECKSUM_PARTIAL`), and TCP data larger than one segment leaves as one GSO frame
//! (`gso_type` TCPV4, `gso_size` = the container's MSS): the kernel on the other side of the
//! veth or TAP treats it as a GRO'd packet, so one frame carries up to 64 KiB.

use crate::batch::{
    Batch, VnetHdr, BATCH_SIZE, GSO_SLOT, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4,
};
use crate::port::PortId;
use crate::wire::checksum::{checksum, fold, ipv4_l4_checksum, pseudo_header_v4};
use crate::wire::{ethertype, ip_proto, MacAddr};
use std::net::Ipv4Addr;

/// Ethernet + IPv4 header bytes (no options).
pub const L3_OFF: usize = 14;
/// Offset of the L4 header in frames built here.
pub const L4_OFF: usize = 14 + 20;

/// Where a frame goes and what it looks like at L2/L3.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// The switch port of the container.
    pub port: PortId,
    /// The port passes vnet headers (GSO and partial checksums).
    pub vnet: bool,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

/// Something that sends frames out of switch ports (the worker's port table).
pub trait Sink {
    /// Sends `sel` of `batch` out of `port`; returns how many were accepted.
    fn send(&mut self, port: PortId, batch: &Batch, sel: &[u16]) -> usize;
}

/// The gateway's output: frames and their ports, flushed by the worker.
pub struct Out {
    batch: Batch,
    ports: [PortId; BATCH_SIZE],
    ident: u16,
    /// Frames a port did not accept (its queue was full).
    pub tx_dropped: u64,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("len", &self.batch.len())
            .finish()
    }
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

impl Out {
    pub fn new() -> Out {
        Out {
            batch: Batch::new(GSO_SLOT),
            ports: [PortId(0); BATCH_SIZE],
            ident: 1,
            tx_dropped: 0,
        }
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.batch.is_full()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// The frames built so far (tests read them).
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The port of frame `i`.
    pub fn port_of(&self, i: usize) -> PortId {
        self.ports[i]
    }

    /// Largest frame a slot holds.
    pub fn max_frame(&self) -> usize {
        self.batch.max_frame()
    }

    /// Sends every frame, in order, grouping runs that go to the same port into one burst.
    pub fn flush(&mut self, sink: &mut dyn Sink) {
        let n = self.batch.len();
        let mut start = 0;
        while start < n {
            let port = self.ports[start];
            let mut end = start + 1;
            while end < n && self.ports[end] == port {
                end += 1;
            }
            let sel = &SEQ[start..end];
            let sent = sink.send(port, &self.batch, sel);
            self.tx_dropped += (sel.len() - sent.min(sel.len())) as u64;
            start = end;
        }
        self.batch.clear();
    }

    /// Starts a frame for `path`: returns the slot with Ethernet and IPv4 headers written
    /// (total length and checksum filled by [`Out::finish`]). `None` when the batch is full.
    fn begin(&mut self, path: &Path, proto: u8) -> Option<&mut [u8]> {
        if self.batch.is_full() {
            return None;
        }
        self.ident = self.ident.wrapping_add(1);
        let ident = self.ident;
        let s = self.batch.next_slot();
        s[0..6].copy_from_slice(&path.dst_mac.0);
        s[6..12].copy_from_slice(&path.src_mac.0);
        s[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let ip = &mut s[L3_OFF..L4_OFF];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[4..6].copy_from_slice(&ident.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[7] = 0;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&path.src_ip.octets());
        ip[16..20].copy_from_slice(&path.dst_ip.octets());
        Some(s)
    }

    /// Completes the frame started by `begin` with `l4_len` bytes of L4 header and payload.
    fn finish(&mut self, path: &Path, l4_len: usize, vnet: VnetHdr) {
        let port = path.port;
        let idx = self.batch.len();
        let s = self.batch.next_slot();
        let total = (20 + l4_len) as u16;
        let ip = &mut s[L3_OFF..L4_OFF];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        self.ports[idx] = port;
        self.batch.commit(L4_OFF + l4_len, vnet);
    }

    /// Fills the L4 checksum at `csum_off` (relative to the L4 header): partial on vnet ports,
    /// complete otherwise. Returns the vnet header for the frame.
    fn l4_checksum(
        path: &Path,
        s: &mut [u8],
        proto: u8,
        l4_len: usize,
        csum_off: usize,
    ) -> VnetHdr {
        let l4 = &mut s[L4_OFF..L4_OFF + l4_len];
        if path.vnet {
            let ph = pseudo_header_v4(path.src_ip, path.dst_ip, proto, l4_len as u16);
            let partial = fold(u64::from(ph));
            l4[csum_off..csum_off + 2].copy_from_slice(&partial.to_be_bytes());
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: VNET_GSO_NONE,
                csum_start: L4_OFF as u16,
                csum_offset: csum_off as u16,
                ..Default::default()
            }
        } else {
            l4[csum_off..csum_off + 2].copy_from_slice(&[0, 0]);
            let mut c = ipv4_l4_checksum(path.src_ip, path.dst_ip, proto, l4);
            if proto == ip_proto::UDP && c == 0 {
                c = 0xffff;
            }
            l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
            VnetHdr::default()
        }
    }

    /// Appends a TCP segment. `opts` are TCP options (a multiple of 4 bytes); `fill` writes
    /// `payload_len` bytes of payload. `mss` (when the payload is longer) makes it a GSO frame.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        path: &Path,
        ports: (u16, u16),
        seq: u32,
        ack: u32,
        flags: u16,
        window: u16,
        opts: &[u8],
        payload_len: usize,
        mss: u16,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let hl = 20 + opts.len();
        // The data offset holds at most 60 bytes of header in 4-byte words, and the IPv4
        // total length at most 65535 bytes: anything else could not be written faithfully.
        if hl > 60 || hl & 3 != 0 || 20 + hl + payload_len > usize::from(u16::MAX) {
            return false;
        }
        if L4_OFF + hl + payload_len > self.batch.max_frame() {
            return false;
        }
        let Some(s) = self.begin(path, ip_proto::TCP) else {
            return false;
        };
        let t = &mut s[L4_OFF..L4_OFF + hl + payload_len];
        t[0..2].copy_from_slice(&ports.0.to_be_bytes());
        t[2..4].copy_from_slice(&ports.1.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((hl / 4) as u8) << 4 | ((flags >> 8) as u8 & 1);
        t[13] = flags as u8;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        t[16..20].copy_from_slice(&[0, 0, 0, 0]);
        t[20..hl].copy_from_slice(opts);
        fill(&mut t[hl..]);
        let l4_len = hl + payload_len;
        let mut vnet = Self::l4_checksum(path, s, ip_proto::TCP, l4_len, 16);
        if path.vnet && payload_len > mss as usize && mss > 0 {
            vnet.gso_type = VNET_GSO_TCPV4;
            vnet.gso_size = mss;
            vnet.hdr_len = (L4_OFF + hl) as u16;
        }
        self.finish(path, l4_len, vnet);
        true
    }

    /// Appends a UDP datagram whose payload `fill` writes into the slot and returns the length
    /// of (at most `max_payload`); `None` from `fill` abandons the frame.
    pub fn udp(
        &mut self,
        path: &Path,
        ports: (u16, u16),
        max_payload: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let room = self.batch.max_frame() - L4_OFF - 8;
        let max_payload = max_payload.min(room);
        let Some(s) = self.begin(path, ip_proto::UDP) else {
            return false;
        };
        let Some(n) = fill(&mut s[L4_OFF + 8..L4_OFF + 8 + max_payload]) else {
            return false;
        };
        let n = n.min(max_payload);
        let u = &mut s[L4_OFF..L4_OFF + 8];
        u[0..2].copy_from_slice(&ports.0.to_be_bytes());
        u[2..4].copy_from_slice(&ports.1.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
        let vnet = Self::l4_checksum(path, s, ip_proto::UDP, 8 + n, 6);
        self.finish(path, 8 + n, vnet);
        true
    }

    /// Appends an ICMP message (header and body as given; the checksum is computed here).
    pub fn icmp(&mut self, path: &Path, msg: &[u8]) -> bool {
        if L4_OFF + msg.len() > self.batch.max_frame() {
            return false;
        }
        let Some(s) = self.begin(path, ip_proto::ICMP) else {
            return false;
        };
        let m = &mut s[L4_OFF..L4_OFF + msg.len()];
        m.copy_from_slice(msg);
        if m.len() >= 4 {
            m[2..4].copy_from_slice(&[0, 0]);
            let c = checksum(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        self.finish(path, msg.len(), VnetHdr::default());
        true
    }
}

/// 0, 1, 2, ... for selections of the output batch.
static SEQ: [u16; BATCH_SIZE] = {
    let mut a = [0u16; BATCH_SIZE];
    let mut i = 0;
    while i < BATCH_SIZE {
        a[i] = i as u16;
        i += 1;
    }
    a
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::ipv4_l4_verify;
    use crate::wire::{EthernetFrame, Ipv4Packet, TcpPacket};

    fn path(vnet: bool) -> Path {
        Path {
            port: PortId(3),
            vnet,
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    struct Rec(Vec<(PortId, usize)>);
    impl Sink for Rec {
        fn send(&mut self, port: PortId, _b: &Batch, sel: &[u16]) -> usize {
            self.0.push((port, sel.len()));
            sel.len() - 1
        }
    }

    proptest::proptest! {
        /// Whatever the NAT engine asks for, a builder either refuses or emits a frame whose
        /// IPv4 total length and TCP header length say what was written.
        #[test]
        fn builders_never_panic_and_write_what_they_say(
            opts in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            payload_len in 0usize..70_000,
            mss in proptest::prelude::any::<u16>(),
            vnet in proptest::prelude::any::<bool>(),
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        ) {
            let mut o = Out::new();
            let p = path(vnet);
            if o.tcp(&p, (80, 1234), 1, 2, 0x10, 100, &opts, payload_len, mss, |b| b.fill(7)) {
                let f = o.batch().frame(0);
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                proptest::prop_assert_eq!(usize::from(ip.total_len()), 40 + opts.len() + payload_len);
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                proptest::prop_assert_eq!(t.payload().len(), payload_len);
            }
            let _ = o.icmp(&p, &msg);
            let _ = o.udp(&p, (53, 9), payload_len, |b| Some(b.len()));
        }
    }

    #[test]
    fn tcp_full_checksum_without_vnet() {
        let mut o = Out::new();
        let p = path(false);
        assert!(o.tcp(&p, (80, 1234), 7, 9, 0x18, 100, &[], 5, 1460, |b| b
            .copy_from_slice(b"hello")));
        let f = o.batch().frame(0);
        let eth = EthernetFrame::new_checked(f).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len() as usize, 20 + 20 + 5);
        assert!(ipv4_l4_verify(p.src_ip, p.dst_ip, 6, ip.payload()));
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (t.seq_number(), t.ack_number(), t.payload()),
            (7, 9, &b"hello"[..])
        );
        assert_eq!(o.batch().meta(0).vnet, VnetHdr::default());
    }

    #[test]
    fn tcp_gso_with_vnet() {
        let mut o = Out::new();
        let p = path(true);
        assert!(
            o.tcp(&p, (80, 1234), 7, 9, 0x10, 100, &[], 3000, 1460, |b| b
                .fill(1))
        );
        let m = o.batch().meta(0).vnet;
        assert_eq!(
            (m.gso_type, m.gso_size, m.hdr_len),
            (VNET_GSO_TCPV4, 1460, 54)
        );
        assert!(m.needs_csum());
        // Finishing the partial checksum gives a valid one.
        let f = o.batch().frame(0).to_vec();
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let seg = ip.payload();
        let partial = u16::from_be_bytes([seg[16], seg[17]]);
        let mut s2 = seg.to_vec();
        s2[16..18].copy_from_slice(&[0, 0]);
        let full = !fold(u64::from(partial) + u64::from(crate::wire::checksum::sum(&s2)));
        s2[16..18].copy_from_slice(&full.to_be_bytes());
        assert!(ipv4_l4_verify(p.src_ip, p.dst_ip, 6, &s2));
    }

    #[test]
    fn flush_groups_runs_and_counts_refusals() {
        let mut o = Out::new();
        let mut p = path(false);
        for port in [1, 1, 2, 1] {
            p.port = PortId(port);
            assert!(o.icmp(&p, &[0, 0, 0, 0, 1, 2, 3, 4]));
        }
        let mut r = Rec(Vec::new());
        o.flush(&mut r);
        assert_eq!(r.0, vec![(PortId(1), 2), (PortId(2), 1), (PortId(1), 1)]);
        assert_eq!(o.tx_dropped, 3);
        assert!(o.is_empty());
    }

    #[test]
    fn udp_payload_and_abandon() {
        let mut o = Out::new();
        let p = path(false);
        assert!(!o.udp(&p, (53, 999), 100, |_| None));
        assert!(o.is_empty());
        assert!(o.udp(&p, (53, 999), 100, |b| {
            b[..3].copy_from_slice(b"abc");
            Some(3)
        }));
        let ip = Ipv4Packet::new_checked(&o.batch().frame(0)[14..]).unwrap();
        assert!(ipv4_l4_verify(p.src_ip, p.dst_ip, 17, ip.payload()));
    }
}
