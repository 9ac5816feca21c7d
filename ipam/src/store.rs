//! [`Ipam`]: the named pools of all networks, their overlap rules, and persistence.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::subnet::{next_default_subnet, overlaps};
use crate::{IpamError, Pool, PoolSpec};

/// Version written into state files; a file with another version is refused as corrupt.
const STATE_VERSION: u32 = 1;

/// All address pools, one per network, keyed by network name. Pools never overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IpamRecord", into = "IpamRecord")]
pub struct Ipam {
    pools: BTreeMap<String, Pool>,
}

impl Ipam {
    /// An empty IPAM with no pools.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `spec` and adds it as the pool of network `name`.
    ///
    /// Fails if `name` already has a pool or the subnet overlaps any other pool (the error
    /// names that network).
    pub fn add_pool(&mut self, name: &str, spec: PoolSpec) -> Result<&Pool, IpamError> {
        if self.pools.contains_key(name) {
            return Err(IpamError::PoolExists {
                name: name.to_owned(),
            });
        }
        let pool = Pool::new(spec)?;
        self.check_overlap(name, pool.subnet())?;
        Ok(self.pools.entry(name.to_owned()).or_insert(pool))
    }

    /// Adds a pool for `name` on the first free Docker default subnet (see
    /// [`next_default_subnet`]), gateway `.1`, and returns it.
    pub fn add_default_pool(
        &mut self,
        name: &str,
        host_routes: &[Ipv4Net],
    ) -> Result<&Pool, IpamError> {
        let subnet = self
            .next_default_subnet(host_routes)
            .ok_or(IpamError::NoDefaultSubnet)?;
        self.add_pool(name, PoolSpec::new(subnet))
    }

    fn check_overlap(&self, name: &str, subnet: Ipv4Net) -> Result<(), IpamError> {
        match self
            .pools
            .iter()
            .find(|(other, p)| other.as_str() != name && overlaps(&subnet, &p.subnet()))
        {
            Some((other, p)) => Err(IpamError::Overlap {
                name: name.to_owned(),
                subnet,
                other: other.clone(),
                other_subnet: p.subnet(),
            }),
            None => Ok(()),
        }
    }

    /// Removes the pool of network `name`; refused while it still has leases.
    pub fn remove_pool(&mut self, name: &str) -> Result<Pool, IpamError> {
        let pool = self.pool(name)?;
        if let Some((ip, owner)) = pool.leases().next() {
            return Err(IpamError::PoolInUse {
                name: name.to_owned(),
                count: pool.lease_count(),
                example: format!("{ip} to {owner:?}"),
            });
        }
        self.pools
            .remove(name)
            .ok_or_else(|| IpamError::NoSuchPool {
                name: name.to_owned(),
            })
    }

    /// The pool of network `name`.
    pub fn pool(&self, name: &str) -> Result<&Pool, IpamError> {
        self.pools.get(name).ok_or_else(|| IpamError::NoSuchPool {
            name: name.to_owned(),
        })
    }

    /// The pool of network `name`, mutable (to allocate and release).
    pub fn pool_mut(&mut self, name: &str) -> Result<&mut Pool, IpamError> {
        self.pools
            .get_mut(name)
            .ok_or_else(|| IpamError::NoSuchPool {
                name: name.to_owned(),
            })
    }

    /// All pools by network name, in name order.
    pub fn pools(&self) -> impl Iterator<Item = (&str, &Pool)> + '_ {
        self.pools.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// [`Pool::allocate`] in network `name`.
    pub fn allocate(&mut self, name: &str, owner: &str) -> Result<Ipv4Addr, IpamError> {
        self.pool_mut(name)?.allocate(owner)
    }

    /// [`Pool::allocate_static`] in network `name`.
    pub fn allocate_static(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        owner: &str,
    ) -> Result<(), IpamError> {
        self.pool_mut(name)?.allocate_static(ip, owner)
    }

