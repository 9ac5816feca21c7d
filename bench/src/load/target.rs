//! Devices under test, each built as the same N-namespace topology: namespace `…c{i}` has an
//! `eth0` whose peer is a port of the switch under test.
//!
//! * `vswitch` — this project's daemon (own socket and state dir in a temp dir), one network,
//!   `vswitch run` per namespace;
//! * `kbr` — the Linux kernel bridge;
//! * `ovs` — Open vSwitch's userspace datapath (`datapath_type=netdev`); ovsdb-server and
//!   ovs-vswitchd are started by [`OvsDaemons`] if none run, and only those are stopped;
//! * `veth` — no switch: two namespaces joined by one veth pair (the generator's own ceiling).
//!
//! Set-up shells out to `ip`, `sysctl`, `ovs-vsctl` and the `vswitch` CLI, like
//! bench/compare.sh; everything is removed on drop, even after a failure.

use super::gen::Endpoint;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A kind of device under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// This project.
    Vswitch,
    /// This project with its containers attached in AF_XDP mode (`--attach xdp`).
    Xdp,
    /// The Linux kernel bridge.
    Kbr,
    /// Open vSwitch, userspace datapath.
    Ovs,
    /// A bare veth pair (two ports only).
    Veth,
}

impl Kind {
    /// Parses a target name.
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "vswitch" => Kind::Vswitch,
            "xdp" | "vswitch-xdp" => Kind::Xdp,
            "kbr" | "bridge" => Kind::Kbr,
            "ovs" => Kind::Ovs,
            "veth" => Kind::Veth,
            _ => bail!("unknown target {s:?}: use vswitch, xdp, kbr, ovs or veth"),
        })
    }

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vswitch => "vswitch",
            Kind::Kbr => "kbr",
            Kind::Ovs => "ovs",
            Kind::Veth => "veth",
            Kind::Xdp => "xdp",
        }
    }

    /// Whether the target is this project (in either attach mode).
    pub fn is_vswitch(self) -> bool {
        matches!(self, Kind::Vswitch | Kind::Xdp)
    }
}

/// Options of the vswitch target.
#[derive(Clone, Debug, Default)]
pub struct VswitchOpts {
    /// The `vswitch` binary.
    pub bin: PathBuf,
    /// `--fdb-size`.
    pub fdb_size: Option<usize>,
    /// `--fdb-max-per-port`.
    pub fdb_max_per_port: Option<usize>,
    /// `--aging`.
    pub aging: Option<u32>,
}

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}: is it installed?", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short tag unique to this process and call (names of namespaces and links).
pub fn unique_tag() -> String {
    format!(
        "vl{}{}",
        std::process::id() % 100_000,
        (b'a' + (SEQ.fetch_add(1, Ordering::Relaxed) % 26) as u8) as char
    )
}

/// A built topology; dropped, it removes everything it made.
pub struct Topology {
    /// Which device.
    pub kind: Kind,
    /// The test ports.
    pub ports: Vec<Endpoint>,
    tag: String,
    nsnames: Vec<String>,
    work: PathBuf,
    daemon: Option<Child>,
    bin: PathBuf,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("kind", &self.kind)
            .field("tag", &self.tag)
            .finish()
    }
}

fn quiet_ns(ns: &str) {
    // The namespaces' own IPv6 chatter (router solicitations, MLD) would only add noise.
    for k in ["all", "default", "eth0"] {
        quiet(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
        ]);
    }
}

