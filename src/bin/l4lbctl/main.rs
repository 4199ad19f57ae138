//! l4lbctl: l4lb's REST API from the shell, shaped like ipvsadm. `l4lbctl list` prints the
//! table `ipvsadm -Ln` prints (with active and inactive connections); the other commands add,
//! change and delete services and backends. `--json` prints what the API answered.
#![deny(unsafe_code)]

mod ipvsadm;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "l4lbctl",
    version,
    about = "Manage a running l4lb through its REST API (like ipvsadm manages IPVS)"
)]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        env = "L4LB_API",
        default_value = "http://127.0.0.1:9180",
        global = true
    )]
    api: String,

    /// Print the API's JSON answer instead of a table or a message.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Services and backends with their connections, like `ipvsadm -Ln`.
    #[command(alias = "ls")]
    List {
        /// Only this service.
        service: Option<String>,
        /// Totals instead: connections, packets and bytes in and out (ipvsadm --stats).
        #[arg(long)]
        stats: bool,
        /// Rates over one second instead: connections, packets and bytes per second (ipvsadm
        /// --rate).
        #[arg(long, conflicts_with = "stats")]
        rate: bool,
        /// The flows instead (ipvsadm -L -c), as `l4lbctl flows`.
        #[arg(short = 'c', long, conflicts_with_all = ["stats", "rate"])]
        connections: bool,
    },
    /// Counters: ports, actions, drops by reason, flow table, services.
    Stats,
    /// A sample of the live flows, of one service or of all (ipvsadm -L -c).
    Flows(FlowArgs),
    /// The BGP speaker: the VIPs announced and the sessions; `drain` withdraws every VIP
    /// (forwarding goes on), `undrain` announces them again.
    Bgp {
        #[arg(value_parser = ["drain", "undrain"])]
        action: Option<String>,
    },
    /// The flow timeouts in seconds; with values, change them live (ipvsadm --set).
    Timeouts {
        /// Established TCP (ipvsadm's tcp).
        #[arg(long)]
        tcp: Option<u32>,
        /// TCP after a FIN (ipvsadm's tcpfin).
        #[arg(long)]
        tcpfin: Option<u32>,
        #[arg(long)]
        udp: Option<u32>,
        /// TCP before the handshake completes.
        #[arg(long)]
        tcp_syn: Option<u32>,
        /// TCP after a RST.
        #[arg(long)]
        tcp_close: Option<u32>,
    },
    /// Zero the packet, byte and connection counts of every service, or of one (ipvsadm -Z).
    Zero { service: Option<String> },
    /// Remove one flow: the client's next packet is scheduled anew.
    DeleteFlow {
        service: String,
        /// The client's ADDR:PORT.
        client: SocketAddr,
        /// The VIP port, for a service of port 0.
        #[arg(short = 'p', long)]
        port: Option<u16>,
    },
    /// Which backend a flow from CLIENT (ADDR:PORT) gets: its flow's, or what a new one would
    /// get now, and why.
    Lookup {
        service: String,
        client: std::net::SocketAddr,
        /// The VIP port, for a service of port 0 (every port).
        #[arg(short = 'p', long)]
        port: Option<u16>,
    },
    /// Print every service in `ipvsadm -S -n` form (what it cannot say is warned about on
    /// stderr).
    Save {
        /// Add l4lb's ids (`--id NAME`, not ipvsadm's) to each line.
        #[arg(long)]
        ids: bool,
    },
    /// Replace every service with the rules on stdin, in `ipvsadm -S -n` form: all or nothing
    /// (ipvsadm -C, then ipvsadm -R). Lines without `--id` get ids made of what they name.
    Restore {
        /// Read the rules from this file instead of stdin.
        file: Option<std::path::PathBuf>,
    },
    /// Add a service (ipvsadm -A).
    AddService(ServiceArgs),
    /// Change a service (ipvsadm -E); what is not given stays.
    EditService(ServiceArgs),
    /// Delete a service and its flows (ipvsadm -D).
    DeleteService { id: String },
    /// Add a backend to a service (ipvsadm -a).
    AddBackend(BackendArgs),
    /// Change a backend (ipvsadm -e); weight 0 or --disable drains it.
    EditBackend(BackendArgs),
    /// Delete a backend; its flows go (ipvsadm -d).
    DeleteBackend { service: String, id: String },
    /// Read the configuration file again, like SIGHUP; prints what changed.
    Reload {
        /// Take the file's services too, replacing those of the state file (what the API made).
        #[arg(long)]
        services_from_file: bool,
    },
    /// The last changes and reloads, oldest first, as the log has them.
    Audit,
}

