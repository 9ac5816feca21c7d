//! The macvlan driver: containers as their own stations on a host interface's LAN.
//!
//! Docker's macvlan gives every container its own MAC address directly on a parent interface,
//! so other machines of that LAN reach containers without NAT. Here the parent is an **uplink
//! port** of the switch:
//!
//! * The parent is opened with AF_PACKET (vnet headers, VLAN tags restored from metadata, sends
//!   through the device's qdisc so captures on the parent show both directions) and set
//!   promiscuous while a macvlan network uses it; its own promiscuous flag is written to
//!   the state ([`UplinkRecord`]) *before* the interface is touched, so a crash in between
//!   still restores it when the last network on it is removed (also across restarts).
//! * One parent is one port, whatever the number of networks on it: its role is a
//!   [`PortRole::Trunk`] whose native network is the untagged macvlan network (at most one per
//!   parent) and whose VLANs are the networks created with `-o parent=IFACE.VID`. The switch
//!   tags, untags and filters 802.1Q itself; no kernel VLAN sub-interface is made. When a
//!   network comes or goes the port's role is changed in place
//!   ([`Command::SetPortRole`]): the socket stays open, the MACs learned on the uplink are
//!   flushed (LAN stations are learned again from their next frame).
//! * Bridge-mode semantics, as Docker's: containers of one network reach each other through
//!   the switch; a frame from the LAN goes only to the container that owns its destination
//!   MAC (or to the network's containers for broadcast and multicast), never back to the LAN.
//!   The pipeline drops unknown unicast from an uplink ([`DropReason::NotLocal`]: with the
//!   parent promiscuous that is the LAN's own traffic), and each container's MAC is a static
//!   MAC table entry on its port, so it is reachable before it has sent anything and a LAN
//!   frame forging its address cannot move it.
//! * The gateway is the LAN's router: the switch registers no gateway address on a macvlan
//!   network; containers get a default route through `--gateway` (the subnet's first address
//!   unless given).
//!
//! [`DropReason::NotLocal`]: crate::pipeline::DropReason::NotLocal

use super::{Daemon, PortRecord};
use crate::control::api::NetworkCreate;
use crate::control::state::{EndpointRecord, NetworkRecord, UplinkRecord};
use crate::netns::{self, Netlink};
use crate::pipeline::PortRole;
use crate::port::afpacket::{AfPacketConfig, AfPacketPort};
use crate::port::Port;
use crate::worker::Command;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The driver's name.
pub const MACVLAN: &str = "macvlan";
/// `vswitch ports` kind of an uplink.
const UPLINK_KIND: &str = "uplink/af_packet+vnet";

/// A macvlan network's parent: a host interface and the 802.1Q VLAN its frames carry there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    /// The host interface.
    pub ifname: String,
    /// `Some(vid)` for `IFACE.VID`: frames are tagged on the parent; `None`: untagged.
    pub vlan: Option<u16>,
}

impl Parent {
    /// Parses `-o parent=`: `IFACE` or `IFACE.VID` (VID 1..=4094). A name whose part after the
    /// last dot is all digits always means a VLAN of the part before it.
    pub fn parse(s: &str) -> Result<Parent> {
        let s = s.trim();
        let (ifname, vlan) = match s.rsplit_once('.') {
            Some((base, vid)) if !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()) => {
                let v = vid
                    .parse::<u16>()
                    .ok()
                    .filter(|v| (1..=4094).contains(v))
                    .ok_or_else(|| {
                        anyhow!("invalid parent {s:?}: the VLAN id after the dot must be 1 to 4094")
                    })?;
                (base, Some(v))
            }
            _ => (s, None),
        };
        netns::validate_ifname(ifname).map_err(|e| anyhow!("invalid parent {s:?}: {e}"))?;
        Ok(Parent {
            ifname: ifname.to_string(),
            vlan,
        })
    }

    /// The parent of a macvlan network record (`None` for other drivers).
    pub fn of(n: &NetworkRecord) -> Option<Parent> {
        if n.driver != MACVLAN {
            return None;
        }
        n.options.get("parent").and_then(|p| Parent::parse(p).ok())
    }
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vlan {
            Some(v) => write!(f, "{}.{v}", self.ifname),
            None => f.write_str(&self.ifname),
        }
    }
}

