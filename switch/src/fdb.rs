//! The MAC table (forwarding database) of the switch.
//!
//! # Design
//!
//! * **Key** = (network id, MAC) packed into one `u64`: the network in the top 16 bits, the
//!   48-bit address below. A key of 0 (network 0, MAC 00:00:00:00:00:00) marks an empty slot:
//!   the zero address is never learned nor accepted as a static entry.
//! * **Slots** are 16 bytes: key, a coarse timestamp (`u32` seconds, passed in by the caller —
//!   the table never reads a clock), the port, and a 15-bit generation plus the static flag.
//!   Four slots share a cache line. The slots live in their own mapping, line-aligned, and
//!   2 MiB-aligned from 2 MiB up so that every page of a big table is a transparent huge page.
//! * **Open addressing** with linear probing and backward-shift deletion (no tombstones). The
//!   table has a power-of-two number of slots, at least twice the configured capacity, so the
//!   load factor stays at or below 1/2 and probe sequences stay short. A key's home is the
//!   first slot of a cache line (a bucket of four), so a probe starts with a whole line, and
//!   the lookup and the learn's freshness check compare the line's four keys without a branch
//!   per slot; at load 1/2 about 3% of the keys sit past their home line (9% when a home was
//!   any slot), which costs a second, dependent miss. At one million entries the table costs
//!   34.3 bytes per entry (see [`Fdb::memory_bytes`]).
//! * **Hashing** is a folded 64x64->128 multiply of the key with a per-table random seed
//!   (taken from std's `RandomState` at construction), so a host that sends chosen MACs cannot
//!   aim them at one probe chain. Tests may fix the seed ([`FdbConfig::seed`]).
//! * **No lock.** The table is owned by one worker thread; the control plane reads snapshots.
//! * **Learning writes as little as possible:** a hit on the same port whose timestamp already
//!   equals `now` writes nothing; otherwise only the timestamp is refreshed.
//! * **Flush by epoch.** Flushing a port or a network does not walk the table: a global
//!   generation counter is bumped and recorded as the port's (network's) flush generation.
//!   An entry whose generation is older than its port's or its network's flush generation counts
//!   as absent; it is reclaimed lazily, when a probe, an eviction scan or an aging slice meets
//!   it. Generations have 15 bits: on the rare wrap (32767 flushes), one compaction pass
//!   removes stale entries and restarts the counter.
//! * **Aging** ([`Fdb::age`]) runs in small slices, each visiting a bounded number of slots from
//!   a cursor that sweeps the table, so the worker can call it between batches.
//! * **Limits** (global, per network, per port) and **fair eviction** as in OVS's
//!   `lib/mac-learning`: when a limit is reached, the victim is the oldest entry of the port
//!   holding the most entries (for the per-port limit, the port's own oldest entry), so a MAC
//!   flood from one port pushes out only that port's entries. "Oldest" is sampled: the scan
//!   from a rotating cursor keeps the oldest of the first [`EVICT_SAMPLE`] candidates it meets
//!   (when the scope has no more than [`EVICT_SAMPLE`] entries, that is the exact oldest). Only dynamic entries count toward the per-port
//!   and per-network limits; static entries occupy the table but are never evicted.
//! * **Static entries** never move and never age; a frame from another port with a static
//!   entry's source address is counted as a conflict and does not move it.

use crate::anon_map::{AnonMap, MapOptions};
use crate::wire::{MacAddr, PortId};
use std::hash::{BuildHasher, Hasher};

/// Identifier of an isolated layer-2 network (a Docker network, a VLAN): a `u16` newtype
/// from `wire`.
pub use crate::wire::NetworkId;

/// Default time after which an unrefreshed dynamic entry is removed, in seconds.
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Number of candidates an eviction scan compares before it picks the oldest.
pub const EVICT_SAMPLE: usize = 8;

const STATIC_BIT: u16 = 0x8000;
const GEN_MASK: u16 = 0x7fff;
const IDS: usize = 1 << 16;
/// Slots per 64-byte cache line (the table is line-aligned).
const LINE_SLOTS: usize = 64 / std::mem::size_of::<Slot>();

/// Packs (network, MAC) into a table key.
#[inline]
pub fn fdb_key(network: NetworkId, mac: MacAddr) -> u64 {
    ((network.0 as u64) << 48) | mac.to_u64()
}

/// A 48-bit MAC (as from [`MacAddr::to_u64`]) may be learned: unicast and non-zero.
#[inline]
pub fn mac_u64_learnable(mac: u64) -> bool {
    mac & 0x0100_0000_0000 == 0 && mac != 0
}

/// Errors of the control-plane calls of the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// The address cannot be a table entry.
    #[error("MAC address {0} cannot be a table entry: it must be unicast and non-zero")]
    InvalidMac(MacAddr),
    /// No room for a static entry.
    #[error(
        "the MAC table is full of static entries ({0} slots); remove some or raise fdb_capacity"
    )]
    Full(usize),
}

/// Configuration of a [`Fdb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most entries the table holds (static and dynamic).
    pub capacity: usize,
    /// Most dynamic entries one network may hold.
    pub max_per_network: usize,
    /// Most dynamic entries one port may hold.
    pub max_per_port: usize,
    /// Seconds after which an unrefreshed dynamic entry ages out.
    pub aging_secs: u32,
    /// Hash seed; `None` draws a random one (the normal case). Fix it only in tests.
    pub seed: Option<u64>,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            capacity: 65536,
            max_per_network: 65536,
            max_per_port: 8192,
            aging_secs: DEFAULT_AGING_SECS,
            seed: None,
        }
    }
}

/// Statistics of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdbCounters {
    /// New entries learned.
    pub learned: u64,
    /// Addresses that moved from one port to another.
    pub moved: u64,
    /// Entries removed by aging.
    pub aged: u64,
    /// Entries removed to make room under a limit.
    pub evicted: u64,
    /// Addresses not learned because a limit was reached and nothing could be evicted.
    pub refused: u64,
    /// Frames whose source matched a static entry of another port (the entry did not move).
    pub static_conflicts: u64,
    /// Flushed entries reclaimed lazily.
    pub reclaimed: u64,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Known on this port and fresh: nothing was written.
    Unchanged,
    /// Known on this port: the timestamp was refreshed.
    Refreshed,
    /// A new entry.
    Learned,
    /// The address moved here from another port.
    Moved,
    /// Not learned: a limit was reached and nothing could be evicted.
    Refused,
    /// A static entry of another port holds this address.
    StaticConflict,
    /// Broadcast, multicast or zero source: never learned.
    NotLearnable,
}