#[derive(Debug, Args)]
struct ServiceArgs {
    /// The service's id.
    id: String,
    /// A TCP service at VIP:PORT ([v6]:port for IPv6).
    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "VIP:PORT",
        conflicts_with = "udp"
    )]
    tcp: Option<SocketAddr>,
    /// A UDP service at VIP:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
    udp: Option<SocketAddr>,
    /// Scheduler: rr wrr lc wlc sed nq sh dh maglev.
    #[arg(short = 's', long)]
    scheduler: Option<String>,
    /// Forwarding: nat, dr or tun.
    #[arg(short = 'f', long)]
    forwarding: Option<String>,
    /// Maglev lookup-table size (a prime).
    #[arg(long)]
    maglev_table_size: Option<u32>,
}

#[derive(Debug, Args)]
struct BackendArgs {
    /// The service's id.
    service: String,
    /// The backend's id.
    id: String,
    /// Address, or address:port ([v6]:port); without a port, the service's.
    #[arg(short = 'r', long = "real-server", value_name = "ADDRESS[:PORT]")]
    address: Option<String>,
    /// Weight (0: no new flows).
    #[arg(short = 'w', long)]
    weight: Option<u32>,
    /// Take no new flows (established ones stay).
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
    /// Take new flows again.
    #[arg(long)]
    enable: bool,
}

#[derive(Debug, Args)]
struct FlowArgs {
    /// Only this service.
    service: Option<String>,
    /// Only this client: ADDR or ADDR:PORT.
    #[arg(long)]
    client: Option<String>,
    /// Only this backend (needs the service).
    #[arg(long)]
    backend: Option<String>,
    /// Only this state: syn, established, fin, closed, midstream or udp.
    #[arg(long)]
    state: Option<String>,
    /// At most this many.
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: usize,
}

/// `GET /api/v1/flows` with `a`'s filters, as a table or JSON.
fn flows(c: &Client, a: &FlowArgs, as_json: bool) -> Result<String> {
    let mut q = format!("limit={}", a.limit);
    if let Some(s) = &a.service {
        q += &format!("&service={}", id(s)?);
    }
    for (k, v) in [
        ("client", &a.client),
        ("backend", &a.backend),
        ("state", &a.state),
    ] {
        if let Some(v) = v {
            q += &format!("&{k}={}", v.replace('[', "%5B").replace(']', "%5D"));
        }
    }
    let v = c.json("GET", &format!("/api/v1/flows?{q}"), None)?;
    Ok(if as_json { pretty(&v) } else { flows_table(&v) })
}

/// A failure: what to print and the exit status.
struct Failure(String);

type Result<T> = std::result::Result<T, Failure>;

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: std::env::var("L4LB_TOKEN").ok().filter(|t| !t.is_empty()),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .new_agent(),
        }
    }

    /// Sends a request; an answer of 400 or more becomes a failure carrying the API's error.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let answer = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.unwrap_or(&Value::Null))
            }
        };
        let mut answer =
            answer.map_err(|e| Failure(format!("cannot reach the API at {}: {e}", self.base)))?;
        let status = answer.status();
        let text = answer
            .body_mut()
            .read_to_string()
            .map_err(|e| Failure(format!("reading the answer: {e}")))?;
        if status.as_u16() >= 400 {
            let error = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or(text);
            return Err(Failure(format!("{status}: {error}")));
        }
        Ok((status.as_u16(), text))
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (_, text) = self.request(method, path, body)?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Failure(format!("the API answered no JSON: {e}")))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.api);
    match run(&cli, &client) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(Failure(e)) => {
            eprintln!("l4lbctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON prints")
}