/// The role of a parent's uplink port given the macvlan networks on it (`None` when there are
/// none): a trunk with the untagged network as native and the others by VLAN id.
fn uplink_role<'a>(
    ifname: &str,
    networks: impl IntoIterator<Item = &'a NetworkRecord>,
) -> Option<PortRole> {
    let mut native = None;
    let mut vlans = Vec::new();
    for n in networks {
        match Parent::of(n) {
            Some(p) if p.ifname == ifname => match p.vlan {
                None => native = Some(n.id),
                Some(v) => vlans.push((v, n.id)),
            },
            _ => {}
        }
    }
    vlans.sort_unstable();
    (native.is_some() || !vlans.is_empty()).then_some(PortRole::Trunk { native, vlans })
}

impl Daemon {
    /// Checks a `network create --driver macvlan` request before anything is allocated and
    /// returns the parent's MTU (the network's MTU unless `-o mtu=` says otherwise).
    pub(super) fn macvlan_check(
        &self,
        c: &NetworkCreate,
        options: &BTreeMap<String, String>,
    ) -> Result<u32> {
        let parent = options.get("parent").ok_or_else(|| {
            anyhow!("a macvlan network needs its parent interface: -o parent=IFACE (or -o parent=IFACE.VLAN for an 802.1Q VLAN on it)")
        })?;
        for (k, v) in options {
            match k.as_str() {
                "parent" | "mtu" | "com.docker.network.driver.mtu" => {}
                k if super::super::policy::KEYS.contains(&k) => {}
                "macvlan_mode" if v == "bridge" => {}
                "macvlan_mode" => {
                    bail!("macvlan_mode {v:?} is not supported: vswitch's macvlan works in bridge mode only")
                }
                _ => bail!(
                    "unknown macvlan option {k:?}: use -o parent=IFACE[.VLAN] and optionally -o mtu=N"
                ),
            }
        }
        if c.internal {
            bail!("--internal is not supported with the macvlan driver (its containers live on the parent's LAN); use a bridge network");
        }
        if c.subnet.is_none() {
            bail!("a macvlan network needs --subnet: the LAN's subnet, e.g. --subnet 192.168.1.0/24 --gateway 192.168.1.1 [--ip-range 192.168.1.192/27]");
        }
        let p = Parent::parse(parent)?;
        let nl = Netlink::new().context("cannot open netlink")?;
        if !nl.link_exists(&p.ifname)? {
            bail!(
                "parent interface {} not found in the host's network namespace; `ip link` lists the interfaces",
                p.ifname
            );
        }
        if let Some(id) = self.port_by_name(&p.ifname) {
            if self.ports.get(&id).is_some_and(|r| r.kind != UPLINK_KIND) {
                bail!(
                    "{} is a port of the switch (a container's link), not a LAN interface; choose another parent",
                    p.ifname
                );
            }
        }
        for n in self.state.networks.values() {
            let Some(q) = Parent::of(n) else { continue };
            if q == p {
                match p.vlan {
                    None => bail!(
                        "parent {} is already used untagged by network {}; one untagged macvlan network per parent: give another network a VLAN, e.g. -o parent={}.10",
                        p.ifname, n.name, p.ifname
                    ),
                    Some(v) => bail!(
                        "VLAN {v} of parent {} is already used by network {}; choose another VLAN id",
                        p.ifname, n.name
                    ),
                }
            }
        }
        Ok(nl.get_link(&p.ifname)?.mtu)
    }

