//! The daemon's container and endpoint code against a fake worker (`switch::testing::
//! FakeWorker`): what the daemon programs into the switch, that a step the switch refuses
//! leaves nothing behind (no namespace, link, lease or record), and that a restart programs
//! the same switch again from the state file. Namespaces and veth pairs are real (root); the
//! worker is not, so these tests need no traffic and see exactly what the daemon asked for.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use switch::control::api::{NetworkCreate, RunRequest};
use switch::control::daemon::{Config, Daemon, TunnelOffload};
use switch::testing::{require_root, FakeWorker};

/// A state directory removed on drop, named after the test and the process.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vswitch-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path) -> Config {
    Config {
        state_dir: dir.join("state"),
        pipeline: Default::default(),
        default_attach: None,
        rx_mode: switch::port::afpacket::RxMode::Mmsg,
        port_buffer: switch::port::afpacket::AfPacketConfig::default().sock_buf,
        tunnel_offload: TunnelOffload::Off,
        test_hooks: false,
        worker: Default::default(),
    }
}

/// Removes the named containers (and with them their namespaces and links) on drop, through
/// a daemon on the same state, so a failing assertion leaves nothing on the host.
struct Cleanup<'a> {
    dir: &'a Path,
    containers: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let fake = FakeWorker::default();
        if let Ok(mut d) = Daemon::start_with_worker(config(self.dir), fake.spawner()) {
            for c in &self.containers {
                let _ = d.rm(c, true);
            }
        }
    }
}

/// The tests compare the host's links before and after: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The container ports (veth host ends, `vsw*`) among `ports`, and how many host-access
/// ports (`vsh*`, one per network, named anew at each start) there are.
fn split_ports(ports: &[String]) -> (Vec<String>, usize) {
    let containers = ports
        .iter()
        .filter(|p| p.starts_with("vsw"))
        .cloned()
        .collect();
    (
        containers,
        ports.iter().filter(|p| p.starts_with("vsh")).count(),
    )
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

fn run(d: &mut Daemon, name: &str, network: &str) -> switch::control::error::Result<Vec<Ipv4Addr>> {
    let info = d.run(RunRequest {
        name: Some(name.to_string()),
        network: Some(network.to_string()),
        ..Default::default()
    })?;
    Ok(info.endpoints.iter().map(|e| e.ip).collect())
}

#[test]
fn a_port_the_switch_refuses_leaves_no_namespace_link_lease_or_record() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let dir = Dir::new("refuse");
    let fake = FakeWorker::default();
    let mut d = Daemon::start_with_worker(config(&dir.0), fake.spawner()).unwrap();
    let net = unique("fr");
    d.network_create(NetworkCreate {
        name: net.clone(),
        subnet: Some("10.233.1.0/24".into()),
        ..Default::default()
    })
    .unwrap();
    let c = unique("frc");
    let _cleanup = Cleanup {
        dir: &dir.0,
        containers: vec![c.clone()],
    };
    let ports_before = fake.port_names();
    let links_before: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();

    fake.with(|s| s.refuse_ports = true);
    let err = run(&mut d, &c, &net).expect_err("the switch refused the port");
    assert!(
        format!("{err:#}").contains("refused"),
        "the error says why: {err:#}"
    );
    // The daemon asked for the port, and then undid every step before it.
    assert!(fake.with(|s| s.log.contains(&"add_port")));
    assert!(!netns_exists(&c), "namespace {c} left behind");
    let links_after: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|l| !links_before.contains(l))
        .collect();
    assert_eq!(links_after, Vec::<String>::new(), "links left behind");
    assert_eq!(fake.port_names(), ports_before);
    assert!(d.ps().iter().all(|i| i.name != c), "record left behind");
    let saved = std::fs::read_to_string(dir.0.join("state/state.json")).unwrap();
    assert!(!saved.contains(&c), "the state file names {c}: {saved}");

    // The lease went back: the address the failed container had (the pool's first) can be
    // asked for by name. (A plain allocation would take the next one: the pool is next-fit.)
    fake.with(|s| s.refuse_ports = false);
    let info = d
        .run(RunRequest {
            name: Some(c.clone()),
            network: Some(net.clone()),
            ip: Some("10.233.1.2".into()),
            ..Default::default()
        })
        .unwrap();
    let ips: Vec<Ipv4Addr> = info.endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(ips, vec![Ipv4Addr::new(10, 233, 1, 2)]);
    let info = d.container_info(&c).unwrap();
    let port = &info.endpoints[0].port_name;
    assert!(link_exists(port), "the veth host end {port}");
    assert!(fake.port_names().contains(port), "{:?}", fake.port_names());
    assert!(
        fake.with(|s| s.endpoints.iter().any(|e| e.1 == ips[0])),
        "the gateway was told about {}",
        ips[0]
    );
    d.rm(&c, true).unwrap();
    assert!(!link_exists(port) && !netns_exists(&c));
    assert!(!fake.port_names().contains(port));
}

#[test]
fn a_restarted_daemon_programs_the_same_switch_from_its_state() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let dir = Dir::new("restart");
    let (a, b) = (unique("rsa"), unique("rsb"));
    let _cleanup = Cleanup {
        dir: &dir.0,
        containers: vec![a.clone(), b.clone()],
    };
    let net = unique("rs");
    let first = FakeWorker::default();
    let (ports, networks) = {
        let mut d = Daemon::start_with_worker(config(&dir.0), first.spawner()).unwrap();
        d.network_create(NetworkCreate {
            name: net.clone(),
            subnet: Some("10.233.2.0/24".into()),
            ..Default::default()
        })
        .unwrap();
        run(&mut d, &a, &net).unwrap();
        run(&mut d, &b, "bridge").unwrap();
        (first.port_names(), first.with(|s| s.networks.clone()))
    };
    // Both containers' ports, and the default and the new network (with their gateways).
    assert!(ports.len() >= 2, "{ports:?}");
    assert!(networks.len() >= 2, "{networks:?}");
    assert!(networks
        .iter()
        .any(|n| n.1 == Some(Ipv4Addr::new(10, 233, 2, 1))));

    let second = FakeWorker::default();
    let mut d = Daemon::start_with_worker(config(&dir.0), second.spawner()).unwrap();
    assert_eq!(
        split_ports(&second.port_names()),
        split_ports(&ports),
        "the same container ports, by interface, and a host port per network"
    );
    let mut again = second.with(|s| s.networks.clone());
    let mut before = networks.clone();
    again.sort_by_key(|n| n.1);
    before.sort_by_key(|n| n.1);
    assert_eq!(again, before, "the same networks and gateways");
    // The containers kept their addresses.
    let ip_a = d.container_info(&a).unwrap().endpoints[0].ip;
    assert_eq!(ip_a, Ipv4Addr::new(10, 233, 2, 2));
    assert!(second.with(|s| s.endpoints.iter().any(|e| e.1 == ip_a)));
    d.rm(&a, true).unwrap();
    d.rm(&b, true).unwrap();
    assert!(!netns_exists(&a) && !netns_exists(&b));
    d.network_rm(&net).unwrap();
    // A request that waits for the worker's answer: the fake has taken every command before.
    d.port_list().unwrap();
    assert!(second.with(|s| s
        .networks
        .iter()
        .all(|n| n.1 != Some(Ipv4Addr::new(10, 233, 2, 1)))));
}
