//! How the switch worker is scheduled, end to end: `vswitch daemon --busy-poll` keeps the worker
//! polling while frames keep coming at a ping's rate (no sleep, so no wakeup per frame), not at
//! a stream's, and without it the worker sleeps between frames. (Its nice value,
//! `--worker-nice`, is checked in supervision.rs, across a worker restart.) `--port-buffer` sets
//! the veth ports' socket buffer.

use e2e::*;

/// Busy polling spins only while no thread of the host waits for a CPU, so these tests (one of
/// which runs a stream, another CPU hogs) must not run beside each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts containers `a` and `b` on the daemon's default network, checks that `a` reaches `b`,
/// and returns `b`'s address.
fn two_containers(d: &Daemon, a: &str, b: &str) -> String {
    d.run(a, &[]);
    d.run(b, &[]);
    let ip = d.ip_of(b);
    assert!(d.ping(a, &ip), "{a} cannot reach {b} at {ip}");
    ip
}

/// Times busy polling gave its CPU up to a thread that was waiting for one
/// (`vswitch_worker_spin_declined_total`).
fn spins_declined(d: &Daemon) -> u64 {
    let m = d.ok(&["metrics"]);
    m.lines()
        .find_map(|l| l.strip_prefix("vswitch_worker_spin_declined_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no vswitch_worker_spin_declined_total in:\n{m}"))
}

/// Pings `n` times, 10 ms apart, from `from` to `ip`, and returns how many times the worker went
/// to sleep meanwhile.
fn sleeps_during_pings(d: &Daemon, from: &str, ip: &str, n: u32) -> u64 {
    let before = d.worker_sleeps().expect("the worker thread's status");
    let o = d.exec(
        from,
        &[
            "ping",
            "-c",
            &n.to_string(),
            "-i",
            "0.01",
            "-q",
            "-W",
            "1",
            ip,
        ],
    );
    assert!(o.status.success(), "ping {ip}: {o:?}");
    d.worker_sleeps().expect("the worker thread's status") - before
}

/// [`sleeps_during_pings`], and how many of those times busy polling gave its CPU up
/// ([`spins_declined`]).
fn sleeps_and_give_ways_during_pings(d: &Daemon, from: &str, ip: &str, n: u32) -> (u64, u64) {
    let before = spins_declined(d);
    let slept = sleeps_during_pings(d, from, ip, n);
    (slept, spins_declined(d) - before)
}

#[test]
fn busy_polling_keeps_the_worker_awake_between_frames_and_its_absence_does_not() {
    if !need_root("busy_poll") {
        return;
    }
    let _serial = serial();
    let n = 50;
    // Without busy polling: every ping finds the worker asleep (50 requests, 10 ms apart).
    let d = Daemon::start("nobp");
    let (a, b) = (unique("a"), unique("b"));
    let ip = two_containers(&d, &a, &b);
    let slept = sleeps_during_pings(&d, &a, &ip, n);
    assert!(
        slept >= u64::from(n),
        "without --busy-poll the worker slept only {slept} times during {n} pings"
    );
    drop(d);

    // With a window longer than the gaps (1 s > 10 ms), it sleeps while they come only when
    // it gave its CPU up to a thread waiting for it (a kernel worker bound to that CPU, say:
    // some 17% of pings on this VM, counted). A few other sleeps may remain: a command from
    // the control socket, say.
    let d = Daemon::start_with("bp", &["--busy-poll", "1000000"]);
    let ip = two_containers(&d, &a, &b);
    let (slept, declined) = sleeps_and_give_ways_during_pings(&d, &a, &ip, n);
    assert!(
        slept < declined + u64::from(n) / 5 && declined < u64::from(n) / 2,
        "with --busy-poll 1000000 the worker slept {slept} times during {n} pings, {declined} \
         of them giving way to a thread that wanted its CPU"
    );
}

