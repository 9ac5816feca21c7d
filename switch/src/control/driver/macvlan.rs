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

use super::{Ctx, GatewayRole, NetworkDriver};
use crate::control::api::NetworkCreate;
use crate::control::error::{bail, err, Context, Result};
use crate::control::state::{EndpointRecord, NetworkRecord, UplinkRecord};
use crate::control::txn::Transaction;
use crate::netns;
use crate::pipeline::{NetworkId, PortRole};
use crate::port::PortId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The driver's name.
pub const MACVLAN: &str = "macvlan";
/// `vswitch ports` kind of an uplink.
pub const UPLINK_KIND: &str = "uplink/af_packet+vnet";

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
                        err!("invalid parent {s:?}: the VLAN id after the dot must be 1 to 4094")
                    })?;
                (base, Some(v))
            }
            _ => (s, None),
        };
        netns::validate_ifname(ifname).map_err(|e| err!("invalid parent {s:?}: {e}"))?;
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
                None => native = Some(NetworkId(n.id)),
                Some(v) => vlans.push((v, NetworkId(n.id))),
            },
            _ => {}
        }
    }
    vlans.sort_unstable();
    (native.is_some() || !vlans.is_empty()).then_some(PortRole::Trunk { native, vlans })
}

/// The macvlan driver and the uplink port of each parent interface in use.
#[derive(Debug, Default)]
pub struct Macvlan {
    /// The uplink port of each parent interface, by interface name.
    uplinks: BTreeMap<String, PortId>,
}

impl Macvlan {
    /// The uplink port of parent interface `ifname`, if it is open.
    pub fn uplink(&self, ifname: &str) -> Option<PortId> {
        self.uplinks.get(ifname).copied()
    }

    /// Makes the uplink of `ifname` match the macvlan networks on it in the state: opened
    /// (promiscuous) with the right trunk role, re-roled in place, or closed with the
    /// interface's own promiscuous flag restored when none is left. Opening is all or
    /// nothing: on failure the flag is back and its record forgotten.
    fn sync_uplink(&mut self, ifname: &str, cx: &mut Ctx) -> Result<()> {
        let role = uplink_role(ifname, cx.state.networks.values());
        let names: Vec<String> = (cx.state.networks.values())
            .filter(|n| Parent::of(n).is_some_and(|p| p.ifname == ifname))
            .map(|n| n.name.clone())
            .collect();
        let label = names.join(",");
        match (role, self.uplink(ifname)) {
            (Some(role), Some(id)) => {
                cx.dp.set_port_role(id, role, &label);
                Ok(())
            }
            (Some(role), None) => {
                let id = Transaction::run(cx, |tx, cx| {
                    let link = (cx.dp.link(ifname))
                        .and_then(|l| l.ok_or_else(|| err!("no such interface")))
                        .with_context(|| format!("parent interface {ifname} is not usable"))?;
                    if !cx.state.uplinks.contains_key(ifname) {
                        // Remember the interface's own flag before touching it.
                        cx.state.uplinks.insert(
                            ifname.to_string(),
                            UplinkRecord {
                                was_promiscuous: link.promiscuous,
                            },
                        );
                        cx.save()?;
                    }
                    let name = ifname.to_string();
                    tx.undo(
                        format!("restore the promiscuous flag of {ifname}"),
                        move |cx: &mut Ctx| restore_parent_flag(&name, cx),
                    );
                    (cx.dp.set_promiscuous(ifname, true))
                        .with_context(|| format!("cannot make {ifname} promiscuous"))?;
                    cx.dp.open_uplink(ifname, role, &label)
                })?;
                self.uplinks.insert(ifname.to_string(), id);
                Ok(())
            }
            (None, existing) => {
                if let Some(id) = existing {
                    cx.dp.remove_port(id);
                    self.uplinks.remove(ifname);
                }
                restore_parent_flag(ifname, cx)
            }
        }
    }
}

