//! The daemon's persisted state: networks, containers and IPAM leases in one JSON document,
//! written atomically (temp file, fsync, rename, fsync of the directory) after every change, so
//! a kill -9 loses nothing that was acknowledged and never leaves half a file behind. One file
//! rather than several: a lease and the endpoint that holds it are always written together.
//!
//! Each save keeps the file it replaces as `state.json.bak` (a hard link, no copy), so the last
//! good state before the current one is always beside it. A state file that cannot be read,
//! does not parse or contradicts itself stops the daemon at start with an error naming the
//! file, what is wrong and how to go back to the backup: starting empty instead would write an
//! empty state over it at the first save and forget every network, container and lease.

use super::api::AttachMode;
use super::error::err;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the previous state file, kept by every save, inside the state directory.
pub const BACKUP_FILE: &str = "state.json.bak";

/// Why the state could not be loaded. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file exists but is damaged.
    #[error(
        "state file {} is corrupt: {why}.\nThe daemon does not start on it, so that it never \
         writes an empty state over it; the file is left as it is.\n{recovery}",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        why: String,
        /// What the backup holds and how to use it.
        recovery: String,
    },
    /// The state file is gone but its backup is there: someone removed it.
    #[error(
        "state file {} is missing but its backup {} exists ({summary}).\nThe daemon does not \
         start empty over it. To restore that state: cp {} {}; to start with no networks or \
         containers, move {} away.",
        path.display(),
        backup.display(),
        backup.display(),
        path.display(),
        backup.display()
    )]
    MissingWithBackup {
        path: PathBuf,
        backup: PathBuf,
        summary: String,
    },
    /// The file could not be read.
    #[error("cannot read state file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
    /// MTU of the container's interface when a runtime asked for one below the network's
    /// (CNI's `mtu` capability); `None`: the network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
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
    /// The container runtime that attached it (CNI, ...) and its own id for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<super::api::RuntimeRef>,
}

impl ContainerRecord {
    /// A container in a namespace someone else made (`vswitch attach`, a CNI runtime, Docker's
    /// sandbox: `netns` empty until the runtime places the endpoint), created now, with no
    /// endpoint yet and no process of ours.
    pub fn external(
        name: &str,
        netns: PathBuf,
        runtime: Option<super::api::RuntimeRef>,
        created: u64,
    ) -> ContainerRecord {
        ContainerRecord {
            name: name.to_string(),
            mode: Mode::Bridge,
            netns,
            external: true,
            endpoints: Vec::new(),
            pid: None,
            pid_start: None,
            command: Vec::new(),
            created,
            ports: Vec::new(),
            runtime,
        }
    }
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
    /// Networks made through a front end (Docker), by network name: its id and name there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_frontends: BTreeMap<String, super::api::RuntimeRef>,
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
    /// Loads the state from `dir`. A missing file is an empty state (the first start), unless
    /// a backup is there; a file that cannot be read or parsed, or contradicts itself, is a
    /// [`StateError`] naming it and its backup.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(STATE_FILE);
        let backup = dir.join(BACKUP_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => State::from_json(&bytes).map_err(|why| StateError::Corrupt {
                recovery: recovery(&path, &backup),
                path,
                why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&backup) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
                r => Err(StateError::MissingWithBackup {
                    summary: match r
                        .map_err(|e| e.to_string())
                        .and_then(|b| State::from_json(&b))
                    {
                        Ok(s) => s.summary(),
                        Err(why) => format!("it is damaged too: {why}"),
                    },
                    path,
                    backup,
                }),
            },
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Parses and checks the bytes of a state file; the error says what is wrong in words.
    /// Never panics, whatever the bytes (property-tested below).
    pub fn from_json(bytes: &[u8]) -> Result<State, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(format!("it is empty ({} bytes)", bytes.len()));
        }
        let state: State = serde_json::from_slice(bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Eof => format!("it ends early, as if cut short ({e})"),
                Category::Syntax => format!("it is not valid JSON ({e})"),
                Category::Data => format!("its content is not a state ({e})"),
                Category::Io => e.to_string(),
            }
        })?;
        state.check()?;
        Ok(state)
    }

    /// What the daemon itself guarantees of a state, so that restoring it is safe: names the
    /// daemon accepts (they become paths and interface names), records filed under their own
    /// names, one id per network, and endpoints only on networks that exist.
    fn check(&self) -> Result<(), String> {
        let mut ids = BTreeMap::new();
        for (key, n) in &self.networks {
            if *key != n.name {
                return Err(format!(
                    "network {key:?} is recorded under the name {:?}",
                    n.name
                ));
            }
            super::daemon::check_name("network", key).map_err(|e| e.to_string())?;
            if let Some(other) = ids.insert(n.id, key) {
                return Err(format!(
                    "networks {other:?} and {key:?} have the same id {}",
                    n.id
                ));
            }
        }
        for (key, c) in &self.containers {
            if *key != c.name {
                return Err(format!(
                    "container {key:?} is recorded under the name {:?}",
                    c.name
                ));
            }
            super::daemon::check_name("container", key).map_err(|e| e.to_string())?;
            if let Some(ep) = c
                .endpoints
                .iter()
                .find(|e| !self.networks.contains_key(&e.network))
            {
                return Err(format!(
                    "container {key:?} is attached to network {:?}, which is not in the file",
                    ep.network
                ));
            }
        }
        Ok(())
    }

    /// "N networks, M containers".
    fn summary(&self) -> String {
        format!(
            "{} networks, {} containers",
            self.networks.len(),
            self.containers.len()
        )
    }

    /// Writes the state to `dir` atomically, keeping the file it replaces as
    /// [`BACKUP_FILE`].
    pub fn save(&self, dir: &Path) -> super::error::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        let path = dir.join(STATE_FILE);
        ipam::write_atomic_keeping(&path, &dir.join(BACKUP_FILE), &bytes)
            .map_err(|e| err!("cannot write {}: {e}", path.display()))
    }
}

