//! CIDR parsing with helpful errors, overlap, and Docker's default address pools.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::IpamError;

/// Parses a subnet such as `10.0.0.0/24`.
///
/// Unlike `Ipv4Net::from_str`, this refuses host bits (`10.0.0.5/24`) with an error that names
/// the network address to use, and says why a prefix is invalid. Surrounding spaces are ignored.
pub fn parse_subnet(input: &str) -> Result<Ipv4Net, IpamError> {
    parse_cidr("subnet", input)
}

/// Parses an ip range (`--ip-range`), a CIDR inside the subnet; same rules as [`parse_subnet`].
pub fn parse_ip_range(input: &str) -> Result<Ipv4Net, IpamError> {
    parse_cidr("ip range", input)
}

/// Parses an aux address argument `NAME=IPV4` (Docker's `--aux-address`).
pub fn parse_aux_address(input: &str) -> Result<(String, Ipv4Addr), IpamError> {
    let bad = |reason: String| IpamError::InvalidAux {
        input: input.to_owned(),
        reason,
    };
    let (name, ip) = input
        .split_once('=')
        .ok_or_else(|| bad("there is no '='".into()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    let ip = ip
        .trim()
        .parse::<Ipv4Addr>()
        .map_err(|_| bad(format!("{:?} is not an IPv4 address", ip.trim())))?;
    Ok((name.to_owned(), ip))
}

fn parse_cidr(what: &'static str, input: &str) -> Result<Ipv4Net, IpamError> {
    let bad = |reason: String| IpamError::InvalidCidr {
        what,
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 10.0.0.0/24".into()))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad(format!("{addr:?} is not an IPv4 address")))?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "prefix length {prefix:?} is not a number; it must be 0-32"
        )));
    }
    let prefix: u32 = prefix
        .parse()
        .map_err(|_| bad("prefix length must be 0-32".into()))?;
    if prefix > 32 {
        return Err(bad("prefix length must be 0-32".into()));
    }
    // prefix <= 32 was checked, so this cannot fail; map the error anyway (no panics).
    let net =
        Ipv4Net::new(addr, prefix as u8).map_err(|_| bad("prefix length must be 0-32".into()))?;
    check_no_host_bits(what, net)
}

