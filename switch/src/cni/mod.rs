//! `vswitch-cni`: a CNI plugin (spec 1.0.0 and 1.1.0, and the 0.3.1/0.4.0 result format) that
//! hands the work to the running vswitch daemon over its control socket.
//!
//! A runtime (podman's CNI backend, containerd, CRI-O, nerdctl) executes the plugin once per
//! operation with the operation in `CNI_COMMAND`, the container in `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, extra `KEY=VALUE;...` pairs in `CNI_ARGS`, and the network
//! configuration as JSON on stdin. This module is a thin translator: it parses those, asks the
//! daemon ([`Request::RuntimeAttach`], [`Request::RuntimeDetach`], [`Request::Ps`], ...) and
//! prints the CNI result, or a CNI error object with the spec's code, on stdout. It never
//! talks to the worker or netlink itself, except that `CHECK` looks at the interface and the
//! routes inside the container's namespace through [`crate::netns`].
//!
//! The network configuration names a vswitch network with `"network"` (else the
//! configuration's `"name"`) and the daemon's socket with `"socket"` (else
//! [`DEFAULT_SOCKET`]); `"subnet"`, `"driver"`, `"gateway"`, `"ipRange"`, `"internal"`, `"mtu"`
//! and `"options"` (the driver's `-o` options: strings, numbers, lists joined by commas)
//! create the network on first use. Addresses come from vswitch's IPAM; a static one from
//! `runtimeConfig.ips` or `CNI_ARGS` `IP=`. Capabilities: `portMappings`, `mac`, `ips`, `mtu`
//! (others are ignored, as the spec says).

use crate::control::api::{
    ContainerInfo, NetworkCreate, NetworkInfo, Request, RuntimeAttach, RuntimeAttached,
};
use crate::control::server::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The daemon's control socket when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitch.sock";

/// The CNI versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version answered when the request names none.
const LATEST: &str = "1.1.0";

/// The front end's name in the daemon's records (`vswitch ps --json` shows it).
pub const FRONTEND: &str = "cni";

/// CNI error codes: 1-99 are the spec's well-known ones, 100+ this plugin's own.
pub mod code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the configuration this plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown (the runtime need not clean up).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A needed environment variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// Reading stdin failed.
    pub const IO_FAILURE: u32 = 5;
    /// The configuration is not JSON of the expected shape.
    pub const DECODE: u32 = 6;
    /// The configuration is wrong.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition (the daemon is not reachable): try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The daemon refused the request (its message says why and what to do).
    pub const DAEMON_REFUSED: u32 = 100;
    /// CHECK found the attachment different from the `prevResult`.
    pub const CHECK_FAILED: u32 = 101;
}

/// A CNI error: printed on stdout as `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

fn fail(code: u32, msg: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

type Result<T> = std::result::Result<T, CniError>;

/// The plugin's environment (the spec's `CNI_*` variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    /// Reads the variables through `get` (`std::env::var` in the binary).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Env {
        let v = |k: &str| get(k).filter(|s| !s.is_empty());
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// Checks that the variables `names` are set; error 4 names the missing ones.
    fn require(&self, names: &[&str]) -> Result<()> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| match *n {
                "CNI_CONTAINERID" => self.container_id.is_none(),
                "CNI_NETNS" => self.netns.is_none(),
                "CNI_IFNAME" => self.ifname.is_none(),
                _ => false,
            })
            .collect();
        if !missing.is_empty() {
            return Err(fail(
                code::INVALID_ENV,
                format!(
                    "missing environment variable {}: the runtime must set it for {}",
                    missing.join(", "),
                    self.command.as_deref().unwrap_or("this command")
                ),
            ));
        }
        Ok(())
    }

    /// `CNI_ARGS` as key/value pairs (`IgnoreUnknown`, `K8S_*` and other unknown keys are
    /// kept and ignored by the caller).
    pub fn cni_args(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for kv in self.args.as_deref().unwrap_or("").split(';') {
            if kv.is_empty() {
                continue;
            }
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                fail(
                    code::INVALID_ENV,
                    format!(
                        "invalid CNI_ARGS entry {kv:?}: expected KEY=VALUE pairs separated by ';'"
                    ),
                )
            })?;
            out.insert(k.to_string(), v.to_string());
        }
        Ok(out)
    }
}

/// One `portMappings` entry of `runtimeConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

