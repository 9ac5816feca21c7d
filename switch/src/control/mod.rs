//! The control plane: the API, the daemon that owns the desired state, its Unix socket server
//! and the CLI client.

pub mod api;
pub mod daemon;
pub mod dataplane;
pub mod driver;
pub mod egress;
pub mod error;
pub mod policy;
pub mod server;
pub mod state;
pub mod txn;
