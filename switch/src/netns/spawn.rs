//! Starting processes inside a network namespace (`vswitch run` / `vswitch exec`), the way
//! `ip netns exec` does.
//!
//! The child enters the namespace between `fork` and `exec` (`CommandExt::pre_exec`), so the
//! daemon's own threads never change namespace. For a *named* namespace the child also does
//! what `ip netns exec NAME` does: it gets a private mount namespace (slave of the host's), a
//! fresh `/sys` that shows the namespace's interfaces, and every file of `/etc/netns/NAME/`
//! (typically `resolv.conf`, `hosts`) bind-mounted over the same name in `/etc`.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::error::{NetnsError, Result};
use super::ns::{open_netns_path, resolve_netns};

/// Where `ip netns exec` looks for per-namespace configuration files.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// The standard streams of a spawned process (all inherited by default).
#[derive(Debug, Default)]
pub struct Stdios {
    /// Standard input.
    pub stdin: Option<Stdio>,
    /// Standard output.
    pub stdout: Option<Stdio>,
    /// Standard error.
    pub stderr: Option<Stdio>,
}

impl Stdios {
    /// Sets the streams that are given on `cmd`, leaving the others inherited.
    pub fn apply(self, cmd: &mut Command) {
        if let Some(s) = self.stdin {
            cmd.stdin(s);
        }
        if let Some(s) = self.stdout {
            cmd.stdout(s);
        }
        if let Some(s) = self.stderr {
            cmd.stderr(s);
        }
    }
}

/// Mounts a named namespace's child sets up, prepared before `fork` so the child allocates
/// nothing.
struct MountPlan {
    /// Source name of the sysfs mount (iproute2 uses the namespace name).
    sysfs_source: CString,
    /// (`/etc/netns/NAME/FILE`, `/etc/FILE`) pairs to bind.
    binds: Vec<(CString, CString)>,
}

fn plan_mounts(name: &str) -> Result<MountPlan> {
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| NetnsError::InvalidArgument(format!("{name:?} contains NUL")))
    };
    let mut binds = Vec::new();
    let dir = format!("{NETNS_ETC_DIR}/{name}");
    if let Ok(rd) = fs::read_dir(&dir) {
        for entry in rd.flatten() {
            let file = entry.file_name();
            let mut src = dir.as_bytes().to_vec();
            src.push(b'/');
            src.extend_from_slice(file.as_bytes());
            let mut dst = b"/etc/".to_vec();
            dst.extend_from_slice(file.as_bytes());
            binds.push((cstr(&src)?, cstr(&dst)?));
        }
    }
    Ok(MountPlan {
        sysfs_source: cstr(name.as_bytes())?,
        binds,
    })
}

/// The `pre_exec` body. Runs in the forked child of a possibly multi-threaded parent, so it
/// may only make async-signal-safe calls: it only issues raw system calls (setns, unshare,
/// mount, umount2) on pointers prepared before the fork, and builds its error with
/// `io::Error::last_os_error()`, which reads errno and allocates nothing.
fn enter(fd: &OwnedFd, plan: Option<&MountPlan>) -> io::Result<()> {
    // SAFETY: `fd` is an open namespace file descriptor (kept open by the closure that owns
    // it); setns(2) affects only this single-threaded child.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let Some(plan) = plan else {
        return Ok(());
    };
    // SAFETY: unshare(2) takes only flags; the child is single-threaded, so CLONE_NEWNS is
    // allowed and affects only it.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let root = c"/";
    let sys = c"/sys";
    let sysfs = c"sysfs";
    let none = c"none";
    // SAFETY: every pointer is a NUL-terminated string that lives for the whole call (string
    // literals or CStrings owned by `plan`), or NULL where mount(2) accepts NULL.
    unsafe {
        // Keep our mounts from propagating back to the host.
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // A /sys that describes this network namespace (best effort, as in iproute2).
        let ro = if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) != 0 {
            libc::MS_RDONLY
        } else {
            0
        };
        if libc::mount(
            plan.sysfs_source.as_ptr(),
            sys.as_ptr(),
            sysfs.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            libc::mount(
                plan.sysfs_source.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                ro,
                std::ptr::null(),
            );
        }
        for (src, dst) in &plan.binds {
            // Failures are ignored like iproute2 does (it only warns): e.g. /etc/FILE missing.
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND,
                std::ptr::null(),
            );
        }
    }
    Ok(())
}

