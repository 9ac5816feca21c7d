//! Harnesses for the fuzz targets (`switch/fuzz/`, libFuzzer through `cargo fuzz`) and for the
//! "never panics on arbitrary input" property tests: each takes raw bytes, reads them as the
//! untrusted input of one part of the switch, and runs that part. A harness returns normally
//! on every input; it panics only where it finds a bug: a panic in the code under test, or a
//! broken invariant checked here (an inner frame outside its datagram, a reply that does not
//! parse, a coalesced stream that differs from its segments).
//!
//! The same functions replay the committed corpora in `cargo test` (`switch/tests/fuzz_corpus.rs`),
//! so a regression is caught on stable Rust too.
//!
//! Nothing here sends traffic beyond loopback: the worker's NAT stage only serves `--internal`
//! networks (no host sockets), and the tunnel ports live on 127.0.0.0/8.

use crate::batch::{Batch, VnetHdr, GSO_SLOT, MTU_SLOT};
use crate::gateway::GatewayCommand;
use crate::guard::{FloodLimit, PortPolicy, PortSecurity};
use crate::pipeline::{PipelineConfig, PortRole};
use crate::port::mem::MemPort;
use crate::port::vxlan::{PeerSpec, VxlanPort};
use crate::port::PortCaps;
use crate::wire::{self, gso, too_big, MacAddr, NetworkId, PortId};
use crate::worker::{Command, ManualWorker};
use std::net::{Ipv4Addr, SocketAddrV4};

mod nat_tcp;
pub use nat_tcp::nat_tcp;

/// Reads an input front to back; past its end every read gives zeros (or nothing).
#[derive(Debug)]
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    /// The next two bytes, little endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` next bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A virtio-net header, any field any value.
    pub fn vnet(&mut self) -> VnetHdr {
        VnetHdr {
            flags: self.u8(),
            gso_type: self.u8(),
            hdr_len: self.u16(),
            gso_size: self.u16(),
            csum_start: self.u16(),
            csum_offset: self.u16(),
        }
    }

    /// A frame: a 2-byte length, then that many bytes (fewer at the end of the input).
    pub fn frame(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
}

/// Network 1: a user-defined bridge network with its gateway, DNS names and NAT stage
/// (`--internal`). Network 2: a second network, reached untagged or tagged (VLAN 10) on a
/// trunk.
const NET1: u16 = 1;
const NET2: u16 = 2;
const GW1: [u8; 6] = [0x02, 0x42, 0, 0, 0, 1];
const GW2: [u8; 6] = [0x02, 0x42, 0, 0, 0, 2];

/// Ports of the worker round: (id, role, exchanges vnet headers).
fn worker_ports() -> [(u16, PortRole, bool); 5] {
    [
        (
            1,
            PortRole::Access {
                network: NetworkId(NET1),
            },
            true,
        ),
        (
            2,
            PortRole::Access {
                network: NetworkId(NET1),
            },
            false,
        ),
        (
            3,
            PortRole::Access {
                network: NetworkId(NET2),
            },
            true,
        ),
        (
            4,
            PortRole::Trunk {
                native: Some(NetworkId(NET1)),
                vlans: vec![(10, NetworkId(NET2)), (4095, NetworkId(NET2))],
            },
            true,
        ),
        (
            5,
            PortRole::Trunk {
                native: None,
                vlans: vec![(10, NetworkId(NET1)), (20, NetworkId(NET2))],
            },
            false,
        ),
    ]
}

/// A whole pipeline round of a worker (classify, learn, look up, re-tag, the gateway's ARP,
/// ICMP, DNS and NAT stage, TX) over batches of arbitrary frames with arbitrary vnet headers,
/// received on five ports of two networks. Input: per frame, one byte choosing the ingress
/// port, a 10-byte vnet header, a 2-byte length and the frame.
/// Returns the worker's counters afterwards (`None` if it could not be set up).
pub fn worker_round(data: &[u8]) -> Option<crate::worker::Snapshot> {
    let cfg = PipelineConfig {
        fdb_capacity: 256,
        fdb_max_per_network: 128,
        fdb_max_per_port: 64,
        ..PipelineConfig::default()
    };
    RIG.with(|rig| {
        let mut rig = rig.borrow_mut();
        if rig.is_none() {
            *rig = Rig::new(cfg);
        }
        let rig = rig.as_mut()?;
        let mut input = Input::new(data);
        let mut queued = 0;
        while !input.is_empty() {
            let port = usize::from(input.u8()) % rig.handles.len();
            let vnet = input.vnet();
            let frame = input.frame();
            inspect_frame(frame);
            rig.handles[port].push_rx_vnet(frame, vnet);
            queued += 1;
            // A round every 70 frames: batches of 64 and a remainder.
            if queued % 70 == 0 {
                rig.w.run_until_idle(16);
            }
        }
        rig.w.run_until_idle(16);
        let snap = rig.w.snapshot();
        assert!(snap.fdb.len() <= 256, "the MAC table keeps its bound");
        // The next input starts with no learned MAC and no queued frame (the ports and their
        // endpoints stay: rebuilding them per input made the target ten times slower).
        for (id, _, _) in worker_ports() {
            rig.w.flush_port_macs(PortId(id));
        }
        for h in &rig.handles {
            h.clear_sent();
            assert_eq!(h.rx_pending(), 0, "every frame was read");
        }
        Rig::add_static(&mut rig.w);
        Some(snap)
    })
}

thread_local! {
    static RIG: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
}

/// The worker of [`worker_round`], built once per thread (a worker's batches take megabytes:
/// building one per input would make the fuzzer a hundred times slower).
struct Rig {
    w: ManualWorker,
    handles: Vec<crate::port::mem::MemHandle>,
}

impl Rig {
    fn new(cfg: PipelineConfig) -> Option<Rig> {
        let mut w = ManualWorker::new(cfg, true).ok()?;
        for (id, gw, ip, subnet) in [
            (NET1, GW1, Ipv4Addr::new(10, 88, 0, 1), "10.88.0.0/24"),
            (NET2, GW2, Ipv4Addr::new(10, 89, 0, 1), "10.89.0.0/24"),
        ] {
            w.command(Command::AddNetwork {
                id: NetworkId(id),
                gateway: Some((MacAddr(gw), ip)),
            });
            w.command(Command::Gateway(GatewayCommand::Network {
                id: NetworkId(id),
                mtu: 1500,
                internal: true,
                subnet: subnet.parse().ok(),
            }));
        }
        let handles = Self::attach(&mut w)?;
        Some(Rig { w, handles })
    }

