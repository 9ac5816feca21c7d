//! The daemon's Unix socket: one JSON request per line, one JSON reply per line.
//!
//! Bounded in every way a client could hold the daemon: a request line is at most
//! [`MAX_REQUEST`] bytes (read through a bounded reader, never buffered further), a client has
//! [`Limits::timeout`] to send each whole request (counted from connecting or from the previous
//! reply, so an idle client and a client trickling bytes are both closed), at most
//! [`Limits::max_clients`] clients are served at once (one thread each), and a request whose
//! handler panics gets an error reply while the daemon keeps serving. Each refusal is one JSON
//! error line, then the connection is closed.

use super::api::{Reply, Request};
use super::daemon::Daemon;
use super::error::{bail, err, Context, Result};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest request line the daemon reads, in bytes (the newline not counted): 1 MiB. The
/// largest real request (`network create` with many options) is a few hundred bytes.
pub const MAX_REQUEST: usize = 1 << 20;

/// How long the reconcile pass waits between runs.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Limits of the control socket.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line in bytes.
    pub max_request: usize,
    /// Time a client has to send one whole request, from connecting or from the previous
    /// reply (and to take a reply off the socket).
    pub timeout: Duration,
    /// Most clients connected at once.
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: MAX_REQUEST,
            timeout: Duration::from_secs(30),
            max_clients: 64,
        }
    }
}

/// What serves the requests: the [`Daemon`], or a stand-in in tests.
pub trait Handler: Send + 'static {
    /// Handles one request.
    fn handle(&mut self, req: Request) -> Reply;
    /// The periodic pass (containers whose namespace went away, path MTU).
    fn reconcile(&mut self) {}
}

impl Handler for Daemon {
    fn handle(&mut self, req: Request) -> Reply {
        Daemon::handle(self, req)
    }
    fn reconcile(&mut self) {
        Daemon::reconcile(self)
    }
}

/// Binds the control socket at `path` (mode 0600). A stale socket left by a daemon that died is
/// replaced; a live one is an error, so two daemons never share a socket.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "a vswitch daemon is already running on {}; stop it first or pick another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests until the process ends, within `limits`. Also runs the worker's supervisor
/// (a panicked worker is replaced; see [`super::daemon::supervise`]) and the reconcile loop
/// (every 2 s) that drops containers whose namespace was deleted behind the daemon's back and
/// follows the overlay peers' path MTU.
pub fn serve(listener: UnixListener, daemon: Daemon, limits: Limits) -> Result<()> {
    serve_shared_daemon(listener, Arc::new(Mutex::new(daemon)), limits)
}

/// [`serve`] on a daemon other front ends share (the Docker plugin socket,
/// [`super::docker`]); every front end locks it for one call at a time.
pub fn serve_shared_daemon(
    listener: UnixListener,
    daemon: Arc<Mutex<Daemon>>,
    limits: Limits,
) -> Result<()> {
    super::daemon::supervise::supervise(Arc::clone(&daemon))?;
    serve_shared(listener, daemon, limits, Some(RECONCILE_EVERY))
}

/// [`serve`] with another front end in front of the daemon (the store's,
/// [`super::store::StoreFront`]): `front` handles the requests, `daemon` is supervised.
pub fn serve_front<H: Handler>(
    listener: UnixListener,
    daemon: Arc<Mutex<Daemon>>,
    front: H,
    limits: Limits,
) -> Result<()> {
    super::daemon::supervise::supervise(daemon)?;
    serve_shared(
        listener,
        Arc::new(Mutex::new(front)),
        limits,
        Some(RECONCILE_EVERY),
    )
}

/// [`serve`] for any [`Handler`]; `reconcile_every: None` runs no reconcile pass.
pub fn serve_with<H: Handler>(
    listener: UnixListener,
    handler: H,
    limits: Limits,
    reconcile_every: Option<Duration>,
) -> Result<()> {
    serve_shared(
        listener,
        Arc::new(Mutex::new(handler)),
        limits,
        reconcile_every,
    )
}

