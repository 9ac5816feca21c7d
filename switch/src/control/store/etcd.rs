//! A small blocking etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`, `/v3/lease/*`, `/v3/watch`), on a plain HTTP/1.1 client over
//! [`std::net::TcpStream`].
//!
//! Why not the `etcd-client` crate: it is async (tokio) and generates its gRPC code with
//! `protoc` at build time; the daemon is not async, and the gateway does everything it needs.
//!
//! Everything etcd sends is untrusted bytes: the status line and headers are read through a
//! bounded reader ([`MAX_HEADERS`]), bodies are capped ([`MAX_BODY`]), a watch message is capped
//! ([`MAX_MESSAGE`]), every read and write has a timeout, and the JSON is parsed into typed
//! structs with defaults (the gateway leaves out fields at their zero value and writes int64
//! as strings). No parse panics: see the proptests at the end.
//!
//! Failover: a request goes to the endpoint that answered last; when it cannot connect or the
//! connection breaks, the next endpoint is tried, each once per request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Longest status line plus headers of a reply, in bytes.
pub const MAX_HEADERS: usize = 16 * 1024;
/// Largest reply body, in bytes (a range over a large prefix; keys are small).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest single message of a watch stream, in bytes.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// An error talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached, or each broke the connection.
    #[error("cannot reach the store at {endpoints}: {last}")]
    Unreachable { endpoints: String, last: String },
    /// etcd answered, but has no leader or timed out: no quorum.
    #[error("the store has no quorum; try again ({0})")]
    NoQuorum(String),
    /// The revision asked for was compacted away (a watch must re-list).
    #[error("revision compacted (now at {0})")]
    Compacted(i64),
    /// etcd refused the request.
    #[error("etcd error {code}: {message}")]
    Etcd { code: i64, message: String },
    /// What etcd sent is not a valid reply.
    #[error("invalid reply from etcd: {0}")]
    Protocol(String),
}

impl EtcdError {
    /// Whether trying the same request again later may succeed (no quorum, unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EtcdError::Unreachable { .. } | EtcdError::NoQuorum(_))
    }
}

pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

// ----- base64 (standard alphabet, padded) -----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on anything else.
pub fn b64decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// The key just after every key starting with `prefix` (a range's `range_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

// ----- the JSON the gateway sends, with defaults -----

mod wire {
    use serde::{Deserialize, Deserializer};

