//! `vswitch trace`: what the switch decided for the next frames that match a filter, stage by
//! stage — ingress port and network, the source's learning, the destination's lookup, the
//! decision (unicast, flood, gateway or a drop and its reason) and the output ports. The answer
//! to "why can't A reach B".
//!
//! **How it is measured, not guessed.** A traced frame goes through the same
//! [`crate::pipeline::Pipeline::process`] and the same sending code as every other frame, alone
//! in a batch of one: the worker reads the MAC table before and after (learning), the counters
//! before and after (decision, drop reason) and the batch's dispatch (outputs). Nothing here
//! re-implements a decision, so the trace cannot disagree with the switch. While a trace is
//! armed, batches from the traced ports are split around the matching frames (order kept);
//! when none is armed the worker pays one branch per batch.
//!
//! Frames are parsed here through bounds-checked reads only (`get`): they are untrusted.

use crate::wire::{MacAddr, PortId};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Which frames to trace. Every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFilter {
    /// Ingress ports (empty: any).
    #[serde(default)]
    pub ports: Vec<PortId>,
    /// Source or destination MAC.
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
    /// IPv4 source or destination (ARP: sender or target address).
    #[serde(default)]
    pub host: Option<Ipv4Addr>,
    /// `arp`, `icmp`, `tcp`, `udp` or `ipv4`.
    #[serde(default)]
    pub proto: Option<String>,
    /// TCP or UDP source or destination port.
    #[serde(default)]
    pub l4_port: Option<u16>,
}

/// The protocols a filter may name.
pub const PROTOS: &[&str] = &["arp", "ipv4", "icmp", "tcp", "udp"];

/// What a frame's headers say, as far as tracing needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlan: Option<u16>,
    pub ethertype: u16,
    /// `arp`, `icmp`, `tcp`, `udp`, `ipv4` (another IP protocol) or empty.
    pub proto: &'static str,
    pub ip_src: Option<Ipv4Addr>,
    pub ip_dst: Option<Ipv4Addr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ARP opcode or ICMP type.
    pub op: Option<u16>,
}

fn u16_at(f: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(i)?, *f.get(i + 1)?]))
}