fn service_body(a: &ServiceArgs) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    if let Some(s) = a.tcp {
        m.insert("protocol".into(), json!("tcp"));
        m.insert("vip".into(), json!(s.ip().to_string()));
        m.insert("port".into(), json!(s.port()));
    }
    if let Some(s) = a.udp {
        m.insert("protocol".into(), json!("udp"));
        m.insert("vip".into(), json!(s.ip().to_string()));
        m.insert("port".into(), json!(s.port()));
    }
    if let Some(s) = &a.scheduler {
        m.insert("scheduler".into(), json!(s));
    }
    if let Some(f) = &a.forwarding {
        m.insert("forwarding".into(), json!(f));
    }
    if let Some(n) = a.maglev_table_size {
        m.insert("maglev_table_size".into(), json!(n));
    }
    Value::Object(m)
}

/// `198.18.0.10`, `198.18.0.10:8080`, `2001:db8::10` or `[2001:db8::10]:8080`.
fn address_and_port(s: &str) -> Result<(String, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), Some(sa.port())));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), None));
    }
    Err(Failure(format!(
        "--real-server: {s:?} is not ADDRESS or ADDRESS:PORT ([v6]:port for IPv6)"
    )))
}

fn backend_body(a: &BackendArgs) -> Result<Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    if let Some(addr) = &a.address {
        let (address, port) = address_and_port(addr)?;
        m.insert("address".into(), json!(address));
        if let Some(p) = port {
            m.insert("port".into(), json!(p));
        }
    }
    if let Some(w) = a.weight {
        m.insert("weight".into(), json!(w));
    }
    if a.disable {
        m.insert("enabled".into(), json!(false));
    }
    if a.enable {
        m.insert("enabled".into(), json!(true));
    }
    Ok(Value::Object(m))
}

/// Path segments are ids (letters, digits, - _ .), so they need no escaping; anything else is
/// refused here rather than sent.
fn id(s: &str) -> Result<&str> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(s)
    } else {
        Err(Failure(format!("{s:?} is not an id (A-Z a-z 0-9 - _ .)")))
    }
}

