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
//! Container bytes that arrive out of order (after a lost or reordered frame) are kept in the
//! buffer's free space, where they will sit once the gap is filled, and reported back with SACK
//! blocks (RFC 2018) when the container offered SACK: its sender then resends just the gap
//! (RACK/SACK recovery) instead of waiting for a timeout and the whole window. Up to
//! [`OOO_RANGES`] separate ranges are held; a segment that would need more is dropped.
//!
//! Towards a vnet port, data leaves in GSO frames of up to ~64 KiB; from the container, a GSO
//! super-frame is consumed whole. No timestamps: the path is one veth long.

use super::emit::{Out, Path};
use crate::wire::TcpPacket;
use std::io::{self, Read, Write};
use std::net::Shutdown;

/// The host side of a terminated connection: the byte stream the engine reads from and
/// writes to. The engine does no I/O of its own beyond these three calls, so it runs the same
/// against a host socket (`mio::net::TcpStream`, non-blocking) and against a stream in memory
/// (unit tests, the `nat_tcp` fuzz target). `WouldBlock` means "not now": the owner sets
/// [`TcpFlow::sock_readable`] / [`TcpFlow::sock_writable`] again when the stream is ready.
pub trait HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()>;
}

impl HostStream for mio::net::TcpStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }
    #[inline]
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        mio::net::TcpStream::shutdown(self, how)
    }
}

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
/// Separate out-of-order ranges held from the container (also the most SACK blocks sent:
/// 2 + 8 * 4 = 34 option bytes, within TCP's 40).
pub const OOO_RANGES: usize = 4;

pub use crate::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN};

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
    /// SACK-permitted (option 4).
    pub sack: bool,
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
                    (4, 2) => o.sack = true,
                    _ => {}
                }
                i += len;
            }
        }
    }
    o
}

/// A terminated TCP connection: the container's side as segments, the host's as a
/// [`HostStream`].
pub struct TcpFlow<S = mio::net::TcpStream> {
    pub path: Path,
    /// (gateway-side port as the container sees it, container port).
    pub ports: (u16, u16),
    pub sock: S,
    pub phase: Phase,
    // container -> socket
    rcv_nxt: u32,
    to_sock: Ring,
    c_fin: bool,
    shut_wr: bool,
    our_wscale: u8,
    last_wnd: u32,
    /// Container bytes beyond a gap, held in `to_sock`'s free space.
    ooo: OooRanges,
    /// The container offered SACK (we answer with SACK blocks).
    sack_ok: bool,
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

impl<S> std::fmt::Debug for TcpFlow<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFlow")
            .field("phase", &self.phase)
            .field("ports", &self.ports)
            .finish()
    }
}

impl<S: HostStream> TcpFlow<S> {
    /// Egress: the container sent SYN (`seq`, options); `sock` is connecting.
    pub fn from_syn(
        path: Path,
        ports: (u16, u16),
        sock: S,
        seq: u32,
        opts: SynOpts,
        iss: u32,
        now: u64,
    ) -> Self {
        let mut f = TcpFlow::blank(path, ports, sock, iss, now);
        f.phase = Phase::Connecting;
        f.rcv_nxt = seq.wrapping_add(1);
        f.set_peer_opts(opts);
        f
    }

    /// Inbound: `sock` was accepted on a published port; we open towards the container.
    pub fn to_container(path: Path, ports: (u16, u16), sock: S, iss: u32, now: u64) -> Self {
        let mut f = TcpFlow::blank(path, ports, sock, iss, now);
        f.phase = Phase::SynSent;
        f.syn_pending = true;
        f.sock_writable = true;
        f
    }

