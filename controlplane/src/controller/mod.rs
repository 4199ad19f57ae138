//! The one writer of the running configuration. [`Controller`] alone owns the model as the
//! operator made it, the id bookkeeping and the publisher (whose `publish` takes `&mut self`,
//! so a second writer does not compile), the dynamic neighbour table, the counters' baselines
//! and the audit trail. It runs on the control thread; the binary feeds it API calls, SIGHUP,
//! the workers' neighbour events and a clock, and sends the frames it asks for.
//!
//! Every change takes one path (docs/architecture.md, "A change, from the API to the
//! workers"): the request becomes a candidate list of services, the changed object is
//! validated once, conflicts and limits are checked against the rest, the publisher prepares
//! the snapshot (ids assigned on a copy: the step that can fail), the state file is saved,
//! the snapshot is published, and the answer waits until every worker uses it — or says, with
//! 503, that a worker did not take it up in time. Nothing is saved that was not accepted, and
//! a refused change leaves no trace but its audit line.

mod announce;
mod bgp;
mod diff;
mod observe;
mod requests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use dataplane::addr::{IpPrefix, MacAddr};
use dataplane::command::Command;
use dataplane::counters::{ServiceCounters, WorkerCounters};
use dataplane::neighbor::NeighborEvent;
use dataplane::shared::SharedSnapshot;
use dataplane::snapshot::Snapshot;
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use crate::api::{ApiError, MbufStats, Reply, Request};
use crate::config::{self, CheckKind, Model, OnDown};
use crate::health::{BackendHealth, ProbeResult, Target, Tracker, Transition};
use crate::neighbors::{NeighborTable, Timers};
use crate::publish::{IdError, Limits, Published, Publisher};
use crate::state;

pub use observe::Baseline;

/// An interface as the control side needs it.
#[derive(Debug, Clone)]
pub struct Interface {
    pub port: u16,
    pub name: String,
    pub mac: MacAddr,
    pub addresses: Vec<IpPrefix>,
}

/// What the control side holds of the workers: where their commands go and what they count.
#[derive(Debug, Clone)]
pub struct Workers {
    pub commands: Vec<Sender<Command>>,
    pub counters: Arc<[WorkerCounters]>,
    pub traffic: Vec<Arc<ServiceCounters>>,
}

/// A frame the control side wants sent out of DPDK port `port` (ARP, NDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub port: u16,
    pub bytes: Vec<u8>,
}

/// What the reloads did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reloads {
    /// Applied (including those that found nothing to change).
    pub ok: u64,
    /// Of those, the ones that found nothing to change.
    pub unchanged: u64,
    /// Refused: the file was invalid, or asked for what needs a restart.
    pub failed: u64,
    /// When the last one was applied (seconds since the Unix epoch).
    pub last_ok_unix: Option<f64>,
}

/// Everything the controller is given at start besides the model.
#[derive(Debug)]
pub struct Setup {
    /// The configuration file SIGHUP reads again (None: the embedded default).
    pub config_path: Option<PathBuf>,
    /// The ports, in the order of the model's interfaces.
    pub interfaces: Vec<Interface>,
    pub workers: Workers,
    /// How long a change waits for every worker to use it before it answers 503.
    pub publish_wait: Duration,
    pub limits: Limits,
}

/// How many audit lines are kept for `GET /api/v1/audit` (all of them go to the log).
const AUDIT_KEPT: usize = 1000;
/// How often the neighbour timers run.
const TICK: Duration = Duration::from_millis(100);

