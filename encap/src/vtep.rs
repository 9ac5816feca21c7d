//! The VTEP table: which VNIs this switch serves, the network each maps to, and the remote
//! VTEPs of each VNI (the head-end replication flood list).
//!
//! Every remote VTEP address gets a small [`VtepId`] (a `u16`), shared by all the VNIs it is a
//! peer of, so the switch's MAC table can store "behind VTEP 3" in two bytes and get the
//! address back with [`VtepTable::vtep_ip`]. An id is freed when its address is no longer a
//! peer of any VNI and may then be reused for another address: [`VtepTable::remove_peer`] and
//! [`VtepTable::remove_vni`] say which ids were freed so the caller can flush MAC entries that
//! point at them first.
//!
//! The table is written by the control plane and read by the data plane; lookups by VNI use a
//! cheap multiplicative hash (keys are only inserted by the control plane, so there is nothing
//! for a remote sender to flood).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use crate::vxlan::Vni;
use wire::NetworkId;

/// A small index naming one remote VTEP (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VtepId(u16);

impl VtepId {
    /// The index as stored in a MAC table entry.
    #[inline]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The index as a `usize`, for indexing per-VTEP arrays (encap templates, counters).
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Rebuilds an id from [`VtepId::get`]; it is only meaningful for the table that issued it.
    #[inline]
    pub const fn from_raw(v: u16) -> VtepId {
        VtepId(v)
    }
}

/// What [`VtepTable::remove_peer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRemoved {
    /// The id the address had.
    pub id: VtepId,
    /// True when the address is no longer a peer of any VNI and the id was freed (flush MAC
    /// entries that point at it; it may be reused by the next new address).
    pub freed: bool,
}

/// Why a VTEP table change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VtepTableError {
    /// The VNI is not configured.
    #[error("VNI {0} is not configured: add it with add_vni before adding peers")]
    UnknownVni(Vni),
    /// The VNI already maps to another network.
    #[error("VNI {vni} already belongs to network {existing}, not {requested}: remove it first or pick another VNI")]
    VniInUse {
        /// The VNI.
        vni: Vni,
        /// The network it maps to.
        existing: NetworkId,
        /// The network asked for.
        requested: NetworkId,
    },
    /// The network already has another VNI.
    #[error(
        "network {network} already uses VNI {existing}: a network has one VNI, remove it first"
    )]
    NetworkInUse {
        /// The network.
        network: NetworkId,
        /// The VNI it already has.
        existing: Vni,
    },
    /// The address cannot be a remote VTEP.
    #[error("{0} cannot be a remote VTEP: give the peer's unicast IPv4 address")]
    BadPeer(Ipv4Addr),
    /// All 65536 ids are in use.
    #[error("too many remote VTEPs (65536): remove unused peers")]
    Full,
}

#[derive(Debug, Default)]
struct VniEntry {
    network: NetworkId,
    peers: Vec<Ipv4Addr>,
    ids: Vec<VtepId>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ip: Ipv4Addr,
    refs: u32,
}

/// Multiplicative hasher for small integer keys (VNIs, network ids).
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let r = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15u128;
        (r as u64) ^ ((r >> 64) as u64)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.0 = self.0.rotate_left(16) ^ u64::from(v);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.0 = self.0.rotate_left(32) ^ u64::from(v);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// VNIs, their networks and their remote VTEPs; see the module documentation.
#[derive(Debug, Default)]
pub struct VtepTable {
    vnis: IntMap<u32, VniEntry>,
    networks: IntMap<NetworkId, Vni>,
    slots: Vec<Option<Slot>>,
    free: Vec<u16>,
    by_ip: IntMap<u32, VtepId>,
    local_ip: Option<Ipv4Addr>,
}

impl VtepTable {
    /// An empty table.
    pub fn new() -> VtepTable {
        VtepTable::default()
    }

    /// The local VTEP address. When set, [`crate::decap()`] drops packets addressed to any other
    /// IPv4 address.
    pub fn set_local_ip(&mut self, ip: Option<Ipv4Addr>) {
        self.local_ip = ip;
    }

    /// The local VTEP address, if set.
    #[inline]
    pub fn local_ip(&self) -> Option<Ipv4Addr> {
        self.local_ip
    }

