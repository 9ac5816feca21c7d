//! `vswitch capture` on the daemon's side: a capture session per client (one running at a
//! time), fed by the worker's [`crate::capture::Tap`] and drained by the client's
//! `capture_read` requests. A session nobody reads for [`IDLE`] is stopped (the client was
//! killed).

use super::super::api::{CaptureFrame, CapturePort, CaptureRequest, CaptureStarted};
use super::super::dataplane::TUNNEL_KIND;
use super::super::error::{bail, err, Result};
use super::Daemon;
use crate::capture::{tap, CaptureSpec, Filter, TapReader, DEFAULT_SLOTS, DEFAULT_SNAPLEN};
use crate::control::driver::overlay::{OverlaySpec, OVERLAY};
use crate::port::PortId;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// A session not read for this long is stopped.
pub const IDLE: Duration = Duration::from_secs(10);
/// Most frames one `capture_read` returns.
pub const MAX_READ: usize = 512;
/// Largest snap length a client may ask for (a GSO frame is up to 64 KiB).
pub const MAX_SNAPLEN: usize = 65535;

/// The daemon's running capture, if any.
#[derive(Debug, Default)]
pub struct Sessions {
    next_id: u64,
    current: Option<Session>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    reader: TapReader,
    last_read: Instant,
    frames: u64,
}

