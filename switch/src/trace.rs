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
//! Frames are read by `vswitch capture`'s header reader ([`crate::capture::headers`]) and
//! filtered by its filter ([`crate::capture::Filter`]): one filter language for both commands.
//! Both read through bounds-checked reads only (`get`): frames are untrusted.

use crate::capture::{headers, Filter, Headers};
use crate::wire::{MacAddr, PortId};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Which frames to trace: those entering by one of `ports` (empty: any) that `filter` (the
/// filter language of `vswitch capture`, [`Filter`]) admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Ingress ports (empty: any).
    pub ports: Vec<PortId>,
    pub filter: Filter,
}

/// The protocols `vswitch trace --proto` takes (each a word of the filter language).
pub const PROTOS: &[&str] = &["arp", "ipv4", "icmp", "tcp", "udp"];

/// The filter words of `vswitch trace`'s options (`--mac M --proto udp` is `ether M and udp`),
/// joined by `and` with the words given as they are (`words`).
pub fn filter_words(
    mac: Option<&str>,
    host: Option<Ipv4Addr>,
    proto: Option<&str>,
    l4_port: Option<u16>,
    words: &[String],
) -> Result<Vec<String>, String> {
    let mut terms: Vec<String> = Vec::new();
    if let Some(m) = mac {
        terms.push(format!("ether {m}"));
    }
    if let Some(h) = host {
        terms.push(format!("host {h}"));
    }
    if let Some(p) = proto {
        if !PROTOS.contains(&p) {
            return Err(format!("--proto {p}: one of {}", PROTOS.join(", ")));
        }
        terms.push(p.to_string());
    }
    if let Some(p) = l4_port {
        terms.push(format!("port {p}"));
    }
    let given = words.join(" ");
    if !given.trim().is_empty() {
        terms.push(given);
    }
    Ok(terms
        .join(" and ")
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

impl TraceFilter {
    /// Whether a frame that arrived on `port` matches.
    pub fn matches(&self, port: PortId, frame: &[u8]) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port)) && self.filter.matches(frame)
    }
}

/// What a summary shows that the filter's [`Headers`] do not hold: the ARP opcode or the ICMP
/// type.
fn op(f: &[u8], h: &Headers) -> Option<u16> {
    match (h.ethertype, h.proto) {
        (0x0806, _) => f
            .get(h.l3 + 6..h.l3 + 8)
            .map(|b| u16::from_be_bytes([b[0], b[1]])),
        (0x0800, Some(1)) => f.get(h.l4?).map(|&t| u16::from(t)),
        _ => None,
    }
}