/// One entry, as the control plane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntryView {
    pub network: NetworkId,
    pub mac: MacAddr,
    pub port: PortId,
    /// Seconds since the entry was last refreshed (0 for static entries).
    pub age_secs: u32,
    pub is_static: bool,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
struct Slot {
    key: u64,
    ts: u32,
    port: PortId,
    /// Generation (low 15 bits) and [`STATIC_BIT`].
    gen: u16,
}

const EMPTY: Slot = Slot {
    key: 0,
    ts: 0,
    port: PortId(0),
    gen: 0,
};

impl Slot {
    #[inline]
    fn net(&self) -> usize {
        (self.key >> 48) as usize
    }
    #[inline]
    fn is_static(&self) -> bool {
        self.gen & STATIC_BIT != 0
    }
    #[inline]
    fn generation(&self) -> u16 {
        self.gen & GEN_MASK
    }
}

/// The slot array, in its own anonymous mapping ([`AnonMap`]): 2 MiB-aligned when it is at
/// least 2 MiB, so every page of it can be a transparent huge page (a malloc'd block starts at
/// an arbitrary 4 KiB page, which left its first and last partial 2 MiB on small pages), and
/// advised before any page is touched. The kernel hands out zeroed pages, and a zeroed slot is
/// [`EMPTY`].
struct SlotTable {
    /// The mapping the slots live in, page-aligned, so `Slot`-aligned (unmapped when the table
    /// is dropped).
    map: AnonMap,
    len: usize,
}

impl SlotTable {
    /// `len` empty slots (`len` > 0). Panics like a failed allocation if memory is exhausted.
    fn new(len: usize) -> SlotTable {
        let layout = std::alloc::Layout::array::<Slot>(len)
            .unwrap_or_else(|_| panic!("a MAC table of {len} slots is too large"));
        let map = AnonMap::new(
            layout.size(),
            MapOptions {
                huge: true,
                populate: false,
            },
        )
        .unwrap_or_else(|_| std::alloc::handle_alloc_error(layout));
        SlotTable { map, len }
    }
}

impl std::ops::Deref for SlotTable {
    type Target = [Slot];
    #[inline(always)]
    fn deref(&self) -> &[Slot] {
        // SAFETY: the mapping holds `len` slots (its size is their layout's), is live as long
        // as the table, owned by it alone, and page-aligned (so `Slot`-aligned); zeroed memory is a valid `Slot`, and every write goes
        // through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<Slot>(), self.len) }
    }
}

impl std::ops::DerefMut for SlotTable {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast::<Slot>(), self.len) }
    }
}

enum Scope {
    Global,
    Network(usize),
    Port(PortId),
}

fn id_array<T: Copy + Default>() -> Box<[T; IDS]> {
    vec![T::default(); IDS]
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!("the vector has exactly IDS elements"))
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// The MAC table. See the module documentation for the design.
pub struct Fdb {
    slots: SlotTable,
    mask: usize,
    /// `mask` without the slot-in-line bits: a home is the first slot of a cache line.
    home_mask: usize,
    seed0: u64,
    seed1: u64,
    /// Occupied slots, flushed-but-unreclaimed ones included.
    len: usize,
    capacity: usize,
    max_per_network: u32,
    max_per_port: u32,
    aging_secs: u32,
    cur_gen: u16,
    port_flush: Box<[u16; IDS]>,
    net_flush: Box<[u16; IDS]>,
    /// Dynamic entries per port whose generation is not older than the port's flush.
    port_count: Box<[u32; IDS]>,
    /// Dynamic entries per network whose generation is not older than the network's flush.
    net_count: Box<[u32; IDS]>,
    /// Highest port id that ever held an entry (bounds the victim search).
    max_port: usize,
    age_cursor: usize,
    evict_cursor: usize,
    counters: FdbCounters,
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("slots", &self.slots.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Fdb {
    /// A table for `cfg.capacity` entries (at least 1). All memory is allocated here.
    pub fn new(cfg: FdbConfig) -> Fdb {
        let capacity = cfg.capacity.max(1);
        let nslots = (capacity * 2).next_power_of_two().max(16);
        let seed = cfg.seed.unwrap_or_else(random_u64);
        Fdb {
            slots: SlotTable::new(nslots),
            mask: nslots - 1,
            home_mask: (nslots - 1) & !(LINE_SLOTS - 1),
            seed0: seed ^ 0x243f_6a88_85a3_08d3,
            seed1: (seed.rotate_left(29) ^ 0x1319_8a2e_0370_7344) | 1,
            len: 0,
            capacity,
            max_per_network: cfg.max_per_network.min(u32::MAX as usize) as u32,
            max_per_port: cfg.max_per_port.min(u32::MAX as usize) as u32,
            aging_secs: cfg.aging_secs,
            cur_gen: 0,
            port_flush: id_array(),
            net_flush: id_array(),
            port_count: id_array(),
            net_count: id_array(),
            max_port: 0,
            age_cursor: 0,
            evict_cursor: 0,
            counters: FdbCounters::default(),
        }
    }

    /// Most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Occupied slots, including flushed entries not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries (walks the table: control plane only).
    pub fn live_len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key != 0 && self.live(s))
            .count()
    }

    /// Statistics.
    pub fn counters(&self) -> &FdbCounters {
        &self.counters
    }

    /// Dynamic entries currently counted for `port`.
    pub fn port_entries(&self, port: PortId) -> usize {
        self.port_count[port.index()] as usize
    }

    /// Dynamic entries currently counted for `network`.
    pub fn network_entries(&self, network: NetworkId) -> usize {
        self.net_count[network.index()] as usize
    }

