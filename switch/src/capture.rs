//! Live capture (`vswitch capture`): frames copied out of the worker as they are switched, into
//! a bounded queue the control plane drains, and written as pcapng.
//!
//! * **In the worker** a [`Tap`] is an `Option` checked once per batch: off, capture costs one
//!   branch per batch. On, each frame of the batch (direction `in`, on its ingress port) and each
//!   frame of each output list (direction `out`, on its output port) that the port selection,
//!   the direction and the [`Filter`] admit is copied into a buffer taken from a free list and
//!   handed over. Both are bounded crossbeam array channels of preallocated buffers: no
//!   allocation, no lock (their fast paths are atomics, and the reader never blocks on them, so
//!   nobody is ever woken) and no syscall per frame. When the reader falls behind, frames are
//!   dropped and counted ([`TapReader::dropped`]), never waited for.
//! * **In the control plane** a [`TapReader`] drains the queue and returns the buffers.
//! * [`pcapng`] writes the blocks: one interface per port, `epb_flags` for the direction.
//!
//! What is seen: frames as they arrived (an output's copy before any 802.1Q re-tagging, a
//! tunnel's frames decapsulated), frames the switch forwarded, and frames the gateway built
//! and sent to a port (its ARP and ping answers, NAT's frames towards containers), outgoing on
//! that port ([`Tap::sent`]).
//!
//! **Outer capture** (`vswitch capture --outer`, [`CaptureSpec::outer`]): the tap is not the
//! worker's but given to the selected tunnel ports ([`Tap::outer_for`], one [`OuterTap`] each,
//! sharing the queue), which copy each VXLAN datagram they send and receive behind a rebuilt
//! outer IPv4 and UDP header ([`outer_ip_udp`]): the socket knows both addresses and ports but
//! never sees the underlay's Ethernet header, so the records are raw IPv4
//! ([`pcapng::LINKTYPE_RAW`]). The filter applies to the inner frame.

use crate::pipeline::Dispatch;
use crate::port::PortId;
use crate::wire::MacAddr;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default bytes kept of each frame (longer frames are cut, their length recorded).
pub const DEFAULT_SNAPLEN: usize = 2048;
/// Default frames the queue holds between two reads.
pub const DEFAULT_SLOTS: usize = 4096;

/// One term of a capture filter; a filter admits a frame when every term matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    /// Source or destination MAC.
    Mac(MacAddr),
    /// IPv4 source or destination (ARP: sender or target).
    Host(Ipv4Addr),
    Ip,
    Arp,
    Icmp,
    Tcp,
    Udp,
    /// TCP or UDP source or destination port.
    Port(u16),
}

/// What a filter may say (for messages and `--help`).
pub const FILTER_WORDS: &str =
    "use icmp, tcp, udp, arp, ip, host IP, ether MAC, port N, joined by `and`";

/// A capture (and trace) filter: terms joined by `and` (`icmp`, `tcp`, `udp`, `arp`, `ip`, `host IP`,
/// `ether MAC`, `port N`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

/// What a filter (and `vswitch trace`'s and `vswitch capture`'s one-line summaries) reads of a
/// frame. A frame cut short keeps what could be read before the cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// The 802.1Q VLAN id, for a tagged frame.
    pub vlan: Option<u16>,
    /// The EtherType (behind the tag of a tagged frame).
    pub ethertype: u16,
    /// Offset of the L3 header (14, or 18 behind a tag).
    pub l3: usize,
    /// IPv4 (or ARP sender, target) addresses.
    pub ip: Option<(Ipv4Addr, Ipv4Addr)>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Offset of the L4 header of an IPv4 first fragment.
    pub l4: Option<usize>,
    /// TCP/UDP ports (first fragment only).
    pub ports: Option<(u16, u16)>,
}

