//! The REST API over HTTP, in process: a real server and controller, a real publisher (no
//! workers), and a stand-in for the appliance's counters and flow tables. Every endpoint, and
//! every kind of bad input with its status, its error text, and proof that nothing changed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use controlplane::api::http::{self, Call};
use controlplane::config::{self, MAX_BACKENDS, MAX_SERVICES};
use controlplane::controller::{Controller, Interface, Setup, Workers};
use controlplane::publish::Limits;
use dataplane::addr::MacAddr;
use dataplane::command::{Command, FlowDump};
use dataplane::counters::{ServiceCounters, WorkerCounters};
use dataplane::drop_reason::DropReason;
use dataplane::flow::{Endpoint, FlowKey, FlowState, FlowTable, FlowTimeouts, NewFlow, addr_bytes};
use dataplane::service::{BackendId, ServiceId};
use dataplane::shared::SharedSnapshot;
use serde_json::{Value, json};

/// A stand-in for worker 0: a flow table with two flows of service `web` (id 0) to its first
/// backend, dumped as a worker dumps them.
fn worker(commands: crossbeam_channel::Receiver<Command>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut table = FlowTable::new(16, 16, FlowTimeouts::default());
        for i in 0..2u8 {
            let key = FlowKey {
                client: addr_bytes([198, 18, 2, i].into()),
                vip: addr_bytes([198, 18, 0, 100].into()),
                client_port: 4000,
                vip_port: 80,
                protocol: 6,
            };
            let new = NewFlow {
                key,
                service: ServiceId(0),
                backend: BackendId(0),
                endpoint: Endpoint {
                    addr: addr_bytes([198, 18, 0, 10].into()),
                    port: 8080,
                },
                nat: true,
                state: FlowState::Established,
                template: None,
            };
            table.insert(new, 0).unwrap();
        }
        for cmd in commands {
            if let Command::DumpFlows {
                filter,
                mut into,
                reply,
            } = cmd
            {
                let room = into.capacity();
                into.extend(
                    table
                        .iter()
                        .filter(|f| filter.matches(f))
                        .take(room)
                        .copied(),
                );
                let _ = reply.send(FlowDump {
                    worker: 0,
                    now: 2,
                    flows: into,
                });
            }
        }
    })
}

struct Api {
    base: String,
    shared: Arc<SharedSnapshot>,
    /// Open: the control thread answers; closed: it holds the call it took.
    gate: Arc<AtomicBool>,
    agent: ureq::Agent,
    token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const CONFIG: &str = r#"
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "2001:db8:1::1/64"]
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
scheduler = "maglev"
[[services.backends]]
id = "web-1"
address = "198.18.0.10"
port = 8080
[[services.backends]]
id = "web-2"
address = "198.18.0.11"
port = 8080
"#;

impl Api {
    fn start(token: Option<&str>, state_file: Option<PathBuf>) -> Api {
        Api::start_with(token, state_file, Limits::default())
    }

