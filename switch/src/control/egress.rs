//! The control plane's side of networking beyond the host: published ports (`-p`), the
//! containers' resolv.conf, and the host's own port on each network (host access).

use super::error::{bail, err, Context, Result};
use crate::netns;
use crate::port::tap::TapPort;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

/// One published port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub port: u16,
    /// "tcp" or "udp".
    pub proto: String,
    pub network: String,
}

impl PortMapping {
    /// Docker's notation: `0.0.0.0:8080->80/tcp`.
    pub fn label(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.port, self.proto
        )
    }

    pub fn proto_number(&self) -> u8 {
        if self.proto == "udp" {
            17
        } else {
            6
        }
    }

    pub fn host_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.host_ip, self.host_port))
    }
}

/// Parses `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`.
pub fn parse_publish(spec: &str, network: &str) -> Result<PortMapping> {
    let bad = || {
        err!("invalid port mapping {spec:?}: expected [HOST_IP:]HOST_PORT:PORT[/tcp|/udp], e.g. 8080:80 or 127.0.0.1:5353:53/udp")
    };
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, "tcp"),
        Some((p, "udp")) => (p, "udp"),
        Some(_) => bail!("invalid port mapping {spec:?}: the protocol must be tcp or udp"),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, port) = match parts.as_slice() {
        [h, p] => (Ipv4Addr::UNSPECIFIED, *h, *p),
        [ip, h, p] => (
            if ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                ip.parse().map_err(|_| bad())?
            },
            *h,
            *p,
        ),
        _ => return Err(bad()),
    };
    let host_port: u16 = host_port.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        bail!("invalid port mapping {spec:?}: the container port cannot be 0");
    }
    Ok(PortMapping {
        host_ip,
        host_port,
        port,
        proto: proto.to_string(),
        network: network.to_string(),
    })
}

/// A bound host socket for a mapping.
#[derive(Debug)]
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Binds the host side of `m` (port 0 picks a free port and records it in `m`).
pub fn bind(m: &mut PortMapping) -> Result<Bound> {
    let addr = m.host_addr();
    let what = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            err!(
                "host port {}/{} on {} is already in use; choose another host port (-p OTHER:{})",
                m.host_port,
                m.proto,
                m.host_ip,
                m.port
            )
        } else {
            err!("cannot bind {addr}/{}: {e}", m.proto)
        }
    };
    let (b, local) = if m.proto == "udp" {
        let s = std::net::UdpSocket::bind(addr).map_err(what)?;
        let l = s.local_addr()?;
        (Bound::Udp(s), l)
    } else {
        let s = std::net::TcpListener::bind(addr).map_err(what)?;
        let l = s.local_addr()?;
        (Bound::Tcp(s), l)
    };
    m.host_port = local.port();
    Ok(b)
}

fn resolv_dir(container: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(container)
}

/// Marker line of the resolv.conf files vswitch writes (it only removes its own).
const MARK: &str = "# written by vswitch";

/// Writes `/etc/netns/NAME/resolv.conf` naming the gateway as the resolver; `ip netns exec`
/// and `vswitch exec` bind-mount it over /etc/resolv.conf.
pub fn write_resolv_conf(container: &str, gateway: Ipv4Addr) -> Result<()> {
    let dir = resolv_dir(container);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("resolv.conf");
    if let Ok(old) = std::fs::read_to_string(&path) {
        if !old.starts_with(MARK) {
            return Ok(()); // someone else's: leave it
        }
    }
    let text = format!("{MARK}: the gateway answers container names and forwards the rest\nnameserver {gateway}\noptions ndots:0\n");
    ipam::write_atomic(&path, text.as_bytes())
        .map_err(|e| err!("cannot write {}: {e}", path.display()))
}

/// Removes the resolv.conf written by [`write_resolv_conf`] (and the directory when empty).
pub fn remove_resolv_conf(container: &str) {
    let dir = resolv_dir(container);
    let path = dir.join("resolv.conf");
    if std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(MARK)) {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Owner name of the host's lease on a network.
pub const HOST_LEASE: &str = "(host)";

/// Creates the host's port on a network: a TAP in the host namespace carrying `ip/prefix`, so
/// the kernel routes the subnet to the switch and the host reaches containers by address (as
/// docker0 lets it). The TAP dies with the switch's descriptor, so nothing outlives the daemon.
pub fn host_port(name: &str, ip: Ipv4Addr, prefix: u8, mtu: u32) -> Result<TapPort> {
    let tap = TapPort::create(name).with_context(|| format!("cannot create host port {name}"))?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    let nl = netns::Netlink::new().context("cannot open netlink")?;
    nl.set_mtu(name, mtu)?;
    nl.add_address(name, ip, prefix)
        .with_context(|| format!("cannot give host port {name} the address {ip}/{prefix}"))?;
    nl.set_link_up(name)?;
    Ok(tap)
}

/// The address the host takes on a subnet: the highest usable one (so containers keep the
/// low addresses Docker would give them).
pub fn host_address(subnet: ipnet::Ipv4Net) -> Option<Ipv4Addr> {
    if subnet.prefix_len() > 29 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(subnet.broadcast()) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let m = parse_publish("8080:80", "n").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.port, m.proto.as_str()),
            (Ipv4Addr::UNSPECIFIED, 8080, 80, "tcp")
        );
        let m = parse_publish("127.0.0.1:5353:53/udp", "n").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.port, m.proto.as_str()),
            (Ipv4Addr::LOCALHOST, 5353, 53, "udp")
        );
        assert_eq!(m.label(), "127.0.0.1:5353->53/udp");
        assert!(parse_publish("80", "n").is_err());
        assert!(parse_publish("a:80", "n").is_err());
        assert!(parse_publish("8080:80/sctp", "n").is_err());
        assert!(parse_publish("1.2.3:8080:80", "n").is_err());
        assert!(parse_publish("8080:0", "n").is_err());
        assert!(parse_publish("70000:80", "n").is_err());
    }

    #[test]
    fn taken_port_is_a_clear_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut m = parse_publish(&format!("127.0.0.1:{port}:80"), "n").unwrap();
        let e = bind(&mut m).unwrap_err().to_string();
        assert!(e.contains("already in use"), "{e}");
        let mut m = parse_publish("127.0.0.1:0:80", "n").unwrap();
        let _b = bind(&mut m).unwrap();
        assert_ne!(m.host_port, 0);
    }

    #[test]
    fn host_address_is_the_top() {
        let s: ipnet::Ipv4Net = "10.1.0.0/24".parse().unwrap();
        assert_eq!(host_address(s), Some(Ipv4Addr::new(10, 1, 0, 254)));
        assert_eq!(host_address("10.1.0.0/30".parse().unwrap()), None);
    }
}
