//! Docker's names for what its plugin calls made. Docker tells a network driver ids only
//! (network and endpoint ids), so vswitch names Docker's networks and containers by their ids'
//! first 12 hex digits ([`super::docker`]). To show Docker's own names too (`vswitch ps`,
//! `ports`, `network ls`), the daemon asks dockerd's API, the way `docker network inspect` does:
//! `GET /networks/ID` lists the network's name and, per container, its name and endpoint id.
//!
//! The lookup runs on a thread of its own, after the plugin call that made the endpoint has been
//! answered (Docker lists an endpoint only once its `Join` is done), and retries for a while;
//! what it learns is recorded with [`Daemon::set_frontend_names`] and persisted. A dockerd that
//! cannot be reached costs nothing but the names: everything else works on ids.

use super::api::RuntimeRef;
use super::daemon::Daemon;
use super::server::lock;
use super::store::etcd::read_response;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The front end's name in [`RuntimeRef::frontend`].
pub const FRONTEND: &str = "docker";
/// How long a lookup is retried (Docker lists an endpoint once its `Join` is done and the
/// container starts).
const PATIENCE: Duration = Duration::from_secs(30);
/// Time between two tries of the pending lookups.
const RETRY: Duration = Duration::from_millis(250);
/// Timeout of one API request.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where dockerd's API listens: `DOCKER_HOST` if it is a `unix://` address, else dockerd's
/// default socket.
pub fn default_api_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Parses `--docker-host`: `unix:///PATH` or a plain path.
pub fn parse_api_socket(s: &str) -> Result<PathBuf, String> {
    let p = s.strip_prefix("unix://").unwrap_or(s);
    if p.is_empty() || !p.starts_with('/') {
        return Err(format!(
            "--docker-host {s:?}: expected unix:///PATH (dockerd's API socket, as in DOCKER_HOST)"
        ));
    }
    Ok(PathBuf::from(p))
}

/// One name to find: a network of Docker's (by id), and one of its endpoints (by id) if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Docker's network id, and vswitch's name of that network.
    pub network_id: String,
    pub network: String,
    /// Docker's endpoint id, and vswitch's name of its container.
    pub endpoint: Option<(String, String)>,
}

/// What `GET /networks/ID` tells: the network's name, and each endpoint's container name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkNames {
    pub name: String,
    /// Container name by endpoint id.
    pub endpoints: BTreeMap<String, String>,
}

/// Parses dockerd's answer to `GET /networks/ID` (fields it does not need are ignored; a
/// container name's leading `/` is dropped).
pub fn parse_network(body: &[u8]) -> Result<NetworkNames, String> {
    #[derive(Deserialize)]
    struct Net {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Containers", default)]
        containers: Option<BTreeMap<String, Ctr>>,
    }
    #[derive(Deserialize)]
    struct Ctr {
        #[serde(rename = "Name", default)]
        name: String,
        #[serde(rename = "EndpointID", default)]
        endpoint_id: String,
    }
    let n: Net = serde_json::from_slice(body).map_err(|e| format!("dockerd's answer: {e}"))?;
    Ok(NetworkNames {
        name: n.name,
        endpoints: n
            .containers
            .unwrap_or_default()
            .into_values()
            .filter(|c| !c.endpoint_id.is_empty() && !c.name.is_empty())
            .map(|c| (c.endpoint_id, c.name.trim_start_matches('/').to_string()))
            .collect(),
    })
}

/// `GET /networks/ID` on dockerd's API socket.
pub fn get_network(api: &Path, network_id: &str) -> Result<NetworkNames, String> {
    if network_id.is_empty() || !network_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("not a network id: {network_id:?}"));
    }
    let err = |e: std::io::Error| format!("dockerd's API at {}: {e}", api.display());
    let mut s = UnixStream::connect(api).map_err(err)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(err)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(err)?;
    write!(
        s,
        "GET /networks/{network_id} HTTP/1.1\r\nHost: docker\r\nUser-Agent: vswitch\r\nConnection: close\r\n\r\n"
    )
    .map_err(err)?;
    let (status, body) =
        read_response(&mut BufReader::new(s)).map_err(|e| format!("dockerd's API: {e}"))?;
    if status != 200 {
        return Err(format!(
            "dockerd's API answered {status} for network {network_id}"
        ));
    }
    parse_network(&body)
}

