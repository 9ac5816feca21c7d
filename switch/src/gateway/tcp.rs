//! TCP termination: one container-side TCP connection joined to one host socket.
//!
//! The gateway plays the peer the container thinks it talks to (passt's way, without a
//! general-purpose TCP stack): the container's segments are acknowledged once their bytes are
//! written to the host socket or queued in a bounded buffer, and the window offered to the
//! container is that buffer's free space, so a slow socket slows the container down instead
//! of growing memory. Bytes read from the host socket are kept until the container
//! acknowledges them and sent within the container's window; loss (only a full port queue can
//! lose a frame on a veth) is repaired by go-back-N on three duplicate ACKs or a timeout.
//!
//! Towards a vnet port, data leaves in GSO frames of up to ~64 KiB; from the container, a GSO
//! super-frame is consumed whole. No timestamps, no SACK: the path is one veth long.

use super::emit::{Out, Path};
use crate::wire::TcpPacket;
use std::io::{self, Read, Write};
use std::net::Shutdown;

/// Bytes buffered towards the host socket (also the largest window offered to the container).
pub const TO_SOCK_CAP: usize = 4 << 20;
/// Bytes read from the host socket and not yet acknowledged by the container.
pub const FROM_SOCK_CAP: usize = 4 << 20;
/// Window scale offered to the container (when it offers one).
const OUR_WSCALE: u8 = 7;
/// MSS offered to the container: its own MTU caps what it sends.
const OUR_MSS: u16 = 65495;
/// Retransmission timeout bounds (ms).
const RTO_MIN: u64 = 200;
const RTO_MAX: u64 = 3000;
/// Consecutive timeouts before the flow is reset.
const MAX_RETRIES: u8 = 10;
/// Payload of one GSO frame (a whole number of segments is cut from it).
const GSO_PAYLOAD: usize = 65000;

pub const FIN: u16 = 0x01;
pub const SYN: u16 = 0x02;
pub const RST: u16 = 0x04;
pub const PSH: u16 = 0x08;
pub const ACK: u16 = 0x10;

#[inline]
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// Connection phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Egress: the container's SYN arrived; the host socket is connecting.
    Connecting,
    /// Inbound (published port): our SYN went to the container; waiting for its SYN-ACK.
    SynSent,
    /// Data flows (the SYN-ACK may still be unacknowledged).
    Open,
    /// Finished or reset: the table removes it.
    Closed,
}

/// What the owner must do after a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// More output is pending (the output batch filled up).
    pub more: bool,
}

/// Options of a SYN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOpts {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
}

/// Parses the MSS and window-scale options.
pub fn parse_syn_opts(opts: &[u8]) -> SynOpts {
    let mut o = SynOpts::default();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match (kind, len) {
                    (2, 4) => o.mss = Some(u16::from_be_bytes([opts[i + 2], opts[i + 3]])),
                    (3, 3) => o.wscale = Some(opts[i + 2].min(14)),
                    _ => {}
                }
                i += len;
            }
        }
    }
    o
}

/// A terminated TCP connection.
pub struct TcpFlow {
    pub path: Path,
    /// (gateway-side port as the container sees it, container port).
    pub ports: (u16, u16),
    pub sock: mio::net::TcpStream,
    pub phase: Phase,
    // container -> socket
    rcv_nxt: u32,
    to_sock: Ring,
    c_fin: bool,
    shut_wr: bool,
    our_wscale: u8,
    last_wnd: u32,
    // socket -> container
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_wnd: u32,
    c_wscale: u8,
    mss: u16,
    buf_seq: u32,
    from_sock: Ring,
    s_eof: bool,
    fin_sent: bool,
    fin_acked: bool,
    pub sock_readable: bool,
    pub sock_writable: bool,
    // timers
    rto: u64,
    rto_at: u64,
    retries: u8,
    dupacks: u8,
    pub last_active: u64,
    ack_pending: bool,
    syn_pending: bool,
    reset_pending: bool,
}

