//! A LAN of the test's own for macvlan tests: a namespace playing "another machine", joined by
//! a veth pair to a parent interface in the host namespace (the macvlan parent).
//!
//! **VLAN stations without the kernel's 802.1Q.** This machine's kernel has no `8021q` module
//! (no VLAN sub-interfaces), no bridge VLAN filtering and no tc vlan action, so the LAN machine
//! cannot tag frames itself. [`Lan::with_vlans`] gives it a tiny 802.1Q shim instead: one
//! *station* per VLAN, a namespace of its own (another machine on that VLAN, so the LAN
//! machine's weak-host ARP cannot blur the VLANs) whose `eth0` is a TAP — an ordinary
//! interface for its kernel stack, so ping and iperf3 run on it unchanged — and a thread that
//! moves frames between those TAPs and the LAN end of the veth, pushing the VLAN's tag on the
//! way out and popping it on the way in (frames of other VLANs are dropped). Untagged frames
//! are left to the LAN namespace's own `eth0`; tagged frames never reach its stack (no VLAN
//! device claims them, so the kernel treats them as not for this host).

use crate::{sh, sh_ok, unique, Netns};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use switch::batch::{Batch, GSO_SLOT};
use switch::port::afpacket::AfPacketPort;
use switch::port::tap::TapPort;
use switch::port::Port;
use switch::wire::{insert_vlan_tag, strip_vlan_tag, VlanTag, VLAN_TAG_LEN};

/// A test LAN: namespace `ns` whose `eth0` is the peer of `parent` in the host namespace.
pub struct Lan {
    shim: Option<Shim>,
    /// One station namespace per VLAN (see [`Lan::with_vlans`]).
    pub stations: Vec<(u16, Netns)>,
    /// The LAN machine's namespace.
    pub ns: Netns,
    /// The host end of the veth: the macvlan parent.
    pub parent: String,
}

impl Lan {
    /// A LAN whose machine has `eth0` with address `cidr` (e.g. `10.97.1.1/24`).
    pub fn new(cidr: &str) -> Lan {
        let ns = Netns::new(&unique("lan"));
        let parent = unique("mvp");
        sh_ok(
            "ip",
            &[
                "link", "add", &parent, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ],
        );
        sh_ok("ip", &["link", "set", &parent, "up"]);
        sh_ok("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
        sh_ok("ip", &["-n", &ns.name, "addr", "add", cidr, "dev", "eth0"]);
        Lan {
            shim: None,
            stations: Vec::new(),
            ns,
            parent,
        }
    }

    /// A LAN with, besides its machine, one station per `(vid, cidr)`: a namespace of its own
    /// whose `eth0` (a TAP) has that address and whose frames cross the wire tagged with `vid`
    /// (see the module documentation).
    pub fn with_vlans(cidr: &str, vlans: &[(u16, &str)]) -> Lan {
        let mut lan = Lan::new(cidr);
        let path = PathBuf::from("/run/netns").join(&lan.ns.name);
        let wire = switch::netns::run_in_netns(&path, || {
            AfPacketPort::open("eth0").expect("AF_PACKET on the LAN's eth0")
        })
        .expect("enter the LAN namespace");
        let mut taps = Vec::new();
        for (vid, cidr) in vlans {
            let st = Netns::new(&unique(&format!("st{vid}")));
            let path = PathBuf::from("/run/netns").join(&st.name);
            let tap = switch::netns::run_in_netns(&path, || TapPort::create("eth0").expect("TAP"))
                .expect("enter the station namespace");
            sh_ok("ip", &["-n", &st.name, "link", "set", "eth0", "up"]);
            sh_ok("ip", &["-n", &st.name, "addr", "add", cidr, "dev", "eth0"]);
            taps.push((*vid, tap));
            lan.stations.push((*vid, st));
        }
        lan.shim = Some(Shim::start(wire, taps));
        lan
    }

    /// The station namespace of VLAN `vid`.
    pub fn station(&self, vid: u16) -> &Netns {
        &self
            .stations
            .iter()
            .find(|(v, _)| *v == vid)
            .expect("a station on that VLAN")
            .1
    }

    /// Runs a command in the LAN machine's namespace.
    pub fn exec(&self, cmd: &[&str]) -> std::process::Output {
        self.ns.exec(cmd)
    }

    /// True when the parent's own promiscuous flag is set (`ip link` shows `PROMISC`).
    pub fn parent_promiscuous(&self) -> bool {
        let out = sh_ok("ip", &["-o", "link", "show", &self.parent]);
        out.split('>').next().unwrap_or("").contains("PROMISC")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.shim.take();
        let _ = sh("ip", &["link", "del", &self.parent]);
    }
}

/// The 802.1Q shim's thread.
struct Shim {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Shim {
    fn start(mut wire: AfPacketPort, mut taps: Vec<(u16, TapPort)>) -> Shim {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut b = Batch::new(GSO_SLOT);
            let mut sel: Vec<u16> = Vec::with_capacity(64);
            let mut fds: Vec<libc::pollfd> = std::iter::once(wire.raw_fd())
                .chain(taps.iter().map(|(_, t)| t.raw_fd()))
                .map(|fd| libc::pollfd {
                    fd: fd.expect("a pollable port"),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            while !s.load(Ordering::Relaxed) {
                // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                // Wire -> TAP of the frame's VLAN, tag popped.
                b.clear();
                let _ = wire.recv_burst(&mut b);
                for (vid, tap) in taps.iter_mut() {
                    sel.clear();
                    for i in 0..b.len() {
                        let f = b.frame(i);
                        if f.len() >= 18
                            && f[12..14] == [0x81, 0x00]
                            && u16::from_be_bytes([f[14], f[15]]) & 0xfff == *vid
                        {
                            let (slot, m) = b.slot_mut(i);
                            if let Ok((off, _)) =
                                strip_vlan_tag(slot, m.offset as usize, m.len as usize)
                            {
                                m.offset = off as u32;
                                m.len -= VLAN_TAG_LEN as u32;
                                shift(&mut m.vnet, -(VLAN_TAG_LEN as i32));
                                sel.push(i as u16);
                            }
                        }
                    }
                    let _ = tap.send_burst(&b, &sel);
                }
                // Each TAP -> wire, tag pushed.
                for (vid, tap) in taps.iter_mut() {
                    b.clear();
                    let _ = tap.recv_burst(&mut b);
                    sel.clear();
                    for i in 0..b.len() {
                        let (slot, m) = b.slot_mut(i);
                        if let Ok(off) = insert_vlan_tag(
                            slot,
                            m.offset as usize,
                            m.len as usize,
                            VlanTag::new(0, *vid),
                        ) {
                            m.offset = off as u32;
                            m.len += VLAN_TAG_LEN as u32;
                            shift(&mut m.vnet, VLAN_TAG_LEN as i32);
                            sel.push(i as u16);
                        }
                    }
                    let _ = wire.send_burst(&b, &sel);
                }
            }
        });
        Shim {
            stop,
            thread: Some(thread),
        }
    }
}

fn shift(v: &mut switch::batch::VnetHdr, delta: i32) {
    if v.needs_csum() {
        v.csum_start = (v.csum_start as i32 + delta) as u16;
    }
    if v.hdr_len != 0 {
        v.hdr_len = (v.hdr_len as i32 + delta) as u16;
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
