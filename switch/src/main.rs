//! `vswitch`: the daemon and its Docker-shaped command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use switch::control::api::*;
use switch::control::daemon::{Config, Daemon, TunnelOffload};
use switch::control::server::{self, Client};
use switch::pipeline::PipelineConfig;
use switch::port::afpacket::RxMode;

mod capture_cmd;
mod top;

const DEFAULT_SOCKET: &str = "/run/vswitch/vswitch.sock";
const DEFAULT_STATE: &str = "/var/lib/vswitch";
/// `-p` / `--publish` help (an attribute: in a doc comment rustdoc reads the brackets as links).
const PUBLISH_HELP: &str = "Publish a port: [HOST_IP:]HOST_PORT:PORT[/tcp|/udp] (repeatable)";

#[derive(Parser, Debug)]
#[command(
    name = "vswitch",
    version,
    about = "A userspace virtual switch for containers"
)]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// What the daemon logs on stderr: error, warn, info, debug or trace. Each line carries
    /// its time, level and target (the module that wrote it).
    #[arg(long, global = true, env = "VSWITCH_LOG_LEVEL", default_value = "info")]
    log_level: tracing::Level,
    /// How log lines look: `text` (one line per event, for people) or `json` (one JSON object
    /// per line with timestamp, level, target and fields, for log collectors).
    #[arg(long, global = true, env = "VSWITCH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the switch daemon in the foreground.
    Daemon {
        /// Where networks, containers and leases are kept.
        #[arg(long, env = "VSWITCH_STATE_DIR", default_value = DEFAULT_STATE)]
        state_dir: PathBuf,
        /// How new containers are attached: veth (AF_PACKET host end), tap, or xdp (a veth
        /// whose host end is read through AF_XDP: for packet rate; see the README). A network's
        /// `-o attach=` comes first. Without either: tap on overlay networks (cheaper per byte
        /// there), veth elsewhere.
        #[arg(long, value_parser = parse_attach)]
        attach: Option<AttachMode>,
        /// MAC table capacity (entries).
        #[arg(long, default_value_t = 65536)]
        fdb_size: usize,
        /// MAC table aging time in seconds.
        #[arg(long, default_value_t = 300)]
        aging: u32,
        /// How veth ports receive: `mmsg` (recvmmsg; lowest latency) or `ring` (a TPACKET_V3
        /// ring: about 1.45x the 64-byte frame rate here, but a lone frame waits up to the
        /// ring's 1 ms block timeout).
        #[arg(long, default_value = "mmsg", value_parser = parse_rx_mode)]
        rx_mode: RxMode,
        /// Receive and send buffer of each veth port's socket, in bytes (64 KiB to 64 MiB).
        /// What the kernel holds for the switch while it is busy: larger rides out longer
        /// bursts (a 64 KiB TCP frame takes about 70 KiB of it, a 64-byte frame about 800
        /// bytes); smaller keeps what is queued in the CPU's cache under sustained overload
        /// (measured here: 1 MiB forwards about 6% more 64-byte frames a second than the
        /// default with the same TCP throughput and retransmissions, 208 KiB about 15% more
        /// with 60 to 100 times the retransmissions).
        #[arg(long, default_value_t = switch::port::afpacket::AfPacketConfig::default().sock_buf, value_parser = parse_port_buffer)]
        port_buffer: u32,
        /// Most learned MAC entries per port (default: the table's per-port limit, 8192).
        #[arg(long)]
        fdb_max_per_port: Option<usize>,
        /// Most learned MAC entries per network (default: 65536).
        #[arg(long)]
        fdb_max_per_network: Option<usize>,
        /// Overlay: send containers' 64 KiB TCP frames as single UDP-tunnel GSO packets through
        /// a TAP the host forwards from (Linux 6.17+). `auto`: unless the host's firewall drops
        /// forwarded packets by default (as Docker sets it up); `on`: also then (accept what
        /// comes in on `vsx*` first); `off`: cut every frame into datagrams on the VXLAN
        /// socket. See the README's overlay section.
        #[arg(long, default_value = "auto", value_parser = parse_tunnel_offload)]
        tunnel_offload: TunnelOffload,
        /// Test hooks on the control socket (`{"op":"inject_panic"}` panics the switch worker,
        /// to test its supervision). Never in production.
        #[arg(long, hide = true, env = "VSWITCH_TEST_HOOKS",
              value_parser = clap::builder::BoolishValueParser::new())]
        test_hooks: bool,
        /// Nice value of the switch worker thread, -20..=19 (lower runs first). The default,
        /// -10, keeps the dataplane ahead of the host's busy threads, as Open vSwitch does
        /// with ovs-vswitchd; 0 leaves it at the daemon's own.
        #[arg(long, default_value_t = -10, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-20..=19))]
        worker_nice: i32,
        /// Microseconds the worker keeps polling after the last frame before it sleeps
        /// (0: sleep at once). A window longer than the gaps between frames saves the wakeup
        /// per frame (lower latency, see the README's benchmark) for a CPU kept busy. It
        /// spins only while it moves at most 5,000 frames a second (a stream's containers
        /// need the CPU more) and no other thread of the host waits for a CPU; otherwise it
        /// sleeps between frames as without it.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        busy_poll: u64,
        /// Most clients of the control socket served at once (one thread each); more are
        /// answered with an error and closed.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        max_clients: u32,
        /// Seconds a control-socket client has to send each whole request (from connecting or
        /// from the previous reply), else it gets an error and is closed.
        #[arg(long, default_value = "30", value_parser = parse_secs)]
        request_timeout: std::time::Duration,
        /// Keep global overlay networks, VTEP membership and addresses in etcd:
        /// etcd://HOST:PORT[,HOST:PORT...] (several endpoints: failover). Without it, every
        /// network is this host's own.
        #[arg(long, env = "VSWITCH_STORE")]
        store: Option<String>,
        /// Prefix of every key in the store.
        #[arg(long, default_value = switch::control::store::DEFAULT_PREFIX, requires = "store")]
        store_prefix: String,
        /// This host's name in the store (unique per host; default: the host name).
        #[arg(long, requires = "store")]
        store_host: Option<String>,
        /// This host's VTEP (underlay) address (default: the address it reaches the store from).
        #[arg(long, requires = "store")]
        store_vtep: Option<std::net::Ipv4Addr>,
        /// Lease TTL of this host's keys in the store, in seconds: a host gone this long leaves
        /// the other hosts' peers.
        #[arg(long, default_value_t = switch::control::store::DEFAULT_TTL, requires = "store",
              value_parser = clap::value_parser!(i64).range(2..=3600))]
        store_ttl: i64,
        /// Seconds a host's address claims outlive its lease before another host releases
        /// them (a host back within this keeps its containers' addresses).
        #[arg(long, default_value_t = switch::control::store::DEFAULT_CLAIM_GRACE, requires = "store")]
        store_claim_grace: u64,
        /// Serve Docker's network and IPAM plugin protocol as this plugin name
        /// (`docker network create -d NAME --ipam-driver NAME`), on DIR/NAME.sock; `off`: not.
        #[arg(long, env = "VSWITCH_DOCKER_PLUGIN", default_value = switch::control::docker::DEFAULT_PLUGIN_NAME)]
        docker_plugin: String,
        /// Where dockerd looks for plugin sockets.
        #[arg(long, default_value = switch::control::docker::DEFAULT_PLUGIN_DIR)]
        docker_plugin_dir: PathBuf,
        /// dockerd's API socket (`unix:///PATH`), asked for Docker's names of the networks and
        /// containers the plugin makes; default: DOCKER_HOST if it is a unix socket, else
        /// /var/run/docker.sock; `off`: not asked.
        #[arg(long)]
        docker_host: Option<String>,
        /// Serve Prometheus metrics (`GET /metrics`, text format 0.0.4) on this TCP address,
        /// e.g. 127.0.0.1:9180 (port 0: any free port, logged). Without it: no TCP listener.
        #[arg(long, env = "VSWITCH_METRICS")]
        metrics: Option<String>,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(NetCmd),
    /// Create a container (a network namespace) and optionally run a command in it.
    Run(RunArgs),
    /// Run a command inside a container's network namespace.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// List containers.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Remove a container (its links, addresses and namespace).
    Rm {
        /// Stop its process first if it runs.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a namespace made by someone else (e.g. `docker run --network none`) to a network.
    Attach {
        #[arg(long)]
        name: String,
        /// Path of the namespace (/run/netns/NAME, /proc/PID/ns/net).
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        netns: Option<PathBuf>,
        /// A process whose namespace to use.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long)]
        ip: Option<String>,
        network: String,
    },
    /// Show the MAC table.
    Fdb {
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the switch's ports and their counters.
    Ports {
        #[arg(long)]
        json: bool,
    },
    /// Show what the switch decides for the next frames that match (ingress, network, learning,
    /// lookup, decision or drop reason, outputs): the answer to "why can't A reach B".
    Trace {
        /// How many frames to trace.
        #[arg(long, short = 'c', default_value_t = 1)]
        count: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Frames entering by this port (name or number; repeatable).
        #[arg(long)]
        port: Vec<String>,
        /// Frames entering by this container's ports (repeatable).
        #[arg(long)]
        container: Vec<String>,
        /// Frames entering by the ports of this network (repeatable).
        #[arg(long)]
        network: Vec<String>,
        /// Frames from or to this MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// Frames from or to this IPv4 address (ARP: sender or target).
        #[arg(long)]
        host: Option<std::net::Ipv4Addr>,
        /// arp, ipv4, icmp, tcp or udp.
        #[arg(long)]
        proto: Option<String>,
        /// TCP or UDP source or destination port.
        #[arg(long)]
        l4_port: Option<u16>,
        /// One JSON object per frame.
        #[arg(long)]
        json: bool,
        /// Filter, as `vswitch capture` takes it (icmp, tcp, udp, arp, ip, host IP, ether MAC,
        /// port N, joined by `and`); the options above are joined to it by `and`.
        filter: Vec<String>,
    },
    /// Show the pipeline's counters (drops by reason, floods, ...).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Print every metric in the Prometheus text format (what `daemon --metrics` serves).
    Metrics,
    /// Live per-port and per-network rates (frames/s, bits/s, drops/s), refreshed every
    /// interval; a plain listing when the output is not a terminal.
    Top(top::TopArgs),
    /// Capture the frames the switch forwards, as pcapng (`-w FILE`, `-w -`) or one line per
    /// frame: `vswitch capture --container web -w - icmp | tshark -r -`.
    Capture(capture_cmd::CaptureArgs),
}

#[derive(Subcommand, Debug)]
enum NetCmd {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        /// Reserve an address: NAME=IP (repeatable).
        #[arg(long = "aux-address")]
        aux_address: Vec<String>,
        /// No route out of the network.
        #[arg(long)]
        internal: bool,
        /// Options: mtu=N; port_security=on|off (default on); flood_pps=N (default 5000, 0:
        /// unlimited), flood_burst=N; macvlan: parent=IFACE or parent=IFACE.VLAN.
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// `local` (default): this host's network; `global`: an overlay network kept in the
        /// daemon's store (`vswitch daemon --store`) and served by every host on it.
        #[arg(long, default_value = "local", value_parser = ["local", "global"])]
        scope: String,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a network as JSON.
    Inspect { names: Vec<String> },
    /// Remove networks.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network (or, with --peer, add a remote VTEP to an overlay).
    Connect {
        #[arg(long)]
        ip: Option<String>,
        /// veth, tap or xdp (default: the network's -o attach=, else the daemon's --attach).
        #[arg(long, value_parser = parse_attach, conflicts_with = "peer")]
        attach: Option<AttachMode>,
        /// Add this host (its VTEP address) as a peer of the overlay network NETWORK.
        #[arg(long, conflicts_with = "ip")]
        peer: Option<String>,
        #[arg(short = 'p', long = "publish", help = PUBLISH_HELP)]
        publish: Vec<String>,
        network: String,
        #[arg(required_unless_present = "peer")]
        container: Option<String>,
    },
    /// Disconnect a container from a network (or, with --peer, remove an overlay peer).
    Disconnect {
        /// Remove this peer VTEP from the overlay network NETWORK.
        #[arg(long)]
        peer: Option<String>,
        network: String,
        #[arg(required_unless_present = "peer")]
        container: Option<String>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Start the command in the background (its output goes to STATE_DIR/logs/NAME.log).
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    name: Option<String>,
    /// bridge (default), a network name, host, none or container:NAME.
    #[arg(long, default_value = "bridge")]
    network: String,
    #[arg(long)]
    ip: Option<String>,
    /// veth, tap or xdp (default: the network's -o attach=, else the daemon's --attach; without
    /// either, tap on overlay networks and veth elsewhere).
    #[arg(long, value_parser = parse_attach)]
    attach: Option<AttachMode>,
    /// Remove the container when the foreground command exits.
    #[arg(long)]
    rm: bool,
    #[arg(short = 'p', long = "publish", help = PUBLISH_HELP)]
    publish: Vec<String>,
    #[arg(last = true)]
    cmd: Vec<String>,
}

fn parse_port_buffer(s: &str) -> Result<u32, String> {
    const MIN: u32 = 64 * 1024;
    const MAX: u32 = 64 * 1024 * 1024;
    match s.parse::<u32>() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "a socket buffer size in bytes from {MIN} to {MAX} (the default is {})",
            switch::port::afpacket::AfPacketConfig::default().sock_buf
        )),
    }
}

