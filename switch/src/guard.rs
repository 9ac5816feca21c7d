//! Per-port admission: port security (what a container's port may send) and storm control
//! (how fast it may flood). Pure: bytes and time in, a verdict out; the pipeline calls it from
//! its hot loop, so each check is a few compares on header bytes already in cache.
//!
//! # Port security
//!
//! A secured port carries one endpoint: one MAC address and one IPv4 lease. A frame from it is
//! admitted only when
//!
//! * its Ethernet source is the endpoint's MAC ([`DropReason::SpoofedMac`] otherwise);
//! * ARP: the sender hardware address is that MAC ([`DropReason::SpoofedMac`]) and the sender
//!   protocol address is the lease or 0.0.0.0 (an ARP probe) ([`DropReason::SpoofedIp`]);
//! * IPv4: the source address is the lease or 0.0.0.0 (DHCP-style) ([`DropReason::SpoofedIp`]);
//! * IPv6: the source address is `::` (duplicate address detection, MLD) or the link-local
//!   address the kernel derives from the MAC (fe80::/64 with the modified EUI-64 interface id,
//!   Linux's default `addr_gen_mode`); a neighbour advertisement may only claim that address as
//!   its target, and a duplicate-address probe (a solicitation from `::`) may only ask for it
//!   ([`DropReason::SpoofedIp`]). vswitch hands out no IPv6 addresses, so there is no IPv6
//!   lease to allow: a container that needs other IPv6 addresses (stable-privacy link-locals,
//!   global ones) is on a network created with `-o port_security=off`;
//! * a stacked VLAN tag (802.1Q after a priority tag, or an 802.1ad tag) is
//!   [`DropReason::Filtered`]: a receiving Linux stack would strip it and read the IP header
//!   behind it, which this check would not have seen.
//!
//! Other EtherTypes pass once the source MAC is right. A frame too short to hold the field
//! checked is [`DropReason::Runt`].
//!
//! # Storm control
//!
//! A token bucket per port bounds the frames it floods (broadcast, multicast, unknown unicast)
//! to `pps` per second with bursts of `burst`. Tokens are kept in thousandths of a frame, so the
//! refill (`elapsed ms * pps`) loses nothing to rounding; it is computed once per batch from the
//! time the worker passes in, and each flooded frame costs one compare and one subtraction.

use crate::pipeline::DropReason;
use crate::wire::MacAddr;
use std::net::{Ipv4Addr, Ipv6Addr};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_8021Q: u16 = 0x8100;
const ETHERTYPE_8021AD: u16 = 0x88a8;
const IPV6_HDR: usize = 40;
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_DEST_OPTS: u8 = 60;
const NH_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Extension headers walked before an ICMPv6 header; a longer chain is not something a
/// container sends, and is dropped rather than left unchecked.
const MAX_EXT_HEADERS: usize = 4;
/// A frame's cost in the flood bucket (tokens are thousandths of a frame).
pub const TOKEN: u64 = 1000;

/// The one source MAC and IPv4 address a secured port may use (its endpoint's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSecurity {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
}

/// Storm control: flooded frames a port may send per second (`pps` >= 1), and at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimit {
    pub pps: u32,
    pub burst: u32,
}

/// What the switch enforces on frames from one port. The default enforces nothing (uplinks,
/// tunnels, the host's own port, benches); the daemon gives each container port its network's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    pub security: Option<PortSecurity>,
    pub flood: Option<FloodLimit>,
}

/// The link-local address Linux gives an interface with `mac` (modified EUI-64, RFC 4291).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Marks a port without port security in [`Guard::mac`] (no frame's 48-bit address).
pub(crate) const OPEN_MAC: u64 = u64::MAX;

/// The per-port admission state the pipeline keeps in a flat array: one cache line per port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Guard {
    /// Allowed source MAC (low 48 bits), or [`OPEN_MAC`].
    pub mac: u64,
    /// Allowed IPv4 source.
    pub ipv4: u32,
    /// Allowed IPv6 source besides `::`: the MAC's link-local address.
    pub ll6: u128,
    /// Flood rate in frames per second; 0: unlimited.
    pub rate: u64,
    /// Bucket size in thousandths of a frame.
    pub cap: u64,
    /// Tokens left, in thousandths of a frame.
    pub tokens: u64,
    /// Time of the last refill, in milliseconds.
    pub last_ms: u64,
}

impl Guard {
    /// Enforces nothing.
    pub const OPEN: Guard = Guard {
        mac: OPEN_MAC,
        ipv4: 0,
        ll6: 0,
        rate: 0,
        cap: 0,
        tokens: 0,
        last_ms: 0,
    };