/// A `Command` for `argv` that will run inside the namespace `ns_name_or_path` (a name under
/// `/run/netns`, or a path such as `/proc/PID/ns/net`). The caller sets environment, stdio and
/// spawns it.
pub fn netns_command<S: AsRef<OsStr>>(ns_name_or_path: &str, argv: &[S]) -> Result<Command> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(NetnsError::InvalidArgument(
            "no command given to run in the namespace".into(),
        ));
    };
    let path = resolve_netns(ns_name_or_path)?;
    let fd = open_netns_path(&path)?;
    let plan = if ns_name_or_path.contains('/') {
        None
    } else {
        Some(plan_mounts(ns_name_or_path)?)
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // SAFETY: the closure only calls `enter`, which is async-signal-safe (see its comment):
    // raw system calls on data prepared before the fork, no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || enter(&fd, plan.as_ref()));
    }
    Ok(cmd)
}

/// Starts `argv` inside the namespace `ns_name_or_path` with the given standard streams.
pub fn spawn_in_netns<S: AsRef<OsStr>>(
    ns_name_or_path: &str,
    argv: &[S],
    stdio: Stdios,
) -> Result<Child> {
    let mut cmd = netns_command(ns_name_or_path, argv)?;
    stdio.apply(&mut cmd);
    let prog = argv[0].as_ref().to_string_lossy().into_owned();
    cmd.spawn().map_err(|e| {
        NetnsError::io(
            format!("starting {prog} in network namespace {ns_name_or_path}"),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::ns::netns_of_pid;
    use super::super::ns::test_util::*;
    use super::*;

    fn output(ns: &str, argv: &[&str]) -> String {
        let child = spawn_in_netns(
            ns,
            argv,
            Stdios {
                stdout: Some(Stdio::piped()),
                ..Default::default()
            },
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{argv:?}: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    struct EtcDir(String);
    impl Drop for EtcDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
            // Only succeeds if empty: never removes other namespaces' files.
            let _ = fs::remove_dir(NETNS_ETC_DIR);
        }
    }

    #[test]
    fn spawned_process_lives_in_the_namespace_with_its_sys_and_resolv_conf() {
        if skip_unless_root() {
            return;
        }
        let ns = TestNs::new("vswt-sp");
        let etc = EtcDir(format!("{NETNS_ETC_DIR}/{}", ns.name));
        fs::create_dir_all(&etc.0).unwrap();
        fs::write(format!("{}/resolv.conf", etc.0), "nameserver 192.0.2.53\n").unwrap();
        let host_resolv = fs::read("/etc/resolv.conf").ok();

        // The namespace has only lo: the netlink view and /sys agree.
        let links = output(&ns.name, &["ip", "-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"), "{links}");
        let sys = output(&ns.name, &["ls", "/sys/class/net"]);
        assert_eq!(sys.trim(), "lo");
        // The inode of the child's namespace is the named one.
        let inode = output(&ns.name, &["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            inode.trim(),
            fs::metadata(ns.path()).unwrap().ino().to_string()
        );
        if host_resolv.is_some() {
            let resolv = output(&ns.name, &["cat", "/etc/resolv.conf"]);
            assert_eq!(resolv, "nameserver 192.0.2.53\n");
            // The bind is private to the child.
            assert_eq!(fs::read("/etc/resolv.conf").ok(), host_resolv);
        }
        // By path (as for `vswitch attach`): the netns of a process started in it.
        let mut sleeper = spawn_in_netns(&ns.name, &["sleep", "30"], Stdios::default()).unwrap();
        let p = netns_of_pid(sleeper.id());
        let links = output(p.to_str().unwrap(), &["ip", "-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    #[test]
    fn spawn_errors_name_the_problem() {
        let e = spawn_in_netns::<&str>("c1", &[], Stdios::default()).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        let e = spawn_in_netns("vswt-no-such-ns", &["true"], Stdios::default()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        if skip_unless_root() {
            return;
        }
        let ns = TestNs::new("vswt-sq");
        let e = spawn_in_netns(&ns.name, &["/nonexistent/prog"], Stdios::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("starting /nonexistent/prog in network namespace"),
            "{e}"
        );
    }
}
