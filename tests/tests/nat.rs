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

/// Checks with `nft` and `iptables-save` that the host's tables have no rule for vswitch or the
/// subnet. Without the tools this is a recorded skip (a failure under `CI=true`); a tool that
/// is there but fails fails the test.
fn no_nat_rules(subnet: &str) {
    if !require_tools(&["nft", "iptables-save"]) {
        return;
    }
    for (cmd, args) in [("nft", vec!["list", "ruleset"]), ("iptables-save", vec![])] {
        let text = sh_ok(cmd, &args).to_lowercase();
        assert!(
            !text.contains("vswitch") && !text.contains(subnet),
            "{cmd} shows a rule for vswitch or {subnet}:\n{text}"
        );
    }
}

/// An outside namespace and a daemon with one network of the test's own, created with `flags`
/// besides its subnet: (the network's /24 prefix, outside, daemon, network name).
fn network_and_outside(tag: &str, flags: &[&str]) -> (String, Outside, Daemon, String) {
    let (sub, outside) = subnets();
    let o = Outside::new(&outside);
    let d = Daemon::start(tag);
    let net = unique("n");
    let subnet = format!("{sub}.0/24");
    let mut args = vec!["network", "create", "--subnet", &subnet];
    args.extend_from_slice(flags);
    args.push(&net);
    d.ok(&args);
    (sub, o, d, net)
}

/// [`network_and_outside`] plus one container on the network (running `sleep`): (the
/// network's /24 prefix, outside, daemon, container name).
fn container_and_outside(tag: &str) -> (String, Outside, Daemon, String) {
    let (sub, o, d, net) = network_and_outside(tag, &[]);
    let c = unique("c");
    d.run(&c, &["-d", "--network", &net, "--", "sleep", "300"]);
    (sub, o, d, c)
}

#[test]
fn egress_tcp_udp_ping_leave_with_the_host_address() {
    if !need_root("egress") {
        return;
    }
    let (sub, o, d, c) = container_and_outside("eg");

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
    let out_ns = format!("/run/netns/{}", o.ns.name);
    wait_until("the iperf3 server out there to listen", 10, || {
        tcp_listening(&out_ns, 15201)
    });
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
    wait_until("the UDP echo server out there to bind", 10, || {
        udp_bound(&out_ns, 15353)
    });
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

    // Ping, while `vswitch capture` watches what the switch sends the container: the replies
    // the NAT stage builds are captured, outgoing on its port.
    let mut child = Command::new(vswitch_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "capture",
            "--container",
            &c,
            "--direction",
            "out",
            "-c",
            "2",
        ])
        .arg("icmp")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitch capture");
    let err = StreamLines::take(&mut child);
    let lines = StreamLines::of(child.stdout.take().expect("stdout piped"));
    let _capture = Guard(child);
    err.wait_for("capturing on", "vswitch capture", Duration::from_secs(10));
    assert!(
        d.ping(&c, &o.ip()),
        "ping to the outside\n{}",
        d.ok(&["stats"])
    );
    let reply = format!(" out 98 bytes {} > {} ICMP echo reply", o.ip(), d.ip_of(&c));
    assert!(
        lines.wait_line(&reply, Duration::from_secs(10)),
        "the NAT'd replies in the capture ({reply:?}):\n{}\n{}",
        lines.text(),
        err.text()
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
    let (sub, o, d, net) = network_and_outside("pub", &[]);
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
    let (sub, o, d, net) = network_and_outside("int", &["--internal"]);
    let (c1, c2) = (unique("a"), unique("b"));
    d.run(&c1, &["-d", "--network", &net, "--", "sleep", "300"]);
    d.run(&c2, &["-d", "--network", &net, "--", "sleep", "300"]);
    // Inside the network all is well (and names resolve)...
    assert!(d.ping(&c1, &d.ip_of(&c2)));
    let r = d.exec(&c1, &["getent", "hosts", &c2]);
    assert!(out(&r).contains(&d.ip_of(&c2)), "{}", out(&r));
    // ...but nothing gets out, even with a route forced through the gateway: the gateway drops
    // it, counted as "no egress".
    let no_egress = |d: &Daemon| {
        let s: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
        s["nat"]["drop_no_egress"]
            .as_u64()
            .unwrap_or_else(|| panic!("no nat.drop_no_egress in {s}"))
    };
    let dropped0 = no_egress(&d);
    let gw = format!("{sub}.1");
    let r = d.exec(&c1, &["ip", "route", "add", "default", "via", &gw]);
    assert!(r.status.success(), "default route in {c1}: {}", out(&r));
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
    // The two echo requests and at least one SYN reached the gateway and were dropped there.
    let dropped = no_egress(&d) - dropped0;
    assert!(dropped >= 3, "{dropped} packets counted as no egress");
}

