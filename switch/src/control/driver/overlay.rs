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

use super::{Ctx, GatewayRole, NetworkDriver};
use crate::control::api::{AttachMode, NetworkCreate, PeerInfo};
use crate::control::error::{bail, err, Context, Result};
use crate::control::state::NetworkRecord;
use crate::control::txn::Transaction;
use crate::pipeline::NetworkId;
use crate::port::vxlan::{peer_limit, PeerSpec};
use crate::port::PortId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The driver's name.
pub const OVERLAY: &str = "overlay";
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
            .ok_or_else(|| err!("an overlay network needs a VXLAN id: add -o vni=N (1..=16777215, the same on every host)"))?;
        let vni = vni
            .parse::<u32>()
            .ok()
            .and_then(encap::Vni::new)
            .filter(|v| v.get() != 0)
            .ok_or_else(|| err!("invalid vni {vni:?}: expected a number from 1 to 16777215"))?;
        let vtep = opts.get("vtep").ok_or_else(|| {
            err!("an overlay network needs the local tunnel address: add -o vtep=IP (an IPv4 address of this host on the underlay)")
        })?;
        let vtep: Ipv4Addr = vtep
            .parse()
            .map_err(|_| err!("invalid vtep {vtep:?}: expected an IPv4 address of this host"))?;
        if vtep.is_unspecified() || vtep.is_multicast() || vtep.is_broadcast() {
            bail!("vtep {vtep} is not a unicast address of this host");
        }
        let port = match opts.get("port").or(opts.get("dstport")) {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                err!("invalid port {p:?}: expected a UDP port (4789 is VXLAN's; Linux's vxlan device defaults to 8472)")
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

    /// The MTU containers get unless `-o mtu=` is given: the underlay's (`path_mtu` towards
    /// a peer, as [`super::Dataplane::path_mtu`] tells it) minus 50.
    pub fn default_mtu(&self, path_mtu: impl Fn(Ipv4Addr, Ipv4Addr) -> Option<u32>) -> u32 {
        let underlay = self
            .peers
            .first()
            .and_then(|p| path_mtu(self.vtep, *p))
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
            .map_err(|_| err!("invalid peer {p:?}: expected IPv4 addresses separated by commas, e.g. -o peers=192.168.1.2,192.168.1.3"))?;
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

/// The overlay driver and its runtime state: tunnel ports and virtual ports (not persisted:
/// rebuilt from the networks' options on start).
#[derive(Debug, Default)]
pub struct Overlay {
    /// Tunnel port of each local VTEP socket address.
    tunnels: BTreeMap<SocketAddrV4, PortId>,
    /// Virtual port of each (network, peer).
    vports: BTreeMap<(String, Ipv4Addr), PortId>,
    /// Local VTEP socket addresses whose tunnel port has its tunnel TAP.
    offloaded: BTreeSet<SocketAddrV4>,
    /// The largest inner IP packet last given to the switch for each virtual port
    /// ([`Overlay::refresh_mtu`]).
    mtus: BTreeMap<PortId, u32>,
}

/// The undo log of an overlay step: the driver and what it works on.
type Cx<'o, 'c, 'd> = (&'o mut Overlay, &'c mut Ctx<'d>);

impl Overlay {
    /// Checks that no other overlay network uses `spec`'s VNI.
    fn check_vni(name: &str, spec: &OverlaySpec, cx: &Ctx) -> Result<()> {
        for n in cx.state.networks.values() {
            if n.name == name || n.driver != OVERLAY {
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

    /// The tunnel port of `spec`'s local VTEP, opened if needed; `true` when it was opened
    /// now.
    fn tunnel_for(&mut self, spec: &OverlaySpec, cx: &mut Ctx) -> Result<(PortId, bool)> {
        let addr = SocketAddrV4::new(spec.vtep, spec.port);
        if let Some(&id) = self.tunnels.get(&addr) {
            return Ok((id, false));
        }
        let t = cx.dp.open_tunnel(addr)?;
        if t.offloaded {
            self.offloaded.insert(addr);
        }
        self.tunnels.insert(addr, t.id);
        Ok((t.id, true))
    }

    /// Adds `peer` to network `n` as a virtual port of `tunnel` (nothing if it is there).
    fn vtep_add(
        &mut self,
        n: &NetworkRecord,
        spec: &OverlaySpec,
        tunnel: PortId,
        peer: Ipv4Addr,
        cx: &mut Ctx,
    ) -> Result<()> {
        let key = (n.name.clone(), peer);
        if self.vports.contains_key(&key) {
            return Ok(());
        }
        // The switch keeps this reading; refresh_mtu compares later ones with it.
        let limit = peer_limit(cx.dp.path_mtu(spec.vtep, peer), n.mtu);
        let p = PeerSpec {
            network: NetworkId(n.id),
            vni: spec.vni,
            remote: peer,
            mtu: n.mtu,
            limit,
        };
        let name = format!("vtep:{peer}/vni{}", spec.vni);
        let vport = (cx.dp.add_vtep(name, &n.name, tunnel, p))
            .with_context(|| format!("cannot add peer {peer} to {}", n.name))?;
        self.mtus.insert(vport, limit);
        self.vports.insert(key, vport);
        Ok(())
    }

    fn vtep_remove(&mut self, network: &str, peer: Ipv4Addr, cx: &mut Ctx) {
        if let Some(vport) = self.vports.remove(&(network.to_string(), peer)) {
            self.mtus.remove(&vport);
            cx.dp.remove_vtep(vport);
        }
    }

    /// Closes the tunnel ports that no overlay network other than `except` uses.
    fn close_idle_tunnels(&mut self, except: &str, cx: &mut Ctx) {
        let in_use: Vec<SocketAddrV4> = (cx.state.networks.values())
            .filter(|n| n.name != except && n.driver == OVERLAY)
            .filter_map(|n| OverlaySpec::parse(&n.options).ok())
            .map(|s| SocketAddrV4::new(s.vtep, s.port))
            .collect();
        let idle: Vec<SocketAddrV4> = (self.tunnels.keys())
            .filter(|a| !in_use.contains(a))
            .copied()
            .collect();
        for a in idle {
            self.offloaded.remove(&a);
            if let Some(id) = self.tunnels.remove(&a) {
                cx.dp.remove_port(id);
            }
        }
    }

    /// Opens the tunnel of `n` and adds each of `peers`, all or nothing.
    fn up(
        &mut self,
        n: &NetworkRecord,
        spec: &OverlaySpec,
        peers: &[Ipv4Addr],
        cx: &mut Ctx,
    ) -> Result<()> {
        Transaction::run(&mut (self, cx), |tx, (me, cx)| {
            let (tunnel, opened) = me.tunnel_for(spec, cx)?;
            if opened {
                let name = n.name.clone();
                tx.undo("close the tunnel port", move |(me, cx): &mut Cx| {
                    me.close_idle_tunnels(&name, cx);
                    Ok(())
                });
            }
            for &peer in peers {
                me.vtep_add(n, spec, tunnel, peer, cx)?;
                let name = n.name.clone();
                tx.undo(format!("remove peer {peer}"), move |(me, cx): &mut Cx| {
                    me.vtep_remove(&name, peer, cx);
                    Ok(())
                });
            }
            Ok(())
        })
    }

    /// Reads the underlay's path MTU towards every peer again and tells the switch where the
    /// largest inner packet a peer carries changed (the underlay's MTU or route changed since
    /// the peer was added): frames above it are then answered with ICMP instead of being lost
    /// on the underlay. Runs every few seconds from the reconcile loop.
    fn refresh_mtu(&mut self, cx: &mut Ctx) {
        let mut changed = Vec::new();
        for ((network, peer), &vport) in &self.vports {
            let Some(n) = cx.state.networks.get(network) else {
                continue;
            };
            let Ok(spec) = OverlaySpec::parse(&n.options) else {
                continue;
            };
            let mtu = peer_limit(cx.dp.path_mtu(spec.vtep, *peer), n.mtu);
            let was = self.mtus.get(&vport).copied().unwrap_or_default();
            if was != mtu {
                changed.push((network.clone(), *peer, vport, mtu, was));
            }
        }
        for (network, peer, vport, mtu, was) in changed {
            tracing::info!("overlay {network}: peer {peer}: the underlay now carries inner packets of up to {mtu} bytes (was {was})");
            cx.dp.set_vtep_mtu(vport, mtu);
            self.mtus.insert(vport, mtu);
        }
    }

    /// `vswitch network connect|disconnect --peer IP NET`: adds or removes one peer of overlay
    /// network `n`, persisted in its options. Other peers' traffic is not disturbed.
    pub fn peer(
        &mut self,
        n: &NetworkRecord,
        peer: &str,
        remove: bool,
        cx: &mut Ctx,
    ) -> Result<()> {
        let network = &n.name;
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
            self.vtep_remove(network, peer, cx);
        } else {
            if spec.peers.contains(&peer) {
                bail!("{peer} is already a peer of {network}");
            }
            self.up(n, &spec, &[peer], cx)?;
            spec.peers.push(peer);
        }
        let rec = (cx.state.networks.get_mut(network))
            .ok_or_else(|| err!("network {network} vanished"))?;
        rec.options.insert("peers".into(), join_peers(&spec.peers));
        cx.save()
    }
}

impl NetworkDriver for Overlay {
    fn name(&self) -> &'static str {
        OVERLAY
    }

    /// Parses the overlay options, checks the VNI is free, and returns the underlay's MTU
    /// minus VXLAN's 50 bytes.
    fn validate(
        &self,
        c: &NetworkCreate,
        options: &BTreeMap<String, String>,
        cx: &Ctx,
    ) -> Result<u32> {
        let spec = OverlaySpec::parse(options)?;
        Self::check_vni(&c.name, &spec, cx)?;
        Ok(spec.default_mtu(|local, remote| cx.dp.path_mtu(local, remote)))
    }

    /// Traffic stays on the overlay unless `--gateway` is given.
    fn gateway_role(&self) -> GatewayRole {
        GatewayRole::SwitchIfGiven
    }

    /// Opens (or reuses) the tunnel port of the network's local VTEP and adds every peer.
    fn create(&mut self, n: &NetworkRecord, cx: &mut Ctx) -> Result<()> {
        let spec = OverlaySpec::parse(&n.options)?;
        self.up(n, &spec, &spec.peers, cx)
    }

    /// Removes every peer of the network, and its tunnel port if no other network uses it.
    fn remove(&mut self, n: &NetworkRecord, cx: &mut Ctx) {
        let peers: Vec<Ipv4Addr> = (self.vports.keys())
            .filter(|(net, _)| *net == n.name)
            .map(|(_, p)| *p)
            .collect();
        for p in peers {
            self.vtep_remove(&n.name, p, cx);
        }
        self.close_idle_tunnels(&n.name, cx);
    }

    /// Each network's tunnel and each of its peers on its own: a peer that cannot be added is
    /// logged, and the others still are.
    fn restore(&mut self, cx: &mut Ctx) {
        let nets: Vec<NetworkRecord> = (cx.state.networks.values())
            .filter(|n| n.driver == OVERLAY)
            .cloned()
            .collect();
        for n in &nets {
            let r = OverlaySpec::parse(&n.options).and_then(|spec| {
                let (tunnel, _) = self.tunnel_for(&spec, cx)?;
                for &peer in &spec.peers {
                    if let Err(e) = self.vtep_add(n, &spec, tunnel, peer, cx) {
                        tracing::warn!("overlay network {}: {e:#}", n.name);
                    }
                }
                Ok(())
            });
            if let Err(e) = r {
                tracing::warn!("overlay network {}: {e:#}", n.name);
            }
        }
    }

    fn reset(&mut self) {
        *self = Overlay::default();
    }

    /// A TAP: measured on this project's machine it moves the same TCP stream for about 5%
    /// less CPU per byte than a veth, which on an overlay, where every byte is also copied
    /// through the tunnel, is what decides throughput (see the daemon's `default_attach`).
    fn default_attach(&self) -> AttachMode {
        AttachMode::Tap
    }

    /// Without a tunnel TAP, as many segments as one UDP GSO send carries (so that a frame
    /// leaves as one send); with it none (the kernel's default: frames of up to 64 KiB leave
    /// whole).
    fn gso_max_segs(&self, n: &NetworkRecord) -> Option<u32> {
        let offloaded = OverlaySpec::parse(&n.options)
            .is_ok_and(|s| (self.offloaded).contains(&SocketAddrV4::new(s.vtep, s.port)));
        (!offloaded).then(|| crate::port::vxlan::segments_per_send(n.mtu))
    }

    fn peers(&self, n: &NetworkRecord) -> BTreeMap<Ipv4Addr, PeerInfo> {
        (self.vports.iter())
            .filter(|((net, _), _)| *net == n.name)
            .map(|((_, peer), &vport)| {
                let mtu = self.mtus.get(&vport).copied().unwrap_or_default();
                (
                    *peer,
                    PeerInfo {
                        port_id: vport.0,
                        mtu,
                    },
                )
            })
            .collect()
    }

    fn stats(&self, snap: &crate::worker::Snapshot) -> Option<(&'static str, serde_json::Value)> {
        Some(("tunnels", tunnel_stats(snap)))
    }

    fn reconcile(&mut self, cx: &mut Ctx) {
        self.refresh_mtu(cx);
    }
}

/// Counters of the tunnel ports for `vswitch stats`.
fn tunnel_stats(snap: &crate::worker::Snapshot) -> serde_json::Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.default_mtu(|_, _| Some(9000)), 1450, "no peer: 1500 - 50");
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

    use super::super::fake::{cx, network, opts, Call, Fake};
    use crate::control::state::State;

    fn overlay_net(name: &str, id: u16, vni: &str, peers: &str) -> NetworkRecord {
        let mut n = network(
            name,
            id,
            OVERLAY,
            "10.20.0.0/16",
            &[("vni", vni), ("vtep", "192.0.2.1"), ("peers", peers)],
        );
        n.mtu = 1450;
        n
    }

    /// Overlay network `a` (one peer, 192.0.2.2) created on a fake.
    fn network_a_up() -> (State, Fake, Overlay, NetworkRecord) {
        let mut state = State::default();
        let mut fake = Fake::default();
        let mut d = Overlay::default();
        let a = overlay_net("a", 3, "1", "192.0.2.2");
        state.networks.insert("a".into(), a.clone());
        d.create(&a, &mut cx(&mut state, &mut fake)).unwrap();
        (state, fake, d, a)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn validate_refuses_a_used_vni_and_derives_the_mtu_from_the_underlay() {
        let mut state = State::default();
        state
            .networks
            .insert("o1".into(), overlay_net("o1", 3, "42", ""));
        let mut fake = Fake::default();
        fake.path_mtus.insert(ip("192.0.2.2"), 9000);
        let d = Overlay::default();
        let cx = cx(&mut state, &mut fake);
        let req = |name: &str| NetworkCreate {
            name: name.into(),
            ..Default::default()
        };
        let e = d
            .validate(
                &req("o2"),
                &opts(&[("vni", "42"), ("vtep", "192.0.2.1")]),
                &cx,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vni 42 is already used by overlay network o1"),
            "{e}"
        );
        let mtu = d
            .validate(
                &req("o2"),
                &opts(&[("vni", "43"), ("vtep", "192.0.2.1"), ("peers", "192.0.2.2")]),
                &cx,
            )
            .unwrap();
        assert_eq!(mtu, 8950, "the underlay's path MTU minus 50");
    }

    #[test]
    fn networks_share_a_tunnel_per_vtep_and_the_last_one_closes_it() {
        let mut state = State::default();
        let mut fake = Fake::default();
        fake.path_mtus.insert(ip("192.0.2.2"), 1400);
        let mut d = Overlay::default();
        let a = overlay_net("a", 3, "1", "192.0.2.2,192.0.2.3");
        let b = overlay_net("b", 4, "2", "192.0.2.2");
        for n in [&a, &b] {
            state.networks.insert(n.name.clone(), n.clone());
            d.create(n, &mut cx(&mut state, &mut fake)).unwrap();
        }
        let local = SocketAddrV4::new(ip("192.0.2.1"), 4789);
        let Call::OpenTunnel(_, t) = fake.calls[0] else {
            panic!("{:?}", fake.calls)
        };
        let vtep = |c: &Call| match c {
            Call::AddVtep {
                network,
                tunnel,
                remote,
                limit,
                ..
            } => Some((network.clone(), *tunnel, *remote, *limit)),
            _ => None,
        };
        assert_eq!(
            fake.calls
                .iter()
                .filter(|c| matches!(c, Call::OpenTunnel(..)))
                .count(),
            1
        );
        assert_eq!(fake.calls[0], Call::OpenTunnel(local, t));
        assert_eq!(
            fake.calls.iter().filter_map(vtep).collect::<Vec<_>>(),
            [
                ("a".to_string(), t, ip("192.0.2.2"), 1350),
                // No path MTU known: the network's own.
                ("a".to_string(), t, ip("192.0.2.3"), 1450),
                ("b".to_string(), t, ip("192.0.2.2"), 1350),
            ]
        );
        assert_eq!(d.peers(&a).len(), 2);
        assert_eq!(d.peers(&b)[&ip("192.0.2.2")].mtu, 1350);

        // The underlay's MTU changes: reconcile tells the switch.
        fake.path_mtus.insert(ip("192.0.2.2"), 1300);
        fake.calls.clear();
        d.reconcile(&mut cx(&mut state, &mut fake));
        let vport_b = d.peers(&b)[&ip("192.0.2.2")].port_id;
        assert_eq!(fake.calls.len(), 2, "{:?}", fake.calls);
        assert!(fake
            .calls
            .contains(&Call::SetVtepMtu(PortId(vport_b), 1250)));
        assert_eq!(d.peers(&b)[&ip("192.0.2.2")].mtu, 1250);

        // Removing a keeps the tunnel (b uses it); removing b closes it.
        state.networks.remove("a");
        fake.calls.clear();
        d.remove(&a, &mut cx(&mut state, &mut fake));
        assert_eq!(fake.calls.len(), 2);
        assert!(fake.calls.iter().all(|c| matches!(c, Call::RemoveVtep(_))));
        state.networks.remove("b");
        fake.calls.clear();
        d.remove(&b, &mut cx(&mut state, &mut fake));
        assert_eq!(
            fake.calls,
            [Call::RemoveVtep(PortId(vport_b)), Call::RemovePort(t)]
        );
        assert!(d.peers(&b).is_empty());
    }

    #[test]
    fn a_failed_peer_undoes_the_network_and_leaves_other_networks_alone() {
        let (mut state, mut fake, mut d, a) = network_a_up();
        // b's second peer fails: its first peer goes again, the shared tunnel stays (a uses it).
        fake.fail_vtep = Some(ip("192.0.2.9"));
        let b = overlay_net("b", 4, "2", "192.0.2.2,192.0.2.9");
        state.networks.insert("b".into(), b.clone());
        fake.calls.clear();
        let e = d.create(&b, &mut cx(&mut state, &mut fake)).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("cannot add peer 192.0.2.9 to b"),
            "{e:#}"
        );
        let Call::AddVtep { id, .. } = fake.calls[0] else {
            panic!("{:?}", fake.calls)
        };
        assert_eq!(fake.calls[1..], [Call::RemoveVtep(id)]);
        assert!(d.peers(&b).is_empty());
        assert_eq!(d.peers(&a).len(), 1);

        // Alone on its tunnel, a network that fails takes the tunnel with it.
        let mut d = Overlay::default();
        let mut state = State::default();
        state.networks.insert("b".into(), b.clone());
        fake.calls.clear();
        d.create(&b, &mut cx(&mut state, &mut fake)).unwrap_err();
        let Call::OpenTunnel(_, t) = fake.calls[0] else {
            panic!("{:?}", fake.calls)
        };
        assert_eq!(
            fake.calls.last(),
            Some(&Call::RemovePort(t)),
            "{:?}",
            fake.calls
        );
    }

    #[test]
    fn peers_are_added_and_removed_one_at_a_time_and_persisted() {
        let (mut state, mut fake, mut d, a) = network_a_up();
        fake.calls.clear();
        let mut cx = cx(&mut state, &mut fake);
        d.peer(&a, "192.0.2.5", false, &mut cx).unwrap();
        let a2 = cx.state.networks["a"].clone();
        assert_eq!(a2.options["peers"], "192.0.2.2,192.0.2.5");
        for (p, remove, what) in [
            ("192.0.2.5", false, "already a peer"),
            ("192.0.2.7", true, "not a peer"),
            ("192.0.2.1", false, "own vtep"),
        ] {
            let e = d.peer(&a2, p, remove, &mut cx).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        d.peer(&a2, "192.0.2.2", true, &mut cx).unwrap();
        assert_eq!(cx.state.networks["a"].options["peers"], "192.0.2.5");
        assert!(matches!(fake.calls[0], Call::AddVtep { .. }));
        assert_eq!(fake.calls[1], Call::Persist);
        assert!(matches!(fake.calls[2], Call::RemoveVtep(_)));
        assert_eq!(fake.calls[3], Call::Persist);
        assert_eq!(d.peers(&a2).keys().collect::<Vec<_>>(), [&ip("192.0.2.5")]);
    }
}