fn run(cli: &Cli, c: &Client) -> Result<String> {
    let done = |what: String, v: Value| if cli.json { pretty(&v) } else { what };
    match &cli.command {
        Cmd::List {
            service,
            connections: true,
            ..
        } => flows(
            c,
            &FlowArgs {
                service: service.clone(),
                client: None,
                backend: None,
                state: None,
                limit: 10_000,
            },
            cli.json,
        ),
        Cmd::List {
            service,
            stats: totals,
            rate,
            ..
        } => {
            let read = || -> Result<(Value, Vec<Value>, std::time::Instant)> {
                let stats = c.json("GET", "/api/v1/stats", None)?;
                let at = std::time::Instant::now();
                let mut services: Vec<Value> =
                    stats["services"].as_array().cloned().unwrap_or_default();
                if let Some(only) = service {
                    services.retain(|s| s["id"] == json!(only));
                    if services.is_empty() {
                        return Err(Failure(format!("404 Not Found: no service {only:?}")));
                    }
                }
                Ok((stats, services, at))
            };
            let (stats, services, at) = read()?;
            if *rate {
                std::thread::sleep(Duration::from_secs(1));
                let (_, later, at2) = read()?;
                let secs = at2.duration_since(at).as_secs_f64().max(1e-3);
                return Ok(traffic_table(&services, Some((&later, secs)), cli.json));
            }
            Ok(if *totals {
                traffic_table(&services, None, cli.json)
            } else if cli.json {
                pretty(&Value::Array(services))
            } else {
                list_table(&stats, &services)
            })
        }
        Cmd::Stats => {
            let v = c.json("GET", "/api/v1/stats", None)?;
            Ok(if cli.json { pretty(&v) } else { stats_text(&v) })
        }
        Cmd::Flows(a) => flows(c, a, cli.json),
        Cmd::Timeouts {
            tcp,
            tcpfin,
            udp,
            tcp_syn,
            tcp_close,
        } => {
            let mut patch = Map::new();
            for (k, v) in [
                ("tcp_established", tcp),
                ("tcp_fin", tcpfin),
                ("udp", udp),
                ("tcp_syn", tcp_syn),
                ("tcp_close", tcp_close),
            ] {
                if let Some(v) = v {
                    patch.insert(k.into(), json!(v));
                }
            }
            let v = if patch.is_empty() {
                c.json("GET", "/api/v1/timeouts", None)?
            } else {
                c.json("PATCH", "/api/v1/timeouts", Some(&Value::Object(patch)))?
            };
            Ok(if cli.json {
                pretty(&v)
            } else {
                format!(
                    "Timeout (tcp tcpfin udp): {} {} {}\nTimeout (tcp_syn tcp_close): {} {}",
                    n(&v["tcp_established"]),
                    n(&v["tcp_fin"]),
                    n(&v["udp"]),
                    n(&v["tcp_syn"]),
                    n(&v["tcp_close"])
                )
            })
        }
        Cmd::Bgp { action } => {
            let v = match action.as_deref() {
                None => c.json("GET", "/api/v1/bgp", None)?,
                Some(a) => c.json(
                    "PATCH",
                    "/api/v1/bgp",
                    Some(&json!({ "drained": a == "drain" })),
                )?,
            };
            Ok(if cli.json {
                pretty(&v)
            } else if v["enabled"] != json!(true) {
                "bgp: off ([bgp] local_as is not set)".to_string()
            } else {
                let list = |k: &str| {
                    let a: Vec<String> = v[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect();
                    if a.is_empty() {
                        "none".into()
                    } else {
                        a.join(" ")
                    }
                };
                let mut out = format!(
                    "drained: {}\nannounced: {}\n",
                    v["drained"] == json!(true),
                    list("announced")
                );
                for s in v["sessions"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "session {}: {} {}\n",
                        s["name"].as_str().unwrap_or(""),
                        s["state"].as_str().unwrap_or(""),
                        s["info"].as_str().unwrap_or("")
                    ));
                }
                if let Some(e) = v["error"].as_str() {
                    out.push_str(&format!("error: {e}\n"));
                }
                out.trim_end().to_string()
            })
        }
        Cmd::Zero { service } => {
            let q = match service {
                Some(s) => format!("?service={}", id(s)?),
                None => String::new(),
            };
            c.request("POST", &format!("/api/v1/stats/zero{q}"), None)?;
            Ok(match service {
                Some(s) => format!("counters of service {s} zeroed"),
                None => "counters zeroed".to_string(),
            })
        }
        Cmd::DeleteFlow {
            service,
            client,
            port,
        } => {
            let client = client.to_string().replace('[', "%5B").replace(']', "%5D");
            let port = port.map_or_else(String::new, |p| format!("&port={p}"));
            c.request(
                "DELETE",
                &format!(
                    "/api/v1/flows?service={}&client={client}{port}",
                    id(service)?
                ),
                None,
            )?;
            Ok(format!("flow {client} of service {service} removed")
                .replace("%5B", "[")
                .replace("%5D", "]"))
        }
        Cmd::Lookup {
            service,
            client,
            port,
        } => {
            let client = client.to_string().replace('[', "%5B").replace(']', "%5D");
            let port = port.map_or_else(String::new, |p| format!("&port={p}"));
            let v = c.json(
                "GET",
                &format!(
                    "/api/v1/services/{}/lookup?client={client}{port}",
                    id(service)?
                ),
                None,
            )?;
            Ok(if cli.json {
                pretty(&v)
            } else {
                lookup_text(&v)
            })
        }
        Cmd::Save { ids } => {
            let v = c.json("GET", "/api/v1/services", None)?;
            let (text, warnings) = ipvsadm::save(v.as_array().map_or(&[][..], Vec::as_slice), *ids);
            for w in warnings {
                eprintln!("l4lbctl save: {w}");
            }
            Ok(text.trim_end().to_string())
        }
        Cmd::Restore { file } => {
            let (text, from) = match file {
                Some(f) => (
                    std::fs::read_to_string(f)
                        .map_err(|e| Failure(format!("reading {}: {e}", f.display())))?,
                    f.display().to_string(),
                ),
                None => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .map_err(|e| Failure(format!("reading stdin: {e}")))?;
                    (text, "stdin".to_string())
                }
            };
            let services = ipvsadm::restore(&text).map_err(|e| Failure(format!("{from}: {e}")))?;
            let v = c.json("PUT", "/api/v1/services", Some(&Value::Array(services)))?;
            Ok(if cli.json {
                pretty(&v)
            } else {
                format!("{} services restored", v.as_array().map_or(0, Vec::len))
            })
        }
        Cmd::AddService(a) => {
            if a.tcp.is_none() && a.udp.is_none() {
                return Err(Failure(
                    "add-service: give the service's address with -t VIP:PORT or -u VIP:PORT"
                        .into(),
                ));
            }
            let v = c.json("POST", "/api/v1/services", Some(&service_body(a)))?;
            Ok(done(format!("service {} added", a.id), v))
        }
        Cmd::EditService(a) => {
            let mut body = service_body(a);
            body.as_object_mut().expect("an object").remove("id");
            let v = c.json(
                "PATCH",
                &format!("/api/v1/services/{}", id(&a.id)?),
                Some(&body),
            )?;
            Ok(done(format!("service {} changed", a.id), v))
        }
        Cmd::DeleteService { id: s } => {
            c.request("DELETE", &format!("/api/v1/services/{}", id(s)?), None)?;
            Ok(done(format!("service {s} deleted"), Value::Null))
        }
        Cmd::AddBackend(a) => {
            if a.address.is_none() {
                return Err(Failure(
                    "add-backend: give the backend's address with -r ADDRESS[:PORT]".into(),
                ));
            }
            let v = c.json(
                "POST",
                &format!("/api/v1/services/{}/backends", id(&a.service)?),
                Some(&backend_body(a)?),
            )?;
            Ok(done(format!("backend {}/{} added", a.service, a.id), v))
        }
        Cmd::EditBackend(a) => {
            let mut body = backend_body(a)?;
            body.as_object_mut().expect("an object").remove("id");
            let v = c.json(
                "PATCH",
                &format!(
                    "/api/v1/services/{}/backends/{}",
                    id(&a.service)?,
                    id(&a.id)?
                ),
                Some(&body),
            )?;
            Ok(done(format!("backend {}/{} changed", a.service, a.id), v))
        }
        Cmd::DeleteBackend { service, id: b } => {
            c.request(
                "DELETE",
                &format!("/api/v1/services/{}/backends/{}", id(service)?, id(b)?),
                None,
            )?;
            Ok(done(format!("backend {service}/{b} deleted"), Value::Null))
        }
        Cmd::Reload { services_from_file } => {
            let v = c.json(
                "POST",
                "/api/v1/reload",
                Some(&json!({ "services_from_file": services_from_file })),
            )?;
            let changes: Vec<&str> = v["changes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let text = if changes.is_empty() {
                format!("reloaded: no change (configuration epoch {})", v["epoch"])
            } else {
                format!(
                    "reloaded (configuration epoch {}):\n  {}",
                    v["epoch"],
                    changes.join("\n  ")
                )
            };
            Ok(done(text, v))
        }
        Cmd::Audit => {
            let v = c.json("GET", "/api/v1/audit", None)?;
            let lines: Vec<&str> = v["entries"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Ok(done(lines.join("\n"), v))
        }
    }
}

