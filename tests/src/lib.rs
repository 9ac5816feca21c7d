//! Helpers for end-to-end tests: a vswitch daemon per test with its own socket and state
//! directory, containers with names unique to the test, and cleanup in `Drop` (also when the
//! test fails), so tests run in parallel and leave nothing behind.
//!
//! The tests need root (namespaces, veth, AF_PACKET), some a kernel feature or a tool. Every such
//! precondition goes through [`switch::testing`]: under `CI=true` (or
//! `VSWITCH_TESTS_REQUIRE_ALL=1`) a missing one fails the test naming it; elsewhere the test
//! returns early and the skip is recorded, and `tests/test.sh` lists the skips at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod dockerd;
pub mod etcd;
pub mod lan;
pub mod vxlan;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub use switch::testing::{on_path, require, require_root, require_tools, strict};

/// True when running as root. Otherwise, under `CI=true` or `VSWITCH_TESTS_REQUIRE_ALL=1` the
/// test fails saying so; elsewhere the skip is printed and recorded (`target/vswitch-skips.txt`,
/// listed by `tests/test.sh`) and the test returns early. A thin wrapper over
/// [`switch::testing::require_root`]; `_test` is kept for callers, the name recorded is the
/// test's own (its thread's name).
pub fn need_root(_test: &str) -> bool {
    require_root()
}

/// Path of the `vswitch` binary built by `cargo test --workspace` (or `VSWITCH_BIN`).
pub fn vswitch_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VSWITCH_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/vswitch
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vswitch");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p switch`) or set VSWITCH_BIN",
        bin.display()
    );
    bin
}

/// A short prefix unique to this test process and call, for namespace and container names.
pub fn unique(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{tag}{}x{n}", std::process::id() % 100000)
}

