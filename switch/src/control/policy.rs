//! A network's port security and storm control options, and the policy they give each of its
//! container ports:
//!
//! * `-o port_security=on|off` (default on): a container's port sends only with its endpoint's
//!   MAC and IPv4 lease (see [`crate::guard`]);
//! * `-o flood_pps=N` (default [`DEFAULT_FLOOD_PPS`]; 0: unlimited) and `-o flood_burst=N`
//!   (default a fifth of a second's worth, at least 1): how many frames a container's port may
//!   flood (broadcast, multicast, unknown unicast) per second, and at once.
//!
//! The options live in the network's options map, so they are persisted with it and applied
//! again to every port on restore. Uplinks, tunnels, the gateway and the host's own port are
//! never subject to them.

use super::error::{bail, err, Result};
use super::state::{EndpointRecord, NetworkRecord};
use crate::guard::{FloodLimit, PortPolicy, PortSecurity};
use crate::wire::MacAddr;
use std::collections::BTreeMap;

/// Flooded frames per second a container's port may send unless `-o flood_pps=` says otherwise:
/// far above what ARP, DHCP and mDNS need, far below what costs the other ports their share.
pub const DEFAULT_FLOOD_PPS: u32 = 5000;
/// Largest `flood_pps` / `flood_burst` accepted.
const MAX_RATE: u32 = 100_000_000;

/// The option keys this module reads (drivers that check their options accept them).
pub const KEYS: [&str; 3] = ["port_security", "flood_pps", "flood_burst"];

/// A network's port security and storm control settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub port_security: bool,
    /// None: flooding is not limited.
    pub flood: Option<FloodLimit>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            port_security: true,
            flood: Some(FloodLimit {
                pps: DEFAULT_FLOOD_PPS,
                burst: default_burst(DEFAULT_FLOOD_PPS),
            }),
        }
    }
}

fn default_burst(pps: u32) -> u32 {
    (pps / 5).max(1)
}

fn parse_rate(key: &str, v: &str, min: u32) -> Result<u32> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (min..=MAX_RATE).contains(n))
        .ok_or_else(|| err!("invalid {key} {v:?}: expected a number from {min} to {MAX_RATE}"))
}

impl NetworkPolicy {
    /// Reads the options of a network (absent keys take their defaults).
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<NetworkPolicy> {
        let port_security = match opts.get("port_security").map(|v| v.to_ascii_lowercase()) {
            None => true,
            Some(v) => match v.as_str() {
                "on" | "true" | "yes" | "1" => true,
                "off" | "false" | "no" | "0" => false,
                _ => bail!("invalid port_security {v:?}: expected on or off"),
            },
        };
        let pps = match opts.get("flood_pps") {
            Some(v) => parse_rate("flood_pps", v, 0)?,
            None => DEFAULT_FLOOD_PPS,
        };
        let burst = match opts.get("flood_burst") {
            Some(v) => Some(parse_rate("flood_burst", v, 1)?),
            None => None,
        };
        if pps == 0 && burst.is_some() {
            bail!("flood_burst needs a flood limit: flood_pps=0 turns storm control off");
        }
        Ok(NetworkPolicy {
            port_security,
            flood: (pps > 0).then(|| FloodLimit {
                pps,
                burst: burst.unwrap_or_else(|| default_burst(pps)),
            }),
        })
    }

    /// The policy of a container's port with endpoint `mac` and `ipv4`.
    pub fn for_endpoint(&self, mac: MacAddr, ipv4: std::net::Ipv4Addr) -> PortPolicy {
        PortPolicy {
            security: self.port_security.then_some(PortSecurity { mac, ipv4 }),
            flood: self.flood,
        }
    }
}

/// The policy of endpoint `ep`'s port on `net`. A network whose stored options no longer parse
/// (a hand-edited state file) gets the defaults, which are the safe side, and a log line.
pub fn port_policy(net: &NetworkRecord, ep: &EndpointRecord) -> PortPolicy {
    let p = NetworkPolicy::parse(&net.options).unwrap_or_else(|e| {
        tracing::warn!(
            "network {}: {e:#}; using port security and storm control defaults",
            net.name
        );
        NetworkPolicy::default()
    });
    match ep.mac.parse::<MacAddr>() {
        Ok(mac) => p.for_endpoint(mac, ep.ip),
        Err(_) => {
            // No MAC to allow: nothing from this port could pass port security anyway, so
            // say why here rather than as drops.
            tracing::warn!(
                "endpoint {} has no valid MAC ({:?}); its port has no port security",
                ep.port_name,
                ep.mac
            );
            PortPolicy {
                security: None,
                flood: p.flood,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::driver::fake::opts;
    use std::net::Ipv4Addr;

    #[test]
    fn defaults_are_secure_and_limited() {
        let p = NetworkPolicy::parse(&opts(&[("mtu", "1400")])).unwrap();
        assert_eq!(p, NetworkPolicy::default());
        assert!(p.port_security);
        assert_eq!(
            p.flood,
            Some(FloodLimit {
                pps: 5000,
                burst: 1000
            })
        );
    }

    #[test]
    fn options_turn_things_off_and_tune_the_bucket() {
        let p =
            NetworkPolicy::parse(&opts(&[("port_security", "off"), ("flood_pps", "0")])).unwrap();
        assert_eq!(
            p,
            NetworkPolicy {
                port_security: false,
                flood: None
            }
        );
        let p = NetworkPolicy::parse(&opts(&[("flood_pps", "200"), ("flood_burst", "7")])).unwrap();
        assert_eq!(p.flood, Some(FloodLimit { pps: 200, burst: 7 }));
        assert!(p.port_security);
        let p = NetworkPolicy::parse(&opts(&[("flood_pps", "3")])).unwrap();
        assert_eq!(p.flood, Some(FloodLimit { pps: 3, burst: 1 }));
        let mac = MacAddr([2, 0x42, 10, 0, 0, 5]);
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(
            NetworkPolicy::default().for_endpoint(mac, ip).security,
            Some(PortSecurity { mac, ipv4: ip })
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (kv, want) in [
            (vec![("port_security", "maybe")], "expected on or off"),
            (vec![("flood_pps", "-1")], "invalid flood_pps"),
            (vec![("flood_pps", "lots")], "invalid flood_pps"),
            (vec![("flood_burst", "0")], "invalid flood_burst"),
            (
                vec![("flood_pps", "0"), ("flood_burst", "5")],
                "flood_pps=0 turns storm control off",
            ),
        ] {
            let e = NetworkPolicy::parse(&opts(&kv)).unwrap_err().to_string();
            assert!(e.contains(want), "{kv:?}: {e}");
        }
    }
}
