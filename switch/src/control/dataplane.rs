//! The daemon's side of [`Dataplane`]: the switch's ports as the control plane knows them, and
//! the real worker, netlink and state directory behind the drivers' narrow interface.

use super::daemon::{Config, TunnelOffload};
use super::driver::{Dataplane, Link, Tunnel};
use super::egress;
use super::error::{err, Context, Result};
use super::state::{NetworkRecord, State};
use crate::netns::Netlink;
use crate::pipeline::{NetworkId, PortRole};
use crate::port::afpacket::{AfPacketConfig, AfPacketPort};
use crate::port::vxlan::{PeerSpec, VxlanPort};
use crate::port::{Port, PortId};
use crate::wire::MacAddr;
use crate::worker::{Command, WorkerHandle};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// `kind` of the host's own port on a network (a TAP in the host namespace).
pub const HOST_PORT_KIND: &str = "tap+vnet";
/// `container` of the host's own port on a network.
pub const HOST_PORT_OWNER: &str = "(host)";

/// A port of the switch as the control plane knows it (`vswitch ports`).
#[derive(Clone, Debug)]
pub struct PortRecord {
    pub name: String,
    pub kind: &'static str,
    pub network: String,
    pub container: String,
}

/// The kind of a VXLAN tunnel port in the port records (`vswitch ports`).
pub const TUNNEL_KIND: &str = "vxlan";

/// The switch's ports by id.
#[derive(Debug, Default)]
pub struct Ports(pub BTreeMap<PortId, PortRecord>);

impl Ports {
    /// The id of the port named `name`.
    pub fn by_name(&self, name: &str) -> Option<PortId> {
        (self.0.iter())
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
    }

    /// The lowest unused port id.
    pub fn free_id(&self) -> Result<PortId> {
        (0..PortId::MAX.0)
            .map(PortId)
            .find(|id| !self.0.contains_key(id))
            .ok_or_else(|| err!("the switch has no free port"))
    }
}

/// A fresh switch-side interface name: `vsw` and 8 random hex digits (15 characters at most).
pub fn new_port_name() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    format!("vsw{:08x}", u32::from_ne_bytes(b))
}

/// The real dataplane: the worker, the port table, netlink and the state directory.
pub struct Live<'a> {
    pub worker: &'a WorkerHandle,
    pub ports: &'a mut Ports,
    pub cfg: &'a Config,
}

impl Live<'_> {
    fn insert(
        &mut self,
        id: PortId,
        name: String,
        kind: &'static str,
        network: &str,
        container: &str,
    ) {
        self.ports.0.insert(
            id,
            PortRecord {
                name,
                kind,
                network: network.to_string(),
                container: container.to_string(),
            },
        );
    }
}

