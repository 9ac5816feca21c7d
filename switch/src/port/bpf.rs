//! The raw `bpf(2)` and rtnetlink parts of the AF_XDP port: the tiny XDP program built from
//! BPF instructions in Rust (no clang, no libbpf, no aya), the `XSKMAP` it redirects into, and
//! attaching it in native (driver) mode to an interface.
//!
//! The program is five instructions:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)              ; xdp_md->rx_queue_index
//! r1 = map_fd ll                      ; the XSKMAP (a pseudo map fd the verifier resolves)
//! r3 = 2                              ; flags: XDP_PASS when the queue has no socket
//! call bpf_redirect_map               ; to the AF_XDP socket of this queue
//! exit                                ; return what the helper returned
//! ```
//!
//! It is attached with `BPF_LINK_CREATE` (attach type `BPF_XDP`, `XDP_FLAGS_DRV_MODE`): the
//! link belongs to its file descriptor, so the program leaves the interface by itself when the
//! descriptor is closed — when the port is dropped, and when the daemon exits or crashes. A
//! kernel that refuses link creation gets the program through rtnetlink (`IFLA_XDP`), which
//! stays attached until someone removes it: [`XdpAttach`] detaches it when dropped (only if
//! the attached program is still ours), and a later attach replaces a leftover one.

use super::sys::{cvt, owned_fd};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_FLAGS_SKB_MODE`: generic XDP (for tests on devices without native XDP).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;
const XDP_PASS: i32 = 2;

/// Offset of `rx_queue_index` in `struct xdp_md`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst & 0xf) | (src << 4),
        off,
        imm,
    }
}

/// The redirect program for the XSKMAP `map_fd`; see the module documentation.
pub fn redirect_program(map_fd: RawFd) -> [Insn; 6] {
    const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    [
        insn(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0), // the upper half of the 64-bit immediate
        insn(MOV64_K, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Why the XDP program could not be set up. Each message names the step and the cause.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// `bpf(2)` itself is refused: no CAP_BPF/CAP_SYS_ADMIN, a seccomp filter, a kernel without
    /// BPF, or `kernel.unprivileged_bpf_disabled`.
    #[error("bpf({what}) is not permitted here: {source} (AF_XDP needs root or CAP_BPF+CAP_NET_ADMIN and a kernel with BPF; a container runtime's seccomp profile may forbid bpf(2))")]
    NotPermitted {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The verifier refused the program; its log is included.
    #[error("the kernel's verifier refused the XDP program: {source}; verifier log: {log}")]
    Verifier {
        #[source]
        source: io::Error,
        log: String,
    },
    /// Another `bpf(2)` step failed.
    #[error("bpf({what}) failed: {source}")]
    Bpf {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The program could not be attached to the interface.
    #[error("cannot attach the XDP program to {ifname} in native mode: link create: {link}; netlink: {netlink}")]
    Attach {
        ifname: String,
        link: io::Error,
        netlink: String,
    },
}

impl BpfError {
    fn of(what: &'static str, e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::ENOSYS) => BpfError::NotPermitted { what, source: e },
            _ => BpfError::Bpf { what, source: e },
        }
    }

    /// True when the error says `bpf(2)` is not permitted at all (tests skip on it).
    pub fn not_permitted(&self) -> bool {
        matches!(self, BpfError::NotPermitted { .. })
    }
}

/// `bpf(cmd, attr, size_of(attr))`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is a live, writable, `repr(C)` prefix of `union bpf_attr` for `cmd`, and
    // its exact size is passed; the kernel reads (and for some commands writes) at most that.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    cvt(r as libc::c_int)
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetInfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A name of at most 15 bytes, NUL padded, for maps and programs.
fn obj_name(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, b) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = b;
    }
    n
}

/// Creates an `XSKMAP` with `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> Result<OwnedFd, BpfError> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: obj_name("vsw_xsks"),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut a)
        .and_then(owned_fd)
        .map_err(|e| BpfError::of("BPF_MAP_CREATE xskmap", e))
}

/// Puts socket `xsk_fd` into slot `queue` of the XSKMAP `map`.
pub fn xskmap_set(map: &OwnedFd, queue: u32, xsk_fd: RawFd) -> Result<(), BpfError> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a)
        .map(drop)
        .map_err(|e| BpfError::of("BPF_MAP_UPDATE_ELEM xskmap", e))
}

/// Loads the redirect program for `map`. On a refusal the verifier's log is in the error.
pub fn load_redirect_program(map: &OwnedFd) -> Result<OwnedFd, BpfError> {
    let insns = redirect_program(map.as_raw_fd());
    let license = b"GPL\0";
    let load = |log: Option<&mut [u8]>| {
        let (log_level, log_size, log_buf) = match log {
            Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut a = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            prog_name: obj_name("vsw_xsk_redir"),
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        bpf(BPF_PROG_LOAD, &mut a).and_then(owned_fd)
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
            Err(BpfError::of("BPF_PROG_LOAD xdp", e))
        }
        Err(e) => {
            // Load again with the verifier's log on, to say why.
            let mut log = vec![0u8; 64 * 1024];
            let again = load(Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
            match again {
                Ok(fd) => Ok(fd),
                Err(_) => Err(BpfError::Verifier {
                    source: e,
                    log: if text.is_empty() {
                        "(empty)".into()
                    } else {
                        text
                    },
                }),
            }
        }
    }
}

/// The kernel's id of the program (or map, or link) behind `fd`.
pub fn object_id(fd: &OwnedFd) -> io::Result<u32> {
    // struct bpf_prog_info / bpf_map_info / bpf_link_info all start with (type, id).
    let mut info = [0u32; 2];
    let mut a = GetInfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info[1])
}