    /// Adds the ports, their endpoints (addresses and DNS names) and a static MAC.
    fn attach(w: &mut ManualWorker) -> Option<Vec<crate::port::mem::MemHandle>> {
        let mut handles = Vec::new();
        for (id, role, vnet) in worker_ports() {
            let port = MemPort::new(&format!("p{id}"), 80).with_caps(PortCaps { vnet_hdr: vnet });
            handles.push(port.handle());
            // The access ports are containers' ports: secured as their endpoints below, and
            // storm-controlled.
            let policy = match id {
                1..=3 => PortPolicy {
                    security: Some(PortSecurity {
                        mac: MacAddr([0x02, 0x42, 10, 0, id as u8, id as u8 + 1]),
                        ipv4: Ipv4Addr::new(10, 87 + if id == 3 { 2 } else { 1 }, 0, id as u8 + 1),
                    }),
                    flood: Some(FloodLimit {
                        pps: 1000,
                        burst: 20,
                    }),
                },
                _ => PortPolicy::default(),
            };
            w.add_port_with(PortId(id), Box::new(port), role, policy)
                .ok()?;
        }
        for (port, last, name) in [(1u16, 2u8, "web"), (2, 3, "db"), (3, 4, "cache")] {
            let net = if port == 3 { NET2 } else { NET1 };
            w.command(Command::Gateway(GatewayCommand::Endpoint {
                net: NetworkId(net),
                ip: Ipv4Addr::new(10, 87 + net as u8, 0, last),
                mac: MacAddr([0x02, 0x42, 10, 0, port as u8, last]),
                port: PortId(port),
                vnet: false,
                name: Some(name.into()),
            }));
        }
        Self::add_static(w);
        Some(handles)
    }

    /// A static MAC on port 1.
    fn add_static(w: &mut ManualWorker) {
        w.command(Command::AddStatic {
            network: NetworkId(NET1),
            mac: MacAddr([0x02, 0x42, 10, 0, 1, 0x99]),
            port: PortId(1),
        });
    }
}

/// The tunnel's receive side: one datagram from anyone on the underlay, with an arbitrary
/// `UDP_GRO` segment size, through recognition of whole tunnel GSO packets, coalescing or
/// splitting, and decapsulation. Input: 2-byte segment size, 1-byte source (one of two peers
/// or a stranger), then the UDP payload.
pub fn tunnel_rx(data: &[u8]) {
    let mut input = Input::new(data);
    let gso = usize::from(input.u16());
    let src = match input.u8() % 3 {
        0 => Ipv4Addr::new(127, 0, 0, 2),
        1 => Ipv4Addr::new(127, 0, 0, 3),
        _ => Ipv4Addr::new(127, 0, 0, 4),
    };
    let mut payload = input.bytes(usize::MAX).to_vec();
    with_tunnel_port(|port| take(port, &mut payload, gso, src));
}

fn take(port: &mut VxlanPort, payload: &mut [u8], gso: usize, src: Ipv4Addr) {
    let len = payload.len();
    if let Some(t) = port.take_datagram(payload, gso, src) {
        assert!(t.len <= len, "frame within the datagram");
        let d = &t.decapped;
        assert!(
            d.inner_offset + d.inner_len <= t.len,
            "inner frame within the datagram"
        );
        assert!(
            t.vport == PortId(11) || t.vport == PortId(12),
            "a known virtual port"
        );
        check_gso_frame(
            &payload[d.inner_offset..d.inner_offset + d.inner_len],
            &t.vnet,
        );
    }
    with_scratch(|sc| {
        port.take_split(&mut sc.split);
        for i in 0..sc.split.len() {
            assert!(sc.split.meta(i).tag == 11 || sc.split.meta(i).tag == 12);
        }
    });
}

thread_local! {
    static TUNNEL: std::cell::RefCell<Option<VxlanPort>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on this thread's tunnel port ([`tunnel_port`], opened once: opening a socket per
/// input would make the fuzzer a hundred times slower). Its split-off frames are cleared
/// first, so nothing of one input is left for the next but counters.
fn with_tunnel_port(f: impl FnOnce(&mut VxlanPort)) {
    TUNNEL.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_none() {
            *t = tunnel_port();
        }
        if let Some(port) = t.as_mut() {
            with_scratch(|sc| {
                while {
                    sc.split.clear();
                    port.take_split(&mut sc.split);
                    !sc.split.is_empty()
                } {}
            });
            f(port);
        }
    });
}

/// A tunnel port on loopback with peers 127.0.0.2 (VNI 100, virtual port 11) and 127.0.0.3
/// (VNI 200, virtual port 12). Nothing is sent to them unless a harness sends.
fn tunnel_port() -> Option<VxlanPort> {
    let mut port = VxlanPort::open(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).ok()?;
    for (vport, network, vni, last) in [(11u16, NET1, 100u32, 2u8), (12, NET2, 200, 3)] {
        let peer = PeerSpec {
            network: NetworkId(network),
            vni: encap::Vni::new(vni)?,
            remote: Ipv4Addr::new(127, 0, 0, last),
            mtu: 1450,
            limit: 1450,
        };
        port.add_peer(PortId(vport), peer).ok()?;
    }
    Some(port)
}

/// An inner frame the tunnel hands on as GSO must be one the GSO code can cut again.
fn check_gso_frame(frame: &[u8], vnet: &VnetHdr) {
    if vnet.is_gso() {
        with_scratch(|sc| {
            // Errors are fine (an inner frame may be of a kind segmentation refuses); panics
            // not.
            let _ = gso::segment(frame, vnet, 8, &mut sc.segments);
        });
    }
}

/// Buffers the tunnel harnesses reuse: a worker's batches take megabytes, and allocating
/// (and, under the address sanitizer, poisoning) them per input made those targets spend most
/// of their time in the allocator.
struct Scratch {
    segments: Vec<u8>,
    split: Batch,
    gso: Batch,
    replies: Batch,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's scratch buffers (batches cleared). Not re-entrant: `f` must not
/// call it again.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let sc = s.get_or_insert_with(|| Scratch {
            segments: vec![0u8; 256 * 1024],
            split: Batch::new(MTU_SLOT),
            gso: Batch::new(GSO_SLOT),
            replies: Batch::new(2048),
        });
        sc.split.clear();
        sc.gso.clear();
        sc.replies.clear();
        f(sc)
    })
}

