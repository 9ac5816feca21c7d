//! Named network namespaces, laid out exactly as iproute2 lays them out, and running code in a
//! namespace.
//!
//! `ip netns add NAME` creates an empty file `/run/netns/NAME`, unshares a new network namespace
//! and bind-mounts `/proc/self/ns/net` onto that file, so the namespace lives as long as the
//! mount does. It first makes `/run/netns` a shared mount point (bind-mounting the directory onto
//! itself if it is not a mount point yet) so that namespaces created later are visible in mount
//! namespaces that were copied earlier (`ip netns exec`, containers). We do the same, so `ip
//! netns exec NAME`, `ip -n NAME` and Docker-like tools see our namespaces and we see theirs.
//!
//! `unshare(2)` and `setns(2)` with `CLONE_NEWNET` change the namespace of the calling *thread*
//! only. Every namespace switch therefore happens on a dedicated short-lived thread, never on a
//! caller's thread (which may be a worker or the main thread of the daemon).

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::{NetnsError, Result};

/// Where iproute2 keeps its named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Checks a namespace name the way iproute2 does (it must be a single path component).
pub fn validate_netns_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name == ".."
    {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The bind-mount file of the named namespace: `/run/netns/NAME`.
pub fn netns_path(name: &str) -> Result<PathBuf> {
    validate_netns_name(name)?;
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// `/proc/PID/ns/net`: the namespace of a running process (for `vswitch attach`).
pub fn netns_of_pid(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Resolves what a user typed: a value containing `/` is a path (e.g. `/proc/123/ns/net`),
/// anything else is the name of a namespace under `/run/netns`.
pub fn resolve_netns(name_or_path: &str) -> Result<PathBuf> {
    if name_or_path.contains('/') {
        Ok(PathBuf::from(name_or_path))
    } else {
        netns_path(name_or_path)
    }
}

/// Whether `/run/netns/NAME` exists.
pub fn netns_exists(name: &str) -> bool {
    match netns_path(name) {
        Ok(p) => p.exists(),
        Err(_) => false,
    }
}

/// The names under `/run/netns`, sorted; empty if the directory does not exist.
pub fn list_netns() -> Result<Vec<String>> {
    let rd = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetnsError::io(format!("reading {NETNS_RUN_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| NetnsError::io(format!("reading {NETNS_RUN_DIR}"), e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Opens a network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`) and checks that it
/// really is one, so that `vswitch attach /some/file` fails with a clear message.
pub fn open_netns_path(path: &Path) -> Result<OwnedFd> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound && path.starts_with(NETNS_RUN_DIR) {
                NetnsError::NoSuchNetns {
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: path.to_path_buf(),
                }
            } else {
                NetnsError::io(format!("opening network namespace {}", path.display()), e)
            }
        })?;
    let fd = OwnedFd::from(f);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the file descriptor, which is
    // valid for the duration of the call (owned by `fd`).
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t != libc::CLONE_NEWNET {
        return Err(NetnsError::NotANetns(path.to_path_buf()));
    }
    Ok(fd)
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| NetnsError::InvalidArgument(format!("path {} contains NUL", p.display())))
}

fn last_os_error(op: impl Into<String>) -> NetnsError {
    NetnsError::io(op, io::Error::last_os_error())
}

/// mount(2) with C strings; `src`/`fstype` may be empty for "none".
fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) -> io::Result<()> {
    let src_c = CString::new(src)?;
    let fstype_c = CString::new(fstype)?;
    let target_c = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; the data
    // argument is NULL, which mount(2) accepts.
    let r = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `/run/netns` exist and be a shared mount point, as iproute2's `netns_add` does:
/// try `MS_SHARED|MS_REC`; if it is not a mount point yet (`EINVAL`), bind-mount it onto itself
/// and try again.
fn prepare_run_dir() -> Result<()> {
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(|e| NetnsError::io(format!("creating {NETNS_RUN_DIR}"), e))?;
    let mut made_mount = false;
    loop {
        match mount("", dir, "none", libc::MS_SHARED | libc::MS_REC) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !made_mount => {
                mount(NETNS_RUN_DIR, dir, "none", libc::MS_BIND | libc::MS_REC).map_err(|e| {
                    NetnsError::io(format!("bind-mounting {NETNS_RUN_DIR} onto itself"), e)
                })?;
                made_mount = true;
            }
            Err(e) => {
                return Err(NetnsError::io(
                    format!("making {NETNS_RUN_DIR} a shared mount point"),
                    e,
                ))
            }
        }
    }
}

/// Creates the named network namespace `/run/netns/NAME` (like `ip netns add NAME`).
///
/// Fails with `EEXIST` if it already exists. The new namespace contains only a `lo` that is
/// down.
pub fn create_netns(name: &str) -> Result<()> {
    let path = netns_path(name)?;
    prepare_run_dir()?;
    // The mount target: an empty file, created exclusively so two creators cannot race.
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| {
            NetnsError::io(
                format!("creating network namespace {name} ({})", path.display()),
                e,
            )
        })?;
    let target = path.clone();
    let r = std::thread::Builder::new()
        .name(format!("netns-add-{name}"))
        .spawn(move || -> Result<()> {
            // SAFETY: unshare(2) takes only flags; it changes the namespace of this thread,
            // which is dedicated to this job and exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(last_os_error("unshare(CLONE_NEWNET)"));
            }
            // /proc/self is the thread group leader; /proc/thread-self is this thread, the only
            // one in the new namespace.
            mount("/proc/thread-self/ns/net", &target, "none", libc::MS_BIND).map_err(|e| {
                NetnsError::io(
                    format!("bind-mounting the new namespace onto {}", target.display()),
                    e,
                )
            })
        })
        .map_err(|e| NetnsError::io("spawning a thread to create a namespace", e))?
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    if r.is_err() {
        let _ = fs::remove_file(&path);
    }
    r
}

