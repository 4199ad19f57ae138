//! The controller without HTTP: what each change does to the running model, the snapshot, the
//! state file and the audit trail, and what reloads, id limits and a stuck worker do.

use std::path::PathBuf;

use dataplane::counters::ServiceCounters;
use dataplane::neighbor::NeighborEvent;
use dataplane::shared::Reader;

use super::*;
use crate::api::Body;
use crate::config::{BackendSpec, MAX_BACKENDS, MAX_SERVICES, ServiceSpec};

const CONFIG: &str = r#"
[timeouts]
udp = 300
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24"]
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
scheduler = "rr"
[[services.backends]]
id = "web-1"
address = "198.18.0.10"
port = 8080
[[services.backends]]
id = "web-2"
address = "198.18.0.11"
port = 8080
"#;

struct Rig {
    c: Controller,
    dir: tempfile::TempDir,
    traffic: Arc<ServiceCounters>,
    /// Keeps the workers' command channel open (flushes are sent there).
    _commands: crossbeam_channel::Receiver<Command>,
}

impl Rig {
    /// A controller of `CONFIG` (with `[api] state_file` when `state`), its file on disk, one
    /// worker that is not running (so publishes are live at once), and `limits`.
    fn new(state: bool, limits: Limits) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut rig = Rig {
            c: Controller::new(
                config::load_str("test", CONFIG, []).unwrap(),
                Setup {
                    config_path: None,
                    interfaces: Vec::new(),
                    workers: Workers {
                        commands: Vec::new(),
                        counters: Arc::from(Vec::new()),
                        traffic: Vec::new(),
                    },
                    publish_wait: Duration::from_millis(50),
                    limits,
                },
            )
            .unwrap(),
            traffic: Arc::new(ServiceCounters::new(MAX_SERVICES, MAX_BACKENDS)),
            _commands: crossbeam_channel::never(),
            dir,
        };
        let text = if state {
            format!(
                "[api]\nstate_file = {:?}\n{CONFIG}",
                rig.state().display().to_string()
            )
        } else {
            CONFIG.to_string()
        };
        std::fs::write(rig.cfg(), &text).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        rig._commands = rx;
        rig.c = Controller::new(
            config::load(Some(&rig.cfg()), []).unwrap(),
            Setup {
                config_path: Some(rig.cfg()),
                interfaces: vec![Interface {
                    port: 0,
                    name: "test0".into(),
                    mac: MacAddr([2, 0, 0, 0, 0, 1]),
                    addresses: vec!["198.18.0.1/24".parse().unwrap()],
                }],
                workers: Workers {
                    commands: vec![tx],
                    counters: Arc::from(vec![WorkerCounters::new(1)]),
                    traffic: vec![Arc::clone(&rig.traffic)],
                },
                publish_wait: Duration::from_millis(50),
                limits,
            },
        )
        .unwrap();
        rig
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join("l4lb.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    fn call(&mut self, req: Request) -> Reply {
        self.c.handle(req)
    }

    fn last_audit(&self) -> String {
        self.c.audit().last().expect("an audit line").to_string()
    }

    fn service_ids(&self) -> Vec<String> {
        self.c
            .running()
            .services
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }
}

fn create_service(id: &str, port: u16) -> Request {
    Request::CreateService {
        body: json!({"id": id, "vip": "198.18.0.101", "port": port, "scheduler": "rr",
                     "backends": [{"id": "b1", "address": "198.18.0.20", "port": 8080}]}),
    }
}