fn serve_shared<H: Handler>(
    listener: UnixListener,
    handler: Arc<Mutex<H>>,
    limits: Limits,
    reconcile_every: Option<Duration>,
) -> Result<()> {
    if let Some(every) = reconcile_every {
        let h = Arc::clone(&handler);
        std::thread::Builder::new()
            .name("vswitch-reconcile".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let mut h = lock(&h);
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| h.reconcile())) {
                    tracing::error!(
                        "the reconcile pass panicked ({}); it runs again in {every:?}",
                        panic_message(&*p)
                    );
                }
            })?;
    }
    let active = Arc::new(AtomicUsize::new(0));
    let mut last_refusal_log: Option<Instant> = None;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("control socket: cannot accept a client: {e}");
                // Out of descriptors or memory: give the clients time to go.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Only this thread adds clients, so the count cannot pass the limit between the
        // check and the increment.
        let n = active.load(Ordering::SeqCst);
        if n >= limits.max_clients {
            let due = match last_refusal_log {
                None => true,
                Some(t) => t.elapsed() >= Duration::from_secs(10),
            };
            if due {
                tracing::warn!(
                    "control socket: refusing clients: {n} connected, the most served at once (--max-clients)"
                );
                last_refusal_log = Some(Instant::now());
            }
            refuse(
                conn,
                format!(
                    "too many clients: {n} are connected to the daemon, the most it serves at once; try again later"
                ),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(&active));
        let (h, l) = (Arc::clone(&handler), limits.clone());
        // On a failed spawn the closure, and with it the slot, is dropped.
        if let Err(e) = std::thread::Builder::new()
            .name("vswitch-client".into())
            .spawn(move || {
                let _slot = slot;
                let _ = handle_conn(conn, &*h, &l);
            })
        {
            tracing::warn!("control socket: cannot start a thread for a client: {e}");
        }
    }
    Ok(())
}

/// One client's place among [`Limits::max_clients`], given back when its thread ends.
pub(crate) struct Slot(pub(crate) Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Locks the handler. A panic is caught inside the lock (see [`respond`]), so the lock is not
/// poisoned by a request; should it be anyway, serving on beats answering "bad state" forever.
pub(crate) fn lock<H>(h: &Mutex<H>) -> MutexGuard<'_, H> {
    h.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends one error line to a client the daemon will not serve, and closes it. Never blocks.
fn refuse(conn: UnixStream, message: String) {
    let _ = conn.set_nonblocking(true);
    let _ = (&conn).write_all(&reply_line(&Reply::Error { message }));
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Why a request line could not be read.
#[derive(Debug)]
enum LineError {
    /// More than the limit without a newline.
    TooLong,
    /// The deadline passed first.
    TimedOut,
    Io(io::Error),
}

/// Reads one line (without its `\n`) into `line`, holding at most `max` bytes of it: a longer
/// line is [`LineError::TooLong`] as soon as byte `max + 1` arrives. `arm` runs before every
/// read from the source (the socket version sets the time left as its read timeout). Returns
/// false at the end of input with nothing read; a last line without a newline counts.
fn read_line<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    mut arm: impl FnMut(&mut R) -> Result<(), LineError>,
) -> Result<bool, LineError> {
    line.clear();
    loop {
        arm(r)?;
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(LineError::TimedOut)
            }
            Err(e) => return Err(LineError::Io(e)),
        };
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len().saturating_add(take) > max {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(buf.get(..take).unwrap_or_default());
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

/// Sets the socket's read timeout to what is left until `deadline`.
fn arm(s: &UnixStream, deadline: Instant) -> Result<(), LineError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(LineError::TimedOut);
    }
    s.set_read_timeout(Some(left)).map_err(LineError::Io)
}

/// Parses one request line. Never panics, whatever the bytes.
pub fn parse_request(line: &[u8]) -> std::result::Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

