//! Container attachment: named network namespaces, veth pairs, TAP adoption, addresses and
//! routes over rtnetlink, and processes started inside a namespace.
//!
//! Nothing here runs the `ip` command: namespaces are made the way iproute2 makes them (so `ip
//! netns exec NAME` works on ours and we work on theirs), and links are configured with
//! `netlink-packet-route` messages over a synchronous `netlink-sys` socket.
//!
//! * [`ns`]: create/delete/list named namespaces, [`run_in_netns`] (a closure on a dedicated
//!   thread that entered the namespace: `setns(2)` moves only the calling thread).
//! * [`netlink`]: the [`Netlink`] handle, one per namespace.
//! * [`attach`]: the daemon's high-level steps: [`attach_veth`], [`detach`], [`adopt_tap_into`].
//! * [`spawn`]: [`spawn_in_netns`] for `vswitch run` / `exec`.
//!
//! This module (with the ports) is where `unsafe` is allowed: each block says why it is sound.

pub mod attach;
pub mod error;
pub mod ethtool;
pub mod netlink;
pub mod ns;
pub mod spawn;

pub use attach::{adopt_tap_into, attach_veth, detach, AttachedLink, IfaceConfig};
pub use error::{NetnsError, Result};
pub use ethtool::{offloads_off, offloads_off_in};
pub use netlink::{validate_ifname, Ipv4Route, LinkInfo, Netlink, VethPair};
pub use ns::{
    create_netns, delete_netns, is_root, list_netns, netns_exists, netns_of_pid, netns_path,
    open_netns_path, resolve_netns, run_in_netns, validate_netns_name, NETNS_RUN_DIR,
};
pub use spawn::{netns_command, spawn_in_netns, Stdios, NETNS_ETC_DIR};