/// The owner of the running configuration (see the module doc).
#[derive(Debug)]
pub struct Controller {
    /// The configuration as the operator made it (no learned neighbours).
    running: Model,
    publisher: Publisher,
    config_path: Option<PathBuf>,
    interfaces: Vec<Interface>,
    workers: Workers,
    neighbors: NeighborTable,
    /// Learned neighbours changed since the last publish.
    neighbors_changed: bool,
    /// The next hops of the backends and routes that the snapshot has no MAC for: resolved
    /// before any packet needs them (recomputed at every publish).
    wanted: Vec<(IpAddr, u16)>,
    last_tick: Instant,
    /// Counters are kept per numeric id, and ids are reused: what an id had counted when its
    /// present owner got it (keyed by (is a service, id)).
    baselines: HashMap<(bool, u32), Baseline>,
    /// The flow timeouts as last set through the API: with a state file they are saved in it
    /// and win over the configuration file's `[timeouts]` (at start and on reload).
    api_timeouts: Option<crate::config::FlowTimeouts>,
    /// Configuration changes made, counting the first configuration as 1 (the snapshot's own
    /// epoch also moves when a neighbour is learned).
    epoch: u64,
    reloads: Reloads,
    audit: VecDeque<String>,
    outbox: Vec<Frame>,
    started: Instant,
    publish_wait: Duration,
    /// The packet-buffer pool as the control thread last read it.
    mbufs: MbufStats,
    /// The sync thread's counts (None: no sync thread).
    sync_counters: Option<std::sync::Arc<crate::sync::SyncCounters>>,
    /// The BGP speaker (None: `[bgp]` is off), whether the operator drained the appliance,
    /// and whether it is stopping (SIGTERM: everything withdrawn).
    bgp: Option<crate::bgp::Speaker>,
    /// Why the speaker is gone, once BIRD exited by itself (`/healthz` says it).
    bgp_dead: Option<String>,
    drained: bool,
    stopping: bool,
    /// The health of the checked backends.
    health: Tracker,
    /// A backend went up or down since the last publish.
    health_changed: bool,
    /// The probe targets, when they changed and the prober has not been told yet.
    targets: Option<Vec<Target>>,
    /// The probe targets the tracker (and so the prober) has; None before the first.
    probed: Option<Vec<Target>>,
    /// Backends that went down with `on_down = "remove"`: their flows are removed once the
    /// snapshot without them is live.
    to_flush: Vec<(String, String)>,
    /// Per worker: its heartbeat count when it last moved, when, and whether it is overdue.
    beats: Vec<(u64, Instant, bool)>,
    /// The ports whose link is down (DPDK port ids).
    links_down: BTreeSet<u16>,
    /// Why the last publish did not reach every worker, and the epoch that clears it once
    /// every worker has it (None: it did).
    publish_error: Option<(u64, String)>,
}

/// A worker whose heartbeat has not moved for this long has stopped (it beats ten times a
/// second).
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

impl Controller {
    /// Publishes the first snapshot of `model`; the workers read it through [`Self::shared`].
    pub fn new(model: Model, setup: Setup) -> Result<Controller, IdError> {
        let macs = setup.interfaces.iter().map(|i| i.mac).collect();
        let workers = setup.workers.commands.len().max(1) as u16;
        let publisher = Publisher::with_limits(&model, macs, workers, setup.limits)?;
        let api_timeouts = model
            .api
            .state_file
            .as_deref()
            .and_then(|p| state::load_timeouts(p).ok().flatten());
        let drained = model
            .api
            .state_file
            .as_deref()
            .is_some_and(state::load_drained);
        Ok(Controller {
            running: model,
            publisher,
            config_path: setup.config_path,
            interfaces: setup.interfaces,
            workers: setup.workers,
            neighbors: NeighborTable::new(Timers::default()),
            neighbors_changed: false,
            wanted: Vec::new(),
            last_tick: Instant::now(),
            baselines: HashMap::new(),
            api_timeouts,
            epoch: 1,
            reloads: Reloads::default(),
            audit: VecDeque::new(),
            outbox: Vec::new(),
            started: Instant::now(),
            publish_wait: setup.publish_wait,
            mbufs: MbufStats::default(),
            sync_counters: None,
            bgp: None,
            bgp_dead: None,
            drained,
            stopping: false,
            health: Tracker::default(),
            health_changed: false,
            targets: None,
            probed: None,
            to_flush: Vec::new(),
            beats: Vec::new(),
            links_down: BTreeSet::new(),
            publish_error: None,
        })
        .map(|mut c| {
            c.refresh_targets();
            c
        })
    }

