//! vswitch: a userspace virtual switch and dataplane for containers.
//!
//! Layering (each layer only uses the ones above it):
//!
//! * [`wire`] (the `wire` crate in `switch/wire`, re-exported here; `encap` uses it too): views
//!   over frame bytes (Ethernet, 802.1Q, ARP, IPv4, UDP, TCP, ICMP), checksums, the
//!   virtio-net header, GSO, and the id types [`wire::PortId`] and [`wire::NetworkId`].
//!   `encap` (VXLAN without I/O) and `ipam` are the other crates below this one.
//! * [`batch`]: the frame batch that ports fill and drain; buffers are reused, never allocated
//!   per frame.
//! * [`fdb`]: the MAC table. [`pipeline`]: the pure forwarding decision over a batch;
//!   [`guard`]: its per-port admission (port security, storm control).
//! * [`port`]: the port trait and its kinds (in-memory, AF_PACKET, TAP, and the VXLAN tunnel
//!   ports: a UDP socket or a kernel TAP for the outer packets, one virtual port per remote
//!   VTEP and network).
//! * [`gateway`]: the switch's own IP presence on a network: ARP and ICMP echo for the gateway
//!   address, DNS, and NAT to the world on host sockets (UDP, and TCP terminated by the
//!   gateway's own engine, [`gateway::tcp`]).
//! * [`worker`]: the mio event loop that owns ports, tables and batches.
//! * [`control`]: the control plane. [`control::daemon`] holds the desired state
//!   ([`control::state`]) and the one API that changes it (`Daemon::network_create`, `run`,
//!   ...), which the socket server ([`control::server`]) and any future front end call;
//!   [`control::driver`] has one file per kind of network (bridge, macvlan, overlay) behind
//!   the `NetworkDriver` trait, acting through the narrow `Dataplane` trait
//!   ([`control::dataplane`] is the real one); [`control::txn`] is the one transactional
//!   helper (steps with undos). [`netns`]: container attachment over netlink.
//! * [`cni`]: `vswitch-cni`, the CNI plugin: a front end that translates CNI calls into
//!   control requests to the daemon.
//! * `fuzzing` (hidden): one harness per untrusted-input surface, shared by the libFuzzer
//!   targets in `switch/fuzz`, the property tests and the corpus replay in `cargo test`;
//!   `testing` (hidden): the tests' precondition helper.

pub mod anon_map;
pub mod batch;
pub mod capture;
pub mod cni;
pub mod control;
pub mod fdb;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod guard;
pub mod netns;
pub mod pipeline;
pub mod port;
pub mod process;
pub mod spare_cpu;
#[doc(hidden)]
pub mod testing;
pub mod trace;
pub mod worker;

/// The frame formats, checksums, virtio-net header and id types: the `wire` crate
/// (`switch/wire`), re-exported so that `crate::wire::X` and `switch::wire::X` name them.
pub use ::wire;