    fn blank(path: Path, ports: (u16, u16), sock: S, iss: u32, now: u64) -> Self {
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
            ooo: OooRanges::default(),
            sack_ok: false,
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

    /// Replaces the default 4 MiB buffers (before any byte moved): `to_sock` also bounds the
    /// window offered to the container. Small buffers make the fuzzer reach the full-buffer
    /// paths. Both are at least 1 byte.
    pub fn with_buffers(mut self, to_sock: usize, from_sock: usize) -> Self {
        debug_assert!(self.to_sock.is_empty() && self.from_sock.is_empty());
        self.to_sock = Ring::new(to_sock.max(1));
        self.from_sock = Ring::new(from_sock.max(1));
        self
    }

    fn set_peer_opts(&mut self, o: SynOpts) {
        self.mss = o.mss.unwrap_or(536).clamp(64, 65000);
        self.sack_ok = o.sack;
        match o.wscale {
            Some(ws) => {
                self.c_wscale = ws.min(14); // RFC 7323: larger is taken as 14
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
        let free = self.to_sock.free();
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

    /// A segment from the container. True when its bytes arrived past a gap and were held.
    pub fn segment(&mut self, t: &TcpPacket<&[u8]>, now: u64, out: &mut Out) -> bool {
        self.last_active = now;
        let flags = t.flags();
        let seq = t.seq_number();
        if flags & RST != 0 {
            self.phase = Phase::Closed;
            let _ = self.sock.shutdown(Shutdown::Both);
            return false;
        }
        match self.phase {
            Phase::Closed => return false,
            Phase::Connecting => return false, // a retransmitted SYN: the connect is under way
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
                } else if flags & ACK != 0 && t.ack_number() != self.iss.wrapping_add(1) {
                    // RFC 793: an unacceptable ACK in SYN-SENT is answered <SEQ=SEG.ACK><RST>.
                    // It comes from an older connection on the same port pair that the
                    // container keeps in TIME-WAIT (a new worker or daemon reuses the port):
                    // the reset ends it, and the SYN retransmitted on the timer is accepted.
                    let _ = out.tcp(
                        &self.path,
                        self.ports,
                        t.ack_number(),
                        0,
                        RST,
                        0,
                        &[],
                        0,
                        0,
                        |_| {},
                    );
                }
                return false;
            }
            Phase::Open => {}
        }
        if flags & SYN != 0 {
            // Our SYN-ACK was lost: the container repeats its SYN.
            if seq.wrapping_add(1) == self.rcv_nxt && self.snd_una == self.iss {
                self.syn_pending = true;
            }
            return false;
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
                return false;
            }
            data = &data[skip..];
            dseq = self.rcv_nxt;
        }
        if dseq != self.rcv_nxt {
            // Out of order: keep it for when the gap fills, and ask for what is missing.
            let held = !data.is_empty() && !self.c_fin && self.hold(dseq, data);
            self.ack_pending = true;
            return held;
        }
        if !data.is_empty() {
            if self.c_fin {
                return false;
            }
            let took = self.take(data);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(took as u32);
            self.ack_pending = true;
            self.join_held();
            if took < data.len() {
                return false; // the FIN (if any) comes again with the rest
            }
        }
        if flags & FIN != 0 && !self.c_fin {
            self.c_fin = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.ack_pending = true;
            self.maybe_shutdown();
        }
        let _ = out;
        false
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
            self.from_sock.rewind_if_empty();
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

    /// Keeps container bytes that start `seq - rcv_nxt` bytes past the gap, in the buffer's
    /// free space where they belong; what does not fit the window (or needs a fifth range) is
    /// dropped and comes again.
    /// True when something was kept.
    fn hold(&mut self, seq: u32, data: &[u8]) -> bool {
        let off = seq.wrapping_sub(self.rcv_nxt) as usize;
        let room = self.to_sock.free();
        if off >= room {
            return false;
        }
        let data = &data[..data.len().min(room - off)];
        if !self.ooo.insert(seq, seq.wrapping_add(data.len() as u32)) {
            return false;
        }
        self.to_sock.write_at(off, data);
        true
    }

    /// After in-order bytes: takes in every held range the gap no longer separates.
    fn join_held(&mut self) {
        while let Some((start, end)) = self.ooo.first() {
            if seq_lt(self.rcv_nxt, start) {
                break;
            }
            if seq_lt(self.rcv_nxt, end) {
                // The bytes already sit right after the buffer's tail.
                self.to_sock.commit(end.wrapping_sub(self.rcv_nxt) as usize);
                self.rcv_nxt = end;
            }
            self.ooo.pop_first();
        }
    }

    /// The SACK option for an ACK (NOP, NOP, kind 5, blocks), empty when there is nothing to
    /// report or the container did not offer SACK.
    fn sack_option<'a>(&self, buf: &'a mut [u8; 36]) -> &'a [u8] {
        if !self.sack_ok || self.ooo.is_empty() {
            return &[];
        }
        let n = self.ooo.len();
        buf[..4].copy_from_slice(&[1, 1, 5, (2 + 8 * n) as u8]);
        for (i, (start, end)) in self.ooo.blocks().enumerate() {
            buf[4 + 8 * i..8 + 8 * i].copy_from_slice(&start.to_be_bytes());
            buf[8 + 8 * i..12 + 8 * i].copy_from_slice(&end.to_be_bytes());
        }
        &buf[..4 + 8 * n]
    }

