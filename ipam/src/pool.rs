//! One network's address pool: subnet, gateway, ip-range, aux addresses and leases.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::subnet::check_no_host_bits;
use crate::IpamError;

/// What the user asks for when creating a network (Docker's `--subnet`, `--gateway`,
/// `--ip-range`, `--aux-address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// The network's subnet; must have no host bits set.
    pub subnet: Ipv4Net,
    /// The gateway; `None` means the first host address (`.1`).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Dynamic addresses come from this part of the subnet; `None` means the whole subnet.
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// Named addresses reserved for things outside vswitch (never handed out).
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

impl PoolSpec {
    /// A spec with only a subnet: gateway `.1`, whole subnet, no aux addresses.
    pub fn new(subnet: Ipv4Net) -> Self {
        Self {
            subnet,
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
        }
    }
}

/// What an address of the subnet is used for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Gateway,
    Aux(String),
    Lease(String),
}

/// A validated address pool with its leases.
///
/// Invariants (upheld by every method and re-checked on deserialization):
/// the subnet has no host bits; gateway, aux addresses and ip-range lie in the subnet;
/// the network and broadcast addresses (for prefixes up to /30) are never handed out;
/// each address has at most one use (gateway, one aux name, or one lease);
/// each owner holds at most one lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolRecord", into = "PoolRecord")]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    ip_range: Option<Ipv4Net>,
    aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// First and last address that dynamic allocation may hand out.
    lo: u32,
    hi: u32,
    /// Every used address of the subnet, as u32, with its use.
    used: BTreeMap<u32, Slot>,
    /// Owner -> leased address.
    owners: BTreeMap<String, u32>,
    /// The address handed out by the last dynamic allocation: the next one starts after it.
    last: Option<u32>,
}

/// First and last host address of `subnet`: for /31 and /32 every address is a host
/// (RFC 3021), otherwise the network and broadcast addresses are excluded.
fn host_bounds(subnet: Ipv4Net) -> (u32, u32) {
    let (net, bcast) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
    if subnet.prefix_len() >= 31 {
        (net, bcast)
    } else {
        (net + 1, bcast - 1)
    }
}

