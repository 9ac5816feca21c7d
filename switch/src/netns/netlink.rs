//! A synchronous rtnetlink (NETLINK_ROUTE) handle: links, veth pairs, addresses, routes.
//!
//! Messages are built and parsed with `netlink-packet-route` and sent over a blocking
//! `netlink-sys` socket; there is no async runtime. Every request carries `NLM_F_ACK`, and the
//! reply loop reads until the ACK (or, for dumps, `NLMSG_DONE`) of *that* request's sequence
//! number, so an error can never be mistaken for success or attributed to another request.
//! Extended ACKs are enabled, so the kernel's own explanation ("Invalid prefix for given prefix
//! length") is appended to error messages when it gives one.
//!
//! A socket belongs to the network namespace it was created in, for its whole life: use
//! [`Netlink::in_netns`] to get a handle for another namespace.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::error::{NetnsError, Result};
use super::ns::run_in_netns;
use crate::wire::MacAddr;

/// Receive buffer: larger than any message the kernel sends in one datagram (dumps use at most
/// 32 KiB per datagram).
const RECV_BUF: usize = 64 * 1024;
/// How long to wait for the kernel's reply before giving up.
const RECV_TIMEOUT_SECS: libc::time_t = 10;
/// Error ACK flags (`<linux/netlink.h>`): the echoed request is capped to its header / TLVs
/// follow it.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the extended ACK's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Linux's IFNAMSIZ minus the NUL.
const IFNAME_MAX: usize = 15;

