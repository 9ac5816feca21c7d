//! The one error type of the crate. Every message says what was wrong and what to do.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Everything that can go wrong in address management or its persistence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// A CIDR string could not be parsed at all.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidCidr {
        /// "subnet" or "ip range".
        what: &'static str,
        /// The text as given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// A CIDR has bits set below its prefix (`10.0.0.5/24`).
    #[error("invalid {what} {input:?}: host bits are set; use {network} instead")]
    HostBitsSet {
        /// "subnet" or "ip range".
        what: &'static str,
        /// The text (or value) as given.
        input: String,
        /// The network address with the same prefix, which is what was probably meant.
        network: Ipv4Net,
    },

    /// An aux-address argument was not `NAME=IPV4`.
    #[error(
        "invalid aux address {input:?}: {reason}; write it as NAME=IPV4, e.g. router=10.0.0.254"
    )]
    InvalidAux {
        /// The text as given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// The subnet cannot hold a gateway and a container.
    #[error(
        "subnet {subnet} is too small: a network needs a gateway and at least one container \
         address; use a /30 or larger (a /31 holds exactly the gateway and one container)"
    )]
    SubnetTooSmall {
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// The gateway is not inside the subnet.
    #[error("gateway {gateway} is not inside subnet {subnet}; pick an address in {subnet} or leave the gateway out to get the first host address")]
    GatewayOutsideSubnet {
        /// The gateway given.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// The gateway is the network or broadcast address of the subnet.
    #[error("gateway {gateway} is the {which} address of {subnet}; a gateway must be a host address such as {suggestion}")]
    GatewayNotHost {
        /// The gateway given.
        gateway: Ipv4Addr,
        /// "network" or "broadcast".
        which: &'static str,
        /// The subnet.
        subnet: Ipv4Net,
        /// The first host address of the subnet.
        suggestion: Ipv4Addr,
    },

    /// The ip-range is not contained in the subnet.
    #[error(
        "ip range {range} is not inside subnet {subnet}; give a range that is a part of {subnet}"
    )]
    RangeOutsideSubnet {
        /// The range given.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// The ip-range holds no address that may be handed out.
    #[error("ip range {range} holds no usable address of subnet {subnet} (only its network or broadcast address); give a wider range")]
    RangeEmpty {
        /// The range given.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// An aux address is not inside the subnet.
    #[error("aux address {name}={ip} is not inside subnet {subnet}; aux addresses reserve addresses of the subnet, pick one in {subnet}")]
    AuxOutsideSubnet {
        /// Its name.
        name: String,
        /// Its address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// An aux address is the network or broadcast address, or already reserved.
    #[error("aux address {name}={ip} cannot be reserved: it is {what}; pick another address")]
    AuxConflict {
        /// Its name.
        name: String,
        /// Its address.
        ip: Ipv4Addr,
        /// What the address already is ("the gateway", "aux address \"x\"", ...).
        what: String,
    },

    /// An owner name was empty.
    #[error("lease owner must not be empty; pass the container or endpoint name")]
    EmptyOwner,

    /// A static address is not inside the subnet.
    #[error("{ip} is not inside subnet {subnet} of this network; choose an address in {subnet}")]
    OutsideSubnet {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// A static address is reserved (network, broadcast, gateway, aux).
    #[error("{ip} is reserved as {what} of {subnet} and cannot be leased; choose another address")]
    Reserved {
        /// The address asked for.
        ip: Ipv4Addr,
        /// What it is reserved as.
        what: String,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// A static address is already leased.
    #[error("{ip} is already leased to {owner:?}; choose another address or release it first")]
    AlreadyLeased {
        /// The address asked for.
        ip: Ipv4Addr,
        /// Who holds it.
        owner: String,
    },

    /// The owner already holds an address in this pool.
    #[error("{owner:?} already holds {ip} in {subnet}; release it before asking for another")]
    OwnerHasLease {
        /// The owner.
        owner: String,
        /// The address it holds.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// No address is free.
    #[error(
        "address pool {pool} is full: all {capacity} assignable addresses are leased or reserved; \
         release some, or create the network with a larger subnet (or a wider ip range)"
    )]
    PoolFull {
        /// The range addresses come from (the ip-range, else the subnet).
        pool: Ipv4Net,
        /// How many addresses the range can hand out at most.
        capacity: u64,
    },

    /// Release of an address that is not leased.
    #[error("{ip} is not leased in {subnet} ({what}); nothing to release")]
    NotLeased {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
        /// What the address is instead ("free", "the gateway", ...).
        what: String,
    },

    /// A pool with that name exists.
    #[error("network {name:?} already has an address pool; remove it first or use another name")]
    PoolExists {
        /// The network name.
        name: String,
    },

    /// No pool with that name.
    #[error(
        "network {name:?} has no address pool; create the network first (see `vswitch network ls`)"
    )]
    NoSuchPool {
        /// The network name.
        name: String,
    },

    /// Two pools would overlap.
    #[error("subnet {subnet} for network {name:?} overlaps {other_subnet} of network {other:?}; choose a subnet that overlaps no other network")]
    Overlap {
        /// The network being added.
        name: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The network it collides with.
        other: String,
        /// That network's subnet.
        other_subnet: Ipv4Net,
    },

    /// A pool still has leases and cannot be removed.
    #[error("network {name:?} still leases {count} address(es) (e.g. {example}); disconnect them before removing the network")]
    PoolInUse {
        /// The network name.
        name: String,
        /// Number of leases.
        count: usize,
        /// One lease, "ip to owner".
        example: String,
    },

    /// None of Docker's default pools is free.
    #[error("all default address pools (172.17-31.0.0/16, 192.168.0.0/16 in /20s) overlap existing networks or host routes; give --subnet explicitly")]
    NoDefaultSubnet,

    /// Reading or writing a state file failed.
    #[error("cannot {op} IPAM state file {}: {source}", path.display())]
    Io {
        /// "read" or "write".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A state file exists but does not parse or violates the pool rules.
    #[error(
        "IPAM state file {} is corrupt: {source}; it was not ignored (that could hand out \
         addresses twice): repair it or move it away and recreate the networks",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
}
