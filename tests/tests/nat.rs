//! Networking beyond the host, end to end: egress NAT (TCP, UDP, ping), published ports, host
//! access, container names (DNS) and internal networks. The "outside" is a namespace of the
//! test's own, routed from the host through a veth; no traffic leaves the machine.

use e2e::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Two /24 prefixes unique to this test process and call: (container network, outside).
fn subnets() -> (String, String) {
    let n = unique("s");
    let seq: u32 = n.rsplit('x').next().unwrap().parse().unwrap();
    let pid = std::process::id();
    let a = 236 + (pid / 30) % 4;
    let b = (pid % 30) * 8 + (seq % 4) * 2;
    (format!("10.{a}.{b}"), format!("10.{a}.{}", b + 1))
}

/// An "outside" namespace reached from the host through a veth: host side `.1`, inside `.2`.
struct Outside {
    ns: Netns,
    host_if: String,
    prefix: String,
}

impl Outside {
    fn new(prefix: &str) -> Outside {
        let ns = Netns::new(&unique("out"));
        let host_if = unique("vo");
        sh_ok(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ],
        );
        sh_ok(
            "ip",
            &["addr", "add", &format!("{prefix}.1/24"), "dev", &host_if],
        );
        sh_ok("ip", &["link", "set", &host_if, "up"]);
        sh_ok(
            "ip",
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{prefix}.2/24"),
                "dev",
                "eth0",
            ],
        );
        sh_ok("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
        Outside {
            ns,
            host_if,
            prefix: prefix.to_string(),
        }
    }
    fn host_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }
    fn ip(&self) -> String {
        format!("{}.2", self.prefix)
    }
    /// Starts a command inside (killed on drop of the returned guard).
    fn spawn(&self, cmd: &[&str], log: &std::path::Path) -> Guard {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn in the outside namespace");
        Guard(child)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = sh("ip", &["link", "del", &self.host_if]);
    }
}

/// A process this test started, killed by its PID on drop.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The command line that fetches `url` (10 s at most) and prints only the HTTP status code.
fn curl_status(url: &str) -> [&str; 9] {
    [
        "curl",
        "-s",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]
}

/// An HTTP server's access log line names the client's address first.
fn http_clients(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"GET "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

const UDP_ECHO: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind((sys.argv[1],int(sys.argv[2])))\nwhile True:\n d,a=s.recvfrom(65535)\n print(a[0],flush=True)\n s.sendto(d.upper(),a)\n";
const UDP_CLIENT: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\nfor i in range(5):\n s.sendto(b'hello',(sys.argv[1],int(sys.argv[2])))\n try:\n  print(s.recv(100).decode()); break\n except socket.timeout: pass\n";

fn no_nat_rules(subnet: &str) {
    for (cmd, args) in [("nft", vec!["list", "ruleset"]), ("iptables-save", vec![])] {
        let o = sh(cmd, &args);
        if !o.status.success() {
            continue; // the tool is missing: nothing to inspect with it
        }
        let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
        assert!(
            !text.contains("vswitch") && !text.contains(subnet),
            "{cmd} shows a rule for vswitch or {subnet}:\n{text}"
        );
    }
}

#[test]
fn egress_tcp_udp_ping_leave_with_the_host_address() {
    if !need_root("egress") {
        return;
    }
    let (sub, outside) = subnets();
    let o = Outside::new(&outside);
    let d = Daemon::start("eg");
    let net = unique("n");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("{sub}.0/24"),
        &net,
    ]);
    let c = unique("c");
    d.run(&c, &["-d", "--network", &net, "--", "sleep", "300"]);

    // TCP: an HTTP fetch.
    let log = d.dir.join("http.log");
    let _http = o.spawn(
        &["python3", "-m", "http.server", "18081", "--bind", &o.ip()],
        &log,
    );
    wait_until("the outside HTTP server", 20, || {
        sh(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                &format!("http://{}:18081/", o.ip()),
            ],
        )
        .status
        .success()
    });
    let r = d.exec(&c, &curl_status(&format!("http://{}:18081/", o.ip())));
    assert_eq!(
        out(&r).trim(),
        "200",
        "fetch from the container: {}\n{}",
        out(&r),
        d.log()
    );
    let clients = http_clients(&log);
    assert!(
        clients.iter().all(|a| a == &o.host_ip()) && clients.len() >= 2,
        "the server saw {clients:?}, expected only the host's address {}",
        o.host_ip()
    );

    // TCP bulk: iperf3 to a server out there, which sees the host's address.
    let ilog = d.dir.join("iperf.json");
    let _srv = o.spawn(
        &["iperf3", "-s", "-1", "-J", "-B", &o.ip(), "-p", "15201"],
        &ilog,
    );
    std::thread::sleep(Duration::from_millis(700));
    let r = d.exec(
        &c,
        &["iperf3", "-c", &o.ip(), "-p", "15201", "-t", "2", "-J"],
    );
    assert!(r.status.success(), "iperf3 from the container: {}", out(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 1e6, "iperf3 moved only {bps} bit/s");
    wait_until("the iperf3 server's report", 10, || {
        std::fs::read_to_string(&ilog).is_ok_and(|t| t.contains("remote_host"))
    });
    let sv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ilog).unwrap()).unwrap();
    assert_eq!(
        sv["start"]["connected"][0]["remote_host"].as_str(),
        Some(o.host_ip().as_str())
    );

    // UDP: an echo server out there answers, and sees the host's address.
    let ulog = d.dir.join("udp.log");
    let _udp = o.spawn(&["python3", "-c", UDP_ECHO, &o.ip(), "15353"], &ulog);
    std::thread::sleep(Duration::from_millis(500));
    let r = d.exec(&c, &["python3", "-c", UDP_CLIENT, &o.ip(), "15353"]);
    assert_eq!(
        out(&r).trim(),
        "HELLO",
        "UDP through the gateway: {}",
        out(&r)
    );
    let seen = std::fs::read_to_string(&ulog).unwrap();
    assert!(
        seen.lines().all(|l| l.trim() == o.host_ip()),
        "UDP server saw {seen}"
    );

    // Ping.
    assert!(
        d.ping(&c, &o.ip()),
        "ping to the outside\n{}",
        d.ok(&["stats"])
    );

    // No NAT rule exists anywhere in the host's tables.
    no_nat_rules(&format!("{sub}."));
    let stats = d.ok(&["stats"]);
    assert!(stats.contains("nat_tcp_opened"), "{stats}");
}

