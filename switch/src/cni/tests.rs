//! Unit tests of the CNI front end's parsing and result building (no daemon: the end-to-end
//! tests in tests/tests/cni.rs run the binary against a real one).

use super::*;
use crate::control::api::{AttachMode, EndpointInfo};

fn env(cmd: &str) -> Env {
    Env {
        command: Some(cmd.into()),
        container_id: Some("abc".into()),
        netns: Some("/run/netns/x".into()),
        ifname: Some("eth0".into()),
        args: None,
        path: None,
    }
}

fn run(e: &Env, stdin: &str) -> (Value, i32) {
    let o = main_with(e, Ok(stdin.as_bytes().to_vec()));
    let v = if o.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&o.stdout).unwrap()
    };
    (v, o.status)
}

#[test]
fn version_lists_the_supported_versions_and_echoes_the_asked_one() {
    let (v, st) = run(&env("VERSION"), r#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(st, 0);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let (v, _) = run(&env("VERSION"), "");
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn errors_carry_the_spec_codes() {
    // Unsupported version: 1.
    let (v, st) = run(
        &env("ADD"),
        r#"{"cniVersion":"0.2.0","name":"n","type":"vswitch-cni"}"#,
    );
    assert_eq!((st, v["code"].as_u64()), (1, Some(1)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("1.1.0"));
    // Not JSON: 6.
    let (v, _) = run(&env("ADD"), "{not json");
    assert_eq!(v["code"], 6, "{v}");
    // No name: 7.
    let (v, _) = run(
        &env("DEL"),
        r#"{"cniVersion":"1.0.0","type":"vswitch-cni"}"#,
    );
    assert_eq!(v["code"], 7, "{v}");
    // Missing variables: 4, naming them.
    let mut e = env("ADD");
    e.netns = None;
    e.ifname = None;
    let (v, _) = run(&e, r#"{"cniVersion":"1.0.0","name":"n"}"#);
    assert_eq!(v["code"], 4, "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
        "{msg}"
    );
    assert_eq!(
        v["cniVersion"], "1.0.0",
        "the error echoes the request's version"
    );
    // Unknown command: 4.
    let (v, _) = run(&env("FROB"), "{}");
    assert_eq!(v["code"], 4, "{v}");
    // No command at all: 4.
    let (v, _) = run(&Env::default(), "");
    assert_eq!(v["code"], 4, "{v}");
    // stdin unreadable: 5.
    let o = main_with(&env("ADD"), Err(std::io::Error::other("boom")));
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["code"], 5, "{v}");
}

#[test]
fn an_unreachable_daemon_is_try_again_for_add_and_not_available_for_status() {
    let conf = r#"{"cniVersion":"1.1.0","name":"n","type":"vswitch-cni","socket":"/nonexistent/vswitch.sock"}"#;
    let (v, _) = run(&env("ADD"), conf);
    assert_eq!(v["code"], 11, "{v}");
    assert!(v["msg"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/vswitch.sock"));
    let (v, _) = run(&env("STATUS"), conf);
    assert_eq!(v["code"], 50, "{v}");
}

#[test]
fn cni_args_and_static_addresses() {
    let mut e = env("ADD");
    e.args = Some("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.9.0.7/24".into());
    let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
    assert_eq!(static_ip(&e, &conf).unwrap().as_deref(), Some("10.9.0.7"));
    // runtimeConfig.ips wins, IPv6 entries are skipped.
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["fd00::5/64","10.9.0.8/24"]}}"#,
    )
    .unwrap();
    assert_eq!(static_ip(&e, &conf).unwrap().as_deref(), Some("10.9.0.8"));
    e.args = Some("IP=nonsense".into());
    let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
    assert_eq!(static_ip(&e, &conf).unwrap_err().code, 7);
    e.args = Some("novalue".into());
    assert_eq!(e.cni_args().unwrap_err().code, 4);
}

#[test]
fn port_mappings_become_publish_specs() {
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[
            {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
            {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"},
            {"hostPort":1,"containerPort":2,"protocol":"sctp"}]}}"#,
    )
    .unwrap();
    let pm = &conf.runtime_config.port_mappings;
    assert_eq!(pm[0].spec().unwrap(), "8080:80/tcp");
    assert_eq!(pm[1].spec().unwrap(), "127.0.0.1:5353:53/udp");
    assert_eq!(pm[2].spec().unwrap_err().code, 2);
}

#[test]
fn network_options_create_the_network() {
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"podnet","type":"vswitch-cni","network":"app","subnet":"10.7.0.0/24","mtu":1400,"options":{"parent":"eth9"}}"#,
    )
    .unwrap();
    assert_eq!(conf.network(), "app");
    assert!(conf.creates());
    let c = conf.create_request();
    assert_eq!(c.name, "app");
    assert_eq!(c.driver, "bridge");
    assert_eq!(c.subnet.as_deref(), Some("10.7.0.0/24"));
    assert_eq!(c.options, ["parent=eth9", "mtu=1400"]);
    let ov = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"ov","driver":"overlay","subnet":"10.90.0.0/16","options":{"vni":4242,"vtep":"192.168.1.10","peers":["192.168.1.11","192.168.1.12"],"port":4789}}"#,
    )
    .unwrap();
    let c = ov.create_request();
    assert_eq!(c.driver, "overlay");
    assert_eq!(
        c.options,
        [
            "peers=192.168.1.11,192.168.1.12",
            "port=4789",
            "vni=4242",
            "vtep=192.168.1.10"
        ]
    );
    let plain = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"podnet"}"#).unwrap();
    assert_eq!(plain.network(), "podnet");
    assert!(!plain.creates());
}