/// Handles one request line: parse, then run the handler with a panic caught and reported.
fn respond<H: Handler>(h: &Mutex<H>, line: &[u8]) -> Reply {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(message) => return Reply::Error { message },
    };
    let op = serde_json::to_value(&req)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let t0 = std::time::Instant::now();
    let mut g = lock(h);
    match catch_unwind(AssertUnwindSafe(|| g.handle(req))) {
        Ok(reply) => {
            match &reply {
                Reply::Ok { .. } => tracing::debug!(op, took = ?t0.elapsed(), "request done"),
                Reply::Error { message } => {
                    tracing::debug!(op, took = ?t0.elapsed(), error = %message, "request refused")
                }
            }
            reply
        }
        Err(p) => {
            let msg = panic_message(&*p);
            tracing::error!("a {op} request panicked ({msg}); answered with an error, serving on");
            Reply::Error {
                message: format!(
                    "internal error: the daemon failed on this {op} request ({msg}). It keeps serving; \
                     see its log, and check `vswitch ps` and `vswitch network ls` for anything this \
                     request left half done"
                ),
            }
        }
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn handle_conn<H: Handler>(conn: UnixStream, h: &Mutex<H>, limits: &Limits) -> io::Result<()> {
    conn.set_write_timeout(Some(limits.timeout))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, conn);
    let mut line = Vec::new();
    loop {
        let deadline = Instant::now() + limits.timeout;
        let got = read_line(&mut r, &mut line, limits.max_request, |r| {
            arm(r.get_ref(), deadline)
        });
        let reply = match got {
            Ok(false) => return Ok(()),
            Ok(true) if line.trim_ascii().is_empty() => continue,
            Ok(true) => respond(h, &line),
            Err(LineError::Io(e)) => return Err(e),
            Err(e) => {
                let message = match e {
                    LineError::TooLong => format!(
                        "request too long: more than {} bytes without a newline (the limit of one request); closing the connection",
                        limits.max_request
                    ),
                    _ => format!(
                        "request timed out: no whole request (one JSON object and a newline) within {:?}; closing the connection",
                        limits.timeout
                    ),
                };
                refuse(r.into_inner(), message);
                return Ok(());
            }
        };
        if line.capacity() > 64 * 1024 {
            line = Vec::new(); // do not keep a large request's buffer for the connection's life
        }
        w.write_all(&reply_line(&reply))?;
    }
}

