//! The control plane: the API, the daemon that owns the desired state, its Unix socket server
//! and the CLI client.
//!
//! * [`daemon`]: the desired state and the one API that changes it (`pub` methods of
//!   [`daemon::Daemon`]), request dispatch ([`daemon::Daemon::handle`]) and persistence.
//!   A front end (the socket [`server`] today) calls that API and nothing below it.
//! * [`driver`]: `bridge`, `macvlan`, `overlay`, one file each, behind
//!   [`driver::NetworkDriver`]; they act through [`driver::Dataplane`], which
//!   [`dataplane::Live`] implements over the real worker and netlink.
//! * [`txn`]: the transactional helper every multi-step change runs in.
//! * [`store`]: `--store etcd://...`, global overlay networks, VTEP membership and address
//!   claims kept in etcd (a front end over the daemon's API).
//! * [`state`]: the persisted records; [`api`]: the request and reply types; [`error`]: the
//!   error type; [`egress`], [`policy`]: NAT/publishing and port security options.
//! * [`docker`]: a second front end, Docker's network and IPAM plugin protocol (over the
//!   bounded HTTP parser [`http`]), calling the same daemon API.

pub mod api;
pub mod daemon;
pub mod dataplane;
pub mod docker;
pub mod docker_names;
pub mod driver;
pub mod egress;
pub mod error;
pub mod http;
pub mod policy;
pub mod server;
pub mod state;
pub mod store;
pub mod txn;