/// Busy polling stands aside for a stream: at some 25,000 frames a second (UDP, fixed rate) the
/// worker is busy enough that spinning would only take CPU from the containers, so even with a
/// window far longer than the gaps it sleeps between bursts, as without busy polling.
#[test]
fn busy_polling_does_not_spin_at_a_streams_rate() {
    if !need_root("busy_poll_stream") {
        return;
    }
    let _serial = serial();
    let d = Daemon::start_with("bps", &["--busy-poll", "1000000"]);
    let (a, b) = (unique("a"), unique("b"));
    let ip = two_containers(&d, &a, &b);
    let info = d.container(&b);
    let srv = Iperf3Server::start(
        info["netns"].as_str().unwrap(),
        &d.dir.join("iperf-bps.log"),
    );
    let before = d.worker_sleeps().expect("the worker thread's status");
    // 20 Mbit/s of 100-byte datagrams: 25,000 a second, five times the gate's limit.
    let o = d.exec(
        &a,
        &[
            "iperf3", "-c", &ip, "-u", "-b", "20M", "-l", "100", "-t", "2",
        ],
    );
    let slept = d.worker_sleeps().expect("the worker thread's status") - before;
    drop(srv);
    assert!(o.status.success(), "iperf3: {o:?}");
    assert!(
        slept >= 1000,
        "with --busy-poll 1000000 and a stream of 25,000 frames a second the worker slept only \
         {slept} times in 2 s: it spun"
    );
}

/// CPU-bound processes started by a test, ended by PID when it ends (even by a panic).
struct Hogs(Vec<std::process::Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Busy polling gives way to a busy host: with more CPU-bound processes than CPUs, the worker
/// does not spin between pings (it would take a CPU from them at nice -10) but sleeps at each,
/// as without busy polling.
#[test]
fn busy_polling_gives_way_when_the_host_has_no_cpu_to_spare() {
    if !need_root("busy_poll_busy_host") {
        return;
    }
    let _serial = serial();
    let n = 50;
    let d = Daemon::start_with("bph", &["--busy-poll", "1000000"]);
    let (a, b) = (unique("a"), unique("b"));
    let ip = two_containers(&d, &a, &b);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _hogs = Hogs(
        (0..=cpus)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("spawn a CPU hog")
            })
            .collect(),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (slept, declined) = sleeps_and_give_ways_during_pings(&d, &a, &ip, n);
    assert!(
        declined >= u64::from(n) / 2,
        "busy polling gave way only {declined} times during {n} pings beside CPU hogs"
    );
    assert!(
        slept >= u64::from(n),
        "with {} CPU hogs on {cpus} CPUs and --busy-poll 1000000 the worker slept only {slept} \
         times during {n} pings: it spun",
        cpus + 1
    );
}

/// The receive buffer the kernel gave the daemon's AF_PACKET socket on the host end `ifname`,
/// from `ss` (`skmem:(...,rbBYTES,...)`): twice what was asked, as the kernel books it.
fn packet_rcvbuf(pid: u32, ifname: &str) -> u64 {
    let out = sh_ok("ss", &["-0", "-a", "-m", "-p"]);
    let owner = format!("pid={pid},");
    let line = out
        .lines()
        .find(|l| l.contains(&owner) && l.contains(&format!(":{ifname} ")))
        .unwrap_or_else(|| panic!("no packet socket of pid {pid} on {ifname} in:\n{out}"));
    line.split(['(', ','])
        .find_map(|f| f.strip_prefix("rb"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rb in skmem of: {line}"))
}

#[test]
fn port_buffer_sets_the_veth_ports_socket_buffer_and_refuses_a_bad_size() {
    if !need_root("port_buffer") {
        return;
    }
    for (args, want) in [
        (&["--port-buffer", "1048576"][..], 2 * 1048576u64),
        (&[][..], 2 * 4 * 1024 * 1024),
    ] {
        let d = Daemon::start_with("pbuf", args);
        let (a, b) = (unique("a"), unique("b"));
        two_containers(&d, &a, &b);
        for c in [&a, &b] {
            let got = packet_rcvbuf(d.pid(), &d.port_name(c));
            assert_eq!(got, want, "daemon {args:?}: {c}'s port buffer");
        }
    }
    let o = std::process::Command::new(vswitch_bin())
        .args(["daemon", "--port-buffer", "1000"])
        .output()
        .expect("run vswitch");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a 1000-byte buffer was not refused: {o:?}"
    );
    assert!(
        err.contains("from 65536 to 67108864"),
        "the error does not say what size to give: {err}"
    );
}
