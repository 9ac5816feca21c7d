//! The overlay driver: networks that span hosts over VXLAN (RFC 7348).
//!
//! `vswitch network create --driver overlay --subnet CIDR [--ip-range CIDR] -o vni=N
//! -o vtep=LOCAL_IP [-o peers=IP,IP...] [-o port=4789] [-o mtu=N] NAME`
//!
//! * Each distinct local VTEP address (and UDP port) gets one tunnel port in the switch: one
//!   UDP socket, shared by every overlay network that names that address.
//! * Each peer of a network is a virtual port of that tunnel (see [`crate::pipeline`]): MACs
//!   learned from it are remembered against it, unicast to them is encapsulated to it, and
//!   broadcast, unknown unicast and multicast go to every peer (head-end replication).
//! * Peers are static (`-o peers=...`, and `vswitch network connect --peer IP NET` /
//!   `disconnect --peer IP NET` later, which leave running traffic alone). The worker only
//!   sees "add/remove a VTEP", so a shared store can feed it the same way later.
//! * The network's MTU is the underlay's (the path MTU towards the first peer) minus 50 unless
//!   `-o mtu=` says otherwise; containers get it on their interface.
//! * An overlay network has no gateway in the switch (no ARP/ping answer, no default route in
//!   the containers) unless `--gateway` is given: traffic stays on the overlay. Give
//!   `--gateway` to have each host's switch answer for that address (every host answers for
//!   its own containers; frames from tunnels never reach the local gateway).
//! * Addresses are managed per host: give each host its own `--ip-range` inside the common
//!   `--subnet`, so two hosts never hand out the same address.

use super::{Daemon, PortRecord, TunnelOffload};
use crate::control::api::PeerInfo;
use crate::control::state::NetworkRecord;
use crate::port::vxlan::{path_mtu, peer_mtu, PeerSpec, VxlanPort};
use crate::port::PortId;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Bytes VXLAN adds on the underlay (outer IPv4, UDP and VXLAN headers, inner Ethernet).
pub const OVERLAY_OVERHEAD: u32 = crate::port::vxlan::OVERHEAD;
/// Underlay MTU assumed when no peer is known yet to ask the kernel about.
const ASSUMED_UNDERLAY_MTU: u32 = 1500;

/// The overlay options of a network, parsed from its `-o` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vni: encap::Vni,
    pub vtep: Ipv4Addr,
    pub port: u16,
    pub peers: Vec<Ipv4Addr>,
}

impl OverlaySpec {
    /// Parses `vni`, `vtep`, `peers` and `port` (`dstport` is accepted as a synonym).
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<OverlaySpec> {
        let vni = opts
            .get("vni")
            .ok_or_else(|| anyhow!("an overlay network needs a VXLAN id: add -o vni=N (1..=16777215, the same on every host)"))?;
        let vni = vni
            .parse::<u32>()
            .ok()
            .and_then(encap::Vni::new)
            .filter(|v| v.get() != 0)
            .ok_or_else(|| anyhow!("invalid vni {vni:?}: expected a number from 1 to 16777215"))?;
        let vtep = opts.get("vtep").ok_or_else(|| {
            anyhow!("an overlay network needs the local tunnel address: add -o vtep=IP (an IPv4 address of this host on the underlay)")
        })?;
        let vtep: Ipv4Addr = vtep
            .parse()
            .map_err(|_| anyhow!("invalid vtep {vtep:?}: expected an IPv4 address of this host"))?;
        if vtep.is_unspecified() || vtep.is_multicast() || vtep.is_broadcast() {
            bail!("vtep {vtep} is not a unicast address of this host");
        }
        let port = match opts.get("port").or(opts.get("dstport")) {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                anyhow!("invalid port {p:?}: expected a UDP port (4789 is VXLAN's; Linux's vxlan device defaults to 8472)")
            })?,
            None => encap::IANA_VXLAN_PORT,
        };
        let peers = match opts.get("peers") {
            Some(s) => parse_peers(s)?,
            None => Vec::new(),
        };
        if peers.contains(&vtep) {
            bail!("peer {vtep} is the local vtep address; list only the other hosts");
        }
        Ok(OverlaySpec {
            vni,
            vtep,
            port,
            peers,
        })
    }

    /// The MTU containers get unless `-o mtu=` is given: the underlay's minus 50.
    pub fn default_mtu(&self) -> u32 {
        let underlay = self
            .peers
            .first()
            .and_then(|p| path_mtu(self.vtep, *p).ok())
            .filter(|m| *m >= 576)
            .unwrap_or(ASSUMED_UNDERLAY_MTU);
        underlay - OVERLAY_OVERHEAD
    }
}