impl PortMapping {
    /// As `vswitch run -p` spells it.
    fn spec(&self) -> Result<String> {
        let proto = self
            .protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            return Err(fail(
                code::UNSUPPORTED_FIELD,
                format!("portMappings protocol {proto:?} is not supported: use tcp or udp"),
            ));
        }
        Ok(match self.host_ip.as_deref().filter(|s| !s.is_empty()) {
            Some(ip) => format!("{ip}:{}:{}/{proto}", self.host_port, self.container_port),
            None => format!("{}:{}/{proto}", self.host_port, self.container_port),
        })
    }
}

/// The capabilities' arguments the runtime passes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (the fields this plugin reads; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The vswitch network (else `name`).
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's control socket (else [`DEFAULT_SOCKET`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    // Options to create the network on first use.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Driver options (`parent`, `vni`, ...), as `-o KEY=VALUE`.
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin; error 6 when it is not JSON of the right shape, 7 when required fields
    /// are missing, 1 when the version is not one this plugin speaks.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let c: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            fail(
                code::DECODE,
                format!("cannot decode the network configuration on stdin: {e}"),
            )
        })?;
        check_version(&c.cni_version)?;
        if c.name.is_empty() {
            return Err(fail(
                code::INVALID_CONFIG,
                "the network configuration has no \"name\"",
            ));
        }
        Ok(c)
    }

    /// The vswitch network this configuration attaches to.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    fn socket(&self) -> &Path {
        self.socket
            .as_deref()
            .unwrap_or_else(|| Path::new(DEFAULT_SOCKET))
    }

    /// Whether it says how to create its network.
    fn creates(&self) -> bool {
        self.subnet.is_some() || self.driver.is_some()
    }

    fn create_request(&self) -> NetworkCreate {
        let mut options: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}={}", option_value(v)))
            .collect();
        if let Some(m) = self.mtu {
            options.push(format!("mtu={m}"));
        }
        NetworkCreate {
            name: self.network().to_string(),
            driver: self.driver.clone().unwrap_or_else(|| "bridge".into()),
            subnet: self.subnet.clone(),
            gateway: self.gateway.clone(),
            ip_range: self.ip_range.clone(),
            aux_addresses: Vec::new(),
            internal: self.internal,
            options,
        }
    }
}

/// An `options` value as `-o KEY=VALUE` spells it: strings as they are, numbers and booleans
/// as JSON writes them, a list joined by commas (`"peers": ["192.168.1.11", "192.168.1.12"]`
/// is `peers=192.168.1.11,192.168.1.12`).
fn option_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(option_value).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

fn check_version(v: &str) -> Result<()> {
    if !SUPPORTED_VERSIONS.contains(&v) {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {v:?} is not supported: vswitch-cni speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// What the plugin prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
}

/// Runs one plugin invocation: the environment and stdin in, stdout and status out. Everything
/// the runtime hands over is parsed and checked first ([`parse_invocation`]); only then is the
/// daemon asked ([`execute`]).
pub fn main_with(env: &Env, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    let version = stdin.as_ref().map(|b| request_version(b)).unwrap_or(LATEST);
    let r = match stdin {
        Ok(bytes) => parse_invocation(env, &bytes).and_then(execute),
        Err(e) => Err(fail(
            code::IO_FAILURE,
            format!("cannot read the network configuration from stdin: {e}"),
        )),
    };
    outcome(version, r)
}

/// The `cniVersion` of the request if this plugin speaks it, else the latest: the version of
/// an error object.
pub fn request_version(stdin: &[u8]) -> &'static str {
    let asked = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
        v.get("cniVersion")
            .and_then(Value::as_str)
            .map(String::from)
    });
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| asked.as_deref() == Some(*v))
        .unwrap_or(LATEST)
}

/// What the plugin prints for the answer `r` (a result, nothing, or a CNI error object in
/// `version`) and its exit status.
pub fn outcome(version: &str, r: Result<Option<Value>>) -> Outcome {
    match r {
        Ok(Some(v)) => Outcome {
            stdout: v.to_string(),
            status: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            status: 0,
        },
        Err(e) => {
            let mut v = json!({ "cniVersion": version, "code": e.code, "msg": e.msg });
            if !e.details.is_empty() {
                v["details"] = Value::String(e.details);
            }
            Outcome {
                stdout: v.to_string(),
                status: 1,
            }
        }
    }
}