/// Runs a command and returns its output (never panics on a non-zero exit).
pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command and returns stdout, panicking with stderr on failure.
pub fn sh_ok(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A vswitch daemon owned by one test.
pub struct Daemon {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Containers to remove on drop.
    containers: std::cell::RefCell<Vec<String>>,
    extra_args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon with a fresh state directory.
    pub fn start(tag: &str) -> Daemon {
        Self::start_with(tag, &[])
    }

    /// Starts a daemon with extra `vswitch daemon` arguments.
    pub fn start_with(tag: &str, args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vswitch-e2e-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Daemon {
            socket: dir.join("vswitch.sock"),
            state_dir: dir.join("state"),
            dir,
            child: None,
            containers: Default::default(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// Starts a daemon inside the network namespace `netns` (a "host" of a multi-host test):
    /// its own socket, state and switch, with the namespace's interfaces as its underlay. It
    /// runs under `nsenter --net` (not `ip netns exec`, whose private mount namespace would
    /// hide the containers' /run/netns mounts from everyone else).
    pub fn start_in_netns(tag: &str, netns: &str, args: &[&str]) -> Daemon {
        let mut a = vec!["--in-netns".to_string(), netns.to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Self::start_with(tag, &a)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        // `--in-netns NS` (first in extra_args) runs the daemon under `nsenter --net`.
        let (mut cmd, rest) = match self.extra_args.as_slice() {
            [flag, ns, rest @ ..] if flag == "--in-netns" => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(vswitch_bin());
                (c, rest)
            }
            rest => (Command::new(vswitch_bin()), rest),
        };
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(rest)
            // The Docker plugin only where a test asks for it (with a name of its own): the
            // default name would be shared by every test's daemon.
            .args(
                (!rest
                    .iter()
                    .any(|a| a == "--docker-plugin" || a.starts_with("--docker-plugin=")))
                .then_some(["--docker-plugin", "off"])
                .into_iter()
                .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn vswitch daemon");
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if self.cli(&["network", "ls"]).status.success() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited with {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not come up: {}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// PID of the daemon process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The host-side interface of container `name`'s first endpoint (its switch port's name,
    /// as `vswitch ports` lists it).
    pub fn port_name(&self, name: &str) -> String {
        self.container(name)["endpoints"][0]["port_name"]
            .as_str()
            .unwrap_or_else(|| panic!("container {name} has no port"))
            .to_string()
    }

    /// The `/proc` directory of the daemon's switch worker thread (`vswitch-worker`).
    pub fn worker_task(&self) -> Option<PathBuf> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        tasks.flatten().map(|t| t.path()).find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "vswitch-worker")
        })
    }

    /// The worker thread's nice value (field 19 of its `stat`; fields are counted after the
    /// command name, which ends at the last ')').
    pub fn worker_nice(&self) -> Option<i32> {
        let stat = std::fs::read_to_string(self.worker_task()?.join("stat")).ok()?;
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        // After ')' comes the state, field 3: nice, field 19, is the 17th.
        rest.split_whitespace().nth(16)?.parse().ok()
    }

    /// How many times the worker thread has gone to sleep (its voluntary context switches).
    pub fn worker_sleeps(&self) -> Option<u64> {
        let status = std::fs::read_to_string(self.worker_task()?.join("status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the daemon: SIGTERM (graceful) or SIGKILL (crash). Returns its exit status.
    pub fn stop(&mut self, kill9: bool) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let sig = if kill9 { "-KILL" } else { "-TERM" };
        let _ = sh("kill", &[sig, &c.id().to_string()]);
        c.wait().ok()
    }

    /// Starts the daemon again on the same state directory and socket.
    pub fn restart(&mut self, kill9: bool) {
        self.stop(kill9);
        self.spawn();
    }

    /// Runs `vswitch ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(vswitch_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vswitch")
    }

    /// Runs `vswitch ARGS`, panicking with its stderr on failure; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "vswitch {args:?} failed: {}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `vswitch ARGS` expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(!o.status.success(), "vswitch {args:?} should have failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `vswitch run --name NAME ARGS...`, remembered for cleanup.
    pub fn run(&self, name: &str, args: &[&str]) -> String {
        self.containers.borrow_mut().push(name.to_string());
        let mut a = vec!["run", "--name", name];
        a.extend_from_slice(args);
        self.ok(&a)
    }

    /// Remembers a container for cleanup.
    pub fn track(&self, name: &str) {
        self.containers.borrow_mut().push(name.to_string());
    }

    /// A container's JSON as listed by `ps --json`.
    pub fn container(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["ps", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The first address of a container.
    pub fn ip_of(&self, name: &str) -> String {
        self.container(name)["endpoints"][0]["ip"]
            .as_str()
            .expect("container has an address")
            .to_string()
    }

    /// Runs a command in a container's namespace (`vswitch exec`).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", name, "--"];
        a.extend_from_slice(cmd);
        self.cli(&a)
    }

    /// True when `ping` from container `from` to `ip` gets a reply.
    pub fn ping(&self, from: &str, ip: &str) -> bool {
        self.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", ip])
            .status
            .success()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            for c in self.containers.borrow().iter().rev() {
                let _ = self.cli(&["rm", "-f", c]);
            }
        }
        self.stop(false);
        // The Docker plugin socket it leaves in dockerd's directory when it stops.
        if let Some(i) = self.extra_args.iter().position(|a| a == "--docker-plugin") {
            if let Some(name) = self.extra_args.get(i + 1).filter(|n| *n != "off") {
                let _ = std::fs::remove_file(format!("/run/docker/plugins/{name}.sock"));
            }
        }
        // Whatever the daemon could not remove: namespaces named after our containers.
        for c in self.containers.borrow().iter() {
            if Path::new("/run/netns").join(c).exists() {
                let _ = sh("ip", &["netns", "del", c]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace created by a test (not through vswitch), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `ip netns add NAME` with loopback up.
    pub fn new(name: &str) -> Netns {
        let _ = sh("ip", &["netns", "del", name]);
        sh_ok("ip", &["netns", "add", name]);
        sh_ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// Runs a command inside.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(cmd);
        sh("ip", &a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// Names of kernel bridges on the host.
pub fn kernel_bridges() -> Vec<String> {
    let out = sh_ok("ip", &["-o", "link", "show", "type", "bridge"]);
    out.lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .collect()
}

/// A one-shot iperf3 server (`iperf3 -s -1`) in the network namespace at path `netns`, writing
/// its log to `log`; killed and reaped when dropped (also when the test fails).
pub struct Iperf3Server(Child);

impl Iperf3Server {
    /// Starts the server and waits (up to 10 s) until it listens on port 5201.
    pub fn start(netns: &str, log: &Path) -> Iperf3Server {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["iperf3", "-s", "-1", "--logfile"])
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 server");
        let t0 = Instant::now();
        while !tcp_listening(netns, 5201) {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "iperf3 server exited with {st}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "iperf3 server in {netns} not listening on 5201 after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Iperf3Server(child)
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an iperf3 TCP test from container `client` to `server_ip` (server in container
/// `server`), returning received bits per second.
pub fn iperf3(d: &Daemon, server: &str, client: &str, server_ip: &str, secs: u32) -> f64 {
    let log = d.dir.join(format!("iperf-{server}.log"));
    let info = d.container(server);
    let srv = Iperf3Server::start(info["netns"].as_str().unwrap(), &log);
    let out = d.exec(
        client,
        &["iperf3", "-c", server_ip, "-t", &secs.to_string(), "-J"],
    );
    drop(srv);
    assert!(
        out.status.success(),
        "iperf3 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
}

/// A child's output stream (its stderr, say), read line by line by a thread of its own (so the child never
/// blocks on a full pipe) and kept for failure messages.
pub struct StreamLines {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl StreamLines {
    /// Takes `child`'s piped stderr (spawn it with `.stderr(Stdio::piped())`).
    pub fn take(child: &mut Child) -> StreamLines {
        StreamLines::of(child.stderr.take().expect("spawn with stderr piped"))
    }

    /// Reads any stream (a child's stdout, say) the same way.
    pub fn of(err: impl std::io::Read + Send + 'static) -> StreamLines {
        use std::io::BufRead;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let t = text.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = t.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        StreamLines { text, lines }
    }

    /// Waits until a line containing `needle` arrives; panics naming `what` with everything read
    /// so far when the deadline passes or the stream ends (the child exited) first.
    pub fn wait_for(&self, needle: &str, what: &str, deadline: Duration) {
        let t0 = Instant::now();
        loop {
            let left = deadline.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{what}: no {needle:?} within {deadline:?}; stderr so far:\n{}",
                    self.text()
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{what}: exited before {needle:?}; stderr:\n{}", self.text())
                }
            }
        }
    }

    /// Waits up to `timeout` for a line containing `needle`; false if none came.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    loop {
        if f() {
            return;
        }
        assert!(
            t0.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something listens on TCP port `port` in the network namespace at path `netns`
/// (`ss -Hltn` run inside it).
pub fn tcp_listening(netns: &str, port: u16) -> bool {
    let o = sh(
        "nsenter",
        &[
            &format!("--net={netns}"),
            "ss",
            "-Hltn",
            &format!("sport = :{port}"),
        ],
    );
    o.status.success() && !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

/// Whether something is bound to UDP port `port` in the network namespace at path `netns`.
pub fn udp_bound(netns: &str, port: u16) -> bool {
    let o = sh(
        "nsenter",
        &[
            &format!("--net={netns}"),
            "ss",
            "-Hlun",
            &format!("sport = :{port}"),
        ],
    );
    o.status.success() && !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

/// An underlay for overlay tests: a namespace with a kernel bridge (standing for the physical
/// network; container traffic never touches it), and "hosts" (namespaces) attached to it by
/// veth links.
pub struct Underlay {
    pub hosts: Vec<Netns>,
    /// The underlay's own namespace (its bridge `br0` and the hosts' peers `p1`, `p2`, ...).
    pub sw: Netns,
    prefix: String,
}

impl Underlay {
    /// `n` hosts with addresses `192.168.77.1..=n/24` on their `ul0`.
    pub fn new(tag: &str, n: usize) -> Underlay {
        let sw = Netns::new(&unique(&format!("{tag}u")));
        sh_ok(
            "ip",
            &["-n", &sw.name, "link", "add", "br0", "type", "bridge"],
        );
        sh_ok("ip", &["-n", &sw.name, "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for k in 1..=n {
            let h = Netns::new(&unique(&format!("{tag}h{k}")));
            let peer = format!("p{k}");
            sh_ok(
                "ip",
                &[
                    "-n", &h.name, "link", "add", "ul0", "type", "veth", "peer", "name", &peer,
                    "netns", &sw.name,
                ],
            );
            sh_ok(
                "ip",
                &["-n", &sw.name, "link", "set", &peer, "master", "br0", "up"],
            );
            sh_ok(
                "ip",
                &[
                    "-n",
                    &h.name,
                    "addr",
                    "add",
                    &format!("192.168.77.{k}/24"),
                    "dev",
                    "ul0",
                ],
            );
            sh_ok("ip", &["-n", &h.name, "link", "set", "ul0", "up"]);
            hosts.push(h);
        }
        Underlay {
            hosts,
            sw,
            prefix: "192.168.77.".into(),
        }
    }

    pub fn ip(&self, k: usize) -> String {
        format!("{}{}", self.prefix, k)
    }

    /// A daemon on each host; host 3 (if any) gets `host3_args`.
    pub fn daemons(&self, tag: &str, host3_args: &[&str]) -> Vec<Daemon> {
        (0..self.hosts.len())
            .map(|k| {
                let args = if k == 2 { host3_args } else { &[] };
                Daemon::start_in_netns(&format!("{tag}{k}"), &self.hosts[k].name, args)
            })
            .collect()
    }

    /// Overlay network `ov` (VNI `vni`, subnet 10.`net`.0.0/16) on every host's daemon, host k
    /// taking addresses from 10.`net`.k.0/24, every other host its peer.
    pub fn overlay(&self, daemons: &[Daemon], net: u8, vni: u32) {
        self.overlay_with(daemons, net, vni, &[]);
    }

    /// [`Underlay::overlay`] with more options for `network create`.
    pub fn overlay_with(&self, daemons: &[Daemon], net: u8, vni: u32, opts: &[&str]) {
        for (k, d) in daemons.iter().enumerate() {
            let h = k + 1;
            let (subnet, range) = (format!("10.{net}.0.0/16"), format!("10.{net}.{h}.0/24"));
            let (vni, vtep) = (format!("vni={vni}"), format!("vtep={}", self.ip(h)));
            let peers = format!("peers={}", self.peers_of(h));
            let mut a = vec![
                "network", "create", "--driver", "overlay", "--subnet", &subnet,
            ];
            a.extend_from_slice(&["--ip-range", &range, "-o", &vni, "-o", &vtep]);
            a.extend_from_slice(&["-o", &peers]);
            a.extend_from_slice(opts);
            a.push("ov");
            d.ok(&a);
        }
    }

    pub fn peers_of(&self, k: usize) -> String {
        (1..=self.hosts.len())
            .filter(|&j| j != k)
            .map(|j| self.ip(j))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = &self.sw; // deleted by its own Drop, after the hosts
    }
}