/// Starts the lookup thread; send it a [`Lookup`] per network and endpoint made.
pub fn spawn(api: PathBuf, daemon: Arc<Mutex<Daemon>>) -> std::io::Result<Sender<Lookup>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("vswitch-docker-names".into())
        .spawn(move || run(&api, &daemon, &rx))?;
    Ok(tx)
}

fn run(api: &Path, daemon: &Mutex<Daemon>, rx: &Receiver<Lookup>) {
    let mut pending: Vec<(Lookup, Instant)> = Vec::new();
    loop {
        let wait = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            RETRY
        };
        match rx.recv_timeout(wait) {
            Ok(l) => {
                if !pending.iter().any(|(p, _)| *p == l) {
                    pending.push((l, Instant::now() + PATIENCE));
                }
                while let Ok(l) = rx.try_recv() {
                    pending.push((l, Instant::now() + PATIENCE));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut asked: BTreeMap<String, Result<NetworkNames, String>> = BTreeMap::new();
        pending.retain(|(l, until)| {
            let r = asked
                .entry(l.network_id.clone())
                .or_insert_with(|| get_network(api, &l.network_id));
            let found = match r {
                Ok(names) => {
                    let container = l
                        .endpoint
                        .as_ref()
                        .map(|(ep, c)| (c.as_str(), names.endpoints.get(ep)));
                    let net_ref = RuntimeRef {
                        frontend: FRONTEND.into(),
                        id: l.network_id.clone(),
                        name: Some(names.name.clone()),
                    };
                    let (ctr, ctr_name) = match container {
                        Some((c, n)) => (c, n.map(String::as_str)),
                        None => ("", None),
                    };
                    if let Err(e) =
                        lock(daemon).set_frontend_names(ctr, ctr_name, &l.network, Some(net_ref))
                    {
                        tracing::warn!("docker names: {e}");
                    }
                    l.endpoint.is_none() || ctr_name.is_some()
                }
                Err(_) => false,
            };
            if !found && Instant::now() >= *until {
                let why = match r {
                    Err(e) => e.clone(),
                    Ok(_) => "dockerd does not list the endpoint".into(),
                };
                tracing::debug!(
                    "docker names: gave up on network {} endpoint {:?}: {why}",
                    l.network_id,
                    l.endpoint.as_ref().map(|e| &e.0)
                );
                return false;
            }
            !found
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_inspect_answer_gives_the_names_by_endpoint() {
        let body = br#"{"Name":"app","Id":"4f1c","Driver":"vswitch",
            "Containers":{"9a8b":{"Name":"web","EndpointID":"e1","MacAddress":"02:42:0a:46:00:02","IPv4Address":"10.70.0.2/24"},
                          "7c6d":{"Name":"/db","EndpointID":"e2"},
                          "5e4f":{"Name":"","EndpointID":"e3"}},
            "Options":{}}"#;
        let n = parse_network(body).unwrap();
        assert_eq!(n.name, "app");
        assert_eq!(n.endpoints.get("e1").map(String::as_str), Some("web"));
        assert_eq!(n.endpoints.get("e2").map(String::as_str), Some("db"));
        assert_eq!(
            n.endpoints.len(),
            2,
            "an endpoint without a name is skipped"
        );
        // No containers at all (`null` or missing) is a network with no endpoints.
        let n = parse_network(br#"{"Name":"x","Containers":null}"#).unwrap();
        assert!(n.endpoints.is_empty());
        assert!(parse_network(br#"{"Name":"x"}"#)
            .unwrap()
            .endpoints
            .is_empty());
        assert!(parse_network(b"not json").is_err());
        assert!(parse_network(br#"{"Id":"no name"}"#).is_err());
    }

    #[test]
    fn api_addresses() {
        assert_eq!(
            parse_api_socket("unix:///run/d.sock").unwrap(),
            PathBuf::from("/run/d.sock")
        );
        assert_eq!(
            parse_api_socket("/run/d.sock").unwrap(),
            PathBuf::from("/run/d.sock")
        );
        assert!(parse_api_socket("tcp://127.0.0.1:2375").is_err());
        assert!(parse_api_socket("unix://").is_err());
        // Ids are hex: nothing else reaches the request line.
        let e = get_network(Path::new("/nonexistent"), "../containers/json").unwrap_err();
        assert!(e.contains("not a network id"), "{e}");
    }
}