#[test]
fn every_kind_of_change_is_one_audit_line_naming_the_object_old_new_and_the_outcome() {
    let mut r = Rig::new(false, Limits::default());
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    assert_eq!(
        r.last_audit(),
        "api: create service dns: service dns added (forwarding nat, maglev_table_size 65537, port 53, protocol tcp, scheduler rr, vip 198.18.0.101) with backends [b1]: ok (epoch 2)"
    );
    let patch = Request::PatchService {
        service: "dns".into(),
        body: json!({"scheduler": "wrr", "port": 5353}),
    };
    assert_eq!(r.call(patch).status, 200);
    assert_eq!(
        r.last_audit(),
        "api: change service dns: service dns: port 53 -> 5353, scheduler rr -> wrr: ok (epoch 3)"
    );
    let add = Request::CreateBackend {
        service: "web".into(),
        body: json!({"id": "web-3", "address": "198.18.0.12", "port": 8080, "weight": 2}),
    };
    assert_eq!(r.call(add).status, 201);
    assert_eq!(
        r.last_audit(),
        "api: add backend web-3 to service web: service web backend web-3 added (address 198.18.0.12, enabled true, port 8080, weight 2): ok (epoch 4)"
    );
    let drain = Request::PatchBackend {
        service: "web".into(),
        backend: "web-3".into(),
        body: json!({"weight": 0}),
    };
    assert_eq!(r.call(drain).status, 200);
    assert_eq!(
        r.last_audit(),
        "api: change backend web/web-3: service web backend web-3: weight 2 -> 0: ok (epoch 5)"
    );
    let delete = Request::DeleteBackend {
        service: "web".into(),
        backend: "web-3".into(),
    };
    assert_eq!(r.call(delete).status, 204);
    assert_eq!(
        r.last_audit(),
        "api: delete backend web/web-3: service web backend web-3 removed: ok (epoch 6)"
    );
    assert_eq!(
        r.call(Request::DeleteService {
            service: "dns".into()
        })
        .status,
        204
    );
    assert_eq!(
        r.last_audit(),
        "api: delete service dns: service dns removed: ok (epoch 7)"
    );
    // Refused: the line says why, and nothing moved.
    let bad = Request::PatchBackend {
        service: "web".into(),
        backend: "web-1".into(),
        body: json!({"weight": 70000}),
    };
    assert_eq!(r.call(bad).status, 422);
    assert_eq!(
        r.last_audit(),
        "api: change backend web/web-1: refused (422 weight: 70000 is not from 0 to 65535)"
    );
    assert_eq!(r.c.epoch(), 7);
    let missing = Request::DeleteService {
        service: "nope".into(),
    };
    assert_eq!(r.call(missing).status, 404);
    assert_eq!(
        r.last_audit(),
        "api: delete service nope: refused (404 no service \"nope\")"
    );
    // Reads leave no line.
    let lines = r.c.audit().count();
    assert_eq!(r.call(Request::ListServices).status, 200);
    assert_eq!(r.c.audit().count(), lines);
}

#[test]
fn with_a_state_file_a_reload_keeps_the_api_made_services_and_applies_the_rest() {
    let mut r = Rig::new(true, Limits::default());
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    let saved = std::fs::read(r.state()).unwrap();
    // Only [timeouts] changed in the file.
    let text = std::fs::read_to_string(r.cfg()).unwrap();
    std::fs::write(r.cfg(), text.replace("udp = 300", "udp = 30")).unwrap();
    let scheduler_before = Arc::clone(&r.c.shared().current().services[0].scheduler);
    let changes = r.c.reload("SIGHUP", false).unwrap();
    assert_eq!(changes, vec!["timeouts.udp 300 -> 30".to_string()]);
    assert_eq!(r.service_ids(), ["web", "dns"], "the API's service stays");
    assert_eq!(r.c.running().timeouts.udp, 30);
    let snap = r.c.shared().current();
    assert_eq!(snap.timeouts.udp, 30);
    assert!(
        Arc::ptr_eq(&scheduler_before, &snap.services[0].scheduler),
        "the services did not change: their schedulers are the same objects"
    );
    assert_eq!(
        std::fs::read(r.state()).unwrap(),
        saved,
        "the state file's services are as they were"
    );
    assert!(
        r.last_audit().starts_with("reload (SIGHUP) of ")
            && r.last_audit()
                .ends_with("l4lb.toml: timeouts.udp 300 -> 30: ok (epoch 3)"),
        "{}",
        r.last_audit()
    );
    // The same file again: nothing to change, counted as such, the epoch stays.
    assert_eq!(r.c.reload("SIGHUP", false).unwrap(), Vec::<String>::new());
    assert!(
        r.last_audit()
            .ends_with(": no change: ok, nothing to change"),
        "{}",
        r.last_audit()
    );
    assert_eq!(
        (r.c.epoch(), r.c.reloads().ok, r.c.reloads().unchanged),
        (3, 2, 1)
    );
    // Asked for explicitly, the file's services replace the API's (and are saved).
    let reply = r.call(Request::Reload {
        body: json!({"services_from_file": true}),
    });
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        Body::Json(json!({"changes": ["service dns removed"], "epoch": 4}))
    );
    assert_eq!(r.service_ids(), ["web"]);
    let on_disk = state::load(&r.state()).unwrap().unwrap();
    assert_eq!(
        on_disk.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["web"]
    );
}