/// One network interface as `list_links` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name.
    pub name: String,
    /// Interface index (unique within its namespace).
    pub index: u32,
    /// Hardware address, if the link has a 6-byte one.
    pub mac: Option<MacAddr>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`): for a veth, the peer is up too.
    pub lower_up: bool,
    /// Promiscuous mode (`IFF_PROMISC`).
    pub promiscuous: bool,
    /// Driver kind as `ip -d link` shows it (`veth`, `tun`, `macvlan`, ...); `None` for
    /// devices without rtnl link ops (`lo`, physical NICs).
    pub kind: Option<String>,
}

impl LinkInfo {
    fn from_message(m: &LinkMessage) -> LinkInfo {
        let mut li = LinkInfo {
            name: String::new(),
            index: m.header.index,
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            promiscuous: m.header.flags.contains(LinkFlags::Promisc),
            kind: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => li.name = n.clone(),
                LinkAttribute::Address(b) if b.len() == 6 => li.mac = Some(MacAddr::from_slice(b)),
                LinkAttribute::Mtu(v) => li.mtu = *v,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            li.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        li
    }
}

/// One IPv4 route of the main routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Route {
    /// Destination prefix (`0.0.0.0/0` for the default route).
    pub dst: Ipv4Net,
    /// Next hop, if the route goes through a gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
}

/// What to create with [`Netlink::create_veth_pair`].
#[derive(Debug, Clone, Copy)]
pub struct VethPair<'a> {
    /// Name of the end that stays in this handle's namespace.
    pub host_name: &'a str,
    /// Name of the other end.
    pub peer_name: &'a str,
    /// Namespace to create the peer in directly (no rename/move dance); `None`: here.
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// MAC address of the peer; `None`: random.
    pub peer_mac: Option<MacAddr>,
    /// MTU of both ends; `None`: the kernel default (1500).
    pub mtu: Option<u32>,
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(NetnsError::InvalidIfName(name.to_string()));
    }
    Ok(())
}

/// A NETLINK_ROUTE socket bound to one network namespace.
///
/// Requests are synchronous: each method sends one request and waits for its ACK. The handle is
/// `Send` (move it to the thread that uses it) but not `Sync`.
pub struct Netlink {
    sock: Socket,
    seq: Cell<u32>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

impl Netlink {
    /// Opens a handle on the calling thread's network namespace.
    pub fn new() -> Result<Netlink> {
        let op = "opening a NETLINK_ROUTE socket";
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| NetnsError::io(op, e))?;
        sock.bind_auto().map_err(|e| NetnsError::io(op, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NetnsError::io(op, e))?;
        // Best effort: older kernels lack these; errors then carry only the errno.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval that outlives the call and its size is passed; the
        // socket fd is owned by `sock`.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(NetnsError::io(op, io::Error::last_os_error()));
        }
        // Start from a non-zero sequence number derived from the port id, so replies to another
        // socket's requests could never match by accident.
        Ok(Netlink {
            sock,
            seq: Cell::new(std::process::id()),
        })
    }

    /// Opens a handle on the namespace at `ns` (`/run/netns/NAME`, `/proc/PID/ns/net`). The
    /// socket is created on a short-lived thread inside that namespace and stays bound to it.
    pub fn in_netns(ns: &Path) -> Result<Netlink> {
        run_in_netns(ns, Netlink::new)?
    }

    /// Sends one request and collects the messages of its reply until its ACK (or `DONE` for
    /// dumps). An error ACK becomes [`NetnsError::Netlink`] naming `op`. A dump that the kernel
    /// marks inconsistent (`NLM_F_DUMP_INTR`: the table changed meanwhile) is retried.
    fn request(
        &self,
        op: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (out, interrupted) = self.request_once(op, msg.clone(), flags)?;
            if !interrupted || attempts >= 3 {
                return Ok(out);
            }
        }
    }

    fn request_once(
        &self,
        op: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        hdr.sequence_number = seq;
        let mut nl = NetlinkMessage::new(hdr, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let sys_err = |e: io::Error| NetnsError::Netlink {
            op: op(),
            source: e,
            ext_ack: None,
        };
        self.sock.send(&buf, 0).map_err(sys_err)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rbuf.clear();
            let n = match self.sock.recv(&mut rbuf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NetnsError::Netlink {
                        op: op(),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no reply from the kernel within {RECV_TIMEOUT_SECS} s"),
                        ),
                        ext_ack: None,
                    })
                }
                Err(e) => return Err(sys_err(e)),
            };
            if n > rbuf.len() {
                return Err(NetnsError::Decode {
                    op: op(),
                    detail: format!("reply of {n} bytes truncated to {}", rbuf.len()),
                });
            }
            let mut off = 0;
            while off + 16 <= rbuf.len() {
                let len = match NetlinkBuffer::new_checked(&rbuf[off..]) {
                    Ok(b) => b.length() as usize,
                    Err(e) => {
                        return Err(NetnsError::Decode {
                            op: op(),
                            detail: e.to_string(),
                        })
                    }
                };
                let bytes = &rbuf[off..off + len];
                off += (len + 3) & !3;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
                    NetnsError::Decode {
                        op: op(),
                        detail: e.to_string(),
                    }
                })?;
                if m.header.sequence_number != seq {
                    // A late reply to an earlier request that timed out or failed mid-dump.
                    continue;
                }
                let msg_flags = m.header.flags;
                interrupted |= msg_flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None if !dump => return Ok((out, interrupted)),
                        None => {}
                        Some(code) => {
                            return Err(NetnsError::Netlink {
                                op: op(),
                                source: io::Error::from_raw_os_error(code.get().abs()),
                                ext_ack: ext_ack_message(msg_flags, &e.header),
                            })
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code != 0 {
                            return Err(NetnsError::Netlink {
                                op: op(),
                                source: io::Error::from_raw_os_error(d.code.abs()),
                                ext_ack: parse_ext_ack_tlvs(&d.extended_ack),
                            });
                        }
                        return Ok((out, interrupted));
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetnsError::Decode {
                            op: op(),
                            detail: "the kernel reported an overrun; retry".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Looks a link up by name.
    pub fn get_link(&self, name: &str) -> Result<LinkInfo> {
        validate_ifname(name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let r = self.request(
            &|| format!("looking up link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        );
        let msgs = map_nodev(r, name)?;
        msgs.iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })
            .ok_or_else(|| NetnsError::NoSuchLink(name.to_string()))
    }

    /// Whether a link of that name exists in this namespace.
    pub fn link_exists(&self, name: &str) -> Result<bool> {
        match self.get_link(name) {
            Ok(_) => Ok(true),
            Err(NetnsError::NoSuchLink(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The interface index of `name`.
    pub fn link_index(&self, name: &str) -> Result<u32> {
        Ok(self.get_link(name)?.index)
    }

    /// The MAC address of `name`.
    pub fn link_mac(&self, name: &str) -> Result<MacAddr> {
        self.get_link(name)?
            .mac
            .ok_or_else(|| NetnsError::InvalidArgument(format!("link {name} has no MAC address")))
    }

    /// Every link of this namespace.
    pub fn list_links(&self) -> Result<Vec<LinkInfo>> {
        let msgs = self.request(
            &|| "listing links".to_string(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair `host_name` <-> `peer_name`, the peer directly in the namespace
    /// `peer_netns` (if given). Both ends start down.
    pub fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        self.create_veth_pair(&VethPair {
            host_name,
            peer_name,
            peer_netns,
            peer_mac: None,
            mtu: None,
        })
    }

    /// Creates a veth pair with the peer's namespace, MAC and the MTU set in the same request.
    pub fn create_veth_pair(&self, p: &VethPair<'_>) -> Result<()> {
        validate_ifname(p.host_name)?;
        validate_ifname(p.peer_name)?;
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(p.peer_name.to_string()));
        if let Some(fd) = p.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        if let Some(mac) = p.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::IfName(p.host_name.to_string()));
        if let Some(mtu) = p.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            &|| format!("creating veth {}", p.host_name),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// `ip link add NAME link PARENT type macvlan mode bridge [netns NS]`: a macvlan in bridge
    /// mode on `parent`, created directly in `netns` if given (down, random MAC unless `mac`).
    pub fn create_macvlan(
        &self,
        name: &str,
        parent: &str,
        netns: Option<BorrowedFd<'_>>,
        mac: Option<MacAddr>,
    ) -> Result<()> {
        validate_ifname(name)?;
        let parent_index = self.link_index(parent)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Link(parent_index));
        if let Some(fd) = netns {
            m.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::MacVlan),
            NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]));
        self.request(
            &|| format!("creating macvlan {name} on {parent}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// RTM_SETLINK on the link `name`, after `fill` has set what changes.
    fn set_link(
        &self,
        name: &str,
        op: &dyn Fn() -> String,
        fill: impl FnOnce(&mut LinkMessage),
    ) -> Result<()> {
        let index = self.link_index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        fill(&mut m);
        map_nodev(self.request(op, RouteNetlinkMessage::SetLink(m), 0), name)?;
        Ok(())
    }

    fn set_flag(&self, name: &str, flag: LinkFlags, on: bool, what: &str) -> Result<()> {
        self.set_link(
            name,
            &|| format!("setting {what} {} on {name}", if on { "on" } else { "off" }),
            |m| {
                m.header.flags = if on { flag } else { LinkFlags::empty() };
                m.header.change_mask = flag;
            },
        )
    }

    /// `ip link set NAME up`.
    pub fn set_link_up(&self, name: &str) -> Result<()> {
        self.set_flag(name, LinkFlags::Up, true, "up")
    }

    /// `ip link set NAME down`.
    pub fn set_link_down(&self, name: &str) -> Result<()> {
        self.set_flag(name, LinkFlags::Up, false, "up")
    }

    /// `ip link set NAME promisc on|off` (macvlan parents, AF_PACKET readers of foreign MACs).
    pub fn set_promiscuous(&self, name: &str, on: bool) -> Result<()> {
        self.set_flag(name, LinkFlags::Promisc, on, "promisc")
    }

    /// `ip link set NAME mtu MTU`.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.set_link(name, &|| format!("setting mtu {mtu} on {name}"), |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    /// `ip link set NAME gso_max_segs N`.
    pub fn set_gso_max_segs(&self, name: &str, segs: u32) -> Result<()> {
        self.set_link(
            name,
            &|| format!("setting gso_max_segs {segs} on {name}"),
            |m| m.attributes.push(LinkAttribute::GsoMaxSegs(segs)),
        )
    }

    /// `ip link set NAME xdp... fd FD` (`fd` -1: off) with `XDP_FLAGS_*` `flags`; with
    /// `expected` (and `XDP_FLAGS_REPLACE` in `flags`) only if that program is the attached one.
    pub fn set_xdp(
        &self,
        name: &str,
        fd: std::os::fd::RawFd,
        flags: u32,
        expected: Option<std::os::fd::RawFd>,
    ) -> Result<()> {
        use netlink_packet_route::link::LinkXdp;
        self.set_link(
            name,
            &|| {
                if fd < 0 {
                    format!("detaching the XDP program of {name}")
                } else {
                    format!("attaching an XDP program to {name}")
                }
            },
            |m| {
                let mut x = vec![LinkXdp::Fd(fd), LinkXdp::Flags(flags)];
                if let Some(e) = expected {
                    x.push(LinkXdp::ExpectedFd(e as u32));
                }
                m.attributes.push(LinkAttribute::Xdp(x))
            },
        )
    }

    /// `ip link set NAME address MAC`.
    pub fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        self.set_link(name, &|| format!("setting address {mac} on {name}"), |m| {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
        })
    }

    /// `ip link set NAME name NEW`. Kernels before 6.2 refuse to rename a link that is up
    /// (`EBUSY`): rename before setting it up.
    pub fn rename_link(&self, name: &str, new_name: &str) -> Result<()> {
        validate_ifname(new_name)?;
        self.set_link(
            name,
            &|| format!("renaming link {name} to {new_name}"),
            |m| {
                m.attributes
                    .push(LinkAttribute::IfName(new_name.to_string()))
            },
        )
    }

    /// `ip link set NAME netns NS`: moves the link into the namespace `netns` (it goes down).
    pub fn move_link_to_netns(&self, name: &str, netns: BorrowedFd<'_>) -> Result<()> {
        self.set_link(
            name,
            &|| format!("moving link {name} to another network namespace"),
            |m| m.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd())),
        )
    }

    /// `ip link del NAME` (for a veth, the pair goes away).
    pub fn delete_link(&self, name: &str) -> Result<()> {
        let index = self.link_index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        let r = self.request(
            &|| format!("deleting link {name}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        );
        map_nodev(r, name)?;
        Ok(())
    }

    /// `ip addr add IP/PREFIX brd + dev IFNAME`.
    pub fn add_address(&self, ifname: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let net = Ipv4Net::new(ip, prefix).map_err(|_| {
            NetnsError::InvalidArgument(format!("prefix length /{prefix} is longer than 32"))
        })?;
        let index = self.link_index(ifname)?;
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.scope = AddressScope::Universe;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(net.broadcast()));
        }
        let r = self.request(
            &|| format!("adding address {ip}/{prefix} to {ifname}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        map_nodev(r, ifname)?;
        Ok(())
    }

    /// `ip route add default via GW`.
    pub fn add_default_route(&self, gw: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Net::default(), gw)
    }

    /// `ip route add DST via GW` in the main table. The kernel refuses a destination with host
    /// bits set (`EINVAL`) and a gateway that is not reachable on a connected subnet
    /// (`ENETUNREACH`).
    pub fn add_route(&self, dst: Ipv4Net, gw: Ipv4Addr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = dst.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        if dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst.addr())));
        }
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        self.request(
            &|| format!("adding route {dst} via {gw}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// The unicast IPv4 routes of the main table (what `ip route` shows). The daemon uses it to
    /// pick address pools that overlap no route of the host.
    pub fn list_ipv4_routes(&self) -> Result<Vec<Ipv4Route>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let msgs = self.request(
            &|| "listing IPv4 routes".to_string(),
            RouteNetlinkMessage::GetRoute(q),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in &msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.address_family != AddressFamily::Inet || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let mut table = u32::from(r.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) else {
                continue;
            };
            out.push(Ipv4Route { dst, gateway, oif });
        }
        Ok(out)
    }
}

/// Turns "no such device" from the kernel into [`NetnsError::NoSuchLink`].
fn map_nodev<T>(r: Result<T>, name: &str) -> Result<T> {
    match r {
        Err(NetnsError::Netlink { ref source, .. })
            if source.raw_os_error() == Some(libc::ENODEV) =>
        {
            Err(NetnsError::NoSuchLink(name.to_string()))
        }
        r => r,
    }
}

/// The extended-ACK text of an error message. `payload` is what follows the error code: the
/// echoed request (only its 16-byte header when `NLM_F_CAPPED`), then TLVs if
/// `NLM_F_ACK_TLVS`.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize
    };
    let start = (echoed + 3) & !3;
    parse_ext_ack_tlvs(payload.get(start..)?)
}

/// Finds `NLMSGERR_ATTR_MSG` in a run of netlink attributes.
fn parse_ext_ack_tlvs(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let v = &tlvs[4..len];
            let v = v.split(|&b| b == 0).next().unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        let adv = ((len + 3) & !3).min(tlvs.len());
        tlvs = &tlvs[adv..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::ns::test_util::*;
    use super::super::ns::{open_netns_path, run_in_netns};
    use super::*;
    use std::os::fd::AsFd;

    fn tlv(kind: u16, val: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(val);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn ext_ack_is_found_after_the_capped_header() {
        let mut p = vec![0u8; 16];
        p.extend(tlv(3, &[1, 2, 3, 4]));
        p.extend(tlv(NLMSGERR_ATTR_MSG, b"Invalid prefix\0"));
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Invalid prefix")
        );
        // Without the TLV flag nothing is read; garbage lengths give None, not a panic.
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
        assert_eq!(parse_ext_ack_tlvs(&[200, 0, 1, 0, b'x']), None);
        assert_eq!(parse_ext_ack_tlvs(&[0, 0, 1, 0]), None);
        // Uncapped: the whole echoed request (length in its first 4 bytes) is skipped.
        let mut p = vec![0u8; 24];
        p[..4].copy_from_slice(&24u32.to_ne_bytes());
        p.extend(tlv(NLMSGERR_ATTR_MSG, b"hi\0"));
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &p).as_deref(), Some("hi"));
    }

    #[test]
    fn ifnames_are_validated() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("vsw0123456789ab").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "vsw0123456789abc"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    /// A veth pair inside a scratch "host" namespace, the peer in a "container" namespace.
    #[test]
    fn veth_lifecycle_and_link_settings() {
        if skip_unless_root() {
            return;
        }
        let host = TestNs::new("vswt-h");
        let cont = TestNs::new("vswt-c");
        let cont_fd = open_netns_path(&cont.path()).unwrap();
        let hname = unique("vt");
        run_in_netns(&host.path(), || {
            let nl = Netlink::new().unwrap();
            nl.create_veth(&hname, "eth0", Some(cont_fd.as_fd()))
                .unwrap();
            // Duplicate: the kernel's EEXIST, named.
            let e = nl
                .create_veth(&hname, "eth9", Some(cont_fd.as_fd()))
                .unwrap_err();
            assert!(
                e.to_string().starts_with(&format!(
                    "netlink: creating veth {hname} failed: File exists"
                )),
                "{e}"
            );
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST));

            let li = nl.get_link(&hname).unwrap();
            assert_eq!(li.kind.as_deref(), Some("veth"));
            assert!(!li.up);
            assert_eq!(li.mtu, 1500);
            nl.set_mtu(&hname, 9000).unwrap();
            let mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 9]);
            nl.set_mac(&hname, mac).unwrap();
            nl.set_promiscuous(&hname, true).unwrap();
            let newname = unique("vr");
            nl.rename_link(&hname, &newname).unwrap();
            assert!(!nl.link_exists(&hname).unwrap());
            nl.set_link_up(&newname).unwrap();
            let li = nl.get_link(&newname).unwrap();
            assert_eq!(
                (li.mtu, li.mac, li.up, li.promiscuous),
                (9000, Some(mac), true, true)
            );
            assert_eq!(nl.link_mac(&newname).unwrap(), mac);
            assert_eq!(nl.link_index(&newname).unwrap(), li.index);
            assert!(nl.list_links().unwrap().iter().any(|l| l == &li));
            // iproute2 agrees.
            let shown = ip(&["-n", &host.name, "-o", "link", "show", &newname]);
            assert!(shown.contains("mtu 9000"), "{shown}");
            assert!(shown.contains("PROMISC"), "{shown}");
            assert!(shown.contains(&mac.to_string()), "{shown}");
            // The peer is in the container namespace, and goes away with the host end.
            let peer = Netlink::in_netns(&cont.path()).unwrap();
            assert!(peer.link_exists("eth0").unwrap());
            nl.delete_link(&newname).unwrap();
            assert!(!peer.link_exists("eth0").unwrap());
        })
        .unwrap();
    }

    #[test]
    fn macvlan_is_created_in_the_target_namespace() {
        if skip_unless_root() {
            return;
        }
        let host = TestNs::new("vswt-mh");
        let cont = TestNs::new("vswt-mc");
        let cont_fd = open_netns_path(&cont.path()).unwrap();
        let nl = Netlink::in_netns(&host.path()).unwrap();
        nl.create_veth("up0", "up1", None).unwrap();
        nl.set_promiscuous("up0", true).unwrap();
        let mac = MacAddr([0x02, 0x42, 0x0a, 0x56, 0, 4]);
        nl.create_macvlan("mv0", "up0", Some(cont_fd.as_fd()), Some(mac))
            .unwrap();
        let shown = ip(&["-n", &cont.name, "-d", "-o", "link", "show", "mv0"]);
        assert!(shown.contains("macvlan mode bridge"), "{shown}");
        assert!(shown.contains("02:42:0a:56:00:04"), "{shown}");
        let e = nl.create_macvlan("mv1", "nope0", None, None).unwrap_err();
        assert!(matches!(e, NetnsError::NoSuchLink(_)), "{e}");
    }

    #[test]
    fn unknown_links_and_bad_arguments_are_reported() {
        if skip_unless_root() {
            return;
        }
        let ns = TestNs::new("vswt-e");
        let nl = Netlink::in_netns(&ns.path()).unwrap();
        for r in [
            nl.set_link_up("nope0"),
            nl.delete_link("nope0"),
            nl.add_address("nope0", Ipv4Addr::new(10, 0, 0, 1), 24),
        ] {
            let e = r.unwrap_err();
            assert_eq!(
                e.to_string(),
                "netlink: no link named \"nope0\" in this network namespace"
            );
        }
        assert!(matches!(
            nl.link_index("nope0"),
            Err(NetnsError::NoSuchLink(_))
        ));
        let e = nl
            .add_address("lo", Ipv4Addr::new(10, 0, 0, 1), 33)
            .unwrap_err();
        assert!(matches!(e, NetnsError::InvalidArgument(_)), "{e}");
        // No route to the gateway: the kernel says so.
        let e = nl
            .add_default_route(Ipv4Addr::new(10, 0, 0, 1))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("netlink: adding route 0.0.0.0/0 via 10.0.0.1 failed:"),
            "{e}"
        );
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
        // Host bits set in the destination: EINVAL with the kernel's own explanation.
        // (On lo the subnet route would go to the local table: use a veth.)
        nl.create_veth("vx0", "vx1", None).unwrap();
        nl.set_link_up("vx1").unwrap();
        nl.set_link_up("vx0").unwrap();
        nl.add_address("vx0", Ipv4Addr::new(10, 9, 0, 1), 24)
            .unwrap();
        let e = nl
            .add_route("10.8.0.1/16".parse().unwrap(), Ipv4Addr::new(10, 9, 0, 2))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(e.to_string().contains("kernel: "), "{e}");
        // A valid route appears in the listing.
        nl.add_route("10.8.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 9, 0, 2))
            .unwrap();
        let routes = nl.list_ipv4_routes().unwrap();
        let vx0 = nl.link_index("vx0").unwrap();
        assert!(
            routes.contains(&Ipv4Route {
                dst: "10.8.0.0/16".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 9, 0, 2)),
                oif: Some(vx0),
            }),
            "{routes:?}"
        );
        assert!(
            routes
                .iter()
                .any(|r| r.dst == "10.9.0.0/24".parse().unwrap()),
            "{routes:?}"
        );
    }
}
