//! A three-member etcd cluster per test: on loopback ports of the host (for the client's
//! tests), or inside a test's underlay namespace on the bridge's address (for multi-host
//! tests, whose daemons reach it over their `ul0`). Data directories under a temporary
//! directory of the test; members stopped with SIGKILL by PID on drop (SIGTERM on a lone
//! member can hang); readiness by polling `/health`, never a blind sleep.

use crate::{require_tools, unique, Underlay};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member of a test cluster.
pub struct Member {
    pub name: String,
    pub client: String,
    child: Option<Child>,
    args: Vec<String>,
}

/// A test's etcd cluster.
pub struct Cluster {
    pub members: Vec<Member>,
    /// The namespace the members run in (None: the host's).
    netns: Option<String>,
    pub dir: PathBuf,
}

/// The address the cluster listens on inside an [`Underlay`]'s own namespace.
pub const UNDERLAY_ADDR: &str = "192.168.77.254";

/// True when etcd and the tools the harness uses are installed (else the test is skipped or,
/// under CI, fails naming them).
pub fn available() -> bool {
    require_tools(&["etcd", "curl"])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// Three members on free loopback ports of the host. A port found free can be taken by
    /// another process before etcd binds it (seen once in CI: a member exited with "address
    /// already in use"); then the cluster starts again on new ports, up to three times.
    pub fn on_loopback(tag: &str) -> Cluster {
        for _ in 0..2 {
            let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
            let mut cl = Self::launch(tag, None, "127.0.0.1", &ports);
            if !cl.lost_a_port(Duration::from_secs(20)) {
                cl.wait_healthy(Duration::from_secs(20));
                return cl;
            }
        }
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        Self::start(tag, None, "127.0.0.1", &ports)
    }

    /// Waits until every member is healthy (false) or one has exited because its port was
    /// taken (true); gives up waiting after `within` (false: `wait_healthy` then says why).
    fn lost_a_port(&mut self, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            for k in 0..self.members.len() {
                let exited = self.members[k]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                let log = self.dir.join(format!("{}.log", self.members[k].name));
                if exited
                    && std::fs::read_to_string(log)
                        .is_ok_and(|l| l.contains("address already in use"))
                {
                    return true;
                }
            }
            if (0..self.members.len()).all(|k| self.healthy(k)) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Three members in `u`'s own namespace on [`UNDERLAY_ADDR`] (added to its bridge), which
    /// every host of the underlay reaches.
    pub fn on_underlay(tag: &str, u: &Underlay) -> Cluster {
        let ns = u.sw.name.clone();
        crate::sh_ok(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{UNDERLAY_ADDR}/24"),
                "dev",
                "br0",
            ],
        );
        let ports = [(12379, 12380), (22379, 22380), (32379, 32380)];
        Self::start(tag, Some(ns), UNDERLAY_ADDR, &ports)
    }

    /// Spawns the members (ports `(client, peer)` each) without waiting for them.
    fn launch(tag: &str, netns: Option<String>, addr: &str, ports: &[(u16, u16)]) -> Cluster {
        let id = unique(tag);
        let dir = std::env::temp_dir().join(format!("vswitch-etcd-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(k, (_, p))| format!("m{k}=http://{addr}:{p}"))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (k, (c, p)) in ports.iter().enumerate() {
            let name = format!("m{k}");
            let data = dir.join(&name);
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://{addr}:{c}"),
                "--advertise-client-urls",
                &format!("http://{addr}:{c}"),
                "--listen-peer-urls",
                &format!("http://{addr}:{p}"),
                "--initial-advertise-peer-urls",
                &format!("http://{addr}:{p}"),
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                &id,
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-outputs",
                dir.join(format!("{name}.log")).to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            members.push(Member {
                name,
                client: format!("{addr}:{c}"),
                child: None,
                args,
            });
        }
        let mut cl = Cluster {
            members,
            netns,
            dir,
        };
        for k in 0..cl.members.len() {
            cl.spawn(k);
        }
        cl
    }

    fn start(tag: &str, netns: Option<String>, addr: &str, ports: &[(u16, u16)]) -> Cluster {
        let cl = Self::launch(tag, netns, addr, ports);
        cl.wait_healthy(Duration::from_secs(20));
        cl
    }

    fn command(&self, prog: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(prog);
                c
            }
            None => Command::new(prog),
        }
    }

    fn spawn(&mut self, k: usize) {
        let args = self.members[k].args.clone();
        let child = self
            .command("etcd")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.members[k].child = Some(child);
    }

    /// `etcd://A,B,C` for `vswitch daemon --store`.
    pub fn url(&self) -> String {
        let eps: Vec<&str> = self.members.iter().map(|m| m.client.as_str()).collect();
        format!("etcd://{}", eps.join(","))
    }

    /// Whether member `k` answers `/health` with `"health":"true"` (it has a leader).
    pub fn healthy(&self, k: usize) -> bool {
        let o = self
            .command("curl")
            .args([
                "-s",
                "-m",
                "1",
                &format!("http://{}/health", self.members[k].client),
            ])
            .stdin(Stdio::null())
            .output();
        o.map(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""))
            .unwrap_or(false)
    }

    /// Waits until every running member is healthy.
    pub fn wait_healthy(&self, within: Duration) {
        let t0 = Instant::now();
        loop {
            let up: Vec<usize> = (0..self.members.len())
                .filter(|&k| self.members[k].child.is_some())
                .collect();
            if up.iter().all(|&k| self.healthy(k)) {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "etcd cluster not healthy after {within:?}; logs in {}:\n{}",
                self.dir.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The members' logs' tails, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let l = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = l.lines().rev().take(8).collect();
            s.push_str(&format!("--- {} ---\n", m.name));
            for t in tail.iter().rev() {
                s.push_str(t);
                s.push('\n');
            }
        }
        s
    }

    /// Kills member `k` (SIGKILL) and reaps it.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.members[k].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes member `k` (SIGSTOP by PID): its sockets stay open and silent, as a member
    /// behind a partition or a stalled disk looks to its clients.
    pub fn freeze(&self, k: usize) {
        self.signal(k, "-STOP");
    }

    /// Lets a frozen member run again (SIGCONT).
    pub fn thaw(&self, k: usize) {
        self.signal(k, "-CONT");
    }

    fn signal(&self, k: usize, sig: &str) {
        if let Some(c) = &self.members[k].child {
            crate::sh_ok("kill", &[sig, &c.id().to_string()]);
        }
    }

    /// Starts member `k` again on its data directory.
    pub fn restart(&mut self, k: usize) {
        self.kill(k);
        self.spawn(k);
    }

    /// Runs `etcdctl ARGS` against the cluster; returns stdout (panics on failure).
    pub fn ctl(&self, args: &[&str]) -> String {
        let eps: Vec<&str> = self.members.iter().map(|m| m.client.as_str()).collect();
        let o = self
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .arg("--command-timeout=3s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl");
        assert!(
            o.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Keys under `prefix`, one per line (`etcdctl get --prefix --keys-only`).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 0..self.members.len() {
            self.kill(k);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
