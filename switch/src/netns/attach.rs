//! Attaching a container namespace to the switch: the high-level steps the daemon runs for
//! `vswitch run`, `network connect` and `attach`.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

use ipnet::Ipv4Net;

use super::error::{NetnsError, Result};
use super::netlink::{Netlink, VethPair};
use super::ns::open_netns_path;
use crate::wire::MacAddr;

/// How the interface inside the container is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Name inside the container (usually `eth0`).
    pub ifname: String,
    /// MAC address; `None` lets the kernel pick a random one.
    pub mac: Option<MacAddr>,
    /// IPv4 address of the container.
    pub ip: Ipv4Addr,
    /// Prefix length of the network (e.g. 16 for 172.17.0.0/16).
    pub prefix: u8,
    /// Default gateway (the switch's gateway address); `None`: no default route.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends; `None`: 1500.
    pub mtu: Option<u32>,
    /// Most segments in one GSO frame the container's TCP builds (`gso_max_segs` of its
    /// interface); `None`: the kernel's default.
    pub gso_max_segs: Option<u32>,
}

impl IfaceConfig {
    /// `eth0` with the given address, no fixed MAC, default MTU.
    pub fn eth0(ip: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> IfaceConfig {
        IfaceConfig {
            ifname: "eth0".into(),
            mac: None,
            ip,
            prefix,
            gateway,
            mtu: None,
            gso_max_segs: None,
        }
    }
}

/// The result of an attachment: what the switch needs to open its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedLink {
    /// Name of the end the switch serves (veth host end, or the TAP's original name).
    pub host_ifname: String,
    /// Its interface index in the switch's namespace (0 for a TAP, which has no host end).
    pub host_ifindex: u32,
    /// MAC address of the container's interface (the switch may install it as a static entry).
    pub container_mac: MacAddr,
}

/// Configures a link already inside the container namespace (handle `c`): `lo` up, MTU, MAC,
/// address, link up, default route.
fn configure_inside(c: &Netlink, cfg: &IfaceConfig) -> Result<MacAddr> {
    if c.link_exists("lo")? {
        c.set_link_up("lo")?;
    }
    if let Some(segs) = cfg.gso_max_segs {
        c.set_gso_max_segs(&cfg.ifname, segs)?;
    }
    c.add_address(&cfg.ifname, cfg.ip, cfg.prefix)?;
    c.set_link_up(&cfg.ifname)?;
    if let Some(gw) = cfg.gateway {
        c.add_default_route(gw)?;
    }
    c.link_mac(&cfg.ifname)
}

fn check(cfg: &IfaceConfig) -> Result<()> {
    if Ipv4Net::new(cfg.ip, cfg.prefix).is_err() {
        return Err(NetnsError::InvalidArgument(format!(
            "prefix length /{} is longer than 32",
            cfg.prefix
        )));
    }
    if let Some(mac) = cfg.mac {
        if !mac.is_learnable() {
            return Err(NetnsError::InvalidArgument(format!(
                "container MAC {mac} must be unicast and non-zero"
            )));
        }
    }
    Ok(())
}

/// Connects the namespace at `ns` with a veth pair: `host_ifname` stays in the caller's
/// namespace (up, for the switch to open), `cfg.ifname` is created directly inside `ns` and
/// configured (address, up, `lo` up, default route via the gateway).
///
/// On failure nothing is left behind: the pair is deleted.
pub fn attach_veth(ns: &Path, host_ifname: &str, cfg: &IfaceConfig) -> Result<AttachedLink> {
    check(cfg)?;
    let fd = open_netns_path(ns)?;
    let host = Netlink::new()?;
    host.create_veth_pair(&VethPair {
        host_name: host_ifname,
        peer_name: &cfg.ifname,
        peer_netns: Some(fd.as_fd()),
        peer_mac: cfg.mac,
        mtu: cfg.mtu,
    })?;
    let rest = || -> Result<AttachedLink> {
        host.set_link_up(host_ifname)?;
        let host_ifindex = host.link_index(host_ifname)?;
        let c = Netlink::in_netns(ns)?;
        let container_mac = configure_inside(&c, cfg)?;
        Ok(AttachedLink {
            host_ifname: host_ifname.to_string(),
            host_ifindex,
            container_mac,
        })
    };
    rest().inspect_err(|_| {
        let _ = host.delete_link(host_ifname);
    })
}