/// Parses a comma-separated list of peer addresses (duplicates removed, order kept).
pub fn parse_peers(s: &str) -> Result<Vec<Ipv4Addr>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: Ipv4Addr = p
            .parse()
            .map_err(|_| anyhow!("invalid peer {p:?}: expected IPv4 addresses separated by commas, e.g. -o peers=192.168.1.2,192.168.1.3"))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            bail!("peer {ip} is not a unicast address");
        }
        if !v.contains(&ip) {
            v.push(ip);
        }
    }
    Ok(v)
}

fn join_peers(peers: &[Ipv4Addr]) -> String {
    peers
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The overlay's runtime state in the daemon: tunnel ports and virtual ports (not persisted:
/// rebuilt from the networks' options on start).
#[derive(Debug, Default)]
pub struct OverlayState {
    /// Tunnel port of each local VTEP socket address.
    tunnels: BTreeMap<SocketAddrV4, PortId>,
    /// Virtual port of each (network, peer).
    vports: BTreeMap<(String, Ipv4Addr), PortId>,
    /// Local VTEP socket addresses whose tunnel port has its tunnel TAP.
    offloaded: BTreeSet<SocketAddrV4>,
    /// The largest inner IP packet last given to the switch for each virtual port
    /// ([`Daemon::overlay_refresh_mtu`]).
    mtus: BTreeMap<PortId, u32>,
}

impl Daemon {
    /// Checks an overlay network about to be created: its VNI is not used by another overlay
    /// network of this switch.
    pub(super) fn overlay_check(&self, name: &str, spec: &OverlaySpec) -> Result<()> {
        for n in self.state.networks.values() {
            if n.name == name || n.driver != "overlay" {
                continue;
            }
            if let Ok(s) = OverlaySpec::parse(&n.options) {
                if s.vni == spec.vni {
                    bail!(
                        "vni {} is already used by overlay network {}; each overlay network needs its own vni",
                        spec.vni,
                        n.name
                    );
                }
            }
        }
        Ok(())
    }

    /// Opens (or reuses) the tunnel port of `spec`'s local VTEP and adds every peer.
    pub(super) fn overlay_up(&mut self, n: &NetworkRecord) -> Result<()> {
        let spec = OverlaySpec::parse(&n.options)?;
        let tunnel = self.tunnel_for(&spec)?;
        for peer in &spec.peers {
            self.vtep_add(n, &spec, tunnel, *peer)?;
        }
        Ok(())
    }

    fn tunnel_for(&mut self, spec: &OverlaySpec) -> Result<PortId> {
        let addr = SocketAddrV4::new(spec.vtep, spec.port);
        if let Some(&id) = self.overlay.tunnels.get(&addr) {
            return Ok(id);
        }
        let mut port = VxlanPort::open(addr).with_context(|| {
            format!("cannot open the VXLAN socket on {addr}: is {} an address of this host (ip addr), and is the port free (another vxlan device with dstport {})?", spec.vtep, spec.port)
        })?;
        // Whole TCP GSO frames as tunnel GSO packets where the kernel and host allow it.
        let tap = format!("vsx{:08x}{:04x}", u32::from(spec.vtep), spec.port);
        let fw_drops = self.cfg.tunnel_offload != TunnelOffload::Off && forward_policy_drops();
        let wanted = match self.cfg.tunnel_offload {
            TunnelOffload::Off => false,
            TunnelOffload::On => true,
            TunnelOffload::Auto if fw_drops => {
                eprintln!("vswitch: VXLAN on {addr}: no tunnel GSO offload: this host's firewall drops forwarded packets by default (a forward chain with policy drop, as Docker sets up), and the tunnel TAP's packets are forwarded. To have it, accept them in that chain (Docker: iptables -I DOCKER-USER -i vsx+ -j ACCEPT; nftables: a rule iifname \"vsx*\" accept) and run the daemon with --tunnel-offload on");
                false
            }
            TunnelOffload::Auto => true,
        };
        if wanted {
            match port.enable_tunnel_offload(&tap) {
                Ok(()) => {
                    eprintln!("vswitch: VXLAN on {addr}: TCP frames leave whole through tunnel TAP {tap}");
                    if fw_drops {
                        eprintln!("vswitch: note: this host's firewall drops forwarded packets by default; {tap} relies on a rule that accepts what comes in on it");
                    }
                    self.overlay.offloaded.insert(addr);
                }
                Err(e) => eprintln!("vswitch: VXLAN on {addr}: no tunnel GSO offload, every segment goes through the socket ({e})"),
            }
        }
        let id = self.free_port_id()?;
        let name = port_name(&port);
        self.worker
            .add_port(id, Box::new(port), crate::pipeline::PortRole::Tunnel)
            .context("the switch refused the tunnel port")?;
        self.ports.insert(
            id,
            PortRecord {
                name,
                kind: "vxlan",
                network: String::new(),
                container: String::new(),
            },
        );
        self.overlay.tunnels.insert(addr, id);
        Ok(id)
    }

    fn vtep_add(
        &mut self,
        n: &NetworkRecord,
        spec: &OverlaySpec,
        tunnel: PortId,
        peer: Ipv4Addr,
    ) -> Result<()> {
        let key = (n.name.clone(), peer);
        if self.overlay.vports.contains_key(&key) {
            return Ok(());
        }
        let vport = self.free_port_id()?;
        // The switch keeps this reading; overlay_refresh_mtu compares later ones with it.
        let limit = peer_mtu(spec.vtep, peer, n.mtu);
        let p = PeerSpec {
            network: n.id,
            vni: spec.vni,
            remote: peer,
            mtu: n.mtu,
            limit,
        };
        self.worker
            .add_vtep(vport, tunnel, p)
            .with_context(|| format!("cannot add peer {peer} to {}", n.name))?;
        self.overlay.mtus.insert(vport, limit);
        self.ports.insert(
            vport,
            PortRecord {
                name: format!("vtep:{peer}/vni{}", spec.vni),
                kind: "vxlan-peer",
                network: n.name.clone(),
                container: String::new(),
            },
        );
        self.overlay.vports.insert(key, vport);
        Ok(())
    }

    fn vtep_remove(&mut self, network: &str, peer: Ipv4Addr) {
        if let Some(vport) = self.overlay.vports.remove(&(network.to_string(), peer)) {
            self.overlay.mtus.remove(&vport);
            self.worker.remove_vtep(vport);
            self.ports.remove(&vport);
        }
    }

    /// Reads the underlay's path MTU towards every peer again and tells the switch where the
    /// largest inner packet a peer carries changed (the underlay's MTU or route changed since
    /// the peer was added): frames above it are then answered with ICMP instead of being lost
    /// on the underlay. Runs every few seconds from the reconcile loop.
    pub(super) fn overlay_refresh_mtu(&mut self) {
        let mut changed = Vec::new();
        for ((network, peer), &vport) in &self.overlay.vports {
            let Some(n) = self.state.networks.get(network) else {
                continue;
            };
            let Ok(spec) = OverlaySpec::parse(&n.options) else {
                continue;
            };
            let mtu = peer_mtu(spec.vtep, *peer, n.mtu);
            let was = self.overlay.mtus.get(&vport).copied().unwrap_or_default();
            if was != mtu {
                changed.push((network.clone(), *peer, vport, mtu, was));
            }
        }
        for (network, peer, vport, mtu, was) in changed {
            eprintln!("vswitch: overlay {network}: peer {peer}: the underlay now carries inner packets of up to {mtu} bytes (was {was})");
            self.worker.set_vtep_mtu(vport, mtu);
            self.overlay.mtus.insert(vport, mtu);
        }
    }

    /// The peers of overlay network `network` for `network inspect` (empty for other drivers).
    pub(super) fn overlay_peers(&self, network: &str) -> BTreeMap<Ipv4Addr, PeerInfo> {
        (self.overlay.vports.iter())
            .filter(|((n, _), _)| n == network)
            .map(|((_, peer), &vport)| {
                let mtu = self.overlay.mtus.get(&vport).copied().unwrap_or_default();
                (
                    *peer,
                    PeerInfo {
                        port_id: vport,
                        mtu,
                    },
                )
            })
            .collect()
    }

    /// Removes every peer of an overlay network, and its tunnel port if no other network uses
    /// it.
    pub(super) fn overlay_down(&mut self, network: &str) {
        let peers: Vec<Ipv4Addr> = self
            .overlay
            .vports
            .keys()
            .filter(|(n, _)| n == network)
            .map(|(_, p)| *p)
            .collect();
        for p in peers {
            self.vtep_remove(network, p);
        }
        let in_use: Vec<SocketAddrV4> = self
            .state
            .networks
            .values()
            .filter(|n| n.name != network && n.driver == "overlay")
            .filter_map(|n| OverlaySpec::parse(&n.options).ok())
            .map(|s| SocketAddrV4::new(s.vtep, s.port))
            .collect();
        let idle: Vec<SocketAddrV4> = self
            .overlay
            .tunnels
            .keys()
            .filter(|a| !in_use.contains(a))
            .copied()
            .collect();
        for a in idle {
            self.overlay.offloaded.remove(&a);
            if let Some(id) = self.overlay.tunnels.remove(&a) {
                self.worker.remove_port(id);
                self.ports.remove(&id);
            }
        }
    }

    /// `vswitch network connect|disconnect --peer IP NET`: adds or removes one peer of an
    /// overlay network, persisted in its options. Other peers' traffic is not disturbed.
    pub(super) fn overlay_peer(&mut self, network: &str, peer: &str, remove: bool) -> Result<()> {
        let n = self.network(network)?.clone();
        if n.driver != "overlay" {
            bail!(
                "network {network} is a {} network; peers belong to overlay networks",
                n.driver
            );
        }
        let peer = parse_peers(peer)?;
        let [peer] = peer[..] else {
            bail!("give one peer address");
        };
        let mut spec = OverlaySpec::parse(&n.options)?;
        if peer == spec.vtep {
            bail!("{peer} is this host's own vtep address");
        }
        if remove {
            if !spec.peers.contains(&peer) {
                bail!("{peer} is not a peer of {network}");
            }
            spec.peers.retain(|p| *p != peer);
            self.vtep_remove(network, peer);
        } else {
            if spec.peers.contains(&peer) {
                bail!("{peer} is already a peer of {network}");
            }
            let tunnel = self.tunnel_for(&spec)?;
            self.vtep_add(&n, &spec, tunnel, peer)?;
            spec.peers.push(peer);
        }
        let rec = self
            .state
            .networks
            .get_mut(network)
            .ok_or_else(|| anyhow!("network {network} vanished"))?;
        rec.options.insert("peers".into(), join_peers(&spec.peers));
        self.save()
    }

    /// The `gso_max_segs` a container's interface on overlay network `n` needs: without a
    /// tunnel TAP, as many segments as one UDP GSO send carries (so that a frame leaves as one
    /// send); with it none (the kernel's default: frames of up to 64 KiB leave whole).
    pub(super) fn overlay_gso_max_segs(&self, n: &NetworkRecord) -> Option<u32> {
        if n.driver != "overlay" {
            return None;
        }
        let offloaded = OverlaySpec::parse(&n.options)
            .is_ok_and(|s| (self.overlay.offloaded).contains(&SocketAddrV4::new(s.vtep, s.port)));
        (!offloaded).then(|| crate::port::vxlan::segments_per_send(n.mtu))
    }

    /// Counters of the tunnel ports for `vswitch stats`.
    pub(super) fn overlay_stats(snap: &crate::worker::Snapshot) -> serde_json::Value {
        let mut v = Vec::new();
        for (id, s) in &snap.tunnels {
            let mut drops = serde_json::Map::new();
            for r in encap::DecapReason::ALL {
                drops.insert(r.as_str().to_string(), s.decap.dropped(r).into());
            }
            v.push(serde_json::json!({
                "port_id": id,
                "tunnel_offload": s.tunnel_offload,
                "rx_datagrams": s.rx_datagrams,
                "rx_decapsulated": s.decap.ok,
                "rx_decap_drops": drops,
                "rx_oversize": s.rx_oversize,
                "rx_gro_datagrams": s.rx_gro_datagrams,
                "rx_gro_frames": s.rx_gro_frames,
                "rx_tunnel_gso": s.rx_tunnel_gso,
                "rx_split_dropped": s.rx_split_dropped,
                "rx_bad_gro": s.rx_bad_gro,
                "rx_no_vport": s.rx_no_vport,
                "tx_frames": s.tx_frames,
                "tx_datagrams": s.tx_datagrams,
                "tx_gso_sends": s.tx_gso_sends,
                "tx_tunnel_gso": s.tx_tunnel_gso,
                "tx_tunnel_errors": s.tx_tunnel_errors,
                "tx_no_peer": s.tx_no_peer,
                "tx_bad_frame": s.tx_bad_frame,
                "tx_too_big": s.tx_too_big,
                "tx_icmp_too_big": s.tx_icmp_too_big,
                "tx_full": s.tx_full,
                "tx_errors": s.tx_errors,
            }));
        }
        serde_json::Value::Array(v)
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

fn port_name(p: &VxlanPort) -> String {
    use crate::port::Port;
    p.name().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn spec_parsing() {
        let s = OverlaySpec::parse(&opts(&[
            ("vni", "42"),
            ("vtep", "10.0.0.1"),
            ("peers", "10.0.0.2, 10.0.0.3,10.0.0.2"),
        ]))
        .unwrap();
        assert_eq!(s.vni.get(), 42);
        assert_eq!(s.port, 4789);
        assert_eq!(
            s.peers,
            vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        let s = OverlaySpec::parse(&opts(&[
            ("vni", "7"),
            ("vtep", "10.0.0.1"),
            ("port", "8472"),
        ]))
        .unwrap();
        assert_eq!((s.port, s.peers.len()), (8472, 0));
        assert_eq!(s.default_mtu(), 1450, "no peer: 1500 - 50");
        for (bad, what) in [
            (opts(&[("vtep", "10.0.0.1")]), "-o vni=N"),
            (opts(&[("vni", "0"), ("vtep", "10.0.0.1")]), "1 to 16777215"),
            (
                opts(&[("vni", "16777216"), ("vtep", "10.0.0.1")]),
                "1 to 16777215",
            ),
            (opts(&[("vni", "1")]), "-o vtep=IP"),
            (opts(&[("vni", "1"), ("vtep", "x")]), "IPv4"),
            (
                opts(&[("vni", "1"), ("vtep", "10.0.0.1"), ("peers", "10.0.0.1")]),
                "local vtep",
            ),
            (
                opts(&[("vni", "1"), ("vtep", "10.0.0.1"), ("peers", "a,b")]),
                "separated by commas",
            ),
            (
                opts(&[("vni", "1"), ("vtep", "10.0.0.1"), ("port", "0")]),
                "8472",
            ),
        ] {
            let e = OverlaySpec::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e:?} should mention {what:?}");
        }
    }
}
