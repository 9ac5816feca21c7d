//! The NAT's TCP engine ([`TcpFlow`]) fed arbitrary segment sequences from the container and
//! arbitrary behaviour of the host stream (data, end of stream, back-pressure, errors, time).
//!
//! Beyond "no panic", the harness checks that the engine never corrupts either byte stream.
//! The container's bytes are a known function of their sequence number and the host's a known
//! function of their offset, so whatever order, overlap, loss or retransmission the input
//! makes up, every byte written to the host stream must be the container's byte at that
//! offset (reassembly, out-of-order holding and SACK are exact), and every byte sent to the
//! container must be the host's byte at the segment's offset, never one the host did not
//! produce. Every frame the engine emits must parse as Ethernet/IPv4/TCP between the flow's
//! ports, and its buffers stay within their bounds.

use super::Input;
use crate::batch::Batch;
use crate::gateway::emit::{Out, Path, Sink};
use crate::gateway::tcp::{HostStream, Phase, SynOpts, TcpFlow, ACK, FIN, RST, SYN};
use crate::port::PortId;
use crate::wire::{EthernetFrame, Ipv4Packet, MacAddr, TcpPacket};
use std::io;
use std::net::{Ipv4Addr, Shutdown};

/// The container's initial sequence number (its SYN or SYN-ACK carries it).
const C_ISN: u32 = 0xfff0_0000; // wraps within the first megabyte
/// The engine's initial sequence number.
const ISS: u32 = 0x7fff_ff00;
/// Ports as the container sees them: (gateway side, container side).
const PORTS: (u16, u16) = (80, 40000);

/// The container's byte at stream offset `i` (offset 0 is sequence number `C_ISN + 1`).
fn c_byte(i: u32) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 24) as u8
}

/// The host's byte at stream offset `j`.
fn h_byte(j: u32) -> u8 {
    (j.wrapping_mul(40_503) >> 8) as u8 ^ 0x5a
}

/// A host stream in memory whose behaviour the input decides.
#[derive(Debug, Default)]
struct MemStream {
    /// Bytes the host produced so far (the next byte read has this offset).
    produced: u32,
    /// Bytes ready to be read now.
    readable: usize,
    eof: bool,
    /// Bytes the host accepts before it blocks.
    room: usize,
    /// Bytes written (checked against the container's stream).
    written: u32,
    /// Every call fails from now on (a reset connection).
    failed: bool,
    shut_wr: bool,
}

impl HostStream for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if self.readable == 0 {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.readable);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = h_byte(self.produced.wrapping_add(k as u32));
        }
        self.produced = self.produced.wrapping_add(n as u32);
        self.readable -= n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        assert!(!self.shut_wr, "a write after the write side was shut");
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        for (k, &b) in buf[..n].iter().enumerate() {
            let at = self.written.wrapping_add(k as u32);
            assert_eq!(
                b,
                c_byte(at),
                "byte {at} written to the host is not the container's"
            );
        }
        self.written = self.written.wrapping_add(n as u32);
        self.room -= n;
        Ok(n)
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.shut_wr = true;
        }
        Ok(())
    }
}

/// Checks every frame the engine emits and remembers how far the host's stream was sent.
#[derive(Debug)]
struct Check {
    /// Bytes the host had produced when the frames were emitted.
    produced: u32,
    /// The end (as a stream offset) of the host's bytes sent so far: what a container acks.
    sent_end: u32,
}

impl Sink for Check {
    fn send(&mut self, port: PortId, batch: &Batch, sel: &[u16]) -> usize {
        assert_eq!(port, PortId(1), "frames go to the container's port");
        for &i in sel {
            let frame = batch.frame(usize::from(i));
            let eth = EthernetFrame::new_checked(frame).expect("an Ethernet frame");
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("an IPv4 packet");
            let t = TcpPacket::new_checked(ip.payload()).expect("a TCP segment");
            assert_eq!((t.src_port(), t.dst_port()), PORTS, "the flow's ports");
            let flags = t.flags();
            let seq = t.seq_number();
            if flags & SYN != 0 {
                assert_eq!(seq, ISS, "a SYN carries the initial sequence number");
                assert!(t.payload().is_empty(), "no data on a SYN");
                continue;
            }
            if flags & RST != 0 {
                continue;
            }
            let off = seq.wrapping_sub(ISS.wrapping_add(1));
            let payload = t.payload();
            let end = off.wrapping_add(payload.len() as u32);
            if !payload.is_empty() {
                assert!(
                    end.wrapping_sub(1) < self.produced && off < self.produced,
                    "bytes {off}..{end} sent, the host produced {}",
                    self.produced
                );
                for (k, &b) in payload.iter().enumerate() {
                    let at = off.wrapping_add(k as u32);
                    assert_eq!(
                        b,
                        h_byte(at),
                        "byte {at} sent to the container is not the host's"
                    );
                }
            }
            let fin_end = end.wrapping_add(u32::from(flags & FIN != 0));
            if fin_end.wrapping_sub(self.sent_end) as i32 > 0 {
                self.sent_end = fin_end;
            }
            if flags & FIN != 0 {
                assert_eq!(
                    end, self.produced,
                    "FIN after the last byte the host produced"
                );
            }
        }
        sel.len()
    }
}