    /// Maps `vni` to `network`. Adding the same pair again does nothing.
    pub fn add_vni(&mut self, vni: Vni, network: NetworkId) -> Result<(), VtepTableError> {
        if let Some(e) = self.vnis.get(&vni.get()) {
            if e.network == network {
                return Ok(());
            }
            return Err(VtepTableError::VniInUse {
                vni,
                existing: e.network,
                requested: network,
            });
        }
        if let Some(&existing) = self.networks.get(&network) {
            return Err(VtepTableError::NetworkInUse { network, existing });
        }
        self.vnis.insert(
            vni.get(),
            VniEntry {
                network,
                ..VniEntry::default()
            },
        );
        self.networks.insert(network, vni);
        Ok(())
    }

    /// Removes a VNI and all its peers. Returns its network and the ids freed by the removal
    /// (`None` if the VNI was not configured).
    pub fn remove_vni(&mut self, vni: Vni) -> Option<(NetworkId, Vec<VtepId>)> {
        let e = self.vnis.remove(&vni.get())?;
        self.networks.remove(&e.network);
        let freed = e.ids.into_iter().filter(|&id| self.release(id)).collect();
        Some((e.network, freed))
    }

    /// The network a VNI maps to.
    #[inline]
    pub fn network(&self, vni: Vni) -> Option<NetworkId> {
        self.vnis.get(&vni.get()).map(|e| e.network)
    }

    /// The VNI of a network (for the encap direction).
    #[inline]
    pub fn vni_of_network(&self, network: NetworkId) -> Option<Vni> {
        self.networks.get(&network).copied()
    }

    /// Number of configured VNIs.
    pub fn vni_count(&self) -> usize {
        self.vnis.len()
    }

    /// Number of distinct remote VTEPs (ids in use).
    pub fn vtep_count(&self) -> usize {
        self.by_ip.len()
    }

