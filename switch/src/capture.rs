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

use crate::pipeline::Dispatch;
use crate::port::PortId;
use crate::wire::MacAddr;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::net::Ipv4Addr;
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
    fn wants(&self, port: PortId) -> bool {
        self.ports.is_empty() || self.ports.get(port.index()).copied().unwrap_or(false)
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
        let Ok(mut data) = self.free.try_recv() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        data.clear();
        data.extend_from_slice(f.get(..self.snaplen.min(f.len())).unwrap_or_default());
        let c = Captured {
            port,
            out,
            ts_us,
            orig_len: f.len() as u32,
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

/// Microseconds since the Unix epoch (read once per batch).
fn now_us() -> u64 {
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

    /// An interface description block: Ethernet, `snaplen`, `if_name`, `if_description`,
    /// microsecond timestamps.
    pub fn interface(name: &str, description: &str, snaplen: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
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
        });
        drop(t2);
        assert_eq!(r2.drain(10), (vec![], false), "the worker's end is gone");
    }

    #[test]
    fn pcapng_blocks_are_aligned_and_framed() {
        for b in [
            pcapng::section_header(),
            pcapng::interface("vsw1", "web", 2048),
            pcapng::packet(0, 1 << 40, 99, &[1, 2, 3, 4, 5], true),
        ] {
            assert_eq!(b.len() % 4, 0);
            let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, b.len());
            assert_eq!(b[b.len() - 4..], b[4..8]);
        }
    }

    proptest! {
        #[test]
        fn headers_and_filters_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = headers(&bytes);
            let f = Filter::parse(&words("ip and udp and port 53 and host 10.0.0.2")).unwrap();
            let _ = f.matches(&bytes);
        }
    }
}
