//! A small HTTP/1.1 request parser for the Docker plugin socket ([`super::docker`]): a request
//! line, headers and a `Content-Length` body, nothing else (no chunked bodies, no
//! continuation lines). Bounded: the head is at most [`MAX_HEAD`] bytes and the body
//! [`MAX_BODY`]; anything else is an error the caller answers and closes on. It reads untrusted
//! bytes through checked slices and never panics, whatever the input (a proptest and the
//! `http_request` fuzz target check this).

/// Longest request head (request line and headers) in bytes. Docker's heads are ~200 bytes.
pub const MAX_HEAD: usize = 8 << 10;
/// Longest body in bytes. Docker's largest (`CreateNetwork` with options) is about 1 KiB.
pub const MAX_BODY: usize = 1 << 20;
/// Most header lines.
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/NetworkDriver.Join`).
    pub path: String,
    pub body: Vec<u8>,
    /// False when the client asked to close (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`).
    pub keep_alive: bool,
}

/// Why the bytes are no request the socket serves; the status code to answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body of {0} bytes is longer than {MAX_BODY}")]
    BodyTooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported request: {0}")]
    Unsupported(&'static str),
}

impl HttpError {
    /// The HTTP status code and reason of the answer.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::BodyTooLarge(_) => (413, "Payload Too Large"),
            HttpError::Malformed(_) => (400, "Bad Request"),
            HttpError::Unsupported(_) => (501, "Not Implemented"),
        }
    }
}

/// Parses one request from the start of `buf`: `Ok(None)` while it is incomplete, else the
/// request and how many bytes of `buf` it used (a kept-alive connection's next request
/// follows).
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let window = buf.get(..buf.len().min(MAX_HEAD)).unwrap_or_default();
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| HttpError::Malformed("the head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(
            "the request line is not METHOD PATH VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("bad method"));
    }
    if !path.starts_with('/') {
        return Err(HttpError::Malformed("the path does not start with /"));
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Unsupported("only HTTP/1.0 and HTTP/1.1")),
    };
    let mut length: Option<usize> = None;
    for (i, h) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        let (name, value) = h
            .split_once(':')
            .ok_or(HttpError::Malformed("a header line without ':'"))?;
        if name.is_empty() || name.starts_with([' ', '\t']) {
            return Err(HttpError::Malformed("bad header name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = (value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty())
                .then(|| value.parse().ok())
                .flatten()
                .ok_or(HttpError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("two different Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Unsupported(
                "Transfer-Encoding (send a Content-Length body)",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in value.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(HttpError::BodyTooLarge(length));
    }
    let start = end + 4;
    let Some(body) = buf.get(start..start.saturating_add(length)) else {
        return Ok(None);
    };
    Ok(Some((
        Request {
            method: method.to_string(),
            path: path.to_string(),
            body: body.to_vec(),
            keep_alive,
        },
        start + length,
    )))
}

/// An answer: status line, the plugin protocol's content type, and `body`.
pub fn response(status: u16, reason: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_docker_request_and_the_next_one() {
        let one = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n{}";
        let mut buf = one.to_vec();
        buf.extend_from_slice(b"POST /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (r, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(
            (
                r.method.as_str(),
                r.path.as_str(),
                &r.body[..],
                r.keep_alive
            ),
            ("POST", "/Plugin.Activate", &b"{}"[..], true)
        );
        assert_eq!(used, one.len());
        let (r, used2) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!(
            (r.path.as_str(), r.body.len(), r.keep_alive),
            ("/x", 0, false)
        );
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn incomplete_then_complete() {
        let full = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(full).unwrap().is_some());
    }

    #[test]
    fn refusals() {
        let big = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse(big.as_bytes()),
            Err(HttpError::BodyTooLarge(MAX_BODY + 1))
        );
        assert_eq!(parse(&vec![b'a'; MAX_HEAD]), Err(HttpError::HeadTooLarge));
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked), Err(HttpError::Unsupported(_))));
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse(two), Err(HttpError::Malformed(_))));
        let sign = b"POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n";
        assert!(matches!(parse(sign), Err(HttpError::Malformed(_))));
        assert!(matches!(
            parse(b"GARBAGE\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    proptest! {
        /// Whatever the bytes: no panic, a used length within the input, and a body within
        /// the limit.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((r, used))) = parse(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert!(r.body.len() <= MAX_BODY);
            }
        }

        /// Near-valid requests (a valid head with mutated headers): same properties.
        #[test]
        fn never_panics_on_near_valid(
            headers in proptest::collection::vec("[ -~]{0,40}", 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = b"POST /NetworkDriver.Join HTTP/1.1\r\n".to_vec();
            for h in &headers {
                b.extend_from_slice(h.as_bytes());
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(&body);
            if let Ok(Some((r, used))) = parse(&b) {
                prop_assert!(used <= b.len());
                prop_assert!(r.body.len() <= body.len());
            }
        }
    }
}