    /// Adds a remote VTEP to a VNI's peers and returns its id. Adding a present peer returns its
    /// id and changes nothing. Other peers keep their ids and their order.
    pub fn add_peer(&mut self, vni: Vni, ip: Ipv4Addr) -> Result<VtepId, VtepTableError> {
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(VtepTableError::BadPeer(ip));
        }
        let key = u32::from(ip);
        let entry = self
            .vnis
            .get(&vni.get())
            .ok_or(VtepTableError::UnknownVni(vni))?;
        if let Some(pos) = entry.peers.iter().position(|&p| p == ip) {
            return Ok(entry.ids[pos]);
        }
        let id = match self.by_ip.get(&key) {
            Some(&id) => id,
            None => {
                let id = match self.free.pop() {
                    Some(i) => VtepId(i),
                    None if self.slots.len() <= usize::from(u16::MAX) => {
                        self.slots.push(None);
                        VtepId((self.slots.len() - 1) as u16)
                    }
                    None => return Err(VtepTableError::Full),
                };
                self.slots[id.index()] = Some(Slot { ip, refs: 0 });
                self.by_ip.insert(key, id);
                id
            }
        };
        if let Some(s) = self.slots[id.index()].as_mut() {
            s.refs += 1;
        }
        if let Some(e) = self.vnis.get_mut(&vni.get()) {
            e.peers.push(ip);
            e.ids.push(id);
        }
        Ok(id)
    }

    /// Removes a remote VTEP from one VNI; the other peers keep their order and ids. `None` when
    /// it was not a peer of that VNI.
    pub fn remove_peer(&mut self, vni: Vni, ip: Ipv4Addr) -> Option<PeerRemoved> {
        let e = self.vnis.get_mut(&vni.get())?;
        let pos = e.peers.iter().position(|&p| p == ip)?;
        e.peers.remove(pos);
        let id = e.ids.remove(pos);
        let freed = self.release(id);
        Some(PeerRemoved { id, freed })
    }

    /// Drops one reference to `id`; true when that freed it.
    fn release(&mut self, id: VtepId) -> bool {
        let Some(Some(slot)) = self.slots.get_mut(id.index()) else {
            return false;
        };
        slot.refs -= 1;
        if slot.refs > 0 {
            return false;
        }
        self.by_ip.remove(&u32::from(slot.ip));
        self.slots[id.index()] = None;
        self.free.push(id.0);
        true
    }

    /// True when `ip` is a configured peer of `vni`.
    #[inline]
    pub fn is_known_peer(&self, vni: Vni, ip: Ipv4Addr) -> bool {
        self.peer_id(vni, ip).is_some()
    }

    /// The id of `ip` if it is a peer of `vni`.
    #[inline]
    pub fn peer_id(&self, vni: Vni, ip: Ipv4Addr) -> Option<VtepId> {
        let e = self.vnis.get(&vni.get())?;
        let pos = e.peers.iter().position(|&p| p == ip)?;
        e.ids.get(pos).copied()
    }

    /// The remote VTEPs a broadcast, unknown-unicast or multicast frame of `vni` is replicated
    /// to (head-end replication); empty for an unknown VNI.
    #[inline]
    pub fn flood_list(&self, vni: Vni) -> &[Ipv4Addr] {
        self.vnis.get(&vni.get()).map_or(&[], |e| &e.peers)
    }

    /// The ids of [`VtepTable::flood_list`], in the same order.
    #[inline]
    pub fn flood_ids(&self, vni: Vni) -> &[VtepId] {
        self.vnis.get(&vni.get()).map_or(&[], |e| &e.ids)
    }

    /// The address of a remote VTEP id (`None` if the id is free).
    #[inline]
    pub fn vtep_ip(&self, id: VtepId) -> Option<Ipv4Addr> {
        self.slots.get(id.index()).copied().flatten().map(|s| s.ip)
    }

    /// The id of a remote VTEP address, whatever its VNIs.
    #[inline]
    pub fn vtep_id(&self, ip: Ipv4Addr) -> Option<VtepId> {
        self.by_ip.get(&u32::from(ip)).copied()
    }

    /// Lookup used by decap: the network of `vni`, or `Err(false)` for an unknown VNI, and the
    /// peer id of `src` or `Err(true)` for an unknown peer of a known VNI.
    #[inline]
    pub(crate) fn classify(&self, vni: Vni, src: Ipv4Addr) -> Result<(NetworkId, VtepId), bool> {
        let e = self.vnis.get(&vni.get()).ok_or(false)?;
        let pos = e.peers.iter().position(|&p| p == src).ok_or(true)?;
        match e.ids.get(pos) {
            Some(&id) => Ok((e.network, id)),
            None => Err(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }
    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, d)
    }

    #[test]
    fn vni_network_mapping() {
        let mut t = VtepTable::new();
        t.add_vni(vni(100), NetworkId(1)).unwrap();
        t.add_vni(vni(100), NetworkId(1)).unwrap(); // idempotent
        assert_eq!(
            t.add_vni(vni(100), NetworkId(2)),
            Err(VtepTableError::VniInUse {
                vni: vni(100),
                existing: NetworkId(1),
                requested: NetworkId(2)
            })
        );
        assert_eq!(
            t.add_vni(vni(200), NetworkId(1)),
            Err(VtepTableError::NetworkInUse {
                network: NetworkId(1),
                existing: vni(100)
            })
        );
        t.add_vni(vni(200), NetworkId(2)).unwrap();
        assert_eq!(t.network(vni(100)), Some(NetworkId(1)));
        assert_eq!(t.network(vni(300)), None);
        assert_eq!(t.vni_of_network(NetworkId(2)), Some(vni(200)));
        assert_eq!(t.vni_count(), 2);
        assert_eq!(t.remove_vni(vni(200)), Some((NetworkId(2), vec![])));
        assert_eq!(t.vni_of_network(NetworkId(2)), None);
        assert_eq!(t.remove_vni(vni(200)), None);
    }

    #[test]
    fn peers_add_remove_keep_others() {
        let mut t = VtepTable::new();
        t.add_vni(vni(1), NetworkId(10)).unwrap();
        assert_eq!(
            t.add_peer(vni(2), ip(1)),
            Err(VtepTableError::UnknownVni(vni(2)))
        );
        assert_eq!(
            t.add_peer(vni(1), Ipv4Addr::UNSPECIFIED),
            Err(VtepTableError::BadPeer(Ipv4Addr::UNSPECIFIED))
        );
        for bad in [Ipv4Addr::BROADCAST, Ipv4Addr::new(239, 1, 1, 1)] {
            assert_eq!(t.add_peer(vni(1), bad), Err(VtepTableError::BadPeer(bad)));
        }
        let a = t.add_peer(vni(1), ip(1)).unwrap();
        let b = t.add_peer(vni(1), ip(2)).unwrap();
        let c = t.add_peer(vni(1), ip(3)).unwrap();
        // Distinct VTEPs, distinct raw ids (what MAC table entries store).
        assert_eq!(
            [a.get(), b.get(), c.get()].map(usize::from),
            [a, b, c].map(VtepId::index)
        );
        assert!(a.get() != b.get() && b.get() != c.get() && a.get() != c.get());
        assert_eq!(t.add_peer(vni(1), ip(2)).unwrap(), b); // idempotent
        assert_eq!(t.flood_list(vni(1)), &[ip(1), ip(2), ip(3)]);
        assert_eq!(t.flood_ids(vni(1)), &[a, b, c]);
        assert!(t.is_known_peer(vni(1), ip(2)));
        assert!(!t.is_known_peer(vni(1), ip(4)));
        assert!(!t.is_known_peer(vni(9), ip(2)));

        assert_eq!(
            t.remove_peer(vni(1), ip(2)),
            Some(PeerRemoved { id: b, freed: true })
        );
        assert_eq!(t.remove_peer(vni(1), ip(2)), None);
        assert_eq!(t.flood_list(vni(1)), &[ip(1), ip(3)]);
        assert_eq!(t.peer_id(vni(1), ip(3)), Some(c));
        assert_eq!(t.vtep_ip(a), Some(ip(1)));
        assert_eq!(t.vtep_ip(b), None);
        assert_eq!(t.vtep_id(ip(3)), Some(c));
        assert!(t.flood_list(vni(77)).is_empty());
    }

    #[test]
    fn ids_shared_across_vnis_and_reused_after_free() {
        let mut t = VtepTable::new();
        t.add_vni(vni(1), NetworkId(1)).unwrap();
        t.add_vni(vni(2), NetworkId(2)).unwrap();
        let a1 = t.add_peer(vni(1), ip(1)).unwrap();
        let a2 = t.add_peer(vni(2), ip(1)).unwrap();
        assert_eq!(a1, a2);
        assert_eq!(t.vtep_count(), 1);
        assert_eq!(
            t.remove_peer(vni(1), ip(1)),
            Some(PeerRemoved {
                id: a1,
                freed: false
            })
        );
        assert_eq!(t.vtep_ip(a1), Some(ip(1)));
        let (net, freed) = t.remove_vni(vni(2)).unwrap();
        assert_eq!((net, freed), (NetworkId(2), vec![a1]));
        assert_eq!(t.vtep_ip(a1), None);
        assert_eq!(t.vtep_count(), 0);
        let b = t.add_peer(vni(1), ip(9)).unwrap();
        assert_eq!(b, a1, "freed id is reused");
        assert_eq!(t.vtep_ip(b), Some(ip(9)));
        assert_eq!(VtepId::from_raw(b.get()), b);
    }

    #[test]
    fn at_most_65536_vteps() {
        // Ids are u16: the 65537th distinct VTEP is refused rather than given a taken id.
        let mut t = VtepTable::new();
        for v in 0..256 {
            t.add_vni(vni(v), NetworkId(u16::try_from(v).unwrap()))
                .unwrap();
        }
        for n in 0..=u32::from(u16::MAX) {
            let peer = Ipv4Addr::from(0x0a00_0000 + n);
            t.add_peer(vni(n % 256), peer).unwrap();
        }
        assert_eq!(t.vtep_count(), 65536);
        let last = t.vtep_id(Ipv4Addr::from(0x0a00_0000 + 65535)).unwrap();
        assert_eq!(last.get(), u16::MAX);
        assert_eq!(
            t.add_peer(vni(0), Ipv4Addr::new(11, 0, 0, 1)),
            Err(VtepTableError::Full)
        );
        assert_eq!(
            t.vtep_ip(VtepId::from_raw(0)),
            Some(Ipv4Addr::new(10, 0, 0, 0))
        );
    }

    #[test]
    fn classify() {
        let mut t = VtepTable::new();
        t.add_vni(vni(5), NetworkId(50)).unwrap();
        let id = t.add_peer(vni(5), ip(1)).unwrap();
        assert_eq!(t.classify(vni(5), ip(1)), Ok((NetworkId(50), id)));
        assert_eq!(t.classify(vni(5), ip(2)), Err(true));
        assert_eq!(t.classify(vni(6), ip(1)), Err(false));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert!(VtepTableError::UnknownVni(vni(3))
            .to_string()
            .contains("add_vni"));
        assert!(VtepTableError::Full.to_string().contains("remove"));
    }
}
#[cfg(test)]
mod shared_peer_tests {
    use super::*;
    #[test]
    fn second_vni_same_peer() {
        let mut t = VtepTable::new();
        let ip = Ipv4Addr::new(192, 168, 77, 1);
        t.add_vni(Vni::new(200).unwrap(), NetworkId(1)).unwrap();
        t.add_peer(Vni::new(200).unwrap(), ip).unwrap();
        t.add_vni(Vni::new(300).unwrap(), NetworkId(2)).unwrap();
        t.add_peer(Vni::new(300).unwrap(), ip).unwrap();
        assert!(t.classify(Vni::new(300).unwrap(), ip).is_ok());
        assert!(t.classify(Vni::new(200).unwrap(), ip).is_ok());
    }
}
