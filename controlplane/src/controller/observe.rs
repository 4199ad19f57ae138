//! What the controller reads of the workers: their counters summed into [`Stats`], and samples
//! of their flow tables.
//!
//! Counters are kept per numeric id, and ids are reused. When an id gets a new owner, what the
//! id had counted is its baseline, subtracted from then on; its gauges (active and inactive
//! connections, copied out by each worker a few times a second) count only from a worker that
//! has copied them out since, at the new owner's snapshot or later.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use dataplane::command::{Command, FlowDump, FlowFilter};
use dataplane::counters::{
    ServiceCounters, TrafficCounters, TrafficTotals, WorkerCounters, drop_totals, port_totals,
    traffic_totals,
};
use dataplane::drop_reason::DropReason;
use dataplane::flow::addr_from_bytes;
use dataplane::snapshot::Snapshot;

use super::Controller;
use crate::api::stats::{
    ActionStats, BackendStats, ClosedPortStats, FlowStats, HealthStats, PortStats, ServiceStats,
    SyncStats, Traffic, WorkerStats,
};
use crate::api::{FlowSample, Stats};

/// How long the control side waits for the workers' flow samples.
const DUMP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What an id had counted when its present owner got it, and the snapshot that gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Baseline {
    pub totals: TrafficTotals,
    pub since_snapshot: u64,
}

/// Who owns each id in `snap`: (is a service, id, name).
pub(super) fn owners(snap: &Snapshot) -> HashSet<(bool, u32, String)> {
    snap.services
        .iter()
        .flat_map(|s| {
            let c = &s.config;
            std::iter::once((true, c.id.0, c.name.clone())).chain(
                c.backends
                    .iter()
                    .map(move |b| (false, b.id.0, format!("{}/{}", c.name, b.name))),
            )
        })
        .collect()
}

fn counters_of(w: &ServiceCounters, service: bool, id: u32) -> Option<&TrafficCounters> {
    if service {
        w.services.get(id as usize)
    } else {
        w.backends.get(id as usize)
    }
}

/// An id's counters since `base`: its counts less the baseline, its gauges from the workers
/// that copied them out for its present owner.
fn since(
    workers: &[std::sync::Arc<ServiceCounters>],
    service: bool,
    id: u32,
    base: Option<&Baseline>,
) -> TrafficTotals {
    let t = traffic_totals(workers.iter().map(|w| &**w), |w| {
        counters_of(w, service, id)
    });
    let Some(b) = base else { return t };
    let current = workers
        .iter()
        .filter(|w| w.mirrored_snapshot.get() >= b.since_snapshot)
        .map(|w| &**w);
    let gauges = traffic_totals(current, |w| counters_of(w, service, id));
    TrafficTotals {
        packets_in: t.packets_in.saturating_sub(b.totals.packets_in),
        bytes_in: t.bytes_in.saturating_sub(b.totals.bytes_in),
        packets_out: t.packets_out.saturating_sub(b.totals.packets_out),
        bytes_out: t.bytes_out.saturating_sub(b.totals.bytes_out),
        new_flows: t.new_flows.saturating_sub(b.totals.new_flows),
        active: gauges.active,
        inactive: gauges.inactive,
    }
}

/// The flow key of `client` to the service `cfg` (on `port` for a port-zero service; for
/// another, `port` may only repeat the service's).
fn flow_key(
    cfg: &dataplane::snapshot::ServiceConfig,
    client: SocketAddr,
    port: Option<u16>,
) -> Result<dataplane::flow::FlowKey, crate::api::ApiError> {
    use crate::api::ApiError;
    if client.is_ipv4() != cfg.vip.is_ipv4() {
        return Err(ApiError::invalid(format!(
            "client: {client} is not of the family of the service's vip {}",
            cfg.vip
        )));
    }
    let vip_port = match (cfg.port, port) {
        (0, Some(p @ 1..)) => p,
        (0, _) => {
            return Err(ApiError::invalid(
                "port: the service takes every port of its vip: say which (port=N, 1 to 65535)",
            ));
        }
        (p, None) => p,
        (p, Some(q)) if q == p => p,
        (p, Some(q)) => {
            return Err(ApiError::invalid(format!(
                "port: {q} is not the service's port {p}"
            )));
        }
    };
    Ok(dataplane::flow::FlowKey::new(
        cfg.protocol.ip_number(),
        client.ip(),
        client.port(),
        cfg.vip,
        vip_port,
    ))
}

