//! vswitch: a userspace virtual switch and dataplane for containers.
//!
//! Layering (each layer only uses the ones above it):
//!
//! * [`wire`]: views over frame bytes (Ethernet, 802.1Q, ARP, IPv4, UDP, TCP, ICMP), checksums.
//! * [`batch`]: the frame batch that ports fill and drain; buffers are reused, never allocated
//!   per frame.
//! * [`fdb`]: the MAC table. [`pipeline`]: the pure forwarding decision over a batch;
//!   [`guard`]: its per-port admission (port security, storm control).
//! * [`port`]: the port trait and its kinds (in-memory, AF_PACKET, TAP).
//! * [`gateway`]: the switch's own IP presence on a network (ARP, ICMP echo).
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

pub mod batch;
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
pub mod sys;
#[doc(hidden)]
pub mod testing;
pub mod wire;
pub mod worker;