impl Dataplane for Live<'_> {
    fn open_host_port(&mut self, n: &NetworkRecord, ip: Ipv4Addr, prefix: u8) -> Result<PortId> {
        let ifname = format!("vsh{}", &new_port_name()[3..]);
        let tap = egress::host_port(&ifname, ip, prefix, n.mtu)?;
        let id = self.ports.free_id()?;
        (self.worker).add_port(
            id,
            Box::new(tap),
            PortRole::Access {
                network: NetworkId(n.id),
            },
        )?;
        self.insert(id, ifname, HOST_PORT_KIND, &n.name, HOST_PORT_OWNER);
        Ok(id)
    }

    fn open_uplink(&mut self, ifname: &str, role: PortRole, networks: &str) -> Result<PortId> {
        // Through the parent's qdisc: a NIC's queueing applies and captures on the parent
        // show what the switch sends to the LAN.
        let cfg = AfPacketConfig {
            qdisc_bypass: false,
            ..AfPacketConfig::default()
        };
        let port = AfPacketPort::open_with(ifname, cfg)
            .with_context(|| format!("cannot open {ifname} with AF_PACKET"))?;
        let kind = if port.caps().vnet_hdr {
            super::driver::macvlan::UPLINK_KIND
        } else {
            "uplink/af_packet"
        };
        let id = self.ports.free_id()?;
        (self.worker)
            .add_uplink(id, Box::new(port), role)
            .context("the switch refused the uplink port")?;
        self.insert(id, ifname.to_string(), kind, networks, "");
        Ok(id)
    }

    fn open_tunnel(&mut self, addr: SocketAddrV4) -> Result<Tunnel> {
        let mut port = VxlanPort::open(addr).with_context(|| {
            format!("cannot open the VXLAN socket on {addr}: is {} an address of this host (ip addr), and is the port free (another vxlan device with dstport {})?", addr.ip(), addr.port())
        })?;
        // Whole TCP GSO frames as tunnel GSO packets where the kernel and host allow it.
        let tap = format!("vsx{:08x}{:04x}", u32::from(*addr.ip()), addr.port());
        let fw_drops = self.cfg.tunnel_offload != TunnelOffload::Off && forward_policy_drops();
        let wanted = match self.cfg.tunnel_offload {
            TunnelOffload::Off => false,
            TunnelOffload::On => true,
            TunnelOffload::Auto if fw_drops => {
                tracing::warn!("VXLAN on {addr}: no tunnel GSO offload: this host's firewall drops forwarded packets by default (a forward chain with policy drop, as Docker sets up), and the tunnel TAP's packets are forwarded. To have it, accept them in that chain (Docker: iptables -I DOCKER-USER -i vsx+ -j ACCEPT; nftables: a rule iifname \"vsx*\" accept) and run the daemon with --tunnel-offload on");
                false
            }
            TunnelOffload::Auto => true,
        };
        let mut offloaded = false;
        if wanted {
            match port.enable_tunnel_offload(&tap) {
                Ok(()) => {
                    tracing::info!("VXLAN on {addr}: TCP frames leave whole through tunnel TAP {tap}");
                    if fw_drops {
                        tracing::info!("this host's firewall drops forwarded packets by default; {tap} relies on a rule that accepts what comes in on it");
                    }
                    offloaded = true;
                }
                Err(e) => tracing::warn!("VXLAN on {addr}: no tunnel GSO offload, every segment goes through the socket ({e})"),
            }
        }
        let id = self.ports.free_id()?;
        let name = port.name().to_string();
        (self.worker)
            .add_port(id, Box::new(port), PortRole::Tunnel)
            .context("the switch refused the tunnel port")?;
        self.insert(id, name, TUNNEL_KIND, "", "");
        Ok(Tunnel { id, offloaded })
    }

    fn add_vtep(
        &mut self,
        name: String,
        network: &str,
        tunnel: PortId,
        peer: PeerSpec,
    ) -> Result<PortId> {
        let vport = self.ports.free_id()?;
        self.worker.add_vtep(vport, tunnel, peer)?;
        self.insert(vport, name, "vxlan-peer", network, "");
        Ok(vport)
    }

    fn remove_vtep(&mut self, vport: PortId) {
        self.worker.remove_vtep(vport);
        self.ports.0.remove(&vport);
    }

    fn set_vtep_mtu(&mut self, vport: PortId, mtu: u32) {
        self.worker.set_vtep_mtu(vport, mtu);
    }

    fn remove_port(&mut self, id: PortId) {
        self.worker.remove_port(id);
        self.ports.0.remove(&id);
    }

    fn set_port_role(&mut self, id: PortId, role: PortRole, networks: &str) {
        self.worker.send(Command::SetPortRole { id, role });
        if let Some(r) = self.ports.0.get_mut(&id) {
            r.network = networks.to_string();
        }
    }

    fn add_static(&mut self, network: NetworkId, mac: MacAddr, port: PortId) {
        self.worker.send(Command::AddStatic { network, mac, port });
    }

    fn port_kind(&self, name: &str) -> Option<String> {
        let id = self.ports.by_name(name)?;
        self.ports.0.get(&id).map(|p| p.kind.to_string())
    }

    fn link(&self, ifname: &str) -> Result<Option<Link>> {
        let nl = Netlink::new().context("cannot open netlink")?;
        if !nl.link_exists(ifname)? {
            return Ok(None);
        }
        let l = nl.get_link(ifname)?;
        Ok(Some(Link {
            mtu: l.mtu,
            promiscuous: l.promiscuous,
        }))
    }

    fn set_promiscuous(&mut self, ifname: &str, on: bool) -> Result<()> {
        let nl = Netlink::new().context("cannot open netlink")?;
        Ok(nl.set_promiscuous(ifname, on)?)
    }

    fn path_mtu(&self, local: Ipv4Addr, remote: Ipv4Addr) -> Option<u32> {
        crate::port::vxlan::path_mtu(local, remote).ok()
    }

    fn persist(&mut self, state: &State) -> Result<()> {
        state.save(&self.cfg.state_dir)
    }
}

/// Whether the host's firewall drops forwarded packets by default: a chain on the `forward`
/// hook with `policy drop` (`nft list chains`), or `-P FORWARD DROP` (`iptables -S FORWARD`,
/// for legacy iptables). False when neither tool is there to ask.
fn forward_policy_drops() -> bool {
    let output = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let nft = output("nft", &["list", "chains"]).is_some_and(|s| {
        s.lines()
            .any(|l| l.contains("hook forward") && l.contains("policy drop"))
    });
    nft || output("iptables", &["-S", "FORWARD"])
        .is_some_and(|s| s.lines().any(|l| l.trim() == "-P FORWARD DROP"))
}