    /// The state for `policy`, with a full bucket, at time `now_ms`.
    pub fn new(policy: &PortPolicy, now_ms: u64) -> Guard {
        let mut g = Guard::OPEN;
        if let Some(s) = policy.security {
            g.mac = s.mac.to_u64();
            g.ipv4 = u32::from(s.ipv4);
            g.ll6 = u128::from(link_local(s.mac));
        }
        if let Some(f) = policy.flood.filter(|f| f.pps > 0) {
            g.rate = u64::from(f.pps);
            g.cap = u64::from(f.burst.max(1)) * TOKEN;
            g.tokens = g.cap;
            g.last_ms = now_ms;
        }
        g
    }

    /// True when port security is on.
    #[inline(always)]
    pub fn secured(&self) -> bool {
        self.mac != OPEN_MAC
    }

    /// True when flooding is rate limited.
    #[inline(always)]
    pub fn limited(&self) -> bool {
        self.rate != 0
    }

    /// Adds the tokens earned since the last refill (the clock never runs backwards here).
    #[inline]
    pub fn refill(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms);
        if dt > 0 {
            self.last_ms = now_ms;
            self.tokens = self
                .tokens
                .saturating_add(dt.saturating_mul(self.rate))
                .min(self.cap);
        }
    }

    /// Port security's verdict on frame `f` whose Ethernet source is `src` and whose L3 header
    /// starts at `l3` (14, or 18 behind a priority tag; the caller checked `f.len() >= l3`).
    #[inline(always)]
    pub fn admit(&self, f: &[u8], src: u64, l3: usize) -> Result<(), DropReason> {
        if src != self.mac {
            return Err(DropReason::SpoofedMac);
        }
        let ethertype = match f.get(l3.wrapping_sub(2)..l3) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => return Err(DropReason::Runt),
        };
        match ethertype {
            ETHERTYPE_IPV4 => {
                let ip = be32(f, l3 + 12).ok_or(DropReason::Runt)?;
                self.ipv4_ok(ip)
            }
            ETHERTYPE_ARP => {
                let sha = f.get(l3 + 8..l3 + 14).ok_or(DropReason::Runt)?;
                let spa = be32(f, l3 + 14).ok_or(DropReason::Runt)?;
                if MacAddr::from_slice(sha).to_u64() != self.mac {
                    return Err(DropReason::SpoofedMac);
                }
                self.ipv4_ok(spa)
            }
            ETHERTYPE_IPV6 => self.admit_ipv6(f, l3),
            ETHERTYPE_8021Q | ETHERTYPE_8021AD => Err(DropReason::Filtered),
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn ipv4_ok(&self, ip: u32) -> Result<(), DropReason> {
        if ip == self.ipv4 || ip == 0 {
            Ok(())
        } else {
            Err(DropReason::SpoofedIp)
        }
    }

    /// The IPv6 rules (see the module documentation).
    #[inline(never)]
    fn admit_ipv6(&self, f: &[u8], l3: usize) -> Result<(), DropReason> {
        let src = be128(f, l3 + 8).ok_or(DropReason::Runt)?;
        if src != 0 && src != self.ll6 {
            return Err(DropReason::SpoofedIp);
        }
        let mut nh = *f.get(l3 + 6).ok_or(DropReason::Runt)?;
        let mut off = l3 + IPV6_HDR;
        for _ in 0..=MAX_EXT_HEADERS {
            match nh {
                NH_ICMPV6 => {
                    let kind = *f.get(off).ok_or(DropReason::Runt)?;
                    let claims =
                        kind == ND_NEIGHBOR_ADVERT || (kind == ND_NEIGHBOR_SOLICIT && src == 0);
                    if claims && be128(f, off + 8).ok_or(DropReason::Runt)? != self.ll6 {
                        return Err(DropReason::SpoofedIp);
                    }
                    return Ok(());
                }
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    let h = f.get(off..off + 2).ok_or(DropReason::Runt)?;
                    nh = h[0];
                    off += (usize::from(h[1]) + 1) * 8;
                }
                // Upper layers, and fragments (receivers drop fragmented neighbour discovery,
                // RFC 6980).
                _ => return Ok(()),
            }
        }
        Err(DropReason::Filtered)
    }
}

#[inline(always)]
fn be32(f: &[u8], at: usize) -> Option<u32> {
    f.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
}

