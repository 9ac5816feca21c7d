//! `afpacket-fwd` (the `afp`/`afp2` targets of bench/compare.sh) end to end: two namespaces
//! whose host ends are joined by nothing but the forwarder reach each other only while it runs,
//! with one thread and with a thread per CPU (a `PACKET_FANOUT_CPU` group); it exits when an
//! interface goes away (a benchmark's cleanup never leaves it spinning) and refuses bad
//! arguments; `--xdp` forwards through vswitch's AF_XDP ports.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn sh_ok(cmd: &str, args: &[&str]) {
    let o = sh(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?}: {o:?}");
}

/// Two namespaces `TAG1`, `TAG2` with `eth0` at 10.201.0.1 and .2, host ends `TAGh1`, `TAGh2`
/// up and joined to nothing; removed on drop.
struct Pair {
    tag: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let p = Pair {
            tag: format!("{tag}{}", std::process::id() % 100_000),
        };
        for i in 1..=2 {
            let (ns, host) = (p.ns(i), p.host(i));
            sh_ok("ip", &["netns", "add", &ns]);
            sh_ok(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            let addr = format!("10.201.0.{i}/24");
            sh_ok("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            sh_ok("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            sh_ok("ip", &["link", "set", &host, "up"]);
        }
        p
    }

    fn ns(&self, i: u32) -> String {
        format!("{}{i}", self.tag)
    }

    fn host(&self, i: u32) -> String {
        format!("{}h{i}", self.tag)
    }

    fn ping(&self) -> bool {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns(1),
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "10.201.0.2",
            ],
        )
        .status
        .success()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for i in 1..=2 {
            let _ = sh("ip", &["link", "del", &self.host(i)]);
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
        }
    }
}

/// The forwarder, killed on drop unless it has exited.
struct Fwd(Child);

impl Fwd {
    fn start(args: &[&str]) -> Fwd {
        Fwd(Command::new(env!("CARGO_BIN_EXE_afpacket-fwd"))
            .args(args)
            .spawn()
            .expect("start afpacket-fwd"))
    }

    /// Its exit code if it exits within `within`.
    fn exits_within(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(st) = self.0.try_wait().expect("wait for afpacket-fwd") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Fwd {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn afpacket_fwd_joins_two_namespaces_while_it_runs_and_exits_when_a_port_goes() {
    if !switch::testing::require_root() {
        return;
    }
    let pair = Pair::new("afpf");
    assert!(
        !pair.ping(),
        "the namespaces reach each other with no forwarder"
    );
    let (h1, h2) = (pair.host(1), pair.host(2));
    for threads in ["1", "2"] {
        let mut fwd = Fwd::start(&[&h1, &h2, "--threads", threads]);
        assert!(
            pair.ping(),
            "no ping through afpacket-fwd with {threads} thread(s)"
        );
        fwd.0.kill().expect("stop afpacket-fwd");
        let _ = fwd.0.wait();
    }
    // Through vswitch's AF_XDP ports (`--xdp`), with the peers' offloads off as for
    // `--attach xdp`.
    for i in 1..=2 {
        sh_ok(
            "ip",
            &[
                "netns",
                "exec",
                &pair.ns(i),
                "ethtool",
                "-K",
                "eth0",
                "tx",
                "off",
                "sg",
                "off",
                "tso",
                "off",
                "gso",
                "off",
            ],
        );
    }
    let mut fwd = Fwd::start(&[&h1, &h2, "--xdp"]);
    assert!(pair.ping(), "no ping through afpacket-fwd --xdp");
    fwd.0.kill().expect("stop afpacket-fwd");
    let _ = fwd.0.wait();
    assert!(
        !pair.ping(),
        "the namespaces still reach each other with the forwarder stopped"
    );
    let mut fwd = Fwd::start(&[&h1, &h2, "--threads", "2"]);
    assert!(pair.ping(), "no ping through the restarted forwarder");
    sh_ok("ip", &["link", "del", &h1]);
    assert_eq!(
        fwd.exits_within(Duration::from_secs(5)),
        Some(1),
        "afpacket-fwd did not exit with an error when {h1} was removed"
    );
}

#[test]
fn afpacket_fwd_refuses_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_afpacket-fwd");
    for (args, says) in [
        (&["one"][..], "usage"),
        (&["a", "b", "--threads", "0"][..], "--threads takes"),
        (&["a", "b", "--rcvbuf", "x"][..], "--rcvbuf takes"),
        (&["a", "b", "--bogus"][..], "unknown option --bogus"),
        (&["a", "b", "--xdp", "--threads", "2"][..], "one thread"),
    ] {
        let o = sh(bin, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = sh(bin, &["vswitch-no-such-if0", "vswitch-no-such-if1"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no interface vswitch-no-such-if0"),
        "{o:?}"
    );
}