/// One invocation, parsed and checked before anything talks to the daemon: a configuration
/// the plugin would refuse is refused here, so a failing ADD never creates its network first.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// VERSION's answer (it needs no daemon).
    Version(Value),
    /// ADD: the network to create if it does not exist, and the attachment to ask for.
    Add {
        conf: NetConf,
        create: Option<NetworkCreate>,
        attach: RuntimeAttach,
    },
    Del {
        env: Env,
        conf: NetConf,
    },
    /// CHECK, with what `prevResult` says about the interface.
    Check {
        env: Env,
        conf: NetConf,
        want: Expected,
    },
    Status {
        conf: NetConf,
    },
    /// GC, with the runtime's `cni.dev/valid-attachments`.
    Gc {
        conf: NetConf,
        valid: Vec<Attachment>,
    },
}

/// Parses the environment and the configuration on stdin into an [`Invocation`], or the CNI
/// error the plugin answers. No I/O: the fuzz target `cni_input` runs exactly this.
pub fn parse_invocation(env: &Env, stdin: &[u8]) -> Result<Invocation> {
    let Some(cmd) = env.command.as_deref() else {
        return Err(fail(
            code::INVALID_ENV,
            "CNI_COMMAND is not set: vswitch-cni is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC and the network configuration on stdin",
        ));
    };
    Ok(match cmd {
        "VERSION" => Invocation::Version(version(stdin)),
        "ADD" => {
            env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
            let conf = NetConf::parse(stdin)?;
            let attach = attach_request(env, &conf)?;
            let create = conf.creates().then(|| conf.create_request());
            Invocation::Add {
                conf,
                create,
                attach,
            }
        }
        "DEL" => {
            env.require(&["CNI_CONTAINERID", "CNI_IFNAME"])?;
            Invocation::Del {
                env: env.clone(),
                conf: NetConf::parse(stdin)?,
            }
        }
        "CHECK" => {
            env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
            let conf = NetConf::parse(stdin)?;
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                fail(
                    code::INVALID_CONFIG,
                    "CHECK needs the prevResult of the ADD in the network configuration",
                )
            })?;
            let want = expected(prev, env.ifname.as_deref().unwrap_or(""))?;
            Invocation::Check {
                env: env.clone(),
                conf,
                want,
            }
        }
        "STATUS" => Invocation::Status {
            conf: NetConf::parse(stdin)?,
        },
        "GC" => {
            let conf = NetConf::parse(stdin)?;
            let valid = conf.valid_attachments.clone().ok_or_else(|| {
                fail(
                    code::INVALID_CONFIG,
                    "GC needs \"cni.dev/valid-attachments\" in the network configuration",
                )
            })?;
            Invocation::Gc { conf, valid }
        }
        other => return Err(fail(
            code::INVALID_ENV,
            format!("CNI_COMMAND={other:?} is not a CNI command: expected ADD, DEL, CHECK, VERSION, STATUS or GC"),
        )),
    })
}

/// Carries out a parsed invocation against the daemon; the result to print, if any.
pub fn execute(inv: Invocation) -> Result<Option<Value>> {
    match inv {
        Invocation::Version(v) => Ok(Some(v)),
        Invocation::Add {
            conf,
            create,
            attach,
        } => add(&conf, create, attach).map(Some),
        Invocation::Del { env, conf } => del(&env, &conf).map(|_| None),
        Invocation::Check { env, conf, want } => check(&env, &conf, &want).map(|_| None),
        Invocation::Status { conf } => status(&conf).map(|_| None),
        Invocation::Gc { conf, valid } => gc(&conf, &valid).map(|_| None),
    }
}

fn version(stdin: &[u8]) -> Value {
    json!({ "cniVersion": request_version(stdin), "supportedVersions": SUPPORTED_VERSIONS })
}

/// A connection to the daemon; error `unreachable` when it cannot be opened.
fn connect(conf: &NetConf, unreachable: u32) -> Result<Client> {
    Client::connect(conf.socket()).map_err(|e| {
        fail(
            unreachable,
            format!("{e} (the socket comes from \"socket\" in the network configuration)"),
        )
    })
}

fn call(c: &mut Client, req: &Request) -> Result<Value> {
    c.call(req)
        .map_err(|e| fail(code::DAEMON_REFUSED, format!("vswitch: {e:#}")))
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        fail(
            code::DECODE,
            format!("cannot decode the daemon's reply ({e}): is vswitch-cni the same version as the daemon?"),
        )
    })
}

