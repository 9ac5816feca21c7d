//! A remote VXLAN peer for overlay tests whose vswitch daemon runs in the host's namespace (the
//! Docker and CNI front ends need it there): "another host" is a namespace of the test, joined
//! to the host by a veth pair (the underlay, a /30 of its own), where Linux's own `vxlan` device
//! terminates the tunnel and carries the overlay address. It is the interop peer of
//! `tests/tests/overlay.rs` without a kernel bridge behind it: the address sits on the vxlan
//! device itself.

use crate::{sh, sh_ok, unique, Daemon, Netns};

/// A Linux VXLAN endpoint in a namespace of its own, reached from the host by a veth pair.
pub struct VxlanPeer {
    /// The peer host's namespace (its `ul0` and `vxlan0`).
    pub ns: Netns,
    /// The host end of the underlay veth.
    pub host_end: String,
    /// The host's underlay address: vswitch's `vtep`.
    pub local: String,
    /// The peer's underlay address: vswitch's `peers`.
    pub remote: String,
}

impl VxlanPeer {
    /// Underlay `UL.1/30` (host) -- `UL.2/30` (peer), `UL` like `10.70.241`; on the peer a
    /// `vxlan0` device of VNI `vni` on UDP port `port` towards `UL.1` with overlay address
    /// `inner` (a CIDR). The peer's `ul0` sends complete checksums, as a wire does (with TX
    /// checksum offload a veth would hand vswitch partial inner TCP checksums).
    pub fn new(ul: &str, vni: u32, port: u16, inner: &str) -> VxlanPeer {
        let ns = Netns::new(&unique("vxp"));
        let host_end = unique("vxu");
        let (local, remote) = (format!("{ul}.1"), format!("{ul}.2"));
        let peer = VxlanPeer {
            ns,
            host_end,
            local,
            remote,
        };
        let n = peer.ns.name.as_str();
        sh_ok(
            "ip",
            &[
                "link",
                "add",
                &peer.host_end,
                "type",
                "veth",
                "peer",
                "name",
                "ul0",
                "netns",
                n,
            ],
        );
        let host_cidr = format!("{}/30", peer.local);
        sh_ok("ip", &["addr", "add", &host_cidr, "dev", &peer.host_end]);
        sh_ok("ip", &["link", "set", &peer.host_end, "up"]);
        let ip = |args: &[&str]| {
            let mut a = vec!["-n", n];
            a.extend_from_slice(args);
            sh_ok("ip", &a);
        };
        ip(&["addr", "add", &format!("{}/30", peer.remote), "dev", "ul0"]);
        ip(&["link", "set", "ul0", "up"]);
        let _ = sh(
            "ip",
            &["netns", "exec", n, "ethtool", "-K", "ul0", "tx", "off"],
        );
        ip(&[
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "id",
            &vni.to_string(),
            "dstport",
            &port.to_string(),
            "local",
            &peer.remote,
            "remote",
            &peer.local,
            "dev",
            "ul0",
        ]);
        ip(&["addr", "add", inner, "dev", "vxlan0"]);
        ip(&["link", "set", "vxlan0", "up"]);
        peer
    }

    /// Runs a command in the peer's namespace.
    pub fn exec(&self, cmd: &[&str]) -> std::process::Output {
        self.ns.exec(cmd)
    }

    /// True when `ping` from the peer to `ip` gets a reply.
    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", ip])
            .status
            .success()
    }

    /// Asserts that daemon `d` learned the peer's `vxlan0` MAC on network `net` against this
    /// peer's VTEP (`vtep:REMOTE` in `vswitch fdb`), so frames from it came through the tunnel.
    pub fn assert_learned_by(&self, d: &Daemon, net: &str) {
        let link = sh_ok(
            "ip",
            &["-n", &self.ns.name, "-br", "link", "show", "vxlan0"],
        );
        let mac = link
            .split_whitespace()
            .nth(2)
            .expect("vxlan0's MAC")
            .to_string();
        let fdb = d.ok(&["fdb", net]);
        let line = fdb
            .lines()
            .find(|l| l.contains(&mac))
            .unwrap_or_else(|| panic!("{mac} not learned: {fdb}"));
        assert!(line.contains(&format!("vtep:{}", self.remote)), "{line}");
    }
}

impl Drop for VxlanPeer {
    fn drop(&mut self) {
        let _ = sh("ip", &["link", "del", &self.host_end]);
    }
}
