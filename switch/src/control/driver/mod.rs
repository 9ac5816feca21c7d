//! Network drivers: what makes a `bridge`, `macvlan` or `overlay` network, one file each.
//!
//! The daemon ([`super::daemon`]) owns the desired state and the request dispatch; the parts
//! that differ between kinds of network sit behind [`NetworkDriver`]: checking a create
//! request's options, bringing a network's own ports up and down (the host's port of a bridge,
//! a macvlan parent's uplink, the VXLAN tunnel and its peers), restoring them on a fresh
//! worker, and what a network adds to `inspect` and `stats`.
//!
//! A driver never holds the worker or a netlink socket: it acts through [`Dataplane`], a narrow
//! trait that the daemon implements over the real worker handle and netlink
//! ([`super::dataplane::Live`]) and the unit tests implement with a fake that records the
//! calls ([`fake::Fake`]). Its desired state (network records, IPAM, macvlan parents' saved
//! flags) comes in [`Ctx::state`]; its runtime state (which port is which) is its own and
//! is forgotten by [`NetworkDriver::reset`] when the worker is replaced.
//!
//! [`NetworkDriver::create`] is all or nothing (inside it uses [`super::txn::Transaction`]):
//! when it fails, the driver has undone its own steps, and the daemon undoes the network.

use super::api::{AttachMode, NetworkCreate, PeerInfo};
use super::error::Result;
use super::state::{EndpointRecord, NetworkRecord, State};
use crate::pipeline::{NetworkId, PortRole};
use crate::port::vxlan::PeerSpec;
use crate::port::PortId;
use crate::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

pub mod bridge;
#[cfg(test)]
pub mod fake;
pub mod macvlan;
pub mod overlay;

pub use bridge::Bridge;
pub use macvlan::Macvlan;
pub use overlay::Overlay;

/// What a driver may do outside itself: ports and tables in the worker, links through netlink,
/// and saving the desired state. Implemented by the daemon over the real worker
/// ([`super::dataplane::Live`]) and by a recording fake in tests.
pub trait Dataplane {
    /// Creates the host's own port on `net` (a TAP in the host's namespace holding `ip`), adds
    /// it to the switch as an access port of `net`, and returns its id.
    fn open_host_port(&mut self, net: &NetworkRecord, ip: Ipv4Addr, prefix: u8) -> Result<PortId>;
    /// Opens host interface `ifname` as an uplink port (AF_PACKET) in `role`; `networks` is
    /// what `vswitch ports` shows as its network.
    fn open_uplink(&mut self, ifname: &str, role: PortRole, networks: &str) -> Result<PortId>;
    /// Opens the VXLAN tunnel port of local VTEP socket address `local`.
    fn open_tunnel(&mut self, local: SocketAddrV4) -> Result<Tunnel>;
    /// Adds remote VTEP `peer` as a virtual port of `tunnel`, shown as `name` on `network`.
    fn add_vtep(
        &mut self,
        name: String,
        network: &str,
        tunnel: PortId,
        peer: PeerSpec,
    ) -> Result<PortId>;
    /// Removes a virtual port of a tunnel.
    fn remove_vtep(&mut self, vport: PortId);
    /// Sets the largest inner packet towards a virtual port.
    fn set_vtep_mtu(&mut self, vport: PortId, mtu: u32);
    /// Removes a port from the switch and closes it.
    fn remove_port(&mut self, id: PortId);
    /// Changes a port's role in place; `networks` as in [`Dataplane::open_uplink`].
    fn set_port_role(&mut self, id: PortId, role: PortRole, networks: &str);
    /// Adds a static MAC table entry.
    fn add_static(&mut self, network: NetworkId, mac: MacAddr, port: PortId);
    /// The `vswitch ports` kind of the switch's port named `name`, if it has one.
    fn port_kind(&self, name: &str) -> Option<String>;
    /// A host interface's MTU and promiscuous flag; `None` when there is no such interface.
    fn link(&self, ifname: &str) -> Result<Option<Link>>;
    /// Sets a host interface's promiscuous flag.
    fn set_promiscuous(&mut self, ifname: &str, on: bool) -> Result<()>;
    /// The underlay's path MTU from `local` to `remote`, if the host can tell.
    fn path_mtu(&self, local: Ipv4Addr, remote: Ipv4Addr) -> Option<u32>;
    /// Writes the desired state to disk.
    fn persist(&mut self, state: &State) -> Result<()>;
}

/// A host interface as a driver needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub mtu: u32,
    pub promiscuous: bool,
}

/// A VXLAN tunnel port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub id: PortId,
    /// Whether whole TCP GSO frames leave through a tunnel TAP.
    pub offloaded: bool,
}