/// The tunnel's send side for one frame with an arbitrary vnet header: the path-MTU check and
/// its ICMP reply, software segmentation, the tunnel TAP's vnet header, and a real send to a
/// peer on loopback. Input: 1-byte choice of limit, 10-byte vnet header, then the frame.
pub fn tunnel_tx(data: &[u8]) {
    let mut input = Input::new(data);
    let mtu = [1450usize, 1280, 576, 68, 9000][usize::from(input.u8()) % 5];
    let vnet = input.vnet();
    let frame = input.bytes(usize::MAX);
    match too_big::check(frame, &vnet, mtu) {
        too_big::Fit::Reply => {
            let mut out = [0u8; 2048];
            if let Some(n) = too_big::reply(frame, mtu as u32, &mut out) {
                assert!(n <= out.len());
                let eth = wire::EthernetFrame::new_checked(&out[..n]).expect("reply parses");
                assert_eq!(eth.dst_addr().0, frame[6..12], "reply to the sender");
            }
        }
        too_big::Fit::Fits | too_big::Fit::Drop => {}
    }
    let _ = crate::port::vxlan_tap::tunnel_vnet(frame, &vnet);
    with_scratch(|sc| cut_and_merge(frame, &vnet, &mut sc.segments));
    with_tunnel_port(|port| {
        with_scratch(|sc| {
            if sc.gso.push(frame, vnet) {
                let sent = port.send_to_vtep(&sc.gso, &[0], PortId(11), &mut sc.replies);
                assert!(sent.sent + sent.too_big <= 1);
            }
        })
    });
}

/// Software segmentation of `frame` into `out`; a TCP frame cut into two or more segments
/// must coalesce back into the same payload, or not at all.
fn cut_and_merge(frame: &[u8], vnet: &VnetHdr, out: &mut [u8]) {
    if let Ok(s) = gso::segment(frame, vnet, 8, out) {
        assert!(s.total() <= out.len());
        assert!(s.count == 0 || s.last <= s.stride);
        if s.count >= 2
            && vnet.gso_type & !crate::batch::VNET_GSO_ECN == crate::batch::VNET_GSO_TCPV4
        {
            // What was cut must coalesce back into the same payload, or not at all.
            let mut buf = out[..s.total()].to_vec();
            if let Some((len, v)) = gso::coalesce_tcp4(&mut buf, s, 8) {
                assert!(8 + len <= buf.len());
                assert_eq!(v.gso_type, crate::batch::VNET_GSO_TCPV4);
            }
        }
    }
}

/// Decapsulation of whole outer frames (Ethernet, IPv4, UDP, VXLAN), as a Linux vxlan device
/// or a capture would hand them over, then the tunnel header of what comes out: the inner
/// frame must lie within the outer one. Input: the outer frame.
pub fn decap(data: &[u8]) {
    let mut table = encap::VtepTable::new();
    for (vni, net, last) in [(100u32, NET1, 2u8), (200, NET2, 3)] {
        let Some(vni) = encap::Vni::new(vni) else {
            return;
        };
        if table.add_vni(vni, NetworkId(net)).is_err()
            || table.add_peer(vni, Ipv4Addr::new(127, 0, 0, last)).is_err()
        {
            return;
        }
    }
    if let Ok(d) = encap::decap(data, 4789, &table) {
        assert!(
            d.inner_offset + d.inner_len <= data.len(),
            "inner frame within"
        );
        assert!(d.network == NetworkId(NET1) || d.network == NetworkId(NET2));
        let inner = &data[d.inner_offset..d.inner_offset + d.inner_len];
        let _ = crate::port::vxlan_tap::tunnel_vnet(inner, &VnetHdr::default());
    }
}

/// A control request line as the daemon's socket reads it: parsed, and if it parses,
/// written back and parsed again to the same request.
pub fn control_request(data: &[u8]) {
    if let Ok(req) = crate::control::server::parse_request(data) {
        let line = serde_json::to_vec(&req).expect("a parsed request serializes");
        let again = crate::control::server::parse_request(&line).expect("and parses again");
        assert_eq!(
            serde_json::to_value(&again).ok(),
            serde_json::to_value(&req).ok()
        );
    }
}

/// The Docker plugin socket: requests parsed one after another from the bytes of one
/// connection (a kept-alive client sends several) by the bounded HTTP parser, each body read
/// as the plugin reads it ([`crate::control::docker::translate_untrusted`]). A parsed request
/// uses at least one byte and no more than there are, and its body stays within the limit.
pub fn docker_request(data: &[u8]) {
    let mut rest = data;
    for _ in 0..16 {
        let Ok(Some((req, used))) = crate::control::http::parse(rest) else {
            return;
        };
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        assert!(req.body.len() <= crate::control::http::MAX_BODY);
        crate::control::docker::translate_untrusted(&req.path, &req.body);
        rest = rest.get(used..).unwrap_or_default();
    }
}