/// ipvsadm's names for the forwarding methods.
fn forward_name(mode: &str) -> &str {
    match mode {
        "nat" => "Masq",
        "dr" => "Route",
        "tun" => "Tunnel",
        other => other,
    }
}

fn endpoint(addr: &str, port: u64) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The table of `ipvsadm -Ln`, with the ids l4lb knows services and backends by.
fn list_table(stats: &Value, services: &[Value]) -> String {
    let mut out = format!(
        "l4lb {} (configuration epoch {})\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        s(&stats["version"]),
        n(&stats["epoch"])
    );
    for svc in services {
        out.push_str(&format!(
            "{:<4} {} {} (id {})\n",
            s(&svc["protocol"]).to_uppercase(),
            endpoint(s(&svc["vip"]), n(&svc["port"])),
            s(&svc["scheduler"]),
            s(&svc["id"]),
        ));
        for b in svc["backends"].as_array().into_iter().flatten() {
            let flag = if b["enabled"] == json!(false) {
                " disabled"
            } else {
                ""
            };
            let health = health_text(&b["health"]);
            out.push_str(&format!(
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10} (id {}){flag}{health}\n",
                endpoint(s(&b["address"]), n(&b["port"])),
                forward_name(s(&svc["forwarding"])),
                n(&b["weight"]),
                n(&b["active"]),
                n(&b["inactive"]),
                s(&b["id"]),
            ));
        }
    }
    out.trim_end().to_string()
}