    fn start_with(token: Option<&str>, state_file: Option<PathBuf>, limits: Limits) -> Api {
        let mut model = config::load_str("test", CONFIG, []).unwrap();
        model.api.token = token.map(String::from);
        model.api.state_file = state_file;
        let (commands, commands_rx) = crossbeam_channel::bounded(16);
        let counters: Arc<[WorkerCounters]> = Arc::from(vec![WorkerCounters::new(1)]);
        counters[0].actions.drops[DropReason::NoService as usize].add(3);
        let mut controller = Controller::new(
            model,
            Setup {
                config_path: None,
                interfaces: vec![Interface {
                    port: 0,
                    name: "net_null0".into(),
                    mac: MacAddr([2, 0, 0, 0, 0, 1]),
                    addresses: Vec::new(),
                }],
                workers: Workers {
                    commands: vec![commands],
                    counters,
                    traffic: vec![Arc::new(ServiceCounters::new(MAX_SERVICES, MAX_BACKENDS))],
                },
                publish_wait: Duration::from_secs(1),
                limits,
            },
        )
        .unwrap();
        let shared = Arc::clone(controller.shared());
        let (calls_tx, queues) = http::queues();
        let worker = worker(commands_rx);
        let gate = Arc::new(AtomicBool::new(true));
        let open = Arc::clone(&gate);
        // As the appliance's control thread takes them: changes first.
        let control = std::thread::spawn(move || {
            let (reads, changes) = (&queues.reads, &queues.changes);
            loop {
                let call: Call = match changes.try_recv() {
                    Ok(c) => c,
                    Err(_) => {
                        let got = crossbeam_channel::select! {
                            recv(changes) -> c => c,
                            recv(reads) -> c => c,
                        };
                        match got {
                            Ok(c) => c,
                            Err(_) => break, // the server is gone
                        }
                    }
                };
                // A closed gate holds the control thread (a test of queues filling up).
                while !open.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = call.reply.send(controller.handle(call.request));
            }
            // The controller (and so the workers' command channel) goes with this thread.
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = http::router(calls_tx, token, json!({"version": "test"}));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            http::serve(listener, router, async {
                let _ = stopped.await;
            })
            .unwrap();
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Api {
            base,
            shared,
            gate,
            agent,
            token: token.map(String::from),
            stop: Some(stop),
            threads: vec![server, control, worker],
        }
    }

    /// (status, body as JSON or as a string, the Location header)
    fn send(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value, Option<String>) {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => {
                let mut req = self.agent.delete(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (m, b) => {
                let mut req = match m {
                    "POST" => self.agent.post(&url),
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    _ => unreachable!(),
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.content_type("application/json").send(b.unwrap_or(""))
            }
        };
        let mut r = r.expect("an HTTP answer");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.body_mut().read_to_string().unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, location)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send("GET", path, None);
        (s, v)
    }

    fn services(&self) -> Value {
        let (s, v) = self.get("/api/v1/services");
        assert_eq!(s, 200);
        v
    }

    /// The snapshot's epoch: it moves with every publish.
    fn epoch(&self) -> u64 {
        self.shared.current().epoch
    }

    /// Sends a request that must be refused with `status` and an error starting `error`, and
    /// checks that neither the configuration nor the dataplane changed.
    fn refused(&self, method: &str, path: &str, body: Option<&str>, status: u16, error: &str) {
        let (before, epoch) = (self.services(), self.epoch());
        let (s, v, _) = self.send(method, path, body);
        assert_eq!(s, status, "{method} {path} {body:?}: {v}");
        let e = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error text in {v}"));
        assert!(
            e.starts_with(error),
            "{method} {path}: {e:?} does not start with {error:?}"
        );
        assert_eq!(self.services(), before, "the configuration changed");
        assert_eq!(self.epoch(), epoch, "something was published");
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn service(id: &str, vip: &str, port: u16) -> String {
    json!({"id": id, "protocol": "tcp", "vip": vip, "port": port, "scheduler": "rr",
           "backends": [{"id": "b1", "address": "198.18.1.1", "port": 8080}]})
    .to_string()
}

#[test]
fn services_are_listed_created_changed_and_deleted_and_live_at_once() {
    let api = Api::start(None, None);
    let list = api.services();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0],
        json!({"id": "web", "protocol": "tcp", "vip": "198.18.0.100", "port": 80,
               "scheduler": "maglev", "forwarding": "nat", "maglev_table_size": 65537,
               "scheduler_flags": [], "one_packet": false, "allow": [], "deny": [], "tunnel": "ipip",
               "persistence_timeout": 0, "expire_quiescent_template": false,
               "backends": [
                 {"id": "web-1", "address": "198.18.0.10", "port": 8080, "weight": 1, "enabled": true,
                  "upper_threshold": 0, "lower_threshold": 0},
                 {"id": "web-2", "address": "198.18.0.11", "port": 8080, "weight": 1, "enabled": true,
                  "upper_threshold": 0, "lower_threshold": 0}],
               "health_check": {"type": "none", "port": null, "path": "/", "expect_status": 200,
                                "interval_ms": 2000, "timeout_ms": 1000, "rise": 2, "fall": 3},
               "on_down": "remove", "sorry_backend": null})
    );
    assert_eq!(api.get("/api/v1/services/web"), (200, list[0].clone()));

    let epoch = api.epoch();
    let (s, v, loc) = api.send(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(loc.as_deref(), Some("/api/v1/services/dns"));
    assert_eq!(v["scheduler"], "rr");
    assert_eq!(v["forwarding"], "nat", "defaults are filled in");
    assert_eq!(v["backends"][0]["weight"], 1);
    // live before the answer: the published snapshot has it
    assert_eq!(api.epoch(), epoch + 1);
    let snap = api.shared.current();
    assert!(
        snap.services
            .iter()
            .any(|s| s.config.name == "dns" && s.config.port == 53)
    );
    assert_eq!(api.get("/api/v1/services/dns"), (200, v.clone()));

    let (s, v, _) = api.send(
        "PATCH",
        "/api/v1/services/dns",
        Some(r#"{"scheduler": "wlc", "port": 5353}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["scheduler"].as_str(), v["port"].as_u64()),
        (Some("wlc"), Some(5353))
    );
    assert_eq!(
        v["backends"][0]["id"], "b1",
        "what the patch leaves out stays"
    );
    let snap = api.shared.current();
    let dns = snap
        .services
        .iter()
        .find(|s| s.config.name == "dns")
        .unwrap();
    assert_eq!(dns.config.port, 5353);
    assert_eq!(dns.config.scheduler.name(), "wlc");

    let (s, v, _) = api.send("DELETE", "/api/v1/services/dns", None);
    assert_eq!((s, v), (204, Value::String(String::new())));
    assert!(
        !api.shared
            .current()
            .services
            .iter()
            .any(|s| s.config.name == "dns")
    );
    assert_eq!(api.get("/api/v1/services/dns").0, 404);
}

#[test]
fn bad_services_are_refused_naming_the_field_and_nothing_changes() {
    let api = Api::start(None, None);
    let post = |body: &str, status, error: &str| {
        api.refused("POST", "/api/v1/services", Some(body), status, error)
    };
    post(
        "{\"id\": \"x\",",
        400,
        "body: malformed JSON: EOF while parsing",
    );
    post("", 400, "body: empty");
    // A key twice: serde_json would keep the last; which one the sender meant is unknown.
    post(
        r#"{"id": "dup", "vip": "198.18.0.60", "port": 80, "port": 81}"#,
        400,
        "body: malformed JSON: key `port` appears twice at line 1 column 54",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(
            r#"{"backends": [{"id": "b1", "address": "198.18.1.10", "weight": 1, "weight": 100}]}"#,
        ),
        400,
        "body: malformed JSON: key `weight` appears twice",
    );
    post(
        &service("own", "198.18.0.1", 80),
        422,
        "vip: 198.18.0.1 is the address of interfaces[0], not a VIP",
    );
    post(
        &service("any", "0.0.0.0", 80),
        422,
        "vip: 0.0.0.0 is the unspecified address, not a VIP",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": "80"}"#,
        422,
        "port: invalid type: string \"80\", expected u16",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 80, "colour": "red"}"#,
        422,
        "colour: unknown field",
    );
    post(r#"{"id": "x", "port": 80}"#, 422, "vip: is required");
    post(
        r#"{"id": "x", "vip": "198.18.0.300", "port": 80}"#,
        422,
        "vip: \"198.18.0.300\" is not an IP address",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 0}"#,
        422,
        "port: 0 (every port) is for a persistent dr or tun service",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 70000}"#,
        422,
        "port: invalid value: integer `70000`, expected u16",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 80, "scheduler": "fastest"}"#,
        422,
        "scheduler: \"fastest\" is not one of",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 80, "forwarding": "magic"}"#,
        422,
        "forwarding: \"magic\" is not one of",
    );
    post(
        r#"{"id": "x y", "vip": "198.18.0.5", "port": 80}"#,
        422,
        "id: \"x y\" is not a valid id",
    );
    post(
        r#"{"id": "x", "vip": "198.18.0.5", "port": 80, "backends": [{"id": "b", "address": "2001:db8::1"}]}"#,
        422,
        "backends[0].address: 2001:db8::1 is IPv6, the service's vip 198.18.0.5 is IPv4",
    );
    post(
        &service("web", "198.18.0.5", 81),
        409,
        "id: service \"web\" already exists",
    );
    post(
        &service("other", "198.18.0.100", 80),
        409,
        "vip: tcp 198.18.0.100 port 80 is already service \"web\"",
    );
    post(
        "[1, 2]",
        422,
        "body: a JSON object is expected, not an array",
    );
    let big = format!(
        r#"{{"id": "x", "vip": "198.18.0.5", "port": 80, "pad": "{}"}}"#,
        "a".repeat(http::BODY_LIMIT)
    );
    post(&big, 413, "body: larger than 1048576 bytes");

    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(r#"{"id": "www"}"#),
        422,
        "id: cannot change (\"web\")",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(r#"{"vip": "fe80::1"}"#),
        422,
        "backends[0].address: 198.18.0.10 is IPv4, the service's vip fe80::1 is IPv6",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(r#"{"port": 0}"#),
        422,
        "port: 0 (every port) is for a persistent dr or tun service",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(r#"{"maglev_table_size": 1000}"#),
        422,
        "maglev_table_size: 1000 is not a prime",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some("{nope"),
        400,
        "body: malformed JSON",
    );
    api.refused(
        "PATCH",
        "/api/v1/services/nope",
        Some("{}"),
        404,
        "no service \"nope\"",
    );
    api.refused(
        "DELETE",
        "/api/v1/services/nope",
        None,
        404,
        "no service \"nope\"",
    );
    api.refused(
        "GET",
        "/api/v1/services/nope",
        None,
        404,
        "no service \"nope\"",
    );

    // a second service, then a patch that would collide with the first
    let (s, _, _) = api.send(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
    );
    assert_eq!(s, 201);
    api.refused(
        "PATCH",
        "/api/v1/services/dns",
        Some(r#"{"vip": "198.18.0.100", "port": 80}"#),
        409,
        "vip: tcp 198.18.0.100 port 80 is already service \"web\"",
    );

    api.refused(
        "GET",
        "/api/v1/nothing",
        None,
        404,
        "no such endpoint: GET /api/v1/nothing",
    );
    api.refused(
        "PUT",
        "/api/v1/stats",
        Some("{}"),
        405,
        "PUT is not allowed on /api/v1/stats",
    );
    api.refused(
        "PUT",
        "/api/v1/services",
        Some("{}"),
        422,
        "body: a JSON array of services is expected",
    );
    api.refused(
        "PUT",
        "/api/v1/services",
        Some(r#"[{"id": "a", "vip": "198.18.0.5", "port": 80}, {"id": "a", "vip": "198.18.0.6", "port": 80}]"#),
        422,
        "[1].id: duplicate service id \"a\"",
    );
    api.refused(
        "PUT",
        "/api/v1/services",
        Some(r#"[{"id": "a", "vip": "198.18.0.1", "port": 80}]"#),
        422,
        "[0].vip: 198.18.0.1 is the address of interfaces[0], not a VIP",
    );
}

#[test]
fn backends_are_added_drained_and_removed_and_bad_ones_refused() {
    let api = Api::start(None, None);
    let (s, v) = api.get("/api/v1/services/web/backends");
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(
        api.get("/api/v1/services/web/backends/web-2"),
        (200, v[1].clone())
    );

    let (s, v, loc) = api.send(
        "POST",
        "/api/v1/services/web/backends",
        Some(r#"{"id": "web-3", "address": "198.18.0.12"}"#),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(loc.as_deref(), Some("/api/v1/services/web/backends/web-3"));
    assert_eq!(
        v,
        json!({"id": "web-3", "address": "198.18.0.12", "port": 80, "weight": 1, "enabled": true,
               "upper_threshold": 0, "lower_threshold": 0}),
        "the port defaults to the service's"
    );
    let snap = api.shared.current();
    assert_eq!(snap.services[0].config.backends.len(), 3);

    let (s, v, _) = api.send(
        "PATCH",
        "/api/v1/services/web/backends/web-3",
        Some(r#"{"weight": 0}"#),
    );
    assert_eq!((s, v["weight"].as_u64()), (200, Some(0)));
    let snap = api.shared.current();
    assert_eq!(
        snap.services[0].config.backends[2].weight, 0,
        "drained in the dataplane"
    );
    let (s, v, _) = api.send(
        "PATCH",
        "/api/v1/services/web/backends/web-3",
        Some(r#"{"weight": 2, "enabled": false}"#),
    );
    assert_eq!(
        (s, v["weight"].as_u64(), v["enabled"].as_bool()),
        (200, Some(2), Some(false))
    );

    let b = "/api/v1/services/web/backends";
    let add = |body: &str, status, error: &str| api.refused("POST", b, Some(body), status, error);
    add(
        r#"{"id": "web-1", "address": "198.18.0.20"}"#,
        409,
        "id: service \"web\" already has backend \"web-1\"",
    );
    add(
        r#"{"id": "web-9", "address": "198.18.0.10", "port": 8080}"#,
        409,
        "address: 198.18.0.10 port 8080 is already backend \"web-1\" of service \"web\"",
    );
    add(
        r#"{"id": "web-9", "address": "2001:db8::9"}"#,
        422,
        "address: 2001:db8::9 is IPv6, the service's vip 198.18.0.100 is IPv4",
    );
    add(
        r#"{"id": "web-9", "address": "198.18.0.100"}"#,
        422,
        "address: 198.18.0.100 is the service's own vip",
    );
    add(
        r#"{"id": "web-9", "address": "198.18.0.20", "port": 0}"#,
        422,
        "port: 0 is not a port",
    );
    add(
        r#"{"id": "web-9", "address": "198.18.0.20", "weight": 70000}"#,
        422,
        "weight: 70000 is not from 0 to 65535",
    );
    add(
        r#"{"id": "web-9", "address": "198.18.0.20", "weight": "heavy"}"#,
        422,
        "weight: invalid type: string \"heavy\", expected u32",
    );
    add(r#"{"id": "web-9"}"#, 422, "address: is required");
    add(
        r#"{"id": "web-9", "address": "198.18.0.20", "wieght": 1}"#,
        422,
        "wieght: unknown field",
    );
    add("not json", 400, "body: malformed JSON");
    api.refused(
        "POST",
        "/api/v1/services/nope/backends",
        Some(r#"{"id": "a", "address": "198.18.0.20"}"#),
        404,
        "no service \"nope\"",
    );
    api.refused(
        "PATCH",
        &format!("{b}/web-1"),
        Some(r#"{"id": "other"}"#),
        422,
        "id: cannot change (\"web-1\")",
    );
    api.refused(
        "PATCH",
        &format!("{b}/web-1"),
        Some(r#"{"address": "198.18.0.11"}"#),
        409,
        "address: 198.18.0.11 port 8080 is already backend \"web-2\"",
    );
    api.refused(
        "PATCH",
        &format!("{b}/nope"),
        Some("{}"),
        404,
        "service \"web\" has no backend \"nope\"",
    );
    api.refused(
        "GET",
        &format!("{b}/nope"),
        None,
        404,
        "service \"web\" has no backend \"nope\"",
    );
    api.refused(
        "DELETE",
        &format!("{b}/nope"),
        None,
        404,
        "service \"web\" has no backend \"nope\"",
    );

    let (s, _, _) = api.send("DELETE", &format!("{b}/web-3"), None);
    assert_eq!(s, 204);
    let snap = api.shared.current();
    assert_eq!(snap.services[0].config.backends.len(), 2);
    assert_eq!(api.get(&format!("{b}/web-3")).0, 404);
}

#[test]
fn a_token_guards_changes_and_reads_stay_open() {
    let mut api = Api::start(Some("s3cret"), None);
    api.token = None;
    api.refused(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
        401,
        "authorization: a valid \"Authorization: Bearer <token>\" header is needed",
    );
    api.token = Some("s3cret-not".into());
    api.refused(
        "DELETE",
        "/api/v1/services/web",
        None,
        401,
        "authorization:",
    );
    api.token = Some("S3CRET".into());
    api.refused(
        "PATCH",
        "/api/v1/services/web/backends/web-1",
        Some(r#"{"weight": 0}"#),
        401,
        "authorization:",
    );
    // The token is checked before the body is read: no token and a broken body is 401, not 400.
    api.token = None;
    api.refused(
        "POST",
        "/api/v1/services",
        Some("{not json"),
        401,
        "authorization:",
    );
    api.refused("POST", "/api/v1/reload", Some("[1"), 401, "authorization:");
    assert_eq!(api.get("/api/v1/services").0, 200);
    assert_eq!(api.get("/api/v1/stats").0, 200);
    // The scheme's name is case-insensitive (RFC 7235).
    let r = api
        .agent
        .patch(format!("{}/api/v1/services/web/backends/web-1", api.base))
        .header("Authorization", "bearer s3cret")
        .send(r#"{"weight": 4}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = api
        .agent
        .patch(format!("{}/api/v1/services/web/backends/web-1", api.base))
        .header("Authorization", "Basic s3cret")
        .send(r#"{"weight": 5}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "another scheme");
    api.token = Some("s3cret".into());
    let (s, _, _) = api.send(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
    );
    assert_eq!(s, 201);
}

#[test]
fn flows_stats_metrics_health_version_and_openapi_answer() {
    let api = Api::start(None, None);
    let (s, v) = api.get("/api/v1/services/web/flows?limit=5");
    assert_eq!(s, 200);
    assert_eq!(v["service"], "web");
    assert_eq!(v["flows"][0]["client"], "198.18.2.0:4000");
    assert_eq!(
        api.get("/api/v1/services/web/flows").1["limit"],
        100,
        "the default limit"
    );
    api.refused(
        "GET",
        "/api/v1/services/web/flows?limit=0",
        None,
        422,
        "limit: 0 is not from 1 to 10000",
    );
    api.refused(
        "GET",
        "/api/v1/services/web/flows?limit=many",
        None,
        400,
        "limit: \"many\" is not a number",
    );
    api.refused(
        "GET",
        "/api/v1/services/web/flows?max=3",
        None,
        400,
        "\"max=3\": unknown query parameter",
    );
    api.refused(
        "GET",
        "/api/v1/services/nope/flows",
        None,
        404,
        "no service \"nope\"",
    );

    let (s, v) = api.get("/api/v1/stats");
    assert_eq!(s, 200);
    assert_eq!(v["drops"]["no_service"], 3);
    assert_eq!(v["services"][0]["id"], "web");
    assert_eq!(v["epoch"], api.epoch());

    let r = api
        .agent
        .get(format!("{}/metrics", api.base))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.into_body().read_to_string().unwrap();
    assert!(
        text.contains("l4lb_drops_total{reason=\"no_service\"} 3\n"),
        "{text}"
    );

    assert_eq!(
        api.get("/healthz"),
        (200, json!({"status": "ok", "services": 1}))
    );
    assert_eq!(
        api.get("/api/v1/version"),
        (200, json!({"version": "test"}))
    );
    let (s, doc) = api.get("/api/v1/openapi.json");
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/services",
        "/api/v1/services/{service}/backends/{backend}",
        "/metrics",
        "/api/v1/services/{service}/flows",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    assert_eq!(
        doc["paths"]["/api/v1/services"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ServiceSpec"
    );
    let props = &doc["components"]["schemas"]["BackendSpec"]["properties"];
    for f in ["id", "address", "port", "weight", "enabled"] {
        assert!(props[f].is_object(), "BackendSpec.{f}");
    }
}

#[test]
fn changes_are_saved_to_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let api = Api::start(None, Some(path.clone()));
    let (s, _, _) = api.send(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
    );
    assert_eq!(s, 201);
    let saved = controlplane::state::load(&path).unwrap().unwrap();
    assert_eq!(
        saved.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["web", "dns"]
    );
    let (s, _, _) = api.send(
        "PATCH",
        "/api/v1/services/web/backends/web-1",
        Some(r#"{"weight": 7}"#),
    );
    assert_eq!(s, 200);
    let saved = controlplane::state::load(&path).unwrap().unwrap();
    assert_eq!(saved[0].backends[0].weight, 7);
    // a refused change does not touch the file
    let before = std::fs::read(&path).unwrap();
    api.refused(
        "PATCH",
        "/api/v1/services/web",
        Some(r#"{"port": 0}"#),
        422,
        "port:",
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn reload_and_the_audit_trail_answer_over_http() {
    let api = Api::start(Some("s3cret"), None);
    let (s, _, _) = api.send(
        "POST",
        "/api/v1/services",
        Some(&service("dns", "198.18.0.53", 53)),
    );
    assert_eq!(s, 201);
    // This controller's file is the embedded default, whose interfaces differ: refused.
    let (s, v, _) = api.send("POST", "/api/v1/reload", Some(""));
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["error"],
        "[dpdk] and [[interfaces]] change only with a restart"
    );
    api.refused(
        "POST",
        "/api/v1/reload",
        Some(r#"{"services_from_file": "yes"}"#),
        422,
        "services_from_file: a boolean is expected",
    );
    api.refused(
        "POST",
        "/api/v1/reload",
        Some(r#"{"everything": true}"#),
        422,
        "everything: unknown field (expected `services_from_file`)",
    );
    let (s, v) = api.get("/api/v1/audit");
    assert_eq!(s, 200);
    let entries: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries[0].starts_with("api: create service dns: service dns added (")
            && entries[0].ends_with("with backends [b1]: ok (epoch 2)"),
        "{}",
        entries[0]
    );
    assert_eq!(
        entries[1],
        "reload (api) of <embedded conf/l4lb.toml>: refused, the running configuration stays: [dpdk] and [[interfaces]] change only with a restart"
    );
    let (s, v) = api.get("/api/v1/stats");
    assert_eq!(
        (s, &v["reloads"], &v["reload_failures"]),
        (200, &json!(0), &json!(1))
    );
    // Without the token a reload is refused before anything is read.
    let r = api
        .agent
        .post(format!("{}/api/v1/reload", api.base))
        .send("")
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn a_change_gets_through_however_many_reads_wait() {
    let api = Api::start(Some("s3cret"), None);
    api.gate.store(false, Ordering::Relaxed);
    let busy = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..100)
        .map(|_| {
            let (agent, url, busy) = (
                api.agent.clone(),
                format!("{}/metrics", api.base),
                Arc::clone(&busy),
            );
            std::thread::spawn(move || {
                let s = agent.get(&url).call().unwrap().status().as_u16();
                if s == 503 {
                    busy.fetch_add(1, Ordering::Relaxed);
                }
                s
            })
        })
        .collect();
    // The reads' queue is full once some are turned away.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while busy.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reads never filled their queue"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let patch = {
        let (agent, url) = (
            api.agent.clone(),
            format!("{}/api/v1/services/web/backends/web-1", api.base),
        );
        std::thread::spawn(move || {
            let mut r = agent
                .patch(&url)
                .header("Authorization", "Bearer s3cret")
                .send(r#"{"weight": 9}"#)
                .unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !patch.is_finished(),
        "the change waits its turn, it is not turned away"
    );
    api.gate.store(true, Ordering::Relaxed);
    let (status, body) = patch.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u16> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503));
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        busy.load(Ordering::Relaxed)
    );
    assert_eq!(
        api.get("/api/v1/services/web/backends/web-1").1["weight"],
        9
    );
}