/// The environment variables of `vswitch-cni`, in the order [`cni_input`] reads them.
const CNI_VARS: [&str; 5] = [
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// The commands [`cni_input`]'s first byte picks from (6: a command string from the input, 7:
/// `CNI_COMMAND` unset).
const CNI_COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"];

/// The error codes the plugin answers before it talks to the daemon.
const CNI_PARSE_CODES: [u32; 5] = [
    crate::cni::code::INCOMPATIBLE_VERSION,
    crate::cni::code::UNSUPPORTED_FIELD,
    crate::cni::code::INVALID_ENV,
    crate::cni::code::DECODE,
    crate::cni::code::INVALID_CONFIG,
];

/// What a container runtime hands `vswitch-cni`: `CNI_COMMAND` and the other `CNI_*`
/// variables (read through [`crate::cni::Env::from_vars`], as the binary reads its
/// environment; a value that is not UTF-8 is unset, as `std::env::var` makes it), and the
/// network configuration on stdin, through the plugin's whole parse path
/// ([`crate::cni::parse_invocation`]: the configuration, `CNI_ARGS`, `runtimeConfig`,
/// `prevResult`, `cni.dev/valid-attachments`, the network to create) and the answer it would
/// print ([`crate::cni::outcome`]). Everything except talking to the daemon.
///
/// Input: a command byte (`% 8`: the six commands, 6 a length-prefixed command string, 7
/// unset); five variables, each a length byte (255: unset) and that many bytes; the rest is
/// stdin. Checked: a refusal is a CNI error object in a version this plugin speaks, with one of
/// the codes of parsing (1, 2, 4, 6, 7: never one that needs the daemon) and a message; an
/// ADD carries the runtime's ids and creates its network exactly when the configuration says
/// how; a success prints nothing or JSON. Returns the error code, `None` when the invocation
/// parsed.
pub fn cni_input(data: &[u8]) -> Option<u32> {
    use crate::cni::{self, Invocation};
    let mut input = Input::new(data);
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let sel = input.u8() % 8;
    let command = match CNI_COMMANDS.get(usize::from(sel)) {
        Some(c) => Some((*c).to_string()),
        None if sel == 6 => {
            let n = usize::from(input.u8());
            text(input.bytes(n))
        }
        None => None,
    };
    let mut vars: Vec<(&str, String)> = Vec::new();
    for name in CNI_VARS {
        let n = input.u8();
        if n != 255 {
            if let Some(v) = text(input.bytes(usize::from(n))) {
                vars.push((name, v));
            }
        }
    }
    if let Some(c) = command {
        vars.push(("CNI_COMMAND", c));
    }
    let env = cni::Env::from_vars(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    });
    let stdin = input.bytes(usize::MAX);
    let version = cni::request_version(stdin);
    let r = cni::parse_invocation(&env, stdin);
    if let Ok(Invocation::Add {
        conf,
        create,
        attach,
    }) = &r
    {
        assert_eq!(attach.network, conf.network());
        assert_eq!(Some(&attach.id), env.container_id.as_ref());
        assert_eq!(Some(&attach.netns), env.netns.as_ref());
        assert_eq!(Some(&attach.ifname), env.ifname.as_ref());
        assert_eq!(
            create.is_some(),
            conf.subnet.is_some() || conf.driver.is_some()
        );
        if let Some(c) = create {
            assert_eq!(c.name, conf.network());
        }
    }
    let shown = r.map(|inv| match inv {
        Invocation::Version(v) => Some(v),
        _ => None,
    });
    let o = cni::outcome(version, shown);
    if o.status == 0 {
        if !o.stdout.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("a result is JSON");
            assert_eq!(v["cniVersion"], version, "VERSION echoes the version");
        }
        return None;
    }
    assert_eq!(o.status, 1);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("an error is JSON");
    assert!(
        cni::SUPPORTED_VERSIONS
            .iter()
            .any(|s| v["cniVersion"] == *s),
        "{v}"
    );
    let code = v["code"].as_u64().expect("an error has a code");
    assert!(
        CNI_PARSE_CODES.iter().any(|c| u64::from(*c) == code),
        "parsing answered code {code}: {v}"
    );
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    u32::try_from(code).ok()
}

/// etcd's JSON gateway as the store's client reads it ([`crate::control::store::etcd`]): the
/// bytes as a reply (status line, headers, a Content-Length, chunked or unframed body) through
/// the bounded HTTP reader, the body (and the bytes themselves) parsed as every reply the
/// client reads (range, txn, lease grant, keepalive, a watch message); the bytes as a chunked
/// watch stream (chunks, split into messages, each parsed into events); and as each record
/// the hosts write in the store (a network read back as written, a host, an endpoint, a
/// claim, a block).
pub fn etcd_json(data: &[u8]) {
    use crate::control::store::etcd::*;
    use std::io::Cursor;
    if let Ok((_, body)) = read_response(&mut Cursor::new(data)) {
        assert!(body.len() <= MAX_BODY);
        etcd_replies(&body);
    }
    etcd_replies(data);
    let mut r = Cursor::new(data);
    let mut pending = Vec::new();
    for _ in 0..64 {
        let mut chunk = Vec::new();
        let Ok(more) = read_chunk(&mut r, &mut chunk, MAX_MESSAGE) else {
            break;
        };
        let Ok(lines) = split_messages(&mut pending, &chunk) else {
            break;
        };
        assert!(pending.len() <= MAX_MESSAGE);
        for l in lines {
            etcd_replies(&l);
        }
        if !more {
            break;
        }
    }
    use crate::control::store::{BlockRecord, ClaimRecord, EndpointEntry, HostRecord, NetworkSpec};
    if let Ok(n) = serde_json::from_slice::<NetworkSpec>(data) {
        let again: NetworkSpec =
            serde_json::from_slice(&serde_json::to_vec(&n).expect("a network serializes"))
                .expect("and parses again");
        assert_eq!(again, n);
    }
    let _ = serde_json::from_slice::<HostRecord>(data);
    let _ = serde_json::from_slice::<EndpointEntry>(data);
    let _ = serde_json::from_slice::<ClaimRecord>(data);
    let _ = serde_json::from_slice::<BlockRecord>(data);
}

/// Every reply parser of the etcd client over `body`; what parses holds keys that encode and
/// decode back to themselves.
fn etcd_replies(body: &[u8]) {
    use crate::control::store::etcd::*;
    let round_trips = |kv: &KeyValue| {
        assert_eq!(b64decode(&b64encode(&kv.key)).as_deref(), Some(&kv.key[..]));
    };
    if let Ok(r) = parse_range(body) {
        r.kvs.iter().for_each(round_trips);
    }
    let _ = parse_txn(body);
    let _ = parse_lease_grant(body);
    let _ = parse_keepalive(body);
    if let Ok(b) = parse_watch_message(body) {
        for e in &b.events {
            let (Event::Put(kv) | Event::Delete(kv)) = e;
            round_trips(kv);
        }
    }
}

/// What the observability tools read of a frame a container sent: the header reader and
/// filter `vswitch capture` and `vswitch trace` share, and the trace's summary (all run on
/// frames as the switch receives them).
fn inspect_frame(frame: &[u8]) {
    let _ = crate::trace::summary(frame);
    let _ = crate::capture::headers(frame);
    let words = [
        "ether",
        "02:00:00:00:00:01",
        "and",
        "udp",
        "and",
        "host",
        "10.0.0.1",
        "and",
        "port",
        "53",
    ]
    .map(String::from);
    if let Ok(filter) = crate::capture::Filter::parse(&words) {
        let all = crate::trace::TraceFilter {
            ports: vec![PortId(1)],
            filter,
        };
        let _ = all.matches(PortId(1), frame);
    }
}

/// The daemon's state file, loaded from arbitrary bytes; a state that loads has an IPAM store
/// the daemon then uses: every pool is allocated from and released as the daemon would.
pub fn state_file(data: &[u8]) {
    if let Ok(mut state) = crate::control::state::State::from_json(data) {
        use_ipam(&mut state.ipam);
    }
}