    /// Accepts container bytes: straight into the socket when nothing is queued (and nothing
    /// is held past a gap), the rest into the buffer. Returns how many were accepted.
    fn take(&mut self, data: &[u8]) -> usize {
        let room = self.to_sock.free();
        let data = &data[..data.len().min(room)];
        let mut written = 0;
        if self.to_sock.is_empty() && self.sock_writable && self.ooo.is_empty() {
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
        if self.ooo.is_empty() {
            // Held bytes are placed relative to the tail; with none, start over at offset 0.
            self.to_sock.rewind_if_empty();
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
            // MSS, then window scale and SACK-permitted where they apply (NOP-padded).
            let mut opts = [0u8; 12];
            let mut olen = 4;
            opts[..2].copy_from_slice(&[2, 4]);
            opts[2..4].copy_from_slice(&OUR_MSS.to_be_bytes());
            let syn = self.phase == Phase::SynSent;
            if syn || self.our_wscale != 0 {
                opts[olen..olen + 4].copy_from_slice(&[1, 3, 3, OUR_WSCALE]);
                olen += 4;
            }
            if syn || self.sack_ok {
                opts[olen..olen + 4].copy_from_slice(&[1, 1, 4, 2]);
                olen += 4;
            }
            let (flags, ack) = if syn {
                (SYN, 0)
            } else {
                (SYN | ACK, self.rcv_nxt)
            };
            let win = (self.to_sock.capacity().min(65535)) as u16;
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
            let mut sbuf = [0u8; 36];
            let sack = self.sack_option(&mut sbuf);
            let (a, b) = self.from_sock.as_slices();
            let mss = self.mss;
            let ok = out.tcp(
                &self.path,
                self.ports,
                self.snd_nxt,
                self.rcv_nxt,
                flags,
                win,
                sack,
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
        let mut sbuf = [0u8; 36];
        let sack = self.sack_option(&mut sbuf);
        if !out.tcp(
            &self.path,
            self.ports,
            self.snd_nxt,
            self.rcv_nxt,
            ACK,
            win,
            sack,
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
                wscale: Some(7),
                sack: true,
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
    fn ooo_ranges_merge_and_report_the_newest_first() {
        let mut o = OooRanges::default();
        assert!(o.insert(100, 200));
        assert!(o.insert(300, 400));
        assert!(o.insert(500, 600));
        assert_eq!(
            o.blocks().collect::<Vec<_>>(),
            [(500, 600), (100, 200), (300, 400)]
        );
        // Touching and overlapping ranges merge, across several ranges at once.
        assert!(o.insert(200, 300));
        assert_eq!(o.len(), 2);
        assert!(o.insert(350, 550));
        assert_eq!(o.blocks().collect::<Vec<_>>(), [(100, 600)]);
        // A fifth separate range is refused.
        for k in 1..4 {
            assert!(o.insert(1000 * k, 1000 * k + 10));
        }
        assert!(!o.insert(9000, 9010));
        assert_eq!(o.len(), 4);
        o.pop_first();
        assert_eq!(o.first(), Some((1000, 1010)));
        // Sequence numbers wrap.
        let mut w = OooRanges::default();
        assert!(w.insert(u32::MAX - 10, 5));
        assert!(w.insert(5, 20));
        assert_eq!(w.first(), Some((u32::MAX - 10, 20)));
    }

    /// A connected loopback pair: the flow's host socket and the far end that reads it.
    fn socket_pair() -> (mio::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        (mio::net::TcpStream::from_std(a), b)
    }

    /// A segment from the container: ports (1234 -> 80), no options.
    fn seg(seq: u32, ack: u32, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20 + payload.len()];
        t[0..2].copy_from_slice(&1234u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags as u8;
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        t[20..].copy_from_slice(payload);
        t
    }

    /// The (ack, SACK blocks) of the last frame `out` holds.
    fn last_ack(out: &Out) -> (u32, Vec<(u32, u32)>) {
        use crate::wire::{EthernetFrame, Ipv4Packet};
        let f = out.batch().frame(out.len() - 1);
        let eth = EthernetFrame::new_checked(f).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        let o = t.options();
        let mut blocks = Vec::new();
        if let Some(i) = (0..o.len().saturating_sub(1)).find(|&i| o[i] == 5) {
            let n = (o[i + 1] as usize - 2) / 8;
            for b in 0..n {
                let at = i + 2 + 8 * b;
                let word = |k: usize| u32::from_be_bytes(o[k..k + 4].try_into().unwrap());
                blocks.push((word(at), word(at + 4)));
            }
        }
        (t.ack_number(), blocks)
    }

    /// The path of the tests' flows: container 10.0.0.2 behind port 1, the gateway 10.0.0.1.
    fn test_path() -> Path {
        Path {
            port: crate::port::PortId(1),
            vnet: false,
            src_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    fn flow_with_sack(sack: bool) -> (TcpFlow, std::net::TcpStream, Out) {
        let (sock, far) = socket_pair();
        let path = test_path();
        let opts = SynOpts {
            mss: Some(1000),
            wscale: Some(7),
            sack,
        };
        let mut f = TcpFlow::from_syn(path, (80, 1234), sock, 999, opts, 5000, 0);
        f.connected(0);
        let mut out = Out::new();
        assert!(!f.output(0, &mut out)); // SYN-ACK
        let s = seg(1000, 5001, ACK, &[]);
        f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 0, &mut out);
        out.flush(&mut Discard);
        (f, far, out)
    }

    struct Discard;
    impl super::super::emit::Sink for Discard {
        fn send(&mut self, _p: crate::port::PortId, _b: &crate::batch::Batch, s: &[u16]) -> usize {
            s.len()
        }
    }

    fn read_exact(far: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
        far.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut v = vec![0u8; n];
        far.read_exact(&mut v).unwrap();
        v
    }

    #[test]
    fn out_of_order_bytes_are_held_sacked_and_delivered_in_order() {
        let (mut f, mut far, mut out) = flow_with_sack(true);
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let feed = |f: &mut TcpFlow, out: &mut Out, off: usize, len: usize| {
            let s = seg(1000 + off as u32, 5001, ACK, &data[off..off + len]);
            let held = f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 1, out);
            assert!(!f.output(1, out));
            held
        };
        // Bytes 0..1000 arrive, 1000..2000 are lost, 2000..3000 and 3000..4000 arrive.
        assert!(!feed(&mut f, &mut out, 0, 1000));
        assert_eq!(last_ack(&out), (2000, vec![]));
        assert!(feed(&mut f, &mut out, 3000, 1000));
        assert_eq!(last_ack(&out), (2000, vec![(4000, 5000)]));
        assert!(feed(&mut f, &mut out, 2000, 1000));
        assert_eq!(last_ack(&out), (2000, vec![(3000, 5000)]));
        assert_eq!(f.queued().0, 0, "nothing past the gap reaches the socket");
        // The gap is filled: everything is acknowledged and reaches the socket in order.
        assert!(!feed(&mut f, &mut out, 1000, 1000));
        assert_eq!(last_ack(&out), (5000, vec![]));
        assert_eq!(read_exact(&mut far, 4000), data);
    }

    #[test]
    fn without_sack_held_bytes_still_spare_a_resend() {
        let (mut f, mut far, mut out) = flow_with_sack(false);
        let data = [7u8; 3000];
        for off in [0usize, 2000] {
            let s = seg(1000 + off as u32, 5001, ACK, &data[off..off + 1000]);
            f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 1, &mut out);
            assert!(!f.output(1, &mut out));
        }
        assert_eq!(
            last_ack(&out),
            (2000, vec![]),
            "no SACK blocks unless offered"
        );
        let s = seg(2000, 5001, ACK, &data[1000..2000]);
        f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 1, &mut out);
        assert!(!f.output(1, &mut out));
        assert_eq!(last_ack(&out).0, 4000);
        assert_eq!(read_exact(&mut far, 3000), data);
    }

    /// The TCP header of frame `i` of `out`: (seq, ack, flags).
    fn header(out: &Out, i: usize) -> (u32, u32, u16) {
        use crate::wire::{EthernetFrame, Ipv4Packet};
        let eth = EthernetFrame::new_checked(out.batch().frame(i)).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        (t.seq_number(), t.ack_number(), t.flags())
    }

    #[test]
    fn a_window_scale_over_14_counts_as_14() {
        // RFC 7323 caps the shift at 14; a larger one (the fuzzer's first find: the shift
        // overflowed) must neither panic nor scale by more.
        let (sock, _far) = socket_pair();
        let opts = SynOpts {
            mss: Some(1000),
            wscale: Some(200),
            sack: false,
        };
        let mut f = TcpFlow::from_syn(test_path(), (80, 1234), sock, 999, opts, 5000, 0);
        f.connected(0);
        let mut out = Out::new();
        assert!(!f.output(0, &mut out));
        let s = seg(1000, 5001, ACK, &[]);
        let mut s = s;
        s[14..16].copy_from_slice(&3u16.to_be_bytes());
        f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 0, &mut out);
        assert_eq!(f.snd_wnd, 3 << 14);
    }

    /// A published port's connection towards a container whose old connection on the same
    /// port pair is in TIME-WAIT (the switch restarted and reused the port): the container
    /// answers the SYN with an ACK of the old connection, the flow resets it (RFC 793), and
    /// the next SYN-ACK opens the flow.
    #[test]
    fn syn_sent_answers_an_old_connections_ack_with_a_reset() {
        let (sock, _far) = socket_pair();
        let path = test_path();
        let mut f = TcpFlow::to_container(path, (80, 1234), sock, 5000, 0);
        let mut out = Out::new();
        assert!(!f.output(0, &mut out));
        assert_eq!(header(&out, 0).2, SYN);
        // TIME-WAIT's answer: an ACK for the old connection's sequence space.
        let s = seg(777, 123_456, ACK, &[]);
        f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 1, &mut out);
        assert_eq!(out.len(), 2, "a reset is sent");
        assert_eq!(header(&out, 1), (123_456, 0, RST));
        assert!(!f.closed(), "the flow waits to retransmit its SYN");
        // The SYN-ACK of the new connection opens the flow.
        let s = seg(9000, 5001, SYN | ACK, &[]);
        f.segment(&TcpPacket::new_checked(&s[..]).unwrap(), 2, &mut out);
        assert!(f.is_open());
        assert_eq!(out.len(), 2, "nothing more to reset");
    }

    /// A host stream in memory: `input` is what the host sends; `written` what it received.
    #[derive(Default)]
    struct Mem {
        input: Vec<u8>,
        read_at: usize,
        eof: bool,
        written: Vec<u8>,
        /// Bytes accepted before the stream blocks.
        room: usize,
        reset: bool,
        shut: bool,
    }

    impl HostStream for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let n = buf.len().min(self.input.len() - self.read_at);
            if n == 0 && !self.eof {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.input[self.read_at..self.read_at + n]);
            self.read_at += n;
            Ok(n)
        }
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.reset {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.written.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn shutdown(&mut self, _how: Shutdown) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
    }