impl Topology {
    /// Builds `n` ports on `kind`.
    pub fn setup(kind: Kind, n: usize, vs: &VswitchOpts) -> Result<Topology> {
        if kind == Kind::Veth && n != 2 {
            bail!("the veth target has exactly two ports");
        }
        let tag = unique_tag();
        let work = std::env::temp_dir().join(format!("vswitch-load-{tag}"));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let mut t = Topology {
            kind,
            ports: Vec::new(),
            tag: tag.clone(),
            nsnames: (0..n).map(|i| format!("{tag}c{i}")).collect(),
            work,
            daemon: None,
            bin: vs.bin.clone(),
        };
        match kind {
            Kind::Vswitch => t.setup_vswitch(vs, "veth")?,
            Kind::Xdp => t.setup_vswitch(vs, "xdp")?,
            Kind::Veth => {
                for ns in &t.nsnames {
                    sh(&["ip", "netns", "add", ns])?;
                }
                sh(&[
                    "ip",
                    "link",
                    "add",
                    &format!("{tag}a"),
                    "netns",
                    &t.nsnames[0],
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("{tag}b"),
                    "netns",
                    &t.nsnames[1],
                ])?;
                for (i, ns) in t.nsnames.iter().enumerate() {
                    let dev = format!("{tag}{}", if i == 0 { 'a' } else { 'b' });
                    sh(&["ip", "-n", ns, "link", "set", &dev, "name", "eth0"])?;
                }
            }
            Kind::Kbr | Kind::Ovs => {
                let br = format!("{tag}br");
                if kind == Kind::Kbr {
                    quiet(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"]);
                    sh(&["ip", "link", "add", &br, "type", "bridge"])?;
                    sh(&["ip", "link", "set", &br, "up"])?;
                } else {
                    sh(&[
                        "ovs-vsctl",
                        "add-br",
                        &br,
                        "--",
                        "set",
                        "bridge",
                        &br,
                        "datapath_type=netdev",
                    ])?;
                }
                for (i, ns) in t.nsnames.iter().enumerate() {
                    sh(&["ip", "netns", "add", ns])?;
                    let host = format!("{tag}h{i}");
                    sh(&[
                        "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0",
                        "netns", ns,
                    ])?;
                    sh(&["ip", "link", "set", &host, "up"])?;
                    if kind == Kind::Kbr {
                        sh(&["ip", "link", "set", &host, "master", &br])?;
                    } else {
                        sh(&["ovs-vsctl", "add-port", &br, &host])?;
                    }
                }
                if kind == Kind::Ovs {
                    sh(&["ip", "link", "set", &br, "up"])?;
                }
            }
        }
        for ns in &t.nsnames {
            if !kind.is_vswitch() {
                sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
                sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            }
            quiet_ns(ns);
            t.ports.push(Endpoint {
                ns: PathBuf::from("/run/netns").join(ns),
                ifname: "eth0".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(t)
    }

    fn vctl(&self, args: &[&str]) -> Result<String> {
        let sock = self.work.join("s");
        let mut v = vec![
            self.bin.to_str().unwrap_or("vswitch"),
            "--socket",
            sock.to_str().unwrap_or(""),
        ];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn setup_vswitch(&mut self, vs: &VswitchOpts, attach: &str) -> Result<()> {
        if !self.bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p switch --bin vswitch` or pass --vswitch-bin",
                self.bin.display()
            );
        }
        let sock = self.work.join("s");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket")
            .arg(&sock)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.work.join("state"));
        if let Some(n) = vs.fdb_size {
            cmd.arg("--fdb-size").arg(n.to_string());
        }
        if let Some(n) = vs.fdb_max_per_port {
            cmd.arg("--fdb-max-per-port").arg(n.to_string());
        }
        if let Some(a) = vs.aging {
            cmd.arg("--aging").arg(a.to_string());
        }
        let log = std::fs::File::create(self.work.join("daemon.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.daemon = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?,
        );
        let mut up = false;
        for _ in 0..100 {
            if self.vctl(&["network", "ls"]).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !up {
            bail!(
                "the vswitch daemon did not come up; see {}",
                self.work.join("daemon.log").display()
            );
        }
        let net = format!("{}n", self.tag);
        let subnet = format!(
            "10.78.{}.0/24",
            std::process::id() % 200 + SEQ.load(Ordering::Relaxed) % 50
        );
        // The generator sends from many synthetic MACs per port and measures broadcast and
        // unknown-unicast forwarding: port security and storm control would drop exactly that.
        self.vctl(&[
            "network",
            "create",
            "--subnet",
            &subnet,
            "-o",
            "port_security=off",
            "-o",
            "flood_pps=0",
            &net,
        ])?;
        for ns in self.nsnames.clone() {
            self.vctl(&["run", "--name", &ns, "--network", &net, "--attach", attach])?;
        }
        Ok(())
    }

    /// `vswitch stats --json` of the vswitch target.
    pub fn vswitch_stats(&self) -> Option<serde_json::Value> {
        if !self.kind.is_vswitch() {
            return None;
        }
        serde_json::from_str(&self.vctl(&["stats", "--json"]).ok()?).ok()
    }

    /// Namespace name of port `i`.
    pub fn ns_name(&self, i: usize) -> &str {
        &self.nsnames[i]
    }

    /// A counter of eth0 in port `i`'s namespace (`rx_packets`, `tx_dropped`, ...).
    pub fn eth0_counter(&self, i: usize, name: &str) -> u64 {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.nsnames[i],
            "cat",
            &format!("/sys/class/net/eth0/statistics/{name}"),
        ]);
        out.ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Work directory (logs).
    pub fn work(&self) -> &Path {
        &self.work
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.nsnames.iter().map(|s| s.as_str()));
            let _ = self.vctl(&args);
            // Our own child, by its PID.
            let _ = d.kill();
            let _ = d.wait();
        }
        let br = format!("{}br", self.tag);
        match self.kind {
            Kind::Kbr => quiet(&["ip", "link", "del", &br]),
            Kind::Ovs => quiet(&["ovs-vsctl", "--if-exists", "del-br", &br]),
            _ => {}
        }
        for (i, ns) in self.nsnames.iter().enumerate() {
            quiet(&["ip", "netns", "del", ns]);
            quiet(&["ip", "link", "del", &format!("{}h{i}", self.tag)]);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Open vSwitch daemons started by this tool (none if they already ran); stopped on drop by
/// the PIDs they recorded.
#[derive(Debug)]
pub struct OvsDaemons {
    dir: Option<PathBuf>,
}

impl OvsDaemons {
    /// Makes sure ovsdb-server and ovs-vswitchd run.
    pub fn ensure() -> Result<OvsDaemons> {
        if sh(&["ovs-vsctl", "--timeout=2", "show"]).is_ok() {
            return Ok(OvsDaemons { dir: None });
        }
        let dir = std::env::temp_dir().join(format!("vswitch-load-ovs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all("/var/run/openvswitch")?;
        std::fs::create_dir_all("/etc/openvswitch")?;
        if !Path::new("/etc/openvswitch/conf.db").exists() {
            sh(&[
                "ovsdb-tool",
                "create",
                "/etc/openvswitch/conf.db",
                "/usr/share/openvswitch/vswitch.ovsschema",
            ])?;
        }
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let me = OvsDaemons {
            dir: Some(dir.clone()),
        };
        sh(&[
            "ovsdb-server",
            "--remote=punix:/var/run/openvswitch/db.sock",
            &format!("--pidfile={}", d("ovsdb-server.pid")),
            "--detach",
            &format!("--log-file={}", d("ovsdb.log")),
        ])?;
        sh(&["ovs-vsctl", "--no-wait", "init"])?;
        sh(&[
            "ovs-vswitchd",
            &format!("--pidfile={}", d("ovs-vswitchd.pid")),
            "--detach",
            &format!("--log-file={}", d("ovs-vswitchd.log")),
        ])?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(me)
    }
}

impl Drop for OvsDaemons {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            for p in ["ovs-vswitchd", "ovsdb-server"] {
                if let Ok(pid) = std::fs::read_to_string(dir.join(format!("{p}.pid"))) {
                    quiet(&["kill", pid.trim()]);
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