    /// [`Pool::release`] in network `name`; returns the former owner.
    pub fn release(&mut self, name: &str, ip: Ipv4Addr) -> Result<String, IpamError> {
        self.pool_mut(name)?.release(ip)
    }

    /// The address `owner` holds in network `name`, if any.
    pub fn lease_of(&self, name: &str, owner: &str) -> Option<Ipv4Addr> {
        self.pools.get(name)?.lease_of(owner)
    }

    /// The first Docker default subnet that overlaps no pool here and no host route.
    pub fn next_default_subnet(&self, host_routes: &[Ipv4Net]) -> Option<Ipv4Net> {
        let taken: Vec<Ipv4Net> = self.pools.values().map(Pool::subnet).collect();
        next_default_subnet(&taken, host_routes)
    }

    /// Reads the state saved by [`Ipam::save`]. A missing file is an empty IPAM; a file that
    /// does not parse, or whose pools break the rules (overlaps, double leases), is an error
    /// naming the file — never silently treated as empty.
    pub fn load(path: &Path) -> Result<Ipam, IpamError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ipam::new()),
            Err(source) => {
                return Err(IpamError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ipam::from_json(&bytes).map_err(|source| IpamError::Corrupt {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses the bytes of a file written by [`Ipam::save`] with the same checks as
    /// [`Ipam::load`]. Never panics, whatever the bytes (a property test feeds it arbitrary and
    /// damaged files).
    pub fn from_json(bytes: &[u8]) -> Result<Ipam, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Writes the whole state to `path` atomically (see [`write_atomic`]): after a crash the
    /// file holds either the previous state or this one, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), IpamError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| IpamError::Io {
            op: "write",
            path: path.to_owned(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes).map_err(|source| IpamError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
    }
}

/// On-disk form of [`Ipam`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpamRecord {
    version: u32,
    pools: BTreeMap<String, Pool>,
}

impl From<Ipam> for IpamRecord {
    fn from(ipam: Ipam) -> Self {
        Self {
            version: STATE_VERSION,
            pools: ipam.pools,
        }
    }
}

impl TryFrom<IpamRecord> for Ipam {
    type Error = String;

    fn try_from(rec: IpamRecord) -> Result<Self, String> {
        if rec.version != STATE_VERSION {
            return Err(format!(
                "state version {} is not supported (this build reads version {STATE_VERSION})",
                rec.version
            ));
        }
        let ipam = Ipam { pools: rec.pools };
        for (name, pool) in &ipam.pools {
            ipam.check_overlap(name, pool.subnet())
                .map_err(|e| e.to_string())?;
        }
        Ok(ipam)
    }
}

/// Replaces `path` with `bytes` atomically and durably.
///
/// Writes a fresh temp file in the same directory (`.NAME.tmp.PID.N`, mode 0600, created
/// exclusively so a leftover from a crashed run is never reused), fsyncs it, renames it over
/// `path`, then fsyncs the directory so the rename itself survives a power cut. Readers see the
/// old content or the new, never a torn file. On failure the temp file is removed and `path`
/// is untouched. A temp file left behind by a kill -9 is harmless: nothing reads it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };

    let (tmp_path, mut file) = loop {
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp_path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
        {
            Ok(f) => break (tmp_path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };

    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp_path, path)
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// [`write_atomic`] that keeps the file it replaces as `backup` (the previous version).
///
/// The current `path`, if any, is hard-linked to a temp name and renamed over `backup` before
/// the new content is written, so no data is copied and `backup` is always a whole file that
/// was once `path`: after the call it holds the previous content, `path` the new one. The
/// directory fsync of [`write_atomic`] makes both renames durable. On a file system without
/// hard links the previous content is copied instead. If `path` does not exist, `backup` is
/// left as it is.
pub fn write_atomic_keeping(path: &Path, backup: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if fs::symlink_metadata(path).is_ok() {
        let dir = match backup.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut name = std::ffi::OsString::from(".");
        name.push(backup.file_name().unwrap_or_default());
        name.push(format!(
            ".link.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(name);
        let _ = fs::remove_file(&tmp);
        match fs::hard_link(path, &tmp) {
            Ok(()) => {
                if let Err(e) = fs::rename(&tmp, backup) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => write_atomic(backup, &fs::read(path)?)?,
        }
    }
    write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A private directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "ipam-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> Ipam {
        let mut ipam = Ipam::new();
        ipam.add_pool("bridge", PoolSpec::new(net("172.17.0.0/16")))
            .unwrap();
        let mut spec = PoolSpec::new(net("10.10.0.0/24"));
        spec.gateway = Some(ip("10.10.0.254"));
        spec.ip_range = Some(net("10.10.0.64/26"));
        spec.aux_addresses
            .insert("router".into(), ip("10.10.0.100"));
        ipam.add_pool("app", spec).unwrap();
        ipam.allocate("bridge", "c1").unwrap();
        ipam.allocate("bridge", "c2").unwrap();
        ipam.allocate("app", "web").unwrap();
        ipam.allocate_static("app", ip("10.10.0.5"), "db").unwrap();
        ipam.release("bridge", ip("172.17.0.2")).unwrap();
        ipam
    }

    #[test]
    fn pools_by_name() {
        let mut ipam = sample();
        assert_eq!(ipam.lease_of("bridge", "c2"), Some(ip("172.17.0.3")));
        assert_eq!(ipam.lease_of("bridge", "c1"), None);
        assert_eq!(ipam.lease_of("nope", "c2"), None);
        assert_eq!(ipam.lease_of("app", "web"), Some(ip("10.10.0.64")));
        let e = ipam.allocate("nope", "x").unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"network "nope" has no address pool"#),
            "{e}"
        );
        let e = ipam
            .add_pool("app", PoolSpec::new(net("10.99.0.0/24")))
            .unwrap_err();
        assert!(matches!(e, IpamError::PoolExists { .. }));
        let names: Vec<_> = ipam.pools().map(|(n, _)| n).collect();
        assert_eq!(names, ["app", "bridge"]);
    }

    #[test]
    fn overlap_names_the_other_network() {
        let mut ipam = sample();
        for bad in [
            "172.17.5.0/24",
            "172.16.0.0/12",
            "10.10.0.128/25",
            "0.0.0.0/0",
        ] {
            let e = ipam.add_pool("new", PoolSpec::new(net(bad))).unwrap_err();
            let IpamError::Overlap { other, .. } = &e else {
                panic!("{bad}: {e}")
            };
            assert!(other == "bridge" || other == "app", "{e}");
            assert!(e.to_string().contains("overlaps"), "{e}");
        }
        let e = ipam
            .add_pool("new", PoolSpec::new(net("10.10.0.0/23")))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"subnet 10.10.0.0/23 for network "new" overlaps 10.10.0.0/24 of network "app"; choose a subnet that overlaps no other network"#
        );
        ipam.add_pool("new", PoolSpec::new(net("10.10.1.0/24")))
            .unwrap();
        assert!(ipam.pool("new").is_ok());
    }

    #[test]
    fn remove_pool_refuses_while_leased() {
        let mut ipam = sample();
        let e = ipam.remove_pool("app").unwrap_err();
        assert!(e.to_string().contains("still leases 2"), "{e}");
        ipam.pool_mut("app").unwrap().release_owner("web");
        ipam.pool_mut("app").unwrap().release_owner("db");
        let removed = ipam.remove_pool("app").unwrap();
        assert_eq!(removed.subnet(), net("10.10.0.0/24"));
        assert!(matches!(
            ipam.remove_pool("app"),
            Err(IpamError::NoSuchPool { .. })
        ));
        // The subnet is free again.
        ipam.add_pool("app2", PoolSpec::new(net("10.10.0.0/16")))
            .unwrap();
    }

    #[test]
    fn default_pools_follow_existing_ones() {
        let mut ipam = Ipam::new();
        let p = ipam.add_default_pool("bridge", &[]).unwrap();
        assert_eq!(p.subnet(), net("172.17.0.0/16"));
        assert_eq!(p.gateway(), ip("172.17.0.1"));
        ipam.add_pool("mine", PoolSpec::new(net("172.18.1.0/24")))
            .unwrap();
        let p = ipam
            .add_default_pool("n2", &[net("172.19.0.0/16")])
            .unwrap();
        assert_eq!(p.subnet(), net("172.20.0.0/16"));
        for i in 0..100 {
            if ipam.add_default_pool(&format!("x{i}"), &[]).is_err() {
                break;
            }
        }
        // x0 takes 172.19 (the route is not passed this time), then the rest run out.
        let e = ipam.add_default_pool("last", &[]).unwrap_err();
        assert!(matches!(e, IpamError::NoDefaultSubnet), "{e}");
        assert!(ipam.pool("x0").is_ok());
        assert_eq!(ipam.pool("x0").unwrap().subnet(), net("172.19.0.0/16"));
    }

    #[test]
    fn persistence_roundtrip() {
        let dir = TempDir::new("roundtrip");
        let path = dir.file("ipam.json");
        let mut ipam = sample();
        ipam.save(&path).unwrap();
        let mut back = Ipam::load(&path).unwrap();
        assert_eq!(back, ipam);
        // The rotation cursor survives: both continue identically.
        assert_eq!(
            back.allocate("bridge", "c3").unwrap(),
            ipam.allocate("bridge", "c3").unwrap()
        );
        assert_eq!(back.lease_of("bridge", "c3"), Some(ip("172.17.0.4")));
        assert_eq!(dir.entries(), ["ipam.json"], "no temp file left behind");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = TempDir::new("missing");
        let ipam = Ipam::load(&dir.file("nothing.json")).unwrap();
        assert_eq!(ipam.pools().count(), 0);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = TempDir::new("corrupt");
        let path = dir.file("ipam.json");
        for bad in [
            &b"{\"version\":1,\"pools\":{\"a\":"[..],
            b"",
            b"not json",
            b"{\"version\":2,\"pools\":{}}",
        ] {
            fs::write(&path, bad).unwrap();
            let e = Ipam::load(&path).unwrap_err();
            assert!(matches!(e, IpamError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        // Overlapping pools in a hand-edited file are refused too.
        let mut a = Ipam::new();
        a.add_pool("a", PoolSpec::new(net("10.0.0.0/16"))).unwrap();
        let mut json = serde_json::to_string(&a).unwrap();
        json = json.replace(
            "\"pools\":{",
            "\"pools\":{\"b\":{\"subnet\":\"10.0.1.0/24\",\"gateway\":\"10.0.1.1\"},",
        );
        fs::write(&path, json).unwrap();
        let e = Ipam::load(&path).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn unreadable_path_is_an_io_error() {
        let dir = TempDir::new("unreadable");
        // A directory where the file should be: read fails with something other than NotFound.
        let e = Ipam::load(&dir.0).unwrap_err();
        assert!(matches!(e, IpamError::Io { op: "read", .. }), "{e}");
    }

    #[test]
    fn torn_write_leaves_real_state_intact() {
        let dir = TempDir::new("torn");
        let path = dir.file("ipam.json");
        let ipam = sample();
        ipam.save(&path).unwrap();
        let good = fs::read(&path).unwrap();

        // A crash in the middle of the next save leaves a half-written temp file (with the
        // name a write_atomic of this very process would pick next, to exercise the collision
        // path too) and no rename.
        let mut next = ipam.clone();
        next.allocate("bridge", "lost").unwrap();
        let full = serde_json::to_vec_pretty(&next).unwrap();
        let torn = &full[..full.len() / 2];
        for n in 0..4 {
            let stale = dir.file(&format!(".ipam.json.tmp.{}.{n}", std::process::id()));
            fs::write(stale, torn).unwrap();
        }
        fs::write(dir.file(".ipam.json.tmp.1.0"), torn).unwrap();

        // The real file is untouched and loads as the last acknowledged state.
        assert_eq!(fs::read(&path).unwrap(), good);
        let loaded = Ipam::load(&path).unwrap();
        assert_eq!(loaded, ipam);
        assert_eq!(loaded.lease_of("bridge", "lost"), None);

        // Saving again works despite the leftovers, and does not touch them.
        next.save(&path).unwrap();
        assert_eq!(Ipam::load(&path).unwrap(), next);
        assert_eq!(dir.entries().len(), 6);
        for leftover in dir.entries().iter().filter(|e| e.contains(".tmp.")) {
            assert_eq!(fs::read(dir.file(leftover)).unwrap(), torn);
        }
    }

    #[test]
    fn failed_write_keeps_old_file_and_cleans_up() {
        let dir = TempDir::new("failed");
        let target = dir.file("state");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        // Renaming a file over a non-empty directory fails.
        assert!(write_atomic(&target, b"new").is_err());
        assert!(target.is_dir());
        assert_eq!(dir.entries(), ["state"], "temp file removed after failure");
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn write_into_a_missing_directory_fails() {
        let dir = TempDir::new("missing");
        let e = write_atomic(&dir.file("gone/state"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    }

    #[test]
    fn write_atomic_keeping_keeps_the_previous_file() {
        let dir = TempDir::new("keeping");
        let (path, bak) = (dir.file("state.json"), dir.file("state.json.bak"));
        // No previous file: nothing to keep, and an existing backup is left alone.
        fs::write(&bak, b"older").unwrap();
        write_atomic_keeping(&path, &bak, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::read(&bak).unwrap(), b"older");
        write_atomic_keeping(&path, &bak, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read(&bak).unwrap(), b"one");
        write_atomic_keeping(&path, &bak, b"three").unwrap();
        assert_eq!(fs::read(&bak).unwrap(), b"two");
        // Two separate files (not two names of one inode): damaging the live file in place
        // leaves the backup whole.
        fs::write(&path, b"{trunc").unwrap();
        assert_eq!(fs::read(&bak).unwrap(), b"two");
        assert_eq!(dir.entries(), ["state.json", "state.json.bak"]);
    }

    #[test]
    fn from_json_never_panics_on_damaged_files() {
        use proptest::prelude::*;
        let good = serde_json::to_vec_pretty(&sample()).unwrap();
        assert_eq!(Ipam::from_json(&good).unwrap(), sample());
        let runner = || proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
        // Arbitrary bytes.
        runner()
            .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
                let _ = Ipam::from_json(&bytes);
                Ok(())
            })
            .unwrap();
        // A real file, cut short and with bytes overwritten: reaches the pool checks, where
        // arbitrary bytes rarely get.
        let edits = (
            proptest::option::weighted(0.3, 0..good.len()),
            proptest::collection::vec((0..good.len(), any::<u8>()), 0..4),
            proptest::collection::vec((0..good.len(), b'0'..=b'9'), 0..4),
        );
        runner()
            .run(&edits, |(cut, flips, digits)| {
                let mut b = good.clone();
                for (i, v) in flips.into_iter().chain(digits) {
                    if let Some(x) = b.get_mut(i) {
                        *x = v;
                    }
                }
                if let Some(cut) = cut {
                    b.truncate(cut);
                }
                if let Ok(ipam) = Ipam::from_json(&b) {
                    // Whatever parses obeys the rules: no two pools overlap.
                    let subnets: Vec<Ipv4Net> = ipam.pools().map(|(_, p)| p.subnet()).collect();
                    for (i, a) in subnets.iter().enumerate() {
                        for c in subnets.iter().skip(i + 1) {
                            prop_assert!(!overlaps(a, c), "{a} overlaps {c}");
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn write_atomic_replaces_content_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("atomic");
        let path = dir.file("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(dir.entries(), ["f"]);
    }
}