/// The configuration's network, created first if it does not exist and the configuration
/// says how.
fn ensure_network(
    c: &mut Client,
    conf: &NetConf,
    create: Option<NetworkCreate>,
) -> Result<NetworkInfo> {
    let name = conf.network();
    let find = |c: &mut Client| -> Result<Option<NetworkInfo>> {
        let nets: Vec<NetworkInfo> = decode(call(c, &Request::NetworkLs)?)?;
        Ok(nets.into_iter().find(|n| n.name == name))
    };
    if let Some(n) = find(c)? {
        return check_network(conf, n);
    }
    let Some(create) = create else {
        return Err(fail(
            code::INVALID_CONFIG,
            format!("vswitch network {name} does not exist: create it with `vswitch network create {name}`, or give \"subnet\" (and \"driver\") in the network configuration to create it on first use"),
        ));
    };
    match call(c, &Request::NetworkCreate(create)) {
        Ok(v) => decode(v),
        // Another ADD may have created it at the same time.
        Err(e) => match find(c)? {
            Some(n) => check_network(conf, n),
            None => Err(CniError {
                code: code::INVALID_CONFIG,
                msg: format!("cannot create vswitch network {name}: {}", e.msg),
                details: String::new(),
            }),
        },
    }
}

/// An existing network must be the one the configuration describes.
fn check_network(conf: &NetConf, n: NetworkInfo) -> Result<NetworkInfo> {
    let differs = |what: &str, want: &str, have: &str| {
        fail(
            code::INVALID_CONFIG,
            format!("vswitch network {} exists with {what} {have}, but the network configuration asks for {want}: fix the configuration or remove the network (`vswitch network rm {}`)", n.name, n.name),
        )
    };
    if let Some(d) = &conf.driver {
        if *d != n.driver {
            return Err(differs("driver", d, &n.driver));
        }
    }
    if let Some(s) = &conf.subnet {
        let have = n.subnet.as_deref().unwrap_or("none");
        let same = match (
            ipam::parse_subnet(s),
            n.subnet.as_deref().map(ipam::parse_subnet),
        ) {
            (Ok(a), Some(Ok(b))) => a == b,
            _ => false,
        };
        if !same {
            return Err(differs("subnet", s, have));
        }
    }
    Ok(n)
}

/// The first IPv4 address of `runtimeConfig.ips` or `CNI_ARGS` `IP=`, without its prefix.
fn static_ip(env: &Env, conf: &NetConf) -> Result<Option<String>> {
    let args = env.cni_args()?;
    let asked: Vec<String> = if conf.runtime_config.ips.is_empty() {
        args.get("IP")
            .map(|s| s.split(',').map(String::from).collect())
            .unwrap_or_default()
    } else {
        conf.runtime_config.ips.clone()
    };
    for a in &asked {
        let addr = a.split('/').next().unwrap_or("");
        if let Ok(ip) = addr.parse::<Ipv4Addr>() {
            return Ok(Some(ip.to_string()));
        }
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(fail(
                code::INVALID_CONFIG,
                format!("invalid address {a:?} in runtimeConfig.ips / CNI_ARGS IP: expected an IPv4 address like 10.88.0.5 or 10.88.0.5/24"),
            ));
        }
    }
    Ok(None)
}

/// The attachment ADD asks for: the runtime's ids, a static address, MAC, MTU and published
/// ports from `runtimeConfig` or `CNI_ARGS`, each checked.
fn attach_request(env: &Env, conf: &NetConf) -> Result<RuntimeAttach> {
    let ip = static_ip(env, conf)?;
    let mac = match &conf.runtime_config.mac {
        Some(m) => Some(m.clone()),
        None => env.cni_args()?.get("MAC").cloned(),
    };
    let publish = conf
        .runtime_config
        .port_mappings
        .iter()
        .map(PortMapping::spec)
        .collect::<Result<Vec<_>>>()?;
    Ok(RuntimeAttach {
        frontend: FRONTEND.into(),
        id: env.container_id.clone().unwrap_or_default(),
        netns: env.netns.clone().unwrap_or_default(),
        network: conf.network().to_string(),
        ifname: env.ifname.clone().unwrap_or_default(),
        ip,
        mac,
        mtu: conf.runtime_config.mtu,
        publish,
    })
}

fn add(conf: &NetConf, create: Option<NetworkCreate>, attach: RuntimeAttach) -> Result<Value> {
    let mut c = connect(conf, code::TRY_AGAIN)?;
    let net = ensure_network(&mut c, conf, create)?;
    let sandbox = attach.netns.clone();
    let req = RuntimeAttach {
        network: net.name,
        ..attach
    };
    let done: RuntimeAttached = decode(call(&mut c, &Request::RuntimeAttach(req))?)?;
    Ok(result(conf, &sandbox, &done))
}