fn attached(default_route: bool) -> RuntimeAttached {
    RuntimeAttached {
        container: "abc".into(),
        endpoint: EndpointInfo {
            network: "app".into(),
            ip: "10.7.0.2".parse().unwrap(),
            prefix: 24,
            mac: "02:42:0a:07:00:02".into(),
            ifname: "net1".into(),
            port_name: "vsw1".into(),
            port_id: 3,
            attach: AttachMode::Veth,
        },
        gateway: Some("10.7.0.1".parse().unwrap()),
        default_route,
        dns: Some("10.7.0.1".parse().unwrap()),
        mtu: 1500,
    }
}

#[test]
fn the_result_follows_the_requested_version() {
    let conf = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
    let r = result(&conf, "/run/netns/x", &attached(true));
    assert_eq!(
        r,
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "net1", "mac": "02:42:0a:07:00:02", "sandbox": "/run/netns/x", "mtu": 1500}],
            "ips": [{"address": "10.7.0.2/24", "gateway": "10.7.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}],
            "dns": {"nameservers": ["10.7.0.1"]},
        })
    );
    let conf = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n"}"#).unwrap();
    let r = result(&conf, "/run/netns/x", &attached(false));
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert!(r["interfaces"][0].get("mtu").is_none());
    assert!(r.get("routes").is_none(), "no default route was set: {r}");
    // What CHECK reads back from it.
    let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
    let r = result(&conf, "/run/netns/x", &attached(true));
    let e = expected(&r, "net1").unwrap();
    assert_eq!(e.address, Some("10.7.0.2/24".parse().unwrap()));
    assert_eq!(e.mac.as_deref(), Some("02:42:0a:07:00:02"));
    assert_eq!(e.default_gw, Some("10.7.0.1".parse().unwrap()));
    assert_eq!(expected(&json!({}), "net1").unwrap_err().code, 7);
}

#[test]
fn check_without_prev_result_and_gc_without_valid_attachments_are_config_errors() {
    let (v, _) = run(&env("CHECK"), r#"{"cniVersion":"1.1.0","name":"n"}"#);
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("prevResult"));
    let (v, _) = run(&env("GC"), r#"{"cniVersion":"1.1.0","name":"n"}"#);
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("valid-attachments"));
}

#[test]
fn the_fuzz_seeds_get_past_parsing_as_a_runtime_sends_them() {
    let seeds = crate::fuzzing::seed_inputs("cni_input");
    let codes: Vec<Option<u32>> = seeds.iter().map(|s| crate::fuzzing::cni_input(s)).collect();
    // ADD (bridge, overlay, macvlan), CHECK, DEL, GC, STATUS, VERSION twice; then an unknown
    // command and none.
    let mut want = vec![None; 9];
    want.extend([Some(code::INVALID_ENV), Some(code::INVALID_ENV)]);
    assert_eq!(codes, want);
    // A bad static address is refused while parsing, before the network would be created.
    let mut bad = seeds[0].clone();
    let at = bad
        .windows(14)
        .position(|w| w == b"10.88.0.130/24")
        .unwrap();
    bad[at..at + 14].copy_from_slice(b"10.88.0.999/24");
    assert_eq!(crate::fuzzing::cni_input(&bad), Some(code::INVALID_CONFIG));
}

proptest::proptest! {
    /// What a runtime hands the plugin (the configuration on stdin, `CNI_ARGS`, a
    /// `prevResult`) is untrusted: parsing it gives a CNI error, never a panic. VERSION and an
    /// unknown command go through `main_with` whole (the others would reach a daemon).
    #[test]
    fn runtime_input_never_panics(
        stdin in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        args in "[ -~]{0,64}",
        ifname in "[ -~]{0,16}",
        cmd in proptest::sample::select(vec!["VERSION", "FROB", ""]),
    ) {
        let _ = NetConf::parse(&stdin);
        let mut e = env(cmd);
        e.args = Some(args);
        let _ = e.cni_args();
        if let Ok(prev) = serde_json::from_slice::<Value>(&stdin) {
            let _ = expected(&prev, &ifname);
        }
        // The whole parse path of every command, as the fuzz target `cni_input` runs it.
        let _ = crate::fuzzing::cni_input(&stdin);
        let o = main_with(&e, Ok(stdin.clone()));
        // Whatever the input, the plugin answers with JSON (a result or a CNI error).
        if !o.stdout.is_empty() {
            proptest::prop_assert!(serde_json::from_str::<Value>(&o.stdout).is_ok());
        }
    }
}
