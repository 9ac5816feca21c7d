//! The daemon's Unix socket: one JSON request per line, one JSON reply per line.

use super::api::{Reply, Request};
use super::daemon::Daemon;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Binds the control socket at `path` (mode 0600). A stale socket left by a daemon that died is
/// replaced; a live one is an error, so two daemons never share a socket.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "a vswitch daemon is already running on {}; stop it first or pick another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests until the process ends. Also runs the reconcile loop (every 2 s) that drops
/// containers whose namespace was deleted behind the daemon's back and follows the overlay
/// peers' path MTU.
pub fn serve(listener: UnixListener, daemon: Daemon) -> Result<()> {
    let daemon = Arc::new(Mutex::new(daemon));
    super::daemon::supervise::supervise(Arc::clone(&daemon))?;
    {
        let d = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("vswitch-reconcile".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(2));
                if let Ok(mut d) = d.lock() {
                    d.reconcile();
                }
            })?;
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let d = Arc::clone(&daemon);
        std::thread::spawn(move || {
            let _ = handle_conn(conn, &d);
        });
    }
    Ok(())
}

fn handle_conn(conn: UnixStream, daemon: &Mutex<Daemon>) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match daemon.lock() {
                Ok(mut d) => d.handle(req),
                Err(_) => Reply::Error {
                    message: "the daemon is in a bad state; restart it".into(),
                },
            },
            Err(e) => Reply::Error {
                message: format!("malformed request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        w.write_all(&out)?;
    }
    Ok(())
}

/// A client of the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the vswitch daemon at {} ({e}); is it running? Start it with `vswitch daemon`, or set --socket / VSWITCH_SOCKET",
                path.display()
            )
        })?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends a request and returns the reply's data, or the daemon's error as an error.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        if resp.is_empty() {
            bail!("the daemon closed the connection");
        }
        match serde_json::from_str::<Reply>(&resp)? {
            Reply::Ok { data } => Ok(data),
            Reply::Error { message } => bail!("{message}"),
        }
    }
}