/// The IPAM store loaded from arbitrary bytes, then used: allocation, static allocation,
/// release and the next default subnet on every pool.
pub fn ipam_store(data: &[u8]) {
    if let Ok(mut ipam) = ipam::Ipam::from_json(data) {
        use_ipam(&mut ipam);
    }
}

fn use_ipam(ipam: &mut ipam::Ipam) {
    let names: Vec<String> = ipam.pools().map(|(n, _)| n.to_string()).collect();
    for name in names.iter().take(8) {
        for k in 0..3 {
            if let Ok(ip) = ipam.allocate(name, &format!("fuzz{k}")) {
                assert_eq!(ipam.lease_of(name, &format!("fuzz{k}")), Some(ip));
            }
        }
        let _ = ipam.allocate_static(name, Ipv4Addr::new(10, 0, 0, 5), "fuzz-static");
        if let Some(ip) = ipam.lease_of(name, "fuzz0") {
            assert!(
                ipam.release(name, ip).is_ok(),
                "a lease just made can be released"
            );
        }
    }
    let _ = ipam.next_default_subnet(&[]);
}

/// Receive coalescing over an arbitrary buffer with an arbitrary segment layout (the numbers
/// of a `UDP_GRO` datagram), and segmentation of whatever it builds. Input: 2-byte segment
/// size, 1-byte prefix, then the buffer.
pub fn gro(data: &[u8]) {
    let mut input = Input::new(data);
    let size = usize::from(input.u16());
    let prefix = usize::from(input.u8() % 32);
    let mut buf = input.bytes(usize::MAX).to_vec();
    let len = buf.len();
    let Some(segs) = gso::Segments::of_gro(len, size) else {
        return;
    };
    assert_eq!(segs.total(), len, "the segments cover the datagram");
    assert!(segs.ranges().all(|r| r.end <= len && !r.is_empty()));
    let before = buf.clone();
    match gso::coalesce_tcp4(&mut buf, segs, prefix) {
        None => assert_eq!(buf, before, "untouched when not coalesced"),
        Some((n, v)) => {
            assert!(prefix + n <= len);
            // The merged payload is every segment's payload, in order.
            let hdr = usize::from(v.hdr_len);
            let mut payload = Vec::new();
            for r in segs.ranges() {
                payload.extend_from_slice(&before[r.start + prefix + hdr..r.end]);
            }
            assert_eq!(&buf[prefix + hdr..prefix + n], &payload[..]);
            check_gso_frame(&buf[prefix..prefix + n], &v);
        }
    }
}

/// An Ethernet frame from `src` to `dst` MAC (tagged with `vlan` if given) of `ethertype`.
fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet with `options` (a multiple of 4 bytes) and a valid header checksum; the L4
/// checksum (TCP/UDP) is filled in valid too.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    use crate::wire::checksum::{checksum, ipv4_l4_checksum};
    let ihl = 20 + options.len();
    let mut p = vec![0u8; ihl];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(options);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = l4.to_vec();
    let at = match proto {
        6 if l4.len() >= 20 => Some(16),
        17 if l4.len() >= 8 => Some(6),
        1 if l4.len() >= 4 => Some(2),
        _ => None,
    };
    if let Some(at) = at {
        let c = if proto == 1 {
            checksum(&l4)
        } else {
            ipv4_l4_checksum(src.into(), dst.into(), proto, &l4)
        };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(&l4);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend((0..payload).map(|i| i as u8));
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// Valid frames of every kind the switch looks into, addressed within the harnesses'
/// networks: the seeds of the fuzz corpora and of the property tests' mutations.
pub fn seed_frames() -> Vec<Vec<u8>> {
    let c1 = [0x02, 0x42, 10, 0, 1, 2];
    let c2 = [0x02, 0x42, 10, 0, 2, 3];
    let bcast = [0xff; 6];
    let (a, b, gw) = ([10, 88, 0, 2], [10, 88, 0, 3], [10, 88, 0, 1]);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&c1);
    arp.extend_from_slice(&a);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&gw);
    let mut dns = vec![
        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0,
    ];
    dns.extend_from_slice(&[0, 1, 0, 1]);
    let echo = [8, 0, 0, 0, 0, 1, 0, 1, 0xaa, 0xbb];
    let mut ip6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    ip6.extend_from_slice(&tcp(40000, 80, 0x02, 0));
    vec![
        eth(
            gw_mac(),
            c1,
            None,
            0x0800,
            &ipv4(a, b, 6, &[], &tcp(40000, 80, 0x02, 0)),
        ),
        eth(
            c2,
            c1,
            None,
            0x0800,
            &ipv4(a, b, 6, &[], &tcp(40000, 80, 0x18, 4000)),
        ),
        eth(
            GW1,
            c1,
            None,
            0x0800,
            &ipv4(a, gw, 17, &[], &udp(5353, 53, &dns)),
        ),
        eth(GW1, c1, None, 0x0800, &ipv4(a, gw, 1, &[], &echo)),
        eth(
            GW1,
            c1,
            None,
            0x0800,
            &ipv4(a, [10, 99, 0, 9], 6, &[], &tcp(40001, 443, 0x02, 0)),
        ),
        eth(bcast, c1, None, 0x0806, &arp),
        eth(c2, c1, None, 0x86dd, &ip6),
        eth(
            c2,
            c1,
            Some(10),
            0x0800,
            &ipv4(a, b, 17, &[], &udp(1, 2, b"hello")),
        ),
        eth(
            c2,
            c1,
            None,
            0x0800,
            &ipv4(a, b, 17, &[1; 40], &udp(1, 2, b"options")),
        ),
        eth(
            [0x01, 0, 0x5e, 0, 0, 1],
            c1,
            None,
            0x0800,
            &ipv4(a, [224, 0, 0, 1], 17, &[], &udp(1, 2, b"m")),
        ),
        eth([0x01, 0x80, 0xc2, 0, 0, 0], c1, None, 0x88cc, &[0; 46]),
    ]
}

/// The names of the harnesses, as the fuzz targets are named.
pub const TARGETS: [&str; 12] = [
    "worker_round",
    "tunnel_rx",
    "tunnel_tx",
    "gro",
    "decap",
    "control_request",
    "state_file",
    "ipam_store",
    "nat_tcp",
    "docker_request",
    "cni_input",
    "etcd_json",
];

/// Runs harness `target` on `data`; false if there is no such harness.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "worker_round" => drop(worker_round(data)),
        "tunnel_rx" => tunnel_rx(data),
        "tunnel_tx" => tunnel_tx(data),
        "gro" => gro(data),
        "decap" => decap(data),
        "control_request" => control_request(data),
        "state_file" => state_file(data),
        "ipam_store" => ipam_store(data),
        "nat_tcp" => nat_tcp(data),
        "docker_request" => docker_request(data),
        "cni_input" => drop(cni_input(data)),
        "etcd_json" => etcd_json(data),
        _ => return false,
    }
    true
}