    /// The probe targets of the running configuration, handed to the tracker (and, through
    /// [`Self::take_targets`], to the prober) when they changed: most changes (a weight, a
    /// backend's address in a service without checks) leave them as they are, and the prober's
    /// thread is not woken for nothing.
    fn refresh_targets(&mut self) {
        let targets: Vec<Target> = self
            .running
            .services
            .iter()
            .filter(|s| s.health.kind != CheckKind::None)
            .flat_map(|s| {
                s.backends.iter().map(move |b| Target {
                    service: s.id.clone(),
                    backend: b.id.clone(),
                    address: b.address,
                    port: s.health.port.unwrap_or(b.port),
                    check: s.health.clone(),
                })
            })
            .collect();
        if self.probed.as_ref() == Some(&targets) {
            return;
        }
        let down_before = self.health.down();
        self.health.set_targets(&targets, SystemTime::now());
        self.health_changed |= self.health.down() != down_before;
        self.probed = Some(targets.clone());
        self.targets = Some(targets);
    }

    /// The probe targets, when they changed since the last call.
    pub fn take_targets(&mut self) -> Option<Vec<Target>> {
        self.targets.take()
    }

    /// One probe's outcome: a backend that crosses its service's `fall` or `rise` goes down
    /// or up (logged), and the next tick publishes it.
    pub fn probe_result(&mut self, r: ProbeResult) {
        let Some(t) = self.health.record(&r, SystemTime::now()) else {
            return;
        };
        let (service, backend) = (&r.target.service, &r.target.backend);
        let Some(s) = self.running.services.iter().find(|s| s.id == *service) else {
            return;
        };
        let check = &s.health;
        match t {
            Transition::Down => {
                let flows = match s.on_down {
                    OnDown::Remove => "its flows are removed",
                    OnDown::Inhibit => "its flows are kept (on_down = inhibit)",
                };
                warn!(target: "l4lb::health", %service, %backend, error = r.error.as_deref().unwrap_or(""),
                    "backend down: {} {} probes failed in a row; no new flows, {flows}", check.fall, check.kind.name());
                if s.on_down == OnDown::Remove {
                    self.to_flush.push((service.clone(), backend.clone()));
                }
            }
            Transition::Up => {
                info!(target: "l4lb::health", %service, %backend,
                    "backend up: {} {} probes succeeded in a row; it takes new flows again", check.rise, check.kind.name());
            }
        }
        self.health_changed = true;
    }

    /// The ports (DPDK port ids) whose link /healthz watches.
    pub fn ports(&self) -> Vec<u16> {
        self.interfaces.iter().map(|i| i.port).collect()
    }

    /// The links of the ports as DPDK reports them: a change is logged, and a link down makes
    /// /healthz answer 503.
    pub fn set_links(&mut self, links: &[(u16, bool)]) {
        for &(port, up) in links {
            let changed = if up {
                self.links_down.remove(&port)
            } else {
                self.links_down.insert(port)
            };
            if changed {
                let name = self.port_name(port);
                if up {
                    info!(port, name, "link up");
                } else {
                    warn!(port, name, "link down");
                }
            }
        }
    }

    /// The DPDK device name of port `port` ("" if it is not one of ours).
    fn port_name(&self, port: u16) -> &str {
        self.interfaces
            .iter()
            .find(|i| i.port == port)
            .map_or("", |i| i.name.as_str())
    }

    /// Why the appliance is not healthy (empty: it is): a worker that stopped reporting, a
    /// port whose link is down, a publish that did not reach every worker, a BGP speaker that
    /// exited.
    pub fn unhealthy(&self, now: Instant) -> Vec<String> {
        let mut reasons = Vec::new();
        for (i, (beats, since, _)) in self.beats.iter().enumerate() {
            let quiet = now.saturating_duration_since(*since);
            if *beats > 0 && quiet >= STALLED_AFTER {
                reasons.push(format!(
                    "worker {i} has not reported for {} ms",
                    quiet.as_millis()
                ));
            }
        }
        for &port in &self.links_down {
            let name = self.port_name(port);
            reasons.push(format!("port {port} ({name}): link down"));
        }
        if let Some((epoch, e)) = &self.publish_error
            && !self.shared().all_seen(*epoch)
        {
            reasons.push(e.clone());
        }
        if let Some(e) = &self.bgp_dead {
            reasons.push(e.clone());
        }
        reasons
    }