impl Pool {
    /// Validates `spec` and builds an empty pool: gateway and aux addresses reserved.
    pub fn new(spec: PoolSpec) -> Result<Self, IpamError> {
        let PoolSpec {
            subnet,
            gateway,
            ip_range,
            aux_addresses,
        } = spec;
        let subnet = check_no_host_bits("subnet", subnet)?;
        if subnet.prefix_len() == 32 {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        let (first, last) = host_bounds(subnet);

        let gateway = match gateway {
            None => Ipv4Addr::from(first),
            Some(gw) => {
                if !subnet.contains(&gw) {
                    return Err(IpamError::GatewayOutsideSubnet {
                        gateway: gw,
                        subnet,
                    });
                }
                let g = u32::from(gw);
                if g < first || g > last {
                    return Err(IpamError::GatewayNotHost {
                        gateway: gw,
                        which: if g < first { "network" } else { "broadcast" },
                        subnet,
                        suggestion: Ipv4Addr::from(first),
                    });
                }
                gw
            }
        };

        let (lo, hi) = match ip_range {
            None => (first, last),
            Some(range) => {
                let range = check_no_host_bits("ip range", range)?;
                if !subnet.contains(&range) {
                    return Err(IpamError::RangeOutsideSubnet { range, subnet });
                }
                let lo = u32::from(range.network()).max(first);
                let hi = u32::from(range.broadcast()).min(last);
                if lo > hi {
                    return Err(IpamError::RangeEmpty { range, subnet });
                }
                (lo, hi)
            }
        };

        let mut used = BTreeMap::new();
        used.insert(u32::from(gateway), Slot::Gateway);
        for (name, &ip) in &aux_addresses {
            if !subnet.contains(&ip) {
                return Err(IpamError::AuxOutsideSubnet {
                    name: name.clone(),
                    ip,
                    subnet,
                });
            }
            let a = u32::from(ip);
            let what = if a < first {
                Some("the network address of the subnet".to_owned())
            } else if a > last {
                Some("the broadcast address of the subnet".to_owned())
            } else {
                used.get(&a).map(describe)
            };
            if let Some(what) = what {
                return Err(IpamError::AuxConflict {
                    name: name.clone(),
                    ip,
                    what,
                });
            }
            used.insert(a, Slot::Aux(name.clone()));
        }

        Ok(Self {
            subnet,
            gateway,
            ip_range,
            aux_addresses,
            lo,
            hi,
            used,
            owners: BTreeMap::new(),
            last: None,
        })
    }

    /// The subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address (reserved, never leased).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The ip-range dynamic addresses come from, if one was given.
    pub fn ip_range(&self) -> Option<Ipv4Net> {
        self.ip_range
    }

    /// The reserved aux addresses by name.
    pub fn aux_addresses(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.aux_addresses
    }

    /// The spec this pool was built from, with the gateway filled in.
    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            subnet: self.subnet,
            gateway: Some(self.gateway),
            ip_range: self.ip_range,
            aux_addresses: self.aux_addresses.clone(),
        }
    }

    /// First and last address dynamic allocation may hand out (inclusive).
    pub fn dynamic_bounds(&self) -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::from(self.lo), Ipv4Addr::from(self.hi))
    }

    /// How many addresses are still free for dynamic allocation.
    pub fn free_dynamic(&self) -> u64 {
        let used = self.used.range(self.lo..=self.hi).count() as u64;
        self.capacity() - used
    }

    /// All leases, in address order.
    pub fn leases(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> + '_ {
        self.used.iter().filter_map(|(&a, slot)| match slot {
            Slot::Lease(owner) => Some((Ipv4Addr::from(a), owner.as_str())),
            _ => None,
        })
    }

    /// Number of leases.
    pub fn lease_count(&self) -> usize {
        self.owners.len()
    }

    /// The address leased to `owner`, if any.
    pub fn lease_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.owners.get(owner).map(|&a| Ipv4Addr::from(a))
    }

    /// Who holds `ip`, if it is leased.
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<&str> {
        match self.used.get(&u32::from(ip)) {
            Some(Slot::Lease(owner)) => Some(owner),
            _ => None,
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.hi - self.lo) + 1
    }

    fn check_owner(&self, owner: &str) -> Result<(), IpamError> {
        if owner.is_empty() {
            return Err(IpamError::EmptyOwner);
        }
        if let Some(&a) = self.owners.get(owner) {
            return Err(IpamError::OwnerHasLease {
                owner: owner.to_owned(),
                ip: Ipv4Addr::from(a),
                subnet: self.subnet,
            });
        }
        Ok(())
    }

    /// The lowest free address in `a..=b`, if any.
    fn first_free(&self, a: u32, b: u32) -> Option<u32> {
        if a > b {
            return None;
        }
        let mut candidate = a;
        for &k in self.used.range(a..=b).map(|(k, _)| k) {
            if k != candidate {
                break; // k > candidate: candidate is free
            }
            if candidate == b {
                return None;
            }
            candidate += 1;
        }
        Some(candidate)
    }

    /// Leases a free address to `owner` from the ip-range (else the subnet).
    ///
    /// Addresses rotate forward like Docker's serial allocation: the search starts just after
    /// the address handed out by the previous `allocate`, takes the lowest free address from
    /// there to the end of the range, then wraps to the start. A just-released address is
    /// therefore not handed out again until the rest of the range has been used, so a stale
    /// ARP entry or connection for a removed container does not reach its successor.
    /// Static allocations and releases do not move this cursor.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        self.check_owner(owner)?;
        let start = match self.last {
            Some(l) if l >= self.lo && l < self.hi => l + 1,
            _ => self.lo,
        };
        let found = self.first_free(start, self.hi).or_else(|| {
            if start > self.lo {
                self.first_free(self.lo, start - 1)
            } else {
                None
            }
        });
        let Some(a) = found else {
            let pool = self.ip_range.unwrap_or(self.subnet);
            return Err(IpamError::PoolFull {
                pool,
                capacity: self.capacity(),
            });
        };
        self.used.insert(a, Slot::Lease(owner.to_owned()));
        self.owners.insert(owner.to_owned(), a);
        self.last = Some(a);
        Ok(Ipv4Addr::from(a))
    }

    /// Leases exactly `ip` to `owner` (Docker's `--ip`).
    ///
    /// `ip` must be a host address of the subnet that is not reserved or leased. It may lie
    /// outside the ip-range: as in Docker, a common layout keeps the ip-range for dynamic
    /// addresses and gives static ones from the rest of the subnet, so they never collide.
    pub fn allocate_static(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet {
                ip,
                subnet: self.subnet,
            });
        }
        let a = u32::from(ip);
        let (first, last) = host_bounds(self.subnet);
        let reserved = |what: &str| IpamError::Reserved {
            ip,
            what: what.to_owned(),
            subnet: self.subnet,
        };
        if a < first {
            return Err(reserved("the network address"));
        }
        if a > last {
            return Err(reserved("the broadcast address"));
        }
        match self.used.get(&a) {
            Some(Slot::Lease(holder)) => {
                return Err(IpamError::AlreadyLeased {
                    ip,
                    owner: holder.clone(),
                })
            }
            Some(other) => return Err(reserved(&describe(other))),
            None => {}
        }
        self.check_owner(owner)?;
        self.used.insert(a, Slot::Lease(owner.to_owned()));
        self.owners.insert(owner.to_owned(), a);
        Ok(())
    }

    /// Releases the lease on `ip` and returns who held it.
    pub fn release(&mut self, ip: Ipv4Addr) -> Result<String, IpamError> {
        let a = u32::from(ip);
        if let Some(Slot::Lease(_)) = self.used.get(&a) {
            if let Some(Slot::Lease(owner)) = self.used.remove(&a) {
                self.owners.remove(&owner);
                return Ok(owner);
            }
        }
        let what = match self.used.get(&a) {
            Some(slot) => format!("it is {}", describe(slot)),
            None if self.subnet.contains(&ip) => "it is free".to_owned(),
            None => "it is not in this subnet".to_owned(),
        };
        Err(IpamError::NotLeased {
            ip,
            subnet: self.subnet,
            what,
        })
    }

    /// Releases whatever `owner` holds; returns the address, or `None` if it held nothing.
    pub fn release_owner(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let a = self.owners.remove(owner)?;
        self.used.remove(&a);
        Some(Ipv4Addr::from(a))
    }
}

