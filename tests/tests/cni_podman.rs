//! A real container runtime on vswitch through `vswitch-cni`: Debian's podman 4.3 with its CNI
//! backend, its own configuration and storage under the test's directory (nothing under /etc
//! changes), a busybox image imported from `busybox-static`, runc as the OCI runtime.

use e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// podman with the test's own containers.conf and storage.conf.
struct Podman {
    dir: PathBuf,
    image: String,
}

impl Podman {
    /// Writes the configuration (CNI backend, runc, cgroupfs, file events, no ulimits) with
    /// `plugins` as the CNI plugin directory and `net_d` as the network configuration one, and
    /// imports the busybox image.
    fn new(dir: &Path, plugins: &Path, net_d: &Path) -> Podman {
        std::fs::create_dir_all(dir).unwrap();
        let conf = format!(
            r#"[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
# vswitch's gateway listens on published ports itself; podman's own reservation of them
# (a socket it binds after the network is set up) would fail on the port vswitch holds.
enable_port_reservation = false
tmp_dir = "{d}/tmp"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{p}"]
network_config_dir = "{n}"
"#,
            d = dir.display(),
            p = plugins.display(),
            n = net_d.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/root\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("storage.conf"), storage).unwrap();
        let p = Podman {
            dir: dir.to_path_buf(),
            image: format!("localhost/vswitch-busybox:{}", unique("i")),
        };
        // A busybox-static root file system: the binary and one link per applet.
        let root = dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = sh_ok("/bin/busybox", &["--list"]);
        for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        for d in ["etc", "proc", "sys", "dev", "tmp", "root", "www"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("www/index.html"), "vswitch\n").unwrap();
        let tar = dir.join("rootfs.tar");
        sh_ok(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        p.ok(&["import", tar.to_str().unwrap(), &p.image]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `podman run -d --name NAME --network NET ARGS... IMAGE CMD...`; returns the pid of its
    /// process (whose network namespace is the container's).
    fn run(&self, name: &str, net: &str, args: &[&str], cmd: &[&str]) -> u32 {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        a.extend_from_slice(args);
        a.push(&self.image);
        a.extend_from_slice(cmd);
        self.ok(&a);
        self.ok(&["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("a pid")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.cmd(&["rmi", "-a", "-f"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process this test started, killed (by its pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The IPv4 address of `eth0` in the network namespace of `pid`.
fn addr_of(pid: u32) -> String {
    let out = sh_ok(
        "nsenter",
        &[
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ],
    );
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address on eth0: {out}"))
        .to_string()
}

fn cni_containers(d: &Daemon) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["runtime"]["frontend"] == "cni")
        .cloned()
        .collect()
}

#[test]
fn podman_containers_on_vswitch_ping_iperf3_publish_and_clean_up() {
    if !need_root("cni_podman")
        || !require_tools(&["podman", "runc", "iperf3", "nsenter", "curl", "tar"])
        || !require(
            Path::new("/bin/busybox").exists(),
            format_args!("/bin/busybox is missing (apt-get install busybox-static)"),
        )
    {
        return;
    }
    let d = Daemon::start("podman");
    let net = unique("pn");
    d.ok(&["network", "create", &net]);
    // The plugin directory holds vswitch-cni only: no reference plugin is involved.
    let plugins = d.dir.join("cni-bin");
    let net_d = d.dir.join("net.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&net_d).unwrap();
    let bin = vswitch_bin().with_file_name("vswitch-cni");
    std::fs::copy(&bin, plugins.join("vswitch-cni"))
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{
            "type": "vswitch-cni",
            "socket": d.socket,
            "capabilities": {"portMappings": true, "ips": true, "mac": true},
        }],
    });
    std::fs::write(net_d.join(format!("{net}.conflist")), conflist.to_string()).unwrap();
    let pm = Podman::new(&d.dir.join("podman"), &plugins, &net_d);
    assert!(
        pm.ok(&["network", "ls"]).contains(&net),
        "podman sees the network"
    );

    let (a, b) = (unique("pa"), unique("pb"));
    let pid_a = pm.run(&a, &net, &[], &["sleep", "300"]);
    let pid_b = pm.run(&b, &net, &[], &["sleep", "300"]);
    let (ip_a, ip_b) = (addr_of(pid_a), addr_of(pid_b));
    // vswitch shows both with podman's container ids.
    let cs = cni_containers(&d);
    let id_a = pm.ok(&["inspect", "-f", "{{.Id}}", &a]);
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert!(
        cs.iter().any(
            |c| c["runtime"]["id"] == id_a.as_str() && c["endpoints"][0]["ip"] == ip_a.as_str()
        ),
        "{cs:?}"
    );
    // Ping both ways, inside the containers.
    let o = pm.cmd(&["exec", &a, "ping", "-c", "2", "-W", "2", &ip_b]);
    assert!(o.status.success(), "a -> b: {o:?}\n{}", d.log());
    let o = pm.cmd(&["exec", &b, "ping", "-c", "2", "-W", "2", &ip_a]);
    assert!(o.status.success(), "b -> a: {o:?}");

    // iperf3 (the host's, in the containers' namespaces) through their vswitch interfaces.
    let ns_b = format!("/proc/{pid_b}/ns/net");
    let _srv = Proc(
        Command::new("nsenter")
            .args([
                "-t",
                &pid_b.to_string(),
                "-n",
                "iperf3",
                "-s",
                "-1",
                "-p",
                "5201",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("iperf3 in b", Duration::from_secs(10), || {
        tcp_listening(&ns_b, 5201)
    });
    let o = sh(
        "nsenter",
        &[
            "-t",
            &pid_a.to_string(),
            "-n",
            "iperf3",
            "-c",
            &ip_b,
            "-p",
            "5201",
            "-t",
            "2",
            "-J",
        ],
    );
    assert!(o.status.success(), "iperf3 a -> b: {o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 1e7, "iperf3 moved only {bps} bit/s");

    // A `vswitch run` container on the same network talks to them.
    let r = unique("pr");
    d.run(&r, &["-d", "--network", &net, "--", "sleep", "300"]);
    assert!(d.ping(&r, &ip_a), "vswitch run -> podman\n{}", d.log());
    let ip_r = d.ip_of(&r);
    let o = pm.cmd(&["exec", &b, "ping", "-c", "2", "-W", "2", &ip_r]);
    assert!(o.status.success(), "podman -> vswitch run: {o:?}");

    // `podman run -p`: the published port answers from the host.
    let host_port = 30000 + (std::process::id() % 20000) as u16;
    let w = unique("pw");
    let pid_w = pm.run(
        &w,
        &net,
        &["-p", &format!("{host_port}:8000")],
        &["httpd", "-f", "-p", "8000", "-h", "/www"],
    );
    wait_until("httpd in w", Duration::from_secs(10), || {
        tcp_listening(&format!("/proc/{pid_w}/ns/net"), 8000)
    });
    let url = format!("http://127.0.0.1:{host_port}/index.html");
    let o = sh("curl", &["-s", "-m", "5", &url]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "vswitch\n",
        "published port: {o:?}\n{}",
        d.log()
    );

    // `podman rm` takes everything away: the endpoints, the published port.
    pm.ok(&["rm", "-f", "-t", "0", &a, &b, &w]);
    assert!(cni_containers(&d).is_empty(), "{}", d.ok(&["ps"]));
    let o = sh("curl", &["-s", "-m", "2", &url]);
    assert!(
        !o.status.success(),
        "port {host_port} still answers after podman rm"
    );
}