/// What a driver works on: the desired state and the dataplane.
pub struct Ctx<'a> {
    pub state: &'a mut State,
    pub dp: &'a mut dyn Dataplane,
}

impl Ctx<'_> {
    /// Saves the desired state.
    pub fn save(&mut self) -> Result<()> {
        self.dp.persist(self.state)
    }
}

/// Who answers as a network's gateway address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayRole {
    /// The switch (ARP, ping, DNS, NAT), with the pool's gateway address by default.
    Switch,
    /// The switch, but only when `--gateway` is given (no default route otherwise).
    SwitchIfGiven,
    /// A router on the network's LAN: the switch registers no gateway address.
    Lan,
}

/// A kind of network. See the module documentation.
pub trait NetworkDriver {
    /// The `--driver` name.
    fn name(&self) -> &'static str;

    /// Checks a `network create` request's driver options (`options` parsed from its `-o`)
    /// before anything is allocated, and returns the network's MTU unless `-o mtu=` is given.
    fn validate(
        &self,
        req: &NetworkCreate,
        options: &BTreeMap<String, String>,
        cx: &Ctx,
    ) -> Result<u32>;

    /// Who answers as the network's gateway.
    fn gateway_role(&self) -> GatewayRole {
        GatewayRole::Switch
    }

    /// Brings up the network's own ports once it is in the state and registered in the
    /// worker. All or nothing: on error the driver has undone what it did.
    fn create(&mut self, net: &NetworkRecord, cx: &mut Ctx) -> Result<()>;

    /// Takes the network's own ports down. Called after the network left the desired state
    /// and before the worker forgets it; what cannot be undone is logged.
    fn remove(&mut self, net: &NetworkRecord, cx: &mut Ctx);

    /// Programs a fresh worker (at start, after a worker panic) for every network of this
    /// driver in the state; what cannot be restored is logged.
    fn restore(&mut self, cx: &mut Ctx);

    /// Forgets the runtime state (port ids) after the worker was replaced.
    fn reset(&mut self);

    /// A container's endpoint joined `net` on switch port `port`.
    fn endpoint_added(
        &mut self,
        _net: &NetworkRecord,
        _ep: &EndpointRecord,
        _port: PortId,
        _cx: &mut Ctx,
    ) {
    }

    /// A container's endpoint left `net` (its port is already gone).
    fn endpoint_removed(&mut self, _net: &NetworkRecord, _ep: &EndpointRecord, _cx: &mut Ctx) {}

    /// The attach mode of new endpoints when neither the request nor the daemon names one.
    fn default_attach(&self) -> AttachMode {
        AttachMode::Veth
    }

    /// The `gso_max_segs` containers' interfaces on `net` need (`None`: the kernel's default).
    fn gso_max_segs(&self, _net: &NetworkRecord) -> Option<u32> {
        None
    }

    /// The peers `network inspect` shows.
    fn peers(&self, _net: &NetworkRecord) -> BTreeMap<Ipv4Addr, PeerInfo> {
        BTreeMap::new()
    }

    /// What the driver adds to `vswitch stats` (a key and its value).
    fn stats(&self, _snap: &crate::worker::Snapshot) -> Option<(&'static str, serde_json::Value)> {
        None
    }

    /// Periodic work (every few seconds, from the daemon's reconcile loop).
    fn reconcile(&mut self, _cx: &mut Ctx) {}
}

/// The drivers of a daemon, one of each kind.
#[derive(Debug, Default)]
pub struct Drivers {
    pub bridge: Bridge,
    pub macvlan: Macvlan,
    pub overlay: Overlay,
}

impl Drivers {
    /// The driver named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn NetworkDriver> {
        match name {
            bridge::BRIDGE => Some(&self.bridge),
            macvlan::MACVLAN => Some(&self.macvlan),
            overlay::OVERLAY => Some(&self.overlay),
            _ => None,
        }
    }

    /// The driver named `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut dyn NetworkDriver> {
        match name {
            bridge::BRIDGE => Some(&mut self.bridge),
            macvlan::MACVLAN => Some(&mut self.macvlan),
            overlay::OVERLAY => Some(&mut self.overlay),
            _ => None,
        }
    }

    /// Every driver, in the order they are restored.
    pub fn all_mut(&mut self) -> [&mut dyn NetworkDriver; 3] {
        [&mut self.bridge, &mut self.overlay, &mut self.macvlan]
    }

    /// Every driver.
    pub fn all(&self) -> [&dyn NetworkDriver; 3] {
        [&self.bridge, &self.overlay, &self.macvlan]
    }
}