    /// An egress flow past its handshake (container ISN 999, ours 5000, MSS 1000, window
    /// 65535 unscaled) over a host stream in memory that accepts everything.
    fn mem_flow() -> (TcpFlow<Mem>, Out) {
        let host = Mem {
            room: usize::MAX,
            ..Mem::default()
        };
        let opts = SynOpts {
            mss: Some(1000),
            wscale: None,
            sack: true,
        };
        let mut f = TcpFlow::from_syn(test_path(), (80, 1234), host, 999, opts, 5000, 0);
        f.connected(0);
        let mut out = Out::new();
        assert!(!f.output(0, &mut out));
        assert_eq!(header(&out, 0), (5000, 1000, SYN | ACK));
        give(&mut f, &mut out, 0, &seg(1000, 5001, ACK, &[]));
        (f, out)
    }

    /// A segment from the container at time `now`.
    fn give(f: &mut TcpFlow<Mem>, out: &mut Out, now: u64, s: &[u8]) {
        f.segment(&TcpPacket::new_checked(s).unwrap(), now, out);
    }

    /// The (seq, payload length) of every data frame in `out`, from frame `from` on.
    fn data_frames(out: &Out, from: usize) -> Vec<(u32, usize)> {
        use crate::wire::{EthernetFrame, Ipv4Packet};
        (from..out.len())
            .filter_map(|i| {
                let eth = EthernetFrame::new_checked(out.batch().frame(i)).unwrap();
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                (!t.payload().is_empty()).then(|| (t.seq_number(), t.payload().len()))
            })
            .collect()
    }