/// Puts back the promiscuous flag the parent had before the switch used it and forgets the
/// record (an interface that has gone needs nothing).
fn restore_parent_flag(ifname: &str, cx: &mut Ctx) -> Result<()> {
    let Some(rec) = cx.state.uplinks.get(ifname).cloned() else {
        return Ok(());
    };
    if cx.dp.link(ifname)?.is_some() {
        (cx.dp.set_promiscuous(ifname, rec.was_promiscuous)).with_context(|| {
            format!(
                "cannot restore promisc {} on {ifname}; it is retried at the next start",
                if rec.was_promiscuous { "on" } else { "off" }
            )
        })?;
    }
    cx.state.uplinks.remove(ifname);
    cx.save()
}

impl NetworkDriver for Macvlan {
    fn name(&self) -> &'static str {
        MACVLAN
    }

    /// Checks the parent (it exists, is not a container's port of the switch, and this VLAN of
    /// it is free) and returns its MTU.
    fn validate(
        &self,
        c: &NetworkCreate,
        options: &BTreeMap<String, String>,
        cx: &Ctx,
    ) -> Result<u32> {
        let parent = options.get("parent").ok_or_else(|| {
            err!("a macvlan network needs its parent interface: -o parent=IFACE (or -o parent=IFACE.VLAN for an 802.1Q VLAN on it)")
        })?;
        for (k, v) in options {
            match k.as_str() {
                "parent" | "mtu" | "com.docker.network.driver.mtu" | "attach" => {}
                k if crate::control::policy::KEYS.contains(&k) => {}
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
        let Some(link) = cx.dp.link(&p.ifname)? else {
            bail!(
                "parent interface {} not found in the host's network namespace; `ip link` lists the interfaces",
                p.ifname
            );
        };
        if cx
            .dp
            .port_kind(&p.ifname)
            .is_some_and(|k| !k.starts_with("uplink"))
        {
            bail!(
                "{} is a port of the switch (a container's link), not a LAN interface; choose another parent",
                p.ifname
            );
        }
        for n in cx.state.networks.values() {
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
        Ok(link.mtu)
    }

    /// The switch is not the gateway: the LAN's router is.
    fn gateway_role(&self) -> GatewayRole {
        GatewayRole::Lan
    }

    /// Opens (or re-roles) the parent's uplink.
    fn create(&mut self, n: &NetworkRecord, cx: &mut Ctx) -> Result<()> {
        let Some(p) = Parent::of(n) else {
            return Ok(());
        };
        (self.sync_uplink(&p.ifname, cx))
            .with_context(|| format!("cannot use {p} as the parent of network {}", n.name))
    }

    /// Re-roles the parent's uplink, or closes it and restores the parent's promiscuous flag
    /// when no network is left on it.
    fn remove(&mut self, n: &NetworkRecord, cx: &mut Ctx) {
        if let Some(p) = Parent::of(n) {
            if let Err(e) = self.sync_uplink(&p.ifname, cx) {
                tracing::warn!("macvlan parent {}: {e:#}", p.ifname);
            }
        }
    }

    /// Re-opens the uplinks of the macvlan networks, and restores the flag of parents left
    /// without networks (a crash during `network rm`).
    fn restore(&mut self, cx: &mut Ctx) {
        let parents: BTreeSet<String> = (cx.state.networks.values())
            .filter_map(Parent::of)
            .map(|p| p.ifname)
            .chain(cx.state.uplinks.keys().cloned())
            .collect();
        for ifname in parents {
            if let Err(e) = self.sync_uplink(&ifname, cx) {
                tracing::warn!("macvlan parent {ifname}: {e:#}");
            }
        }
    }

    fn reset(&mut self) {
        self.uplinks.clear();
    }

    /// The container's MAC becomes a static entry on its port: reachable from the LAN before
    /// it has sent anything, and a LAN frame forging it cannot move it.
    fn endpoint_added(
        &mut self,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        port: PortId,
        cx: &mut Ctx,
    ) {
        if let Ok(mac) = ep.mac.parse() {
            cx.dp.add_static(NetworkId(net.id), mac, port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{cx, network, opts, Call, Fake};
    use super::super::Link;
    use super::*;
    use crate::control::state::State;

    fn net(name: &str, id: u16, driver: &str, parent: Option<&str>) -> NetworkRecord {
        let parent: Vec<(&str, &str)> = parent.map(|p| ("parent", p)).into_iter().collect();
        network(name, id, driver, "192.168.7.0/24", &parent)
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
                native: Some(NetworkId(3)),
                vlans: vec![(10, NetworkId(5)), (20, NetworkId(4))],
            })
        );
        assert_eq!(
            uplink_role("p1", &nets),
            Some(PortRole::Trunk {
                native: None,
                vlans: vec![(10, NetworkId(6))],
            })
        );
        assert_eq!(uplink_role("p2", &nets), None);
        assert_eq!(Parent::of(&nets[4]), None, "not a macvlan network");
    }

    fn create_req(subnet: Option<&str>) -> NetworkCreate {
        NetworkCreate {
            name: "m".into(),
            driver: MACVLAN.into(),
            subnet: subnet.map(String::from),
            ..Default::default()
        }
    }

    fn fake_with_link(ifname: &str, promiscuous: bool) -> Fake {
        let mut f = Fake::default();
        f.links.insert(
            ifname.into(),
            Link {
                mtu: 9000,
                promiscuous,
            },
        );
        f
    }

    #[test]
    fn validate_checks_options_and_the_parent_and_returns_its_mtu() {
        let mut state = State::default();
        state
            .networks
            .insert("lan".into(), net("lan", 3, MACVLAN, Some("p0")));
        let mut fake = fake_with_link("p0", false);
        fake.ports
            .insert("vswabc".into(), "veth/af_packet+vnet".into());
        fake.links.insert(
            "vswabc".into(),
            Link {
                mtu: 1500,
                promiscuous: false,
            },
        );
        let d = Macvlan::default();
        let cx = cx(&mut state, &mut fake);
        let sub = Some("192.168.7.0/24");
        assert_eq!(
            d.validate(&create_req(sub), &opts(&[("parent", "p0.10")]), &cx)
                .unwrap(),
            9000,
            "the parent's MTU"
        );
        let internal = NetworkCreate {
            internal: true,
            ..create_req(sub)
        };
        for (req, o, what) in [
            (create_req(sub), opts(&[]), "-o parent=IFACE"),
            (
                create_req(sub),
                opts(&[("parent", "p0.10"), ("x", "1")]),
                "unknown macvlan option",
            ),
            (
                create_req(sub),
                opts(&[("parent", "p0.10"), ("macvlan_mode", "vepa")]),
                "bridge mode only",
            ),
            (internal, opts(&[("parent", "p0.10")]), "--internal"),
            (
                create_req(None),
                opts(&[("parent", "p0.10")]),
                "needs --subnet",
            ),
            (create_req(sub), opts(&[("parent", "p9")]), "p9 not found"),
            (
                create_req(sub),
                opts(&[("parent", "vswabc")]),
                "a port of the switch",
            ),
            (
                create_req(sub),
                opts(&[("parent", "p0")]),
                "already used untagged by network lan",
            ),
        ] {
            let e = d.validate(&req, &o, &cx).unwrap_err().to_string();
            assert!(e.contains(what), "{e:?} should say {what:?}");
        }
    }

    #[test]
    fn one_uplink_per_parent_its_flag_saved_first_and_restored_when_the_last_network_goes() {
        let mut state = State::default();
        let mut fake = fake_with_link("p0", false);
        let mut d = Macvlan::default();
        let a = net("a", 3, MACVLAN, Some("p0"));
        let b = net("b", 4, MACVLAN, Some("p0.20"));

        state.networks.insert("a".into(), a.clone());
        d.create(&a, &mut cx(&mut state, &mut fake)).unwrap();
        let id = d.uplink("p0").expect("uplink open");
        assert_eq!(
            fake.calls,
            [
                // The flag is on disk before the interface is touched.
                Call::Persist,
                Call::SetPromiscuous("p0".into(), true),
                Call::OpenUplink {
                    ifname: "p0".into(),
                    role: PortRole::Trunk {
                        native: Some(NetworkId(3)),
                        vlans: vec![]
                    },
                    id
                },
            ]
        );
        assert_eq!(
            fake.saved.as_ref().unwrap().uplinks["p0"],
            UplinkRecord {
                was_promiscuous: false
            }
        );

        // A second network on the same parent: the same port, a new role.
        state.networks.insert("b".into(), b.clone());
        fake.calls.clear();
        d.create(&b, &mut cx(&mut state, &mut fake)).unwrap();
        assert_eq!(
            fake.calls,
            [Call::SetPortRole(
                id,
                PortRole::Trunk {
                    native: Some(NetworkId(3)),
                    vlans: vec![(20, NetworkId(4))]
                }
            )]
        );

        // The endpoint's MAC is a static entry on its port.
        let ep = EndpointRecord {
            network: "b".into(),
            ip: "192.168.7.5".parse().unwrap(),
            prefix: 24,
            mac: "02:42:c0:a8:07:05".into(),
            ifname: "eth0".into(),
            port_name: "vsw1".into(),
            attach: Default::default(),
            mtu: None,
        };
        fake.calls.clear();
        d.endpoint_added(&b, &ep, PortId(42), &mut cx(&mut state, &mut fake));
        assert_eq!(
            fake.calls,
            [Call::AddStatic(
                NetworkId(4),
                ep.mac.parse().unwrap(),
                PortId(42)
            )]
        );

        // Removing one network re-roles; removing the last closes and restores the flag.
        state.networks.remove("a");
        fake.calls.clear();
        d.remove(&a, &mut cx(&mut state, &mut fake));
        assert_eq!(
            fake.calls,
            [Call::SetPortRole(
                id,
                PortRole::Trunk {
                    native: None,
                    vlans: vec![(20, NetworkId(4))]
                }
            )]
        );
        state.networks.remove("b");
        fake.calls.clear();
        d.remove(&b, &mut cx(&mut state, &mut fake));
        assert_eq!(
            fake.calls,
            [
                Call::RemovePort(id),
                Call::SetPromiscuous("p0".into(), false),
                Call::Persist
            ]
        );
        assert!(state.uplinks.is_empty());
        assert_eq!(d.uplink("p0"), None);
    }

    #[test]
    fn a_failed_uplink_leaves_the_parent_as_it_was() {
        let mut state = State::default();
        // The parent was promiscuous before: it stays so.
        let mut fake = fake_with_link("p0", true);
        fake.fail = vec!["open_uplink"];
        let mut d = Macvlan::default();
        let a = net("a", 3, MACVLAN, Some("p0"));
        state.networks.insert("a".into(), a.clone());
        let e = d.create(&a, &mut cx(&mut state, &mut fake)).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("cannot use p0 as the parent of network a: open_uplink"),
            "{e:#}"
        );
        assert_eq!(
            fake.calls,
            [
                Call::Persist,
                Call::SetPromiscuous("p0".into(), true),
                Call::SetPromiscuous("p0".into(), true),
                Call::Persist
            ]
        );
        assert!(state.uplinks.is_empty(), "the record is forgotten");
        assert_eq!(d.uplink("p0"), None);
    }

    #[test]
    fn restore_reopens_uplinks_and_restores_parents_left_by_a_crash() {
        let mut state = State::default();
        let mut fake = fake_with_link("p0", true);
        fake.links.insert(
            "p1".into(),
            Link {
                mtu: 1500,
                promiscuous: true,
            },
        );
        // p1 was a parent when the daemon died during `network rm`: no network is left on it.
        state.uplinks.insert(
            "p1".into(),
            UplinkRecord {
                was_promiscuous: false,
            },
        );
        state.uplinks.insert(
            "p0".into(),
            UplinkRecord {
                was_promiscuous: false,
            },
        );
        state
            .networks
            .insert("a".into(), net("a", 3, MACVLAN, Some("p0.7")));
        let mut d = Macvlan::default();
        d.restore(&mut cx(&mut state, &mut fake));
        let id = d.uplink("p0").unwrap();
        assert_eq!(
            fake.calls,
            [
                // p0's saved flag is kept (the one from before the switch), not re-read.
                Call::SetPromiscuous("p0".into(), true),
                Call::OpenUplink {
                    ifname: "p0".into(),
                    role: PortRole::Trunk {
                        native: None,
                        vlans: vec![(7, NetworkId(3))]
                    },
                    id
                },
                Call::SetPromiscuous("p1".into(), false),
                Call::Persist,
            ]
        );
        assert_eq!(state.uplinks.keys().collect::<Vec<_>>(), ["p0"]);
    }
}
