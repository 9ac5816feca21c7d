//! The daemon's persisted state: networks, containers and IPAM leases in one JSON document,
//! written atomically (temp file, fsync, rename, fsync of the directory) after every change, so
//! a kill -9 loses nothing that was acknowledged and never leaves half a file behind. One file
//! rather than several: a lease and the endpoint that holds it are always written together.

use super::api::AttachMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// A network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub id: u16,
    pub driver: String,
    pub subnet: Option<ipnet::Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<ipnet::Ipv4Net>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    pub internal: bool,
    pub mtu: u32,
    pub options: BTreeMap<String, String>,
    pub created: u64,
}

/// How a container's network namespace is provided.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Mode {
    /// Its own namespace, attached to networks (Docker's bridge mode and user networks).
    Bridge,
    /// Its own namespace with only loopback.
    None,
    /// The host's namespace.
    Host,
    /// Another container's namespace.
    Container(String),
}

impl Mode {
    /// Docker's spelling of the mode.
    pub fn label(&self) -> String {
        match self {
            Mode::Bridge => "bridge".into(),
            Mode::None => "none".into(),
            Mode::Host => "host".into(),
            Mode::Container(c) => format!("container:{c}"),
        }
    }
}

/// A container's attachment to one network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
    pub ifname: String,
    pub port_name: String,
    pub attach: AttachMode,
}

/// A container: a network namespace (plus the process `run -d` started in it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub mode: Mode,
    /// Path of the namespace (`/run/netns/NAME` for ours, any path for attached ones).
    pub netns: PathBuf,
    /// The namespace was made by someone else: never deleted by us.
    pub external: bool,
    pub endpoints: Vec<EndpointRecord>,
    pub pid: Option<u32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat) so a reused PID is not mistaken for it.
    pub pid_start: Option<u64>,
    pub command: Vec<String>,
    pub created: u64,
    /// Published ports (`-p`).
    #[serde(default)]
    pub ports: Vec<super::egress::PortMapping>,
}

/// Everything the daemon persists.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub next_network_id: u16,
    pub networks: BTreeMap<String, NetworkRecord>,
    pub containers: BTreeMap<String, ContainerRecord>,
    pub ipam: ipam::Ipam,
    /// Host interfaces serving as macvlan parents (uplink ports), by name.
    #[serde(default)]
    pub uplinks: BTreeMap<String, UplinkRecord>,
}

/// A host interface the switch uses as an uplink (a macvlan parent), and what to restore on it
/// when its last network goes. Written before the interface is touched, so a crash between
/// the two still restores the interface's own setting.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkRecord {
    /// The interface's promiscuous flag before the switch set it.
    pub was_promiscuous: bool,
}

impl State {
    /// Loads the state from `dir` (a missing file is an empty state).
    pub fn load(dir: &Path) -> anyhow::Result<State> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "state file {} is corrupt ({e}); move it away to start empty",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the state to `dir` atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        let path = dir.join(STATE_FILE);
        ipam::write_atomic(&path, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }
}