impl std::fmt::Debug for TcpFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFlow")
            .field("phase", &self.phase)
            .field("ports", &self.ports)
            .finish()
    }
}

impl TcpFlow {
    /// Egress: the container sent SYN (`seq`, options); `sock` is connecting.
    pub fn from_syn(
        path: Path,
        ports: (u16, u16),
        sock: mio::net::TcpStream,
        seq: u32,
        opts: SynOpts,
        iss: u32,
        now: u64,
    ) -> TcpFlow {
        let mut f = TcpFlow::blank(path, ports, sock, iss, now);
        f.phase = Phase::Connecting;
        f.rcv_nxt = seq.wrapping_add(1);
        f.set_peer_opts(opts);
        f
    }

    /// Inbound: `sock` was accepted on a published port; we open towards the container.
    pub fn to_container(
        path: Path,
        ports: (u16, u16),
        sock: mio::net::TcpStream,
        iss: u32,
        now: u64,
    ) -> TcpFlow {
        let mut f = TcpFlow::blank(path, ports, sock, iss, now);
        f.phase = Phase::SynSent;
        f.syn_pending = true;
        f.sock_writable = true;
        f
    }

    fn blank(path: Path, ports: (u16, u16), sock: mio::net::TcpStream, iss: u32, now: u64) -> Self {
        TcpFlow {
            path,
            ports,
            sock,
            phase: Phase::Connecting,
            rcv_nxt: 0,
            to_sock: Ring::new(TO_SOCK_CAP),
            c_fin: false,
            shut_wr: false,
            our_wscale: 0,
            last_wnd: 0,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            c_wscale: 0,
            mss: 536,
            buf_seq: iss.wrapping_add(1),
            from_sock: Ring::new(FROM_SOCK_CAP),
            s_eof: false,
            fin_sent: false,
            fin_acked: false,
            sock_readable: false,
            sock_writable: false,
            rto: RTO_MIN,
            rto_at: 0,
            retries: 0,
            dupacks: 0,
            last_active: now,
            ack_pending: false,
            syn_pending: false,
            reset_pending: false,
        }
    }

    fn set_peer_opts(&mut self, o: SynOpts) {
        self.mss = o.mss.unwrap_or(536).clamp(64, 65000);
        match o.wscale {
            Some(ws) => {
                self.c_wscale = ws;
                self.our_wscale = OUR_WSCALE;
            }
            None => {
                self.c_wscale = 0;
                self.our_wscale = 0;
            }
        }
    }

    /// True once the flow is over (the owner removes it).
    pub fn closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True when a timer is armed or the flow is half-way through something.
    pub fn busy(&self) -> bool {
        self.rto_at != 0
    }

