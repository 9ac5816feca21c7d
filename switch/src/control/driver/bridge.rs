//! The bridge driver: a network local to this host, with the switch as its gateway (ARP, ping,
//! DNS, NAT to the outside, published ports), as Docker's `bridge`.
//!
//! Its one port of its own is the **host's port**: a TAP in the host's namespace holding the
//! highest free address of the subnet outside the dynamic range (a lease of
//! [`HOST_LEASE`]), so the host reaches its containers by address as it does through
//! docker0. Without a free address, or when the TAP cannot be made, the network still works
//! and the failure is logged: host access is a convenience, not a condition of the network.

use super::{Ctx, NetworkDriver};
use crate::control::api::NetworkCreate;
use crate::control::egress::{self, HOST_LEASE};
use crate::control::error::Result;
use crate::control::state::NetworkRecord;
use crate::port::PortId;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The driver's name.
pub const BRIDGE: &str = "bridge";
/// MTU of a bridge network unless `-o mtu=N` says otherwise.
pub const DEFAULT_MTU: u32 = 1500;

/// The bridge driver and the host's port on each of its networks.
#[derive(Debug, Default)]
pub struct Bridge {
    /// The host's port on each network, by network name.
    host_ports: BTreeMap<String, PortId>,
}

impl Bridge {
    /// The host's port on network `network`, if it has one.
    pub fn host_port(&self, network: &str) -> Option<PortId> {
        self.host_ports.get(network).copied()
    }

    /// Gives the host its port on `n`, unless it has one (failures are logged).
    fn attach_host(&mut self, n: &NetworkRecord, cx: &mut Ctx) {
        if self.host_ports.contains_key(&n.name) {
            return;
        }
        let Some(subnet) = n.subnet else { return };
        let Ok(pool) = cx.state.ipam.pool_mut(&n.name) else {
            return;
        };
        // The highest free address outside the dynamic range: containers keep theirs.
        let range = pool.ip_range();
        let ip = pool.lease_of(HOST_LEASE).or_else(|| {
            let top = u32::from(egress::host_address(subnet)?);
            (top.saturating_sub(64)..=top)
                .rev()
                .map(Ipv4Addr::from)
                .filter(|ip| range.is_none_or(|r| !r.contains(ip)))
                .find(|ip| pool.allocate_static(*ip, HOST_LEASE).is_ok())
        });
        let Some(ip) = ip else {
            tracing::warn!("network {}: no free address for the host's port; the host will not reach its containers by address", n.name);
            return;
        };
        match cx.dp.open_host_port(n, ip, subnet.prefix_len()) {
            Ok(id) => {
                self.host_ports.insert(n.name.clone(), id);
            }
            Err(e) => tracing::warn!(
                "network {}: the host cannot reach its containers: {e:#}",
                n.name
            ),
        }
        let _ = cx.save();
    }
}

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        BRIDGE
    }

    fn validate(&self, _: &NetworkCreate, _: &BTreeMap<String, String>, _: &Ctx) -> Result<u32> {
        Ok(DEFAULT_MTU)
    }

    fn create(&mut self, net: &NetworkRecord, cx: &mut Ctx) -> Result<()> {
        self.attach_host(net, cx);
        Ok(())
    }

    fn remove(&mut self, net: &NetworkRecord, cx: &mut Ctx) {
        if let Some(id) = self.host_ports.remove(&net.name) {
            cx.dp.remove_port(id);
        }
        if let Ok(p) = cx.state.ipam.pool_mut(&net.name) {
            let _ = p.release_owner(HOST_LEASE);
        }
    }

    fn restore(&mut self, cx: &mut Ctx) {
        let nets: Vec<NetworkRecord> = (cx.state.networks.values())
            .filter(|n| n.driver == BRIDGE)
            .cloned()
            .collect();
        for n in &nets {
            self.attach_host(n, cx);
        }
    }

    fn reset(&mut self) {
        self.host_ports.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{cx, network, Call, Fake};
    use super::*;
    use crate::control::state::State;

    fn state_with(n: &NetworkRecord, range: Option<&str>) -> State {
        let mut s = State::default();
        s.ipam
            .add_pool(
                &n.name,
                ipam::PoolSpec {
                    subnet: n.subnet.unwrap(),
                    gateway: None,
                    ip_range: range.map(|r| r.parse().unwrap()),
                    aux_addresses: BTreeMap::new(),
                },
            )
            .unwrap();
        s.networks.insert(n.name.clone(), n.clone());
        s
    }

    #[test]
    fn create_gives_the_host_the_highest_free_address_outside_the_range_and_remove_takes_it_back() {
        let n = network("b1", 3, BRIDGE, "10.9.0.0/24", &[]);
        let mut state = state_with(&n, Some("10.9.0.0/25"));
        let mut fake = Fake::default();
        let mut d = Bridge::default();
        // Someone holds the top address: the host takes the next one down.
        (state.ipam.pool_mut("b1").unwrap())
            .allocate_static("10.9.0.254".parse().unwrap(), "c1")
            .unwrap();
        let mut c = cx(&mut state, &mut fake);
        d.create(&n, &mut c).unwrap();
        let host_ip: Ipv4Addr = "10.9.0.253".parse().unwrap();
        assert_eq!(
            fake.calls,
            [
                Call::OpenHostPort {
                    network: "b1".into(),
                    ip: host_ip,
                    prefix: 24
                },
                Call::Persist
            ]
        );
        let id = d.host_port("b1").expect("the host's port is recorded");
        assert_eq!(
            state.ipam.pool("b1").unwrap().lease_of(HOST_LEASE),
            Some(host_ip)
        );
        // A second create (a restore) keeps the port it has.
        let mut c = cx(&mut state, &mut fake);
        d.create(&n, &mut c).unwrap();
        assert_eq!(fake.calls.len(), 2, "no second port: {:?}", fake.calls);

        let mut c = cx(&mut state, &mut fake);
        d.remove(&n, &mut c);
        assert_eq!(fake.calls.last(), Some(&Call::RemovePort(id)));
        assert_eq!(d.host_port("b1"), None);
        assert_eq!(state.ipam.pool("b1").unwrap().lease_of(HOST_LEASE), None);
    }

    #[test]
    fn a_failed_host_port_does_not_fail_the_network() {
        let n = network("b2", 4, BRIDGE, "10.9.1.0/24", &[]);
        let mut state = state_with(&n, None);
        let mut fake = Fake {
            fail: vec!["open_host_port"],
            ..Fake::default()
        };
        let mut d = Bridge::default();
        let mut c = cx(&mut state, &mut fake);
        d.create(&n, &mut c)
            .expect("the network stands without host access");
        assert_eq!(d.host_port("b2"), None);
        // After a worker restart, restore tries again (and the worker is empty).
        d.reset();
        fake.fail.clear();
        let mut c = cx(&mut state, &mut fake);
        d.restore(&mut c);
        assert!(d.host_port("b2").is_some());
    }

    #[test]
    fn restore_ignores_other_drivers_networks() {
        let n = network("m1", 5, "macvlan", "10.9.2.0/24", &[("parent", "eth9")]);
        let mut state = state_with(&n, None);
        let mut fake = Fake::default();
        let mut d = Bridge::default();
        d.restore(&mut cx(&mut state, &mut fake));
        assert!(fake.calls.is_empty(), "{:?}", fake.calls);
    }
}