impl Controller {
    /// Zeroes the packet, byte and new-flow counts of every service and backend (or of
    /// `service`'s and its backends'), as ipvsadm -Z: they count from now on. False when there
    /// is no such service.
    pub(super) fn zero(&mut self, service: Option<&str>) -> bool {
        let snap = self.publisher.shared().current();
        if service.is_some_and(|id| !snap.services.iter().any(|s| s.config.name == id)) {
            return false;
        }
        let traffic = &self.workers.traffic;
        for (is_service, id, name) in owners(&snap) {
            let of = name.split('/').next().unwrap_or_default();
            if service.is_some_and(|s| s != of) {
                continue;
            }
            let totals = traffic_totals(traffic.iter().map(|w| &**w), |w| {
                counters_of(w, is_service, id)
            });
            let since_snapshot = self
                .baselines
                .get(&(is_service, id))
                .map_or(0, |b| b.since_snapshot);
            self.baselines.insert(
                (is_service, id),
                Baseline {
                    totals,
                    since_snapshot,
                },
            );
        }
        true
    }

    /// After a publish at snapshot `epoch`: the ids that got a new owner count from here on.
    pub(super) fn rebase(&mut self, before: &HashSet<(bool, u32, String)>, epoch: u64) {
        let traffic = &self.workers.traffic;
        for (service, id, name) in owners(&self.publisher.shared().current()) {
            if !before.contains(&(service, id, name)) {
                let totals = traffic_totals(traffic.iter().map(|w| &**w), |w| {
                    counters_of(w, service, id)
                });
                self.baselines.insert(
                    (service, id),
                    Baseline {
                        totals,
                        since_snapshot: epoch,
                    },
                );
            }
        }
    }

    /// The counters, for the running services.
    /// The synchronisation's counts: the workers' (their flow counters) and the sync thread's.
    fn sync_stats(&self) -> SyncStats {
        use std::sync::atomic::Ordering::Relaxed;
        let traffic = &self.workers.traffic;
        let flow = |f: fn(&ServiceCounters) -> u64| traffic.iter().map(|w| f(w)).sum::<u64>();
        let mut s = SyncStats {
            enabled: self.running.sync.is_some(),
            synced_flows: flow(|w| w.flows.synced.get()),
            queued: flow(|w| w.flows.sync_queued.get()),
            queue_full: flow(|w| w.flows.sync_queue_full.get()),
            rate_limited: flow(|w| w.flows.sync_limited.get()),
            installed: flow(|w| w.flows.sync_installed.get()),
            updated: flow(|w| w.flows.sync_updated.get()),
            known: flow(|w| w.flows.sync_known.get()),
            table_full: flow(|w| w.flows.sync_full.get()),
            unknown: flow(|w| w.flows.sync_unknown.get()),
            adopted: flow(|w| w.flows.sync_adopted.get()),
            evicted: flow(|w| w.flows.sync_evicted.get()),
            ..SyncStats::default()
        };
        if let Some(c) = &self.sync_counters {
            s.records_sent = c.records_sent.load(Relaxed);
            s.datagrams_sent = c.datagrams_sent.load(Relaxed);
            s.send_errors = c.send_errors.load(Relaxed);
            s.rate_limited += c.rate_limited.load(Relaxed);
            s.datagrams_received = c.datagrams_received.load(Relaxed);
            s.records_received = c.records_received.load(Relaxed);
            s.missed = c.missed.load(Relaxed);
            s.unknown_sender = c.unknown_sender.load(Relaxed);
            s.deliver_full = c.deliver_full.load(Relaxed);
            s.refused = c
                .refused_by_reason()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        }
        s
    }

