//! `vswitch-cni`, end to end: the built plugin run with the CNI spec's environment and stdin
//! against a real daemon, with real namespaces and real clients (ping, curl), as a runtime runs
//! it; then a real runtime (podman with its CNI backend) in tests/tests/cni_podman.rs.

use e2e::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Path of the built `vswitch-cni` (beside `vswitch`).
fn cni_bin() -> PathBuf {
    let bin = vswitch_bin().with_file_name("vswitch-cni");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --release -p switch`)",
        bin.display()
    );
    bin
}

/// One plugin call: the command, the container, its namespace and interface, `CNI_ARGS`.
struct Call<'a> {
    cmd: &'a str,
    id: &'a str,
    netns: Option<&'a str>,
    ifname: &'a str,
    args: Option<&'a str>,
}

/// Runs the plugin as a runtime does; returns its status and its stdout as JSON (Null when
/// empty).
fn cni(c: &Call, conf: &Value) -> (i32, Value) {
    let mut cmd = Command::new(cni_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", c.cmd)
        .env("CNI_CONTAINERID", c.id)
        .env("CNI_IFNAME", c.ifname)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = c.netns {
        cmd.env("CNI_NETNS", ns);
    }
    if let Some(a) = c.args {
        cmd.env("CNI_ARGS", a);
    }
    let mut child = cmd.spawn().expect("run vswitch-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v = if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}"))
    };
    (o.status.code().unwrap_or(-1), v)
}

/// Runs a call that must succeed; returns its output.
fn cni_ok(d: &Daemon, c: &Call, conf: &Value) -> Value {
    let (st, v) = cni(c, conf);
    assert_eq!(
        st,
        0,
        "{} failed: {v}\n--- daemon log ---\n{}",
        c.cmd,
        d.log()
    );
    v
}

/// Runs a call that must fail with CNI error `code`; returns the error's message.
fn cni_err(c: &Call, conf: &Value, code: u64) -> String {
    let (st, v) = cni(c, conf);
    assert_ne!(st, 0, "{} should have failed: {v}", c.cmd);
    assert_eq!(v["code"].as_u64(), Some(code), "{} error: {v}", c.cmd);
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["msg"].as_str().unwrap().to_string()
}

/// A subnet for this test process (`10.K.N.0/24`, K picked by the caller).
fn subnet(k: u8) -> (String, String) {
    let n = std::process::id() % 250;
    (format!("10.{k}.{n}.0/24"), format!("10.{k}.{n}"))
}

/// The network configuration a runtime would pass for network `name` on `d`'s socket.
fn conf(d: &Daemon, version: &str, name: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": name,
        "type": "vswitch-cni",
        "socket": d.socket,
    });
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    c
}

/// The containers of `ps --json` the plugin attached (runtime `cni`), by runtime id.
fn cni_containers(d: &Daemon) -> Vec<Value> {
    let v: Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["runtime"]["frontend"] == "cni")
        .cloned()
        .collect()
}

fn in_ns(ns: &Netns, cmd: &[&str]) -> String {
    let o = ns.exec(cmd);
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn ping(ns: &Netns, ip: &str) -> bool {
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", ip])
        .status
        .success()
}

/// A container id as runtimes make them: 64 hex digits.
fn long_id(tag: &str) -> String {
    let u = unique(tag);
    format!("{u}{}", "0123456789abcdef".repeat(4))[..64].to_string()
}

#[test]
fn add_check_del_twice_with_the_runtime_id_in_ps_and_ports() {
    if !need_root("cni_add") || !require_tools(&["ping"]) {
        return;
    }
    let d = Daemon::start("cniadd");
    let ns = Netns::new(&unique("cnia"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("ca");
    let net = unique("cn");
    let (sub, pre) = subnet(213);
    // The network does not exist yet: the configuration creates it on first use.
    let cf = conf(
        &d,
        "1.0.0",
        "podnet",
        json!({ "network": net, "subnet": sub }),
    );
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "net1",
        args: Some("IgnoreUnknown=1;K8S_POD_NAME=web"),
    };
    let r = cni_ok(&d, &call("ADD"), &cf);
    let gw = format!("{pre}.1");
    assert_eq!(r["cniVersion"], "1.0.0", "{r}");
    assert_eq!(r["interfaces"][0]["name"], "net1", "{r}");
    assert_eq!(r["interfaces"][0]["sandbox"], path.as_str(), "{r}");
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with(&pre) && addr.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], gw.as_str(), "{r}");
    assert_eq!(r["ips"][0]["interface"], 0, "{r}");
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]), "{r}");
    assert_eq!(r["dns"]["nameservers"], json!([gw]), "{r}");
    assert!(r["ips"][0].get("version").is_none(), "1.0.0 has no version");

    // The interface is there as the result says, and traffic flows through the switch.
    let shown = in_ns(&ns, &["ip", "-o", "addr", "show", "net1"]);
    assert!(shown.contains(&addr), "{shown}");
    let mac = r["interfaces"][0]["mac"].as_str().unwrap();
    assert!(in_ns(&ns, &["ip", "link", "show", "net1"]).contains(mac));
    assert!(ping(&ns, &gw), "container -> gateway {gw}\n{}", d.log());

    // vswitch shows it with the runtime's id.
    let cs = cni_containers(&d);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0]["runtime"]["id"], id.as_str());
    let name = cs[0]["name"].as_str().unwrap().to_string();
    assert_eq!(name, id[..12], "the short id names it");
    assert_eq!(cs[0]["endpoints"][0]["network"], net.as_str());
    assert!(d.ok(&["ps"]).contains(&name));
    let ports: Value = serde_json::from_str(&d.ok(&["ports", "--json"])).unwrap();
    let port = cs[0]["endpoints"][0]["port_name"].as_str().unwrap();
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port && p["container"] == name.as_str()),
        "{ports}"
    );
    let fdb = d.ok(&["fdb", &net]);
    assert!(
        fdb.contains(port),
        "the container's MAC is learned on its port: {fdb}"
    );

    // CHECK agrees with the ADD's result, and fails when it does not.
    let mut with_prev = cf.clone();
    with_prev["prevResult"] = r.clone();
    cni_ok(&d, &call("CHECK"), &with_prev);
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!(format!("{pre}.250/24"));
    let msg = cni_err(&call("CHECK"), &wrong, 101);
    assert!(msg.contains(&format!("{pre}.250")), "{msg}");
    // An address removed behind vswitch's back is noticed.
    let a = addr.clone();
    ns.exec(&["ip", "addr", "del", &a, "dev", "net1"]);
    let msg = cni_err(&call("CHECK"), &with_prev, 101);
    assert!(msg.contains("net1"), "{msg}");

    // ADD with an interface name that already exists is an error, and leaves nothing.
    let msg = cni_err(&call("ADD"), &cf, 100);
    assert!(msg.contains("net1"), "{msg}");
    assert_eq!(
        cni_containers(&d)[0]["endpoints"].as_array().unwrap().len(),
        1
    );

    // DEL removes it all; a second DEL is fine; CHECK then says the container is unknown.
    let mut del = cf.clone();
    del["prevResult"] = r.clone();
    cni_ok(&d, &call("DEL"), &del);
    assert!(cni_containers(&d).is_empty(), "{}", d.ok(&["ps"]));
    assert!(
        !ns.exec(&["ip", "link", "show", "net1"]).status.success(),
        "net1 is gone from the namespace"
    );
    let ports: Value = serde_json::from_str(&d.ok(&["ports", "--json"])).unwrap();
    assert!(
        !ports.as_array().unwrap().iter().any(|p| p["name"] == port),
        "{ports}"
    );
    cni_ok(&d, &call("DEL"), &del);
    cni_err(&call("CHECK"), &with_prev, 3);
    // The address went back to the pool: an ADD asking for it (CNI_ARGS IP=) gets it.
    let ip_arg = format!("IgnoreUnknown=1;IP={}", addr.split('/').next().unwrap());
    let again = Call {
        args: Some(&ip_arg),
        ..call("ADD")
    };
    let r2 = cni_ok(&d, &again, &cf);
    assert_eq!(r2["ips"][0]["address"], addr.as_str());
    cni_ok(&d, &call("DEL"), &cf);
}

#[test]
fn a_cni_container_and_a_vswitch_run_container_ping_each_other() {
    if !need_root("cni_mix") || !require_tools(&["ping"]) {
        return;
    }
    let d = Daemon::start("cnimix");
    let net = unique("mx");
    d.ok(&["network", "create", &net]);
    let ns = Netns::new(&unique("cnim"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("mx");
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "eth0",
        args: None,
    };
    let cf = conf(&d, "0.4.0", &net, json!({}));
    let r = cni_ok(&d, &call("ADD"), &cf);
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.4.0 results carry the version: {r}"
    );
    let cni_ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let other = unique("run");
    d.run(&other, &["-d", "--network", &net, "--", "sleep", "300"]);
    let run_ip = d.ip_of(&other);
    assert!(ping(&ns, &run_ip), "cni -> run\n{}", d.log());
    assert!(d.ping(&other, &cni_ip), "run -> cni");
    let inspect: Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    let members = inspect[0]["containers"].as_object().unwrap();
    assert!(
        members.contains_key(&id[..12]) && members.contains_key(&other),
        "{inspect}"
    );
    cni_ok(&d, &call("DEL"), &cf);
}

#[test]
fn static_address_mac_mtu_and_a_published_port() {
    if !need_root("cni_caps") || !require_tools(&["python3", "curl", "ss"]) {
        return;
    }
    let d = Daemon::start("cnicap");
    let ns = Netns::new(&unique("cnic"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("cp");
    let net = unique("cp");
    let (sub, pre) = subnet(214);
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    let ip = format!("{pre}.77");
    let mac = "02:aa:bb:cc:dd:07";
    let cf = conf(
        &d,
        "1.1.0",
        &net,
        json!({
            "subnet": sub,
            "capabilities": {"portMappings": true, "ips": true, "mac": true, "mtu": true},
            "runtimeConfig": {
                "ips": [format!("{ip}/24")],
                "mac": mac,
                "mtu": 1400,
                "portMappings": [{"hostPort": host_port, "containerPort": 8000, "protocol": "tcp"}],
                "bandwidth": {"ingressRate": 1},
            },
        }),
    );
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "eth0",
        args: None,
    };
    let r = cni_ok(&d, &call("ADD"), &cf);
    assert_eq!(r["ips"][0]["address"], format!("{ip}/24").as_str(), "{r}");
    assert_eq!(r["interfaces"][0]["mac"], mac, "{r}");
    assert_eq!(
        r["interfaces"][0]["mtu"], 1400,
        "1.1.0 reports the MTU: {r}"
    );
    let link = in_ns(&ns, &["ip", "link", "show", "eth0"]);
    assert!(link.contains(mac) && link.contains("mtu 1400"), "{link}");
    let cs = cni_containers(&d);
    assert!(
        cs[0]["ports"][0]
            .as_str()
            .unwrap()
            .contains(&format!(":{host_port}->8000/tcp")),
        "{cs:?}"
    );

    // The published port answers from the host, through the gateway stage.
    let log = std::fs::File::create(d.dir.join("http.log")).unwrap();
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "python3",
            "-m",
            "http.server",
            "8000",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(srv.id());
    wait_until(
        "the HTTP server in the namespace",
        Duration::from_secs(20),
        || tcp_listening(&path, 8000),
    );
    let url = format!("http://127.0.0.1:{host_port}/");
    let o = sh(
        "curl",
        &[
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "200",
        "published port {host_port}\n{}",
        d.log()
    );

    // The same address again for another container is refused, and leaves nothing behind.
    let ns2 = Netns::new(&unique("cnic"));
    let path2 = format!("/run/netns/{}", ns2.name);
    let id2 = long_id("cq");
    let mut cf2 = cf.clone();
    cf2["runtimeConfig"]["portMappings"] = json!([]);
    let c2 = Call {
        cmd: "ADD",
        id: &id2,
        netns: Some(&path2),
        ifname: "eth0",
        args: None,
    };
    let msg = cni_err(&c2, &cf2, 100);
    assert!(msg.contains(&ip), "{msg}");
    assert_eq!(
        cni_containers(&d).len(),
        1,
        "the refused ADD left no container"
    );
    assert!(!ns2.exec(&["ip", "link", "show", "eth0"]).status.success());
    // An MTU above the network's is refused.
    cf2["runtimeConfig"] = json!({"mtu": 9000});
    let msg = cni_err(&c2, &cf2, 100);
    assert!(msg.contains("mtu"), "{msg}");

    cni_ok(&d, &call("DEL"), &cf);
    let _ = srv.kill();
    let _ = srv.wait();
    // The port is no longer published.
    let o = sh("curl", &["-s", "-m", "2", "-o", "/dev/null", &url]);
    assert!(
        !o.status.success(),
        "port {host_port} still answers after DEL"
    );
}

/// Kills a process this test started, by its pid, when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = sh("kill", &[&self.0.to_string()]);
    }
}

#[test]
fn gc_removes_the_attachments_the_runtime_no_longer_lists() {
    if !need_root("cni_gc") {
        return;
    }
    let d = Daemon::start("cnigc");
    let net = unique("gc");
    d.ok(&["network", "create", &net]);
    let keep_run = unique("gr");
    d.run(&keep_run, &["--network", &net]);
    let nss: Vec<Netns> = (0..3).map(|_| Netns::new(&unique("cnig"))).collect();
    let ids: Vec<String> = (0..3).map(|i| long_id(&format!("g{i}"))).collect();
    let cf = conf(&d, "1.1.0", &net, json!({}));
    for (ns, id) in nss.iter().zip(&ids) {
        let path = format!("/run/netns/{}", ns.name);
        let c = Call {
            cmd: "ADD",
            id,
            netns: Some(&path),
            ifname: "eth0",
            args: None,
        };
        cni_ok(&d, &c, &cf);
    }
    assert_eq!(cni_containers(&d).len(), 3);
    let gc = |valid: Value| {
        let mut c = cf.clone();
        c["cni.dev/valid-attachments"] = valid;
        cni(
            &Call {
                cmd: "GC",
                id: "",
                netns: None,
                ifname: "",
                args: None,
            },
            &c,
        )
    };
    // Without the list GC refuses (it would remove everything).
    let (st, v) = cni(
        &Call {
            cmd: "GC",
            id: "",
            netns: None,
            ifname: "",
            args: None,
        },
        &cf,
    );
    assert_eq!((st, v["code"].as_u64()), (1, Some(7)), "{v}");
    // All listed: nothing goes.
    let all: Vec<Value> = ids
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    assert_eq!(gc(json!(all)).0, 0);
    assert_eq!(cni_containers(&d).len(), 3);
    // Two listed (one with another interface name): the others go, their links too.
    let valid = json!([
        {"containerID": ids[0], "ifname": "eth0"},
        {"containerID": ids[1], "ifname": "eth1"},
    ]);
    let (st, v) = gc(valid);
    assert_eq!(st, 0, "{v}");
    let left: Vec<String> = cni_containers(&d)
        .iter()
        .map(|c| c["runtime"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [ids[0].clone()]);
    assert!(!nss[1]
        .exec(&["ip", "link", "show", "eth0"])
        .status
        .success());
    assert!(!nss[2]
        .exec(&["ip", "link", "show", "eth0"])
        .status
        .success());
    assert!(nss[0]
        .exec(&["ip", "link", "show", "eth0"])
        .status
        .success());
    // An empty list removes every CNI attachment on the network, never a `vswitch run` one.
    assert_eq!(gc(json!([])).0, 0);
    assert!(cni_containers(&d).is_empty());
    assert!(
        !d.container(&keep_run).is_null(),
        "GC left {keep_run} alone"
    );
}

#[test]
fn status_errors_and_del_after_the_namespace_is_gone() {
    if !need_root("cni_status") {
        return;
    }
    let mut d = Daemon::start("cnist");
    let net = unique("st");
    let status = Call {
        cmd: "STATUS",
        id: "",
        netns: None,
        ifname: "",
        args: None,
    };
    // STATUS: the network does not exist and the configuration cannot create it.
    let missing = conf(&d, "1.1.0", &net, json!({}));
    let msg = cni_err(&status, &missing, 50);
    assert!(msg.contains("vswitch network create"), "{msg}");
    d.ok(&["network", "create", &net]);
    let cf = conf(&d, "1.1.0", &net, json!({}));
    assert_eq!(cni(&status, &cf), (0, Value::Null));

    let ns = Netns::new(&unique("cnis"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("st");
    let call = |cmd, netns| Call {
        cmd,
        id: &id,
        netns,
        ifname: "eth0",
        args: None,
    };
    // Errors with the spec's codes.
    let other = conf(&d, "1.0.0", &unique("no"), json!({}));
    let msg = cni_err(&call("ADD", Some(&path)), &other, 7);
    assert!(msg.contains("vswitch network create"), "{msg}");
    cni_err(
        &call("ADD", Some(&path)),
        &conf(&d, "0.2.0", &net, json!({})),
        1,
    );
    cni_err(&call("ADD", None), &cf, 4);
    let msg = cni_err(&call("ADD", Some("/tmp")), &cf, 100);
    assert!(msg.contains("not a network namespace"), "{msg}");
    // An interface of that name already in the namespace: refused, nothing left.
    // (a veth pair inside: this kernel has no dummy module)
    let o = ns.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    assert!(o.status.success(), "{o:?}");
    let msg = cni_err(&call("ADD", Some(&path)), &cf, 100);
    assert!(msg.contains("already exists"), "{msg}");
    assert!(cni_containers(&d).is_empty());
    ns.exec(&["ip", "link", "del", "eth0"]);

    // DEL after the namespace was deleted: it succeeds and the daemon forgets the container.
    let ns2 = Netns::new(&unique("cnis"));
    let path2 = format!("/run/netns/{}", ns2.name);
    cni_ok(&d, &call("ADD", Some(&path2)), &cf);
    let port = cni_containers(&d)[0]["endpoints"][0]["port_name"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ns2);
    cni_ok(&d, &call("DEL", Some(&path2)), &cf);
    cni_ok(&d, &call("DEL", None), &cf);
    assert!(cni_containers(&d).is_empty());
    assert!(
        !std::path::Path::new("/sys/class/net").join(&port).exists(),
        "the veth host end {port} is gone"
    );

    // The daemon down: STATUS says not available (50), ADD and DEL say try again (11).
    d.stop(false);
    let msg = cni_err(&status, &cf, 50);
    assert!(msg.contains("vswitch daemon"), "{msg}");
    cni_err(&call("ADD", Some(&path)), &cf, 11);
    cni_err(&call("DEL", Some(&path)), &cf, 11);
}

#[test]
fn a_macvlan_network_created_by_the_configuration() {
    if !need_root("cni_macvlan") || !require_tools(&["ping"]) {
        return;
    }
    let n = std::process::id() % 250;
    let lan = e2e::lan::Lan::new(&format!("10.96.{n}.1/24"));
    let d = Daemon::start("cnimv");
    let net = unique("mv");
    let cf = conf(
        &d,
        "1.0.0",
        &net,
        json!({
            "driver": "macvlan",
            "subnet": format!("10.96.{n}.0/24"),
            "gateway": format!("10.96.{n}.1"),
            "ipRange": format!("10.96.{n}.64/26"),
            "options": {"parent": lan.parent},
        }),
    );
    let ns = Netns::new(&unique("cnimv"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("mv");
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "eth0",
        args: None,
    };
    let r = cni_ok(&d, &call("ADD"), &cf);
    let gw = format!("10.96.{n}.1");
    // The LAN's router is the gateway and the default route; the switch answers no DNS there.
    assert_eq!(r["ips"][0]["gateway"], gw.as_str(), "{r}");
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]), "{r}");
    assert!(r.get("dns").is_none(), "{r}");
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        ip.split('.').nth(3).unwrap().parse::<u8>().unwrap() >= 64,
        "{ip} from the ip-range"
    );
    // The LAN machine and the container reach each other through the parent.
    assert!(ping(&ns, &gw), "container -> LAN machine {gw}\n{}", d.log());
    let o = lan.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip]);
    assert!(o.status.success(), "LAN machine -> container {ip}");
    let inspect: Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(inspect[0]["driver"], "macvlan");
    // A configuration that contradicts the existing network is refused (7).
    let mut other = cf.clone();
    other["subnet"] = json!("10.95.0.0/24");
    let msg = cni_err(
        &Call {
            id: "x2",
            ..call("ADD")
        },
        &other,
        7,
    );
    assert!(msg.contains("subnet"), "{msg}");
    cni_ok(&d, &call("DEL"), &cf);
    assert!(cni_containers(&d).is_empty());
}

#[test]
fn a_cni_attachment_survives_a_kill_9_of_the_daemon() {
    if !need_root("cni_restart") || !require_tools(&["ping"]) {
        return;
    }
    let mut d = Daemon::start("cnirs");
    let net = unique("rs");
    d.ok(&["network", "create", &net]);
    let ns = Netns::new(&unique("cnir"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("rs");
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "ens5",
        args: Some("MAC=02:aa:00:00:00:09"),
    };
    let cf = conf(&d, "1.0.0", &net, json!({}));
    let r = cni_ok(&d, &call("ADD"), &cf);
    let gw = r["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert_eq!(
        r["interfaces"][0]["mac"], "02:aa:00:00:00:09",
        "CNI_ARGS MAC=: {r}"
    );
    d.restart(true);
    // The record, with the runtime's id, came back, and the interface works through the new
    // switch; CHECK and DEL find it.
    let cs = cni_containers(&d);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0]["runtime"]["id"], id.as_str());
    assert_eq!(cs[0]["endpoints"][0]["ifname"], "ens5");
    assert!(
        ping(&ns, &gw),
        "container -> gateway after the restart\n{}",
        d.log()
    );
    let mut with_prev = cf.clone();
    with_prev["prevResult"] = r;
    cni_ok(&d, &call("CHECK"), &with_prev);
    cni_ok(&d, &call("DEL"), &with_prev);
    assert!(cni_containers(&d).is_empty());
}

#[test]
fn an_overlay_network_created_by_the_configuration_reaches_a_linux_vxlan_peer() {
    if !need_root("cni_overlay") || !require_tools(&["ping", "iperf3"]) {
        return;
    }
    let (sub, pre) = subnet(215);
    let (_, ul) = subnet(216);
    // Another host: Linux's own vxlan device (VNI 4343, a UDP port of this test) in a
    // namespace behind an underlay veth, with the overlay address .200.
    let port = (5300 + std::process::id() % 400) as u16;
    let peer = e2e::vxlan::VxlanPeer::new(&ul, 4343, port, &format!("{pre}.200/24"));
    let d = Daemon::start("cniov");
    let net = unique("ov");
    let cf = conf(
        &d,
        "1.1.0",
        &net,
        json!({
            "driver": "overlay",
            "subnet": sub,
            "ipRange": format!("{pre}.0/25"),
            // A number, a string, a list (joined by commas: `-o peers=A,B`).
            "options": {"vni": 4343, "vtep": peer.local, "peers": [peer.remote], "port": port},
        }),
    );
    let ns = Netns::new(&unique("cniov"));
    let path = format!("/run/netns/{}", ns.name);
    let id = long_id("ov");
    let call = |cmd| Call {
        cmd,
        id: &id,
        netns: Some(&path),
        ifname: "eth0",
        args: Some("IgnoreUnknown=1;K8S_POD_NAME=ov"),
    };
    let r = cni_ok(&d, &call("ADD"), &cf);
    let inspect: Value = serde_json::from_str(&d.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(inspect[0]["driver"], "overlay", "{inspect}");
    assert_eq!(inspect[0]["options"]["vni"], "4343", "{inspect}");
    assert_eq!(inspect[0]["options"]["peers"], peer.remote.as_str());
    // Overlay endpoints attach by TAP, as `vswitch run` ones do.
    let cs = cni_containers(&d);
    assert_eq!(cs[0]["endpoints"][0]["attach"], "tap", "{cs:?}");
    // An overlay without "gateway" has none: no gateway, default route or DNS in the result.
    assert!(
        r["ips"][0].get("gateway").is_none() && r.get("routes").is_none(),
        "{r}"
    );
    assert!(r.get("dns").is_none(), "{r}");
    // The overlay's MTU (the underlay's 1500 minus 50), on the interface and in the result.
    assert_eq!(r["interfaces"][0]["mtu"], 1450, "{r}");
    let link = in_ns(&ns, &["ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        ip.starts_with(&format!("{pre}."))
            && ip.split('.').nth(3).unwrap().parse::<u8>().unwrap() < 128,
        "{ip} from the ip-range"
    );
    // Across the tunnel both ways, full-sized packets included, and TCP.
    let remote = format!("{pre}.200");
    assert!(
        ping(&ns, &remote),
        "container -> Linux vxlan peer\n{}",
        d.log()
    );
    assert!(peer.ping(&ip), "Linux vxlan peer -> container");
    let big = ns.exec(&[
        "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1422", &remote,
    ]);
    assert!(
        big.status.success(),
        "1450-byte packets: {}",
        String::from_utf8_lossy(&big.stdout)
    );
    let log = d.dir.join("iperf3.log");
    let srv = Iperf3Server::start(&format!("/run/netns/{}", peer.ns.name), &log);
    let o = ns.exec(&["iperf3", "-c", &remote, "-t", "2", "-J"]);
    drop(srv);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!("cni overlay: iperf3 {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "iperf3 moved only {bps} bit/s");
    // The peer's MAC is learned against its VTEP.
    peer.assert_learned_by(&d, &net);
    // CHECK agrees; DEL removes the endpoint (the network stays, as with every driver).
    let mut with_prev = cf.clone();
    with_prev["prevResult"] = r.clone();
    cni_ok(&d, &call("CHECK"), &with_prev);
    cni_ok(&d, &call("DEL"), &with_prev);
    assert!(cni_containers(&d).is_empty());
    assert!(!ns.exec(&["ip", "link", "show", "eth0"]).status.success());
    cni_ok(&d, &call("DEL"), &with_prev);
}
