//! IPv4 address management for vswitch, modelled on Docker's default IPAM. Pure: no sockets,
//! no netlink; the only I/O is reading and writing the state file.
//!
//! # Model
//!
//! * An [`Ipam`] holds one [`Pool`] per network, keyed by network name. Pools never overlap
//!   ([`Ipam::add_pool`] names the network a new subnet collides with).
//! * A pool is built from a [`PoolSpec`] — Docker's `--subnet`, `--gateway`, `--ip-range` and
//!   `--aux-address`:
//!   - the subnet must have no host bits set ([`parse_subnet`] says which network to use);
//!   - the gateway defaults to the first host address (`.1`); it must be a host address of the
//!     subnet and is reserved;
//!   - aux addresses (named, e.g. `router=10.0.0.254`) must be host addresses of the subnet
//!     and are reserved;
//!   - the network and broadcast addresses are never handed out (for /31 both addresses are
//!     hosts, RFC 3021: the gateway and one container; /32 is refused);
//!   - the ip-range, if given, must lie inside the subnet and bounds *dynamic* allocation
//!     only; the gateway is still taken from the whole subnet, and static addresses may lie
//!     anywhere in the subnet (Docker's layout: dynamic addresses in the range, static ones
//!     outside it).
//! * A lease maps one address to one owner (a container or endpoint name); an owner holds at
//!   most one lease per pool and an address is never leased twice.
//!   [`Pool::allocate`] picks the lowest free address *after the last one it handed out*,
//!   wrapping at the end of the range — Docker's serial allocation — so a just-released
//!   address is only reused once the rest of the range has been used; stale ARP entries and
//!   connections aimed at a removed container do not reach a new one. The cursor is saved
//!   with the leases. [`Pool::allocate_static`] takes a given address (`--ip`).
//! * New networks without `--subnet` get Docker's default pools
//!   ([`default_subnets`]): 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s;
//!   [`next_default_subnet`] picks the first that overlaps no pool and no host route (the
//!   daemon passes the routes).
//!
//! # Persistence
//!
//! The whole [`Ipam`] serializes with serde (JSON, with a format version). [`Ipam::save`]
//! goes through [`write_atomic`] (temp file in the same directory, fsync, rename, fsync of
//! the directory), so after a crash the file holds the last acknowledged state. [`Ipam::load`]
//! treats a missing file as empty, and a file that does not parse — or whose content breaks
//! the rules above (overlaps, an address leased twice, a lease on the gateway) — as an error
//! naming the file: silently starting empty could hand out addresses still in use.
//!
//! ```
//! use ipam::{parse_subnet, Ipam, PoolSpec};
//!
//! let mut ipam = Ipam::new();
//! ipam.add_pool("app", PoolSpec::new(parse_subnet("10.1.0.0/24")?))?;
//! assert_eq!(ipam.pool("app")?.gateway().to_string(), "10.1.0.1");
//! let ip = ipam.allocate("app", "web")?;
//! assert_eq!(ip.to_string(), "10.1.0.2");
//! assert!(ipam.add_pool("other", PoolSpec::new(parse_subnet("10.1.0.0/16")?)).is_err());
//! # Ok::<(), ipam::IpamError>(())
//! ```

mod error;
mod pool;
mod store;
mod subnet;

pub use error::IpamError;
pub use ipnet::Ipv4Net;
pub use pool::{Pool, PoolSpec};
pub use store::{write_atomic, write_atomic_keeping, Ipam};
pub use subnet::{
    default_subnets, next_default_subnet, overlaps, parse_aux_address, parse_ip_range, parse_subnet,
};