/// The vnet header of the 4000-byte TCP seed frame as a TCPv4 GSO frame (MSS 1448).
fn gso_vnet() -> VnetHdr {
    VnetHdr {
        flags: crate::batch::VNET_F_NEEDS_CSUM,
        gso_type: crate::batch::VNET_GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn vnet_bytes(v: &VnetHdr) -> Vec<u8> {
    let mut b = vec![v.flags, v.gso_type];
    for x in [v.hdr_len, v.gso_size, v.csum_start, v.csum_offset] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// Inputs for harness `target` built from [`seed_frames`]: the starting corpus of its fuzz
/// target, each input one that reaches deep into the code.
pub fn seed_inputs(target: &str) -> Vec<Vec<u8>> {
    let frames = seed_frames();
    let big = &frames[1];
    let vxlan = |vni: u32| {
        let mut h = vec![0x08, 0, 0, 0];
        h.extend_from_slice(&(vni << 8).to_be_bytes());
        h
    };
    // The big TCP frame cut into segments behind VXLAN headers, as a coalesced datagram.
    let mut segs = vec![0u8; 16 * 1024];
    let cut = gso::segment(big, &gso_vnet(), 8, &mut segs).expect("the seed frame segments");
    segs.truncate(cut.total());
    for r in cut.ranges() {
        segs[r.start..r.start + 8].copy_from_slice(&vxlan(100));
    }
    match target {
        "worker_round" => {
            let mut all = Vec::new();
            for (k, f) in frames.iter().enumerate() {
                let mut one = vec![k as u8];
                let v = if k == 1 {
                    gso_vnet()
                } else {
                    VnetHdr::default()
                };
                one.extend_from_slice(&vnet_bytes(&v));
                one.extend_from_slice(&(f.len() as u16).to_le_bytes());
                one.extend_from_slice(f);
                all.extend_from_slice(&one);
            }
            vec![all]
        }
        "tunnel_rx" => {
            let mut v: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| [&[0, 0, 0][..], &vxlan(100), f].concat())
                .collect();
            v.push([&(cut.stride as u16).to_le_bytes()[..], &[0], &segs].concat());
            v
        }
        "tunnel_tx" => {
            let mut v: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| [&[0u8][..], &[0; 10], f].concat())
                .collect();
            for mtu in 0..4u8 {
                v.push([&[mtu][..], &vnet_bytes(&gso_vnet()), big].concat());
            }
            v
        }
        "gro" => vec![[&(cut.stride as u16).to_le_bytes()[..], &[8], &segs].concat()],
        "decap" => {
            // Each seed frame inside Ethernet/IPv4/UDP/VXLAN from peer 127.0.0.2.
            frames
                .iter()
                .map(|f| {
                    let l4 = udp(45000, 4789, &[&vxlan(100)[..], f].concat());
                    let ip = ipv4([127, 0, 0, 2], [127, 0, 0, 1], 17, &[], &l4);
                    eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], None, 0x0800, &ip)
                })
                .collect()
        }
        "control_request" => [
            r#"{"op":"network_create","name":"app","driver":"bridge","subnet":"10.70.0.0/24","options":{"port_security":"off"}}"#,
            r#"{"op":"run","name":"web","network":"app","ip":"10.70.0.9","publish":["8080:80"]}"#,
            r#"{"op":"stats"}"#,
            r#"{"op":"network_connect","network":"app","container":"web"}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "state_file" => vec![seed_state().into_bytes()],
        "ipam_store" => vec![serde_json::to_vec(&seed_ipam()).unwrap_or_default()],
        "nat_tcp" => nat_tcp::seeds(),
        "docker_request" => docker_seeds(),
        "cni_input" => cni_seeds(),
        "etcd_json" => etcd_seeds(),
        _ => Vec::new(),
    }
}

/// An IPAM store with one pool and one lease.
fn seed_ipam() -> ipam::Ipam {
    let mut ipam = ipam::Ipam::new();
    let spec = ipam::PoolSpec {
        subnet: "10.70.0.0/24".parse().expect("a subnet"),
        gateway: None,
        ip_range: None,
        aux_addresses: Default::default(),
    };
    let _ = ipam.add_pool("app", spec);
    let _ = ipam.allocate("app", "web");
    ipam
}

/// A state file as the daemon writes it, with the IPAM store of [`seed_ipam`].
fn seed_state() -> String {
    let ipam = seed_ipam();
    serde_json::json!({
        "next_network_id": 2,
        "networks": {},
        "containers": {},
        "ipam": ipam,
    })
    .to_string()
}

fn gw_mac() -> [u8; 6] {
    GW1
}

/// One `cni_input` input: the command byte, the five variables of [`CNI_VARS`] (`None`:
/// unset), stdin.
fn cni_seed(command: u8, vars: [Option<&str>; 5], stdin: &str) -> Vec<u8> {
    let mut out = vec![command];
    for v in vars {
        match v {
            Some(v) => {
                out.push(v.len().min(254) as u8);
                out.extend_from_slice(&v.as_bytes()[..v.len().min(254)]);
            }
            None => out.push(255),
        }
    }
    out.extend_from_slice(stdin.as_bytes());
    out
}