#[test]
fn without_a_state_file_the_file_owns_the_services_and_the_reload_says_what_it_removed() {
    let mut r = Rig::new(false, Limits::default());
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    let changes = r.c.reload("SIGHUP", false).unwrap();
    assert_eq!(changes, vec!["service dns removed".to_string()]);
    assert_eq!(r.service_ids(), ["web"]);
}

#[test]
fn a_refused_reload_changes_nothing_and_is_counted() {
    let mut r = Rig::new(true, Limits::default());
    let epoch = r.c.epoch();
    std::fs::write(r.cfg(), "[dpdk]\nburst = 0\n").unwrap();
    let e = r.c.reload("SIGHUP", false).unwrap_err();
    assert_eq!(e.status, 422);
    assert!(e.message.contains("dpdk.burst"), "{}", e.message);
    assert!(
        r.last_audit()
            .contains("refused, the running configuration stays"),
        "{}",
        r.last_audit()
    );
    let text = CONFIG.replace("port = 0\n", "port = 1\n");
    std::fs::write(
        r.cfg(),
        format!(
            "[api]\nstate_file = {:?}\n{text}",
            r.state().display().to_string()
        ),
    )
    .unwrap();
    let e = r.c.reload("SIGHUP", false).unwrap_err();
    assert_eq!(
        e.message,
        "[dpdk] and [[interfaces]] change only with a restart"
    );
    assert_eq!((r.c.reloads().ok, r.c.reloads().failed), (0, 2));
    assert_eq!(r.c.epoch(), epoch);
    assert!(r.c.reloads().last_ok_unix.is_none());
    let stats = r.c.stats();
    assert_eq!((stats.reloads, stats.reload_failures), (0, 2));
}

#[test]
fn a_change_refused_at_the_id_limit_leaves_no_trace_and_the_next_that_fits_is_accepted() {
    // Room for two services and four backends' ids.
    let limits = Limits {
        services: 2,
        backends: 4,
    };
    let mut r = Rig::new(true, limits);
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    let saved = std::fs::read(r.state()).unwrap();
    let (epoch, snapshot) = (r.c.epoch(), r.c.shared().current().epoch);
    // A third service: no service id left.
    let reply = r.call(create_service("ntp", 123));
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.body,
        Body::Json(json!({"error": "services: more than 2; nothing changed"}))
    );
    // web-2 replaced by two new backends: one id is left, and web-2's is quarantined for one
    // change, so the second new one finds none.
    let mut web = ServiceSpec::from(&r.c.running().services[0]);
    web.backends.truncate(1);
    for (id, a) in [("web-8", "198.18.0.18"), ("web-9", "198.18.0.19")] {
        web.backends.push(BackendSpec {
            id: id.into(),
            address: a.into(),
            ..web.backends[0].clone()
        });
    }
    let body = serde_json::to_value(&web).unwrap();
    let reply = r.call(Request::PatchService {
        service: "web".into(),
        body: body.clone(),
    });
    assert_eq!(
        reply.body,
        Body::Json(
            json!({"error": "backends: more than 4 in all services (with those removed by the last change, whose ids are free again after it); nothing changed"})
        )
    );
    assert_eq!(
        std::fs::read(r.state()).unwrap(),
        saved,
        "the state file is untouched"
    );
    assert_eq!(
        (r.c.epoch(), r.c.shared().current().epoch),
        (epoch, snapshot)
    );
    assert_eq!(r.service_ids(), ["web", "dns"]);
    // What fits goes through: one new backend in place of web-2.
    web.backends.truncate(2);
    let reply = r.call(Request::PatchService {
        service: "web".into(),
        body: serde_json::to_value(&web).unwrap(),
    });
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let on_disk = state::load(&r.state()).unwrap().unwrap();
    assert_eq!(
        on_disk[0]
            .backends
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["web-1", "web-8"]
    );
}

