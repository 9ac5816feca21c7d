//! Test frames: what the generator sends and how a receiver recognises them (pure).
//!
//! A test frame is Ethernet + IPv4 + UDP with an 18-byte tag at the start of the UDP payload:
//!
//! ```text
//! offset 42: magic (u16, 0x564c "VL" for measured frames, 0x564d "VM" for learning frames)
//! offset 44: sequence number (u64, per sender, from 0)
//! offset 52: send timestamp (u64, CLOCK_MONOTONIC nanoseconds)
//! ```
//!
//! The IPv4 identification field carries the sender's port index. Frame sizes follow RFC 2544:
//! a "64-byte frame" includes the 4-byte FCS the NIC would add, so the generator hands the
//! kernel `size - 4` bytes (60 for 64). Addresses come from RFC 2544's benchmarking range
//! (198.18.0.0/15); the frames never leave the test namespaces.

/// Ethernet FCS length: counted in a frame size, not handed to the kernel.
pub const FCS: usize = 4;
/// Smallest frame size (with FCS).
pub const MIN_FRAME: usize = 64;
/// Largest untagged frame size (with FCS) of a 1500-byte MTU.
pub const MAX_FRAME: usize = 1518;
/// RFC 2544's frame sizes for Ethernet.
pub const RFC2544_SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 1280, 1518];
/// Magic of a measured frame.
pub const MAGIC: u16 = 0x564c;
/// Magic of a learning frame (receivers ignore it).
pub const MAGIC_LEARN: u16 = 0x564d;
/// Offset of the magic.
pub const OFF_MAGIC: usize = 42;
/// Offset of the sequence number.
pub const OFF_SEQ: usize = 44;
/// Offset of the timestamp.
pub const OFF_TS: usize = 52;
/// Bytes a test frame needs at least (without FCS).
pub const TAG_END: usize = 60;

/// A MAC address as 6 bytes.
pub type Mac = [u8; 6];
/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// The `host`-th emulated host behind test port `port`: 02:4c:PP:HH:HH:HH (locally
/// administered unicast; the port index is readable from the fourth byte).
pub fn host_mac(port: usize, host: u32) -> Mac {
    let h = host.to_be_bytes();
    [0x02, 0x4c, port as u8, h[1], h[2], h[3]]
}

/// The test port a host MAC belongs to, if it is one of [`host_mac`]'s.
pub fn port_of_mac(mac: &[u8]) -> Option<usize> {
    (mac.len() >= 6 && mac[0] == 0x02 && mac[1] == 0x4c).then(|| mac[2] as usize)
}

/// What a sender puts in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Bytes handed to the kernel (frame size minus FCS), at least [`TAG_END`].
    pub len: usize,
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// Sender port index (IPv4 identification).
    pub sender: u16,
    /// Flow number: UDP ports 1024 + flow, IPv4 host bytes.
    pub flow: u16,
    /// [`MAGIC`] or [`MAGIC_LEARN`].
    pub magic: u16,
}

/// Kernel length of a frame of `size` bytes (with FCS), clamped to what a test frame needs.
pub fn wire_len(size: usize) -> usize {
    size.saturating_sub(FCS).max(TAG_END)
}