    /// After a macvlan network was saved and registered: opens (or re-roles) its parent's
    /// uplink. On failure the network is removed again and the error returned.
    pub(super) fn macvlan_network_added(&mut self, n: &NetworkRecord) -> Result<()> {
        let Some(p) = Parent::of(n) else {
            return Ok(());
        };
        if let Err(e) = self.sync_uplink(&p.ifname) {
            self.state.networks.remove(&n.name);
            let _ = self.state.ipam.remove_pool(&n.name);
            self.worker.send(Command::RemoveNetwork { id: n.id });
            let _ = self.sync_uplink(&p.ifname);
            let _ = self.save();
            return Err(e.context(format!(
                "cannot use {p} as the parent of network {}",
                n.name
            )));
        }
        Ok(())
    }

    /// After a macvlan network was removed: re-roles its parent's uplink, or closes it and
    /// restores the parent's promiscuous flag when no network is left on it.
    pub(super) fn macvlan_network_removed(&mut self, n: &NetworkRecord) {
        if let Some(p) = Parent::of(n) {
            if let Err(e) = self.sync_uplink(&p.ifname) {
                eprintln!("vswitch: macvlan parent {}: {e:#}", p.ifname);
            }
        }
    }

    /// On start: re-opens the uplinks of the macvlan networks, and restores the flag of parents
    /// left without networks (a crash during `network rm`).
    pub(super) fn macvlan_restore(&mut self) {
        let parents: BTreeSet<String> = self
            .state
            .networks
            .values()
            .filter_map(Parent::of)
            .map(|p| p.ifname)
            .chain(self.state.uplinks.keys().cloned())
            .collect();
        for ifname in parents {
            if let Err(e) = self.sync_uplink(&ifname) {
                eprintln!("vswitch: macvlan parent {ifname}: {e:#}");
            }
        }
    }

    /// After a container's port joined network `net`: on a macvlan network its MAC becomes a
    /// static entry on that port (reachable from the LAN before it has sent anything).
    pub(super) fn macvlan_endpoint_added(&self, net: &NetworkRecord, ep: &EndpointRecord) {
        if net.driver != MACVLAN {
            return;
        }
        if let (Some(port), Ok(mac)) = (self.port_by_name(&ep.port_name), ep.mac.parse()) {
            self.worker.send(Command::AddStatic {
                network: net.id,
                mac,
                port,
            });
        }
    }

    /// Makes the uplink of `ifname` match the macvlan networks on it: opened (promiscuous)
    /// with the right trunk role, re-roled in place, or closed with the interface's own
    /// promiscuous flag restored when none is left.
    fn sync_uplink(&mut self, ifname: &str) -> Result<()> {
        let role = uplink_role(ifname, self.state.networks.values());
        let names: Vec<String> = self
            .state
            .networks
            .values()
            .filter(|n| Parent::of(n).is_some_and(|p| p.ifname == ifname))
            .map(|n| n.name.clone())
            .collect();
        let existing = self
            .port_by_name(ifname)
            .filter(|id| self.ports.get(id).is_some_and(|r| r.kind == UPLINK_KIND));
        match (role, existing) {
            (Some(role), Some(id)) => {
                self.worker.send(Command::SetPortRole { id, role });
                if let Some(r) = self.ports.get_mut(&id) {
                    r.network = names.join(",");
                }
                Ok(())
            }
            (Some(role), None) => {
                let nl = Netlink::new().context("cannot open netlink")?;
                let link = nl
                    .get_link(ifname)
                    .with_context(|| format!("parent interface {ifname} is not usable"))?;
                if !self.state.uplinks.contains_key(ifname) {
                    // Remember the interface's own flag before touching it.
                    self.state.uplinks.insert(
                        ifname.to_string(),
                        UplinkRecord {
                            was_promiscuous: link.promiscuous,
                        },
                    );
                    self.save()?;
                }
                nl.set_promiscuous(ifname, true)
                    .with_context(|| format!("cannot make {ifname} promiscuous"))?;
                // Through the parent's qdisc: a NIC's queueing applies and captures on the
                // parent show what the switch sends to the LAN.
                let cfg = AfPacketConfig {
                    qdisc_bypass: false,
                    ..AfPacketConfig::default()
                };
                let port = AfPacketPort::open_with(ifname, cfg)
                    .with_context(|| format!("cannot open {ifname} with AF_PACKET"))?;
                let kind = if port.caps().vnet_hdr {
                    UPLINK_KIND
                } else {
                    "uplink/af_packet"
                };
                let id = self.free_port_id()?;
                self.worker
                    .add_uplink(id, Box::new(port), role)
                    .context("the switch refused the uplink port")?;
                self.ports.insert(
                    id,
                    PortRecord {
                        name: ifname.to_string(),
                        kind,
                        network: names.join(","),
                        container: String::new(),
                    },
                );
                Ok(())
            }
            (None, existing) => {
                if let Some(id) = existing {
                    self.worker.remove_port(id);
                    self.ports.remove(&id);
                }
                self.restore_parent_flag(ifname)
            }
        }
    }