/// Whether a BPF program with id `id` still exists in the kernel.
pub fn program_exists(id: u32) -> io::Result<bool> {
    let mut a = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut a) {
        Ok(fd) => {
            drop(owned_fd(fd)?);
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How the program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachKind {
    /// A BPF link (`BPF_LINK_CREATE`): detached when its descriptor closes.
    Link,
    /// rtnetlink `IFLA_XDP`: detached explicitly on drop.
    Netlink,
}

/// Which attach to try (tests force the netlink fallback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachPolicy {
    /// `BPF_LINK_CREATE`, and netlink if the kernel refuses it.
    #[default]
    Auto,
    /// Netlink only.
    NetlinkOnly,
}

/// An XDP program attached to an interface; detached when dropped.
#[derive(Debug)]
pub struct XdpAttach {
    ifname: String,
    ifindex: u32,
    flags: u32,
    /// The program: for a netlink attach, the expected program of the detach.
    prog: OwnedFd,
    /// The BPF link, for a link attach.
    link: Option<OwnedFd>,
}

impl XdpAttach {
    /// Attaches `prog` to `ifname` (index `ifindex`) with `flags` (a mode flag).
    pub fn attach(
        ifname: &str,
        ifindex: u32,
        prog: OwnedFd,
        flags: u32,
        policy: AttachPolicy,
    ) -> Result<XdpAttach, BpfError> {
        let link_err = match policy {
            AttachPolicy::NetlinkOnly => io::Error::other("not tried (netlink forced)"),
            AttachPolicy::Auto => {
                let link = match link_create(&prog, ifindex, flags) {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        return Err(BpfError::of("BPF_LINK_CREATE xdp", e))
                    }
                    // A program attached through netlink (a daemon in fallback mode that
                    // crashed) is in the way: replace it and take the link again.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        match netlink_xdp(ifname, -1, flags, None) {
                            Ok(()) => link_create(&prog, ifindex, flags),
                            Err(_) => Err(e),
                        }
                    }
                    r => r,
                };
                match link {
                    Ok(link) => {
                        return Ok(XdpAttach {
                            ifname: ifname.to_string(),
                            ifindex,
                            flags,
                            prog,
                            link: Some(link),
                        })
                    }
                    Err(e) => e,
                }
            }
        };
        match netlink_xdp(ifname, prog.as_raw_fd(), flags, None) {
            Ok(()) => Ok(XdpAttach {
                ifname: ifname.to_string(),
                ifindex,
                flags,
                prog,
                link: None,
            }),
            Err(e) => Err(BpfError::Attach {
                ifname: ifname.to_string(),
                link: link_err,
                netlink: e,
            }),
        }
    }

    /// How it is attached.
    pub fn kind(&self) -> AttachKind {
        if self.link.is_some() {
            AttachKind::Link
        } else {
            AttachKind::Netlink
        }
    }

    /// The kernel's id of the attached program.
    pub fn prog_id(&self) -> io::Result<u32> {
        object_id(&self.prog)
    }

    /// The interface index it is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Drop for XdpAttach {
    fn drop(&mut self) {
        if self.link.is_none() {
            // Only our program is removed (XDP_FLAGS_REPLACE with the expected program): one
            // another process attached since stays. A link goes with its descriptor.
            if let Err(e) = netlink_xdp(
                &self.ifname,
                -1,
                self.flags | XDP_FLAGS_REPLACE,
                Some(self.prog.as_raw_fd()),
            ) {
                tracing::debug!(ifname = %self.ifname, "detaching the XDP program: {e}");
            }
        }
    }
}

fn link_create(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    bpf(BPF_LINK_CREATE, &mut a).and_then(owned_fd)
}

/// `ip link set IFNAME xdpdrv fd FD` (FD -1: off) through rtnetlink, in the caller's
/// namespace. `expected`: with `XDP_FLAGS_REPLACE`, only if this program is the attached one.
fn netlink_xdp(ifname: &str, fd: RawFd, flags: u32, expected: Option<RawFd>) -> Result<(), String> {
    crate::netns::Netlink::new()
        .and_then(|nl| nl.set_xdp(ifname, fd, flags, expected))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_the_documented_five_instructions() {
        let p = redirect_program(7);
        assert_eq!(p.len(), 6, "five instructions, one of them 16 bytes wide");
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x61, 0x12, 16));
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!(p[2], insn(0, 0, 0, 0, 0));
        assert_eq!((p[3].code, p[3].regs, p[3].imm), (0xb7, 0x03, XDP_PASS));
        assert_eq!((p[4].code, p[4].imm), (0x85, 51));
        assert_eq!(p[5].code, 0x95);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn a_refused_bpf_call_says_so() {
        let e = BpfError::of(
            "BPF_MAP_CREATE xskmap",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.not_permitted());
        let m = e.to_string();
        assert!(
            m.contains("bpf(BPF_MAP_CREATE xskmap) is not permitted here") && m.contains("seccomp"),
            "{m}"
        );
        let e = BpfError::of(
            "BPF_MAP_CREATE xskmap",
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(!e.not_permitted(), "{e}");
    }

    #[test]
    fn names_are_cut_to_fifteen_bytes() {
        let n = obj_name("a-very-long-program-name");
        assert_eq!(&n[..15], b"a-very-long-pro");
        assert_eq!(n[15], 0);
    }
}