/// The ADD result in the configuration's version.
pub fn result(conf: &NetConf, sandbox: &str, a: &RuntimeAttached) -> Value {
    let v = conf.cni_version.as_str();
    let old = v.starts_with("0.");
    let mut iface = json!({
        "name": a.endpoint.ifname,
        "mac": a.endpoint.mac,
        "sandbox": sandbox,
    });
    if v == "1.1.0" {
        iface["mtu"] = json!(a.mtu);
    }
    let mut ip = json!({
        "address": format!("{}/{}", a.endpoint.ip, a.endpoint.prefix),
        "interface": 0,
    });
    if old {
        ip["version"] = json!("4");
    }
    if let Some(gw) = a.gateway {
        ip["gateway"] = json!(gw.to_string());
    }
    let mut out = json!({
        "cniVersion": v,
        "interfaces": [iface],
        "ips": [ip],
    });
    if let (true, Some(gw)) = (a.default_route, a.gateway) {
        out["routes"] = json!([{ "dst": "0.0.0.0/0", "gw": gw.to_string() }]);
    }
    if let Some(ns) = a.dns {
        out["dns"] = json!({ "nameservers": [ns.to_string()] });
    }
    out
}

fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let mut c = connect(conf, code::TRY_AGAIN)?;
    call(
        &mut c,
        &Request::RuntimeDetach {
            frontend: FRONTEND.into(),
            id: env.container_id.clone().unwrap_or_default(),
            network: conf.network().to_string(),
            ifname: env.ifname.clone(),
        },
    )?;
    Ok(())
}

/// The containers this front end attached.
fn cni_containers(c: &mut Client) -> Result<Vec<ContainerInfo>> {
    let all: Vec<ContainerInfo> = decode(call(c, &Request::Ps)?)?;
    Ok(all
        .into_iter()
        .filter(|c| c.runtime.as_ref().is_some_and(|r| r.frontend == FRONTEND))
        .collect())
}

/// What `prevResult` says about the interface: its address, MAC and default gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub address: Option<ipnet::Ipv4Net>,
    pub mac: Option<String>,
    pub default_gw: Option<Ipv4Addr>,
}

/// Reads `prevResult` for interface `ifname`.
pub fn expected(prev: &Value, ifname: &str) -> Result<Expected> {
    let bad = |what: &str| {
        fail(
            code::INVALID_CONFIG,
            format!("prevResult has no valid {what} for interface {ifname}"),
        )
    };
    let ifaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let index = ifaces
        .iter()
        .position(|i| i.get("name").and_then(Value::as_str) == Some(ifname));
    let mut e = Expected {
        mac: index.and_then(|i| {
            ifaces
                .get(i)
                .and_then(|x| x.get("mac"))
                .and_then(Value::as_str)
                .map(String::from)
        }),
        ..Default::default()
    };
    for ip in prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let on_it = match ip.get("interface").and_then(Value::as_u64) {
            Some(i) => Some(i as usize) == index,
            None => true,
        };
        let Some(addr) = ip.get("address").and_then(Value::as_str) else {
            return Err(bad("address"));
        };
        if let (true, Ok(a)) = (on_it, addr.parse::<ipnet::Ipv4Net>()) {
            e.address = Some(a);
        }
    }
    for r in prev
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if r.get("dst").and_then(Value::as_str) == Some("0.0.0.0/0") {
            e.default_gw = r
                .get("gw")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok());
        }
    }
    if e.address.is_none() {
        return Err(bad("IPv4 address"));
    }
    Ok(e)
}

