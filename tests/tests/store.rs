//! The etcd client (`switch::control::store::etcd`) against a real three-member etcd cluster
//! on loopback ports: every call the store uses, failover when a member dies, watches from a
//! revision and their compaction.

use e2e::etcd::Cluster;
use std::time::{Duration, Instant};
use switch::control::store::etcd::{parse_endpoints, Client, EtcdError, Event, Op};

fn client(c: &Cluster) -> Client {
    Client::new(parse_endpoints(&c.url()).expect("endpoints"))
}

#[test]
fn client_puts_ranges_creates_if_absent_leases_and_watches() {
    if !e2e::etcd::available() {
        return;
    }
    let cl = Cluster::on_loopback("kv");
    let c = client(&cl);
    let rev = c.put(b"/t/a", b"1", 0).unwrap();
    assert!(rev > 0);
    assert_eq!(c.get(b"/t/a").unwrap().unwrap().value, b"1");
    assert_eq!(c.get(b"/t/none").unwrap(), None);
    // Create-if-absent: the first wins, the second changes nothing.
    let put = |v: &[u8]| Op::Put {
        key: b"/t/b".to_vec(),
        value: v.to_vec(),
        lease: 0,
    };
    assert!(c.create(&[b"/t/b"], &[put(b"first")]).unwrap());
    assert!(!c.create(&[b"/t/b"], &[put(b"second")]).unwrap());
    assert_eq!(c.get(b"/t/b").unwrap().unwrap().value, b"first");
    // Written by etcdctl, read by the client (base64 on the wire both ways).
    cl.ctl(&["put", "/t/c", "from etcdctl"]);
    let r = c.range_prefix(b"/t/").unwrap();
    let keys: Vec<String> = r.kvs.iter().map(|k| k.key_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/t/c"]);
    assert_eq!(r.kvs[2].value, b"from etcdctl");
    // A lease: kept alive, then revoked with its key.
    let lease = c.lease_grant(10).unwrap();
    c.put(b"/t/leased", b"x", lease).unwrap();
    assert!(c.lease_keepalive(lease).unwrap() > 0);
    c.lease_revoke(lease).unwrap();
    assert_eq!(c.get(b"/t/leased").unwrap(), None);
    assert_eq!(
        c.lease_keepalive(lease).unwrap(),
        0,
        "a revoked lease is gone"
    );
    // A watch from the list's revision + 1 sees exactly what came after.
    let listed = c.range_prefix(b"/t/").unwrap();
    let w = c.watch(b"/t/", listed.revision + 1).unwrap();
    c.put(b"/t/d", b"4", 0).unwrap();
    c.delete(b"/t/a", false).unwrap();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while seen.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        if let Some(b) = w.next(Duration::from_millis(200)).unwrap() {
            seen.extend(b.events);
        }
    }
    assert!(
        matches!(&seen[..], [Event::Put(p), Event::Delete(d)] if p.key == b"/t/d" && p.value == b"4" && d.key == b"/t/a"),
        "{seen:?}"
    );
    c.delete(b"/t/", true).unwrap();
    assert!(c.range_prefix(b"/t/").unwrap().kvs.is_empty());
}

#[test]
fn client_fails_over_when_a_member_dies_and_a_compacted_watch_says_so() {
    if !e2e::etcd::available() {
        return;
    }
    let mut cl = Cluster::on_loopback("fo");
    let c = client(&cl);
    let r1 = c.put(b"/f/a", b"1", 0).unwrap();
    c.put(b"/f/a", b"2", 0).unwrap();
    // The client's current endpoint (the first) dies: the next request goes elsewhere,
    // and the write goes through once the survivors have a leader (at most an election).
    cl.kill(0);
    let t0 = Instant::now();
    loop {
        match c.put(b"/f/b", b"after", 0) {
            Ok(_) => break,
            Err(e) => assert!(
                e.is_unavailable() && t0.elapsed() < Duration::from_secs(5),
                "a write with one member of three gone: {e} after {:?}",
                t0.elapsed()
            ),
        }
    }
    eprintln!("write after a member died: {:?}", t0.elapsed());
    assert_eq!(c.get(b"/f/b").unwrap().unwrap().value, b"after");
    // Compaction: a watch from before it is told so (and must list again).
    cl.ctl(&["compaction", &(r1 + 1).to_string()]);
    let w = c.watch(b"/f/", r1).unwrap();
    let t0 = Instant::now();
    let err = loop {
        match w.next(Duration::from_millis(200)) {
            Err(e) => break e,
            Ok(_) => assert!(t0.elapsed() < Duration::from_secs(5), "no compaction error"),
        }
    };
    assert!(matches!(err, EtcdError::Compacted(_)), "{err}");
    // Quorum lost: a clear error, not a hang.
    cl.kill(1);
    let t0 = Instant::now();
    let e = c.put(b"/f/c", b"x", 0).unwrap_err();
    assert!(matches!(e, EtcdError::NoQuorum(_)), "{e}");
    assert!(
        e.to_string().contains("the store has no quorum; try again"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // Quorum back: writes go through again.
    cl.restart(1);
    let t0 = Instant::now();
    while c.put(b"/f/c", b"x", 0).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "quorum did not come back"
        );
    }
}
