//! `vswitch trace` end to end: real containers, real frames, and the trace of what the switch
//! did with them — a unicast to a learned MAC, a flood to an unknown one, a drop and its
//! reason — in JSON and as text.

use e2e::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Sends one Ethernet frame from eth0: `dst` and `src` MACs, EtherType 0x88b5.
const SEND: &str = r#"import socket,sys
dst,src=(bytes.fromhex(a.replace(':','')) for a in sys.argv[1:3])
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)
s.bind(('eth0',0))
s.send(dst+src+b'\x88\xb5'+b'trace me'+b'\0'*38)
"#;

/// A running `vswitch trace`, killed on drop.
struct Tracing {
    child: Child,
    err: StreamLines,
}

impl Tracing {
    /// Starts `vswitch trace ARGS` and waits until the trace is armed.
    fn start(d: &Daemon, args: &[&str]) -> Tracing {
        let mut child = Command::new(vswitch_bin())
            .arg("--socket")
            .arg(&d.socket)
            .arg("trace")
            .args(["--timeout", "20"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vswitch trace");
        let err = StreamLines::take(&mut child);
        err.wait_for("tracing the next", "vswitch trace", Duration::from_secs(10));
        Tracing { child, err }
    }

    /// Waits for the trace to end; its stdout.
    fn output(mut self) -> String {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out).unwrap();
        }
        let st = self.child.wait().unwrap();
        assert!(st.success(), "vswitch trace failed: {}", self.err.text());
        out
    }

    fn json(self) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_id(d: &Daemon, container: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["ports", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|p| p["container"] == container)
        .and_then(|p| p["id"].as_u64())
        .unwrap_or_else(|| panic!("no port of {container}"))
}

fn mac_of(d: &Daemon, c: &str) -> String {
    d.container(c)["endpoints"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string()
}

fn send(d: &Daemon, from: &str, dst: &str, src: &str) {
    let o = d.exec(from, &["python3", "-c", SEND, dst, src]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn trace_shows_unicast_flood_and_drop_with_its_reason() {
    if !need_root("trace") {
        return;
    }
    let d = Daemon::start("trace");
    d.ok(&["network", "create", "--subnet", "10.236.7.0/24", "trnet"]);
    let (a, b) = (unique("tra"), unique("trb"));
    for x in [&a, &b] {
        d.run(x, &["--network", "trnet"]);
    }
    let b_ip = d.ip_of(&b);
    assert!(d.ping(&a, &b_ip), "A -> B");
    let (pa, pb) = (port_id(&d, &a), port_id(&d, &b));

    // A known destination: B's MAC was learned by the ping.
    let t = Tracing::start(&d, &["--container", &a, "--proto", "icmp", "--json"]);
    assert!(d.ping(&a, &b_ip));
    let r = t.json();
    assert_eq!(r.len(), 1, "{r:?}");
    let r = &r[0];
    assert_eq!(r["ingress"], pa, "{r}");
    assert_eq!(r["network_name"], "trnet", "{r}");
    assert_eq!(r["learn"], "refreshed", "{r}");
    assert_eq!(r["lookup"], format!("hit port {pb}"), "{r}");
    assert_eq!(r["decision"], "unicast", "{r}");
    assert_eq!(r["outputs"], serde_json::json!([pb]), "{r}");
    assert!(
        r["summary"].as_str().unwrap().contains("ICMP echo request"),
        "{r}"
    );

    // An unknown destination: flooded to every other port of the network (B's and the
    // host's gateway port).
    let unknown = "02:00:00:00:99:99";
    let t = Tracing::start(&d, &["--container", &a, "--mac", unknown, "--json"]);
    send(&d, &a, unknown, &mac_of(&d, &a));
    let r = &t.json()[0];
    assert_eq!(r["lookup"], "miss", "{r}");
    assert_eq!(r["decision"], "flood", "{r}");
    let ports: serde_json::Value = serde_json::from_str(&d.ok(&["ports", "--json"])).unwrap();
    let mut others: Vec<u64> = ports
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["network"] == "trnet" && p["id"] != pa)
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    others.sort();
    assert!(others.len() >= 2 && others.contains(&pb), "{ports}");
    let mut outs: Vec<u64> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    outs.sort();
    assert_eq!(outs, others, "{r}");

    // A forged source (port security is on): dropped, and the reason named, in text.
    let forged = "02:00:00:00:66:66";
    let t = Tracing::start(&d, &["--container", &a, "--mac", forged]);
    send(&d, &a, &mac_of(&d, &b), forged);
    let text = t.output();
    assert!(text.contains("decision drop: spoofed_mac"), "{text}");
    assert!(text.contains(&format!("(port {pa})")), "{text}");

    // Bad filters are refused with what to write instead.
    let e = d.fails(&["trace", "--proto", "sctp"]);
    assert!(e.contains("one of arp"), "{e}");
    let e = d.fails(&["trace", "--port", "nosuchport"]);
    assert!(e.contains("vswitch ports"), "{e}");
    // The filter language is `vswitch capture`'s: its words are taken, and checked, too.
    let e = d.fails(&["trace", "icmp", "and", "frob"]);
    assert!(e.contains("unknown filter word `frob`"), "{e}");
}