thread_local! {
    /// The output batch (megabytes of GSO slots: one per thread, not one per input).
    static OUT: std::cell::RefCell<Out> = std::cell::RefCell::new(Out::new());
}

fn path(vnet: bool) -> Path {
    Path {
        port: PortId(1),
        vnet,
        src_mac: MacAddr([0x02, 0x42, 0, 0, 0, 1]),
        dst_mac: MacAddr([0x02, 0x42, 10, 0, 0, 2]),
        src_ip: Ipv4Addr::new(203, 0, 113, 7),
        dst_ip: Ipv4Addr::new(10, 88, 0, 2),
    }
}

/// A segment from the container into `buf`: header fields, options and payload from the
/// input, payload bytes from the container's stream at the segment's sequence number.
fn segment<'b>(input: &mut Input<'_>, c_next: u32, h_acked: u32, buf: &'b mut Vec<u8>) -> &'b [u8] {
    let flags = u16::from(input.u8() & 0x3f);
    let delta = input.u16() as i16 as u32;
    let seq = if flags & SYN != 0 {
        C_ISN // the sequence numbers of the container's stream follow from its SYN
    } else {
        C_ISN
            .wrapping_add(1)
            .wrapping_add(c_next)
            .wrapping_add(delta)
    };
    let ack = ISS
        .wrapping_add(1)
        .wrapping_add(h_acked)
        .wrapping_add(input.u16() as i16 as u32);
    let window = input.u16();
    let olen = usize::from(input.u8() % 11) * 4;
    let opts = input.bytes(olen);
    let olen = opts.len() & !3;
    let plen = usize::from(input.u16()) % 2000;
    buf.clear();
    buf.extend_from_slice(&PORTS.1.to_be_bytes());
    buf.extend_from_slice(&PORTS.0.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ack.to_be_bytes());
    buf.push((((20 + olen) / 4) as u8) << 4);
    buf.push(flags as u8);
    buf.extend_from_slice(&window.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
    buf.extend_from_slice(&opts[..olen]);
    let off = seq.wrapping_sub(C_ISN.wrapping_add(1));
    buf.extend((0..plen as u32).map(|k| c_byte(off.wrapping_add(k))));
    buf
}

/// Runs the engine's output until it is done (bounded), checking every frame.
fn output(f: &mut TcpFlow<MemStream>, now: u64, out: &mut Out, check: &mut Check) {
    for _ in 0..64 {
        let more = f.output(now, out);
        check.produced = f.sock.produced;
        out.flush(check);
        if !more {
            return;
        }
    }
}

/// The harness. Input: one byte of setup (direction, vnet port, buffer sizes), the SYN's
/// options (egress), then operations until the input ends.
pub fn nat_tcp(data: &[u8]) {
    let _ = run(data);
}

/// What a run moved: bytes written to the host, bytes (and FIN) sent to the container, and
/// whether the flow ended.
#[derive(Debug, PartialEq, Eq)]
struct Moved {
    to_host: u32,
    to_container: u32,
    closed: bool,
}

fn run(data: &[u8]) -> Moved {
    let mut input = Input::new(data);
    let setup = input.u8();
    let inbound = setup & 1 != 0;
    let path = path(setup & 2 != 0);
    let caps = [1usize, 700, 4096, 65536];
    let (to_sock, from_sock) = (
        caps[usize::from(setup >> 2) & 3],
        caps[usize::from(setup >> 4) & 3],
    );
    let mut now = 1000u64;
    let stream = MemStream::default();
    let mut f = if inbound {
        TcpFlow::to_container(path, PORTS, stream, ISS, now)
    } else {
        let o = input.u8();
        let opts = SynOpts {
            mss: (o & 1 != 0).then(|| input.u16()),
            wscale: (o & 2 != 0).then(|| input.u8()),
            sack: o & 4 != 0,
        };
        TcpFlow::from_syn(path, PORTS, stream, C_ISN, opts, ISS, now)
    }
    .with_buffers(to_sock, from_sock);
    let mut check = Check {
        produced: 0,
        sent_end: 0,
    };
    // How far the container has sent (stream offset), to aim segments near the edge.
    let mut c_next = 0u32;
    let mut seg = Vec::with_capacity(10_000);
    OUT.with(|out| {
        let out = &mut *out.borrow_mut();
        while !input.is_empty() && !f.closed() {
            match input.u8() % 10 {
                0 | 1 => {
                    let s = segment(&mut input, c_next, check.sent_end, &mut seg);
                    let Ok(t) = TcpPacket::new_checked(s) else {
                        continue;
                    };
                    let off = t.seq_number().wrapping_sub(C_ISN.wrapping_add(1));
                    let end = off.wrapping_add(t.payload().len() as u32);
                    if t.flags() & SYN == 0 && end.wrapping_sub(c_next) as i32 > 0 {
                        c_next = end;
                    }
                    f.segment(&t, now, out);
                    out.flush(&mut check);
                }
                // Host-side amounts stay small: every byte moved is checked, and the buffers'
                // edges are reached through their small sizes, not through volume.
                2 => {
                    f.sock.readable += usize::from(input.u16() % 8192);
                    f.sock_readable = true;
                }
                3 => {
                    f.sock.eof = true;
                    f.sock_readable = true;
                }
                4 => {
                    f.sock.room += usize::from(input.u16() % 8192);
                    f.sock_writable = true;
                }
                5 => {
                    f.sock.failed = true;
                    f.sock_readable = true;
                    f.sock_writable = true;
                }
                6 => {
                    now += u64::from(input.u16());
                    if f.timer(now) {
                        output(&mut f, now, out, &mut check);
                    }
                }
                7 => {
                    if f.phase == Phase::Connecting {
                        if input.u8() & 1 == 0 {
                            f.connected(now);
                        } else {
                            f.connect_failed();
                        }
                    }
                }
                8 => {
                    let _ = f.fail(out);
                    out.flush(&mut check);
                }
                _ => output(&mut f, now, out, &mut check),
            }
            let (to, from) = f.queued();
            assert!(
                to <= to_sock && from <= from_sock,
                "buffers within their bounds"
            );
        }
        output(&mut f, now, out, &mut check);
    });
    Moved {
        to_host: f.sock.written,
        to_container: check.sent_end,
        closed: f.closed(),
    }
}

/// Inputs that reach deep: an egress flow through handshake, data both ways with a hole
/// filled later, the host's end of stream and FINs; an inbound flow through its SYN-ACK.
pub fn seeds() -> Vec<Vec<u8>> {
    // A segment op: kind 0, flags, seq delta, ack delta, window, option words, payload len.
    let seg = |flags: u16, dseq: i16, dack: i16, plen: u16| {
        let mut v = vec![0u8, flags as u8];
        v.extend_from_slice(&dseq.to_le_bytes());
        v.extend_from_slice(&dack.to_le_bytes());
        v.extend_from_slice(&65535u16.to_le_bytes());
        v.push(0);
        v.extend_from_slice(&plen.to_le_bytes());
        v
    };
    let mut egress = vec![0b0011_1100u8, 0b111, 0xb4, 0x05, 7];
    egress.extend_from_slice(&[7, 0]); // connected
    egress.push(9); // SYN-ACK out
    egress.extend(seg(ACK, 0, 0, 0)); // handshake done
    egress.extend_from_slice(&[4, 0x00, 0x10]); // the host takes 4 KiB
    egress.extend(seg(ACK, 1000, 0, 500)); // past a gap: held
    egress.extend(seg(ACK, -1500, 0, 1000)); // the gap filled (the edge is at 1500)
    egress.extend_from_slice(&[2, 0x00, 0x08]); // the host sends 2 KiB
    egress.push(9);
    egress.extend(seg(ACK, 0, 0, 0)); // acks what was sent
    egress.extend_from_slice(&[3, 9]); // host EOF, FIN out
    egress.extend(seg(FIN | ACK, 0, 0, 0));
    egress.extend_from_slice(&[6, 0x00, 0x10, 9]);
    let mut inbound = vec![0b0011_1101u8, 9];
    inbound.extend(seg(SYN | ACK, 0, 0, 0));
    inbound.extend_from_slice(&[2, 0x40, 0x1f, 4, 0x40, 0x1f, 9]); // 8000 bytes each way
    inbound.extend(seg(ACK, 0, 0, 1500));
    inbound.extend_from_slice(&[6, 0xff, 0x00, 9, 5, 9]);
    vec![egress, inbound]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_move_data_both_ways_through_the_engine() {
        let s = seeds();
        // Egress: 500 bytes past a 1000-byte gap held, then the gap: all 1500 reach the host;
        // the host's 2 KiB and its FIN reach the container, whose FIN closes the flow.
        assert_eq!(
            run(&s[0]),
            Moved {
                to_host: 1500,
                to_container: 2049,
                closed: true
            }
        );
        // Inbound: after the container's SYN-ACK, 8000 bytes from the host within its window
        // and 1500 container bytes to the host; then the host resets.
        let m = run(&s[1]);
        assert_eq!((m.to_host, m.to_container), (1500, 8000));
    }

    #[test]
    fn a_corrupted_stream_is_caught() {
        // The oracle itself: a byte that is not the container's fails the harness.
        let mut st = MemStream {
            room: 10,
            ..MemStream::default()
        };
        assert_eq!(st.write(&[c_byte(0), c_byte(1)]).unwrap(), 2);
        let bad = [c_byte(2) ^ 1];
        let r = std::panic::catch_unwind(move || st.write(&bad));
        assert!(r.is_err());
    }
}