#[inline(always)]
fn be128(f: &[u8], at: usize) -> Option<u128> {
    f.get(at..at + 16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .map(u128::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
    const OTHER: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 3]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn guard() -> Guard {
        Guard::new(
            &PortPolicy {
                security: Some(PortSecurity { mac: MAC, ipv4: IP }),
                flood: None,
            },
            0,
        )
    }

    fn eth(src: MacAddr, ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn admit(g: &Guard, f: &[u8]) -> Result<(), DropReason> {
        let src = MacAddr::from_slice(&f[6..12]).to_u64();
        let l3 = if f[12..14] == [0x81, 0x00] { 18 } else { 14 };
        g.admit(f, src, l3)
    }

    fn ipv4(src: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&[10, 0, 0, 9]);
        h
    }

    fn arp(op: u16, sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&sha.0);
        a.extend_from_slice(&spa.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tpa.octets());
        a
    }

    /// An IPv6 header from `src` with next header `nh`, followed by `rest`.
    fn ipv6(src: Ipv6Addr, nh: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        h.extend_from_slice(&[nh, 255]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        h.extend_from_slice(rest);
        h
    }

    /// A neighbour solicitation (135) or advertisement (136) for `target`.
    fn nd(kind: u8, target: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0x20, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        // 02:42:0a:00:00:02 -> fe80::42:aff:fe00:2 (what `ip -6 addr` shows for it).
        assert_eq!(
            link_local(MAC),
            "fe80::42:aff:fe00:2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn open_and_default_policies_enforce_nothing() {
        let g = Guard::new(&PortPolicy::default(), 5);
        assert_eq!(g, Guard::OPEN);
        assert!(!g.secured() && !g.limited());
        let g = Guard::new(
            &PortPolicy {
                security: None,
                flood: Some(FloodLimit { pps: 0, burst: 9 }),
            },
            0,
        );
        assert!(!g.limited(), "pps 0 means unlimited");
    }

    #[test]
    fn source_mac_must_be_the_endpoints() {
        let g = guard();
        assert_eq!(admit(&g, &eth(MAC, 0x88b5, &[1, 2, 3])), Ok(()));
        assert_eq!(
            admit(&g, &eth(OTHER, 0x88b5, &[1, 2, 3])),
            Err(DropReason::SpoofedMac)
        );
        assert_eq!(
            admit(&g, &eth(OTHER, ETHERTYPE_IPV4, &ipv4(IP))),
            Err(DropReason::SpoofedMac)
        );
    }

    #[test]
    fn ipv4_source_is_the_lease_or_zero() {
        let g = guard();
        assert_eq!(admit(&g, &eth(MAC, ETHERTYPE_IPV4, &ipv4(IP))), Ok(()));
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_IPV4, &ipv4(Ipv4Addr::UNSPECIFIED))),
            Ok(())
        );
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_IPV4, &ipv4(OTHER_IP))),
            Err(DropReason::SpoofedIp)
        );
        // Too short to hold a source address.
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_IPV4, &ipv4(IP)[..15])),
            Err(DropReason::Runt)
        );
    }

    #[test]
    fn arp_sender_is_the_endpoint() {
        let g = guard();
        let ok = |op| eth(MAC, ETHERTYPE_ARP, &arp(op, MAC, IP, OTHER_IP));
        assert_eq!(admit(&g, &ok(1)), Ok(()));
        assert_eq!(admit(&g, &ok(2)), Ok(()));
        // ARP probe (sender 0.0.0.0) and gratuitous ARP for its own address.
        let probe = eth(MAC, ETHERTYPE_ARP, &arp(1, MAC, Ipv4Addr::UNSPECIFIED, IP));
        assert_eq!(admit(&g, &probe), Ok(()));
        let garp = eth(MAC, ETHERTYPE_ARP, &arp(2, MAC, IP, IP));
        assert_eq!(admit(&g, &garp), Ok(()));
        // Poisoning: a reply or gratuitous ARP claiming another's address.
        for op in [1, 2] {
            let claim = eth(MAC, ETHERTYPE_ARP, &arp(op, MAC, OTHER_IP, OTHER_IP));
            assert_eq!(admit(&g, &claim), Err(DropReason::SpoofedIp));
        }
        // Own address, but another's hardware address in the ARP body.
        let body = eth(MAC, ETHERTYPE_ARP, &arp(2, OTHER, IP, OTHER_IP));
        assert_eq!(admit(&g, &body), Err(DropReason::SpoofedMac));
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_ARP, &arp(2, MAC, IP, IP)[..17])),
            Err(DropReason::Runt)
        );
    }

    #[test]
    fn priority_tagged_frames_are_checked_behind_the_tag() {
        let g = guard();
        let tagged = |src: Ipv4Addr, inner: u16| {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&MAC.0);
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x00]);
            f.extend_from_slice(&inner.to_be_bytes());
            f.extend_from_slice(&ipv4(src));
            f
        };
        assert_eq!(admit(&g, &tagged(IP, ETHERTYPE_IPV4)), Ok(()));
        assert_eq!(
            admit(&g, &tagged(OTHER_IP, ETHERTYPE_IPV4)),
            Err(DropReason::SpoofedIp)
        );
        // A second tag (which Linux would strip, then read the IP header behind it).
        assert_eq!(
            admit(&g, &tagged(IP, ETHERTYPE_8021Q)),
            Err(DropReason::Filtered)
        );
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_8021AD, &[0, 0, 8, 0])),
            Err(DropReason::Filtered)
        );
    }

    #[test]
    fn ipv6_source_is_unspecified_or_the_macs_link_local() {
        let g = guard();
        let ll = link_local(MAC);
        let udp = [0u8; 8];
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_IPV6, &ipv6(ll, 17, &udp))),
            Ok(())
        );
        let mld = eth(MAC, ETHERTYPE_IPV6, &ipv6(Ipv6Addr::UNSPECIFIED, 17, &udp));
        assert_eq!(admit(&g, &mld), Ok(()));
        for src in [link_local(OTHER), "2001:db8::2".parse().unwrap()] {
            assert_eq!(
                admit(&g, &eth(MAC, ETHERTYPE_IPV6, &ipv6(src, 17, &udp))),
                Err(DropReason::SpoofedIp),
                "{src}"
            );
        }
        assert_eq!(
            admit(&g, &eth(MAC, ETHERTYPE_IPV6, &ipv6(ll, 17, &udp)[..20])),
            Err(DropReason::Runt)
        );
    }

    #[test]
    fn neighbour_discovery_claims_only_its_own_address() {
        let g = guard();
        let (ll, other) = (link_local(MAC), link_local(OTHER));
        let f = |src, msg: Vec<u8>| eth(MAC, ETHERTYPE_IPV6, &ipv6(src, NH_ICMPV6, &msg));
        // Advertising itself, soliciting others, probing its own address: fine.
        assert_eq!(admit(&g, &f(ll, nd(136, ll))), Ok(()));
        assert_eq!(admit(&g, &f(ll, nd(135, other))), Ok(()));
        assert_eq!(admit(&g, &f(Ipv6Addr::UNSPECIFIED, nd(135, ll))), Ok(()));
        // Advertising another's address (from its own or from ::), or probing it (DAD).
        assert_eq!(
            admit(&g, &f(ll, nd(136, other))),
            Err(DropReason::SpoofedIp)
        );
        let na = f(Ipv6Addr::UNSPECIFIED, nd(136, other));
        assert_eq!(admit(&g, &na), Err(DropReason::SpoofedIp));
        let dad = f(Ipv6Addr::UNSPECIFIED, nd(135, other));
        assert_eq!(admit(&g, &dad), Err(DropReason::SpoofedIp));
        // Behind a hop-by-hop header the advertisement is still seen.
        let mut hbh = vec![NH_ICMPV6, 0, 5, 2, 0, 0, 1, 0];
        hbh.extend_from_slice(&nd(136, other));
        let f2 = eth(MAC, ETHERTYPE_IPV6, &ipv6(ll, NH_HOP_BY_HOP, &hbh));
        assert_eq!(admit(&g, &f2), Err(DropReason::SpoofedIp));
        // A chain longer than any sender uses is not left unchecked.
        let mut chain = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            chain.extend_from_slice(&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let f3 = eth(MAC, ETHERTYPE_IPV6, &ipv6(ll, NH_DEST_OPTS, &chain));
        assert_eq!(admit(&g, &f3), Err(DropReason::Filtered));
        // A truncated advertisement.
        let mut cut = f(ll, nd(136, ll));
        cut.truncate(cut.len() - 4);
        assert_eq!(admit(&g, &cut), Err(DropReason::Runt));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let g = guard();
        let mut x = 0x1234_5678u32;
        for len in 0..200usize {
            for _ in 0..50 {
                let f: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                for l3 in [0, 1, 14, 18, 300] {
                    let _ = g.admit(&f, MAC.to_u64(), l3);
                }
            }
        }
    }

    #[test]
    fn bucket_refills_at_the_rate_up_to_the_burst() {
        let mut g = Guard::new(
            &PortPolicy {
                security: None,
                flood: Some(FloodLimit {
                    pps: 100,
                    burst: 10,
                }),
            },
            1_000,
        );
        assert_eq!(g.tokens, 10 * TOKEN, "starts full");
        g.tokens = 0;
        g.refill(1_005); // 5 ms at 100/s: half a frame
        assert_eq!(g.tokens, TOKEN / 2);
        g.refill(1_010);
        assert_eq!(g.tokens, TOKEN);
        g.refill(1_010); // no time passed
        assert_eq!(g.tokens, TOKEN);
        g.refill(900); // a clock read before the last refill adds nothing
        assert_eq!((g.tokens, g.last_ms), (TOKEN, 1_010));
        g.refill(1_000_000); // long idle: capped at the burst
        assert_eq!(g.tokens, 10 * TOKEN);
        g.refill(u64::MAX); // no overflow
        assert_eq!(g.tokens, 10 * TOKEN);
    }
}