/// One line about a frame: `10.0.0.2 > 10.0.0.3 ICMP echo request`, `ARP who-has 10.0.0.1
/// tell 10.0.0.2`, `10.0.0.2:5000 > 10.0.0.3:53 UDP`, `EtherType 0x88b5`, `runt`.
pub fn summary(f: &[u8]) -> String {
    let Some(h) = headers(f) else {
        return "runt".into();
    };
    let (src, dst) = match h.ip {
        Some((s, d)) => (s.to_string(), d.to_string()),
        None => ("?".to_string(), "?".to_string()),
    };
    match (h.ethertype, h.proto) {
        (0x0806, _) => match op(f, &h) {
            Some(1) => format!("ARP who-has {dst} tell {src}"),
            Some(2) => format!("ARP reply {src} is-at {}", MacAddr(h.src)),
            op => format!("ARP op {}", op.unwrap_or(0)),
        },
        (0x0800, Some(1)) => {
            let what = match op(f, &h) {
                Some(8) => "echo request".to_string(),
                Some(0) => "echo reply".to_string(),
                Some(3) => "destination unreachable".to_string(),
                Some(t) => format!("type {t}"),
                None => "truncated".to_string(),
            };
            format!("{src} > {dst} ICMP {what}")
        }
        (0x0800, Some(p @ (6 | 17))) => {
            let name = if p == 6 { "TCP" } else { "UDP" };
            match h.ports {
                Some((sp, dp)) => format!("{src}:{sp} > {dst}:{dp} {name}"),
                None => format!("{src} > {dst} {name}"),
            }
        }
        (0x0800, Some(p)) => format!("{src} > {dst} IPv4 proto {p}"),
        (0x0800, None) => "IPv4 (bad header)".to_string(),
        (0x86dd, _) => "IPv6".to_string(),
        (t, _) => format!("EtherType {t:#06x}"),
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

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn filter(ports: &[u16], words: &[String]) -> TraceFilter {
        TraceFilter {
            ports: ports.iter().map(|&p| PortId(p)).collect(),
            filter: Filter::parse(words).unwrap(),
        }
    }

    /// The options become the capture filter's words, and so filter as capture does.
    #[test]
    fn options_become_filter_words_that_match_what_they_name() {
        let a = arp_request([2, 0, 0, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 1]);
        let u = udp([10, 0, 0, 2], [10, 0, 0, 3], 5000, 53);
        let any = filter(&[], &[]);
        assert!(any.matches(PortId(1), &a) && any.matches(PortId(1), &[]));
        let on2 = filter(&[2], &[]);
        assert!(!on2.matches(PortId(1), &a) && on2.matches(PortId(2), &a));
        let opt = |mac, host, proto, port| filter_words(mac, host, proto, port, &[]).unwrap();
        let arp = filter(&[], &opt(None, None, Some("arp"), None));
        assert!(arp.matches(PortId(1), &a) && !arp.matches(PortId(1), &u));
        let ipv4 = filter(&[], &opt(None, None, Some("ipv4"), None));
        assert!(ipv4.matches(PortId(1), &u) && !ipv4.matches(PortId(1), &a));
        let host = filter(
            &[],
            &opt(None, Some(Ipv4Addr::new(10, 0, 0, 3)), None, None),
        );
        assert!(host.matches(PortId(1), &u) && !host.matches(PortId(1), &a));
        let dns = opt(None, None, Some("udp"), Some(53));
        assert_eq!(dns, words("udp and port 53"));
        assert!(filter(&[], &dns).matches(PortId(1), &u));
        assert!(!filter(&[], &opt(None, None, None, Some(54))).matches(PortId(1), &u));
        let m = "02:00:00:00:00:01";
        let mac = filter(&[], &opt(Some(m), None, None, None));
        assert!(mac.matches(PortId(1), &a) && mac.matches(PortId(1), &u));
        // A filter that needs headers never matches a runt.
        assert!(!mac.matches(PortId(1), &[1, 2, 3]));
        // Options and words together: every term must match.
        let both = filter_words(Some(m), None, None, None, &words("udp and port 53")).unwrap();
        assert_eq!(both, words(&format!("ether {m} and udp and port 53")));
        assert!(filter(&[], &both).matches(PortId(1), &u));
        assert!(!filter(&[], &both).matches(PortId(1), &a));
        let e = filter_words(None, None, Some("sctp"), None, &[]).unwrap_err();
        assert!(e.contains("one of arp"), "{e}");
    }

    #[test]
    fn summaries_say_what_the_frame_is() {
        let a = arp_request([2, 0, 0, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 1]);
        assert_eq!(summary(&a), "ARP who-has 10.0.0.1 tell 10.0.0.2");
        let u = udp([10, 0, 0, 2], [10, 0, 0, 3], 5000, 53);
        assert_eq!(summary(&u), "10.0.0.2:5000 > 10.0.0.3:53 UDP");
        let mut ping = u.clone();
        ping[23] = 1; // ICMP
        ping[34] = 8; // echo request
        assert_eq!(summary(&ping), "10.0.0.2 > 10.0.0.3 ICMP echo request");
        // Behind an 802.1Q tag, the same.
        let mut tagged = ping[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        tagged.extend_from_slice(&ping[12..]);
        assert_eq!(summary(&tagged), "10.0.0.2 > 10.0.0.3 ICMP echo request");
        assert_eq!(headers(&tagged).unwrap().vlan, Some(7));
        assert_eq!(summary(&ping[..34]), "10.0.0.2 > 10.0.0.3 ICMP truncated");
        assert_eq!(summary(&[1, 2, 3]), "runt");
        let mut other = u[..14].to_vec();
        other[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert_eq!(summary(&other), "EtherType 0x88b5");
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics() {
        use proptest::prelude::*;
        let all = filter(
            &[],
            &words("ether 01:01:01:01:01:01 and host 1.2.3.4 and tcp and port 80"),
        );
        proptest!(|(f in proptest::collection::vec(any::<u8>(), 0..80))| {
            let _ = summary(&f);
            let _ = all.matches(PortId(0), &f);
        });
    }
}