/// Writes a test frame into `buf` (resized to `spec.len`). Sequence and timestamp are zero;
/// [`stamp`] sets them just before sending.
pub fn build(buf: &mut Vec<u8>, spec: &FrameSpec) {
    let len = spec.len.max(TAG_END);
    buf.clear();
    buf.resize(len, 0);
    buf[0..6].copy_from_slice(&spec.dst);
    buf[6..12].copy_from_slice(&spec.src);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut buf[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&spec.sender.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    let f = spec.flow.to_be_bytes();
    ip[12..16].copy_from_slice(&[198, 18, spec.sender as u8, f[1]]);
    ip[16..20].copy_from_slice(&[198, 19, f[0], f[1]]);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let port = 1024u16.wrapping_add(spec.flow);
    buf[34..36].copy_from_slice(&port.to_be_bytes());
    buf[36..38].copy_from_slice(&port.to_be_bytes());
    buf[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    buf[OFF_MAGIC..OFF_MAGIC + 2].copy_from_slice(&spec.magic.to_be_bytes());
}

/// Sets the sequence number and send timestamp of a built frame.
#[inline]
pub fn stamp(frame: &mut [u8], seq: u64, ts_ns: u64) {
    frame[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_ne_bytes());
    frame[OFF_TS..OFF_TS + 8].copy_from_slice(&ts_ns.to_ne_bytes());
}

/// A measured frame as a receiver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Sender port index.
    pub sender: u16,
    /// Sequence number.
    pub seq: u64,
    /// Send timestamp (ns).
    pub ts_ns: u64,
    /// Whether the destination was broadcast.
    pub broadcast: bool,
    /// The test port the destination MAC belongs to (None for broadcast or foreign MACs).
    pub dst_port: Option<usize>,
}

/// Recognises a measured frame; anything else (learning frames, the namespaces' own
/// traffic) is `None`.
#[inline]
pub fn parse(frame: &[u8]) -> Option<Tag> {
    if frame.len() < TAG_END
        || frame[12..14] != [0x08, 0x00]
        || frame[OFF_MAGIC..OFF_MAGIC + 2] != MAGIC.to_be_bytes()
    {
        return None;
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    Some(Tag {
        sender: u16::from_be_bytes([frame[18], frame[19]]),
        seq: u64_at(OFF_SEQ),
        ts_ns: u64_at(OFF_TS),
        broadcast: frame[0..6] == BROADCAST,
        dst_port: port_of_mac(&frame[0..6]),
    })
}

/// The IPv4 header checksum (RFC 791) of a 20-byte header whose checksum field is zero.
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in hdr.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Kinds of errored frames for RFC 2889's errored-frames filtering test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Errored {
    /// 14 bytes whose EtherType announces an 802.1Q tag that is not there (shorter than the
    /// tagged header: a runt to a switch). The kernel refuses to send anything below 14
    /// bytes, and a receiving Linux interface drops this one in its VLAN untagging before any
    /// packet socket (so before any switch) sees it.
    Runt,
    /// A multicast source address.
    MulticastSource,
    /// An all-zero source address.
    ZeroSource,
    /// Larger than the receiving link's MTU allows.
    Oversize,
}

impl Errored {
    /// All kinds.
    pub const ALL: [Errored; 4] = [
        Errored::Runt,
        Errored::MulticastSource,
        Errored::ZeroSource,
        Errored::Oversize,
    ];
}

/// Builds an errored frame addressed to `dst` (an otherwise valid measured frame where the
/// error allows it, so a receiver would recognise it if the switch forwarded it).
pub fn build_errored(buf: &mut Vec<u8>, kind: Errored, dst: Mac, src: Mac, sender: u16) {
    let mut spec = FrameSpec {
        len: TAG_END,
        dst,
        src,
        sender,
        flow: 0,
        magic: MAGIC,
    };
    match kind {
        Errored::Runt => {
            buf.clear();
            buf.extend_from_slice(&dst);
            buf.extend_from_slice(&src);
            buf.extend_from_slice(&0x8100u16.to_be_bytes());
        }
        Errored::MulticastSource => {
            spec.src[0] |= 0x01;
            build(buf, &spec);
        }
        Errored::ZeroSource => {
            spec.src = [0; 6];
            build(buf, &spec);
        }
        Errored::Oversize => {
            spec.len = MAX_FRAME - FCS + 100;
            build(buf, &spec);
        }
    }
}

/// Whether a received frame is one of [`build_errored`]'s (a switch should never deliver it).
pub fn is_errored(frame: &[u8]) -> bool {
    (frame.len() >= 14 && frame.len() < 18 && frame[12..14] == [0x81, 0x00])
        || (frame.len() >= 12 && (frame[6] & 1 == 1 || frame[6..12] == [0; 6]))
        || frame.len() > MAX_FRAME - FCS + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn spec(len: usize) -> FrameSpec {
        FrameSpec {
            len,
            dst: host_mac(1, 7),
            src: host_mac(0, 3),
            sender: 0,
            flow: 300,
            magic: MAGIC,
        }
    }

    #[test]
    fn built_frames_parse_with_etherparse_and_back() {
        for size in RFC2544_SIZES {
            let mut b = Vec::new();
            build(&mut b, &spec(wire_len(size)));
            assert_eq!(b.len(), size - 4);
            stamp(&mut b, 42, 123_456_789);
            let p = SlicedPacket::from_ethernet(&b).expect("valid frame");
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("not ipv4")
            };
            assert_eq!(ip.header().total_len() as usize, size - 4 - 14);
            assert_eq!(ip.header().header_checksum(), {
                let mut h = ip.header().to_header();
                h.header_checksum = 0;
                h.calc_header_checksum()
            });
            let Some(TransportSlice::Udp(u)) = p.transport else {
                panic!("not udp")
            };
            assert_eq!(u.source_port(), 1324);
            let t = parse(&b).expect("tag");
            assert_eq!(t.seq, 42);
            assert_eq!(t.ts_ns, 123_456_789);
            assert_eq!(t.sender, 0);
            assert_eq!(t.dst_port, Some(1));
            assert!(!t.broadcast);
        }
    }

    #[test]
    fn learning_and_foreign_frames_are_not_counted() {
        let mut b = Vec::new();
        let mut s = spec(60);
        s.magic = MAGIC_LEARN;
        build(&mut b, &s);
        assert_eq!(parse(&b), None);
        assert_eq!(parse(&b[..30]), None);
        assert_eq!(parse(&[0u8; 100]), None);
    }

    #[test]
    fn host_macs_are_unicast_and_name_their_port() {
        let m = host_mac(5, 0x12_3456);
        assert_eq!(m, [0x02, 0x4c, 5, 0x12, 0x34, 0x56]);
        assert_eq!(m[0] & 1, 0);
        assert_eq!(port_of_mac(&m), Some(5));
        assert_eq!(port_of_mac(&BROADCAST), None);
    }

    #[test]
    fn errored_frames_are_recognised() {
        let mut b = Vec::new();
        for k in Errored::ALL {
            build_errored(&mut b, k, host_mac(1, 0), host_mac(0, 0), 0);
            assert!(is_errored(&b), "{k:?}");
        }
        build(&mut b, &spec(60));
        assert!(!is_errored(&b));
    }
}