    #[test]
    fn three_duplicate_acks_resend_from_the_first_unacknowledged_byte() {
        let (mut f, mut out) = mem_flow();
        f.sock.input = vec![1; 5000];
        f.sock_readable = true;
        let n = out.len();
        assert!(!f.output(1, &mut out));
        let sent = data_frames(&out, n);
        assert_eq!(sent.len(), 5, "five MSS-sized segments: {sent:?}");
        assert_eq!(sent[0], (5001, 1000));
        // The second segment is lost: the container acks the first, then repeats that ack
        // for each later segment. Two duplicates are not yet a loss; the third is.
        give(&mut f, &mut out, 2, &seg(1000, 6001, ACK, &[]));
        for _ in 0..2 {
            give(&mut f, &mut out, 2, &seg(1000, 6001, ACK, &[]));
        }
        let n = out.len();
        assert!(!f.output(2, &mut out));
        assert!(
            data_frames(&out, n).is_empty(),
            "nothing resent after two duplicates"
        );
        give(&mut f, &mut out, 2, &seg(1000, 6001, ACK, &[]));
        let n = out.len();
        assert!(!f.output(2, &mut out));
        assert_eq!(
            data_frames(&out, n)[0],
            (6001, 1000),
            "go back to the lost byte"
        );
        assert_eq!(data_frames(&out, n).len(), 4, "and resend what followed");
    }