#[test]
fn published_port_host_access_and_names() {
    if !need_root("publish") {
        return;
    }
    let (sub, outside) = subnets();
    let o = Outside::new(&outside);
    let d = Daemon::start("pub");
    let net = unique("n");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("{sub}.0/24"),
        &net,
    ]);
    let (web, cli) = (unique("w"), unique("c"));
    d.run(
        &web,
        &[
            "-d",
            "--network",
            &net,
            "-p",
            "0:8000",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
    d.run(&cli, &["-d", "--network", &net, "--", "sleep", "300"]);
    let web_ip = d.ip_of(&web);

    // `ps` shows the mapping; the host port was chosen by the kernel.
    let ports = d.container(&web)["ports"][0].as_str().unwrap().to_string();
    assert!(
        ports.starts_with("0.0.0.0:") && ports.ends_with("->8000/tcp"),
        "{ports}"
    );
    let host_port = ports
        .split(':')
        .nth(1)
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    assert!(d.ok(&["ps"]).contains(&ports));

    // The host reaches the container by its address (wait for the server to be up).
    let url = format!("http://{web_ip}:8000/");
    wait_until("the container's HTTP server, from the host", 20, || {
        sh("curl", &["-s", "-m", "2", "-o", "/dev/null", &url])
            .status
            .success()
    });
    assert!(
        sh("ping", &["-c", "1", "-W", "2", &web_ip])
            .status
            .success(),
        "host -> container ping"
    );

    // From the outside namespace, through the published port on the host's address.
    let purl = format!("http://{}:{host_port}/", o.host_ip());
    let r = o.ns.exec(&curl_status(&purl));
    assert_eq!(
        out(&r).trim(),
        "200",
        "published port from outside: {}\n{}",
        out(&r),
        d.log()
    );
    // And from the host itself, on loopback.
    let local = format!("http://127.0.0.1:{host_port}/");
    let [curl, args @ ..] = curl_status(&local);
    let r = sh(curl, &args);
    assert_eq!(out(&r).trim(), "200");

    // A taken host port is a clear error, and nothing is left behind.
    let other = unique("x");
    d.track(&other);
    let e = d.fails(&[
        "run",
        "--name",
        &other,
        "--network",
        &net,
        "-p",
        &format!("{host_port}:80"),
    ]);
    assert!(e.contains("already in use"), "{e}");
    assert!(d.container(&other).is_null());

    // Names: containers on a user-defined network resolve each other.
    let r = d.exec(&cli, &["getent", "hosts", &web]);
    assert!(out(&r).contains(&web_ip), "getent hosts {web}: {}", out(&r));
    let r = d.exec(&cli, &curl_status(&format!("http://{web}:8000/")));
    assert_eq!(out(&r).trim(), "200", "by name: {}", out(&r));

    // Removing the container frees the host port.
    d.ok(&["rm", "-f", &web]);
    wait_until("the host port to be free", 10, || {
        std::net::TcpListener::bind(format!("0.0.0.0:{host_port}")).is_ok()
    });
    no_nat_rules(&format!("{sub}."));
}

#[test]
fn internal_network_cannot_get_out() {
    if !need_root("internal") {
        return;
    }
    let (sub, outside) = subnets();
    let o = Outside::new(&outside);
    let d = Daemon::start("int");
    let net = unique("n");
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &format!("{sub}.0/24"),
        &net,
    ]);
    let (c1, c2) = (unique("a"), unique("b"));
    d.run(&c1, &["-d", "--network", &net, "--", "sleep", "300"]);
    d.run(&c2, &["-d", "--network", &net, "--", "sleep", "300"]);
    // Inside the network all is well (and names resolve)...
    assert!(d.ping(&c1, &d.ip_of(&c2)));
    let r = d.exec(&c1, &["getent", "hosts", &c2]);
    assert!(out(&r).contains(&d.ip_of(&c2)), "{}", out(&r));
    // ...but nothing gets out, even with a route forced through the gateway.
    let gw = format!("{sub}.1");
    let _ = d.exec(&c1, &["ip", "route", "add", "default", "via", &gw]);
    assert!(
        !d.ping(&c1, &o.ip()),
        "an internal network reached the outside"
    );
    let r = d.exec(
        &c1,
        &["curl", "-s", "-m", "3", &format!("http://{}:1/", o.ip())],
    );
    assert!(!r.status.success());
    // And it cannot publish.
    let x = unique("x");
    d.track(&x);
    let e = d.fails(&["run", "--name", &x, "--network", &net, "-p", "0:80"]);
    assert!(e.contains("internal"), "{e}");
    let stats = d.ok(&["stats"]);
    assert!(!stats.contains("nat_drop_no_egress       0"), "{stats}");
}