fn hex(data: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

impl Daemon {
    /// Stops a session nobody has read for [`IDLE`].
    fn expire_capture(&mut self) {
        if let Some(s) = &self.captures.current {
            if s.last_read.elapsed() >= IDLE {
                tracing::info!("capture {}: not read for {IDLE:?}, stopped", s.id);
                self.captures.current = None;
                self.worker.send(crate::worker::Command::CaptureStop);
            }
        }
    }

    /// `{"op":"capture_start"}`: selects the ports, starts the worker's tap.
    pub fn capture_start(&mut self, r: CaptureRequest) -> Result<CaptureStarted> {
        self.expire_capture();
        if let Some(s) = &self.captures.current {
            bail!(
                "a capture is already running (capture {}); stop it first (one capture at a time)",
                s.id
            );
        }
        let filter = Filter::parse(&r.filter).map_err(|e| err!("{e}"))?;
        let (dir_in, dir_out) = match r.direction.as_deref().unwrap_or("both") {
            "in" => (true, false),
            "out" => (false, true),
            "both" => (true, true),
            d => bail!("unknown direction {d:?}: use in, out or both"),
        };
        if let Some(c) = &r.container {
            self.container(c)?;
        }
        let (outer_of_network, vni) = match &r.network {
            Some(n) if r.outer => {
                let (tunnel, vni) = self.overlay_tunnel(n)?;
                (Some(tunnel), Some(vni))
            }
            Some(n) => {
                self.network(n)?;
                (None, None)
            }
            None => (None, None),
        };
        if r.outer {
            if r.container.is_some() {
                bail!("--outer captures tunnel ports, and a container has none: give --port with a tunnel port (`vxlan:ADDR:PORT` in `vswitch ports`) or --network with an overlay network, or leave out --outer");
            }
            if let Some(name) = &r.port {
                match self.ports.0.values().find(|p| &p.name == name) {
                    None => bail!("no port {name}; `vswitch ports` lists them"),
                    Some(p) if p.kind != TUNNEL_KIND => bail!(
                        "port {name} is a {} port, not a VXLAN tunnel port: --outer captures the datagrams of tunnel ports (`vxlan:ADDR:PORT` in `vswitch ports`); leave out --outer to capture {name}'s frames",
                        p.kind
                    ),
                    Some(_) => {}
                }
            }
        } else if let Some(n) = &r.network {
            self.network(n)?;
        }
        let ports: Vec<CapturePort> = (self.ports.0.iter())
            .filter(|(_, p)| !r.outer || p.kind == TUNNEL_KIND)
            .filter(|(_, p)| match (&outer_of_network, &r.network) {
                (Some(t), _) => &p.name == t,
                (None, Some(n)) => &p.network == n,
                (None, None) => true,
            })
            .filter(|(_, p)| r.container.as_ref().is_none_or(|c| &p.container == c))
            .filter(|(_, p)| r.port.as_ref().is_none_or(|n| &p.name == n))
            .map(|(id, p)| CapturePort {
                id: id.0,
                name: p.name.clone(),
                container: p.container.clone(),
                network: p.network.clone(),
            })
            .collect();
        if ports.is_empty() && r.outer {
            bail!("no VXLAN tunnel port matches: --outer captures the tunnel ports of overlay networks (`vxlan:ADDR:PORT` in `vswitch ports`)");
        }
        if ports.is_empty() {
            bail!("no port of the switch matches; `vswitch ports` lists them");
        }
        let snaplen = r.snaplen.unwrap_or(DEFAULT_SNAPLEN).clamp(64, MAX_SNAPLEN);
        let (t, reader) = tap(CaptureSpec {
            ports: ports.iter().map(|p| PortId(p.id)).collect(),
            dir_in,
            dir_out,
            filter,
            snaplen,
            slots: DEFAULT_SLOTS,
            outer: r.outer,
            vni,
        });
        self.captures.next_id += 1;
        let id = self.captures.next_id;
        self.worker
            .send(crate::worker::Command::CaptureStart { tap: Box::new(t) });
        self.captures.current = Some(Session {
            id,
            reader,
            last_read: Instant::now(),
            frames: 0,
        });
        tracing::info!(
            "capture {id}: started on {} ports{}",
            ports.len(),
            if r.outer { " (outer)" } else { "" }
        );
        Ok(CaptureStarted {
            id,
            snaplen: snaplen as u32,
            ports,
            outer: r.outer,
        })
    }

    /// The tunnel port (its name) and VNI of overlay network `name`, for `--network NET
    /// --outer`.
    fn overlay_tunnel(&self, name: &str) -> Result<(String, u32)> {
        let n = self.network(name)?;
        if n.driver != OVERLAY {
            bail!(
                "network {name} is a {} network: --outer captures the VXLAN datagrams of overlay networks; leave out --outer to capture its frames",
                n.driver
            );
        }
        let spec = OverlaySpec::parse(&n.options)?;
        Ok((
            format!("vxlan:{}", SocketAddrV4::new(spec.vtep, spec.port)),
            spec.vni.get(),
        ))
    }

    /// `{"op":"capture_read"}`: the frames captured since the last read (at most
    /// [`MAX_READ`]), and the count of frames dropped so far.
    pub fn capture_read(&mut self, id: u64) -> Result<serde_json::Value> {
        let Some(s) = self.captures.current.as_mut().filter(|s| s.id == id) else {
            bail!("capture {id} is not running (stopped, or not read for {IDLE:?})");
        };
        s.last_read = Instant::now();
        let (frames, live) = s.reader.drain(MAX_READ);
        s.frames += frames.len() as u64;
        let dropped = s.reader.dropped();
        let mut out = Vec::with_capacity(frames.len());
        for f in frames {
            out.push(CaptureFrame {
                port: f.port.0,
                out: f.out,
                ts_us: f.ts_us,
                orig_len: f.orig_len,
                data: hex(&f.data),
            });
            s.reader.recycle(f.data);
        }
        if !live && out.is_empty() {
            self.captures.current = None;
            bail!("capture {id} ended: the switch worker restarted, or the tunnel ports of an outer capture are gone");
        }
        Ok(serde_json::json!({ "frames": out, "dropped": dropped }))
    }

    /// `{"op":"capture_stop"}`: stops the worker's tap.
    pub fn capture_stop(&mut self, id: u64) -> Result<serde_json::Value> {
        match self.captures.current.take() {
            Some(s) if s.id == id => {
                self.worker.send(crate::worker::Command::CaptureStop);
                tracing::info!(
                    "capture {id}: stopped after {} frames ({} dropped)",
                    s.frames,
                    s.reader.dropped()
                );
                Ok(serde_json::json!({ "frames": s.frames, "dropped": s.reader.dropped() }))
            }
            other => {
                self.captures.current = other;
                bail!("capture {id} is not running")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(super::hex(&[0, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