    /// Aging time in seconds.
    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }

    /// Changes the aging time; takes effect at the next aging slice.
    pub fn set_aging_secs(&mut self, secs: u32) {
        self.aging_secs = secs;
    }

    /// Bytes of memory the table owns (slots plus per-port and per-network arrays).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
            + std::mem::size_of_val(&*self.port_flush)
            + std::mem::size_of_val(&*self.net_flush)
            + std::mem::size_of_val(&*self.port_count)
            + std::mem::size_of_val(&*self.net_count)
            + std::mem::size_of::<Fdb>()
    }

    /// The home slot of `key`: where its probe starts, always the first slot of a cache line
    /// (so the first slots of its probe are one line). The pipeline computes it once
    /// per key and passes it to [`Fdb::lookup_from`] and [`Fdb::learn_from`].
    #[inline]
    pub fn home(&self, key: u64) -> usize {
        let m = ((key ^ self.seed0) as u128).wrapping_mul(self.seed1 as u128);
        ((m as u64) ^ ((m >> 64) as u64)) as usize & self.home_mask
    }

    /// Looks for `key` in the line that starts at `home` (its home), comparing the line's
    /// slots without a branch per slot (where in the line a key sits is random, so a branch
    /// per slot mispredicted). `Some(Some(i))`: slot `i` holds the key; `Some(None)`: the
    /// key is absent (the line has an empty slot, and linear probing leaves no empty slot
    /// between a key's home and the key); `None`: the line is full of other keys, the probe
    /// goes on past it. `home` must be a line start ([`Fdb::home`] masked by `home_mask`).
    #[inline(always)]
    fn probe_line(&self, key: u64, home: usize) -> Option<Option<usize>> {
        if key == 0 {
            // The empty key is never stored (it would "hit" empty slots).
            return Some(None);
        }
        let line = self.slots.get(home..home + LINE_SLOTS)?;
        let mut hit = 0u32;
        let mut empty = 0u32;
        for (n, s) in line.iter().enumerate() {
            hit |= u32::from(s.key == key) << n;
            empty |= u32::from(s.key == 0) << n;
        }
        if hit != 0 {
            Some(Some(home + hit.trailing_zeros() as usize))
        } else if empty != 0 {
            Some(None)
        } else {
            None
        }
    }

    /// The slot holding `key`, probing slot by slot from `i` (past a full home line).
    #[inline(never)]
    fn probe_rest(&self, key: u64, mut i: usize) -> Option<usize> {
        loop {
            i &= self.mask;
            let k = self.slots[i].key;
            if k == 0 {
                return None;
            }
            if k == key {
                return Some(i);
            }
            i += 1;
        }
    }

    #[inline]
    fn live(&self, s: &Slot) -> bool {
        let g = s.generation();
        g == self.cur_gen || (g >= self.port_flush[s.port.index()] && g >= self.net_flush[s.net()])
    }

    /// Looks up a packed key (see [`fdb_key`]): the port, if the address is known.
    #[inline]
    pub fn lookup_key(&self, key: u64) -> Option<PortId> {
        self.lookup_from(key, self.home(key))
    }

    /// [`Fdb::lookup_key`] with the key's home slot already computed ([`Fdb::home`]).
    #[inline(always)]
    pub fn lookup_from(&self, key: u64, home: usize) -> Option<PortId> {
        let h = home & self.home_mask;
        let at = match self.probe_line(key, h) {
            Some(at) => at?,
            None => self.probe_rest(key, h + LINE_SLOTS)?,
        };
        let s = &self.slots[at];
        if self.live(s) {
            Some(s.port)
        } else {
            None
        }
    }

    /// Starts loading the cache line of slot `home` (from [`Fdb::home`]) without waiting for
    /// it. The pipeline calls this for each key of a batch as soon as it has the key, so the
    /// cache misses of the whole batch overlap with each other and with the rest of the
    /// classification. A prefetch instruction retires at once, where a load that misses holds
    /// the core's reorder buffer until its data arrive: 64 loads of a batch filled it and
    /// stalled.
    #[inline(always)]
    pub fn prefetch(&self, home: usize) {
        let i = home & self.mask;
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.slots.as_ptr().wrapping_add(i) as *const i8;
            // SAFETY: `i` is masked to the table, so `p` points into `slots`; a prefetch has
            // no architectural effect (it neither faults nor changes memory), it only moves
            // the line towards the core.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::hint::black_box(self.slots[i].key);
    }

    /// The port `mac` was learned on in `network`.
    pub fn lookup(&self, network: NetworkId, mac: MacAddr) -> Option<PortId> {
        self.lookup_key(fdb_key(network, mac))
    }

    /// Learns that `mac` is behind `port` in `network` at time `now` (seconds).
    pub fn learn(&mut self, network: NetworkId, mac: MacAddr, port: PortId, now: u32) -> Learn {
        if !mac.is_learnable() {
            return Learn::NotLearnable;
        }
        self.learn_key(fdb_key(network, mac), port, now)
    }

    /// [`Fdb::learn`] on a packed key. The caller has checked that the MAC is learnable
    /// ([`mac_u64_learnable`]); an unlearnable key is ignored.
    #[inline]
    pub fn learn_key(&mut self, key: u64, port: PortId, now: u32) -> Learn {
        self.learn_from(key, self.home(key), port, now)
    }

    /// [`Fdb::learn_key`] with the key's home slot already computed ([`Fdb::home`]). The
    /// common case — the address sits in its home line, on this port, refreshed this second —
    /// is a few inlined compares that write nothing.
    #[inline(always)]
    pub fn learn_from(&mut self, key: u64, home: usize, port: PortId, now: u32) -> Learn {
        let h = home & self.home_mask;
        if let Some(Some(i)) = self.probe_line(key, h) {
            let s = &self.slots[i];
            if s.port == port && (s.ts == now || s.is_static()) && self.live(s) {
                return Learn::Unchanged;
            }
        }
        self.learn_slow(key, h, port, now)
    }

    #[inline(never)]
    fn learn_slow(&mut self, key: u64, home: usize, port: PortId, now: u32) -> Learn {
        if !mac_u64_learnable(key & 0xffff_ffff_ffff) {
            return Learn::NotLearnable;
        }
        let mut i = home;
        loop {
            let s = self.slots[i];
            if s.key == 0 {
                break;
            }
            if !self.live(&s) {
                // Flushed: reclaim it now. Backward shift keeps every chain intact, so the
                // probe goes on from the same slot.
                self.delete_slot(i);
                self.counters.reclaimed += 1;
                continue;
            }
            if s.key == key {
                if s.port == port {
                    if s.ts == now || s.is_static() {
                        return Learn::Unchanged;
                    }
                    let slot = &mut self.slots[i];
                    slot.ts = now;
                    slot.gen = self.cur_gen;
                    return Learn::Refreshed;
                }
                if s.is_static() {
                    self.counters.static_conflicts += 1;
                    return Learn::StaticConflict;
                }
                self.delete_slot(i);
                return match self.insert_new(key, port, now, false) {
                    Ok(()) => {
                        self.counters.moved += 1;
                        Learn::Moved
                    }
                    Err(()) => Learn::Refused,
                };
            }
            i = (i + 1) & self.mask;
        }
        match self.insert_new(key, port, now, false) {
            Ok(()) => {
                self.counters.learned += 1;
                Learn::Learned
            }
            Err(()) => Learn::Refused,
        }
    }

    /// Removes the counts an entry contributes (by the rule: an entry counts for its port
    /// (network) iff its generation is not older than that port's (network's) flush).
    #[inline]
    fn forget(&mut self, s: &Slot) {
        if s.is_static() {
            return;
        }
        let g = s.generation();
        if g >= self.port_flush[s.port.index()] {
            self.port_count[s.port.index()] -= 1;
        }
        if g >= self.net_flush[s.net()] {
            self.net_count[s.net()] -= 1;
        }
    }

    /// Deletes slot `i` (adjusting counts) with backward-shift deletion.
    fn delete_slot(&mut self, i: usize) {
        let s = self.slots[i];
        self.forget(&s);
        self.len -= 1;
        self.shift_out(i);
    }

    fn shift_out(&mut self, mut i: usize) {
        let mask = self.mask;
        self.slots[i] = EMPTY;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.key == 0 {
                return;
            }
            let h = self.home(s.key);
            // The entry at j may move to the hole at i unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.slots[i] = s;
                self.slots[j] = EMPTY;
                i = j;
            }
        }
    }

    /// Inserts a key known to be absent, enforcing the limits.
    fn insert_new(&mut self, key: u64, port: PortId, now: u32, is_static: bool) -> Result<(), ()> {
        let net = (key >> 48) as usize;
        if !is_static {
            if self.port_count[port.index()] >= self.max_per_port
                && !self.make_room(Scope::Port(port), now)
            {
                self.counters.refused += 1;
                return Err(());
            }
            if self.net_count[net] >= self.max_per_network
                && !self.make_room(Scope::Network(net), now)
            {
                self.counters.refused += 1;
                return Err(());
            }
        }
        if self.len >= self.capacity && !self.make_room(Scope::Global, now) {
            self.counters.refused += 1;
            return Err(());
        }
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.key == 0 {
                break;
            }
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot {
            key,
            ts: now,
            port,
            gen: self.cur_gen | if is_static { STATIC_BIT } else { 0 },
        };
        self.len += 1;
        if !is_static {
            self.port_count[port.index()] += 1;
            self.net_count[net] += 1;
            self.max_port = self.max_port.max(port.index());
        }
        Ok(())
    }

    fn under_limit(&self, scope: &Scope) -> bool {
        match *scope {
            Scope::Global => self.len < self.capacity,
            Scope::Network(n) => self.net_count[n] < self.max_per_network,
            Scope::Port(p) => self.port_count[p.index()] < self.max_per_port,
        }
    }

    /// Frees one unit under `scope`'s limit: reclaims flushed entries met on the way, else
    /// evicts the oldest sampled entry of the fairest victim. False if nothing can go.
    fn make_room(&mut self, scope: Scope, now: u32) -> bool {
        let victim_port = match scope {
            Scope::Port(p) => Some(p),
            Scope::Network(_) => None,
            Scope::Global => {
                let mut best = 0usize;
                let mut best_n = 0u32;
                for p in 0..=self.max_port {
                    if self.port_count[p] > best_n {
                        best_n = self.port_count[p];
                        best = p;
                    }
                }
                if best_n == 0 {
                    None
                } else {
                    Some(PortId(best as u16))
                }
            }
        };
        let n = self.slots.len();
        let mut i = self.evict_cursor & self.mask;
        let mut best: Option<(usize, (u32, u32))> = None;
        let mut found = 0;
        let mut visited = 0;
        while visited < n && found < EVICT_SAMPLE {
            let s = self.slots[i];
            if s.key != 0 {
                if !self.live(&s) {
                    self.delete_slot(i);
                    self.counters.reclaimed += 1;
                    if self.under_limit(&scope) {
                        self.evict_cursor = i;
                        return true;
                    }
                    // Re-examine slot i: an entry may have shifted into it.
                    visited += 1;
                    continue;
                }
                if !s.is_static() {
                    let matches = match scope {
                        Scope::Port(_) | Scope::Global => Some(s.port) == victim_port,
                        Scope::Network(net) => s.net() == net,
                    };
                    if matches {
                        found += 1;
                        let weight = match scope {
                            Scope::Network(_) => self.port_count[s.port.index()],
                            _ => 0,
                        };
                        let score = (weight, now.saturating_sub(s.ts));
                        if best.is_none_or(|(_, b)| score > b) {
                            best = Some((i, score));
                        }
                    }
                }
            }
            visited += 1;
            i = (i + 1) & self.mask;
        }
        self.evict_cursor = i;
        match best {
            Some((at, _)) => {
                self.delete_slot(at);
                self.counters.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Adds (or converts to) a static entry: `mac` in `network` is behind `port`, forever.
    pub fn add_static(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
        now: u32,
    ) -> Result<(), FdbError> {
        if !mac.is_learnable() {
            return Err(FdbError::InvalidMac(mac));
        }
        let key = fdb_key(network, mac);
        self.remove_key(key);
        self.insert_new(key, port, now, true).map_err(|()| {
            self.counters.refused -= 1;
            FdbError::Full(self.capacity)
        })
    }

    /// Removes the entry for `mac` in `network` (static or dynamic). True if one was live.
    pub fn remove(&mut self, network: NetworkId, mac: MacAddr) -> bool {
        self.remove_key(fdb_key(network, mac))
    }

    fn remove_key(&mut self, key: u64) -> bool {
        if key == 0 {
            return false;
        }
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.key == key {
                let was_live = self.live(&s);
                self.delete_slot(i);
                return was_live;
            }
            if s.key == 0 {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn bump_gen(&mut self) {
        if self.cur_gen == GEN_MASK {
            self.compact();
        }
        self.cur_gen += 1;
    }

    /// Removes every flushed entry and restarts generations at 0 (once per 32767 flushes).
    fn compact(&mut self) {
        loop {
            let mut removed = 0;
            let mut i = 0;
            while i < self.slots.len() {
                let s = self.slots[i];
                if s.key != 0 && !self.live(&s) {
                    self.delete_slot(i);
                    self.counters.reclaimed += 1;
                    removed += 1;
                    continue;
                }
                i += 1;
            }
            if removed == 0 {
                break;
            }
        }
        for s in self.slots.iter_mut() {
            s.gen &= STATIC_BIT;
        }
        self.port_flush.fill(0);
        self.net_flush.fill(0);
        self.cur_gen = 0;
    }

    /// Forgets every entry (static ones included) learned on `port`, in O(1).
    pub fn flush_port(&mut self, port: PortId) {
        self.bump_gen();
        self.port_flush[port.index()] = self.cur_gen;
        self.port_count[port.index()] = 0;
    }

    /// Forgets every entry (static ones included) of `network`, in O(1).
    pub fn flush_network(&mut self, network: NetworkId) {
        self.bump_gen();
        self.net_flush[network.index()] = self.cur_gen;
        self.net_count[network.index()] = 0;
    }

    /// One aging slice: visits at most `max_visits` slots from where the last slice stopped,
    /// removing dynamic entries not refreshed for the aging time and reclaiming flushed ones.
    /// Returns how many entries it removed.
    pub fn age(&mut self, now: u32, max_visits: usize) -> usize {
        let mut removed = 0;
        let mut visited = 0;
        let mut i = self.age_cursor & self.mask;
        while visited < max_visits {
            visited += 1;
            let s = self.slots[i];
            if s.key != 0 {
                if !self.live(&s) {
                    self.delete_slot(i);
                    self.counters.reclaimed += 1;
                    removed += 1;
                    continue; // re-examine i
                }
                if !s.is_static() && now.saturating_sub(s.ts) >= self.aging_secs {
                    self.delete_slot(i);
                    self.counters.aged += 1;
                    removed += 1;
                    continue;
                }
            }
            i = (i + 1) & self.mask;
        }
        self.age_cursor = i;
        removed
    }

    /// A snapshot of the live entries, for the control plane (walks the whole table).
    pub fn entries(&self, now: u32) -> impl Iterator<Item = FdbEntryView> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0 && self.live(s))
            .map(move |s| FdbEntryView {
                network: NetworkId(s.net() as u16),
                mac: MacAddr::from_u64(s.key),
                port: s.port,
                age_secs: if s.is_static() {
                    0
                } else {
                    now.saturating_sub(s.ts)
                },
                is_static: s.is_static(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    fn cfg(capacity: usize) -> FdbConfig {
        FdbConfig {
            capacity,
            max_per_network: capacity,
            max_per_port: capacity,
            aging_secs: 300,
            seed: Some(7),
        }
    }

    #[test]
    fn learn_lookup_refresh_writes_nothing_when_fresh() {
        let mut f = Fdb::new(cfg(64));
        assert!(f.is_empty());
        assert_eq!(
            f.learn(NetworkId(1), mac(1), PortId(3), 100),
            Learn::Learned
        );
        assert!(!f.is_empty());
        assert_eq!(f.lookup(NetworkId(1), mac(1)), Some(PortId(3)));
        assert_eq!(f.lookup(NetworkId(1), mac(2)), None);
        let before = f.slots.to_vec();
        assert_eq!(
            f.learn(NetworkId(1), mac(1), PortId(3), 100),
            Learn::Unchanged
        );
        assert_eq!(&f.slots[..], &before[..], "a fresh hit must not write");
        assert_eq!(
            f.learn(NetworkId(1), mac(1), PortId(3), 101),
            Learn::Refreshed
        );
        assert_eq!(f.entries(105).next().unwrap().age_secs, 4);
        assert_eq!(f.counters().learned, 1);
    }

    #[test]
    fn never_learns_group_or_zero_sources() {
        let mut f = Fdb::new(cfg(64));
        assert_eq!(
            f.learn(NetworkId(1), MacAddr::BROADCAST, PortId(1), 0),
            Learn::NotLearnable
        );
        assert_eq!(
            f.learn(
                NetworkId(1),
                MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                PortId(1),
                0
            ),
            Learn::NotLearnable
        );
        assert_eq!(
            f.learn(NetworkId(0), MacAddr::ZERO, PortId(1), 0),
            Learn::NotLearnable
        );
        assert_eq!(
            f.learn_key(fdb_key(NetworkId(2), MacAddr::ZERO), PortId(1), 0),
            Learn::NotLearnable
        );
        assert!(f.is_empty());
        assert_eq!(f.lookup(NetworkId(0), MacAddr::ZERO), None);
        assert_eq!(
            f.add_static(NetworkId(1), MacAddr::BROADCAST, PortId(1), 0),
            Err(FdbError::InvalidMac(MacAddr::BROADCAST))
        );
    }

    #[test]
    fn networks_are_isolated() {
        let mut f = Fdb::new(cfg(64));
        f.learn(NetworkId(1), mac(5), PortId(1), 0);
        f.learn(NetworkId(2), mac(5), PortId(2), 0);
        assert_eq!(f.lookup(NetworkId(1), mac(5)), Some(PortId(1)));
        assert_eq!(f.lookup(NetworkId(2), mac(5)), Some(PortId(2)));
        assert_eq!(f.lookup(NetworkId(3), mac(5)), None);
        assert_eq!(f.counters().moved, 0);
    }

    #[test]
    fn moves_are_counted() {
        let mut f = Fdb::new(cfg(64));
        f.learn(NetworkId(1), mac(5), PortId(1), 0);
        assert_eq!(f.learn(NetworkId(1), mac(5), PortId(2), 1), Learn::Moved);
        assert_eq!(f.lookup(NetworkId(1), mac(5)), Some(PortId(2)));
        assert_eq!(f.counters().moved, 1);
        assert_eq!(f.port_entries(PortId(1)), 0);
        assert_eq!(f.port_entries(PortId(2)), 1);
        assert_eq!(f.live_len(), 1);
    }

    #[test]
    fn static_entries_never_move_or_age() {
        let mut f = Fdb::new(cfg(64));
        f.learn(NetworkId(1), mac(9), PortId(4), 0);
        f.add_static(NetworkId(1), mac(9), PortId(1), 0).unwrap();
        assert_eq!(f.lookup(NetworkId(1), mac(9)), Some(PortId(1)));
        assert_eq!(
            f.port_entries(PortId(4)),
            0,
            "converted entry no longer counts as dynamic"
        );
        assert_eq!(
            f.learn(NetworkId(1), mac(9), PortId(2), 5),
            Learn::StaticConflict
        );
        assert_eq!(f.lookup(NetworkId(1), mac(9)), Some(PortId(1)));
        assert_eq!(f.counters().static_conflicts, 1);
        assert_eq!(f.age(1_000_000, 1000), 0);
        assert_eq!(f.lookup(NetworkId(1), mac(9)), Some(PortId(1)));
        let e = f.entries(1_000_000).next().unwrap();
        assert!(e.is_static);
        assert_eq!(e.age_secs, 0);
        assert!(f.remove(NetworkId(1), mac(9)));
        assert_eq!(f.lookup(NetworkId(1), mac(9)), None);
    }

    #[test]
    fn aging_in_bounded_slices() {
        let mut f = Fdb::new(FdbConfig {
            aging_secs: 10,
            ..cfg(16)
        });
        assert_eq!(f.aging_secs(), 10);
        let slots = f.slots.len();
        for n in 0..8 {
            f.learn(NetworkId(1), mac(n), PortId(1), 0);
        }
        f.learn(NetworkId(1), mac(100), PortId(2), 15);
        assert_eq!(f.age(9, slots), 0, "nothing is 10 s old yet");
        // One slot per slice: a slice never removes more than it visits. A removal re-examines
        // its slot (an entry may shift into it), so a full sweep takes slots + removals visits.
        let mut total = 0;
        for _ in 0..slots + 8 {
            let r = f.age(12, 1);
            assert!(r <= 1);
            total += r;
        }
        assert_eq!(total, 8);
        assert_eq!(f.counters().aged, 8);
        assert_eq!(f.lookup(NetworkId(1), mac(100)), Some(PortId(2)));
        assert_eq!(f.lookup(NetworkId(1), mac(0)), None);
        assert_eq!(f.port_entries(PortId(1)), 0);
        f.set_aging_secs(1);
        assert_eq!(f.aging_secs(), 1);
        assert_eq!(f.age(17, slots), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn flush_port_is_immediate_and_lazy() {
        let mut f = Fdb::new(cfg(64));
        for n in 0..10 {
            f.learn(NetworkId(1), mac(n), PortId(1), 0);
            f.learn(NetworkId(1), mac(100 + n), PortId(2), 0);
        }
        f.add_static(NetworkId(1), mac(500), PortId(1), 0).unwrap();
        f.flush_port(PortId(1));
        assert_eq!(f.len(), 21, "nothing walked yet");
        for n in 0..10 {
            assert_eq!(f.lookup(NetworkId(1), mac(n)), None);
            assert_eq!(f.lookup(NetworkId(1), mac(100 + n)), Some(PortId(2)));
        }
        assert_eq!(
            f.lookup(NetworkId(1), mac(500)),
            None,
            "static entries of the port go too"
        );
        assert_eq!(f.port_entries(PortId(1)), 0);
        assert_eq!(
            f.network_entries(NetworkId(1)),
            20,
            "network count reclaims lazily"
        );
        assert_eq!(f.entries(0).count(), 10);
        // The port comes back (port ids are reused): old entries stay gone, new ones count.
        assert_eq!(f.learn(NetworkId(1), mac(3), PortId(1), 1), Learn::Learned);
        assert_eq!(f.port_entries(PortId(1)), 1);
        // One sweep reclaims the 10 flushed entries left (mac 3 was reclaimed by its new
        // learn) and says so.
        assert_eq!(f.age(1, 2 * f.slots.len()), 10);
        assert_eq!(f.len(), 11);
        assert_eq!(f.network_entries(NetworkId(1)), 11);
        assert_eq!(f.live_len(), 11);
    }

    #[test]
    fn flush_network_leaves_other_networks() {
        let mut f = Fdb::new(cfg(64));
        for n in 0..10 {
            f.learn(NetworkId(1), mac(n), PortId(1), 0);
            f.learn(NetworkId(2), mac(n), PortId(1), 0);
        }
        f.flush_network(NetworkId(1));
        for n in 0..10 {
            assert_eq!(f.lookup(NetworkId(1), mac(n)), None);
            assert_eq!(f.lookup(NetworkId(2), mac(n)), Some(PortId(1)));
        }
        assert_eq!(f.network_entries(NetworkId(1)), 0);
        assert_eq!(f.network_entries(NetworkId(2)), 10);
        assert_eq!(f.port_entries(PortId(1)), 20, "port count reclaims lazily");
        f.age(0, 2 * f.slots.len());
        assert_eq!(f.port_entries(PortId(1)), 10);
        assert_eq!(f.counters().reclaimed, 10);
        assert_eq!(f.counters().aged, 0);
    }

    #[test]
    fn per_port_limit_evicts_the_ports_own_oldest() {
        let mut f = Fdb::new(FdbConfig {
            max_per_port: 4,
            ..cfg(64)
        });
        f.learn(NetworkId(1), mac(1000), PortId(2), 0);
        for n in 0..4 {
            f.learn(NetworkId(1), mac(n), PortId(1), n);
        }
        assert_eq!(f.learn(NetworkId(1), mac(4), PortId(1), 10), Learn::Learned);
        assert_eq!(f.port_entries(PortId(1)), 4);
        assert_eq!(
            f.lookup(NetworkId(1), mac(0)),
            None,
            "oldest of the port evicted"
        );
        for n in 1..5 {
            assert_eq!(f.lookup(NetworkId(1), mac(n)), Some(PortId(1)));
        }
        assert_eq!(f.lookup(NetworkId(1), mac(1000)), Some(PortId(2)));
        assert_eq!(f.counters().evicted, 1);
        // Flushed entries of another port are reclaimed on the way, but they do not make room
        // under this port's limit: the port's own oldest still goes.
        for n in 0..3 {
            f.learn(NetworkId(1), mac(2000 + n), PortId(3), 10);
        }
        f.flush_port(PortId(3));
        assert_eq!(f.learn(NetworkId(1), mac(5), PortId(1), 11), Learn::Learned);
        assert_eq!(f.port_entries(PortId(1)), 4);
        assert_eq!(f.lookup(NetworkId(1), mac(1)), None);
        assert_eq!(f.counters().evicted, 2);
    }

    #[test]
    fn a_ports_flushed_entries_make_room_under_its_limit() {
        // Port 1 at its limit of 4, half of it in network 2, which is then flushed: the next
        // address of port 1 takes the room of a reclaimed entry, no live entry is evicted.
        let mut f = Fdb::new(FdbConfig {
            max_per_port: 4,
            ..cfg(64)
        });
        for n in 0..4 {
            f.learn(NetworkId(1 + n as u16 / 2), mac(n), PortId(1), n);
        }
        f.flush_network(NetworkId(2));
        assert_eq!(f.learn(NetworkId(1), mac(9), PortId(1), 10), Learn::Learned);
        assert_eq!(f.counters().evicted, 0);
        for n in [0, 1, 9] {
            assert_eq!(f.lookup(NetworkId(1), mac(n)), Some(PortId(1)), "mac {n}");
        }
    }

    #[test]
    fn per_network_limit_evicts_from_the_biggest_port_of_the_network() {
        let mut f = Fdb::new(FdbConfig {
            max_per_network: 6,
            ..cfg(64)
        });
        f.learn(NetworkId(1), mac(1000), PortId(2), 0); // port 2, oldest of all
        for n in 0..5 {
            f.learn(NetworkId(1), mac(n), PortId(1), 1 + n);
        }
        f.learn(NetworkId(2), mac(77), PortId(3), 0); // another network is not affected
        assert_eq!(f.learn(NetworkId(1), mac(5), PortId(1), 20), Learn::Learned);
        assert_eq!(f.network_entries(NetworkId(1)), 6);
        assert_eq!(f.learn(NetworkId(1), mac(6), PortId(1), 21), Learn::Learned);
        assert_eq!(f.network_entries(NetworkId(1)), 6);
        assert_eq!(
            f.lookup(NetworkId(1), mac(1000)),
            Some(PortId(2)),
            "small port survives"
        );
        assert_eq!(f.lookup(NetworkId(1), mac(0)), None);
        assert_eq!(f.lookup(NetworkId(2), mac(77)), Some(PortId(3)));
    }

    #[test]
    fn fair_eviction_a_flooding_port_cannot_push_out_others() {
        let mut f = Fdb::new(cfg(16));
        for n in 0..3 {
            f.learn(NetworkId(1), mac(n), PortId(1), 0);
        }
        for n in 0..1000 {
            assert_eq!(
                f.learn(NetworkId(1), mac(100 + n), PortId(2), 10 + n),
                Learn::Learned
            );
        }
        assert_eq!(f.len(), 16);
        for n in 0..3 {
            assert_eq!(
                f.lookup(NetworkId(1), mac(n)),
                Some(PortId(1)),
                "port 1 entries survive the flood"
            );
        }
        assert_eq!(f.port_entries(PortId(2)), 13);
        assert_eq!(f.counters().evicted, 1000 - 13);
        // The victim is the oldest of a sample of EVICT_SAMPLE of the port's 13 entries, so
        // it is older than EVICT_SAMPLE - 1 others: the newest EVICT_SAMPLE - 1 are never
        // chosen and survive the flood.
        for n in 1000 - (EVICT_SAMPLE as u32 - 1)..1000 {
            assert_eq!(
                f.lookup(NetworkId(1), mac(100 + n)),
                Some(PortId(2)),
                "mac {n}"
            );
        }
    }

    #[test]
    fn refused_when_nothing_can_be_evicted() {
        let mut f = Fdb::new(cfg(4));
        for n in 0..4 {
            f.add_static(NetworkId(1), mac(n), PortId(1), 0).unwrap();
        }
        assert_eq!(
            f.add_static(NetworkId(1), mac(9), PortId(1), 0),
            Err(FdbError::Full(4))
        );
        assert_eq!(f.learn(NetworkId(1), mac(10), PortId(2), 0), Learn::Refused);
        assert_eq!(f.counters().refused, 1);
        assert_eq!(f.lookup(NetworkId(1), mac(10)), None);
        // A limit of 0 refuses every dynamic entry in its scope, and counts each refusal.
        for (max_per_port, max_per_network) in [(0, 64), (64, 0)] {
            let mut f = Fdb::new(FdbConfig {
                max_per_port,
                max_per_network,
                ..cfg(64)
            });
            assert_eq!(f.learn(NetworkId(1), mac(1), PortId(1), 0), Learn::Refused);
            assert_eq!(f.learn(NetworkId(1), mac(2), PortId(1), 0), Learn::Refused);
            assert_eq!(f.counters().refused, 2);
            assert!(f.is_empty());
        }
    }

    #[test]
    fn flushed_entries_make_room_before_eviction() {
        // The network's limit is the one reached first, then (with roomy per-port and
        // per-network limits) the table's capacity.
        for c in [
            cfg(8),
            FdbConfig {
                max_per_port: 64,
                max_per_network: 64,
                ..cfg(8)
            },
        ] {
            let mut f = Fdb::new(c);
            for n in 0..8 {
                f.learn(NetworkId(1), mac(n), PortId(1), 0);
            }
            f.flush_port(PortId(1));
            for n in 0..8 {
                assert_eq!(
                    f.learn(NetworkId(1), mac(100 + n), PortId(2), 1),
                    Learn::Learned
                );
                // Each learn needs room for one more entry, and only flushed ones can go.
                assert!(f.counters().reclaimed > u64::from(n));
                // Lazily: a learn reclaims what its probe meets, it does not sweep the table.
                assert!(f.counters().reclaimed < 8 || n > 0, "the first learn swept");
            }
            assert_eq!(f.counters().evicted, 0);
            assert_eq!(f.counters().reclaimed, 8);
        }
    }

    #[test]
    fn generation_wrap_keeps_live_entries() {
        let mut f = Fdb::new(cfg(64));
        f.learn(NetworkId(1), mac(1), PortId(1), 0);
        f.add_static(NetworkId(1), mac(2), PortId(1), 0).unwrap();
        // Flushed before the wrap and never touched again: the compaction at the wrap must
        // remove it, not bring it back with generation 0.
        f.learn(NetworkId(1), mac(4), PortId(8), 0);
        f.flush_port(PortId(8));
        let n = GEN_MASK as u32 + 10;
        for i in 0..n {
            f.learn(NetworkId(1), mac(3), PortId(9), i);
            f.flush_port(PortId(9));
        }
        assert_eq!(f.lookup(NetworkId(1), mac(1)), Some(PortId(1)));
        assert_eq!(f.lookup(NetworkId(1), mac(2)), Some(PortId(1)));
        assert_eq!(f.lookup(NetworkId(1), mac(3)), None);
        assert_eq!(f.lookup(NetworkId(1), mac(4)), None);
        // Each learn of mac 3 after the first reclaimed its flushed predecessor; the
        // compaction reclaimed mac 4.
        assert_eq!(f.counters().reclaimed, u64::from(n - 1) + 1);
        assert_eq!(f.live_len(), 2);
        assert_eq!(f.port_entries(PortId(1)), 1);
    }

    #[test]
    fn memory_per_entry_at_one_million() {
        let f = Fdb::new(FdbConfig {
            capacity: 1 << 20,
            ..FdbConfig::default()
        });
        let per = f.memory_bytes() / f.capacity();
        assert!(per <= 64, "{per} bytes per entry");
        // It counts at least the slots themselves (16 bytes each).
        assert!(per >= 16, "{per} bytes per entry");
        // Debug shows a summary, not a million slots.
        let dbg = format!("{f:?}");
        assert!(dbg.len() < 1000, "{} bytes of Debug", dbg.len());
        assert!(dbg.contains("capacity: 1048576"), "{dbg}");
        // Any table, however small, owns the per-port and per-network arrays: a flush
        // generation (u16) and an entry count (u32) for each of the 65,536 ports and networks.
        let tiny = Fdb::new(cfg(1));
        let arrays = IDS * 2 * (2 + 4);
        assert!(
            tiny.memory_bytes() >= arrays + 16 * tiny.slots.len(),
            "{} bytes",
            tiny.memory_bytes()
        );
        assert!(tiny.memory_bytes() < arrays + 16 * tiny.slots.len() + 4096);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn sequential_addresses_spread_over_the_table() {
        // Containers' MACs are often sequential (02:42:...:01, :02, ...); their home slots must
        // still spread, or lookups degrade into long probes. With any seed, 4096 such keys in a
        // table of 8192 slots (2048 lines, each a possible home) land on most lines: uniform
        // hashing would cover 1 - e^-2 = 86% of them.
        for seed in [1, 7, 0x1234_5678_9abc_def0] {
            let f = Fdb::new(FdbConfig {
                seed: Some(seed),
                ..cfg(4096)
            });
            let homes: std::collections::HashSet<usize> = (0..4096)
                .map(|n| f.home(fdb_key(NetworkId(1), mac(n))))
                .collect();
            assert!(homes.len() > 1536, "seed {seed}: {} homes", homes.len());
            assert!(
                homes.iter().all(|h| h % LINE_SLOTS == 0),
                "a home starts a line"
            );
        }
    }

    #[test]
    fn a_full_home_line_spills_into_the_next() {
        // Six addresses with the same home line (4 slots): two must live in the next line.
        // Lookups, fresh learns (no write), moves and removals all find them there.
        let mut f = Fdb::new(cfg(64));
        let home = f.home(fdb_key(NetworkId(1), mac(0)));
        let same: Vec<u32> = (0..100_000)
            .filter(|&n| f.home(fdb_key(NetworkId(1), mac(n))) == home)
            .take(6)
            .collect();
        assert_eq!(same.len(), 6);
        for &n in &same {
            assert_eq!(f.learn(NetworkId(1), mac(n), PortId(1), 5), Learn::Learned);
        }
        let spilled = (home + LINE_SLOTS..home + 2 * LINE_SLOTS)
            .filter(|&i| f.slots[i & f.mask].key != 0)
            .count();
        assert_eq!(spilled, 2, "the home line holds 4, the next line the rest");
        let before = f.slots.to_vec();
        for &n in &same {
            assert_eq!(f.lookup(NetworkId(1), mac(n)), Some(PortId(1)), "mac {n}");
            assert_eq!(
                f.learn(NetworkId(1), mac(n), PortId(1), 5),
                Learn::Unchanged
            );
        }
        assert_eq!(&f.slots[..], &before[..], "fresh hits write nothing");
        let last = same[5];
        assert_eq!(f.learn(NetworkId(1), mac(last), PortId(2), 6), Learn::Moved);
        assert_eq!(f.lookup(NetworkId(1), mac(last)), Some(PortId(2)));
        // Removing one of the home line's keys shifts a spilled one back into it.
        assert!(f.remove(NetworkId(1), mac(same[0])));
        for &n in &same[1..] {
            assert!(f.lookup(NetworkId(1), mac(n)).is_some(), "mac {n}");
        }
        assert_eq!(f.lookup(NetworkId(1), mac(same[0])), None);
        // The empty key is never found, even where its line has empty slots.
        assert_eq!(f.lookup_key(0), None);
        assert_eq!(f.lookup_from(0, home), None);
    }

    #[test]
    fn slots_are_line_aligned_and_big_tables_huge_page_aligned() {
        for (capacity, align) in [(1, 64), (1000, 64), (1 << 16, 2 << 20), (1 << 20, 2 << 20)] {
            let f = Fdb::new(cfg(capacity));
            let at = f.slots.as_ptr() as usize;
            assert_eq!(at % align, 0, "capacity {capacity}: slots at {at:#x}");
            assert!(f.slots.iter().all(|s| *s == EMPTY), "a new table is empty");
        }
    }

    #[test]
    fn random_seeds_differ() {
        let a = Fdb::new(FdbConfig::default());
        let b = Fdb::new(FdbConfig::default());
        assert_ne!((a.seed0, a.seed1), (b.seed0, b.seed1));
    }

    proptest::proptest! {
        /// The table behaves like a map under learn / remove / flush, with heavy collisions.
        #[test]
        fn model_check(ops in proptest::collection::vec((0u8..5, 0u32..40, 0u16..4, 0u16..3), 1..400)) {
            let mut f = Fdb::new(FdbConfig { seed: Some(1), ..cfg(32) });
            let mut m: HashMap<(u16, u32), u16> = HashMap::new();
            let mut step = 0u32;
            for (op, k, port, net) in ops {
                match op {
                    0 | 1 => {
                        f.learn(NetworkId(net), mac(k), PortId(port), 0);
                        m.insert((net, k), port);
                    }
                    2 => {
                        f.remove(NetworkId(net), mac(k));
                        m.remove(&(net, k));
                    }
                    3 => {
                        f.flush_port(PortId(port));
                        m.retain(|_, p| *p != port);
                    }
                    _ => {
                        f.flush_network(NetworkId(net));
                        m.retain(|(n, _), _| *n != net);
                    }
                }
                f.age(0, 3);
                step += 1;
                if step & 3 == 0 {
                    // Counts are exact once flushed entries are reclaimed (lazily, by sweeps).
                    f.age(0, 2 * f.slots.len());
                    for p in 0..4u16 {
                        proptest::prop_assert_eq!(f.port_entries(PortId(p)), m.values().filter(|v| **v == p).count());
                    }
                    for n in 0..3u16 {
                        proptest::prop_assert_eq!(f.network_entries(NetworkId(n)), m.keys().filter(|(x, _)| *x == n).count());
                    }
                }
                for n in 0..3 {
                    for k in 0..40 {
                        proptest::prop_assert_eq!(f.lookup(NetworkId(n), mac(k)), m.get(&(n, k)).copied().map(PortId));
                    }
                }
                proptest::prop_assert_eq!(f.live_len(), m.len());
            }
        }
    }
}