fn ip_at(f: &[u8], i: usize) -> Option<Ipv4Addr> {
    let b = f.get(i..i + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Parses what tracing shows of a frame; `None` for a frame shorter than an Ethernet header.
pub fn parse(f: &[u8]) -> Option<Headers> {
    let mut h = Headers {
        dst: f.get(0..6)?.try_into().ok()?,
        src: f.get(6..12)?.try_into().ok()?,
        ethertype: u16_at(f, 12)?,
        ..Headers::default()
    };
    let mut l3 = 14;
    if h.ethertype == 0x8100 {
        h.vlan = Some(u16_at(f, 14).unwrap_or(0) & 0x0fff);
        h.ethertype = u16_at(f, 16).unwrap_or(0);
        l3 = 18;
    }
    match h.ethertype {
        0x0806 => {
            h.proto = "arp";
            h.op = u16_at(f, l3 + 6);
            h.ip_src = ip_at(f, l3 + 14);
            h.ip_dst = ip_at(f, l3 + 24);
        }
        0x0800 => {
            let Some(&vihl) = f.get(l3) else {
                return Some(h);
            };
            h.ip_src = ip_at(f, l3 + 12);
            h.ip_dst = ip_at(f, l3 + 16);
            let l4 = l3 + usize::from(vihl & 0x0f) * 4;
            let proto = f.get(l3 + 9).copied().unwrap_or(0);
            h.proto = match proto {
                1 => "icmp",
                6 => "tcp",
                17 => "udp",
                _ => "ipv4",
            };
            match proto {
                1 => h.op = f.get(l4).map(|&t| u16::from(t)),
                6 | 17 => {
                    h.sport = u16_at(f, l4);
                    h.dport = u16_at(f, l4 + 2);
                }
                _ => {}
            }
        }
        _ => {}
    }
    Some(h)
}

impl TraceFilter {
    /// Whether a frame that arrived on `port` matches.
    pub fn matches(&self, port: PortId, frame: &[u8]) -> bool {
        if !self.ports.is_empty() && !self.ports.contains(&port) {
            return false;
        }
        if self.mac.is_none()
            && self.host.is_none()
            && self.proto.is_none()
            && self.l4_port.is_none()
        {
            return true;
        }
        let Some(h) = parse(frame) else {
            return false;
        };
        if let Some(m) = self.mac {
            if m != h.src && m != h.dst {
                return false;
            }
        }
        if let Some(ip) = self.host {
            if h.ip_src != Some(ip) && h.ip_dst != Some(ip) {
                return false;
            }
        }
        if let Some(p) = self.proto.as_deref() {
            let ok = match p {
                "ipv4" => h.ethertype == 0x0800,
                p => h.proto == p,
            };
            if !ok {
                return false;
            }
        }
        if let Some(p) = self.l4_port {
            if h.sport != Some(p) && h.dport != Some(p) {
                return false;
            }
        }
        true
    }
}

/// One line about a frame: `10.0.0.2 > 10.0.0.3 ICMP echo request`, `ARP who-has 10.0.0.1
/// tell 10.0.0.2`, `EtherType 0x88b5`.
pub fn summary(h: &Headers) -> String {
    let ip = |a: Option<Ipv4Addr>| a.map_or("?".to_string(), |a| a.to_string());
    let port = |p: Option<u16>| p.map_or(String::new(), |p| format!(":{p}"));
    match h.proto {
        "arp" => match h.op {
            Some(1) => format!("ARP who-has {} tell {}", ip(h.ip_dst), ip(h.ip_src)),
            Some(2) => format!("ARP reply {} is-at {}", ip(h.ip_src), MacAddr(h.src)),
            op => format!("ARP op {}", op.unwrap_or(0)),
        },
        "icmp" => {
            let what = match h.op {
                Some(8) => "echo request".to_string(),
                Some(0) => "echo reply".to_string(),
                Some(3) => "destination unreachable".to_string(),
                Some(t) => format!("type {t}"),
                None => "truncated".to_string(),
            };
            format!("{} > {} ICMP {what}", ip(h.ip_src), ip(h.ip_dst))
        }
        "tcp" | "udp" => format!(
            "{}{} > {}{} {}",
            ip(h.ip_src),
            port(h.sport),
            ip(h.ip_dst),
            port(h.dport),
            h.proto.to_uppercase()
        ),
        "ipv4" => format!("{} > {} IPv4", ip(h.ip_src), ip(h.ip_dst)),
        _ if h.ethertype == 0x86dd => "IPv6".to_string(),
        _ => format!("EtherType {:#06x}", h.ethertype),
    }
}

/// What the switch did with one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Position in this trace, from 1.
    pub seq: u32,
    /// Milliseconds since the worker started.
    pub time_ms: u64,
    /// The port it arrived on (for a tunnel: the VTEP it was decapsulated for), and the names
    /// the daemon gives it.
    pub ingress: u16,
    #[serde(default)]
    pub ingress_name: String,
    /// The network it was classified into (none when classification dropped it).
    pub network: Option<u16>,
    #[serde(default)]
    pub network_name: String,
    /// Its 802.1Q tag on arrival.
    pub vlan: Option<u16>,
    pub src: String,
    pub dst: String,
    pub len: usize,
    /// One line about its headers.
    pub summary: String,
    /// Learning of the source: `new`, `refreshed`, `moved from N`, `not learned` (a limit or a
    /// static entry), or `-` (dropped before learning, or not learnable).
    pub learn: String,
    /// Lookup of the destination: `hit N`, `miss`, `broadcast`, `multicast` or `-`.
    pub lookup: String,
    /// `unicast`, `flood`, `gateway`, `flood+gateway` or `drop`.
    pub decision: String,
    /// Why it was dropped, as `vswitch stats` names it.
    pub drop_reason: Option<String>,
    /// Ports it was sent to (tunnel ports for remote VTEPs), and their names.
    pub outputs: Vec<u16>,
    #[serde(default)]
    pub output_names: Vec<String>,
    /// Frames the gateway sent back (ARP and ICMP replies, DNS answers) or on.
    pub gateway_replies: usize,
}

impl TraceRecord {
    /// The record as lines of text.
    pub fn text(&self) -> String {
        let name = |n: &str, id: u16| {
            if n.is_empty() {
                format!("port {id}")
            } else {
                format!("{n} (port {id})")
            }
        };
        let mut s = format!(
            "#{} {} ms  {}  {} > {}  {} bytes\n",
            self.seq, self.time_ms, self.summary, self.src, self.dst, self.len
        );
        let net = match self.network {
            Some(id) if !self.network_name.is_empty() => format!("{} (id {id})", self.network_name),
            Some(id) => format!("id {id}"),
            None => "-".into(),
        };
        let vlan = self
            .vlan
            .map_or("untagged".to_string(), |v| format!("vlan {v}"));
        s += &format!(
            "  ingress  {}, network {net}, {vlan}\n",
            name(&self.ingress_name, self.ingress)
        );
        s += &format!("  learn    {}\n", self.learn);
        s += &format!("  lookup   {}\n", self.lookup);
        match &self.drop_reason {
            Some(r) => s += &format!("  decision drop: {r}\n"),
            None => {
                let outs: Vec<String> = self
                    .outputs
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| name(self.output_names.get(i).map_or("", |s| s), p))
                    .collect();
                s += &format!("  decision {}", self.decision);
                if !outs.is_empty() {
                    s += &format!(" -> {}", outs.join(", "));
                }
                if self.gateway_replies > 0 {
                    s += &format!(" (gateway answered with {} frame(s))", self.gateway_replies);
                }
                s += "\n";
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request(src: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    #[test]
    fn filters_match_what_they_name() {
        let a = arp_request([2, 0, 0, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 1]);
        let u = udp([10, 0, 0, 2], [10, 0, 0, 3], 5000, 53);
        let any = TraceFilter::default();
        assert!(any.matches(PortId(1), &a) && any.matches(PortId(1), &[]));
        let on2 = TraceFilter {
            ports: vec![PortId(2)],
            ..Default::default()
        };
        assert!(!on2.matches(PortId(1), &a) && on2.matches(PortId(2), &a));
        let arp = TraceFilter {
            proto: Some("arp".into()),
            ..Default::default()
        };
        assert!(arp.matches(PortId(1), &a) && !arp.matches(PortId(1), &u));
        let host = TraceFilter {
            host: Some(Ipv4Addr::new(10, 0, 0, 3)),
            ..Default::default()
        };
        assert!(host.matches(PortId(1), &u) && !host.matches(PortId(1), &a));
        let dns = TraceFilter {
            proto: Some("udp".into()),
            l4_port: Some(53),
            ..Default::default()
        };
        assert!(dns.matches(PortId(1), &u));
        let other = TraceFilter {
            l4_port: Some(54),
            ..Default::default()
        };
        assert!(!other.matches(PortId(1), &u));
        let mac = TraceFilter {
            mac: Some([2, 0, 0, 0, 0, 1]),
            ..Default::default()
        };
        assert!(mac.matches(PortId(1), &a) && mac.matches(PortId(1), &u));
        // A filter that needs headers never matches a runt.
        assert!(!mac.matches(PortId(1), &[1, 2, 3]));
        assert_eq!(
            summary(&parse(&a).unwrap()),
            "ARP who-has 10.0.0.1 tell 10.0.0.2"
        );
        assert_eq!(
            summary(&parse(&u).unwrap()),
            "10.0.0.2:5000 > 10.0.0.3:53 UDP"
        );
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics() {
        use proptest::prelude::*;
        proptest!(|(f in proptest::collection::vec(any::<u8>(), 0..80))| {
            if let Some(h) = parse(&f) {
                let _ = summary(&h);
            }
            let all = TraceFilter {
                mac: Some([1; 6]),
                host: Some(Ipv4Addr::new(1, 2, 3, 4)),
                proto: Some("tcp".into()),
                l4_port: Some(80),
                ..Default::default()
            };
            let _ = all.matches(PortId(0), &f);
        });
    }
}