const SINK: &str = "import socket,sys,hashlib\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind((sys.argv[1],int(sys.argv[2])))\nl.listen(1)\nc,a=l.accept()\nh=hashlib.sha256()\nn=0\nwhile True:\n d=c.recv(1<<20)\n if not d: break\n h.update(d); n+=len(d)\nprint(a[0],n,h.hexdigest(),flush=True)\nc.close()\n";
/// A TCP client written on a raw socket (the container's kernel must not answer for it: an
/// nftables rule in the container's own namespace drops the kernel's resets). It opens a
/// connection with SACK permitted, sends bytes 0..1000, then 2000..3000 (1000..2000 "lost"),
/// and expects an ACK of 1000 with a SACK block for 2000..3000; then the missing bytes, an ACK
/// of 3000, and a FIN. Prints the length and SHA-256 of what it sent. The SYN is sent again
/// each second until a SYN-ACK comes (10 tries).
const RAW_CLIENT: &str = r#"import socket,struct,sys,hashlib,time
dst,dport,src=sys.argv[1],int(sys.argv[2]),sys.argv[3]
sport=40000+(int(time.time()*1000)%20000)
def csum(b):
    if len(b)%2: b+=b'\0'
    x=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while x>>16: x=(x>>16)+(x&0xffff)
    return ~x&0xffff
def tcp(seq,ack,flags,data=b'',opts=b''):
    h=struct.pack('!HHIIBBHHH',sport,dport,seq,ack,((20+len(opts))//4)<<4,flags,65535,0,0)+opts
    ph=socket.inet_aton(src)+socket.inet_aton(dst)+struct.pack('!BBH',0,6,len(h)+len(data))
    return h[:16]+struct.pack('!H',csum(ph+h+data))+h[18:]+data
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_TCP)
s.settimeout(10)
def send(*a): s.sendto(tcp(*a),(dst,0))
def until(pred):
    while True:
        d=s.recv(65535); t=d[(d[0]&15)*4:]
        sp,dp,seq,ack,off,fl=struct.unpack('!HHIIBB',t[:14])
        if (sp,dp)!=(dport,sport): continue
        o=t[20:(off>>4)*4]; sack=[]; i=0
        while i<len(o):
            if o[i]==0: break
            if o[i]==1: i+=1; continue
            if o[i]==5: sack=[struct.unpack('!II',o[j:j+8]) for j in range(i+2,i+o[i+1],8)]
            i+=max(o[i+1],2)
        if pred(seq,ack,fl,sack): return seq,ack,fl,sack
isn=1000
for i in range(10):
    send(isn,0,0x02,b'',b'\x02\x04\x05\xb4\x01\x01\x04\x02')
    s.settimeout(1)
    try:
        seq,_,_,_=until(lambda q,a,f,k: f&0x12==0x12); break
    except socket.timeout:
        print('no SYN-ACK within 1 s: SYN again',file=sys.stderr)
else:
    sys.exit('no SYN-ACK after 10 SYNs')
s.settimeout(10)
irs=seq+1
send(isn+1,irs,0x10)
A,B,C=b'a'*1000,b'b'*1000,b'c'*1000
send(isn+1,irs,0x18,A)
until(lambda q,a,f,k: a==isn+1001)
send(isn+2001,irs,0x18,C)
_,a,_,k=until(lambda q,a,f,k: bool(k))
print('sack',a-isn-1,[(x-isn-1,y-isn-1) for x,y in k])
send(isn+1001,irs,0x18,B)
until(lambda q,a,f,k: a==isn+3001)
send(isn+3001,irs,0x11)
until(lambda q,a,f,k: a==isn+3002)
print('sent',3000,hashlib.sha256(A+B+C).hexdigest())
"#;

/// A segment the container sends past a gap is held by the gateway, reported with a SACK
/// block, and delivered in order once the gap is filled: the server out there gets every
/// byte in order.
#[test]
fn egress_tcp_holds_and_sacks_bytes_past_a_gap() {
    if !need_root("egress-sack") {
        return;
    }
    let (_, o, d, c) = container_and_outside("sack");
    let table = unique("rst");
    for args in [
        vec!["add", "table", "ip", &table],
        vec![
            "add",
            "chain",
            "ip",
            &table,
            "out",
            "{ type filter hook output priority 0 ; }",
        ],
        vec![
            "add", "rule", "ip", &table, "out", "tcp", "flags", "&", "rst", "!=", "0", "drop",
        ],
    ] {
        let mut a = vec!["nft"];
        a.extend_from_slice(&args);
        let r = d.exec(&c, &a);
        assert!(r.status.success(), "nft {args:?}: {}", out(&r));
    }

    let log = d.dir.join("sink.log");
    let _sink = o.spawn(&["python3", "-c", SINK, &o.ip(), "15400"], &log);
    let out_ns = format!("/run/netns/{}", o.ns.name);
    wait_until("the sink out there to listen", 10, || {
        tcp_listening(&out_ns, 15400)
    });
    let ip = d.ip_of(&c);
    let r = d.exec(&c, &["python3", "-c", RAW_CLIENT, &o.ip(), "15400", &ip]);
    let text = out(&r);
    assert!(r.status.success(), "raw client: {text}\n{}", d.log());
    assert!(
        text.contains("sack 1000 [(2000, 3000)]"),
        "the ACK after the gap: {text}"
    );
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .expect("the client's digest")
        .to_string();
    wait_until("the sink's digest", 30, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() > 0)
    });
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        got.trim(),
        format!("{} {sent}", o.host_ip()),
        "the server got other bytes than the container sent"
    );
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["nat"]["tcp_held"].as_u64(), Some(1), "{stats}");
}