/// The counters of each service and backend as `ipvsadm -L --stats` prints them, or, given a
/// later reading and the seconds between, their rates as `ipvsadm -L --rate` does.
fn traffic_table(services: &[Value], later: Option<(&[Value], f64)>, as_json: bool) -> String {
    const KEYS: [&str; 5] = [
        "new_flows",
        "packets_in",
        "packets_out",
        "bytes_in",
        "bytes_out",
    ];
    let values = |now: &Value, then: Option<&Value>, secs: f64| -> Vec<f64> {
        KEYS.iter()
            .map(|k| {
                let a = now[k].as_u64().unwrap_or(0) as f64;
                match then {
                    Some(t) => (t[k].as_u64().unwrap_or(0) as f64 - a).max(0.0) / secs,
                    None => a,
                }
            })
            .collect()
    };
    let find = |list: &[Value], id: &Value| list.iter().find(|x| x["id"] == *id).cloned();
    let mut rows = Vec::new(); // (service?, endpoint, values)
    for svc in services {
        let (later_svc, secs) = match later {
            Some((l, secs)) => (find(l, &svc["id"]), secs),
            None => (None, 1.0),
        };
        rows.push((
            true,
            format!(
                "{:<4} {}",
                s(&svc["protocol"]).to_uppercase(),
                endpoint(s(&svc["vip"]), n(&svc["port"]))
            ),
            values(svc, later_svc.as_ref().or(later.map(|_| svc)), secs),
        ));
        for b in svc["backends"].as_array().into_iter().flatten() {
            let later_b = later_svc.as_ref().and_then(|l| {
                find(
                    l["backends"].as_array().map_or(&[][..], Vec::as_slice),
                    &b["id"],
                )
            });
            rows.push((
                false,
                format!("  -> {}", endpoint(s(&b["address"]), n(&b["port"]))),
                values(b, later_b.as_ref().or(later.map(|_| b)), secs),
            ));
        }
    }
    let names = if later.is_some() {
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
    } else {
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
    };
    if as_json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(svc, what, v)| {
                let mut m = Map::new();
                m.insert(
                    if *svc { "service" } else { "backend" }.into(),
                    json!(what.trim_start_matches("  -> ").trim()),
                );
                for (k, x) in names.iter().zip(v) {
                    m.insert(k.to_lowercase(), json!(x));
                }
                Value::Object(m)
            })
            .collect();
        return pretty(&Value::Array(list));
    }
    let mut out = format!(
        "Prot LocalAddress:Port               {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
        names[0], names[1], names[2], names[3], names[4]
    );
    for (_, what, v) in rows {
        out.push_str(&format!(
            "{what:<36} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            v[0].round(),
            v[1].round(),
            v[2].round(),
            v[3].round(),
            v[4].round()
        ));
    }
    out.trim_end().to_string()
}

