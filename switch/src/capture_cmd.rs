//! `vswitch capture`: starts a capture in the daemon, reads its frames every few milliseconds
//! and writes them as pcapng (`-w FILE`, `-w -` for stdout) or one line per frame.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switch::capture::pcapng;
use switch::control::api::{CaptureFrame, CaptureRequest, CaptureStarted, Request};
use switch::control::server::Client;

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Only the ports of this network.
    #[arg(long)]
    network: Option<String>,
    /// Only this port (a name from `vswitch ports`).
    #[arg(long)]
    port: Option<String>,
    /// Only this container's ports.
    #[arg(long)]
    container: Option<String>,
    /// `in`: frames the switch received from the port (what the container sent); `out`: frames
    /// the switch sent on it; `both`.
    #[arg(long, default_value = "both", value_parser = ["in", "out", "both"])]
    direction: String,
    /// Stop after this many frames.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Write pcapng to FILE (`-`: standard output, for `| tshark -r -`); without it, one line
    /// per frame.
    #[arg(short = 'w', long)]
    write: Option<PathBuf>,
    /// Bytes kept of each frame (longer ones are cut; their length is kept). With --outer: of
    /// each datagram, its 36 outer bytes included.
    #[arg(long, default_value_t = switch::capture::DEFAULT_SNAPLEN)]
    snaplen: usize,
    /// Capture the VXLAN datagrams of tunnel ports (`--port vxlan:ADDR:PORT`, or `--network`
    /// an overlay network: its tunnel, its VNI only; alone: every tunnel port) as raw IPv4
    /// packets: the outer IPv4 and UDP headers (rebuilt: the socket does not see the
    /// underlay's Ethernet header), the VXLAN header and the inner frame, sent or received.
    /// The filter applies to the inner frame. Datagrams that fail decapsulation are included.
    #[arg(long)]
    outer: bool,
    /// Filter: icmp, tcp, udp, arp, ip, host IP, ether MAC, port N, joined by `and` (with
    /// --outer: of the inner frame).
    filter: Vec<String>,
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    anyhow::ensure!(b.len().is_multiple_of(2), "odd hex length");
    b.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).context("not hex");
            Ok((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

/// One line about a frame: time, port, direction, length and what it carries (the summary
/// `vswitch trace` prints).
fn summary(f: &CaptureFrame, data: &[u8], port: &str, outer: bool) -> String {
    let secs = f.ts_us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let what = if outer {
        switch::capture::outer_summary(data)
    } else {
        switch::trace::summary(data)
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{:06} {port} {} {} bytes {what}",
        f.ts_us % 1_000_000,
        if f.out { "out" } else { "in " },
        f.orig_len
    )
}

/// Set when SIGINT or SIGTERM comes: the capture then ends as it does at `--count`, stopping
/// the daemon's side, flushing the file and saying how many frames it kept and dropped (as
/// tcpdump does on Ctrl-C).
static STOP: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT and SIGTERM in this thread and starts a thread that takes them with
/// `sigwait` and sets [`STOP`].
fn stop_on_signals() -> Result<()> {
    let set = crate::block_stop_signals();
    std::thread::Builder::new()
        .name("capture-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t and `sig` a valid place for the number
            // of the signal taken.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                STOP.store(true, Ordering::Relaxed);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// `vswitch capture`.
pub fn run(a: CaptureArgs, mut c: Client) -> Result<i32> {
    stop_on_signals()?;
    let started: CaptureStarted =
        serde_json::from_value(c.call(&Request::CaptureStart(CaptureRequest {
            network: a.network,
            container: a.container,
            port: a.port,
            direction: Some(a.direction),
            filter: a.filter,
            snaplen: Some(a.snaplen),
            outer: a.outer,
        }))?)?;
    let names: Vec<String> = started
        .ports
        .iter()
        .map(|p| {
            if p.container.is_empty() || p.container.starts_with('(') {
                p.name.clone()
            } else {
                format!("{} ({})", p.name, p.container)
            }
        })
        .collect();
    eprintln!(
        "capturing on {} port(s){}: {}",
        started.ports.len(),
        if started.outer {
            " (outer: VXLAN datagrams)"
        } else {
            ""
        },
        names.join(", ")
    );
    let mut out: Option<Box<dyn Write>> = match &a.write {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout().lock())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ))),
    };
    let r = (|| -> Result<u64> {
        if let Some(w) = out.as_mut() {
            w.write_all(&pcapng::section_header())?;
            for p in &started.ports {
                let desc = format!(
                    "vswitch port {} of {} on {}",
                    p.name, p.container, p.network
                );
                let linktype = if started.outer {
                    pcapng::LINKTYPE_RAW
                } else {
                    pcapng::LINKTYPE_ETHERNET
                };
                w.write_all(&pcapng::interface(
                    linktype,
                    &p.name,
                    &desc,
                    started.snaplen,
                ))?;
            }
            w.flush()?;
        }
        let mut n = 0u64;
        loop {
            // After a stop signal, what is queued is still read and written: the capture ends
            // at the first empty read.
            let stopping = STOP.load(Ordering::Relaxed);
            let v = c.call(&Request::CaptureRead { id: started.id })?;
            let frames: Vec<CaptureFrame> = serde_json::from_value(v["frames"].clone())?;
            if frames.is_empty() {
                if stopping {
                    return Ok(n);
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            for f in &frames {
                let data = unhex(&f.data)?;
                let idx = started.ports.iter().position(|p| p.id == f.port);
                let Some(idx) = idx else { continue };
                match out.as_mut() {
                    Some(w) => w.write_all(&pcapng::packet(
                        idx as u32, f.ts_us, f.orig_len, &data, f.out,
                    ))?,
                    None => println!("{}", summary(f, &data, &names[idx], started.outer)),
                }
                n += 1;
                if a.count.is_some_and(|c| n >= c) {
                    return Ok(n);
                }
            }
            if let Some(w) = out.as_mut() {
                w.flush()?;
            }
        }
    })();
    if let Some(w) = out.as_mut() {
        let _ = w.flush();
    }
    let stop = c.call(&Request::CaptureStop { id: started.id });
    let n = r?;
    let dropped = stop.ok().and_then(|v| v["dropped"].as_u64()).unwrap_or(0);
    eprintln!("{n} frames captured, {dropped} dropped (the queue was full)");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_reads_pairs_and_refuses_the_rest() {
        assert_eq!(unhex("00ff1a").unwrap(), vec![0, 255, 26]);
        assert!(unhex("0").is_err());
        assert!(unhex("zz").is_err());
    }
}
