//! How the switch worker is scheduled, end to end: `vswitch daemon --busy-poll` keeps the worker
//! polling while frames keep coming (no sleep, so no wakeup per frame), and without it the
//! worker sleeps between frames. (Its nice value, `--worker-nice`, is checked in
//! supervision.rs, across a worker restart.)

use e2e::*;

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

#[test]
fn busy_polling_keeps_the_worker_awake_between_frames_and_its_absence_does_not() {
    if !need_root("busy_poll") {
        return;
    }
    let n = 50;
    // Without busy polling: every ping finds the worker asleep (50 requests, 10 ms apart).
    let d = Daemon::start("nobp");
    let (a, b) = (unique("a"), unique("b"));
    d.run(&a, &[]);
    d.run(&b, &[]);
    let ip = d.ip_of(&b);
    assert!(d.ping(&a, &ip));
    let slept = sleeps_during_pings(&d, &a, &ip, n);
    assert!(
        slept >= u64::from(n),
        "without --busy-poll the worker slept only {slept} times during {n} pings"
    );
    drop(d);

    // With a window longer than the gaps (1 s > 10 ms), it never sleeps while they come. A
    // few sleeps may remain: a command from the control socket, say.
    let d = Daemon::start_with("bp", &["--busy-poll", "1000000"]);
    d.run(&a, &[]);
    d.run(&b, &[]);
    let ip = d.ip_of(&b);
    assert!(d.ping(&a, &ip));
    let slept = sleeps_during_pings(&d, &a, &ip, n);
    assert!(
        slept < u64::from(n) / 5,
        "with --busy-poll 1000000 the worker slept {slept} times during {n} pings"
    );
}