fn parse_rx_mode(s: &str) -> Result<RxMode, String> {
    match s {
        "mmsg" => Ok(RxMode::Mmsg),
        "ring" => Ok(RxMode::Ring),
        _ => Err(format!("unknown receive mode {s:?}: use mmsg or ring")),
    }
}

fn parse_tunnel_offload(s: &str) -> Result<TunnelOffload, String> {
    match s {
        "auto" => Ok(TunnelOffload::Auto),
        "on" => Ok(TunnelOffload::On),
        "off" => Ok(TunnelOffload::Off),
        _ => Err(format!("{s:?}: use auto, on or off")),
    }
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86400.0 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?}: give seconds, more than 0 and at most 86400 (e.g. 30 or 0.5)"
        )),
    }
}

fn parse_attach(s: &str) -> Result<AttachMode, String> {
    AttachMode::parse(s)
}

fn main() {
    let cli = Cli::parse();
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vswitch: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Front ends' names (Docker's) of networks and containers, for the tables: a network or
/// container made through Docker's plugin is listed by Docker's name once the daemon has looked
/// it up (`--json` keeps vswitch's names, with Docker's beside them).
#[derive(Default)]
struct Aliases {
    networks: std::collections::HashMap<String, String>,
    containers: std::collections::HashMap<String, String>,
}