    /// The workers' heartbeats, looked at every tick; a worker that stops and one that
    /// starts again are logged.
    fn watch_workers(&mut self, now: Instant) {
        let traffic = &self.workers.traffic;
        self.beats.resize(traffic.len(), (0, now, false));
        for (i, (w, (beats, since, stalled))) in
            traffic.iter().zip(self.beats.iter_mut()).enumerate()
        {
            let b = w.heartbeats.get();
            let quiet = now.duration_since(*since);
            if b == *beats {
                if b > 0 && quiet >= STALLED_AFTER && !*stalled {
                    *stalled = true;
                    error!(
                        worker = i,
                        "worker has not reported for {} ms",
                        quiet.as_millis()
                    );
                }
                continue;
            }
            if *stalled {
                info!(
                    worker = i,
                    "worker reports again after {} ms",
                    quiet.as_millis()
                );
            }
            (*beats, *since, *stalled) = (b, now, false);
        }
    }

    /// A checked backend's health (None: not checked).
    pub fn health(&self, service: &str, backend: &str) -> Option<&BackendHealth> {
        self.health.get(service, backend)
    }

    pub fn shared(&self) -> &Arc<SharedSnapshot> {
        self.publisher.shared()
    }

    pub fn running(&self) -> &Model {
        &self.running
    }