    pub fn stats(&self) -> Stats {
        let counters: &[WorkerCounters] = &self.workers.counters;
        let traffic = &self.workers.traffic;
        let snap = self.publisher.shared().current();
        let a = |f: fn(&WorkerCounters) -> u64| counters.iter().map(f).sum::<u64>();
        let drops = drop_totals(counters);
        let flow = |f: fn(&ServiceCounters) -> u64| traffic.iter().map(|w| f(w)).sum::<u64>();
        let services = self
            .running
            .services
            .iter()
            .map(|s| {
                let live = snap.services.iter().find(|x| x.config.name == s.id);
                let backends: Vec<BackendStats> = s
                    .backends
                    .iter()
                    .map(|b| {
                        let id = live.and_then(|l| {
                            l.config
                                .backends
                                .iter()
                                .find(|x| x.name == b.id)
                                .map(|x| x.id.0)
                        });
                        let t = id.map_or_else(TrafficTotals::default, |id| {
                            since(traffic, false, id, self.baselines.get(&(false, id)))
                        });
                        let (neighbor, neighbor_failures) = self.neighbor_of(&snap, b.address);
                        let health = self.health_of(&snap, s, b);
                        BackendStats {
                            id: b.id.clone(),
                            address: b.address.to_string(),
                            port: b.port,
                            weight: b.weight,
                            enabled: b.enabled,
                            neighbor,
                            neighbor_failures,
                            health,
                            traffic: Traffic::from(t),
                        }
                    })
                    .collect();
                let mut t = live.map_or_else(TrafficTotals::default, |l| {
                    let id = l.config.id.0;
                    since(traffic, true, id, self.baselines.get(&(true, id)))
                });
                // A service's connections are its backends'.
                t.active = backends.iter().map(|b| b.traffic.active).sum();
                t.inactive = backends.iter().map(|b| b.traffic.inactive).sum();
                ServiceStats {
                    id: s.id.clone(),
                    protocol: s.protocol.to_string(),
                    vip: s.vip.to_string(),
                    port: s.port,
                    scheduler: s.scheduler.to_string(),
                    forwarding: s.forwarding.to_string(),
                    traffic: Traffic::from(t),
                    backends,
                }
            })
            .collect();
        Stats {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            epoch: self.epoch,
            snapshot_epoch: snap.epoch,
            reloads: self.reloads.ok,
            reload_failures: self.reloads.failed,
            last_reload_success_unix: self.reloads.last_ok_unix,
            workers: counters.len(),
            per_worker: counters
                .iter()
                .zip(traffic)
                .enumerate()
                .map(|(i, (c, t))| WorkerStats {
                    worker: i,
                    rx_packets: c.ports.iter().map(|p| p.rx_packets.get()).sum(),
                    tx_packets: c.ports.iter().map(|p| p.tx_packets.get()).sum(),
                    forwarded: c.actions.forwarded.get(),
                    dropped: c.actions.drops.iter().map(|d| d.get()).sum(),
                    flows: t.flows.entries.get(),
                })
                .collect(),
            ports: self
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, itf)| {
                    let t = port_totals(counters, i);
                    PortStats {
                        port: itf.port,
                        name: itf.name.clone(),
                        rx_packets: t.rx_packets,
                        rx_bytes: t.rx_bytes,
                        tx_packets: t.tx_packets,
                        tx_bytes: t.tx_bytes,
                        tx_dropped: t.tx_dropped,
                    }
                })
                .collect(),
            actions: ActionStats {
                forwarded: a(|c| c.actions.forwarded.get()),
                replied: a(|c| c.actions.replied.get()),
                consumed: a(|c| c.actions.consumed.get()),
                redirected: a(|c| c.actions.redirected.get()),
                redirect_dropped: a(|c| c.actions.redirect_dropped.get()),
                held: a(|c| c.actions.held.get()),
                dropped: drops.iter().sum(),
                to_kernel: a(|c| c.actions.to_kernel.get()),
                to_kernel_dropped: a(|c| c.actions.to_kernel_dropped.get()),
                from_kernel: a(|c| c.actions.from_kernel.get()),
            },
            drops: DropReason::ALL
                .iter()
                .zip(drops)
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            flows: FlowStats {
                entries: flow(|w| w.flows.entries.get()),
                capacity: flow(|w| w.flows.capacity.get()),
                memory_bytes: flow(|w| w.flows.memory.get()),
                created: flow(|w| w.flows.created.get()),
                expired: flow(|w| w.flows.expired.get()),
                evicted: flow(|w| w.flows.evicted.get()),
                evicted_established: flow(|w| w.flows.evicted_established.get()),
                flushed: flow(|w| w.flows.flushed.get()),
                syn_flood_hashed: flow(|w| w.flows.syn_flood_hashed.get()),
                templates: flow(|w| w.flows.templates.get()),
                templates_full: flow(|w| w.flows.templates_full.get()),
            },
            closed_ports: ClosedPortStats {
                tcp_resets: flow(|w| w.closed_ports.tcp_resets.get()),
                port_unreachables: flow(|w| w.closed_ports.port_unreachables.get()),
                rate_limited: flow(|w| w.closed_ports.rate_limited.get()),
            },
            mbufs: self.mbufs,
            sync: self.sync_stats(),
            services,
        }
    }

    /// The state of the next hop towards `addr`, and how often it failed.
    /// A backend's health: its check's state, unless its next hop has failed (then down).
    fn health_of(
        &self,
        snap: &Snapshot,
        s: &crate::config::Service,
        b: &crate::config::Backend,
    ) -> HealthStats {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let ago = |i: Instant| SystemTime::now() - i.elapsed();
        let checked = self.health.get(&s.id, &b.id);
        let mut h = HealthStats {
            state: "up".into(),
            check: s.health.kind.name().into(),
            since_unix: unix(ago(self.started)),
            ..HealthStats::default()
        };
        if let Some(c) = checked {
            h.state = if c.up { "up" } else { "down" }.into();
            h.since_unix = unix(c.since);
            h.last_error = c.last_error.clone();
            h.probes_ok = c.probes_ok;
            h.probes_failed = c.probes_failed;
            h.transitions = c.transitions;
        }
        if h.state == "up"
            && let Some((_, hop)) = snap.next_hop(b.address)
            && let Some(at) = self.neighbors.failed_since(hop)
        {
            h.state = "down".into();
            h.since_unix = unix(ago(at));
            h.last_error = Some(format!(
                "next hop {hop} does not answer {}",
                if hop.is_ipv4() { "ARP" } else { "NDP" }
            ));
        }
        h
    }

    fn neighbor_of(&self, snap: &Snapshot, addr: std::net::IpAddr) -> (String, u64) {
        use crate::neighbors::State;
        let Some((_, hop)) = snap.next_hop(addr) else {
            return ("no route".to_string(), 0);
        };
        let state = if self.running.neighbors.iter().any(|n| n.address == hop) {
            "static"
        } else {
            match self.neighbors.state(hop) {
                State::Resolved(_) => "resolved",
                State::Resolving => "resolving",
                State::Failed => "failed",
                State::Unknown => "unknown",
            }
        };
        (state.to_string(), self.neighbors.failures(hop))
    }

    /// Sends every worker the command `make` builds around a reply channel, and gathers their
    /// answers (each worker's within [`DUMP_WAIT`] of the first send).
    fn ask_workers<T>(
        &self,
        make: impl Fn(crossbeam_channel::Sender<T>) -> Command,
    ) -> Result<Vec<T>, String> {
        let workers = &self.workers.commands;
        let (tx, rx) = crossbeam_channel::bounded(workers.len());
        let deadline = Instant::now() + DUMP_WAIT;
        let asked = workers
            .iter()
            .filter(|w| w.send_deadline(make(tx.clone()), deadline).is_ok())
            .count();
        let mut answers = Vec::with_capacity(asked);
        while answers.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(a) => answers.push(a),
                Err(_) => {
                    return Err(format!(
                        "{} of {} workers did not answer within {DUMP_WAIT:?}",
                        asked - answers.len(),
                        workers.len()
                    ));
                }
            }
        }
        Ok(answers)
    }

    /// Where a flow from `client` to `service` (on `port` of a port-zero service) goes: the
    /// flow a worker has, or what a new flow would get now and why.
    pub(super) fn lookup(
        &self,
        service: &str,
        client: SocketAddr,
        port: Option<u16>,
    ) -> Result<serde_json::Value, crate::api::ApiError> {
        use crate::api::ApiError;
        use dataplane::pipeline::Lookup;
        use serde_json::json;
        let snap = self.publisher.shared().current();
        let svc = snap
            .services
            .iter()
            .find(|s| s.config.name == service)
            .ok_or_else(|| ApiError::not_found(format!("no service {service:?}")))?;
        let cfg = &svc.config;
        let key = flow_key(cfg, client, port)?;
        let vip_port = key.vip_port;
        let mut answers: Vec<(u16, Lookup)> = self
            .ask_workers(|reply| Command::Lookup { key, reply })
            .map_err(|e| ApiError::new(503, e))?;
        answers.sort_by_key(|a| a.0);
        // A worker's flow first; else the owner's answer, or every worker's when they differ.
        let owner = dataplane::pipeline::owner_of(&snap, &key);
        let chosen: Vec<(u16, Lookup)> =
            match answers.iter().find(|a| matches!(a.1, Lookup::Flow { .. })) {
                Some(a) => vec![*a],
                None => match owner.and_then(|o| answers.iter().find(|a| a.0 == o)) {
                    Some(a) => vec![*a],
                    None if answers.windows(2).all(|w| w[0].1 == w[1].1) => {
                        answers.first().copied().into_iter().collect()
                    }
                    None => answers.clone(),
                },
            };
        let model = self.running.services.iter().find(|s| s.id == service);
        let describe = |(worker, l): (u16, Lookup)| {
            let backend = match l {
                Lookup::Flow { backend, .. }
                | Lookup::Template { backend }
                | Lookup::Scheduler {
                    backend: Some(backend),
                } => cfg.backends.iter().find(|b| b.id == backend),
                _ => None,
            };
            let why = match l {
                Lookup::NoService => "no service takes it",
                Lookup::Flow { .. } => "its flow",
                Lookup::Denied => "the allow and deny lists refuse the client",
                Lookup::Template { .. } => "the client's persistence template",
                Lookup::Scheduler { backend: Some(_) } => "the scheduler",
                Lookup::Scheduler { backend: None } => {
                    "no backend takes new flows (every one is drained, disabled, down or overloaded)"
                }
            };
            let health = backend.zip(model).and_then(|(b, m)| {
                let mb = m.backends.iter().find(|x| x.id == b.name)?;
                Some(self.health_of(&snap, m, mb).state)
            });
            json!({
                "worker": worker,
                "existing": matches!(l, Lookup::Flow { .. }),
                "state": match l { Lookup::Flow { state, .. } => Some(state.name()), _ => None },
                "why": why,
                "backend": backend.map(|b| b.name.clone()),
                "backend_address": backend.map(|b| SocketAddr::new(b.address, b.port).to_string()),
                "health": health,
            })
        };
        let mut out = json!({
            "service": service,
            "client": client.to_string(),
            "port": vip_port,
            "scheduler": cfg.scheduler.name(),
        });
        if chosen.len() == 1 {
            let d = describe(chosen[0]);
            for (k, v) in d.as_object().expect("an object") {
                out[k] = v.clone();
            }
        } else {
            out["why"] = json!("it depends on the worker the packet reaches (the answer of each)");
            out["per_worker"] = chosen.into_iter().map(describe).collect();
        }
        Ok(out)
    }

    /// The dataplane's filter for `q` (ids to numbers, names to states).
    pub(super) fn flow_filter(
        &self,
        q: &crate::api::FlowQuery,
    ) -> Result<FlowFilter, crate::api::ApiError> {
        use crate::api::ApiError;
        use dataplane::flow::FlowState;
        let snap = self.publisher.shared().current();
        let svc = match &q.service {
            Some(id) => Some(
                snap.services
                    .iter()
                    .find(|s| s.config.name == *id)
                    .ok_or_else(|| ApiError::not_found(format!("no service {id:?}")))?,
            ),
            None => None,
        };
        let backend = match (&q.backend, svc) {
            (None, _) => None,
            (Some(b), None) => {
                return Err(ApiError::invalid(format!(
                    "backend: {b:?} needs service=ID too (a backend id is its service's)"
                )));
            }
            (Some(b), Some(s)) => Some(
                s.config
                    .backends
                    .iter()
                    .find(|x| x.name == *b)
                    .map(|x| x.id)
                    .ok_or_else(|| {
                        ApiError::not_found(format!(
                            "service {:?} has no backend {b:?}",
                            s.config.name
                        ))
                    })?,
            ),
        };
        const STATES: [FlowState; 6] = [
            FlowState::Syn,
            FlowState::Established,
            FlowState::Fin,
            FlowState::Closed,
            FlowState::Midstream,
            FlowState::Udp,
        ];
        let state = match &q.state {
            None => None,
            Some(name) => Some(
                STATES
                    .into_iter()
                    .find(|s| s.name() == name)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "state: {name:?} is not one of syn, established, fin, closed, midstream, udp"
                        ))
                    })?,
            ),
        };
        Ok(FlowFilter {
            service: svc.map(|s| s.config.id),
            client: q.client.map(|(a, p)| (dataplane::flow::addr_bytes(a), p)),
            backend,
            state,
        })
    }

    /// Removes the flow of `client` to `service` from the worker that has it.
    pub(super) fn delete_flow(
        &self,
        service: &str,
        client: SocketAddr,
        port: Option<u16>,
    ) -> Result<crate::api::Reply, crate::api::ApiError> {
        use crate::api::ApiError;
        let snap = self.publisher.shared().current();
        let cfg = &snap
            .services
            .iter()
            .find(|s| s.config.name == service)
            .ok_or_else(|| ApiError::not_found(format!("no service {service:?}")))?
            .config;
        let key = flow_key(cfg, client, port)?;
        let had = self
            .ask_workers(|reply| Command::RemoveFlow { key, reply })
            .map_err(|e| ApiError::new(503, e))?
            .iter()
            .any(|(_, had)| *had);
        if !had {
            return Err(ApiError::not_found(format!(
                "service {service:?} has no flow from {client}"
            )));
        }
        Ok(crate::api::Reply {
            status: 204,
            body: crate::api::Body::Empty,
            location: None,
        })
    }

    /// Up to `limit` live flows that `filter` takes, gathered from the workers (oldest first).
    pub(super) fn flows(
        &self,
        filter: FlowFilter,
        limit: usize,
    ) -> Result<Vec<FlowSample>, String> {
        let snap = self.publisher.shared().current();
        let dumps: Vec<FlowDump> = self.ask_workers(|reply| Command::DumpFlows {
            filter,
            into: Vec::with_capacity(limit),
            reply,
        })?;
        let by_id: HashMap<_, _> = snap
            .services
            .iter()
            .flat_map(|s| s.config.backends.iter().map(|b| (b.id, b)))
            .collect();
        let mut out = Vec::new();
        for d in dumps {
            for f in &d.flows {
                let backend = by_id.get(&f.backend);
                out.push(FlowSample {
                    service: snap
                        .service_by_id(f.service)
                        .map_or_else(|| "?".to_string(), |s| s.config.name.clone()),
                    client: SocketAddr::new(addr_from_bytes(f.key.client), f.key.client_port)
                        .to_string(),
                    backend: backend.map_or_else(|| "?".to_string(), |b| b.name.clone()),
                    backend_address: backend.map_or_else(String::new, |b| {
                        SocketAddr::new(b.address, b.port).to_string()
                    }),
                    state: f.state.name().to_string(),
                    idle_seconds: d.now.saturating_sub(f.last_seen),
                    age_seconds: d.now.saturating_sub(f.created),
                    worker: d.worker,
                });
            }
        }
        // The oldest first, then a stable order.
        out.sort_by(|a, b| {
            b.age_seconds
                .cmp(&a.age_seconds)
                .then(a.client.cmp(&b.client))
        });
        out.truncate(limit);
        Ok(out)
    }
}