    /// Puts back the promiscuous flag the parent had before the switch used it and forgets
    /// the record (an interface that has gone needs nothing).
    fn restore_parent_flag(&mut self, ifname: &str) -> Result<()> {
        let Some(rec) = self.state.uplinks.get(ifname).cloned() else {
            return Ok(());
        };
        let nl = Netlink::new().context("cannot open netlink")?;
        if nl.link_exists(ifname)? {
            nl.set_promiscuous(ifname, rec.was_promiscuous)
                .with_context(|| {
                    format!(
                        "cannot restore promisc {} on {ifname}; it is retried at the next start",
                        if rec.was_promiscuous { "on" } else { "off" }
                    )
                })?;
        }
        self.state.uplinks.remove(ifname);
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, id: u16, driver: &str, parent: Option<&str>) -> NetworkRecord {
        NetworkRecord {
            name: name.into(),
            id,
            driver: driver.into(),
            subnet: None,
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            internal: false,
            mtu: 1500,
            options: parent
                .map(|p| [("parent".to_string(), p.to_string())].into())
                .unwrap_or_default(),
            created: 0,
        }
    }

    #[test]
    fn parent_parsing() {
        assert_eq!(
            Parent::parse("eth0").unwrap(),
            Parent {
                ifname: "eth0".into(),
                vlan: None
            }
        );
        let p = Parent::parse("enp1s0.10").unwrap();
        assert_eq!((p.ifname.as_str(), p.vlan), ("enp1s0", Some(10)));
        assert_eq!(p.to_string(), "enp1s0.10");
        assert_eq!(Parent::parse("br.lan").unwrap().vlan, None);
        for bad in [
            "",
            "eth0.0",
            "eth0.4095",
            "eth0.99999",
            ".10",
            "a/b",
            "x234567890123456",
        ] {
            assert!(Parent::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Parent::parse("eth0.4095").unwrap_err().to_string();
        assert!(e.contains("1 to 4094"), "{e}");
    }

    #[test]
    fn one_port_role_for_all_networks_of_a_parent() {
        let nets = [
            net("a", 3, MACVLAN, Some("p0")),
            net("b", 4, MACVLAN, Some("p0.20")),
            net("c", 5, MACVLAN, Some("p0.10")),
            net("d", 6, MACVLAN, Some("p1.10")),
            net("e", 7, "bridge", Some("p0.30")),
        ];
        assert_eq!(
            uplink_role("p0", &nets),
            Some(PortRole::Trunk {
                native: Some(3),
                vlans: vec![(10, 5), (20, 4)],
            })
        );
        assert_eq!(
            uplink_role("p1", &nets),
            Some(PortRole::Trunk {
                native: None,
                vlans: vec![(10, 6)],
            })
        );
        assert_eq!(uplink_role("p2", &nets), None);
        assert_eq!(Parent::of(&nets[4]), None, "not a macvlan network");
    }
}