#[test]
fn a_stuck_worker_makes_a_change_answer_503_and_the_next_call_after_it_resumes_is_consistent() {
    let mut r = Rig::new(true, Limits::default());
    // Worker 0 runs (it has reported an epoch) but does not come back for the next one.
    let shared = Arc::clone(r.c.shared());
    let mut reader: Reader = shared.reader(0);
    let drain = |w: u32| Request::PatchBackend {
        service: "web".into(),
        backend: "web-1".into(),
        body: json!({ "weight": w }),
    };
    let reply = r.call(drain(0));
    assert_eq!(reply.status, 503);
    let Body::Json(v) = &reply.body else { panic!() };
    assert_eq!(
        v["error"],
        "saved and published as epoch 2, but worker(s) [0] did not take it up within 50ms; they use it as soon as they run again"
    );
    assert!(
        r.last_audit().contains("did not take it up"),
        "{}",
        r.last_audit()
    );
    // It is the running configuration all the same: saved, and what the worker picks up.
    assert_eq!(r.c.running().services[0].backends[0].weight, 0);
    assert_eq!(
        state::load(&r.state()).unwrap().unwrap()[0].backends[0].weight,
        0
    );
    assert_eq!(
        reader.refresh(&shared).services[0].config.backends[0].weight,
        0
    );
    // The worker runs again: the next change is live and answers 200.
    let worker = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            reader.refresh(&shared);
            std::thread::sleep(Duration::from_millis(1));
        }
        reader.retire(&shared);
    });
    let reply = r.call(drain(3));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(r.c.running().services[0].backends[0].weight, 3);
    assert_eq!(r.c.epoch(), 3);
    worker.join().unwrap();
}

#[test]
fn a_learned_neighbour_is_published_without_moving_the_configuration_epoch() {
    let mut r = Rig::new(false, Limits::default());
    let snapshot = r.c.shared().current().epoch;
    r.c.neighbor_event(NeighborEvent::Learned {
        addr: "198.18.0.10".parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, 0, 0x10]),
        interface: 0,
    });
    r.c.tick(Instant::now());
    let snap = r.c.shared().current();
    assert_eq!(snap.epoch, snapshot + 1, "published");
    assert_eq!(r.c.epoch(), 1, "not a configuration change");
    assert_eq!(r.c.stats().epoch, 1);
    assert_eq!(r.c.stats().snapshot_epoch, snapshot + 1);
    // Our own address looped back is never learned.
    r.c.neighbor_event(NeighborEvent::Learned {
        addr: "198.18.0.1".parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
        interface: 0,
    });
    r.c.tick(Instant::now());
    assert_eq!(r.c.shared().current().epoch, snapshot + 1);
}

#[test]
fn a_reused_id_counts_and_shows_connections_from_its_new_owner_only() {
    let mut r = Rig::new(false, Limits::default());
    let ids = |r: &Rig, service: &str| -> Vec<usize> {
        let snap = r.c.shared().current();
        let s = snap
            .services
            .iter()
            .find(|s| s.config.name == service)
            .unwrap();
        s.config.backends.iter().map(|b| b.id.0 as usize).collect()
    };
    let web = ids(&r, "web");
    // The old owners' counts, as their worker copied them out.
    let traffic = Arc::clone(&r.traffic);
    for &id in &web {
        traffic.backends[id].packets_in.add(10);
        traffic.backends[id].active.set(5);
    }
    r.traffic
        .mirrored_snapshot
        .set(r.c.shared().current().epoch);
    assert_eq!(
        r.call(Request::DeleteService {
            service: "web".into()
        })
        .status,
        204
    );
    // Released ids are quarantined for one change, then reused.
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    assert_eq!(
        r.call(Request::DeleteService {
            service: "dns".into()
        })
        .status,
        204
    );
    assert_eq!(r.call(create_service("ntp", 123)).status, 201);
    let reused = ids(&r, "ntp")[0];
    assert!(web.contains(&reused), "id {reused} is one of web's {web:?}");
    let b = r.c.stats().services[0].backends[0].clone();
    assert_eq!(
        (b.id.as_str(), b.traffic.packets_in, b.traffic.active),
        ("b1", 0, 0)
    );
    // The worker copies out the gauges for the new owner: those count.
    let t = &traffic.backends[reused];
    t.active.set(2);
    t.packets_in.add(1);
    let stale = r.c.stats().services[0].backends[0].traffic.clone();
    assert_eq!(
        (stale.packets_in, stale.active),
        (1, 0),
        "gauges copied out before its snapshot"
    );
    r.traffic
        .mirrored_snapshot
        .set(r.c.shared().current().epoch);
    let fresh = r.c.stats().services[0].backends[0].traffic.clone();
    assert_eq!((fresh.packets_in, fresh.active), (1, 2));
}