/// Seeds of `cni_input`: the calls a runtime makes (podman's ADD/CHECK/DEL, GC, STATUS,
/// VERSION) with configurations for each driver.
fn cni_seeds() -> Vec<Vec<u8>> {
    let id = "8b3bd6a9e40f2c1a4e0b8c4d9f6a2e1b7c3d5f8a9b0c1d2e3f4a5b6c7d8e9f0a";
    let ns = Some("/run/netns/cni-8b3bd6a9");
    let full = |args: &'static str| [Some(id), ns, Some("eth0"), Some(args), Some("/opt/cni/bin")];
    let add_bridge = r#"{"cniVersion":"1.0.0","name":"app","type":"vswitch-cni","socket":"/nonexistent/vswitch.sock","subnet":"10.88.0.0/24","gateway":"10.88.0.1","ipRange":"10.88.0.128/25","mtu":1400,"capabilities":{"portMappings":true,"ips":true,"mac":true,"mtu":true},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}],"ips":["10.88.0.130/24","fd00::5/64"],"mac":"02:aa:bb:cc:dd:07","mtu":1400,"bandwidth":{"ingressRate":1}}}"#;
    let add_overlay = r#"{"cniVersion":"1.1.0","name":"ov","type":"vswitch-cni","network":"ov","driver":"overlay","subnet":"10.90.0.0/16","ipRange":"10.90.1.0/24","options":{"vni":4242,"vtep":"192.168.1.10","peers":["192.168.1.11","192.168.1.12"],"port":4789}}"#;
    let add_macvlan = r#"{"cniVersion":"0.4.0","name":"lan","type":"vswitch-cni","driver":"macvlan","subnet":"192.168.1.0/24","gateway":"192.168.1.1","internal":false,"options":{"parent":"eth0"}}"#;
    let prev = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:aa:bb:cc:dd:07","sandbox":"/run/netns/cni-8b3bd6a9"}],"ips":[{"address":"10.88.0.130/24","gateway":"10.88.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}],"dns":{"nameservers":["10.88.0.1"]}}"#;
    let with_prev = format!(
        r#"{{"cniVersion":"1.0.0","name":"app","type":"vswitch-cni","network":"app","prevResult":{prev}}}"#
    );
    let gc = format!(
        r#"{{"cniVersion":"1.1.0","name":"app","type":"vswitch-cni","cni.dev/valid-attachments":[{{"containerID":"{id}","ifname":"eth0"}}]}}"#
    );
    let status = r#"{"cniVersion":"1.1.0","name":"app","type":"vswitch-cni"}"#;
    vec![
        cni_seed(
            0,
            full("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"),
            add_bridge,
        ),
        cni_seed(
            0,
            full("IgnoreUnknown=1;IP=10.90.1.7;MAC=02:00:00:00:00:07"),
            add_overlay,
        ),
        cni_seed(0, full(""), add_macvlan),
        cni_seed(2, full("IgnoreUnknown=1"), &with_prev),
        cni_seed(1, [Some(id), None, Some("eth0"), None, None], &with_prev),
        cni_seed(5, [None, None, None, None, Some("/opt/cni/bin")], &gc),
        cni_seed(4, [None; 5], status),
        cni_seed(3, [None; 5], r#"{"cniVersion":"0.3.1"}"#),
        cni_seed(3, [None; 5], ""),
        // An unknown command string, and CNI_COMMAND unset.
        [&[6, 4][..], b"FROB", &[255; 5], status.as_bytes()].concat(),
        cni_seed(7, [None; 5], status),
    ]
}

/// Seeds of `etcd_json`: replies of etcd 3.4's gateway as it sends them (int64s as strings,
/// zero fields left out), whole HTTP replies and a chunked watch stream, and the records.
fn etcd_seeds() -> Vec<Vec<u8>> {
    let range = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"7","raft_term":"2"},"kvs":[{"key":"L3Zzd2l0Y2gvdjEvbmV0d29ya3Mvb3Y=","create_revision":"5","mod_revision":"5","version":"1","value":"eyJuYW1lIjoib3YiLCJzdWJuZXQiOiIxMC42MS4wLjAvMTYiLCJ2bmkiOjQwOTYsImJsb2NrIjoyNn0="},{"key":"L3Zzd2l0Y2gvdjEvdnRlcHMvb3YvaG9zdDE=","create_revision":"6","mod_revision":"6","version":"1","value":"eyJ2dGVwIjoiMTkyLjE2OC43Ny4xIn0=","lease":"7587870000000000001"}],"count":"2"}"#;
    let txn = r#"{"header":{"revision":"8"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"8"}}}]}"#;
    let grant = r#"{"header":{"revision":"8"},"ID":"7587870000000000001","TTL":"15"}"#;
    let keepalive = "{\"result\":{\"header\":{\"revision\":\"8\"},\"ID\":\"7587870000000000001\",\"TTL\":\"15\"}}\n";
    let no_leader =
        r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
    let watch = [
        r#"{"result":{"header":{"revision":"8"},"created":true}}"#,
        r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"L3Zzd2l0Y2gvdjEvZW5kcG9pbnRzL292LzAyOjQyOjBhOjNkOjAwOjAy","create_revision":"9","mod_revision":"9","version":"1","value":"eyJpcCI6IjEwLjYxLjAuMiIsImhvc3QiOiJob3N0MSIsImNvbnRhaW5lciI6ImEifQ==","lease":"7587870000000000001"}}]}}"#,
        r#"{"result":{"header":{"revision":"10"},"events":[{"type":"DELETE","kv":{"key":"L3Zzd2l0Y2gvdjEvdnRlcHMvb3YvaG9zdDE=","mod_revision":"10"}}]}}"#,
        r#"{"result":{"header":{"revision":"11"},"canceled":true,"compact_revision":"5"}}"#,
    ];
    let mut stream =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let mut chunks = Vec::new();
    for m in watch {
        let line = format!("{m}\n");
        chunks.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
    }
    chunks.extend_from_slice(b"0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n");
    stream.extend_from_slice(&chunks);
    let reply = |status: &str, body: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    let records = [
        r#"{"name":"ov","subnet":"10.61.0.0/16","vni":4096,"mtu":1400,"block":26,"gateway":"10.61.0.1","internal":false,"options":{"port_security":"on"}}"#,
        r#"{"vtep":"192.168.77.1"}"#,
        r#"{"ip":"10.61.0.2","host":"host1","container":"a"}"#,
        r#"{"host":"host1","container":"a"}"#,
        r#"{"host":"host1"}"#,
    ];
    let mut out = vec![
        reply("200 OK", range),
        reply("200 OK", txn),
        reply("200 OK", grant),
        reply("200 OK", keepalive),
        reply("503 Service Unavailable", no_leader),
        stream,
        chunks,
    ];
    out.extend(records.iter().map(|r| r.as_bytes().to_vec()));
    out.extend(watch.iter().map(|m| m.as_bytes().to_vec()));
    out
}

