//! A [`Dataplane`] for the drivers' unit tests: it records every call, hands out port ids
//! from 100 up, and fails the calls named in [`Fake::fail`].

use super::{Ctx, Dataplane, Link, Tunnel};
use crate::control::error::{bail, Result};
use crate::control::state::{NetworkRecord, State};
use crate::pipeline::{NetworkId, PortRole};
use crate::port::vxlan::PeerSpec;
use crate::port::PortId;
use crate::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// One call to the fake, with what a test asserts about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    OpenHostPort {
        network: String,
        ip: Ipv4Addr,
        prefix: u8,
    },
    OpenUplink {
        ifname: String,
        role: PortRole,
        id: PortId,
    },
    OpenTunnel(SocketAddrV4, PortId),
    AddVtep {
        network: String,
        tunnel: PortId,
        remote: Ipv4Addr,
        limit: u32,
        id: PortId,
    },
    RemoveVtep(PortId),
    SetVtepMtu(PortId, u32),
    RemovePort(PortId),
    SetPortRole(PortId, PortRole),
    AddStatic(NetworkId, MacAddr, PortId),
    SetPromiscuous(String, bool),
    Persist,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Fake {
    pub calls: Vec<Call>,
    /// Names of the methods that fail (`"open_uplink"`, `"add_vtep"`, ...).
    pub fail: Vec<&'static str>,
    /// Fail `add_vtep` for this remote only.
    pub fail_vtep: Option<Ipv4Addr>,
    /// Host interfaces.
    pub links: BTreeMap<String, Link>,
    /// Ports of the switch by name, with their kind (for `port_kind`).
    pub ports: BTreeMap<String, String>,
    /// Path MTUs towards remotes.
    pub path_mtus: BTreeMap<Ipv4Addr, u32>,
    /// The last state persisted.
    pub saved: Option<State>,
    pub next_id: PortId,
}

impl Fake {
    fn check(&self, what: &str) -> Result<()> {
        if self.fail.contains(&what) {
            bail!("{what}: injected failure");
        }
        Ok(())
    }

    fn new_id(&mut self) -> PortId {
        self.next_id.0 += 1;
        PortId(100 + self.next_id.0)
    }
}

impl Dataplane for Fake {
    fn open_host_port(&mut self, net: &NetworkRecord, ip: Ipv4Addr, prefix: u8) -> Result<PortId> {
        self.calls.push(Call::OpenHostPort {
            network: net.name.clone(),
            ip,
            prefix,
        });
        self.check("open_host_port")?;
        Ok(self.new_id())
    }

    fn open_uplink(&mut self, ifname: &str, role: PortRole, _networks: &str) -> Result<PortId> {
        self.check("open_uplink")?;
        let id = self.new_id();
        self.calls.push(Call::OpenUplink {
            ifname: ifname.into(),
            role,
            id,
        });
        Ok(id)
    }

    fn open_tunnel(&mut self, local: SocketAddrV4) -> Result<Tunnel> {
        self.check("open_tunnel")?;
        let id = self.new_id();
        self.calls.push(Call::OpenTunnel(local, id));
        Ok(Tunnel {
            id,
            offloaded: false,
        })
    }

    fn add_vtep(
        &mut self,
        _name: String,
        network: &str,
        tunnel: PortId,
        peer: PeerSpec,
    ) -> Result<PortId> {
        self.check("add_vtep")?;
        if self.fail_vtep == Some(peer.remote) {
            bail!("add_vtep {}: injected failure", peer.remote);
        }
        let id = self.new_id();
        self.calls.push(Call::AddVtep {
            network: network.into(),
            tunnel,
            remote: peer.remote,
            limit: peer.limit,
            id,
        });
        Ok(id)
    }

    fn remove_vtep(&mut self, vport: PortId) {
        self.calls.push(Call::RemoveVtep(vport));
    }

    fn set_vtep_mtu(&mut self, vport: PortId, mtu: u32) {
        self.calls.push(Call::SetVtepMtu(vport, mtu));
    }

    fn remove_port(&mut self, id: PortId) {
        self.calls.push(Call::RemovePort(id));
    }

    fn set_port_role(&mut self, id: PortId, role: PortRole, _networks: &str) {
        self.calls.push(Call::SetPortRole(id, role));
    }

    fn add_static(&mut self, network: NetworkId, mac: MacAddr, port: PortId) {
        self.calls.push(Call::AddStatic(network, mac, port));
    }

    fn port_kind(&self, name: &str) -> Option<String> {
        self.ports.get(name).cloned()
    }

    fn link(&self, ifname: &str) -> Result<Option<Link>> {
        self.check("link")?;
        Ok(self.links.get(ifname).copied())
    }

    fn set_promiscuous(&mut self, ifname: &str, on: bool) -> Result<()> {
        self.calls.push(Call::SetPromiscuous(ifname.into(), on));
        self.check("set_promiscuous")?;
        if let Some(l) = self.links.get_mut(ifname) {
            l.promiscuous = on;
        }
        Ok(())
    }

    fn path_mtu(&self, _local: Ipv4Addr, remote: Ipv4Addr) -> Option<u32> {
        self.path_mtus.get(&remote).copied()
    }

    fn persist(&mut self, state: &State) -> Result<()> {
        self.calls.push(Call::Persist);
        self.check("persist")?;
        self.saved = Some(state.clone());
        Ok(())
    }
}

/// A network record for tests: `subnet` and `-o` options as given.
pub fn network(
    name: &str,
    id: u16,
    driver: &str,
    subnet: &str,
    kv: &[(&str, &str)],
) -> NetworkRecord {
    NetworkRecord {
        name: name.into(),
        id,
        driver: driver.into(),
        subnet: Some(subnet.parse().unwrap()),
        gateway: None,
        ip_range: None,
        aux_addresses: BTreeMap::new(),
        internal: false,
        mtu: 1500,
        options: opts(kv),
        created: 0,
    }
}

/// `-o` options from pairs.
pub fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A driver's context over `state` and `fake`.
pub fn cx<'a>(state: &'a mut State, fake: &'a mut Fake) -> Ctx<'a> {
    Ctx { state, dp: fake }
}