/// Removes a veth attachment by deleting its host end (the kernel removes the pair). Returns
/// `false` if there was no such link (already gone, e.g. the namespace was deleted).
pub fn detach(host_ifname: &str) -> Result<bool> {
    match Netlink::new()?.delete_link(host_ifname) {
        Ok(()) => Ok(true),
        Err(NetnsError::NoSuchLink(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// TAP mode: moves the existing TAP `tap_name` (opened by the switch, which keeps its file
/// descriptor) into the namespace at `ns`, renames it to `cfg.ifname` and configures it.
///
/// On failure the TAP may be left in the container namespace; it disappears when the switch
/// closes its descriptor (a non-persistent TAP lives as long as its fd).
pub fn adopt_tap_into(ns: &Path, tap_name: &str, cfg: &IfaceConfig) -> Result<AttachedLink> {
    check(cfg)?;
    let fd = open_netns_path(ns)?;
    let host = Netlink::new()?;
    // Set MTU and MAC while the link is still ours and down (it goes down on the move anyway).
    if let Some(mtu) = cfg.mtu {
        host.set_mtu(tap_name, mtu)?;
    }
    if let Some(mac) = cfg.mac {
        host.set_mac(tap_name, mac)?;
    }
    host.move_link_to_netns(tap_name, fd.as_fd())?;
    let c = Netlink::in_netns(ns)?;
    if tap_name != cfg.ifname {
        c.rename_link(tap_name, &cfg.ifname)?;
    }
    let container_mac = configure_inside(&c, cfg)?;
    Ok(AttachedLink {
        host_ifname: tap_name.to_string(),
        host_ifindex: 0,
        container_mac,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ns::run_in_netns;
    use super::super::ns::test_util::*;
    use super::*;

    #[test]
    fn attach_veth_configures_the_container_side() {
        if skip_unless_root() {
            return;
        }
        let host = TestNs::new("vswt-ah");
        let cont = TestNs::new("vswt-ac");
        let hname = unique("va");
        let mac = MacAddr([0x02, 0x42, 0x0a, 0x58, 0, 2]);
        let cfg = IfaceConfig {
            mac: Some(mac),
            mtu: Some(1400),
            gso_max_segs: Some(44),
            ..IfaceConfig::eth0(
                Ipv4Addr::new(10, 88, 0, 2),
                24,
                Some(Ipv4Addr::new(10, 88, 0, 1)),
            )
        };
        let cpath = cont.path();
        let att = run_in_netns(&host.path(), || attach_veth(&cpath, &hname, &cfg))
            .unwrap()
            .unwrap();
        assert_eq!(att.host_ifname, hname);
        assert_eq!(att.container_mac, mac);
        assert!(att.host_ifindex > 0);

        let addr = ip(&["-n", &cont.name, "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("inet 10.88.0.2/24 brd 10.88.0.255"), "{addr}");
        let detail = ip(&["-n", &cont.name, "-d", "link", "show", "dev", "eth0"]);
        assert!(detail.contains("gso_max_segs 44 "), "{detail}");
        let link = ip(&["-n", &cont.name, "-o", "link", "show", "dev", "eth0"]);
        assert!(link.contains(",UP"), "{link}");
        assert!(link.contains("mtu 1400"), "{link}");
        assert!(link.contains("02:42:0a:58:00:02"), "{link}");
        let lo = ip(&["-n", &cont.name, "-o", "link", "show", "dev", "lo"]);
        assert!(lo.contains(",UP"), "{lo}");
        let route = ip(&["-n", &cont.name, "-4", "route", "show", "default"]);
        assert!(route.contains("default via 10.88.0.1 dev eth0"), "{route}");
        let hlink = ip(&["-n", &host.name, "-o", "link", "show", "dev", &hname]);
        assert!(
            hlink.contains(",UP") && hlink.contains("mtu 1400"),
            "{hlink}"
        );
        assert!(hlink.contains(&format!("{}:", att.host_ifindex)), "{hlink}");

        // A second attachment with the same container name fails and leaves no host end.
        let h2 = unique("va");
        let e = run_in_netns(&host.path(), || attach_veth(&cpath, &h2, &cfg))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        let links = ip(&["-n", &host.name, "-o", "link"]);
        assert!(!links.contains(&h2), "{links}");

        // Detach removes both ends; a second detach reports that nothing was there.
        assert!(run_in_netns(&host.path(), || detach(&hname))
            .unwrap()
            .unwrap());
        let links = ip(&["-n", &cont.name, "-o", "link"]);
        assert!(!links.contains("eth0"), "{links}");
        assert!(!run_in_netns(&host.path(), || detach(&hname))
            .unwrap()
            .unwrap());
    }

    #[test]
    fn failed_configuration_rolls_back_the_pair() {
        if skip_unless_root() {
            return;
        }
        let host = TestNs::new("vswt-rh");
        let cont = TestNs::new("vswt-rc");
        let hname = unique("vb");
        // Gateway outside the subnet: the route cannot be added, the whole attach fails.
        let cfg = IfaceConfig::eth0(
            Ipv4Addr::new(10, 89, 0, 2),
            24,
            Some(Ipv4Addr::new(10, 1, 1, 1)),
        );
        let cpath = cont.path();
        let e = run_in_netns(&host.path(), || attach_veth(&cpath, &hname, &cfg))
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("adding route 0.0.0.0/0 via 10.1.1.1"),
            "{e}"
        );
        let links = ip(&["-n", &host.name, "-o", "link"]);
        assert!(!links.contains(&hname), "{links}");
        let links = ip(&["-n", &cont.name, "-o", "link"]);
        assert!(!links.contains("eth0"), "{links}");
        // Bad arguments are refused before anything is created.
        let bad = IfaceConfig {
            prefix: 40,
            ..cfg.clone()
        };
        assert!(matches!(
            attach_veth(&cpath, &hname, &bad),
            Err(NetnsError::InvalidArgument(_))
        ));
        let bad = IfaceConfig {
            mac: Some(MacAddr::BROADCAST),
            ..cfg
        };
        assert!(matches!(
            attach_veth(&cpath, &hname, &bad),
            Err(NetnsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn adopt_tap_moves_renames_and_configures() {
        if skip_unless_root() {
            return;
        }
        let host = TestNs::new("vswt-th");
        let cont = TestNs::new("vswt-tc");
        let tap = unique("vtap");
        // Delete the TAP wherever it ends up, even if an assertion fails.
        struct DelTap<'a>(&'a str, &'a str, &'a str);
        impl Drop for DelTap<'_> {
            fn drop(&mut self) {
                for (ns, dev) in [(self.0, self.2), (self.1, "eth0")] {
                    let _ = std::process::Command::new("ip")
                        .args(["-n", ns, "tuntap", "del", "dev", dev, "mode", "tap"])
                        .output();
                }
            }
        }
        let _guard = DelTap(&host.name, &cont.name, &tap);
        // A persistent TAP made by iproute2 stands in for the switch's own (tests may run ip).
        ip(&[
            "-n", &host.name, "tuntap", "add", "dev", &tap, "mode", "tap",
        ]);
        let mac = MacAddr([0x02, 0x42, 0x0a, 0x57, 0, 3]);
        let cfg = IfaceConfig {
            mac: Some(mac),
            mtu: Some(1450),
            ..IfaceConfig::eth0(
                Ipv4Addr::new(10, 87, 0, 3),
                16,
                Some(Ipv4Addr::new(10, 87, 0, 1)),
            )
        };
        let cpath = cont.path();
        let att = run_in_netns(&host.path(), || adopt_tap_into(&cpath, &tap, &cfg))
            .unwrap()
            .unwrap();
        assert_eq!(att.container_mac, mac);
        let link = ip(&["-n", &cont.name, "-o", "link", "show", "dev", "eth0"]);
        assert!(
            link.contains("mtu 1450") && link.contains("02:42:0a:57:00:03"),
            "{link}"
        );
        let addr = ip(&["-n", &cont.name, "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("inet 10.87.0.3/16"), "{addr}");
        let route = ip(&["-n", &cont.name, "-4", "route", "show", "default"]);
        assert!(route.contains("default via 10.87.0.1 dev eth0"), "{route}");
        let links = ip(&["-n", &host.name, "-o", "link"]);
        assert!(!links.contains(&tap), "{links}");
        // Unknown TAP.
        let e = run_in_netns(&host.path(), || adopt_tap_into(&cpath, "nosuchtap0", &cfg))
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, NetnsError::NoSuchLink(_)), "{e}");
    }
}