/// Seeds of `docker_request`: the calls dockerd makes, as it sends them.
fn docker_seeds() -> Vec<Vec<u8>> {
    let nid = "82be9d0ab9b0373eb81999f2f8e5ab9b1067dc4080ecdaf83c0e7773ab25e298";
    let bodies = [
        ("/Plugin.Activate", String::new()),
        (
            "/IpamDriver.RequestPool",
            r#"{"AddressSpace":"vswitch","Pool":"10.70.0.0/24","SubPool":"10.70.0.128/25","Options":{},"V6":false}"#.to_string(),
        ),
        (
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"10.70.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#.to_string(),
        ),
        (
            "/NetworkDriver.CreateNetwork",
            format!(r#"{{"NetworkID":"{nid}","Options":{{"com.docker.network.enable_ipv6":false,"com.docker.network.internal":true,"com.docker.network.generic":{{"mtu":"1400"}}}},"IPv4Data":[{{"AddressSpace":"vswitch","Pool":"10.70.0.0/24","Gateway":"10.70.0.1/24","AuxAddresses":{{"r":"10.70.0.9/24"}}}}],"IPv6Data":[]}}"#),
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            format!(r#"{{"NetworkID":"{nid}","EndpointID":"{nid}","Interface":{{"Address":"10.70.0.2/24","AddressIPv6":"","MacAddress":""}},"Options":{{}}}}"#),
        ),
        (
            "/NetworkDriver.ProgramExternalConnectivity",
            format!(r#"{{"NetworkID":"{nid}","EndpointID":"{nid}","Options":{{"com.docker.network.portmap":[{{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}}]}}}}"#),
        ),
    ];
    let one = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut seeds: Vec<Vec<u8>> = bodies.iter().map(|(p, b)| one(p, b)).collect();
    // A kept-alive connection: all of them in a row.
    seeds.push(seeds.concat());
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames that pass the first checks of each stage: IPv4 TCP/UDP/ICMP, ARP, IPv6 TCP,
    /// tagged, with IPv4 options; the property tests mutate them.
    pub(crate) fn seeds() -> Vec<Vec<u8>> {
        seed_frames()
    }

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let n = seeds().len();
        (
            0..n,
            proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8),
            proptest::option::of(0usize..2000),
        )
            .prop_map(|(k, edits, cut)| {
                let mut f = seeds()[k].clone();
                for (at, b) in edits {
                    if !f.is_empty() {
                        let i = usize::from(at) % f.len();
                        f[i] = b;
                    }
                }
                if let Some(c) = cut {
                    f.truncate(c);
                }
                f
            })
    }

    fn vnet_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![0u8; 10]),
            proptest::collection::vec(any::<u8>(), 10),
            // Plausible GSO headers: TCPv4/TCPv6/UDP_L4 with a partial checksum.
            (
                prop_oneof![Just(1u8), Just(4), Just(5), Just(0x81)],
                14u16..80,
                1u16..9000
            )
                .prop_map(|(t, start, size)| {
                    let mut v = vec![1u8, t];
                    v.extend_from_slice(&(start + 20).to_le_bytes());
                    v.extend_from_slice(&size.to_le_bytes());
                    v.extend_from_slice(&start.to_le_bytes());
                    v.extend_from_slice(&(if t == 5 { 6u16 } else { 16 }).to_le_bytes());
                    v
                }),
        ]
    }

    /// The harness really switches: the seed frames, each sent on port 1, are received,
    /// forwarded or answered, and counted.
    #[test]
    fn worker_round_switches_the_seed_frames() {
        let mut data = Vec::new();
        for f in seeds() {
            data.push(0);
            data.extend_from_slice(&[0; 10]);
            data.extend_from_slice(&(f.len() as u16).to_le_bytes());
            data.extend_from_slice(&f);
        }
        let snap = worker_round(&data).expect("the worker starts");
        let p1 = snap.ports.iter().find(|p| p.id == PortId(1)).unwrap();
        assert_eq!(p1.rx_frames, seeds().len() as u64);
        let tx: u64 = snap.ports.iter().map(|p| p.tx_frames).sum();
        assert!(
            tx >= 5,
            "floods, unicast and gateway replies went out: {:?}",
            snap.ports
        );
        // Port security runs: the IPv6 seed's source is not the port's MAC-derived address.
        let spoofed = snap
            .counters
            .drop_count(crate::pipeline::DropReason::SpoofedIp);
        assert_eq!(spoofed, 1, "{:?}", snap.counters);
        assert!(
            snap.fdb.iter().any(|e| e.port == PortId(1) && !e.is_static),
            "port 1's source was learned: {:?}",
            snap.fdb
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn worker_round_never_panics(
            frames in proptest::collection::vec((any::<u8>(), vnet_bytes(), mutated()), 1..80)
        ) {
            let mut data = Vec::new();
            for (port, vnet, f) in frames {
                data.push(port);
                data.extend_from_slice(&vnet);
                data.extend_from_slice(&(f.len() as u16).to_le_bytes());
                data.extend_from_slice(&f);
            }
            worker_round(&data);
        }

        #[test]
        fn tunnel_rx_never_panics(
            gso in prop_oneof![Just(0u16), 1u16..40, 40u16..2000, any::<u16>()],
            src in any::<u8>(),
            segs in proptest::collection::vec(mutated(), 1..5),
            vni in prop_oneof![Just(100u32), Just(200), any::<u32>()],
        ) {
            let mut data = gso.to_le_bytes().to_vec();
            data.push(src);
            for f in segs {
                data.extend_from_slice(&[0x08, 0, 0, 0]);
                data.extend_from_slice(&(vni << 8).to_be_bytes());
                data.extend_from_slice(&f);
            }
            tunnel_rx(&data);
        }

        #[test]
        fn tunnel_tx_never_panics(mtu in any::<u8>(), vnet in vnet_bytes(), f in mutated()) {
            let mut data = vec![mtu];
            data.extend_from_slice(&vnet);
            data.extend_from_slice(&f);
            tunnel_tx(&data);
        }

        #[test]
        fn decap_never_panics(k in 0usize..11, edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8), cut in any::<u16>()) {
            let mut f = seed_inputs("decap")[k].clone();
            for (at, b) in edits {
                let i = usize::from(at) % f.len();
                f[i] = b;
            }
            f.truncate(usize::from(cut));
            decap(&f);
        }

        #[test]
        fn nat_tcp_never_corrupts_a_stream(
            k in 0usize..2,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..12),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut data = nat_tcp::seeds()[k].clone();
            for (at, b) in edits {
                let i = usize::from(at) % data.len();
                data[i] = b;
            }
            data.extend_from_slice(&tail);
            nat_tcp(&data);
        }

        #[test]
        fn gro_never_panics(
            size in prop_oneof![1u16..64, 54u16..2000, any::<u16>()],
            prefix in any::<u8>(),
            segs in proptest::collection::vec(mutated(), 1..5),
        ) {
            let mut data = size.to_le_bytes().to_vec();
            data.push(prefix);
            for f in segs {
                data.extend_from_slice(&f);
            }
            gro(&data);
        }
    }
}
