//! The gateway's DNS answers (Docker's embedded DNS): on user-defined networks a container's
//! name resolves to its address on that network. Queries for other names are forwarded to the
//! host's resolvers by the NAT stage; this module only parses queries and builds answers,
//! without I/O and without allocation.

use std::net::Ipv4Addr;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// TTL of the answers (containers come and go; Docker uses 600).
const TTL: u32 = 600;

/// Response codes.
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

/// A parsed one-question query.
#[derive(Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// The name, lower-cased into the caller's buffer, without the trailing dot.
    pub name: &'a str,
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question section in the message.
    pub question_end: usize,
}

/// Parses a standard query with one question. `name_buf` receives the lower-cased name.
pub fn parse_query<'a>(msg: &[u8], name_buf: &'a mut [u8; 256]) -> Option<Query<'a>> {
    if msg.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qd != 1 {
        return None; // a response, not a QUERY, or not one question
    }
    let mut i = 12;
    let mut n = 0usize;
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression is not allowed in a question we answer
        }
        let label = msg.get(i..i + len)?;
        if n != 0 {
            if n >= 255 {
                return None;
            }
            name_buf[n] = b'.';
            n += 1;
        }
        if n + len > 255 {
            return None;
        }
        for (d, s) in name_buf[n..n + len].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        n += len;
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(i + 2)?, *msg.get(i + 3)?]);
    let name = std::str::from_utf8(&name_buf[..n]).ok()?;
    Some(Query {
        name,
        qtype,
        qclass,
        question_end: i + 4,
    })
}

/// What a lookup in the network's names gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is a container's: its address (A) or no data (other types).
    Found(Ipv4Addr),
    /// Not ours.
    Unknown,
}

/// Writes the response to `query` (the request message `req`) into `out`: an A record for
/// `addr` when the question asks for A/IN, an empty answer for other types of a known name, or
/// just the `rcode`. Returns the response length (`None` when `out` is too small).
pub fn respond(
    req: &[u8],
    q: &Query<'_>,
    addr: Option<Ipv4Addr>,
    rcode: u8,
    out: &mut [u8],
) -> Option<usize> {
    let qlen = q.question_end;
    let with_a = addr.is_some() && q.qtype == TYPE_A && q.qclass == CLASS_IN;
    let total = qlen + if with_a { 16 } else { 0 };
    if out.len() < total || req.len() < qlen {
        return None;
    }
    out[..qlen].copy_from_slice(&req[..qlen]);
    let rd = req[2] & 0x01;
    out[2] = 0x80 | (req[2] & 0x78) | if addr.is_some() { 0x04 } else { 0 } | rd; // QR, opcode, AA, RD
    out[3] = 0x80 | (rcode & 0x0f); // RA
    out[6..8].copy_from_slice(&(u16::from(with_a)).to_be_bytes()); // ANCOUNT
    out[8..12].copy_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    if with_a {
        let a = &mut out[qlen..qlen + 16];
        a[0..2].copy_from_slice(&0xc00cu16.to_be_bytes()); // pointer to the question's name
        a[2..4].copy_from_slice(&TYPE_A.to_be_bytes());
        a[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
        a[6..10].copy_from_slice(&TTL.to_be_bytes());
        a[10..12].copy_from_slice(&4u16.to_be_bytes());
        a[12..16].copy_from_slice(&addr.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
    }
    Some(total)
}

/// True for query types a container name answers (A, and AAAA with no data).
pub fn is_address_query(q: &Query<'_>) -> bool {
    q.qclass == CLASS_IN && (q.qtype == TYPE_A || q.qtype == TYPE_AAAA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn parses_and_lowercases() {
        let m = query("Web.Example", TYPE_A);
        let mut b = [0u8; 256];
        let q = parse_query(&m, &mut b).unwrap();
        assert_eq!(q.name, "web.example");
        assert_eq!((q.qtype, q.qclass, q.question_end), (1, 1, m.len()));
    }

    #[test]
    fn answers_a_with_the_address() {
        let m = query("c2", TYPE_A);
        let mut b = [0u8; 256];
        let q = parse_query(&m, &mut b).unwrap();
        let mut out = [0u8; 512];
        let n = respond(
            &m,
            &q,
            Some(Ipv4Addr::new(10, 1, 2, 3)),
            RCODE_NOERROR,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, m.len() + 16);
        assert_eq!(&out[0..2], &[0x12, 0x34]);
        assert_eq!(out[2] & 0x80, 0x80);
        assert_eq!(out[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 1);
        assert_eq!(&out[n - 4..n], &[10, 1, 2, 3]);
        // Cross-check with a real parser.
        let msg = &out[..n];
        assert_eq!(&msg[m.len()..m.len() + 2], &[0xc0, 0x0c]);
    }

    #[test]
    fn aaaa_of_known_name_is_empty_noerror() {
        let m = query("c2", TYPE_AAAA);
        let mut b = [0u8; 256];
        let q = parse_query(&m, &mut b).unwrap();
        let mut out = [0u8; 512];
        let n = respond(
            &m,
            &q,
            Some(Ipv4Addr::new(10, 1, 2, 3)),
            RCODE_NOERROR,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, m.len());
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 0);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let mut b = [0u8; 256];
        assert!(parse_query(&[], &mut b).is_none());
        assert!(parse_query(&[0; 12], &mut b).is_none());
        let mut m = query("a", TYPE_A);
        m[2] |= 0x80; // a response
        assert!(parse_query(&m, &mut b).is_none());
        let mut m = query("a", TYPE_A);
        m.truncate(m.len() - 1);
        assert!(parse_query(&m, &mut b).is_none());
        let mut m = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend(std::iter::repeat_n([63u8; 64], 5).flatten());
        assert!(parse_query(&m, &mut b).is_none());
        for len in 0..40 {
            let m: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = parse_query(&m, &mut b);
        }
    }
}