    #[test]
    fn a_timeout_resends_and_too_many_end_the_flow() {
        let (mut f, mut out) = mem_flow();
        f.sock.input = vec![2; 1000];
        f.sock_readable = true;
        assert!(!f.output(1, &mut out));
        assert!(!f.timer(100), "not before the timeout");
        let mut now = 1 + RTO_MIN;
        assert!(f.timer(now));
        let n = out.len();
        assert!(!f.output(now, &mut out));
        assert_eq!(data_frames(&out, n), vec![(5001, 1000)]);
        // No answer ever: the timeouts back off, and after MAX_RETRIES the flow is over.
        for _ in 1..=MAX_RETRIES {
            now += RTO_MAX;
            f.timer(now);
        }
        assert!(f.closed());
    }

    #[test]
    fn a_zero_window_holds_data_until_the_window_opens() {
        let (mut f, mut out) = mem_flow();
        give(&mut f, &mut out, 1, &{
            let mut s = seg(1000, 5001, ACK, &[]);
            s[14..16].copy_from_slice(&0u16.to_be_bytes());
            s
        });
        f.sock.input = vec![3; 3000];
        f.sock_readable = true;
        let n = out.len();
        assert!(!f.output(1, &mut out));
        assert!(
            data_frames(&out, n).is_empty(),
            "nothing sent into a zero window"
        );
        // A window of 1500 lets one and a half segments go.
        give(&mut f, &mut out, 2, &{
            let mut s = seg(1000, 5001, ACK, &[]);
            s[14..16].copy_from_slice(&1500u16.to_be_bytes());
            s
        });
        let n = out.len();
        assert!(!f.output(2, &mut out));
        assert_eq!(data_frames(&out, n), vec![(5001, 1000), (6001, 500)]);
    }