#[test]
fn frames_announce_vips_at_start_and_new_vips_when_added() {
    let mut r = Rig::new(false, Limits::default());
    r.c.start();
    let frames = r.c.take_frames();
    // The VIP and our address: two gratuitous ARPs on port 0; then the backends resolved
    // before any packet needs them: an ARP request for each, from our address.
    assert_eq!(frames.len(), 4);
    assert!(
        frames
            .iter()
            .all(|f| f.port == 0 && f.bytes[12..14] == [0x08, 0x06])
    );
    for (f, target) in frames[2..].iter().zip([10, 11]) {
        assert_eq!(&f.bytes[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&f.bytes[20..22], &[0, 1], "a request");
        assert_eq!(&f.bytes[28..32], &[198, 18, 0, 1], "from our address");
        assert_eq!(&f.bytes[38..42], &[198, 18, 0, target]);
    }
    assert_eq!(r.call(create_service("dns", 53)).status, 201);
    let frames = r.c.take_frames();
    assert_eq!(
        frames.len(),
        2,
        "the new backend asked for, the new VIP announced"
    );
    assert_eq!(&frames[0].bytes[38..42], &[198, 18, 0, 20], "ARP target");
    assert_eq!(&frames[1].bytes[28..32], &[198, 18, 0, 101], "ARP sender");
    assert_eq!(&frames[1].bytes[38..42], &[198, 18, 0, 101], "gratuitous");
}

#[test]
fn a_backend_whose_neighbour_never_answers_takes_no_new_flows_until_it_does() {
    let mut r = Rig::new(false, Limits::default());
    r.c.start();
    let t0 = Instant::now();
    let asked = |r: &mut Rig| {
        r.c.take_frames()
            .iter()
            .filter(|f| f.bytes[12..14] == [0x08, 0x06] && f.bytes[28..32] != f.bytes[38..42])
            .map(|f| f.bytes[41])
            .collect::<Vec<u8>>()
    };
    assert_eq!(asked(&mut r), [10, 11]);
    // web-1 answers; web-2 never does.
    r.c.neighbor_event(NeighborEvent::Learned {
        addr: "198.18.0.10".parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        interface: 0,
    });
    let weights = |r: &Rig| {
        let snap = r.c.shared().current();
        snap.services[0]
            .sched_backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<u32>>()
    };
    let neighbor = |r: &Rig| {
        r.c.stats().services[0]
            .backends
            .iter()
            .map(|b| (b.neighbor.clone(), b.neighbor_failures))
            .collect::<Vec<_>>()
    };
    for s in 1..=2 {
        r.c.tick(t0 + Duration::from_millis(1100 * s));
        assert_eq!(asked(&mut r), [11], "asked again after {s} s");
        assert_eq!(
            weights(&r),
            [1, 1],
            "still resolving: it takes flows (held)"
        );
    }
    assert_eq!(
        neighbor(&r),
        [("resolved".into(), 0), ("resolving".into(), 0)]
    );
    while r._commands.try_recv().is_ok() {}
    r.c.tick(t0 + Duration::from_millis(3300));
    assert_eq!(asked(&mut r), [11], "a failed neighbour is still asked");
    assert_eq!(weights(&r), [1, 0], "failed: no new flows");
    let web2 = r.c.shared().current().services[0].config.backends[1].id;
    let flushed: Vec<_> = r
        ._commands
        .try_iter()
        .filter_map(|c| match c {
            Command::FlushBackend(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(
        flushed,
        [web2],
        "its flows are removed (a SYN retried is scheduled anew)"
    );
    assert_eq!(neighbor(&r), [("resolved".into(), 0), ("failed".into(), 1)]);
    let health = |r: &Rig, i: usize| r.c.stats().services[0].backends[i].health.clone();
    assert_eq!(
        (
            health(&r, 1).state.as_str(),
            health(&r, 1).last_error.as_deref()
        ),
        ("down", Some("next hop 198.18.0.11 does not answer ARP")),
        "a failed neighbour counts as down, checks or not"
    );
    assert_eq!(health(&r, 0).state, "up");
    let snap = r.c.shared().current();
    assert!(
        snap.backend_route(snap.services[0].config.backends[1].id)
            .unwrap()
            .failed
    );
    // It answers: back in the scheduling.
    r.c.neighbor_event(NeighborEvent::Learned {
        addr: "198.18.0.11".parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, 0, 0x0b]),
        interface: 0,
    });
    r.c.tick(t0 + Duration::from_millis(3400));
    assert_eq!(weights(&r), [1, 1]);
    assert_eq!(
        neighbor(&r),
        [("resolved".into(), 0), ("resolved".into(), 1)]
    );
    assert_eq!(r.c.epoch(), 1, "no configuration change in all this");
}

#[test]
fn health_checks_take_backends_out_and_back_and_the_sorry_backend_covers_when_all_are_down() {
    let mut r = Rig::new(false, Limits::default());
    r.c.start();
    for last in [0x0a, 0x0b, 0x0c] {
        r.c.neighbor_event(NeighborEvent::Learned {
            addr: format!("198.18.0.{last}").parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            interface: 0,
        });
    }
    let mut now = Instant::now();
    let mut tick = |r: &mut Rig| {
        now += Duration::from_millis(10);
        r.c.tick(now);
    };
    tick(&mut r);
    assert_eq!(r.c.take_targets(), Some(Vec::new()), "no checks yet");
    let reply = r.call(Request::PatchService {
        service: "web".into(),
        body: json!({"health_check": {"type": "tcp", "port": 9000, "rise": 2, "fall": 2},
                     "sorry_backend": {"address": "198.18.0.12", "port": 8080}}),
    });
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        r.c.audit().last().unwrap().contains(
            "service web: health_check.fall 3 -> 2, health_check.port null -> 9000, health_check.type none -> tcp, sorry_backend null -> (address 198.18.0.12, port 8080): ok"
        ),
        "{:?}",
        r.c.audit().last()
    );
    let targets = r.c.take_targets().expect("the prober is told");
    assert_eq!(
        targets
            .iter()
            .map(|t| (t.backend.as_str(), t.address.to_string(), t.port))
            .collect::<Vec<_>>(),
        [
            ("web-1", "198.18.0.10".to_string(), 9000),
            ("web-2", "198.18.0.11".to_string(), 9000)
        ],
        "the sorry backend is not probed"
    );
    assert_eq!(r.c.take_targets(), None, "told once");
    let weights = |r: &Rig| {
        let snap = r.c.shared().current();
        let s = &snap.services[0];
        s.config
            .backends
            .iter()
            .zip(&s.sched_backends)
            .map(|(b, sb)| (b.name.clone(), sb.weight))
            .collect::<Vec<_>>()
    };
    let w = |a: u32, b: u32, sorry: u32| {
        vec![
            ("web-1".to_string(), a),
            ("web-2".to_string(), b),
            ("(sorry)".to_string(), sorry),
        ]
    };
    assert_eq!(weights(&r), w(1, 1, 0), "the sorry backend waits");
    let result = |t: &Target, error: Option<&str>| ProbeResult {
        target: t.clone(),
        error: error.map(str::to_string),
    };
    let flushed = |r: &Rig| {
        r._commands
            .try_iter()
            .filter_map(|c| match c {
                Command::FlushBackend(id) => Some(id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let health = |r: &Rig, i: usize| r.c.stats().services[0].backends[i].health.clone();
    flushed(&r);

    r.c.probe_result(result(&targets[0], Some("refused")));
    tick(&mut r);
    assert_eq!(weights(&r), w(1, 1, 0), "one failure of two");
    r.c.probe_result(result(&targets[0], Some("refused again")));
    tick(&mut r);
    assert_eq!(weights(&r), w(0, 1, 0), "fall = 2: down");
    let web1 = r.c.shared().current().services[0].config.backends[0].id;
    assert_eq!(flushed(&r), [web1], "on_down = remove: its flows go");
    let h = health(&r, 0);
    assert_eq!(
        (
            h.state.as_str(),
            h.check.as_str(),
            h.last_error.as_deref(),
            h.probes_failed,
            h.transitions
        ),
        ("down", "tcp", Some("refused again"), 2, 1)
    );
    assert_eq!(health(&r, 1).state, "up");

    r.c.probe_result(result(&targets[1], Some("timeout")));
    r.c.probe_result(result(&targets[1], Some("timeout")));
    tick(&mut r);
    assert_eq!(
        weights(&r),
        w(0, 0, 1),
        "every backend down: the sorry backend"
    );
    let web2 = r.c.shared().current().services[0].config.backends[1].id;
    assert_eq!(flushed(&r), [web2]);

    r.c.probe_result(result(&targets[0], None));
    tick(&mut r);
    assert_eq!(weights(&r), w(0, 0, 1), "one success of two");
    r.c.probe_result(result(&targets[0], None));
    tick(&mut r);
    assert_eq!(
        weights(&r),
        w(1, 0, 0),
        "rise = 2: back, and the sorry backend steps aside"
    );
    assert_eq!(health(&r, 0).state, "up");
    assert!(flushed(&r).is_empty(), "coming back removes nothing");

    // inhibit: down again, flows kept
    let reply = r.call(Request::PatchService {
        service: "web".into(),
        body: json!({"on_down": "inhibit"}),
    });
    assert_eq!(reply.status, 200);
    assert_eq!(
        r.c.take_targets(),
        None,
        "the same targets: the prober is not told them again"
    );
    assert_eq!(
        health(&r, 0).state,
        "up",
        "the state is kept across changes"
    );
    assert_eq!(health(&r, 1).state, "down");
    r.c.probe_result(result(&targets[0], Some("refused")));
    r.c.probe_result(result(&targets[0], Some("refused")));
    tick(&mut r);
    assert_eq!(weights(&r), w(0, 0, 1));
    assert!(flushed(&r).is_empty(), "on_down = inhibit keeps the flows");

    // checks off: everything up again
    let reply = r.call(Request::PatchService {
        service: "web".into(),
        body: json!({"health_check": {"type": "none"}}),
    });
    assert_eq!(reply.status, 200);
    tick(&mut r);
    assert_eq!(weights(&r), w(1, 1, 0));
    assert_eq!(r.c.take_targets(), Some(Vec::new()));
    let metrics = crate::api::render_metrics(&r.c.stats());
    assert!(
        metrics.contains("l4lb_backend_up{service=\"web\",backend=\"web-1\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn healthz_names_a_stalled_worker_and_a_link_down_and_recovers() {
    let mut r = Rig::new(false, Limits::default());
    r.c.start();
    let t0 = Instant::now();
    let health = |r: &mut Rig| {
        let reply = r.call(Request::Health);
        let Body::Json(v) = reply.body else {
            panic!("json")
        };
        (reply.status, v)
    };
    r.c.tick(t0 + Duration::from_millis(100));
    assert_eq!(
        health(&mut r).0,
        200,
        "a worker that never beat is not judged"
    );
    r.traffic.heartbeats.add(1);
    r.c.tick(t0 + Duration::from_millis(200));
    r.c.tick(t0 + Duration::from_millis(1100));
    assert_eq!(health(&mut r).0, 200, "quiet for 0.9 s: fine");
    r.c.tick(t0 + Duration::from_millis(1300));
    let (status, v) = health(&mut r);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "unhealthy");
    r.traffic.heartbeats.add(1);
    r.c.tick(t0 + Duration::from_millis(1400));
    assert_eq!(health(&mut r).0, 200, "it beats again");
    r.c.set_links(&[(0, false)]);
    let (status, v) = health(&mut r);
    assert_eq!(
        (status, v["reasons"].clone()),
        (503, json!(["port 0 (test0): link down"]))
    );
    r.c.set_links(&[(0, true)]);
    assert_eq!(health(&mut r).0, 200);
}

/// Two appliances given the same Maglev service through different histories (other services
/// before it, so other numeric ids; backends added, drained and removed in another order) pick
/// the same backend for every flow: the first line of defence when a flow moves between them.
#[test]
fn maglev_picks_the_same_backend_whatever_order_the_changes_came_in() {
    use dataplane::flow::{FlowKey, FlowTable, FlowTimeouts};
    use dataplane::sched::{Cursor, PickInput};
    let service = |backends: Value| {
        json!({"id": "m", "vip": "198.18.0.120", "port": 443, "scheduler": "maglev",
               "forwarding": "dr", "backends": backends})
    };
    let backend = |id: &str, last: u8, weight: u32| json!({"id": id, "address": format!("198.18.0.{last}"), "port": 443, "weight": weight});
    let add = |r: &mut Rig, id: &str, last: u8, weight: u32| {
        let reply = r.call(Request::CreateBackend {
            service: "m".into(),
            body: backend(id, last, weight),
        });
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    };
    let mut a = Rig::new(false, Limits::default());
    let reply = a.call(Request::CreateService {
        body: service(json!([backend("m1", 31, 1), backend("m2", 32, 1)])),
    });
    assert_eq!(reply.status, 201);
    add(&mut a, "m3", 33, 1);
    add(&mut a, "m4", 34, 1);
    let patch = Request::PatchBackend {
        service: "m".into(),
        backend: "m2".into(),
        body: json!({"weight": 0}),
    };
    assert_eq!(a.call(patch).status, 200);
    add(&mut a, "m5", 35, 2);
    let delete = Request::DeleteBackend {
        service: "m".into(),
        backend: "m4".into(),
    };
    assert_eq!(a.call(delete).status, 204);

    let mut b = Rig::new(false, Limits::default());
    // Another service first (other service and backend ids), then the same end state.
    let other = json!({"id": "o", "vip": "198.18.0.121", "port": 80,
                       "backends": [backend("o1", 41, 1), backend("o2", 42, 1)]});
    assert_eq!(b.call(Request::CreateService { body: other }).status, 201);
    let reply = b.call(Request::CreateService {
        body: service(json!([backend("m5", 35, 1), backend("m3", 33, 1)])),
    });
    assert_eq!(reply.status, 201);
    add(&mut b, "m2", 32, 0);
    add(&mut b, "m1", 31, 1);
    let patch = Request::PatchBackend {
        service: "m".into(),
        backend: "m5".into(),
        body: json!({"weight": 2}),
    };
    assert_eq!(b.call(patch).status, 200);

    let conns = FlowTable::new(16, 16, FlowTimeouts::default());
    let picks = |r: &Rig| -> Vec<String> {
        let snap = r.c.shared().current();
        let svc = snap.services.iter().find(|s| s.config.name == "m").unwrap();
        (0..20_000u32)
            .map(|i| {
                let key = FlowKey::new(
                    6,
                    std::net::IpAddr::V4((0xc613_0000 + i).into()),
                    1024 + (i % 50_000) as u16,
                    "198.18.0.120".parse().unwrap(),
                    443,
                );
                let input = PickInput {
                    backends: &svc.sched_backends,
                    flow: &key,
                    conns: &conns,
                };
                let i = svc.scheduler.pick(&input, &mut Cursor::default()).unwrap();
                svc.config.backends[i].name.clone()
            })
            .collect()
    };
    let (pa, pb) = (picks(&a), picks(&b));
    let differ = pa.iter().zip(&pb).filter(|(x, y)| x != y).count();
    assert_eq!(differ, 0, "of 20000 flows");
    // And the shares are the weights' (1:1:2, the drained m2 none), within 3 points.
    for (name, share) in [("m1", 0.25), ("m2", 0.0), ("m3", 0.25), ("m5", 0.5)] {
        let got = pa.iter().filter(|n| *n == name).count() as f64 / pa.len() as f64;
        assert!((got - share).abs() < 0.03, "{name}: {got}");
    }
}