/// What the backup beside a damaged state file holds, and how to go back to it.
fn recovery(path: &Path, backup: &Path) -> String {
    let (p, b) = (path.display(), backup.display());
    let start_empty = format!("or move {p} away to start with no networks or containers");
    match std::fs::read(backup) {
        Ok(bytes) => match State::from_json(&bytes) {
            Ok(s) => {
                let age = std::fs::metadata(backup)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| format!(", saved {} ago", human_age(d.as_secs())))
                    .unwrap_or_default();
                format!(
                    "The last good copy is {b} ({}{age}; what the daemon wrote one save before \
                     the damaged file). To go back to it: cp {b} {p}, then start the daemon and check `vswitch ps` and \
                     `vswitch network ls`; {start_empty}.",
                    s.summary()
                )
            }
            Err(why) => {
                format!("The backup {b} is damaged too ({why}): repair {p} by hand, {start_empty}.")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("There is no backup ({b} does not exist): repair {p} by hand, {start_empty}.")
        }
        Err(e) => format!(
            "The backup {b} cannot be read either ({e}): repair {p} by hand, {start_empty}."
        ),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A private directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("vswitch-state-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn network(name: &str, id: u16, subnet: &str) -> NetworkRecord {
        NetworkRecord {
            name: name.into(),
            id,
            driver: "bridge".into(),
            subnet: Some(subnet.parse().unwrap()),
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            internal: false,
            mtu: 1500,
            options: BTreeMap::new(),
            created: 1,
        }
    }

    fn container(name: &str, net: &str, ip: Ipv4Addr) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            mode: Mode::Bridge,
            netns: PathBuf::from("/run/netns").join(name),
            external: false,
            endpoints: vec![EndpointRecord {
                network: net.into(),
                ip,
                prefix: 24,
                mac: "02:42:0a:01:00:02".into(),
                ifname: "eth0".into(),
                port_name: "vsw00000001".into(),
                attach: AttachMode::Veth,
                mtu: None,
            }],
            pid: Some(42),
            pid_start: Some(7),
            command: vec!["sleep".into(), "inf".into()],
            created: 2,
            ports: Vec::new(),
            runtime: None,
        }
    }

    fn sample() -> State {
        let mut s = State {
            next_network_id: 3,
            ..Default::default()
        };
        for (name, id, subnet) in [("bridge", 1, "10.1.0.0/24"), ("app", 2, "10.2.0.0/24")] {
            s.networks.insert(name.into(), network(name, id, subnet));
            s.ipam
                .add_pool(name, ipam::PoolSpec::new(subnet.parse().unwrap()))
                .unwrap();
        }
        let ip = s.ipam.allocate("app", "web").unwrap();
        s.containers
            .insert("web".into(), container("web", "app", ip));
        s
    }

    fn names(s: &State) -> (Vec<&String>, Vec<&String>) {
        (s.networks.keys().collect(), s.containers.keys().collect())
    }

    #[test]
    fn save_keeps_the_previous_file_as_backup() {
        let dir = TempDir::new("bak");
        let (path, bak) = (dir.0.join(STATE_FILE), dir.0.join(BACKUP_FILE));
        assert_eq!(
            names(&State::load(&dir.0).unwrap()).0.len(),
            0,
            "first start: empty"
        );
        let mut s = sample();
        s.save(&dir.0).unwrap();
        assert!(!bak.exists(), "nothing to keep on the first save");
        let first = fs::read(&path).unwrap();
        s.containers.clear();
        s.save(&dir.0).unwrap();
        assert_eq!(
            fs::read(&bak).unwrap(),
            first,
            "the backup is the previous file"
        );
        let back = State::load(&dir.0).unwrap();
        assert!(back.containers.is_empty());
        assert_eq!(names(&back).0, ["app", "bridge"]);
        assert_eq!(back.ipam, s.ipam);
    }

    #[test]
    fn damaged_file_is_an_error_naming_it_and_the_backup() {
        let dir = TempDir::new("corrupt");
        let (path, bak) = (dir.0.join(STATE_FILE), dir.0.join(BACKUP_FILE));
        let mut s = sample();
        s.save(&dir.0).unwrap();
        s.containers.clear();
        s.save(&dir.0).unwrap();
        let good = fs::read(&path).unwrap();
        let kept = fs::read(&bak).unwrap();
        for (bad, what) in [
            (&good[..good.len() / 2], "ends early, as if cut short"),
            (&b""[..], "it is empty (0 bytes)"),
            (&b"\n  \n"[..], "it is empty (4 bytes)"),
            (&b"\x00\x00\x00\x00"[..], "not valid JSON"),
            (&b"[1, 2]"[..], "its content is not a state"),
        ] {
            fs::write(&path, bad).unwrap();
            let e = State::load(&dir.0).unwrap_err().to_string();
            assert!(
                e.contains(&format!("state file {} is corrupt", path.display())),
                "{e}"
            );
            assert!(e.contains(what), "{what}: {e}");
            assert!(
                e.contains(&format!(
                    "The last good copy is {} (2 networks, 1 containers, saved",
                    bak.display()
                )),
                "{e}"
            );
            assert!(
                e.contains(&format!("cp {} {}", bak.display(), path.display())),
                "{e}"
            );
            // Loading never touches either file.
            assert_eq!(fs::read(&path).unwrap(), bad);
            assert_eq!(fs::read(&bak).unwrap(), kept);
        }
        // The backup damaged too, or missing.
        fs::write(&bak, b"{").unwrap();
        let e = State::load(&dir.0).unwrap_err().to_string();
        assert!(
            e.contains(&format!("The backup {} is damaged too", bak.display())),
            "{e}"
        );
        fs::remove_file(&bak).unwrap();
        let e = State::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains("There is no backup"), "{e}");
        assert!(e.contains(&format!("move {} away", path.display())), "{e}");
        // Following the advice works.
        fs::write(&bak, &kept).unwrap();
        fs::copy(&bak, &path).unwrap();
        assert_eq!(names(&State::load(&dir.0).unwrap()).1, ["web"]);
    }

    #[test]
    fn missing_file_with_a_backup_is_refused() {
        let dir = TempDir::new("missing");
        let s = sample();
        s.save(&dir.0).unwrap();
        s.save(&dir.0).unwrap();
        fs::remove_file(dir.0.join(STATE_FILE)).unwrap();
        let e = State::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains("is missing but its backup"), "{e}");
        assert!(e.contains("(2 networks, 1 containers)"), "{e}");
        fs::remove_file(dir.0.join(BACKUP_FILE)).unwrap();
        assert!(State::load(&dir.0).unwrap().networks.is_empty());
    }

    #[test]
    fn contradictions_are_corrupt() {
        type Breaker = fn(&mut State);
        let cases: [(Breaker, &str); 5] = [
            (
                |s| s.networks.get_mut("app").unwrap().id = 1,
                r#"networks "app" and "bridge" have the same id 1"#,
            ),
            (
                |s| s.networks.get_mut("app").unwrap().name = "other".into(),
                r#"network "app" is recorded under the name "other""#,
            ),
            (
                |s| {
                    let c = s.containers.remove("web").unwrap();
                    s.containers.insert(
                        "../x".into(),
                        ContainerRecord {
                            name: "../x".into(),
                            ..c
                        },
                    );
                },
                r#"invalid container name "../x""#,
            ),
            (
                |s| s.containers.get_mut("web").unwrap().name = "db".into(),
                r#"container "web" is recorded under the name "db""#,
            ),
            (
                |s| s.containers.get_mut("web").unwrap().endpoints[0].network = "gone".into(),
                r#"container "web" is attached to network "gone", which is not in the file"#,
            ),
        ];
        for (break_it, what) in cases {
            let mut s = sample();
            break_it(&mut s);
            let bytes = serde_json::to_vec(&s).unwrap();
            let e = State::from_json(&bytes).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        }
        assert!(State::from_json(&serde_json::to_vec(&sample()).unwrap()).is_ok());
    }

    #[test]
    fn from_json_never_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let good = serde_json::to_vec_pretty(&sample()).unwrap();
        TestRunner::new(Config::with_cases(3000))
            .run(&proptest::collection::vec(any::<u8>(), 0..1024), |b| {
                let _ = State::from_json(&b);
                Ok(())
            })
            .unwrap();
        // A real file cut short and with bytes overwritten (digits keep much of it parseable).
        let edits = (
            proptest::option::weighted(0.3, 0..good.len()),
            proptest::collection::vec((0..good.len(), any::<u8>()), 0..3),
            proptest::collection::vec((0..good.len(), b'0'..=b'9'), 0..4),
        );
        TestRunner::new(Config::with_cases(3000))
            .run(&edits, |(cut, flips, digits)| {
                let mut b = good.clone();
                for (i, v) in flips.into_iter().chain(digits) {
                    if let Some(x) = b.get_mut(i) {
                        *x = v;
                    }
                }
                if let Some(cut) = cut {
                    b.truncate(cut);
                }
                if let Ok(s) = State::from_json(&b) {
                    prop_assert!(s.check().is_ok());
                }
                Ok(())
            })
            .unwrap();
    }
}