fn check(env: &Env, conf: &NetConf, want: &Expected) -> Result<()> {
    let id = env.container_id.as_deref().unwrap_or("");
    let ifname = env.ifname.as_deref().unwrap_or("");
    let ns = env.netns.as_deref().unwrap_or("");
    let mismatch = |what: String| fail(code::CHECK_FAILED, what);
    let mut c = connect(conf, code::TRY_AGAIN)?;
    let ctr = cni_containers(&mut c)?
        .into_iter()
        .find(|c| c.runtime.as_ref().is_some_and(|r| r.id == id))
        .ok_or_else(|| {
            fail(
                code::UNKNOWN_CONTAINER,
                format!("vswitch has no attachment of container {id}: ADD it again"),
            )
        })?;
    let ep = ctr
        .endpoints
        .iter()
        .find(|e| e.ifname == ifname && e.network == conf.network())
        .ok_or_else(|| {
            mismatch(format!(
                "container {id} has no interface {ifname} on vswitch network {}: DEL and ADD it again",
                conf.network()
            ))
        })?;
    let have = ipnet::Ipv4Net::new(ep.ip, ep.prefix).ok();
    if have != want.address {
        return Err(mismatch(format!(
            "interface {ifname} of container {id} has address {}/{} in vswitch, prevResult says {}: DEL and ADD it again",
            ep.ip,
            ep.prefix,
            want.address.map(|a| a.to_string()).unwrap_or_default()
        )));
    }
    if ctr.netns != ns {
        return Err(mismatch(format!(
            "container {id} is attached in namespace {}, not {ns}",
            ctr.netns
        )));
    }
    // Inside the namespace: the link, its MAC, its subnet's route (there while the address is
    // on the link and the link is up) and the default route.
    let nl = crate::netns::Netlink::in_netns(Path::new(ns))
        .map_err(|e| mismatch(format!("cannot enter namespace {ns}: {e}")))?;
    let link = nl.get_link(ifname).map_err(|e| {
        mismatch(format!(
            "interface {ifname} is missing in {ns} ({e}): DEL and ADD it again"
        ))
    })?;
    let mac = link.mac.map(|m| m.to_string()).unwrap_or_default();
    if let Some(w) = &want.mac {
        if !w.eq_ignore_ascii_case(&mac) {
            return Err(mismatch(format!(
                "interface {ifname} has MAC {mac}, prevResult says {w}"
            )));
        }
    }
    if !link.up {
        return Err(mismatch(format!("interface {ifname} in {ns} is down")));
    }
    let routes = nl
        .list_ipv4_routes()
        .map_err(|e| mismatch(format!("cannot list the routes in {ns}: {e}")))?;
    let subnet = want.address.map(|a| a.trunc());
    if !routes
        .iter()
        .any(|r| Some(r.dst) == subnet && r.oif == Some(link.index))
    {
        return Err(mismatch(format!(
            "interface {ifname} in {ns} has no route to {} (its address {} is missing): DEL and ADD it again",
            subnet.map(|s| s.to_string()).unwrap_or_default(),
            want.address.map(|a| a.to_string()).unwrap_or_default()
        )));
    }
    if let Some(gw) = want.default_gw {
        if !routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(gw))
        {
            return Err(mismatch(format!(
                "{ns} has no default route via {gw} as prevResult says"
            )));
        }
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<()> {
    let mut c = connect(conf, code::NOT_AVAILABLE)?;
    c.call(&Request::Ping).map_err(|e| {
        fail(
            code::NOT_AVAILABLE,
            format!("the vswitch daemon does not answer: {e:#}"),
        )
    })?;
    let nets: Vec<NetworkInfo> = decode(call(&mut c, &Request::NetworkLs)?)?;
    let name = conf.network();
    if !conf.creates() && !nets.iter().any(|n| n.name == name) {
        return Err(fail(
            code::NOT_AVAILABLE,
            format!("vswitch network {name} does not exist: create it with `vswitch network create {name}`, or give \"subnet\" in the network configuration"),
        ));
    }
    Ok(())
}

fn gc(conf: &NetConf, valid: &[Attachment]) -> Result<()> {
    let mut c = connect(conf, code::TRY_AGAIN)?;
    let mut errors = Vec::new();
    for ctr in cni_containers(&mut c)? {
        let Some(rt) = &ctr.runtime else { continue };
        for ep in ctr.endpoints.iter().filter(|e| e.network == conf.network()) {
            let keep = valid
                .iter()
                .any(|a| a.container_id == rt.id && a.ifname == ep.ifname);
            if keep {
                continue;
            }
            let req = Request::RuntimeDetach {
                frontend: FRONTEND.into(),
                id: rt.id.clone(),
                network: ep.network.clone(),
                ifname: Some(ep.ifname.clone()),
            };
            if let Err(e) = call(&mut c, &req) {
                errors.push(format!("{} {}: {}", rt.id, ep.ifname, e.msg));
            }
        }
    }
    if !errors.is_empty() {
        return Err(fail(
            code::DAEMON_REFUSED,
            format!("GC could not remove: {}", errors.join("; ")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