    /// True when the flow has an established data phase (for idle timeouts).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open && !self.c_fin && !self.s_eof
    }

    fn window(&self) -> u16 {
        let free = TO_SOCK_CAP - self.to_sock.len();
        ((free >> self.our_wscale).min(65535)) as u16
    }

    /// The socket finished connecting (egress): answer the container's SYN.
    pub fn connected(&mut self, now: u64) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.phase = Phase::Open;
        self.sock_writable = true;
        self.sock_readable = true;
        self.syn_pending = true;
        self.last_active = now;
    }

    /// The host socket could not connect: the next `output` resets the container side.
    pub fn connect_failed(&mut self) {
        self.reset_pending = true;
        self.phase = Phase::Open;
    }

    /// The host socket refused or failed: reset the container side. True when `out` was full.
    pub fn fail(&mut self, out: &mut Out) -> bool {
        let ack = self.rcv_nxt;
        if !out.tcp(
            &self.path,
            self.ports,
            self.snd_nxt,
            ack,
            RST | ACK,
            0,
            &[],
            0,
            0,
            |_| {},
        ) {
            self.reset_pending = true;
            return true;
        }
        self.phase = Phase::Closed;
        false
    }

    /// A segment from the container.
    pub fn segment(&mut self, t: &TcpPacket<&[u8]>, now: u64, out: &mut Out) {
        self.last_active = now;
        let flags = t.flags().0;
        let seq = t.seq_number();
        if flags & RST != 0 {
            self.phase = Phase::Closed;
            let _ = self.sock.shutdown(Shutdown::Both);
            return;
        }
        match self.phase {
            Phase::Closed => return,
            Phase::Connecting => return, // a retransmitted SYN: the connect is under way
            Phase::SynSent => {
                if flags & (SYN | ACK) == SYN | ACK && t.ack_number() == self.iss.wrapping_add(1) {
                    self.set_peer_opts(parse_syn_opts(t.options()));
                    self.rcv_nxt = seq.wrapping_add(1);
                    self.snd_una = t.ack_number();
                    self.snd_nxt = self.snd_una;
                    self.snd_max = self.snd_una;
                    self.snd_wnd = u32::from(t.window_len()); // never scaled in a SYN
                    self.phase = Phase::Open;
                    self.sock_readable = true;
                    self.rto_at = 0;
                    self.retries = 0;
                    self.ack_pending = true;
                }
                return;
            }
            Phase::Open => {}
        }
        if flags & SYN != 0 {
            // Our SYN-ACK was lost: the container repeats its SYN.
            if seq.wrapping_add(1) == self.rcv_nxt && self.snd_una == self.iss {
                self.syn_pending = true;
            }
            return;
        }
        if flags & ACK != 0 {
            self.on_ack(t.ack_number(), t.window_len(), t.payload().is_empty(), now);
        }
        // Data.
        let payload = t.payload();
        let mut data = payload;
        let mut dseq = seq;
        if seq_lt(dseq, self.rcv_nxt) {
            let skip = self.rcv_nxt.wrapping_sub(dseq) as usize;
            if skip > data.len() {
                // Entirely old (a retransmission): acknowledge again.
                if !data.is_empty() || flags & FIN != 0 {
                    self.ack_pending = true;
                }
                return;
            }
            data = &data[skip..];
            dseq = self.rcv_nxt;
        }
        if dseq != self.rcv_nxt {
            // Out of order: ask for what is missing.
            self.ack_pending = true;
            return;
        }
        if !data.is_empty() {
            if self.c_fin {
                return;
            }
            let took = self.take(data);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(took as u32);
            self.ack_pending = true;
            if took < data.len() {
                return; // the FIN (if any) comes again with the rest
            }
        }
        if flags & FIN != 0 && !self.c_fin {
            self.c_fin = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.ack_pending = true;
            self.maybe_shutdown();
        }
        let _ = out;
    }

    fn on_ack(&mut self, ack: u32, win: u16, pure: bool, now: u64) {
        let wnd = u32::from(win) << self.c_wscale;
        if seq_lt(self.snd_una, ack) && seq_le(ack, self.snd_max) {
            // New data acknowledged.
            let mut acked = ack.wrapping_sub(self.buf_seq) as usize;
            if seq_lt(ack, self.buf_seq) {
                acked = 0; // only the SYN
            }
            let drop = acked.min(self.from_sock.len());
            self.from_sock.consume(drop);
            self.buf_seq = self.buf_seq.wrapping_add(drop as u32);
            if self.fin_sent && ack == self.snd_max {
                self.fin_acked = true;
            }
            self.snd_una = ack;
            if seq_lt(self.snd_nxt, ack) {
                self.snd_nxt = ack;
            }
            self.dupacks = 0;
            self.retries = 0;
            self.rto = RTO_MIN;
            self.rto_at = if self.snd_una != self.snd_max {
                now + self.rto
            } else {
                0
            };
            if drop > 0 && !self.s_eof {
                // Room in the buffer again: read more.
                self.sock_readable = true;
            }
        } else if ack == self.snd_una && pure && self.snd_una != self.snd_max && wnd == self.snd_wnd
        {
            self.dupacks += 1;
            if self.dupacks == 3 {
                self.go_back();
            }
        }
        self.snd_wnd = wnd;
    }

    fn go_back(&mut self) {
        self.snd_nxt = self.snd_una;
        if self.fin_sent && !self.fin_acked {
            self.fin_sent = false;
        }
        if self.snd_una == self.iss && self.phase == Phase::Open {
            self.syn_pending = true;
        }
    }

    /// Accepts container bytes: straight into the socket when nothing is queued, the rest into
    /// the buffer. Returns how many were accepted.
    fn take(&mut self, data: &[u8]) -> usize {
        let room = TO_SOCK_CAP - self.to_sock.len();
        let data = &data[..data.len().min(room)];
        let mut written = 0;
        if self.to_sock.is_empty() && self.sock_writable {
            match self.sock.write(data) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.sock_writable = false;
                    self.s_eof = true;
                }
            }
            if written < data.len() {
                self.sock_writable = false;
            }
        }
        self.to_sock.extend(&data[written..]);
        data.len()
    }

    /// Writes queued bytes to the socket.
    fn flush_sock(&mut self) -> io::Result<()> {
        while self.sock_writable && !self.to_sock.is_empty() {
            let (a, _) = self.to_sock.as_slices();
            match self.sock.write(a) {
                Ok(0) => break,
                Ok(n) => self.to_sock.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.maybe_shutdown();
        Ok(())
    }

    fn maybe_shutdown(&mut self) {
        if self.c_fin && !self.shut_wr && self.to_sock.is_empty() {
            let _ = self.sock.shutdown(Shutdown::Write);
            self.shut_wr = true;
        }
    }

    /// Reads from the socket into the send buffer.
    fn fill_from_sock(&mut self) -> io::Result<()> {
        while self.sock_readable && !self.s_eof {
            if self.from_sock.free() == 0 {
                break; // stays readable: read again once the container acknowledges
            }
            match self.sock.read(self.from_sock.spare()) {
                Ok(0) => self.s_eof = true,
                Ok(k) => self.from_sock.commit(k),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock_readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Emits what is due: SYN or SYN-ACK, data within the window, FIN, a pending ACK.
    /// Returns true when the output filled before the flow was done.
    pub fn output(&mut self, now: u64, out: &mut Out) -> bool {
        if self.phase == Phase::Closed || self.phase == Phase::Connecting {
            return false;
        }
        if self.reset_pending {
            return self.fail(out);
        }
        if self.syn_pending {
            let mut opts = [0u8; 8];
            opts[0] = 2;
            opts[1] = 4;
            opts[2..4].copy_from_slice(&OUR_MSS.to_be_bytes());
            opts[4] = 1;
            opts[5] = 3;
            opts[6] = 3;
            opts[7] = OUR_WSCALE;
            let (flags, ack, olen) = if self.phase == Phase::SynSent {
                (SYN, 0, 8)
            } else if self.our_wscale != 0 {
                (SYN | ACK, self.rcv_nxt, 8)
            } else {
                (SYN | ACK, self.rcv_nxt, 4)
            };
            let win = (TO_SOCK_CAP.min(65535)) as u16;
            if !out.tcp(
                &self.path,
                self.ports,
                self.iss,
                ack,
                flags,
                win,
                &opts[..olen],
                0,
                0,
                |_| {},
            ) {
                return true;
            }
            self.syn_pending = false;
            self.snd_nxt = self.iss.wrapping_add(1);
            if seq_lt(self.snd_max, self.snd_nxt) {
                self.snd_max = self.snd_nxt;
            }
            if self.rto_at == 0 {
                self.rto_at = now + self.rto;
            }
            self.ack_pending = false;
        }
        if self.phase != Phase::Open {
            return false;
        }
        if self.flush_sock().is_err() || self.fill_from_sock().is_err() {
            return self.fail(out);
        }
        if self.snd_una == self.iss {
            // The SYN-ACK is not acknowledged yet: no data before it.
            return self.ack_out(out);
        }
        // Data within the container's window.
        let max_seg = if self.path.vnet {
            let m = self.mss as usize;
            (GSO_PAYLOAD.min(out.max_frame() - 60) / m).max(1) * m
        } else {
            self.mss as usize
        };
        loop {
            let off = self.snd_nxt.wrapping_sub(self.buf_seq) as usize;
            if off >= self.from_sock.len() {
                break;
            }
            let avail = self.from_sock.len() - off;
            let wnd_end = self.snd_una.wrapping_add(self.snd_wnd);
            let can = if seq_lt(self.snd_nxt, wnd_end) {
                wnd_end.wrapping_sub(self.snd_nxt) as usize
            } else {
                0
            };
            let n = avail.min(can).min(max_seg);
            if n == 0 {
                break;
            }
            let win = self.window();
            let flags = if n == avail { ACK | PSH } else { ACK };
            let (a, b) = self.from_sock.as_slices();
            let mss = self.mss;
            let ok = out.tcp(
                &self.path,
                self.ports,
                self.snd_nxt,
                self.rcv_nxt,
                flags,
                win,
                &[],
                n,
                mss,
                |dst| copy_range(a, b, off, dst),
            );
            if !ok {
                return true;
            }
            self.last_wnd = u32::from(win);
            self.ack_pending = false;
            self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
            if seq_lt(self.snd_max, self.snd_nxt) {
                self.snd_max = self.snd_nxt;
            }
            if self.rto_at == 0 {
                self.rto_at = now + self.rto;
            }
        }
        // FIN once everything read was sent.
        let all_sent = self.snd_nxt.wrapping_sub(self.buf_seq) as usize == self.from_sock.len();
        if self.s_eof && !self.fin_sent && all_sent {
            let win = self.window();
            if !out.tcp(
                &self.path,
                self.ports,
                self.snd_nxt,
                self.rcv_nxt,
                FIN | ACK,
                win,
                &[],
                0,
                0,
                |_| {},
            ) {
                return true;
            }
            self.fin_sent = true;
            self.ack_pending = false;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            if seq_lt(self.snd_max, self.snd_nxt) {
                self.snd_max = self.snd_nxt;
            }
            if self.rto_at == 0 {
                self.rto_at = now + self.rto;
            }
        }
        // A window update when the buffer drained a lot since the last advertisement.
        let win = u32::from(self.window());
        if win > self.last_wnd.saturating_mul(2) + 16 {
            self.ack_pending = true;
        }
        if self.ack_out(out) {
            return true;
        }
        if self.c_fin && self.shut_wr && self.fin_acked {
            self.phase = Phase::Closed;
        }
        false
    }

    fn ack_out(&mut self, out: &mut Out) -> bool {
        if !self.ack_pending {
            return false;
        }
        let win = self.window();
        if !out.tcp(
            &self.path,
            self.ports,
            self.snd_nxt,
            self.rcv_nxt,
            ACK,
            win,
            &[],
            0,
            0,
            |_| {},
        ) {
            return true;
        }
        self.last_wnd = u32::from(win);
        self.ack_pending = false;
        false
    }

    /// Timer check. Returns true when something is due (the owner calls `output`).
    pub fn timer(&mut self, now: u64) -> bool {
        if self.rto_at == 0 || now < self.rto_at {
            return false;
        }
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            self.phase = Phase::Closed;
            return false;
        }
        self.rto = (self.rto * 2).min(RTO_MAX);
        self.rto_at = now + self.rto;
        match self.phase {
            Phase::SynSent => self.syn_pending = true,
            Phase::Open => {
                if self.snd_wnd == 0 && self.snd_una != self.snd_max {
                    // Zero window: ask for a fresh window.
                    self.ack_pending = true;
                }
                self.go_back();
            }
            _ => {}
        }
        true
    }

    /// Bytes queued in both directions (for listings and tests).
    pub fn queued(&self) -> (usize, usize) {
        (self.to_sock.len(), self.from_sock.len())
    }
}

/// Copies `dst.len()` bytes starting at `off` of the two-part buffer (a, b).
fn copy_range(a: &[u8], b: &[u8], off: usize, dst: &mut [u8]) {
    let n = dst.len();
    if off < a.len() {
        let k = (a.len() - off).min(n);
        dst[..k].copy_from_slice(&a[off..off + k]);
        if k < n {
            dst[k..].copy_from_slice(&b[..n - k]);
        }
    } else {
        let o = off - a.len();
        dst.copy_from_slice(&b[o..o + n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_options() {
        let o = parse_syn_opts(&[
            2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(
            o,
            SynOpts {
                mss: Some(1460),
                wscale: Some(7)
            }
        );
        assert_eq!(parse_syn_opts(&[]), SynOpts::default());
        // Truncated and bogus options stop the parse without panicking.
        assert_eq!(parse_syn_opts(&[2, 4, 5]), SynOpts::default());
        assert_eq!(parse_syn_opts(&[8, 0, 2, 4, 1, 1]), SynOpts::default());
        assert_eq!(parse_syn_opts(&[3, 3, 99]).wscale, Some(14));
    }

    #[test]
    fn sequence_compare_wraps() {
        assert!(seq_lt(u32::MAX - 1, 2));
        assert!(!seq_lt(2, u32::MAX - 1));
        assert!(seq_le(5, 5));
    }

    #[test]
    fn copy_range_across_halves() {
        let mut d = [0u8; 4];
        copy_range(b"abc", b"def", 1, &mut d);
        assert_eq!(&d, b"bcde");
        copy_range(b"abc", b"def", 3, &mut d[..2]);
        assert_eq!(&d[..2], b"de");
    }
}

/// A byte ring of fixed capacity, allocated on first use, that a socket can read into
/// directly (no bounce buffer).
pub struct Ring {
    buf: Vec<u8>,
    cap: usize,
    head: usize,
    len: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            buf: Vec::new(),
            cap,
            head: 0,
            len: 0,
        }
    }
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub fn free(&self) -> usize {
        self.cap - self.len
    }
    /// The contiguous free space after the data (commit what was written with `commit`).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.cap];
        }
        let tail = (self.head + self.len) % self.cap;
        let end = if self.len == self.cap {
            tail
        } else if tail >= self.head {
            self.cap
        } else {
            self.head
        };
        &mut self.buf[tail..end]
    }
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }
    pub fn extend(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.free() > 0 {
            let s = self.spare();
            let k = s.len().min(data.len());
            s[..k].copy_from_slice(&data[..k]);
            self.commit(k);
            data = &data[k..];
        }
    }
    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.cap
        };
    }
    /// The data as two slices, in order.
    pub fn as_slices(&self) -> (&[u8], &[u8]) {
        if self.len == 0 {
            return (&[], &[]);
        }
        let end = self.head + self.len;
        if end <= self.cap {
            (&self.buf[self.head..end], &[])
        } else {
            (&self.buf[self.head..], &self.buf[..end - self.cap])
        }
    }
}

#[cfg(test)]
mod ring_tests {
    use super::Ring;

    #[test]
    fn ring_wraps_and_keeps_order() {
        let mut r = Ring::new(8);
        r.extend(b"abcdef");
        r.consume(4);
        r.extend(b"ghijkl");
        assert_eq!(r.len(), 8);
        assert_eq!(r.free(), 0);
        let (a, b) = r.as_slices();
        assert_eq!([a, b].concat(), b"efghijkl");
        r.extend(b"x"); // full: ignored
        r.consume(8);
        assert!(r.is_empty());
        let s = r.spare();
        assert_eq!(s.len(), 8);
        s[..3].copy_from_slice(b"xyz");
        r.commit(3);
        assert_eq!(r.as_slices().0, b"xyz");
    }
}