impl Aliases {
    /// Asks the daemon; a failure only costs the aliases.
    fn fetch(c: &mut Client, containers: bool) -> Aliases {
        let mut a = Aliases::default();
        if let Ok(list) = c
            .call(&Request::NetworkLs)
            .and_then(|v| Ok(serde_json::from_value::<Vec<NetworkInfo>>(v)?))
        {
            for n in list {
                if let Some(alias) = n.frontend.and_then(|f| f.name) {
                    a.networks.insert(n.name, alias);
                }
            }
        }
        if containers {
            if let Ok(list) = c
                .call(&Request::Ps)
                .and_then(|v| Ok(serde_json::from_value::<Vec<ContainerInfo>>(v)?))
            {
                for ct in list {
                    if let Some(alias) = ct.runtime.and_then(|r| r.name) {
                        a.containers.insert(ct.name, alias);
                    }
                }
            }
        }
        a
    }

    fn network<'a>(&'a self, name: &'a str) -> &'a str {
        self.networks.get(name).map_or(name, String::as_str)
    }

    fn container<'a>(&'a self, name: &'a str) -> &'a str {
        self.containers.get(name).map_or(name, String::as_str)
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Blocks SIGTERM and SIGINT in the calling thread (and so in threads it starts later) and
/// returns the set, for a thread that takes them with `sigwait`.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned here; the calls only write to it and to the
    // calling thread's signal mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// SIGTERM and SIGINT stop the daemon cleanly: a thread of its own waits for them (they are
/// blocked in every other thread), removes the sockets the daemon created (the control
/// socket, the Docker plugin's), so that neither clients nor dockerd find a socket nobody
/// serves, and exits with status 0. Nothing else needs saving: the state file is written at
/// every change, and the containers keep their namespaces and links for the next start.
struct StopSignals {
    set: libc::sigset_t,
    sockets: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl StopSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread (and so in threads it starts later).
    fn block() -> StopSignals {
        StopSignals {
            set: block_stop_signals(),
            sockets: Default::default(),
        }
    }

    /// Removes `path` when a stop signal comes.
    fn remove_on_stop(&self, path: PathBuf) {
        if let Ok(mut s) = self.sockets.lock() {
            s.push(path);
        }
    }

    /// Starts the thread that waits for a stop signal.
    fn spawn_handler(&self) -> Result<()> {
        let (set, sockets) = (self.set, std::sync::Arc::clone(&self.sockets));
        std::thread::Builder::new()
            .name("vswitch-signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is an initialised sigset_t and `sig` a valid place for the
                // number of the signal taken.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let paths = sockets.lock().map(|s| s.clone()).unwrap_or_default();
                for p in &paths {
                    let _ = std::fs::remove_file(p);
                }
                tracing::info!(
                    "vswitch daemon stopping on {name}; removed {}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                std::process::exit(0);
            })
            .context("cannot start the signal handler thread")?;
        Ok(())
    }
}

fn run(cli: Cli) -> Result<i32> {
    let socket = cli.socket.clone();
    let client = || Client::connect(&socket).map_err(anyhow::Error::from);
    match cli.cmd {
        Cmd::Daemon {
            state_dir,
            attach,
            fdb_size,
            aging,
            fdb_max_per_port,
            fdb_max_per_network,
            rx_mode,
            port_buffer,
            tunnel_offload,
            test_hooks,
            worker_nice,
            busy_poll,
            max_clients,
            request_timeout,
            store,
            store_prefix,
            store_host,
            store_vtep,
            store_ttl,
            store_claim_grace,
            docker_plugin,
            docker_plugin_dir,
            docker_host,
            metrics,
        } => {
            let store = match store {
                Some(url) => {
                    let endpoints = switch::control::store::etcd::parse_endpoints(&url)
                        .map_err(anyhow::Error::msg)?;
                    let host = match store_host {
                        Some(h) => h,
                        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .map(|h| h.trim().to_string())
                            .context("cannot read the host name; give --store-host NAME")?,
                    };
                    Some(switch::control::store::StoreConfig {
                        endpoints,
                        prefix: store_prefix,
                        host,
                        vtep: store_vtep,
                        ttl: store_ttl,
                        claim_grace: std::time::Duration::from_secs(store_claim_grace),
                    })
                }
                None => None,
            };
            // Before any thread starts, so that every thread inherits the blocked signals and
            // only the stop handler receives them.
            let stop = StopSignals::block();
            let listener = server::bind(&socket)?;
            stop.remove_on_stop(socket.clone());
            let metrics = match metrics
                .as_deref()
                .map(switch::control::daemon::metrics::bind)
            {
                None => None,
                Some(Ok(l)) => Some(l),
                Some(Err(e)) => {
                    let _ = std::fs::remove_file(&socket);
                    bail!(
                        "cannot listen for metrics on {}: {e}; give another --metrics HOST:PORT",
                        metrics.unwrap_or_default()
                    );
                }
            };
            let d = PipelineConfig::default();
            let pipeline = PipelineConfig {
                fdb_capacity: fdb_size,
                aging_secs: aging,
                fdb_max_per_port: fdb_max_per_port.unwrap_or(d.fdb_max_per_port),
                fdb_max_per_network: fdb_max_per_network.unwrap_or(d.fdb_max_per_network),
            };
            let daemon = Daemon::start(Config {
                state_dir: state_dir.clone(),
                pipeline,
                default_attach: attach,
                rx_mode,
                port_buffer,
                tunnel_offload,
                test_hooks,
                worker: switch::worker::WorkerTuning {
                    nice: (worker_nice != 0).then_some(worker_nice),
                    busy_poll: std::time::Duration::from_micros(busy_poll),
                },
            });
            let daemon = match daemon {
                Ok(d) => d,
                Err(e) => {
                    // Nothing serves this socket: do not leave it behind for clients to hang on.
                    let _ = std::fs::remove_file(&socket);
                    return Err(e.into());
                }
            };
            if test_hooks {
                tracing::warn!(
                    "test hooks are on: anyone who can open the socket can panic the switch worker"
                );
            }
            stop.spawn_handler()?;
            tracing::info!(
                "vswitch daemon ready: socket {}, state {}",
                socket.display(),
                state_dir.display()
            );
            let limits = server::Limits {
                max_clients: max_clients as usize,
                timeout: request_timeout,
                ..Default::default()
            };
            let daemon = std::sync::Arc::new(std::sync::Mutex::new(daemon));
            if let Some(l) = metrics {
                let addr =
                    switch::control::daemon::metrics::serve(l, std::sync::Arc::clone(&daemon))?;
                tracing::info!("metrics on http://{addr}/metrics");
            }
            if docker_plugin != "off" && !docker_plugin.is_empty() {
                use switch::control::docker;
                // Docker is optional: without its plugin directory the daemon serves on.
                match docker::bind(&docker_plugin_dir, &docker_plugin) {
                    Ok((l, path)) => {
                        stop.remove_on_stop(path.clone());
                        let api = match docker_host.as_deref() {
                            Some("off") => None,
                            Some(h) => Some(
                                switch::control::docker_names::parse_api_socket(h)
                                    .map_err(anyhow::Error::msg)?,
                            ),
                            None => Some(switch::control::docker_names::default_api_socket()),
                        };
                        docker::serve(l, std::sync::Arc::clone(&daemon), limits.clone(), api)?;
                        tracing::info!(
                            "Docker plugin {docker_plugin} on {} (docker network create -d {docker_plugin} --ipam-driver {docker_plugin})",
                            path.display()
                        );
                    }
                    Err(e) => tracing::warn!("no Docker plugin: {e:#}"),
                }
            }
            match store {
                None => server::serve_shared_daemon(listener, daemon, limits)?,
                Some(cfg) => {
                    use switch::control::store::{Store, StoreFront};
                    let store = Store::new(cfg, std::sync::Arc::clone(&daemon))?;
                    tracing::info!(
                        "store: this host's vtep is {}; following the store",
                        store.vtep()
                    );
                    store.spawn(std::time::Duration::from_secs(5))?;
                    server::serve_front(listener, daemon, StoreFront::new(store), limits)?
                }
            }
            Ok(0)
        }
        Cmd::Network(n) => network(client()?, n),
        Cmd::Run(r) => run_container(client()?, r, client),
        Cmd::Exec { name, cmd } => {
            let info = client()?.call(&Request::ContainerInspect { name })?;
            let info: ContainerInfo = serde_json::from_value(info)?;
            exec_in(&info, &cmd)
        }
        Cmd::Ps { json } => {
            let mut c = client()?;
            let v = c.call(&Request::Ps)?;
            if json {
                print_json(&v);
                return Ok(0);
            }
            let list: Vec<ContainerInfo> = serde_json::from_value(v)?;
            let aliases = Aliases::fetch(&mut c, false);
            println!(
                "{:<16} {:<9} {:<18} {:<6} {:<18} {:<8} {:<24} COMMAND",
                "NAME", "STATUS", "NETWORK", "ATTACH", "IP", "PID", "PORTS"
            );
            for c in list {
                let nets: Vec<&str> = c
                    .endpoints
                    .iter()
                    .map(|e| aliases.network(&e.network))
                    .collect();
                let ips: Vec<String> = c
                    .endpoints
                    .iter()
                    .map(|e| format!("{}/{}", e.ip, e.prefix))
                    .collect();
                let modes: Vec<&str> = c.endpoints.iter().map(|e| e.attach.label()).collect();
                let net = if nets.is_empty() {
                    c.mode.clone()
                } else {
                    nets.join(",")
                };
                let name = c.runtime.as_ref().and_then(|r| r.name.as_deref());
                let ports = if c.ports.is_empty() {
                    "-".to_string()
                } else {
                    c.ports.join(",")
                };
                println!(
                    "{:<16} {:<9} {:<18} {:<6} {:<18} {:<8} {:<24} {}",
                    name.unwrap_or(&c.name),
                    c.status,
                    net,
                    if modes.is_empty() {
                        "-".to_string()
                    } else {
                        modes.join(",")
                    },
                    if ips.is_empty() {
                        "-".into()
                    } else {
                        ips.join(",")
                    },
                    c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    ports,
                    c.command.join(" ")
                );
            }
            Ok(0)
        }
        Cmd::Rm { force, names } => {
            let mut c = client()?;
            let mut code = 0;
            for name in names {
                match c.call(&Request::Rm {
                    name: name.clone(),
                    force,
                }) {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("vswitch: {e:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Cmd::Attach {
            name,
            netns,
            pid,
            ip,
            network,
        } => {
            let ns = match (netns, pid) {
                (Some(p), _) => p,
                (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
                (None, None) => bail!("give --netns PATH or --pid PID"),
            };
            // Not canonicalized: /proc/PID/ns/net is a magic link to `net:[INODE]`, which is
            // no path. A relative path is made absolute (the daemon has another working
            // directory), and the file is checked to be a network namespace here, so the
            // message names what the user typed.
            let ns = if ns.is_absolute() {
                ns
            } else {
                std::env::current_dir()?.join(ns)
            };
            if let Err(e) = switch::netns::open_netns_path(&ns) {
                bail!("cannot attach {name}: {e}; give --pid PID of a running process, or --netns /proc/PID/ns/net or /run/netns/NAME");
            }
            client()?.call(&Request::Attach {
                name: name.clone(),
                netns: ns.display().to_string(),
                network,
                ip,
            })?;
            println!("{name}");
            Ok(0)
        }
        Cmd::Fdb { network, json } => {
            let mut c = client()?;
            let v = c.call(&Request::Fdb { network })?;
            if json {
                print_json(&v);
                return Ok(0);
            }
            let list: Vec<FdbInfo> = serde_json::from_value(v)?;
            let aliases = Aliases::fetch(&mut c, false);
            println!(
                "{:<14} {:<18} {:<14} {:>6} {:>8}",
                "NETWORK", "MAC", "PORT", "AGE", "STATIC"
            );
            for e in list {
                println!(
                    "{:<14} {:<18} {:<14} {:>6} {:>8}",
                    aliases.network(&e.network),
                    e.mac,
                    e.port,
                    e.age_secs,
                    if e.is_static { "yes" } else { "no" }
                );
            }
            Ok(0)
        }
        Cmd::Trace {
            count,
            timeout,
            port,
            container,
            network,
            mac,
            host,
            proto,
            l4_port,
            json,
            filter,
        } => {
            let filter = switch::trace::filter_words(
                mac.as_deref(),
                host,
                proto.as_deref(),
                l4_port,
                &filter,
            )
            .map_err(anyhow::Error::msg)?;
            let mut c = client()?;
            let v = c.call(&Request::TraceStart(TraceStart {
                count,
                ports: port,
                containers: container,
                networks: network,
                filter,
            }))?;
            let id = v["id"].as_u64().unwrap_or(0);
            // On stderr, also with --json: the trace is armed from here on.
            eprintln!("tracing the next {count} matching frame(s) (at most {timeout} s)");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            let mut got = 0u32;
            loop {
                let v = c.call(&Request::TraceRead { id })?;
                let records: Vec<switch::trace::TraceRecord> =
                    serde_json::from_value(v["records"].clone())?;
                for r in &records {
                    if json {
                        println!("{}", serde_json::to_string(r)?);
                    } else {
                        print!("{}", r.text());
                    }
                }
                got += records.len() as u32;
                if v["done"].as_bool().unwrap_or(false) {
                    return Ok(0);
                }
                if std::time::Instant::now() >= deadline {
                    let _ = c.call(&Request::TraceStop { id });
                    eprintln!("{got} of {count} frame(s) traced in {timeout} s; no more matched");
                    return Ok(if got > 0 { 0 } else { 1 });
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Cmd::Ports { json } => {
            let mut c = client()?;
            let v = c.call(&Request::Ports)?;
            if json {
                print_json(&v);
                return Ok(0);
            }
            let list: Vec<PortInfo> = serde_json::from_value(v)?;
            let aliases = Aliases::fetch(&mut c, true);
            println!(
                "{:>4} {:<14} {:<20} {:<12} {:<14} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "ID",
                "NAME",
                "KIND",
                "NETWORK",
                "CONTAINER",
                "RX",
                "TX",
                "RX-DROP",
                "TX-DROP",
                "SPOOF-MAC",
                "SPOOF-IP",
                "FLOOD-LIM"
            );
            for p in list {
                println!(
                    "{:>4} {:<14} {:<20} {:<12} {:<14} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    p.id,
                    p.name,
                    p.kind,
                    aliases.network(&p.network),
                    aliases.container(&p.container),
                    p.rx_frames,
                    p.tx_frames,
                    p.rx_dropped,
                    p.tx_dropped,
                    p.spoofed_mac,
                    p.spoofed_ip,
                    p.flood_limited + p.storm_held
                );
            }
            Ok(0)
        }
        Cmd::Metrics => {
            let v = client()?.call(&Request::Metrics)?;
            print!("{}", v["text"].as_str().unwrap_or_default());
            Ok(0)
        }
        Cmd::Top(a) => top::run(a, client),
        Cmd::Capture(a) => capture_cmd::run(a, client()?),
        Cmd::Stats { json } => {
            let v = client()?.call(&Request::Stats)?;
            if json {
                print_json(&v);
            } else if let Some(m) = v.get("counters").and_then(|c| c.as_object()) {
                for (k, val) in m {
                    println!("{k:<24} {val}");
                }
                println!("{:<24} {}", "fdb_entries", v["fdb_entries"]);
                if let Some(m) = v.get("nat").and_then(|c| c.as_object()) {
                    for (k, val) in m {
                        println!("nat_{k:<20} {val}");
                    }
                }
            }
            if json {
                return Ok(0);
            }
            if let Some(e) = v.get("worker_error").and_then(|e| e.as_str()) {
                println!("{:<24} {e}", "worker_error");
            }
            for k in ["worker_state", "worker_panics", "worker_restarts"] {
                println!(
                    "{k:<24} {}",
                    v[k].as_str().map_or(v[k].to_string(), str::to_string)
                );
            }
            if let Some(p) = v.get("worker_last_panic").and_then(|p| p.as_str()) {
                println!("{:<24} {p}", "worker_last_panic");
            }
            Ok(0)
        }
    }
}

fn network(mut c: Client, cmd: NetCmd) -> Result<i32> {
    match cmd {
        NetCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            aux_address,
            internal,
            mut opt,
            scope,
            name,
        } => {
            if scope == "global" {
                opt.push("scope=global".into());
            }
            let v = c.call(&Request::NetworkCreate(NetworkCreate {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                aux_addresses: aux_address,
                internal,
                options: opt,
            }))?;
            let info: NetworkInfo = serde_json::from_value(v)?;
            println!("{}", info.name);
        }
        NetCmd::Ls { json } => {
            let v = c.call(&Request::NetworkLs)?;
            if json {
                print_json(&v);
                return Ok(0);
            }
            let list: Vec<NetworkInfo> = serde_json::from_value(v)?;
            println!(
                "{:<6} {:<16} {:<8} {:<18} {:<15} {:>5}",
                "ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "MTU"
            );
            for n in list {
                let id = if n.driver == "host" || n.driver == "none" {
                    "-".to_string()
                } else {
                    n.id.to_string()
                };
                let name = n.frontend.as_ref().and_then(|f| f.name.as_deref());
                println!(
                    "{:<6} {:<16} {:<8} {:<18} {:<15} {:>5}",
                    id,
                    name.unwrap_or(&n.name),
                    n.driver,
                    n.subnet.unwrap_or_else(|| "-".into()),
                    n.gateway.unwrap_or_else(|| "-".into()),
                    if n.mtu == 0 {
                        "-".into()
                    } else {
                        n.mtu.to_string()
                    }
                );
            }
        }
        NetCmd::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                out.push(c.call(&Request::NetworkInspect { name })?);
            }
            print_json(&serde_json::Value::Array(out));
        }
        NetCmd::Rm { names } => {
            for name in names {
                c.call(&Request::NetworkRm { name: name.clone() })?;
                println!("{name}");
            }
        }
        NetCmd::Connect {
            ip,
            attach,
            peer,
            publish,
            network,
            container,
        } => {
            let req = peer_or_container(network, peer, container, false, |network, container| {
                Request::NetworkConnect {
                    network,
                    container,
                    ip,
                    publish,
                    attach,
                }
            })?;
            c.call(&req)?;
        }
        NetCmd::Disconnect {
            peer,
            network,
            container,
        } => {
            let req = peer_or_container(network, peer, container, true, |network, container| {
                Request::NetworkDisconnect { network, container }
            })?;
            c.call(&req)?;
        }
    }
    Ok(0)
}

/// The request of `network connect` (`remove` false) or `network disconnect` (true): with
/// `--peer`, adding or removing that overlay peer of `network`; with a container,
/// `for_container(network, container)`. Exactly one of the two must be given.
fn peer_or_container(
    network: String,
    peer: Option<String>,
    container: Option<String>,
    remove: bool,
    for_container: impl FnOnce(String, String) -> Request,
) -> Result<Request> {
    match (peer, container) {
        (Some(peer), None) => Ok(Request::NetworkPeer {
            network,
            peer,
            remove,
        }),
        (None, Some(container)) => Ok(for_container(network, container)),
        _ => bail!("give either a container or --peer IP, not both"),
    }
}

fn run_container(mut c: Client, r: RunArgs, reconnect: impl Fn() -> Result<Client>) -> Result<i32> {
    if r.rm && r.detach {
        bail!("--rm and -d cannot be used together");
    }
    let req = RunRequest {
        name: r.name,
        network: Some(r.network),
        ip: r.ip,
        attach: r.attach,
        detach_cmd: if r.detach { r.cmd.clone() } else { Vec::new() },
        publish: r.publish,
    };
    let v = c.call(&Request::Run(req))?;
    let info: ContainerInfo = serde_json::from_value(v)?;
    if r.detach || r.cmd.is_empty() {
        println!("{}", info.name);
        return Ok(0);
    }
    drop(c);
    let code = exec_in(&info, &r.cmd);
    if r.rm {
        // A new connection: the daemon closes one that sends nothing for --request-timeout,
        // and the command may have run for longer.
        reconnect()?.call(&Request::Rm {
            name: info.name.clone(),
            force: true,
        })?;
    }
    code
}

fn exec_in(info: &ContainerInfo, cmd: &[String]) -> Result<i32> {
    let stdio = switch::netns::Stdios {
        stdin: None,
        stdout: None,
        stderr: None,
    };
    let mut child = switch::control::daemon::spawn(&info.netns, cmd, stdio)
        .with_context(|| format!("cannot run {:?} in container {}", cmd, info.name))?;
    let status = child.wait()?;
    Ok(status.code().unwrap_or(128))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_or_container_takes_exactly_one() {
        let disconnect = |network, container| Request::NetworkDisconnect { network, container };
        let s = |v: &str| Some(v.to_string());
        let r = peer_or_container("ov".into(), s("10.0.0.2"), None, true, disconnect).unwrap();
        assert!(
            matches!(r, Request::NetworkPeer { network, peer, remove: true }
            if network == "ov" && peer == "10.0.0.2")
        );
        let r = peer_or_container("n".into(), None, s("c1"), true, disconnect).unwrap();
        assert!(
            matches!(r, Request::NetworkDisconnect { network, container }
            if network == "n" && container == "c1")
        );
        for (peer, container) in [(s("10.0.0.2"), s("c1")), (None, None)] {
            let e = peer_or_container("n".into(), peer, container, false, disconnect);
            assert_eq!(
                e.unwrap_err().to_string(),
                "give either a container or --peer IP, not both"
            );
        }
    }
}
