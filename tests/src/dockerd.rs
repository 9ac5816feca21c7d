//! A real dockerd owned by one test: its own data root, exec root (with the containerd it
//! starts), pid file, API socket and an empty config file under a fresh temporary directory,
//! and `--iptables=false --ip6tables=false --bridge=none`, so that it changes nothing on the
//! host. Its image is a busybox-static root filesystem imported with `docker import`. Dropping
//! it removes its containers and networks, then stops it by PID.
//!
//! The client is `/usr/bin/docker` (Debian's docker.io, the same version as the daemon): another
//! `docker` earlier on PATH may speak a newer API than dockerd 20.10 accepts.

use crate::{require, require_tools, sh, unique};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// dockerd as Debian's docker.io installs it.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The docker client of the same package.
pub const DOCKER: &str = "/usr/bin/docker";
/// busybox-static's binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The image every test's dockerd imports.
pub const IMAGE: &str = "vswitch-busybox:1";

/// True when dockerd, its client, busybox-static and the tools the tests use are here (else the
/// test is skipped, or fails under CI=true).
pub fn available() -> bool {
    require(
        Path::new(DOCKERD).exists() && Path::new(DOCKER).exists(),
        format_args!("{DOCKERD} and {DOCKER} (Debian's docker.io) are needed"),
    ) && require(
        Path::new(BUSYBOX).exists(),
        format_args!("{BUSYBOX} (busybox-static) is needed for the test image"),
    ) && require_tools(&["containerd", "runc", "nsenter", "iperf3", "curl"])
}

/// A dockerd of one test.
pub struct Dockerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd and waits (30 s at most) until it answers; imports the test image.
    pub fn start(tag: &str) -> Dockerd {
        let dir = std::env::temp_dir().join(format!("vswitch-dockerd-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut d = Dockerd {
            sock: dir.join("docker.sock"),
            dir,
            child: None,
        };
        d.spawn();
        d.import_image();
        d
    }

    /// Stops dockerd and starts it again on the same directories.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        loop {
            if self.sock.exists() && self.docker(&["version"]).status.success() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited with {st}: {}", self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "dockerd did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Imports a root filesystem of busybox-static (every applet a symlink) as [`IMAGE`].
    fn import_image(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        let list = sh(BUSYBOX, &["--list"]);
        for name in String::from_utf8_lossy(&list.stdout).lines() {
            if name != "busybox" && !name.is_empty() {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(name));
            }
        }
        for d in ["etc", "tmp", "proc", "sys", "dev", "www"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("www/index.html"), "hello from vswitch\n").unwrap();
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let o = Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("docker import");
        let st = tar.wait().expect("tar");
        assert!(st.success(), "tar of the image's root: {st}");
        assert!(
            o.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs `docker ARGS` against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, panicking with its output on failure; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `docker ARGS` expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            !o.status.success(),
            "docker {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// PID of a running container's first process.
    pub fn pid_of(&self, container: &str) -> u32 {
        self.ok(&["inspect", "-f", "{{.State.Pid}}", container])
            .parse()
            .expect("a pid")
    }

    /// The address of `container` on the Docker network `network`.
    pub fn ip_on(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }

    /// True when `ping` from `container` to `target` gets a reply.
    pub fn ping(&self, container: &str, target: &str) -> bool {
        self.docker(&[
            "exec", container, "ping", "-c", "2", "-i", "0.2", "-W", "2", target,
        ])
        .status
        .success()
    }

    /// Stops dockerd (SIGTERM, SIGKILL after 20 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id().to_string();
        let _ = sh("kill", &["-TERM", &pid]);
        let t0 = Instant::now();
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The containerd it started, if it outlived it.
        if let Ok(p) = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid")) {
            if let Ok(pid) = p.trim().parse::<u32>() {
                let comm =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if comm.contains(&self.dir.display().to_string()) {
                    let _ = sh("kill", &["-TERM", &pid.to_string()]);
                }
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let _ = self.docker(&["network", "prune", "-f"]);
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