    #[test]
    fn the_window_offered_is_the_buffers_free_space() {
        let (f, mut out) = mem_flow();
        let mut f = f.with_buffers(3000, 3000);
        f.sock.room = 0; // the host reads nothing
        give(&mut f, &mut out, 1, &seg(1000, 5001, ACK, &[9; 2000]));
        assert!(!f.output(1, &mut out));
        let last = out.len() - 1;
        assert_eq!(header(&out, last).1, 3000, "2000 bytes taken");
        // 1500 more: only the 1000 that fit are taken and acknowledged.
        give(&mut f, &mut out, 2, &seg(3000, 5001, ACK, &[9; 1500]));
        assert!(!f.output(2, &mut out));
        assert_eq!(header(&out, out.len() - 1).1, 4000);
        assert_eq!(f.queued().0, 3000);
        // The host drains: the bytes arrive in order and the window opens again.
        f.sock.room = usize::MAX;
        f.sock_writable = true;
        assert!(!f.output(3, &mut out));
        assert_eq!(f.sock.written, vec![9; 3000]);
        assert_eq!(f.queued().0, 0);
    }

    #[test]
    fn a_reset_from_the_container_ends_the_flow_in_every_state() {
        let rst = seg(1000, 5001, RST, &[]);
        // Connecting (egress, the host socket not connected yet).
        let opts = SynOpts::default();
        let mut f = TcpFlow::from_syn(test_path(), (80, 1234), Mem::default(), 999, opts, 5000, 0);
        let mut out = Out::new();
        give(&mut f, &mut out, 0, &rst);
        assert!(f.closed() && f.sock.shut, "connecting");
        // SYN-SENT (inbound, our SYN out).
        let mut f = TcpFlow::to_container(test_path(), (80, 1234), Mem::default(), 5000, 0);
        assert!(!f.output(0, &mut out));
        give(&mut f, &mut out, 0, &rst);
        assert!(f.closed() && f.sock.shut, "SYN-SENT");
        // Established, with data queued both ways.
        let (mut f, mut out) = mem_flow();
        f.sock.input = vec![1; 100];
        f.sock_readable = true;
        assert!(!f.output(1, &mut out));
        give(&mut f, &mut out, 1, &rst);
        assert!(f.closed() && f.sock.shut, "established");
        // Half-closed: the container sent its FIN.
        let (mut f, mut out) = mem_flow();
        give(&mut f, &mut out, 1, &seg(1000, 5001, FIN | ACK, &[]));
        assert!(f.sock.shut, "the FIN shuts the host's write side");
        give(&mut f, &mut out, 1, &seg(1001, 5001, RST, &[]));
        assert!(f.closed(), "half-closed");
        // A closed flow ignores what still comes and sends nothing.
        let n = out.len();
        give(&mut f, &mut out, 2, &seg(1001, 5001, ACK, &[1; 10]));
        assert!(!f.output(2, &mut out));
        assert_eq!(out.len(), n);
    }