    /// An int64 the gateway writes as a string (or a number); absent is 0.
    pub fn i64s<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            S(String),
            N(i64),
        }
        match N::deserialize(d)? {
            N::N(n) => Ok(n),
            N::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Header {
        #[serde(deserialize_with = "i64s")]
        pub revision: i64,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Kv {
        pub key: String,
        pub value: String,
        #[serde(deserialize_with = "i64s")]
        pub create_revision: i64,
        #[serde(deserialize_with = "i64s")]
        pub mod_revision: i64,
        #[serde(deserialize_with = "i64s")]
        pub lease: i64,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Range {
        pub header: Header,
        pub kvs: Vec<Kv>,
        #[serde(deserialize_with = "i64s")]
        pub count: i64,
        pub more: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Txn {
        pub header: Header,
        pub succeeded: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Lease {
        pub header: Header,
        #[serde(rename = "ID", deserialize_with = "i64s")]
        pub id: i64,
        #[serde(rename = "TTL", deserialize_with = "i64s")]
        pub ttl: i64,
        pub error: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct KeepAlive {
        pub result: Lease,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Event {
        #[serde(rename = "type")]
        pub kind: String,
        pub kv: Kv,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct WatchResult {
        pub header: Header,
        pub created: bool,
        pub canceled: bool,
        #[serde(deserialize_with = "i64s")]
        pub compact_revision: i64,
        pub cancel_reason: String,
        pub events: Vec<Event>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct WatchMsg {
        pub result: Option<WatchResult>,
        pub error: Option<ErrorBody>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct ErrorBody {
        pub error: String,
        pub message: String,
        #[serde(deserialize_with = "i64s")]
        pub code: i64,
    }
}

/// A key and its value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl KeyValue {
    fn from_wire(kv: wire::Kv) -> Result<KeyValue> {
        let d = |what: &str, s: &str| {
            b64decode(s).ok_or_else(|| EtcdError::Protocol(format!("{what} is not base64")))
        };
        Ok(KeyValue {
            key: d("a key", &kv.key)?,
            value: d("a value", &kv.value)?,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        })
    }

    /// The key as text (keys are written by vswitch; others are shown lossily).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// A range's keys and the store's revision when it was read.
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    pub count: i64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete(KeyValue),
}

/// One compare of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key does not exist (its create revision is 0).
    Absent(Vec<u8>),
    /// The key's value is exactly this.
    ValueIs(Vec<u8>, Vec<u8>),
    /// The key was last changed at this revision.
    ModRevisionIs(Vec<u8>, i64),
}

/// One operation of a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
        /// Deletes every key with `key` as its prefix.
        prefix: bool,
    },
}

impl Compare {
    fn json(&self) -> serde_json::Value {
        match self {
            Compare::Absent(k) => serde_json::json!({
                "key": b64encode(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
            }),
            Compare::ValueIs(k, v) => serde_json::json!({
                "key": b64encode(k), "target": "VALUE", "result": "EQUAL", "value": b64encode(v)
            }),
            Compare::ModRevisionIs(k, r) => serde_json::json!({
                "key": b64encode(k), "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string()
            }),
        }
    }
}

impl Op {
    fn json(&self) -> serde_json::Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut p = serde_json::json!({"key": b64encode(key), "value": b64encode(value)});
                if *lease != 0 {
                    p["lease"] = serde_json::Value::String(lease.to_string());
                }
                serde_json::json!({ "request_put": p })
            }
            Op::Delete { key, prefix } => {
                let mut d = serde_json::json!({"key": b64encode(key)});
                if *prefix {
                    d["range_end"] = serde_json::Value::String(b64encode(&prefix_end(key)));
                }
                serde_json::json!({ "request_delete_range": d })
            }
        }
    }
}

// ----- HTTP/1.1 -----

/// A parsed HTTP reply head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
}

/// Reads a reply's status line and headers (at most [`MAX_HEADERS`] bytes).
pub fn read_head(r: &mut impl BufRead) -> Result<Head> {
    let mut total = 0usize;
    let mut line = Vec::new();
    let mut head: Option<Head> = None;
    loop {
        line.clear();
        let n = r
            .take((MAX_HEADERS - total.min(MAX_HEADERS)) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        total += n;
        if total > MAX_HEADERS {
            return Err(EtcdError::Protocol("reply headers too long".into()));
        }
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(EtcdError::Protocol(
                "connection closed in the reply head".into(),
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| EtcdError::Protocol("reply head is not text".into()))?
            .trim_end_matches(['\r', '\n']);
        match head.as_mut() {
            None => {
                let mut parts = text.splitn(3, ' ');
                let version = parts.next().unwrap_or("");
                let status = parts.next().and_then(|s| s.parse::<u16>().ok());
                match (version.starts_with("HTTP/1."), status) {
                    (true, Some(s)) => {
                        head = Some(Head {
                            status: s,
                            chunked: false,
                            content_length: None,
                        })
                    }
                    _ => {
                        return Err(EtcdError::Protocol(format!(
                            "not an HTTP status line: {:?}",
                            text.chars().take(80).collect::<String>()
                        )))
                    }
                }
            }
            Some(h) => {
                if text.is_empty() {
                    return Ok(head.unwrap_or(Head {
                        status: 0,
                        chunked: false,
                        content_length: None,
                    }));
                }
                if let Some((name, value)) = text.split_once(':') {
                    let (name, value) = (name.trim(), value.trim());
                    if name.eq_ignore_ascii_case("transfer-encoding") {
                        h.chunked = value.to_ascii_lowercase().contains("chunked");
                    } else if name.eq_ignore_ascii_case("content-length") {
                        h.content_length =
                            Some(value.parse().map_err(|_| {
                                EtcdError::Protocol("invalid Content-Length".into())
                            })?);
                    }
                }
            }
        }
    }
}

/// Reads one chunk of a chunked body into `out` (appending); `Ok(false)` at the last chunk.
/// `limit` bounds `out`'s length.
pub fn read_chunk(r: &mut impl BufRead, out: &mut Vec<u8>, limit: usize) -> Result<bool> {
    let mut line = Vec::new();
    r.take(1024).read_until(b'\n', &mut line).map_err(io_err)?;
    if line.last() != Some(&b'\n') {
        return Err(EtcdError::Protocol("bad chunk size line".into()));
    }
    let size = std::str::from_utf8(&line)
        .ok()
        .map(|s| s.trim().split(';').next().unwrap_or("").trim().to_string())
        .and_then(|s| usize::from_str_radix(&s, 16).ok())
        .ok_or_else(|| EtcdError::Protocol("bad chunk size".into()))?;
    if size > limit.saturating_sub(out.len()) {
        return Err(EtcdError::Protocol(format!(
            "reply larger than {limit} bytes"
        )));
    }
    let start = out.len();
    out.resize(start + size, 0);
    r.read_exact(out.get_mut(start..).unwrap_or_default())
        .map_err(io_err)?;
    let mut crlf = Vec::new();
    r.take(2).read_until(b'\n', &mut crlf).map_err(io_err)?;
    if size == 0 {
        // Trailers (etcd sends Grpc-Trailer-*), up to the empty line.
        let mut n = 0;
        while crlf.as_slice() != b"\r\n" && crlf.as_slice() != b"\n" && !crlf.is_empty() {
            crlf.clear();
            r.take(1024).read_until(b'\n', &mut crlf).map_err(io_err)?;
            n += 1;
            if n > 64 {
                return Err(EtcdError::Protocol("too many trailers".into()));
            }
        }
        return Ok(false);
    }
    Ok(true)
}

/// Reads a whole reply body after `head` (at most `limit` bytes).
pub fn read_body(r: &mut impl BufRead, head: &Head, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if head.chunked {
        while read_chunk(r, &mut out, limit)? {}
    } else if let Some(n) = head.content_length {
        if n > limit {
            return Err(EtcdError::Protocol(format!(
                "reply larger than {limit} bytes"
            )));
        }
        out.resize(n, 0);
        r.read_exact(&mut out).map_err(io_err)?;
    } else {
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(io_err)?;
        if out.len() > limit {
            return Err(EtcdError::Protocol(format!(
                "reply larger than {limit} bytes"
            )));
        }
    }
    Ok(out)
}

/// Reads one whole reply (head and body) from `r`.
pub fn read_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>)> {
    let head = read_head(r)?;
    let body = read_body(r, &head, MAX_BODY)?;
    Ok((head.status, body))
}

fn io_err(e: io::Error) -> EtcdError {
    EtcdError::Protocol(format!("reading the reply: {e}"))
}

/// Maps an error body (`{"error","message","code"}`) to an error.
fn error_of(status: u16, body: &[u8]) -> EtcdError {
    let e: wire::ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let msg = if e.message.is_empty() {
        e.error
    } else {
        e.message
    };
    classify(e.code, &msg).unwrap_or_else(|| EtcdError::Etcd {
        code: if e.code == 0 {
            i64::from(status)
        } else {
            e.code
        },
        message: msg.chars().take(300).collect(),
    })
}

/// The errors that mean "no quorum" or "compacted" by their message.
fn classify(_code: i64, msg: &str) -> Option<EtcdError> {
    let quorum = [
        "no leader",
        "request timed out",
        "leader changed",
        "timed out",
        "not capable",
        "too many requests",
    ];
    if quorum.iter().any(|q| msg.contains(q)) {
        return Some(EtcdError::NoQuorum(msg.chars().take(200).collect()));
    }
    if msg.contains("compacted") {
        return Some(EtcdError::Compacted(0));
    }
    None
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| EtcdError::Protocol(format!("{e}")))
}

// ----- the client -----

/// Extra headers of a watch request: the gRPC metadata `hasleader` (etcd's
/// `WithRequireLeader`), so that a member cut off from its leader ends the stream.
pub const WATCH_HEADERS: &str = "Grpc-Metadata-hasleader: true\r\n";

/// An HTTP/1.1 POST of JSON `body` to `path` with `extra` headers (each ending in CRLF).
pub fn request(ep: SocketAddr, path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {ep}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A blocking etcd v3 client over several endpoints.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<SocketAddr>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    /// Timeout of connecting, and of each request's reply.
    pub timeout: Duration,
}

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` (or `http://`, or bare `HOST:PORT` lists).
pub fn parse_endpoints(url: &str) -> Result<Vec<SocketAddr>, String> {
    let rest = url
        .strip_prefix("etcd://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let mut out = Vec::new();
    for ep in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ep = ep
            .strip_prefix("http://")
            .unwrap_or(ep)
            .trim_end_matches('/');
        let addr = ep
            .to_socket_addrs()
            .map_err(|e| format!("invalid store endpoint {ep:?}: {e} (expected HOST:PORT)"))?
            .next()
            .ok_or_else(|| format!("store endpoint {ep:?} resolves to nothing"))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(format!(
            "no endpoint in {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]"
        ));
    }
    Ok(out)
}

impl Client {
    /// A client of these endpoints (at least one).
    pub fn new(endpoints: Vec<SocketAddr>) -> Client {
        Client {
            endpoints,
            current: AtomicUsize::new(0),
            timeout: Duration::from_secs(3),
        }
    }

    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    fn names(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to the current endpoint, else each next one; returns the stream and its index.
    fn connect(&self) -> Result<(TcpStream, usize, SocketAddr)> {
        let n = self.endpoints.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no endpoints");
        for i in 0..n {
            let k = (start + i) % n;
            let Some(ep) = self.endpoints.get(k) else {
                break;
            };
            match TcpStream::connect_timeout(ep, self.timeout) {
                Ok(s) => {
                    self.current.store(k, Ordering::Relaxed);
                    return Ok((s, k, *ep));
                }
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.names(),
            last,
        })
    }

    /// Moves on to the next endpoint (the current one broke a connection).
    fn skip(&self, k: usize) {
        let n = self.endpoints.len().max(1);
        let _ = self
            .current
            .compare_exchange(k, (k + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The local address this host uses to reach the store (the underlay address, usually).
    pub fn local_addr(&self) -> Result<std::net::IpAddr> {
        let (s, _, _) = self.connect()?;
        s.local_addr().map(|a| a.ip()).map_err(io_err)
    }

    fn send(s: &mut TcpStream, ep: SocketAddr, path: &str, body: &str) -> io::Result<()> {
        s.write_all(request(ep, path, body, "").as_bytes())
    }

    /// POSTs `body` to `path`, failing over between endpoints; returns the 200 reply's body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>> {
        let body = body.to_string();
        let mut last = String::new();
        for _ in 0..self.endpoints.len().max(1) {
            let (mut s, k, ep) = self.connect()?;
            let _ = s.set_read_timeout(Some(self.timeout));
            let _ = s.set_write_timeout(Some(self.timeout));
            let r = Self::send(&mut s, ep, path, &body)
                .map_err(io_err)
                .and_then(|_| {
                    let mut r = BufReader::new(&s);
                    read_response(&mut r)
                });
            match r {
                Ok((200, body)) => return Ok(body),
                Ok((status, body)) => {
                    let e = error_of(status, &body);
                    if let EtcdError::NoQuorum(_) = e {
                        // Another member may have a leader (this one is cut off).
                        self.skip(k);
                        last = e.to_string();
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    // Timed out or broken: this member may be cut off or dead.
                    self.skip(k);
                    last = format!("{ep}: {e}");
                }
            }
        }
        Err(EtcdError::NoQuorum(last))
    }

    /// Every key in `[key, range_end)` (`range_end` empty: just `key`).
    pub fn range(&self, key: &[u8], range_end: &[u8], keys_only: bool) -> Result<RangeResult> {
        let mut req = serde_json::json!({"key": b64encode(key)});
        if !range_end.is_empty() {
            req["range_end"] = b64encode(range_end).into();
        }
        if keys_only {
            req["keys_only"] = true.into();
        }
        parse_range(&self.post("/v3/kv/range", &req)?)
    }

    /// Every key starting with `prefix`.
    pub fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResult> {
        self.range(prefix, &prefix_end(prefix), false)
    }

    /// One key, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.range(key, &[], false)?.kvs.into_iter().next())
    }

    /// Puts `key` (on `lease`, 0: none).
    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64> {
        let r = self.txn(
            &[],
            &[Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
            }],
        )?;
        Ok(r.1)
    }

    /// Deletes `key` (or every key with that prefix).
    pub fn delete(&self, key: &[u8], prefix: bool) -> Result<()> {
        let mut req = serde_json::json!({"key": b64encode(key)});
        if prefix {
            req["range_end"] = b64encode(&prefix_end(key)).into();
        }
        self.post("/v3/kv/deleterange", &req).map(|_| ())
    }

    /// Runs `ops` if every compare holds; returns whether they ran, and the revision.
    pub fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<(bool, i64)> {
        let req = serde_json::json!({
            "compare": compare.iter().map(Compare::json).collect::<Vec<_>>(),
            "success": ops.iter().map(Op::json).collect::<Vec<_>>(),
        });
        parse_txn(&self.post("/v3/kv/txn", &req)?)
    }

    /// Puts every `ops` if all keys of `absent` do not exist yet (create-if-absent).
    pub fn create(&self, absent: &[&[u8]], ops: &[Op]) -> Result<bool> {
        let c: Vec<Compare> = absent.iter().map(|k| Compare::Absent(k.to_vec())).collect();
        Ok(self.txn(&c, ops)?.0)
    }

    /// A new lease of `ttl` seconds; returns its id.
    pub fn lease_grant(&self, ttl: i64) -> Result<i64> {
        parse_lease_grant(&self.post(
            "/v3/lease/grant",
            &serde_json::json!({"TTL": ttl.to_string()}),
        )?)
    }

    /// Keeps `lease` alive once; returns its TTL left (0: the lease is gone).
    pub fn lease_keepalive(&self, lease: i64) -> Result<i64> {
        parse_keepalive(&self.post(
            "/v3/lease/keepalive",
            &serde_json::json!({"ID": lease.to_string()}),
        )?)
    }

    /// Revokes `lease` (its keys are deleted).
    pub fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.post(
            "/v3/lease/revoke",
            &serde_json::json!({"ID": lease.to_string()}),
        )
        .map(|_| ())
    }

    /// Watches every key starting with `prefix` from `start_revision`.
    pub fn watch(&self, prefix: &[u8], start_revision: i64) -> Result<Watch> {
        let req = serde_json::json!({"create_request": {
            "key": b64encode(prefix),
            "range_end": b64encode(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let (mut s, k, ep) = self.connect()?;
        let _ = s.set_write_timeout(Some(self.timeout));
        let _ = s.set_read_timeout(Some(self.timeout));
        let body = req.to_string();
        let fail = |e: EtcdError| {
            self.skip(k);
            e
        };
        // Without `hasleader`, a watch on a member that lost its leader stays open and silent;
        // with it, etcd ends the watch with "no leader" (and the caller lists again).
        s.write_all(request(ep, "/v3/watch", &body, WATCH_HEADERS).as_bytes())
            .map_err(io_err)
            .map_err(fail)?;
        let mut r = BufReader::new(s.try_clone().map_err(io_err)?);
        let head = read_head(&mut r).map_err(fail)?;
        if head.status != 200 {
            let body = read_body(&mut r, &head, 64 * 1024).unwrap_or_default();
            return Err(error_of(head.status, &body));
        }
        // Events arrive whenever they happen: no read timeout on the stream (a dead peer is
        // noticed by the keepalive; [`Watch`]'s drop shuts the socket).
        let _ = s.set_read_timeout(None);
        let (tx, rx) = mpsc::sync_channel(64);
        let chunked = head.chunked;
        std::thread::Builder::new()
            .name("vswitch-etcd-watch".into())
            .spawn(move || watch_reader(r, chunked, tx))
            .map_err(io_err)?;
        Ok(Watch { rx, sock: s, ep })
    }
}

/// Parses the body of a `/v3/kv/range` reply.
pub fn parse_range(body: &[u8]) -> Result<RangeResult> {
    let r: wire::Range = parse(body)?;
    Ok(RangeResult {
        revision: r.header.revision,
        count: r.count,
        kvs: r
            .kvs
            .into_iter()
            .map(KeyValue::from_wire)
            .collect::<Result<_>>()?,
    })
}

/// Parses the body of a `/v3/kv/txn` reply: whether the compares held, and the revision.
pub fn parse_txn(body: &[u8]) -> Result<(bool, i64)> {
    let r: wire::Txn = parse(body)?;
    Ok((r.succeeded, r.header.revision))
}

/// Parses the body of a `/v3/lease/grant` reply: the lease's id.
pub fn parse_lease_grant(body: &[u8]) -> Result<i64> {
    let r: wire::Lease = parse(body)?;
    if !r.error.is_empty() || r.id == 0 {
        return Err(EtcdError::Etcd {
            code: 0,
            message: format!(
                "lease not granted: {}",
                r.error.chars().take(200).collect::<String>()
            ),
        });
    }
    Ok(r.id)
}

/// Parses the body of a `/v3/lease/keepalive` reply: the TTL left (0: the lease is gone).
pub fn parse_keepalive(body: &[u8]) -> Result<i64> {
    // The gateway streams `{"result": ...}` (or an `{"error": ...}` line).
    let first = body
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or(b"{}");
    let m: wire::WatchMsg = parse(first).unwrap_or_default();
    if let Some(e) = m.error {
        return Err(classify(e.code, &e.message).unwrap_or(EtcdError::Etcd {
            code: e.code,
            message: e.message.chars().take(300).collect(),
        }));
    }
    let r: wire::KeepAlive = parse(first)?;
    Ok(r.result.ttl)
}

/// One message of a watch stream, parsed.
#[derive(Debug, Default)]
pub struct WatchBatch {
    pub revision: i64,
    pub created: bool,
    pub events: Vec<Event>,
}

/// Parses one message (a JSON line) of a watch stream.
pub fn parse_watch_message(line: &[u8]) -> Result<WatchBatch> {
    let m: wire::WatchMsg = parse(line)?;
    if let Some(e) = m.error {
        return Err(classify(e.code, &e.message).unwrap_or(EtcdError::Etcd {
            code: e.code,
            message: e.message.chars().take(300).collect(),
        }));
    }
    let r = m
        .result
        .ok_or_else(|| EtcdError::Protocol("a watch message without a result".into()))?;
    if r.compact_revision != 0 {
        return Err(EtcdError::Compacted(r.compact_revision));
    }
    if r.canceled {
        return Err(EtcdError::Etcd {
            code: 0,
            message: format!("watch canceled: {}", r.cancel_reason),
        });
    }
    let mut events = Vec::with_capacity(r.events.len());
    for e in r.events {
        let kv = KeyValue::from_wire(e.kv)?;
        events.push(match e.kind.as_str() {
            "" | "PUT" => Event::Put(kv),
            "DELETE" => Event::Delete(kv),
            other => {
                return Err(EtcdError::Protocol(format!(
                    "unknown event type {:?}",
                    other.chars().take(20).collect::<String>()
                )))
            }
        });
    }
    Ok(WatchBatch {
        revision: r.header.revision,
        created: r.created,
        events,
    })
}

/// Splits a watch body into messages: feeds `data` into `pending`, returns whole lines.
/// A line longer than [`MAX_MESSAGE`] is an error.
pub fn split_messages(pending: &mut Vec<u8>, data: &[u8]) -> Result<Vec<Vec<u8>>> {
    pending.extend_from_slice(data);
    let mut out = Vec::new();
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let rest = pending.split_off(i + 1);
        let line = std::mem::replace(pending, rest);
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(line);
        }
    }
    if pending.len() > MAX_MESSAGE {
        return Err(EtcdError::Protocol("watch message too long".into()));
    }
    Ok(out)
}

fn watch_reader(
    mut r: BufReader<TcpStream>,
    chunked: bool,
    tx: mpsc::SyncSender<Result<WatchBatch>>,
) {
    let mut pending = Vec::new();
    loop {
        let mut data = Vec::new();
        let more = if chunked {
            read_chunk(&mut r, &mut data, MAX_MESSAGE)
        } else {
            let mut buf = vec![0u8; 64 * 1024];
            match r.read(&mut buf) {
                Ok(0) => Ok(false),
                Ok(n) => {
                    buf.truncate(n);
                    data = buf;
                    Ok(true)
                }
                Err(e) => Err(io_err(e)),
            }
        };
        let msgs = more.and_then(|m| split_messages(&mut pending, &data).map(|l| (m, l)));
        match msgs {
            Ok((more, lines)) => {
                for l in lines {
                    let m = parse_watch_message(&l);
                    let stop = m.is_err();
                    if tx.send(m).is_err() || stop {
                        return;
                    }
                }
                if !more {
                    let _ = tx.send(Err(EtcdError::Protocol("the watch stream ended".into())));
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// A watch stream; dropping it closes the connection.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchBatch>>,
    sock: TcpStream,
    ep: SocketAddr,
}

impl Watch {
    /// The next message, waiting at most `timeout`: `Ok(None)` when none came.
    pub fn next(&self, timeout: Duration) -> Result<Option<WatchBatch>> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => r.map(Some),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(EtcdError::Protocol("the watch stream ended".into()))
            }
        }
    }

    /// The endpoint the stream is on.
    pub fn endpoint(&self) -> SocketAddr {
        self.ep
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        assert_eq!(b64encode(b"a"), "YQ==");
        assert_eq!(b64encode(b"ab"), "YWI=");
        assert_eq!(b64encode(b"abc"), "YWJj");
        assert_eq!(b64decode("YQ==").unwrap(), b"a");
        assert_eq!(b64decode("YWJj").unwrap(), b"abc");
        assert_eq!(b64decode("Y"), None);
        assert_eq!(b64decode("Y!=="), None);
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn a_chunked_reply_with_trailers_is_read_whole() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Trailer-Content-Type: x\r\n\r\n";
        let (status, body) = read_response(&mut Cursor::new(&raw[..])).unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
        let raw = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            read_response(&mut Cursor::new(&raw[..])).unwrap(),
            (400, b"abc".to_vec())
        );
    }

    #[test]
    fn oversized_replies_are_refused() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(read_response(&mut Cursor::new(raw.as_bytes())).is_err());
        let raw = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEADERS));
        assert!(read_response(&mut Cursor::new(raw.as_bytes())).is_err());
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert!(read_response(&mut Cursor::new(&raw[..])).is_err());
    }

    #[test]
    fn watch_messages_parse_with_defaults() {
        // As etcd 3.4 sends them: a PUT has no "type", int64s are strings, zeros are left out.
        let put = br#"{"result":{"header":{"revision":"2"},"events":[{"kv":{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1","value":"eA=="}}]}}"#;
        let b = parse_watch_message(put).unwrap();
        assert_eq!(b.revision, 2);
        let Event::Put(kv) = &b.events[0] else {
            panic!("{b:?}")
        };
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"a"[..], &b"x"[..])
        );
        let del = br#"{"result":{"header":{"revision":"3"},"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"3"}}]}}"#;
        assert!(matches!(
            &parse_watch_message(del).unwrap().events[0],
            Event::Delete(kv) if kv.key == b"a" && kv.value.is_empty()
        ));
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"3"}}"#;
        assert!(matches!(
            parse_watch_message(compacted),
            Err(EtcdError::Compacted(3))
        ));
        let created = br#"{"result":{"header":{"revision":"9"},"created":true}}"#;
        assert!(parse_watch_message(created).unwrap().created);
        let bad = br#"{"result":{"events":[{"kv":{"key":"!!"}}]}}"#;
        assert!(parse_watch_message(bad).is_err());
    }

    #[test]
    fn messages_are_split_across_chunks() {
        let mut p = Vec::new();
        assert!(split_messages(&mut p, b"{\"a\":").unwrap().is_empty());
        let l = split_messages(&mut p, b"1}\n{\"b\":2}\n{").unwrap();
        assert_eq!(l, vec![b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\n".to_vec()]);
        assert_eq!(p, b"{");
    }

    proptest! {
        #[test]
        fn the_reply_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_response(&mut Cursor::new(&data[..]));
            let mut prefixed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            prefixed.extend_from_slice(&data);
            let _ = read_response(&mut Cursor::new(&prefixed[..]));
            let mut out = Vec::new();
            let _ = read_chunk(&mut Cursor::new(&data[..]), &mut out, 4096);
        }

        #[test]
        fn the_watch_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut p = Vec::new();
            if let Ok(lines) = split_messages(&mut p, &data) {
                for l in lines {
                    let _ = parse_watch_message(&l);
                }
            }
            let _ = parse_watch_message(&data);
            let _ = b64decode(&String::from_utf8_lossy(&data));
        }

        #[test]
        fn json_shaped_watch_messages_never_panic(
            key in "[A-Za-z0-9+/=!]{0,12}",
            kind in "(PUT|DELETE|X|)",
            rev in "[0-9a-z-]{0,20}",
        ) {
            let m = format!(r#"{{"result":{{"header":{{"revision":"{rev}"}},"compact_revision":"{rev}","events":[{{"type":"{kind}","kv":{{"key":"{key}","value":"{key}","lease":"{rev}"}}}}]}}}}"#);
            let _ = parse_watch_message(m.as_bytes());
        }

        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert_eq!(b64decode(&b64encode(&data)).unwrap(), data);
        }
    }
}