fn be16(f: &[u8], o: usize) -> Option<u16> {
    f.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn ip4(f: &[u8], o: usize) -> Option<Ipv4Addr> {
    f.get(o..o + 4)
        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Reads the headers a filter or a summary needs, through checked slices (any bytes); `None`
/// for a frame shorter than an Ethernet header.
pub fn headers(f: &[u8]) -> Option<Headers> {
    let mut h = Headers {
        dst: f.get(0..6)?.try_into().ok()?,
        src: f.get(6..12)?.try_into().ok()?,
        ethertype: be16(f, 12)?,
        l3: 14,
        ..Default::default()
    };
    if h.ethertype == 0x8100 {
        h.vlan = be16(f, 14).map(|tci| tci & 0x0fff);
        h.ethertype = be16(f, 16).unwrap_or(0);
        h.l3 = 18;
    }
    let _ = l3_headers(f, &mut h);
    Some(h)
}

/// The IPv4 or ARP part of [`headers`]; `None` where the frame is cut short.
fn l3_headers(f: &[u8], h: &mut Headers) -> Option<()> {
    let l3 = h.l3;
    match h.ethertype {
        0x0800 => {
            let vihl = *f.get(l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            h.ip = Some((ip4(f, l3 + 12)?, ip4(f, l3 + 16)?));
            let proto = *f.get(l3 + 9)?;
            h.proto = Some(proto);
            if be16(f, l3 + 6)? & 0x1fff == 0 {
                h.l4 = Some(l3 + ihl);
                if proto == 6 || proto == 17 {
                    h.ports = be16(f, l3 + ihl).zip(be16(f, l3 + ihl + 2));
                }
            }
        }
        0x0806 => h.ip = ip4(f, l3 + 14).zip(ip4(f, l3 + 24)),
        _ => {}
    }
    Some(())
}

impl Filter {
    /// Parses filter words (`["icmp", "and", "host", "10.0.0.2"]`); no words: every frame.
    pub fn parse(words: &[String]) -> Result<Filter, String> {
        let mut terms = Vec::new();
        let mut it = words.iter().flat_map(|w| w.split_whitespace());
        let mut want_term = true;
        while let Some(w) = it.next() {
            if w == "and" || w == "&&" {
                if want_term {
                    return Err("`and` must join two terms".into());
                }
                want_term = true;
                continue;
            }
            let mut arg = |what: &str| {
                it.next()
                    .ok_or_else(|| format!("`{w}` needs {what}"))
                    .map(str::to_string)
            };
            terms.push(match w {
                "ip" | "ipv4" => Term::Ip,
                "arp" => Term::Arp,
                "icmp" => Term::Icmp,
                "tcp" => Term::Tcp,
                "udp" => Term::Udp,
                "host" => Term::Host(
                    arg("an IPv4 address")?
                        .parse()
                        .map_err(|_| "`host` needs an IPv4 address".to_string())?,
                ),
                "ether" | "mac" => Term::Mac(
                    arg("a MAC address")?
                        .parse()
                        .map_err(|_| format!("`{w}` needs a MAC address (02:42:ac:11:00:02)"))?,
                ),
                "port" => Term::Port(
                    arg("a port number")?
                        .parse()
                        .map_err(|_| "`port` needs a number 0-65535".to_string())?,
                ),
                _ => return Err(format!("unknown filter word `{w}`: {FILTER_WORDS}")),
            });
            want_term = false;
        }
        if want_term && !terms.is_empty() {
            return Err("the filter ends with `and`".into());
        }
        Ok(Filter { terms })
    }

    /// True when the filter has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether frame `f` passes. Never panics, whatever the bytes.
    pub fn matches(&self, f: &[u8]) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        let Some(h) = headers(f) else {
            return false;
        };
        self.terms.iter().all(|t| match t {
            Term::Mac(m) => h.src == m.0 || h.dst == m.0,
            Term::Host(a) => h.ip.is_some_and(|(s, d)| s == *a || d == *a),
            Term::Ip => h.ethertype == 0x0800,
            Term::Arp => h.ethertype == 0x0806,
            Term::Icmp => h.proto == Some(1),
            Term::Tcp => h.proto == Some(6),
            Term::Udp => h.proto == Some(17),
            Term::Port(p) => h.ports.is_some_and(|(s, d)| s == *p || d == *p),
        })
    }
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub port: PortId,
    /// True: sent by the switch on the port; false: received from it.
    pub out: bool,
    /// Microseconds since the Unix epoch (taken once per batch).
    pub ts_us: u64,
    /// The frame's length on the wire (`data` holds at most the snap length of it).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// What to capture.
#[derive(Clone, Debug)]
pub struct CaptureSpec {
    /// Ports to capture on (empty: every port).
    pub ports: Vec<PortId>,
    pub dir_in: bool,
    pub dir_out: bool,
    pub filter: Filter,
    pub snaplen: usize,
    pub slots: usize,
    /// Capture tunnel ports' VXLAN datagrams with their outer headers instead of the frames the
    /// pipeline switches (the worker hands the tap to the tunnel ports; see the module docs).
    pub outer: bool,
    /// An outer capture's VNI: only datagrams whose VXLAN header carries it (`None`: any).
    pub vni: Option<u32>,
}

/// The worker's end of a capture.
pub struct Tap {
    /// By port index: captured or not (empty: every port).
    ports: Vec<bool>,
    dir_in: bool,
    dir_out: bool,
    filter: Filter,
    snaplen: usize,
    free: Receiver<Vec<u8>>,
    full: Sender<Captured>,
    dropped: Arc<AtomicU64>,
    outer: bool,
    vni: Option<u32>,
    /// The reader is gone: the worker drops the tap.
    pub closed: bool,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// The control plane's end of a capture.
#[derive(Debug)]
pub struct TapReader {
    full: Receiver<Captured>,
    free: Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

/// A capture's two ends, with `spec.slots` buffers of `spec.snaplen` bytes allocated now.
pub fn tap(spec: CaptureSpec) -> (Tap, TapReader) {
    let slots = spec.slots.max(1);
    let (free_tx, free_rx) = crossbeam_channel::bounded(slots);
    let (full_tx, full_rx) = crossbeam_channel::bounded(slots);
    for _ in 0..slots {
        let _ = free_tx.try_send(Vec::with_capacity(spec.snaplen));
    }
    let mut ports = Vec::new();
    for p in &spec.ports {
        if ports.len() <= p.index() {
            ports.resize(p.index() + 1, false);
        }
        ports[p.index()] = true;
    }
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Tap {
            ports,
            dir_in: spec.dir_in,
            dir_out: spec.dir_out,
            filter: spec.filter,
            snaplen: spec.snaplen,
            free: free_rx,
            full: full_tx,
            dropped: Arc::clone(&dropped),
            outer: spec.outer,
            vni: spec.vni,
            closed: false,
        },
        TapReader {
            full: full_rx,
            free: free_tx,
            dropped,
        },
    )
}

impl Tap {
    /// Whether the capture takes port `port` (every port when it names none).
    pub fn wants(&self, port: PortId) -> bool {
        self.ports.is_empty() || self.ports.get(port.index()).copied().unwrap_or(false)
    }

    /// Whether this is an outer capture: the worker hands it to the tunnel ports
    /// ([`Tap::outer_for`]) instead of feeding it the frames it switches.
    pub fn is_outer(&self) -> bool {
        self.outer
    }

    /// The end of an outer capture for tunnel port `port`: the same queue, free list and drop
    /// count (the reader sees the capture end once every port's end is dropped).
    pub fn outer_for(&self, port: PortId) -> OuterTap {
        OuterTap {
            port,
            tap: Tap {
                ports: Vec::new(),
                dir_in: self.dir_in,
                dir_out: self.dir_out,
                filter: self.filter.clone(),
                snaplen: self.snaplen,
                free: self.free.clone(),
                full: self.full.clone(),
                dropped: Arc::clone(&self.dropped),
                outer: true,
                vni: self.vni,
                closed: false,
            },
        }
    }

    /// Copies what the tap wants of one forwarded batch: the batch's frames received on
    /// `in_port`, and the frames of each output list.
    pub fn batch(&mut self, in_port: PortId, batch: &crate::batch::Batch, out: &Dispatch) {
        let ts_us = now_us();
        if self.dir_in && self.wants(in_port) {
            for i in 0..batch.len() {
                self.copy(in_port, false, batch.frame(i), ts_us);
            }
        }
        for (port, sel, _) in out.outputs() {
            self.copy_out(port, batch, sel, ts_us);
        }
    }

    /// Copies what the tap wants of frames the switch built itself and sends out on `port`
    /// (the gateway's ARP and ping answers, NAT's frames towards containers): frames `sel` of
    /// `batch`, outgoing.
    pub fn sent(&mut self, port: PortId, batch: &crate::batch::Batch, sel: &[u16]) {
        self.copy_out(port, batch, sel, now_us());
    }

    /// Frames `sel` of `batch`, sent on `port`, if the tap wants that port's outgoing frames.
    fn copy_out(&mut self, port: PortId, batch: &crate::batch::Batch, sel: &[u16], ts_us: u64) {
        if self.dir_out && self.wants(port) {
            for &i in sel {
                self.copy(port, true, batch.frame(usize::from(i)), ts_us);
            }
        }
    }

    fn copy(&mut self, port: PortId, out: bool, f: &[u8], ts_us: u64) {
        if self.closed || !self.filter.matches(f) {
            return;
        }
        self.copy_parts(port, out, &[f], ts_us);
    }

    /// Copies the concatenation of `parts` (cut to the snap length) as one record.
    fn copy_parts(&mut self, port: PortId, out: bool, parts: &[&[u8]], ts_us: u64) {
        let Ok(mut data) = self.free.try_recv() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        data.clear();
        let mut orig_len = 0usize;
        for p in parts {
            let room = self.snaplen.saturating_sub(data.len());
            data.extend_from_slice(p.get(..room.min(p.len())).unwrap_or_default());
            orig_len += p.len();
        }
        let c = Captured {
            port,
            out,
            ts_us,
            orig_len: orig_len as u32,
            data,
        };
        match self.full.try_send(c) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
    }
}

/// Bytes of the outer IPv4 (no options) and UDP headers an outer capture rebuilds.
pub const OUTER_IP_UDP_LEN: usize = 28;
/// Bytes of a VXLAN header.
const VXLAN_LEN: usize = 8;

/// The outer IPv4 and UDP headers of a VXLAN datagram whose UDP payload (VXLAN header and inner
/// frame) is `payload_len` bytes, from `src` to `dst`, as an outer capture records it: version
/// 4, no options, DF set (the tunnel socket sets it), TTL 64, identification 0, a valid header
/// checksum, the IPv4 total length and UDP length of the payload (saturated at 65535), UDP
/// checksum 0 ("none": the kernel computes the real one after the switch hands the datagram
/// over). The socket does not report the received TTL, identification or checksum, so those are
/// the same for datagrams received.
pub fn outer_ip_udp(src: SocketAddrV4, dst: SocketAddrV4, payload_len: usize) -> [u8; 28] {
    let total = (OUTER_IP_UDP_LEN + payload_len).min(usize::from(u16::MAX)) as u16;
    let udp = (8 + payload_len).min(usize::from(u16::MAX)) as u16;
    let mut h = [0u8; OUTER_IP_UDP_LEN];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&src.ip().octets());
    h[16..20].copy_from_slice(&dst.ip().octets());
    let csum = crate::wire::checksum::checksum(&h[..20]);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h[20..22].copy_from_slice(&src.port().to_be_bytes());
    h[22..24].copy_from_slice(&dst.port().to_be_bytes());
    h[24..26].copy_from_slice(&udp.to_be_bytes());
    h
}

/// A tunnel port's end of an outer capture ([`Tap::outer_for`]): copies the VXLAN datagrams
/// the port sends and receives, each behind its outer IPv4 and UDP headers.
pub struct OuterTap {
    port: PortId,
    tap: Tap,
}

impl std::fmt::Debug for OuterTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OuterTap({})", self.port.0)
    }
}

impl OuterTap {
    /// The reader is gone: the port drops its end.
    pub fn closed(&self) -> bool {
        self.tap.closed
    }

    /// Copies UDP datagram `payload` (VXLAN header and inner frame, any bytes: a datagram the
    /// port received may be anything) from `src` to `dst`, outgoing when `out`, if the
    /// direction, the VNI and the filter (on the inner frame: the bytes after the 8-byte VXLAN
    /// header) admit it.
    pub fn datagram(
        &mut self,
        out: bool,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        ts_us: u64,
    ) {
        let (vxlan, inner) = payload.split_at(VXLAN_LEN.min(payload.len()));
        let head = outer_ip_udp(src, dst, payload.len());
        self.copy(out, &head, vxlan, inner, ts_us);
    }

    /// Copies a datagram sent whole behind outer headers built elsewhere: `ip_udp` (its real
    /// IPv4 and UDP headers), `vxlan` and `inner` (a tunnel GSO packet, sent through the
    /// tunnel TAP).
    pub fn sent_whole(&mut self, ip_udp: &[u8], vxlan: &[u8], inner: &[u8], ts_us: u64) {
        self.copy(true, ip_udp, vxlan, inner, ts_us);
    }

    fn copy(&mut self, out: bool, head: &[u8], vxlan: &[u8], inner: &[u8], ts_us: u64) {
        let t = &mut self.tap;
        if t.closed || !(if out { t.dir_out } else { t.dir_in }) {
            return;
        }
        if let Some(vni) = t.vni {
            let want = vni.to_be_bytes();
            if vxlan.get(4..7) != want.get(1..4) {
                return;
            }
        }
        if !t.filter.matches(inner) {
            return;
        }
        t.copy_parts(self.port, out, &[head, vxlan, inner], ts_us);
    }
}

/// One line about an outer capture's record (outer IPv4 + UDP + VXLAN + inner frame):
/// `192.168.77.1:4789 > 192.168.77.2:4789 VXLAN vni 42: ` and the inner frame's summary.
pub fn outer_summary(record: &[u8]) -> String {
    let (Some(src), Some(dst)) = (ip4(record, 12), ip4(record, 16)) else {
        return "runt".into();
    };
    let ihl = usize::from(record.first().copied().unwrap_or(0) & 0x0f) * 4;
    let (Some(sp), Some(dp)) = (be16(record, ihl), be16(record, ihl + 2)) else {
        return format!("{src} > {dst} (no UDP header)");
    };
    let v = ihl + 8;
    match record.get(v..v + VXLAN_LEN) {
        Some(h) => format!(
            "{src}:{sp} > {dst}:{dp} VXLAN vni {}: {}",
            u32::from_be_bytes([0, h[4], h[5], h[6]]),
            crate::trace::summary(record.get(v + VXLAN_LEN..).unwrap_or_default())
        ),
        None => format!("{src}:{sp} > {dst}:{dp} UDP (shorter than a VXLAN header)"),
    }
}

/// Microseconds since the Unix epoch (read once per batch).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl TapReader {
    /// Up to `max` captured frames, without waiting, and false once the worker's end is gone
    /// (the capture was stopped, or the worker restarted) and nothing is left. Give each
    /// frame's buffer back with [`TapReader::recycle`].
    pub fn drain(&self, max: usize) -> (Vec<Captured>, bool) {
        let mut v = Vec::new();
        while v.len() < max {
            match self.full.try_recv() {
                Ok(c) => v.push(c),
                Err(TryRecvError::Empty) => return (v, true),
                Err(TryRecvError::Disconnected) => return (v, false),
            }
        }
        (v, true)
    }

    /// Returns a buffer to the worker's free list.
    pub fn recycle(&self, data: Vec<u8>) {
        let _ = self.free.try_send(data);
    }

    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// pcapng blocks (little-endian), as Wireshark and tshark read them.
pub mod pcapng {
    fn pad4(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
    }

    fn option(v: &mut Vec<u8>, code: u16, value: &[u8]) {
        v.extend_from_slice(&code.to_le_bytes());
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        pad4(v);
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut v = Vec::with_capacity(len as usize);
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    /// The section header block (version 1.0, section length unknown).
    pub fn section_header() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut b, 4, b"vswitch capture"); // shb_userappl
        option(&mut b, 0, &[]);
        block(0x0A0D_0D0A, &b)
    }

    /// Link type of Ethernet frames.
    pub const LINKTYPE_ETHERNET: u16 = 1;
    /// Link type of raw IP packets (an outer capture's records: IPv4 behind no link header).
    pub const LINKTYPE_RAW: u16 = 101;

    /// An interface description block: `linktype`, `snaplen`, `if_name`, `if_description`,
    /// microsecond timestamps.
    pub fn interface(linktype: u16, name: &str, description: &str, snaplen: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&linktype.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut b, 2, name.as_bytes());
        option(&mut b, 3, description.as_bytes());
        option(&mut b, 9, &[6]); // if_tsresol: 10^-6
        option(&mut b, 0, &[]);
        block(1, &b)
    }

    /// An enhanced packet block on interface `iface`; `out`: outbound, else inbound
    /// (`epb_flags` bits 0-1: 1 inbound, 2 outbound).
    pub fn packet(iface: u32, ts_us: u64, orig_len: u32, data: &[u8], out: bool) -> Vec<u8> {
        let mut b = Vec::with_capacity(data.len() + 40);
        b.extend_from_slice(&iface.to_le_bytes());
        b.extend_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts_us as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.to_le_bytes());
        b.extend_from_slice(data);
        pad4(&mut b);
        let flags: u32 = if out { 2 } else { 1 };
        option(&mut b, 2, &flags.to_le_bytes());
        option(&mut b, 0, &[]);
        block(6, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    /// An Ethernet + IPv4 + UDP frame from 10.0.0.1:1000 to 10.0.0.2:53.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x03, 0xe8, 0, 53, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn filters_match_what_they_name() {
        let f = udp_frame();
        for (expr, want) in [
            ("", true),
            ("udp", true),
            ("tcp", false),
            ("ip and udp and port 53", true),
            ("port 1000", true),
            ("port 54", false),
            ("host 10.0.0.2", true),
            ("host 10.0.0.3", false),
            ("ether 02:00:00:00:00:01", true),
            ("mac 02:00:00:00:00:09", false),
            ("arp", false),
            ("icmp", false),
        ] {
            assert_eq!(
                Filter::parse(&words(expr)).unwrap().matches(&f),
                want,
                "{expr}"
            );
        }
        // A tagged copy matches the same.
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&f[12..]);
        assert!(Filter::parse(&words("udp and port 53"))
            .unwrap()
            .matches(&tagged));
        for bad in ["host", "host x", "port 70000", "and udp", "udp and", "frob"] {
            assert!(Filter::parse(&words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (mut t, r) = tap(CaptureSpec {
            ports: vec![PortId(3)],
            dir_in: true,
            dir_out: true,
            filter: Filter::default(),
            snaplen: 16,
            slots: 2,
            outer: false,
            vni: None,
        });
        let f = udp_frame();
        for _ in 0..5 {
            t.copy(PortId(3), false, &f, 7);
        }
        assert_eq!(r.dropped(), 3);
        let (got, live) = r.drain(10);
        assert!(live);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, f[..16].to_vec(), "cut to the snap length");
        assert_eq!(got[0].orig_len as usize, f.len());
        assert!(!t.wants(PortId(2)) && t.wants(PortId(3)));
        for c in got {
            r.recycle(c.data);
        }
        t.copy(PortId(3), true, &f, 8);
        assert_eq!(r.drain(10).0.len(), 1, "buffers come back");
        drop(r);
        t.copy(PortId(3), true, &f, 9);
        assert!(t.closed, "the reader is gone");
        let (t2, r2) = tap(CaptureSpec {
            ports: vec![],
            dir_in: true,
            dir_out: true,
            filter: Filter::default(),
            snaplen: 16,
            slots: 2,
            outer: false,
            vni: None,
        });
        drop(t2);
        assert_eq!(r2.drain(10), (vec![], false), "the worker's end is gone");
    }

    #[test]
    fn pcapng_blocks_are_aligned_and_framed() {
        for b in [
            pcapng::section_header(),
            pcapng::interface(pcapng::LINKTYPE_ETHERNET, "vsw1", "web", 2048),
            pcapng::packet(0, 1 << 40, 99, &[1, 2, 3, 4, 5], true),
        ] {
            assert_eq!(b.len() % 4, 0);
            let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, b.len());
            assert_eq!(b[b.len() - 4..], b[4..8]);
        }
    }

    fn addr(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    #[test]
    fn outer_headers_have_valid_checksums_and_lengths() {
        let (src, dst) = (addr([192, 168, 77, 1], 4789), addr([192, 168, 77, 2], 4789));
        for len in [0, 8, 106, 1472, 65507] {
            let h = outer_ip_udp(src, dst, len);
            assert!(crate::wire::checksum::verify(&h[..20]), "{len}");
            assert_eq!(h[0], 0x45);
            assert_eq!(usize::from(u16::from_be_bytes([h[2], h[3]])), 28 + len);
            assert_eq!(h[6] & 0x40, 0x40, "DF");
            assert_eq!((h[8], h[9]), (64, 17));
            assert_eq!(h[12..16], [192, 168, 77, 1]);
            assert_eq!(h[16..20], [192, 168, 77, 2]);
            assert_eq!(u16::from_be_bytes([h[20], h[21]]), 4789);
            assert_eq!(u16::from_be_bytes([h[22], h[23]]), 4789);
            assert_eq!(usize::from(u16::from_be_bytes([h[24], h[25]])), 8 + len);
            assert_eq!(h[26..28], [0, 0], "no UDP checksum");
        }
        // The one's-complement sum is right for other addresses too (a known header: RFC
        // 1071's example values aside, compare with a sum computed by hand).
        let h = outer_ip_udp(addr([10, 0, 0, 1], 1), addr([10, 0, 0, 2], 2), 72);
        // 4500 0064 0000 4000 4011 ---- 0a00 0001 0a00 0002
        let words: u32 = [0x4500u32, 0x0064, 0, 0x4000, 0x4011, 0x0a00, 1, 0x0a00, 2]
            .iter()
            .sum();
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(u16::from_be_bytes([h[10], h[11]]), !(folded as u16));
        // Too long for IPv4: the lengths saturate rather than wrap.
        let h = outer_ip_udp(src, dst, 70_000);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 65535);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 65535);
        assert!(crate::wire::checksum::verify(&h[..20]));
    }

    fn outer_tap(
        filter: &str,
        vni: Option<u32>,
        snaplen: usize,
        dir: (bool, bool),
    ) -> (OuterTap, TapReader) {
        let (t, r) = tap(CaptureSpec {
            ports: vec![PortId(4)],
            dir_in: dir.0,
            dir_out: dir.1,
            filter: Filter::parse(&words(filter)).unwrap(),
            snaplen,
            slots: 8,
            outer: true,
            vni,
        });
        assert!(t.is_outer());
        (t.outer_for(PortId(4)), r)
    }

    /// A VXLAN payload: VNI `vni`, then [`udp_frame`].
    fn vxlan_payload(vni: u32) -> Vec<u8> {
        let mut p = vec![0x08, 0, 0, 0];
        p.extend_from_slice(&(vni << 8).to_be_bytes());
        p.extend_from_slice(&udp_frame());
        p
    }

    #[test]
    fn outer_records_are_cut_to_the_snap_length_and_selected_by_vni_filter_and_direction() {
        let (src, dst) = (
            addr([192, 168, 77, 2], 40000),
            addr([192, 168, 77, 1], 4789),
        );
        let p = vxlan_payload(42);
        let (mut t, r) = outer_tap("", None, 64, (true, true));
        t.datagram(false, src, dst, &p, 5);
        t.datagram(true, dst, src, &p[..3], 6);
        let (got, _) = r.drain(10);
        assert_eq!(got.len(), 2);
        let c = &got[0];
        assert_eq!((c.port, c.out, c.ts_us), (PortId(4), false, 5));
        assert_eq!(c.orig_len as usize, 28 + p.len(), "the length on the wire");
        assert_eq!(c.data.len(), 64, "cut to the snap length");
        assert_eq!(c.data[..28], outer_ip_udp(src, dst, p.len()));
        assert_eq!(c.data[28..], p[..36]);
        // A datagram shorter than a VXLAN header is recorded as it is.
        assert_eq!(got[1].data.len(), 31);
        assert!(got[1].out);
        for g in got {
            r.recycle(g.data);
        }
        // Not cut when it fits.
        let (mut t, r) = outer_tap("", None, 2048, (true, true));
        t.datagram(false, src, dst, &p, 5);
        assert_eq!(r.drain(10).0[0].data.len(), 28 + p.len());
        // The VNI: only 42's; the filter: of the inner frame (UDP to port 53); the direction.
        for (filter, vni, dir, want) in [
            ("", Some(42), (true, true), true),
            ("", Some(43), (true, true), false),
            ("udp and port 53", None, (true, true), true),
            ("udp and port 4789", None, (true, true), false),
            ("icmp", Some(42), (true, true), false),
            ("", None, (false, true), false),
            ("", None, (true, false), true),
        ] {
            let (mut t, r) = outer_tap(filter, vni, 2048, dir);
            t.datagram(false, src, dst, &p, 5);
            assert_eq!(
                r.drain(10).0.len(),
                usize::from(want),
                "{filter} {vni:?} {dir:?}"
            );
        }
        // Short datagrams never match a filter that needs an inner frame, nor a VNI.
        let (mut t, r) = outer_tap("udp", None, 2048, (true, true));
        t.datagram(false, src, dst, &p[..8], 5);
        let (mut t2, r2) = outer_tap("", Some(42), 2048, (true, true));
        t2.datagram(false, src, dst, &p[..6], 5);
        assert_eq!(r.drain(10).0.len() + r2.drain(10).0.len(), 0);
        // The end closes with its reader.
        drop(r);
        t.datagram(false, src, dst, &p, 5);
        assert!(t.closed());
    }

    #[test]
    fn outer_summaries_name_addresses_vni_and_the_inner_frame() {
        let (src, dst) = (
            addr([192, 168, 77, 2], 40000),
            addr([192, 168, 77, 1], 4789),
        );
        let p = vxlan_payload(42);
        let mut rec = outer_ip_udp(src, dst, p.len()).to_vec();
        rec.extend_from_slice(&p);
        assert_eq!(
            outer_summary(&rec),
            "192.168.77.2:40000 > 192.168.77.1:4789 VXLAN vni 42: 10.0.0.1:1000 > 10.0.0.2:53 UDP"
        );
        assert!(outer_summary(&rec[..30]).contains("shorter than a VXLAN header"));
        assert_eq!(outer_summary(&rec[..10]), "runt");
    }

    proptest! {
        #[test]
        fn headers_and_filters_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = headers(&bytes);
            let f = Filter::parse(&words("ip and udp and port 53 and host 10.0.0.2")).unwrap();
            let _ = f.matches(&bytes);
            let _ = outer_summary(&bytes);
            let (mut t, _r) = outer_tap("udp and port 53", Some(42), 64, (true, true));
            t.datagram(false, addr([1, 2, 3, 4], 5), addr([5, 6, 7, 8], 4789), &bytes, 1);
        }
    }
}