/// Deletes the named namespace (like `ip netns delete NAME`): lazily unmounts the bind mount and
/// removes the file. Processes still inside keep the namespace alive until they exit.
pub fn delete_netns(name: &str) -> Result<()> {
    let path = netns_path(name)?;
    if !path.exists() {
        return Err(NetnsError::NoSuchNetns {
            name: name.to_string(),
            path,
        });
    }
    let c = cstring(&path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a half-created namespace); remove the file anyway.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(NetnsError::io(format!("unmounting {}", path.display()), e));
        }
    }
    fs::remove_file(&path).map_err(|e| NetnsError::io(format!("removing {}", path.display()), e))
}

/// Runs `f` on a dedicated thread that has entered the network namespace at `ns` and returns
/// its result. The caller's thread never changes namespace. Sockets created by `f` stay bound
/// to that namespace after the thread exits. A panic in `f` is propagated.
pub fn run_in_netns<F, T>(ns: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let fd = open_netns_path(ns)?;
    let ns_display = ns.display().to_string();
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("netns-exec".into())
            .spawn_scoped(s, move || -> Result<T> {
                // SAFETY: `fd` is an open namespace file owned by this closure; setns(2) moves
                // only this thread, which is dedicated to running `f` and exits afterwards.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(last_os_error(format!(
                        "entering network namespace {ns_display}"
                    )));
                }
                drop(fd);
                Ok(f())
            })
            .map_err(|e| NetnsError::io("spawning a thread to enter a namespace", e))?;
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Whether this process runs as root (tests skip namespace work otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A short name unique to this process and call, usable for netns and interface names
    /// (`prefix` + up to 10 more characters).
    pub fn unique(prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{}{n}", std::process::id() % 100_000)
    }

    /// A namespace created for one test and deleted on drop, even when the test fails.
    pub struct TestNs {
        pub name: String,
    }

    impl TestNs {
        pub fn new(prefix: &str) -> TestNs {
            let name = unique(prefix);
            create_netns(&name).expect("creating a test namespace");
            TestNs { name }
        }
        pub fn path(&self) -> PathBuf {
            netns_path(&self.name).unwrap()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = delete_netns(&self.name);
        }
    }

    /// Returns true when the test must return early because we are not root: decided by
    /// [`crate::testing`] (a skip is recorded; under `CI=true` this fails the test instead).
    pub fn skip_unless_root() -> bool {
        !crate::testing::require_root()
    }

    /// Runs `ip ARGS` and returns its stdout (tests only: product code never runs `ip`).
    pub fn ip(args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_netns_name("c1").is_ok());
        for bad in ["", ".", "..", "a/b", &"x".repeat(256)] {
            let e = validate_netns_name(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid network namespace name"),
                "{e}"
            );
        }
        assert_eq!(resolve_netns("c1").unwrap(), Path::new("/run/netns/c1"));
        assert_eq!(
            resolve_netns("/proc/1/ns/net").unwrap(),
            Path::new("/proc/1/ns/net")
        );
        assert_eq!(netns_of_pid(42), Path::new("/proc/42/ns/net"));
    }

    #[test]
    fn create_list_delete_and_ip_netns_sees_it() {
        if skip_unless_root() {
            return;
        }
        let ns = TestNs::new("vswt-ns");
        assert!(netns_exists(&ns.name));
        assert!(list_netns().unwrap().contains(&ns.name));
        // iproute2 sees it and can run in it: only lo exists there.
        assert!(ip(&["netns", "list"]).contains(&ns.name));
        let links = ip(&["-n", &ns.name, "-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"), "{links}");
        // It is a different namespace from ours.
        let ours = fs::metadata("/proc/thread-self/ns/net").unwrap();
        let theirs = fs::metadata(ns.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), theirs.ino());
        // Duplicate names are refused with the errno.
        let e = create_netns(&ns.name).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        assert!(e.to_string().contains("File exists"), "{e}");

        let name = ns.name.clone();
        drop(ns);
        assert!(!netns_exists(&name));
        assert!(!list_netns().unwrap().contains(&name));
        let e = delete_netns(&name).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn run_in_netns_switches_only_the_helper_thread() {
        if skip_unless_root() {
            return;
        }
        let ns = TestNs::new("vswt-run");
        let before = fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside = run_in_netns(&ns.path(), || {
            fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .unwrap();
        let after = fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(before, after);
        assert_ne!(before, inside);
        let theirs = run_in_netns(&ns.path(), || {
            fs::metadata("/proc/thread-self/ns/net").map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        })
        .unwrap()
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(theirs, fs::metadata(ns.path()).unwrap().ino());
    }

    #[test]
    fn opening_non_namespaces_fails_clearly() {
        let e = open_netns_path(Path::new("/run/netns/vswt-does-not-exist")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = open_netns_path(Path::new("/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
        let e = run_in_netns(Path::new("/proc/self/status"), || ()).unwrap_err();
        assert!(matches!(e, NetnsError::NotANetns(_)), "{e}");
    }
}
