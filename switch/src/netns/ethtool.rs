//! Turning offloads off on an interface with the legacy `SIOCETHTOOL` ioctls (what
//! `ethtool -K IF tx off sg off tso off gso off` does), for the AF_XDP attach mode: an XSK
//! carries no vnet header, so the container's end of the veth must finish its checksums and
//! segment its TCP in software before a frame reaches the switch.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::{NetnsError, Result};
use super::ns::run_in_netns;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SSG: u32 = 0x19;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// One `SIOCETHTOOL` call with an `ethtool_value` on socket `sock`.
fn ethtool(sock: &std::net::UdpSocket, ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut v = EthtoolValue { cmd, data };
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr
        .ifr_name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = b as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
    // SAFETY: `ifr` names the interface (NUL terminated: at most 15 bytes copied into a zeroed
    // 16-byte array) and points at `v`, a live `ethtool_value` the kernel reads and writes for
    // the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.data)
}

/// Turns tx checksumming, scatter-gather, TSO and GSO off on `ifname` in the caller's
/// namespace. A feature the device cannot change (`EOPNOTSUPP`) is skipped: it is off already
/// or fixed. Afterwards tx checksumming must read back as off.
pub fn offloads_off(ifname: &str) -> Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .map_err(|e| NetnsError::io("opening a socket for ethtool", e))?;
    for (cmd, what) in [
        (ETHTOOL_SGSO, "gso"),
        (ETHTOOL_STSO, "tso"),
        (ETHTOOL_SSG, "sg"),
        (ETHTOOL_STXCSUM, "tx"),
    ] {
        match ethtool(&sock, ifname, cmd, 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(NetnsError::io(format!("ethtool -K {ifname} {what} off"), e)),
        }
    }
    let tx = ethtool(&sock, ifname, ETHTOOL_GTXCSUM, 0)
        .map_err(|e| NetnsError::io(format!("ethtool -k {ifname}"), e))?;
    if tx != 0 {
        return Err(NetnsError::io(
            format!("ethtool -K {ifname} tx off"),
            io::Error::other("tx checksumming is still on"),
        ));
    }
    Ok(())
}

/// [`offloads_off`] for `ifname` inside the namespace at `ns`.
pub fn offloads_off_in(ns: &Path, ifname: &str) -> Result<()> {
    run_in_netns(ns, || offloads_off(ifname))?
}