/// Refuses a network value with host bits set, naming the network address to use.
pub(crate) fn check_no_host_bits(what: &'static str, net: Ipv4Net) -> Result<Ipv4Net, IpamError> {
    if net.addr() != net.network() {
        return Err(IpamError::HostBitsSet {
            what,
            input: net.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// True if the two networks share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Docker's default address pools, in the order they are tried: 172.17.0.0/16 through
/// 172.31.0.0/16 as /16s, then 192.168.0.0/16 split into /20s (192.168.0.0/20 ... 192.168.240.0/20).
pub fn default_subnets() -> impl Iterator<Item = Ipv4Net> {
    let big = (17u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let small = (0u8..16).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    big.chain(small)
}

/// The first of Docker's [`default_subnets`] that overlaps no `taken` pool and no host route.
///
/// `host_routes` are the destinations of the host's routes (the daemon reads them; this crate
/// does no I/O). Routes with prefix length 0 (default routes) are ignored, as Docker does:
/// they would rule out every subnet. Returns `None` when every default pool is in use.
pub fn next_default_subnet(taken: &[Ipv4Net], host_routes: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_subnets().find(|candidate| {
        !taken.iter().any(|t| overlaps(candidate, t))
            && !host_routes
                .iter()
                .filter(|r| r.prefix_len() > 0)
                .any(|r| overlaps(candidate, r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_valid_subnets() {
        assert_eq!(parse_subnet("10.0.0.0/24").unwrap(), net("10.0.0.0/24"));
        assert_eq!(
            parse_subnet(" 172.18.0.0/16 ").unwrap(),
            net("172.18.0.0/16")
        );
        assert_eq!(parse_subnet("0.0.0.0/0").unwrap(), net("0.0.0.0/0"));
        assert_eq!(parse_subnet("10.1.2.3/32").unwrap(), net("10.1.2.3/32"));
    }

    #[test]
    fn prefix_too_long_is_explained() {
        let e = parse_subnet("10.0.0.0/33").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid subnet "10.0.0.0/33": prefix length must be 0-32"#
        );
        let e = parse_subnet("10.0.0.0/999999999999").unwrap_err();
        assert!(e.to_string().contains("prefix length must be 0-32"), "{e}");
        let e = parse_ip_range("10.0.0.0/x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"invalid ip range "10.0.0.0/x""#),
            "{e}"
        );
    }

    #[test]
    fn host_bits_name_the_network() {
        let e = parse_subnet("10.0.0.5/24").unwrap_err();
        assert!(
            matches!(e, IpamError::HostBitsSet { network, .. } if network == net("10.0.0.0/24"))
        );
        assert_eq!(
            e.to_string(),
            r#"invalid subnet "10.0.0.5/24": host bits are set; use 10.0.0.0/24 instead"#
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0/24",
            "10.0.0.256/24",
            "/24",
            "10.0.0.0/",
            "a/b",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
        ] {
            let e = parse_subnet(bad).unwrap_err();
            assert!(matches!(e, IpamError::InvalidCidr { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn aux_parsing() {
        assert_eq!(
            parse_aux_address("router=10.0.0.254").unwrap(),
            ("router".to_owned(), Ipv4Addr::new(10, 0, 0, 254))
        );
        assert!(parse_aux_address("router").is_err());
        assert!(parse_aux_address("=10.0.0.1").is_err());
        let e = parse_aux_address("r=10.0.0").unwrap_err();
        assert!(e.to_string().contains("NAME=IPV4"), "{e}");
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
        assert!(overlaps(&net("10.0.0.0/24"), &net("10.0.0.0/24")));
        assert!(!overlaps(&net("10.0.0.0/24"), &net("10.0.1.0/24")));
        assert!(!overlaps(&net("10.0.0.0/25"), &net("10.0.0.128/25")));
    }

    #[test]
    fn default_pools_are_dockers() {
        let all: Vec<_> = default_subnets().collect();
        assert_eq!(all.len(), 15 + 16);
        assert_eq!(all[0], net("172.17.0.0/16"));
        assert_eq!(all[14], net("172.31.0.0/16"));
        assert_eq!(all[15], net("192.168.0.0/20"));
        assert_eq!(all[16], net("192.168.16.0/20"));
        assert_eq!(all[30], net("192.168.240.0/20"));
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!overlaps(a, b), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn default_selection_skips_taken_and_routes() {
        assert_eq!(next_default_subnet(&[], &[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            next_default_subnet(&[net("172.17.0.0/16")], &[]),
            Some(net("172.18.0.0/16"))
        );
        // A small pool inside a candidate rules the whole candidate out.
        assert_eq!(
            next_default_subnet(&[net("172.17.5.0/24")], &[net("172.18.3.0/24")]),
            Some(net("172.19.0.0/16"))
        );
        // A wide host route covering 172.16.0.0/12 skips all /16s.
        assert_eq!(
            next_default_subnet(&[], &[net("172.16.0.0/12")]),
            Some(net("192.168.0.0/20"))
        );
        // The default route is ignored.
        assert_eq!(
            next_default_subnet(&[], &[net("0.0.0.0/0")]),
            Some(net("172.17.0.0/16"))
        );
        // A home LAN on 192.168.1.0/24 skips the first /20 only.
        let taken: Vec<_> = default_subnets().take(15).collect();
        assert_eq!(
            next_default_subnet(&taken, &[net("192.168.1.0/24")]),
            Some(net("192.168.16.0/20"))
        );
        let all: Vec<_> = default_subnets().collect();
        assert_eq!(next_default_subnet(&all, &[]), None);
    }
}