/// A client of the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path).map_err(|e| {
            err!(
                "cannot reach the vswitch daemon at {} ({e}); is it running? Start it with `vswitch daemon`, or set --socket / VSWITCH_SOCKET",
                path.display()
            )
        })?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends a request and returns the reply's data, or the daemon's error as an error.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        let sent = self.writer.write_all(&line);
        // A daemon that refuses a client (too many) answers and closes without reading: show
        // its answer rather than the broken pipe.
        let mut resp = String::new();
        let read = self.reader.read_line(&mut resp);
        if resp.is_empty() {
            sent?;
            read?;
            bail!("the daemon closed the connection");
        }
        match serde_json::from_str::<Reply>(&resp)? {
            Reply::Ok { data } => Ok(data),
            Reply::Error { message } => bail!("{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;

    /// Answers ping; panics on `network_rm` of "boom"; counts the requests it saw.
    struct Fake {
        seen: Arc<AtomicUsize>,
    }

    impl Handler for Fake {
        fn handle(&mut self, req: Request) -> Reply {
            self.seen.fetch_add(1, Ordering::SeqCst);
            match req {
                Request::NetworkRm { name } if name == "boom" => panic!("injected failure"),
                _ => Reply::Ok {
                    data: serde_json::json!("pong"),
                },
            }
        }
    }

    /// A server with a [`Fake`] handler on a socket of its own (the accept thread is left
    /// blocked when the test ends; the socket file is removed).
    struct Server {
        path: PathBuf,
        seen: Arc<AtomicUsize>,
    }

    impl Server {
        fn start(tag: &str, limits: Limits) -> Server {
            let path =
                std::env::temp_dir().join(format!("vswitch-srv-{tag}-{}.sock", std::process::id()));
            let listener = bind(&path).unwrap();
            let seen = Arc::new(AtomicUsize::new(0));
            let fake = Fake {
                seen: Arc::clone(&seen),
            };
            std::thread::spawn(move || serve_with(listener, fake, limits, None));
            Server { path, seen }
        }

        fn connect(&self) -> UnixStream {
            let s = UnixStream::connect(&self.path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Sends one line and reads one reply line.
    fn call(s: &mut UnixStream, line: &str) -> String {
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        read_reply(s)
    }

    fn read_reply(s: &mut UnixStream) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            out.push(b[0]);
        }
        String::from_utf8(out).unwrap()
    }

    /// True when the server has closed `s` (EOF, or a reset because our data went unread).
    fn closed(s: &mut UnixStream) -> bool {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    const PING: &str = r#"{"op":"ping"}"#;
    const OK: &str = r#"{"status":"ok","data":"pong"}"#;

    #[test]
    fn a_panicking_request_is_answered_and_the_daemon_serves_on() {
        let srv = Server::start("panic", Limits::default());
        let mut c = srv.connect();
        assert_eq!(call(&mut c, PING), OK);
        let r = call(&mut c, r#"{"op":"network_rm","name":"boom"}"#);
        assert!(r.contains(r#""status":"error""#), "{r}");
        assert!(
            r.contains("the daemon failed on this network_rm request (injected failure)"),
            "{r}"
        );
        // The same connection and new ones are served, again and again (no poisoned lock).
        assert_eq!(call(&mut c, PING), OK);
        for _ in 0..3 {
            let mut c2 = srv.connect();
            assert!(call(&mut c2, r#"{"op":"network_rm","name":"boom"}"#).contains("injected"));
            assert_eq!(call(&mut c2, PING), OK);
        }
        assert_eq!(srv.seen.load(Ordering::SeqCst), 9);
    }

    #[test]
    fn an_oversized_request_is_refused_without_holding_the_others() {
        let limits = Limits {
            max_request: 4096,
            ..Default::default()
        };
        let srv = Server::start("big", limits);
        let mut other = srv.connect();
        assert_eq!(call(&mut other, PING), OK);
        // A line one byte over the limit, still being written when the server gives up.
        let mut big = srv.connect();
        let mut w = big.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&vec![b' '; 4097 + (1 << 20)]);
        });
        let r = read_reply(&mut big);
        assert!(
            r.contains("request too long: more than 4096 bytes without a newline"),
            "{r}"
        );
        assert!(closed(&mut big), "the connection is closed after the error");
        writer.join().unwrap();
        // Exactly at the limit is a request (it does not parse, but it is read).
        let mut c = srv.connect();
        let r = call(&mut c, &format!("{}{PING}", " ".repeat(4096 - PING.len())));
        assert_eq!(r, OK);
        assert_eq!(call(&mut other, PING), OK);
    }

    #[test]
    fn a_slow_or_idle_client_times_out() {
        let limits = Limits {
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let srv = Server::start("slow", limits);
        // Trickles a request a byte every 100 ms for 2 s: every read is well within the
        // timeout, but the deadline holds for the whole request, so the server gives up at
        // 300 ms, long before the client is done.
        let mut slow = srv.connect();
        let mut w = slow.try_clone().unwrap();
        let t0 = Instant::now();
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                if w.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = read_reply(&mut slow);
        let took = t0.elapsed();
        assert!(
            r.contains(
                "request timed out: no whole request (one JSON object and a newline) within 300ms"
            ),
            "{r}"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(
            took < Duration::from_millis(1900),
            "timed out only after {took:?}"
        );
        assert!(closed(&mut slow));
        writer.join().unwrap();
        // An idle client: served once, then closed 300 ms after its reply.
        let mut idle = srv.connect();
        assert_eq!(call(&mut idle, PING), OK);
        let t0 = Instant::now();
        assert!(read_reply(&mut idle).contains("request timed out"));
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(closed(&mut idle));
        // A prompt client is unaffected.
        let mut c = srv.connect();
        assert_eq!(call(&mut c, PING), OK);
    }

    #[test]
    fn clients_beyond_the_limit_are_refused_until_one_leaves() {
        let limits = Limits {
            max_clients: 2,
            ..Default::default()
        };
        let srv = Server::start("many", limits);
        let mut a = srv.connect();
        let mut b = srv.connect();
        assert_eq!(call(&mut a, PING), OK);
        assert_eq!(call(&mut b, PING), OK);
        let mut c = srv.connect();
        let r = read_reply(&mut c);
        assert!(
            r.contains(
                "too many clients: 2 are connected to the daemon, the most it serves at once"
            ),
            "{r}"
        );
        assert!(closed(&mut c));
        // The library's client shows that answer, not a broken pipe.
        let e = Client::connect(&srv.path)
            .unwrap()
            .call(&Request::Ping)
            .unwrap_err();
        assert!(e.to_string().contains("too many clients"), "{e}");
        // The two served clients go on; once one leaves, a new one gets in.
        assert_eq!(call(&mut a, PING), OK);
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut d = srv.connect();
            // While b's slot is not yet free, the daemon refuses d and closes it at once, maybe
            // before the request is written: the write may fail with a broken pipe, and the
            // refusal line is still there to read.
            let _ = d.write_all(format!("{PING}\n").as_bytes());
            let r = read_reply(&mut d);
            if r == OK {
                break;
            }
            assert!(r.contains("too many clients"), "{r}");
            assert!(
                Instant::now() < deadline,
                "no slot freed after a client left"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn read_line_splits_and_bounds_arbitrary_input() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let input = (
            proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'{'), Just(b' '), any::<u8>()],
                0..300,
            ),
            1usize..40,
            0usize..50,
        );
        TestRunner::new(Config::with_cases(2000))
            .run(&input, |(bytes, cap, max)| {
                let mut r = BufReader::with_capacity(cap, &bytes[..]);
                let mut line = Vec::new();
                // The model: lines split on '\n', a last unterminated non-empty line counts.
                let mut want: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
                if want.last().is_some_and(|l| l.is_empty()) {
                    want.pop();
                }
                for w in want {
                    match read_line(&mut r, &mut line, max, |_| Ok(())) {
                        Ok(true) => {
                            prop_assert!(w.len() <= max);
                            prop_assert_eq!(&line[..], w);
                        }
                        Err(LineError::TooLong) => {
                            prop_assert!(w.len() > max);
                            prop_assert!(line.len() <= max, "held {} > {max}", line.len());
                            return Ok(());
                        }
                        other => prop_assert!(false, "{other:?} for {w:?}"),
                    }
                }
                prop_assert!(matches!(
                    read_line(&mut r, &mut line, max, |_| Ok(())),
                    Ok(false)
                ));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn parse_request_never_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let r = parse_request(br#"{"op":"rm","name":"c1","force":true}"#).unwrap();
        assert!(matches!(r, Request::Rm { name, force: true } if name == "c1"));
        let e = parse_request(b"\xff{").unwrap_err();
        assert!(e.starts_with("malformed request: "), "{e}");
        TestRunner::new(Config::with_cases(3000))
            .run(&proptest::collection::vec(any::<u8>(), 0..256), |b| {
                let _ = parse_request(&b);
                Ok(())
            })
            .unwrap();
        // Real requests with bytes overwritten reach the field checks.
        let good = br#"{"op":"network_create","name":"n","driver":"bridge","subnet":"10.0.0.0/24","gateway":null,"ip_range":null,"aux_addresses":["a=10.0.0.9"],"internal":false,"options":["mtu=1400"]}"#;
        assert!(parse_request(good).is_ok());
        let edits = proptest::collection::vec((0..good.len(), any::<u8>()), 0..4);
        TestRunner::new(Config::with_cases(3000))
            .run(&edits, |flips| {
                let mut b = good.to_vec();
                for (i, v) in flips {
                    if let Some(x) = b.get_mut(i) {
                        *x = v;
                    }
                }
                let _ = parse_request(&b);
                Ok(())
            })
            .unwrap();
    }
}