    /// The configuration epoch: 1 at start, one more for every change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn reloads(&self) -> Reloads {
        self.reloads
    }

    /// The audit lines kept, oldest first.
    pub fn audit(&self) -> impl Iterator<Item = &str> {
        self.audit.iter().map(String::as_str)
    }

    /// The frames to send since the last call (the binary copies them into mbufs).
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.outbox)
    }

    /// At start: tells the neighbours where our addresses and VIPs are.
    pub fn start(&mut self) {
        let vips = self.vips();
        self.announce(&vips, true);
        self.wanted = wanted(&self.shared().current(), &self.running);
        self.resolve_wanted(Instant::now());
    }

    /// Asks for the next hops the configuration sends to and the snapshot has no MAC for
    /// (each at most once a second; the table counts the unanswered ones towards failure).
    fn resolve_wanted(&mut self, now: Instant) {
        for (addr, interface) in std::mem::take(&mut self.wanted) {
            if let Some(r) = self.neighbors.unresolved(addr, interface, now) {
                self.request(r);
            }
            self.wanted.push((addr, interface));
        }
    }

    /// Answers one API request; a change is saved and live before the answer.
    pub fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Reload { body } => self.reload_request(&body),
            Request::DeleteFlow {
                service,
                client,
                port,
            } => {
                let what = format!("delete flow {client} of service {service}");
                match self.delete_flow(&service, client, port) {
                    Ok(r) => {
                        self.record(true, format!("api: {what}: ok"));
                        r
                    }
                    Err(e) => {
                        self.record(
                            false,
                            format!("api: {what}: refused ({} {})", e.status, e.message),
                        );
                        e.into()
                    }
                }
            }
            Request::PatchTimeouts { body } => self.patch_timeouts(&body),
            Request::GetBgp => self.get_bgp(),
            Request::PatchBgp { body } => self.patch_bgp(&body),
            Request::ZeroCounters { service } => {
                let what = match &service {
                    Some(s) => format!("zero the counters of service {s}"),
                    None => "zero the counters".to_string(),
                };
                if self.zero(service.as_deref()) {
                    self.record(true, format!("api: {what}: ok"));
                    Reply {
                        status: 204,
                        body: crate::api::Body::Empty,
                        location: None,
                    }
                } else {
                    let e = ApiError::not_found(format!(
                        "no service {:?}",
                        service.unwrap_or_default()
                    ));
                    self.record(
                        false,
                        format!("api: {what}: refused ({} {})", e.status, e.message),
                    );
                    e.into()
                }
            }
            req if req.mutates() => self.change(req),
            req => self.read(req).unwrap_or_else(Reply::from),
        }
    }

    fn change(&mut self, req: Request) -> Reply {
        let what = requests::describe(&req);
        let candidate = match self.candidate(req) {
            Ok(c) => c,
            Err(e) => {
                self.record(
                    false,
                    format!("api: {what}: refused ({} {})", e.status, e.message),
                );
                return e.into();
            }
        };
        let changes = diff::services(&self.running.services, &candidate.services);
        let r = &self.running;
        // Everything but the services as it is (the candidate's services are a copy already).
        let next = Model {
            dpdk: r.dpdk.clone(),
            timeouts: r.timeouts,
            replies: r.replies,
            interfaces: r.interfaces.clone(),
            routes: r.routes.clone(),
            neighbors: r.neighbors.clone(),
            api: r.api.clone(),
            sync: r.sync.clone(),
            bgp: r.bgp.clone(),
            services: candidate.services,
        };
        match self.commit(next) {
            Err(e) => {
                self.record(
                    false,
                    format!("api: {what}: refused ({} {})", e.status, e.message),
                );
                e.into()
            }
            Ok(p) => {
                let outcome = self.outcome(&p);
                self.record(
                    p.live(),
                    format!("api: {what}: {}: {outcome}", joined(&changes)),
                );
                if p.live() {
                    candidate.reply
                } else {
                    ApiError::new(503, outcome).into()
                }
            }
        }
    }

    /// `PATCH /api/v1/timeouts`: a merge patch of `[timeouts]`, live for the flows' next
    /// expiry check (and saved in the state file when there is one).
    fn patch_timeouts(&mut self, body: &Value) -> Reply {
        let what = "change timeouts";
        let refuse = |c: &mut Self, e: ApiError| -> Reply {
            c.record(
                false,
                format!("api: {what}: refused ({} {})", e.status, e.message),
            );
            e.into()
        };
        let Some(patch) = body.as_object() else {
            return refuse(self, ApiError::invalid("body: a JSON object is expected"));
        };
        const KEYS: [&str; 5] = ["tcp_established", "tcp_syn", "tcp_fin", "tcp_close", "udp"];
        for (k, v) in patch {
            if !KEYS.contains(&k.as_str()) {
                return refuse(
                    self,
                    ApiError::invalid(format!(
                        "{k}: unknown field (expected one of {})",
                        KEYS.join(", ")
                    )),
                );
            }
            if !v.is_u64() {
                return refuse(
                    self,
                    ApiError::invalid(format!("{k}: a whole number of seconds is expected")),
                );
            }
        }
        let current = crate::config::file::TimeoutsSection::from(&self.running.timeouts);
        let mut merged = serde_json::to_value(&current).expect("timeouts serialise");
        crate::api::merge_patch(&mut merged, body);
        let t =
            match crate::api::typed::<crate::config::file::TimeoutsSection>(merged).and_then(|t| {
                crate::config::timeouts(&t, "").map_err(|e| crate::api::field_errors(e, ""))
            }) {
                Ok(t) => t,
                Err(e) => return refuse(self, e),
            };
        let mut next = self.running.clone();
        next.timeouts = t;
        let changes = diff::model(&self.running, &next);
        let before = self.api_timeouts.replace(t);
        match self.commit(next) {
            Err(e) => {
                self.api_timeouts = before;
                refuse(self, e)
            }
            Ok(p) => {
                let outcome = self.outcome(&p);
                self.record(
                    p.live(),
                    format!("api: {what}: {}: {outcome}", joined(&changes)),
                );
                if p.live() {
                    Reply::json(
                        200,
                        serde_json::to_value(crate::config::file::TimeoutsSection::from(&t))
                            .expect("timeouts serialise"),
                    )
                } else {
                    ApiError::new(503, outcome).into()
                }
            }
        }
    }

    /// "ok (epoch N)", or what a publish that is not live everywhere means.
    fn outcome(&self, p: &Published) -> String {
        if p.live() {
            format!("ok (epoch {})", self.epoch)
        } else {
            format!(
                "saved and published as epoch {}, but worker(s) {:?} did not take it up within {:?}; they use it as soon as they run again",
                self.epoch, p.lagging, self.publish_wait
            )
        }
    }

    /// One audit line: to the log and to the kept history.
    fn record(&mut self, ok: bool, line: String) {
        if ok {
            info!(target: "l4lb::audit", "{line}");
        } else {
            warn!(target: "l4lb::audit", "{line}");
        }
        if self.audit.len() == AUDIT_KEPT {
            self.audit.pop_front();
        }
        self.audit.push_back(line);
    }

    /// Makes `next` the running configuration: the snapshot is prepared (ids, limits), the
    /// state file saved, the snapshot published and `next` adopted. An error means nothing
    /// changed; a publish that is not live on every worker in time is still adopted (it is
    /// swapped in, and the workers that lag take it up when they run).
    fn commit(&mut self, next: Model) -> Result<Published, ApiError> {
        let learned = self.neighbors.entries();
        let failed = self.neighbors.failed();
        let prepared = self
            .publisher
            .prepare(&next, &learned, &failed, &self.health.down())
            .map_err(|e| ApiError::invalid(format!("{e}; nothing changed")))?;
        if let Some(path) = &next.api.state_file {
            state::save_all(
                path,
                &next.services,
                self.api_timeouts.as_ref(),
                self.drained,
            )
            .map_err(|e| {
                ApiError::new(
                    500,
                    format!(
                        "cannot save the state file {}: {e}; nothing changed",
                        path.display()
                    ),
                )
            })?;
        }
        let vips_before = self.vips();
        let p = self.publish(prepared);
        self.running = next;
        self.epoch += 1;
        self.refresh_targets();
        let new: BTreeSet<IpAddr> = self.vips().difference(&vips_before).copied().collect();
        self.announce(&new, false);
        Ok(p)
    }

    /// Publishes, then gives the ids that changed owner their baselines and has the workers
    /// flush the flows of backends that are gone.
    fn publish(&mut self, prepared: crate::publish::Prepared) -> Published {
        let owners_before = observe::owners(&self.shared().current());
        let p = self.publisher.publish(prepared, self.publish_wait);
        self.publish_error = (!p.live()).then(|| {
            (
                p.epoch,
                format!(
                    "snapshot {} was not taken up by worker(s) {:?} within {:?}",
                    p.epoch, p.lagging, self.publish_wait
                ),
            )
        });
        self.rebase(&owners_before, p.epoch);
        for id in &p.released_backends {
            for w in &self.workers.commands {
                // Bounded: a worker that far behind gets the flush when it catches up.
                let _ = w.send_timeout(Command::FlushBackend(*id), Duration::from_millis(100));
            }
        }
        debug!(
            snapshot = p.epoch,
            live = p.live(),
            build_us = p.build_time.as_micros() as u64,
            "published"
        );
        self.neighbors_changed = false;
        self.health_changed = false;
        self.wanted = wanted(&self.shared().current(), &self.running);
        self.resolve_wanted(Instant::now());
        p
    }

    /// SIGHUP, or `POST /api/v1/reload`: the configuration file again. With a state file the
    /// services are the state file's (what the API made) unless `services_from_file`; without
    /// one the file owns everything. What can change live is applied, all or nothing; what
    /// needs a restart refuses the reload (422). Returns the changes made; 503 when they are
    /// made but a worker did not take them up in time.
    pub fn reload(
        &mut self,
        trigger: &str,
        services_from_file: bool,
    ) -> Result<Vec<String>, ApiError> {
        let source = self.config_path.as_ref().map_or_else(
            || config::EMBEDDED_NAME.to_string(),
            |p| p.display().to_string(),
        );
        match self.try_reload(services_from_file) {
            Ok((changes, published)) => {
                self.reloads.ok += 1;
                self.reloads.unchanged += u64::from(changes.is_empty());
                self.reloads.last_ok_unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64());
                let outcome = match &published {
                    Some(p) => self.outcome(p),
                    None => "ok, nothing to change".to_string(),
                };
                let live = published.as_ref().is_none_or(Published::live);
                self.record(
                    live,
                    format!(
                        "reload ({trigger}) of {source}: {}: {outcome}",
                        joined(&changes)
                    ),
                );
                if live {
                    Ok(changes)
                } else {
                    Err(ApiError::new(503, outcome))
                }
            }
            Err(e) => {
                self.reloads.failed += 1;
                self.record(
                    false,
                    format!("reload ({trigger}) of {source}: refused, the running configuration stays: {e}"),
                );
                Err(ApiError::invalid(e))
            }
        }
    }

    fn try_reload(
        &mut self,
        services_from_file: bool,
    ) -> Result<(Vec<String>, Option<Published>), String> {
        let mut next = config::load(self.config_path.as_deref(), std::env::vars())
            .map_err(|e| e.to_string().replace('\n', "; "))?;
        if next.dpdk != self.running.dpdk || next.interfaces != self.running.interfaces {
            return Err("[dpdk] and [[interfaces]] change only with a restart".into());
        }
        if next.api != self.running.api {
            return Err("[api] changes only with a restart".into());
        }
        if next.sync != self.running.sync || next.bgp != self.running.bgp {
            return Err("[sync] and [bgp] change only with a restart".into());
        }
        if next.api.state_file.is_some() && !services_from_file {
            // The state file owns the services: the file's other sections apply.
            next.services = self.running.services.clone();
        }
        if next.api.state_file.is_some()
            && let Some(t) = self.api_timeouts
        {
            // ... and the timeouts, once the API set them.
            next.timeouts = t;
        }
        let changes = diff::model(&self.running, &next);
        if changes.is_empty() {
            return Ok((changes, None));
        }
        let p = self.commit(next).map_err(|e| e.message)?;
        Ok((changes, Some(p)))
    }

    fn reload_request(&mut self, body: &Value) -> Reply {
        let from_file = match body {
            Value::Null => Ok(false),
            Value::Object(m) => m
                .iter()
                .try_fold(false, |acc, (k, v)| match (k.as_str(), v) {
                    ("services_from_file", Value::Bool(b)) => Ok(acc || *b),
                    ("services_from_file", _) => Err(ApiError::invalid(
                        "services_from_file: a boolean is expected",
                    )),
                    (other, _) => Err(ApiError::invalid(format!(
                        "{other}: unknown field (expected `services_from_file`)"
                    ))),
                }),
            _ => Err(ApiError::invalid("body: a JSON object is expected")),
        };
        let from_file = match from_file {
            Ok(f) => f,
            Err(e) => return e.into(),
        };
        match self.reload("api", from_file) {
            Ok(changes) => Reply::json(200, json!({ "changes": changes, "epoch": self.epoch })),
            Err(e) => e.into(),
        }
    }

    /// A worker's neighbour event.
    pub fn neighbor_event(&mut self, e: NeighborEvent) {
        let now = Instant::now();
        match e {
            NeighborEvent::Learned {
                addr,
                mac,
                interface,
            } => {
                if self.running.neighbors.iter().any(|n| n.address == addr) {
                    return; // a static entry: configuration wins
                }
                let ours = self
                    .interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|p| p.addr == addr));
                if ours || self.running.services.iter().any(|s| s.vip == addr) {
                    // Our own announcements, looped back (or a conflict): never a neighbour.
                    return;
                }
                let was_failed = self.neighbors.state(addr) == crate::neighbors::State::Failed;
                if self.neighbors.learned(addr, mac, interface, now) {
                    if was_failed {
                        info!(%addr, %mac, interface, "neighbour answered again after failing");
                    }
                    info!(%addr, %mac, interface, "neighbour learned");
                    self.neighbors_changed = true;
                }
            }
            NeighborEvent::Unresolved { addr, interface } => {
                if let Some(r) = self.neighbors.unresolved(addr, interface, now) {
                    self.request(r);
                }
            }
        }
    }

    /// Called often (every few ms): the neighbour timers every 100 ms, and a publish when the
    /// learned neighbours changed. Such a publish is not a configuration change: the
    /// configuration epoch stays.
    /// The sync thread's counts, for the stats.
    pub fn set_sync_counters(&mut self, c: std::sync::Arc<crate::sync::SyncCounters>) {
        self.sync_counters = Some(c);
    }

    /// Records the packet-buffer pool's size and the mbufs taken from it (in queues, rings and
    /// bursts), for the stats.
    pub fn set_mbufs(&mut self, size: u32, in_use: u32) {
        self.mbufs = MbufStats {
            size: u64::from(size),
            in_use: u64::from(in_use),
        };
    }

    pub fn tick(&mut self, now: Instant) {
        let mut newly_failed = Vec::new();
        if now.duration_since(self.last_tick) >= TICK {
            let failed_before = self.neighbors.failed();
            // The table's timers first (they retry and fail what is pending), then what the
            // configuration needs and the table does not have yet.
            let (requests, expired) = self.neighbors.tick(now);
            for r in requests {
                self.request(r);
            }
            self.resolve_wanted(now);
            for addr in self.neighbors.failed() {
                if !failed_before.contains(&addr) {
                    warn!(%addr, "neighbour failed: no answer to {} requests; backends behind it take no new flows until it answers, and their flows are removed", crate::neighbors::MAX_PROBES);
                    newly_failed.push(addr);
                }
            }
            self.neighbors_changed |= expired;
            self.last_tick = now;
            self.watch_workers(now);
            self.bgp_tick();
        }
        if self.neighbors_changed || self.health_changed {
            let learned = self.neighbors.entries();
            let failed = self.neighbors.failed();
            let down = self.health.down();
            match self
                .publisher
                .prepare(&self.running, &learned, &failed, &down)
            {
                Ok(p) => {
                    self.publish(p);
                }
                Err(e) => {
                    error!("publishing the learned neighbours and backend health failed: {e}");
                    // Cleared by the next publish (u64::MAX: never seen before that).
                    self.publish_error = Some((u64::MAX, format!("the last publish failed: {e}")));
                }
            }
        }
        if !newly_failed.is_empty() {
            self.flush_behind(&newly_failed);
        }
        if !self.to_flush.is_empty() && !self.health_changed {
            self.flush_down();
        }
    }

    /// Removes the flows of the backends that went down with `on_down = "remove"`, now that
    /// the snapshot gives them no new flows.
    fn flush_down(&mut self) {
        let snap = self.shared().current();
        for (service, backend) in std::mem::take(&mut self.to_flush) {
            let id = snap
                .services
                .iter()
                .filter(|s| s.config.name == service)
                .flat_map(|s| &s.config.backends)
                .find(|b| b.name == backend)
                .map(|b| b.id);
            if let Some(id) = id {
                info!(target: "l4lb::health", %service, %backend, "flows removed: the backend is down");
                for w in &self.workers.commands {
                    let _ = w.send_timeout(Command::FlushBackend(id), Duration::from_millis(100));
                }
            }
        }
    }

    /// Removes the flows of the backends whose next hop is in `hops`: nothing reaches them, and
    /// a retransmitted SYN of a connection that picked one is then scheduled anew (to a backend
    /// that answers) instead of waiting in vain.
    fn flush_behind(&mut self, hops: &[IpAddr]) {
        let snap = self.shared().current();
        for s in &snap.services {
            for b in &s.config.backends {
                let behind = snap
                    .backend_route(b.id)
                    .is_some_and(|r| hops.contains(&r.next_hop));
                if behind {
                    info!(service = %s.config.name, backend = %b.name, "flows removed: its neighbour failed");
                    for w in &self.workers.commands {
                        let _ =
                            w.send_timeout(Command::FlushBackend(b.id), Duration::from_millis(100));
                    }
                }
            }
        }
    }

    fn vips(&self) -> BTreeSet<IpAddr> {
        self.running.services.iter().map(|s| s.vip).collect()
    }
}

/// The next hops of `model`'s backends and routes that `snap` has no MAC for, with the
/// interface each is reached on; static neighbours have theirs.
fn wanted(snap: &Snapshot, model: &Model) -> Vec<(IpAddr, u16)> {
    let backends = snap
        .services
        .iter()
        .flat_map(|s| s.config.backends.iter())
        .filter_map(|b| snap.backend_route(b.id).copied());
    let gateways = model.routes.iter().filter_map(|r| snap.route(r.via));
    let mut v: Vec<(IpAddr, u16)> = backends
        .chain(gateways)
        .filter(|r| r.dst_mac.is_none())
        .map(|r| (r.next_hop, r.interface))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The changes of one audit line, "; " between them.
fn joined(changes: &[String]) -> String {
    if changes.is_empty() {
        "no change".to_string()
    } else {
        changes.join("; ")
    }
}

#[cfg(test)]
mod tests;