/// A backend's health after its row: nothing for an unchecked backend that is up, else
/// ` up 35s (tcp)` or ` DOWN 4s (tcp: <the last error>)`.
fn health_text(h: &Value) -> String {
    let check = s(&h["check"]);
    let down = s(&h["state"]) == "down";
    if check == "none" && !down {
        return String::new();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let age = (now - h["since_unix"].as_f64().unwrap_or(now)).max(0.0) as u64;
    let why = match h["last_error"].as_str() {
        Some(e) if down => format!("{check}: {e}"),
        _ => check.to_string(),
    };
    format!(" {} {age}s ({why})", if down { "DOWN" } else { "up" })
}

fn stats_text(v: &Value) -> String {
    let mut out = format!(
        "l4lb {}: up {:.0} s, {} worker(s), configuration epoch {}, reloads {}\n",
        s(&v["version"]),
        v["uptime_seconds"].as_f64().unwrap_or(0.0),
        n(&v["workers"]),
        n(&v["epoch"]),
        n(&v["reloads"])
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "port {} ({}): rx-packets={} rx-bytes={} tx-packets={} tx-bytes={} tx-dropped={}\n",
            n(&p["port"]),
            s(&p["name"]),
            n(&p["rx_packets"]),
            n(&p["rx_bytes"]),
            n(&p["tx_packets"]),
            n(&p["tx_bytes"]),
            n(&p["tx_dropped"])
        ));
    }
    let a = &v["actions"];
    out.push_str(&format!(
        "actions: forwarded={} replied={} consumed={} redirected={} redirect-dropped={} dropped={}\n",
        n(&a["forwarded"]),
        n(&a["replied"]),
        n(&a["consumed"]),
        n(&a["redirected"]),
        n(&a["redirect_dropped"]),
        n(&a["dropped"])
    ));
    let drops: Vec<String> = v["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| n(c) > 0)
        .map(|(r, c)| format!("{r}={}", n(c)))
        .collect();
    out.push_str(&format!("drops: {}\n", drops.join(" ")));
    let f = &v["flows"];
    out.push_str(&format!(
        "flows: entries={} capacity={} created={} expired={} evicted={} evicted-established={} flushed={} syn-flood-hashed={} templates={} templates-full={}\n",
        n(&f["entries"]),
        n(&f["capacity"]),
        n(&f["created"]),
        n(&f["expired"]),
        n(&f["evicted"]),
        n(&f["evicted_established"]),
        n(&f["flushed"]),
        n(&f["syn_flood_hashed"]),
        n(&f["templates"]),
        n(&f["templates_full"])
    ));
    let y = &v["sync"];
    if y["enabled"] == Value::Bool(true) {
        let keys = [
            "synced_flows",
            "queued",
            "queue_full",
            "records_sent",
            "rate_limited",
            "records_received",
            "missed",
            "deliver_full",
            "installed",
            "updated",
            "known",
            "table_full",
            "unknown",
            "adopted",
            "evicted",
        ];
        let parts: Vec<String> = keys
            .iter()
            .map(|k| format!("{}={}", k.replace('_', "-"), n(&y[*k])))
            .collect();
        out.push_str(&format!("sync: {}\n", parts.join(" ")));
    }
    let line = |what: String, t: &Value| {
        format!(
            "{what}: packets-in={} bytes-in={} packets-out={} bytes-out={} new-flows={} active={} inactive={}\n",
            n(&t["packets_in"]),
            n(&t["bytes_in"]),
            n(&t["packets_out"]),
            n(&t["bytes_out"]),
            n(&t["new_flows"]),
            n(&t["active"]),
            n(&t["inactive"])
        )
    };
    for svc in v["services"].as_array().into_iter().flatten() {
        out.push_str(&line(format!("service {}", s(&svc["id"])), svc));
        for b in svc["backends"].as_array().into_iter().flatten() {
            out.push_str(&line(
                format!("backend {}/{}", s(&svc["id"]), s(&b["id"])),
                b,
            ));
        }
    }
    out.trim_end().to_string()
}

/// `client -> backend (address): why`, one line per worker when the answer depends on it.
fn lookup_text(v: &Value) -> String {
    let line = |a: &Value| {
        let to = if a["backend"].is_null() {
            "no backend".to_string()
        } else {
            format!("{} ({})", s(&a["backend_address"]), s(&a["backend"]))
        };
        let state = a["state"]
            .as_str()
            .map_or_else(String::new, |st| format!(", {st}"));
        let health = a["health"]
            .as_str()
            .map_or_else(String::new, |h| format!(", backend {h}"));
        format!(
            "{} -> {to}: {}{state}{health} (worker {})",
            s(&v["client"]),
            s(&a["why"]),
            n(&a["worker"])
        )
    };
    match v["per_worker"].as_array() {
        Some(all) => all.iter().map(line).collect::<Vec<_>>().join("\n"),
        None => line(v),
    }
}

fn flows_table(v: &Value) -> String {
    let mut out = format!(
        "{:<16} {:<45} {:<45} {:<12} {:>8} {:>8} {:>6}\n",
        "Service", "Client", "Backend", "State", "Age(s)", "Idle(s)", "Worker"
    );
    for f in v["flows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<45} {:<45} {:<12} {:>8} {:>8} {:>6}\n",
            s(&f["service"]),
            s(&f["client"]),
            format!("{} ({})", s(&f["backend_address"]), s(&f["backend"])),
            s(&f["state"]),
            n(&f["age_seconds"]),
            n(&f["idle_seconds"]),
            n(&f["worker"])
        ));
    }
    out.trim_end().to_string()
}