    #[test]
    fn a_host_reset_resets_the_container() {
        let (mut f, mut out) = mem_flow();
        f.sock.reset = true;
        f.sock_readable = true;
        let n = out.len();
        assert!(!f.output(1, &mut out));
        assert_eq!(out.len(), n + 1);
        assert_eq!(header(&out, n).2, RST | ACK);
        assert!(f.closed());
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
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
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
        self.head = (self.head + n) % self.cap;
    }
    /// When empty, moves the start back to offset 0 so the next read gets the whole buffer in
    /// one piece. Not while bytes are placed past the tail with [`Ring::write_at`].
    pub fn rewind_if_empty(&mut self) {
        if self.len == 0 {
            self.head = 0;
        }
    }
    /// Writes `data` into the free space, `off` bytes past the tail (wrapping), without
    /// committing it: a later [`Ring::commit`] that reaches it makes it part of the data.
    /// `off + data.len()` must not exceed [`Ring::free`].
    pub fn write_at(&mut self, off: usize, mut data: &[u8]) {
        debug_assert!(off + data.len() <= self.free());
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.cap];
        }
        let mut pos = (self.head + self.len + off) % self.cap;
        while !data.is_empty() {
            let k = (self.cap - pos).min(data.len());
            self.buf[pos..pos + k].copy_from_slice(&data[..k]);
            data = &data[k..];
            pos = 0;
        }
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

/// Sorted, disjoint sequence ranges `[start, end)` received past a gap (at most
/// [`OOO_RANGES`]). Which range grew last is remembered, as SACK reports it first.
#[derive(Clone, Copy, Debug, Default)]
pub struct OooRanges {
    r: [(u32, u32); OOO_RANGES],
    n: usize,
    last: usize,
}

impl OooRanges {
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn len(&self) -> usize {
        self.n
    }
    /// The lowest range.
    pub fn first(&self) -> Option<(u32, u32)> {
        (self.n > 0).then(|| self.r[0])
    }
    pub fn pop_first(&mut self) {
        if self.n > 0 {
            self.r.copy_within(1..self.n, 0);
            self.n -= 1;
            self.last = self.last.saturating_sub(1);
        }
    }
    /// Adds `[start, end)`, merging it with ranges it overlaps or touches. False (and no
    /// change) when it would be a range too many.
    pub fn insert(&mut self, start: u32, end: u32) -> bool {
        if start == end {
            return true;
        }
        // Index of the first range that ends at or after `start` (may merge).
        let mut i = 0;
        while i < self.n && seq_lt(self.r[i].1, start) {
            i += 1;
        }
        if i == self.n || seq_lt(end, self.r[i].0) {
            // Disjoint: a new range at i.
            if self.n == OOO_RANGES {
                return false;
            }
            self.r.copy_within(i..self.n, i + 1);
            self.r[i] = (start, end);
            self.n += 1;
            self.last = i;
            return true;
        }
        // Merge with r[i] and every later range it reaches.
        let mut s = self.r[i].0;
        let mut e = self.r[i].1;
        if seq_lt(start, s) {
            s = start;
        }
        if seq_lt(e, end) {
            e = end;
        }
        let mut j = i + 1;
        while j < self.n && seq_le(self.r[j].0, e) {
            if seq_lt(e, self.r[j].1) {
                e = self.r[j].1;
            }
            j += 1;
        }
        self.r[i] = (s, e);
        self.r.copy_within(j..self.n, i + 1);
        self.n -= j - i - 1;
        self.last = i;
        true
    }
    /// The ranges for SACK: the one that grew last first, then the others in order.
    pub fn blocks(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let last = self.last.min(self.n.saturating_sub(1));
        std::iter::once(last)
            .filter(move |_| self.n > 0)
            .chain((0..self.n).filter(move |&i| i != last))
            .map(move |i| self.r[i])
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
        r.rewind_if_empty();
        let s = r.spare();
        assert_eq!(s.len(), 8);
        s[..3].copy_from_slice(b"xyz");
        r.commit(3);
        assert_eq!(r.as_slices().0, b"xyz");
    }

    #[test]
    fn write_at_places_bytes_past_the_tail_across_the_wrap() {
        let mut r = Ring::new(8);
        r.extend(b"abcdef");
        r.consume(5); // head 5, "f"
        r.write_at(2, b"ijk"); // positions 8, 9, 10 -> 0, 1, 2
        r.extend(b"gh");
        r.commit(3);
        let (a, b) = r.as_slices();
        assert_eq!([a, b].concat(), b"fghijk");
        r.consume(6);
        r.rewind_if_empty();
        assert_eq!(r.spare().len(), 8);
    }
}