fn describe(slot: &Slot) -> String {
    match slot {
        Slot::Gateway => "the gateway".to_owned(),
        Slot::Aux(name) => format!("aux address {name:?}"),
        Slot::Lease(owner) => format!("leased to {owner:?}"),
    }
}

/// On-disk form of a [`Pool`]: the spec plus the leases and the rotation cursor.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolRecord {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip_range: Option<Ipv4Net>,
    #[serde(default)]
    aux_addresses: BTreeMap<String, Ipv4Addr>,
    #[serde(default)]
    leases: Vec<LeaseRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_allocated: Option<Ipv4Addr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRecord {
    ip: Ipv4Addr,
    owner: String,
}

impl From<Pool> for PoolRecord {
    fn from(pool: Pool) -> Self {
        let leases = pool
            .leases()
            .map(|(ip, owner)| LeaseRecord {
                ip,
                owner: owner.to_owned(),
            })
            .collect();
        Self {
            subnet: pool.subnet,
            gateway: pool.gateway,
            ip_range: pool.ip_range,
            aux_addresses: pool.aux_addresses,
            leases,
            last_allocated: pool.last.map(Ipv4Addr::from),
        }
    }
}

impl TryFrom<PoolRecord> for Pool {
    type Error = IpamError;

    /// Rebuilds the pool through the same checks as live calls, so a hand-edited or damaged
    /// file cannot produce a pool that hands out an address twice.
    fn try_from(rec: PoolRecord) -> Result<Self, IpamError> {
        let mut pool = Pool::new(PoolSpec {
            subnet: rec.subnet,
            gateway: Some(rec.gateway),
            ip_range: rec.ip_range,
            aux_addresses: rec.aux_addresses,
        })?;
        for lease in rec.leases {
            pool.allocate_static(lease.ip, &lease.owner)?;
        }
        pool.last = rec.last_allocated.map(u32::from);
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn pool(s: &str) -> Pool {
        Pool::new(PoolSpec::new(net(s))).unwrap()
    }

    #[test]
    fn gateway_defaults_to_first_host() {
        let p = pool("10.0.0.0/24");
        assert_eq!(p.gateway(), ip("10.0.0.1"));
        assert_eq!(p.dynamic_bounds(), (ip("10.0.0.1"), ip("10.0.0.254")));
        assert_eq!(p.free_dynamic(), 253);
        let p = pool("172.17.0.0/16");
        assert_eq!(p.gateway(), ip("172.17.0.1"));
    }

    #[test]
    fn first_allocation_skips_network_and_gateway() {
        let mut p = pool("10.0.0.0/24");
        assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.2"));
        assert_eq!(p.allocate("b").unwrap(), ip("10.0.0.3"));
        assert_eq!(p.lease_of("a"), Some(ip("10.0.0.2")));
        assert_eq!(p.owner_of(ip("10.0.0.3")), Some("b"));
        assert_eq!(p.lease_of("nobody"), None);
    }

    #[test]
    fn explicit_gateway_is_reserved_and_validated() {
        let mut spec = PoolSpec::new(net("10.0.0.0/29"));
        spec.gateway = Some(ip("10.0.0.6"));
        let mut p = Pool::new(spec.clone()).unwrap();
        let got: Vec<_> = (0..5)
            .map(|i| p.allocate(&format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"].map(ip)
        );
        assert!(matches!(p.allocate("x"), Err(IpamError::PoolFull { .. })));

        spec.gateway = Some(ip("10.0.1.1"));
        let e = Pool::new(spec.clone()).unwrap_err();
        assert!(matches!(e, IpamError::GatewayOutsideSubnet { .. }), "{e}");
        spec.gateway = Some(ip("10.0.0.0"));
        let e = Pool::new(spec.clone()).unwrap_err();
        assert!(e.to_string().contains("network address"), "{e}");
        assert!(e.to_string().contains("10.0.0.1"), "{e}");
        spec.gateway = Some(ip("10.0.0.7"));
        let e = Pool::new(spec).unwrap_err();
        assert!(e.to_string().contains("broadcast address"), "{e}");
    }

    #[test]
    fn host_bits_and_tiny_subnets_refused() {
        let bad = Ipv4Net::new(ip("10.0.0.9"), 24).unwrap();
        let e = Pool::new(PoolSpec::new(bad)).unwrap_err();
        assert!(e.to_string().contains("use 10.0.0.0/24"), "{e}");
        let e = Pool::new(PoolSpec::new(net("10.0.0.1/32"))).unwrap_err();
        assert!(matches!(e, IpamError::SubnetTooSmall { .. }), "{e}");
    }

    #[test]
    fn slash_31_has_gateway_and_one_address() {
        let mut p = pool("10.0.0.0/31");
        assert_eq!(p.gateway(), ip("10.0.0.0"));
        assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.1"));
        assert!(matches!(
            p.allocate("b"),
            Err(IpamError::PoolFull { capacity: 2, .. })
        ));
    }

    #[test]
    fn slash_30_exhausts_after_one() {
        let mut p = pool("10.0.0.0/30");
        assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.2"));
        let e = p.allocate("b").unwrap_err();
        assert!(matches!(e, IpamError::PoolFull { capacity: 2, .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("10.0.0.0/30 is full") && msg.contains("larger subnet"),
            "{msg}"
        );
    }

    #[test]
    fn ip_range_bounds_dynamic_allocation() {
        let mut spec = PoolSpec::new(net("10.0.0.0/16"));
        spec.ip_range = Some(net("10.0.5.0/30"));
        let mut p = Pool::new(spec).unwrap();
        assert_eq!(
            p.gateway(),
            ip("10.0.0.1"),
            "gateway comes from the subnet, not the range"
        );
        // The range's own network/broadcast addresses are ordinary hosts of the subnet.
        let got: Vec<_> = (0..4)
            .map(|i| p.allocate(&format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.0.5.0", "10.0.5.1", "10.0.5.2", "10.0.5.3"].map(ip)
        );
        let e = p.allocate("c4").unwrap_err();
        assert!(e.to_string().contains("10.0.5.0/30 is full"), "{e}");
        assert!(e.to_string().contains("wider ip range"), "{e}");
        // Static addresses outside the range but inside the subnet are fine.
        p.allocate_static(ip("10.0.9.9"), "static").unwrap();
    }

    #[test]
    fn ip_range_clipped_to_subnet_hosts() {
        let mut spec = PoolSpec::new(net("10.0.0.0/24"));
        spec.ip_range = Some(net("10.0.0.0/30"));
        let p = Pool::new(spec.clone()).unwrap();
        assert_eq!(p.dynamic_bounds(), (ip("10.0.0.1"), ip("10.0.0.3")));
        spec.ip_range = Some(net("10.0.0.0/32"));
        let e = Pool::new(spec.clone()).unwrap_err();
        assert!(matches!(e, IpamError::RangeEmpty { .. }), "{e}");
        spec.ip_range = Some(net("10.0.1.0/28"));
        let e = Pool::new(spec.clone()).unwrap_err();
        assert!(matches!(e, IpamError::RangeOutsideSubnet { .. }), "{e}");
        spec.ip_range = Some(net("10.0.0.0/23"));
        assert!(matches!(
            Pool::new(spec.clone()),
            Err(IpamError::RangeOutsideSubnet { .. })
        ));
        spec.ip_range = Some(Ipv4Net::new(ip("10.0.0.5"), 28).unwrap());
        let e = Pool::new(spec).unwrap_err();
        assert!(e.to_string().contains("use 10.0.0.0/28"), "{e}");
    }

    #[test]
    fn aux_addresses_are_reserved_and_validated() {
        let mut spec = PoolSpec::new(net("10.0.0.0/29"));
        spec.aux_addresses.insert("router".into(), ip("10.0.0.2"));
        spec.aux_addresses.insert("nas".into(), ip("10.0.0.4"));
        let mut p = Pool::new(spec.clone()).unwrap();
        let got: Vec<_> = (0..3)
            .map(|i| p.allocate(&format!("c{i}")).unwrap())
            .collect();
        assert_eq!(got, ["10.0.0.3", "10.0.0.5", "10.0.0.6"].map(ip));
        assert!(p.allocate("c3").is_err());
        let e = p.allocate_static(ip("10.0.0.4"), "x").unwrap_err();
        assert!(e.to_string().contains(r#"aux address "nas""#), "{e}");

        let mut bad = spec.clone();
        bad.aux_addresses.insert("far".into(), ip("10.0.1.1"));
        assert!(matches!(
            Pool::new(bad),
            Err(IpamError::AuxOutsideSubnet { .. })
        ));
        let mut bad = spec.clone();
        bad.aux_addresses.insert("gw".into(), ip("10.0.0.1"));
        let e = Pool::new(bad).unwrap_err();
        assert!(e.to_string().contains("the gateway"), "{e}");
        let mut bad = spec.clone();
        bad.aux_addresses.insert("router2".into(), ip("10.0.0.2"));
        let e = Pool::new(bad).unwrap_err();
        assert!(e.to_string().contains(r#"aux address "router""#), "{e}");
        let mut bad = spec;
        bad.aux_addresses.insert("b".into(), ip("10.0.0.7"));
        let e = Pool::new(bad).unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
    }

    #[test]
    fn static_allocation_errors() {
        let mut p = pool("10.0.0.0/24");
        p.allocate_static(ip("10.0.0.50"), "web").unwrap();
        assert_eq!(p.lease_of("web"), Some(ip("10.0.0.50")));

        let e = p.allocate_static(ip("10.0.0.50"), "db").unwrap_err();
        assert!(matches!(&e, IpamError::AlreadyLeased { owner, .. } if owner == "web"));
        assert!(e.to_string().contains(r#"leased to "web""#), "{e}");
        let e = p.allocate_static(ip("10.0.1.5"), "db").unwrap_err();
        assert!(matches!(e, IpamError::OutsideSubnet { .. }));
        let e = p.allocate_static(ip("10.0.0.1"), "db").unwrap_err();
        assert!(e.to_string().contains("reserved as the gateway"), "{e}");
        let e = p.allocate_static(ip("10.0.0.0"), "db").unwrap_err();
        assert!(e.to_string().contains("network address"), "{e}");
        let e = p.allocate_static(ip("10.0.0.255"), "db").unwrap_err();
        assert!(e.to_string().contains("broadcast address"), "{e}");
        let e = p.allocate_static(ip("10.0.0.51"), "web").unwrap_err();
        assert!(matches!(e, IpamError::OwnerHasLease { .. }));
        assert!(matches!(
            p.allocate("web"),
            Err(IpamError::OwnerHasLease { .. })
        ));
        assert!(matches!(p.allocate(""), Err(IpamError::EmptyOwner)));
        assert_eq!(p.lease_count(), 1);
    }

    #[test]
    fn dynamic_allocation_skips_static_leases() {
        let mut p = pool("10.0.0.0/24");
        p.allocate_static(ip("10.0.0.2"), "s1").unwrap();
        p.allocate_static(ip("10.0.0.3"), "s2").unwrap();
        assert_eq!(p.allocate("d").unwrap(), ip("10.0.0.4"));
    }

    #[test]
    fn released_address_is_not_reused_at_once() {
        let mut p = pool("10.0.0.0/29"); // hosts .1-.6, gateway .1
        assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.2"));
        assert_eq!(p.allocate("b").unwrap(), ip("10.0.0.3"));
        assert_eq!(p.release(ip("10.0.0.2")).unwrap(), "a");
        assert_eq!(p.lease_of("a"), None);
        // Rotates forward past the released .2 ...
        assert_eq!(p.allocate("c").unwrap(), ip("10.0.0.4"));
        assert_eq!(p.allocate("d").unwrap(), ip("10.0.0.5"));
        assert_eq!(p.allocate("e").unwrap(), ip("10.0.0.6"));
        // ... and only wraps back to it when the end of the range is reached.
        assert_eq!(p.allocate("f").unwrap(), ip("10.0.0.2"));
        assert!(matches!(p.allocate("g"), Err(IpamError::PoolFull { .. })));
        assert_eq!(p.release_owner("d"), Some(ip("10.0.0.5")));
        assert_eq!(p.release_owner("d"), None);
        assert_eq!(p.allocate("g").unwrap(), ip("10.0.0.5"));
    }

    #[test]
    fn release_errors_say_what_the_address_is() {
        let mut p = pool("10.0.0.0/24");
        let e = p.release(ip("10.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("the gateway"), "{e}");
        let e = p.release(ip("10.0.0.9")).unwrap_err();
        assert!(e.to_string().contains("free"), "{e}");
        let e = p.release(ip("192.0.2.1")).unwrap_err();
        assert!(e.to_string().contains("not in this subnet"), "{e}");
        assert_eq!(p.gateway(), ip("10.0.0.1"));
    }

    #[test]
    fn serde_roundtrip_keeps_leases_and_cursor() {
        let mut spec = PoolSpec::new(net("10.0.0.0/24"));
        spec.ip_range = Some(net("10.0.0.128/25"));
        spec.aux_addresses.insert("r".into(), ip("10.0.0.200"));
        let mut p = Pool::new(spec).unwrap();
        p.allocate("a").unwrap();
        p.allocate("b").unwrap();
        p.allocate_static(ip("10.0.0.7"), "s").unwrap();
        p.release(ip("10.0.0.128")).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let mut q: Pool = serde_json::from_str(&json).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.allocate("c").unwrap(), ip("10.0.0.130"));
    }

    #[test]
    fn accessors_return_the_spec() {
        let mut spec = PoolSpec::new(net("10.0.0.0/24"));
        spec.ip_range = Some(net("10.0.0.128/25"));
        spec.aux_addresses.insert("router".into(), ip("10.0.0.254"));
        let p = Pool::new(spec.clone()).unwrap();
        assert_eq!(p.ip_range(), Some(net("10.0.0.128/25")));
        assert_eq!(p.aux_addresses(), &spec.aux_addresses);
        assert_eq!(pool("10.0.1.0/24").ip_range(), None);
        assert!(pool("10.0.1.0/24").aux_addresses().is_empty());
    }

    #[test]
    fn a_cursor_outside_the_range_is_ignored() {
        // A damaged or hand-edited file may carry a cursor outside the ip-range: allocation
        // must still start at the range's first address, never below it (here the subnet's
        // network address would follow 9.255.255.255).
        for last in ["10.0.0.5", "9.255.255.255"] {
            let json = format!(
                r#"{{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ip_range":"10.0.0.128/25",
                    "last_allocated":"{last}"}}"#
            );
            let mut p: Pool = serde_json::from_str(&json).unwrap();
            assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.128"), "cursor {last}");
        }
    }

    #[test]
    fn deserialization_rechecks_invariants() {
        let dup = r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1",
            "leases":[{"ip":"10.0.0.5","owner":"a"},{"ip":"10.0.0.5","owner":"b"}]}"#;
        let e = serde_json::from_str::<Pool>(dup).unwrap_err();
        assert!(e.to_string().contains(r#"already leased to "a""#), "{e}");
        let gw = r#"{"subnet":"10.0.0.0/24","gateway":"10.0.0.1",
            "leases":[{"ip":"10.0.0.1","owner":"a"}]}"#;
        assert!(serde_json::from_str::<Pool>(gw).is_err());
        let host_bits = r#"{"subnet":"10.0.0.3/24","gateway":"10.0.0.1"}"#;
        assert!(serde_json::from_str::<Pool>(host_bits).is_err());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        #[derive(Debug, Clone)]
        enum Op {
            Allocate(u8),
            Static(u8, u8),
            Release(u8),
            ReleaseOwner(u8),
            Roundtrip,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u8..24).prop_map(Op::Allocate),
                2 => (0u8..16, 0u8..24).prop_map(|(o, w)| Op::Static(o, w)),
                3 => (0u8..16).prop_map(Op::Release),
                1 => (0u8..24).prop_map(Op::ReleaseOwner),
                1 => Just(Op::Roundtrip),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Random allocate/static/release sequences on a /28 (with or without an ip-range
            /// and an aux address) never lease an address twice, never lease a reserved one,
            /// and allocate exactly the lowest free address after the previous one.
            #[test]
            fn never_a_duplicate_lease(
                ops in proptest::collection::vec(op(), 1..200),
                with_range in any::<bool>(),
                with_aux in any::<bool>(),
            ) {
                let base = u32::from(ip("10.0.0.0"));
                let mut spec = PoolSpec::new(net("10.0.0.0/28"));
                if with_range {
                    spec.ip_range = Some(net("10.0.0.4/30"));
                }
                if with_aux {
                    spec.aux_addresses.insert("aux".into(), ip("10.0.0.6"));
                }
                let mut pool = Pool::new(spec).unwrap();
                let (lo, hi) = pool.dynamic_bounds();
                let (lo, hi) = (u32::from(lo), u32::from(hi));
                let reserved: Vec<u32> = [base, base + 15, base + 1]
                    .into_iter()
                    .chain(with_aux.then_some(base + 6))
                    .collect();
                let mut model: HashMap<u32, String> = HashMap::new();
                let mut last: Option<u32> = None;

                for op in ops {
                    match op {
                        Op::Allocate(w) => {
                            let owner = format!("o{w}");
                            let has = model.values().any(|o| *o == owner);
                            let start = last.map_or(lo, |l| if l < hi { l + 1 } else { lo });
                            let expected = (start..=hi)
                                .chain(lo..start)
                                .find(|a| !model.contains_key(a) && !reserved.contains(a));
                            match pool.allocate(&owner) {
                                Ok(got) => {
                                    let a = u32::from(got);
                                    prop_assert!(!has);
                                    prop_assert_eq!(Some(a), expected);
                                    prop_assert!(model.insert(a, owner).is_none(), "duplicate {}", got);
                                    last = Some(a);
                                }
                                Err(IpamError::OwnerHasLease { .. }) => prop_assert!(has),
                                Err(IpamError::PoolFull { .. }) => {
                                    prop_assert!(!has);
                                    prop_assert_eq!(expected, None);
                                }
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::Static(off, w) => {
                            let owner = format!("o{w}");
                            let a = base + u32::from(off);
                            match pool.allocate_static(Ipv4Addr::from(a), &owner) {
                                Ok(()) => {
                                    prop_assert!(!reserved.contains(&a));
                                    prop_assert!(!model.values().any(|o| *o == owner));
                                    prop_assert!(model.insert(a, owner).is_none(), "duplicate");
                                }
                                Err(IpamError::AlreadyLeased { owner: by, .. }) => {
                                    prop_assert_eq!(model.get(&a), Some(&by));
                                }
                                Err(IpamError::Reserved { .. }) => prop_assert!(reserved.contains(&a)),
                                Err(IpamError::OwnerHasLease { .. }) => {
                                    prop_assert!(model.values().any(|o| *o == owner));
                                }
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::Release(off) => {
                            let a = base + u32::from(off);
                            match pool.release(Ipv4Addr::from(a)) {
                                Ok(owner) => prop_assert_eq!(model.remove(&a), Some(owner)),
                                Err(IpamError::NotLeased { .. }) => prop_assert!(!model.contains_key(&a)),
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::ReleaseOwner(w) => {
                            let owner = format!("o{w}");
                            let held = model.iter().find(|(_, o)| **o == owner).map(|(&a, _)| a);
                            prop_assert_eq!(pool.release_owner(&owner).map(u32::from), held);
                            if let Some(a) = held {
                                model.remove(&a);
                            }
                        }
                        Op::Roundtrip => {
                            let json = serde_json::to_string(&pool).unwrap();
                            let back: Pool = serde_json::from_str(&json).unwrap();
                            prop_assert_eq!(&back, &pool);
                            pool = back;
                        }
                    }
                    let mut leases: Vec<(u32, String)> =
                        pool.leases().map(|(a, o)| (u32::from(a), o.to_owned())).collect();
                    let mut want: Vec<(u32, String)> = model.clone().into_iter().collect();
                    leases.sort();
                    want.sort();
                    prop_assert_eq!(leases, want);
                    for (a, o) in &model {
                        prop_assert_eq!(pool.lease_of(o), Some(Ipv4Addr::from(*a)));
                    }
                }
            }
        }
    }
}
