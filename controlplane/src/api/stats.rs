//! What `GET /api/v1/stats` answers and `GET /metrics` renders: counters summed over the
//! workers, per port, per drop reason, per service and per backend.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Stats {
    pub version: String,
    pub uptime_seconds: f64,
    /// The configuration epoch: 1 at start, one more for every change (API or reload).
    pub epoch: u64,
    /// The epoch of the snapshot the workers use (it also moves when a neighbour is learned).
    pub snapshot_epoch: u64,
    /// Reloads applied (SIGHUP or `POST /api/v1/reload`), including those that changed nothing.
    pub reloads: u64,
    /// Reloads refused (an invalid file, or a change that needs a restart).
    pub reload_failures: u64,
    /// When the last reload was applied, in seconds since the Unix epoch (absent: never).
    pub last_reload_success_unix: Option<f64>,
    pub workers: usize,
    /// Per worker (lcore), its own counts.
    pub per_worker: Vec<WorkerStats>,
    pub ports: Vec<PortStats>,
    pub actions: ActionStats,
    /// Every drop reason, with zero for those that never happened.
    pub drops: BTreeMap<String, u64>,
    pub flows: FlowStats,
    pub closed_ports: ClosedPortStats,
    pub mbufs: MbufStats,
    /// Flow-state synchronisation with the peers (`[sync]`; all zero while it is off).
    pub sync: SyncStats,
    pub services: Vec<ServiceStats>,
}

/// What the workers told the peers and took from them, and what the sync thread sent and
/// received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct SyncStats {
    pub enabled: bool,
    /// Synced flows held now (a peer's, no packet of them seen here yet).
    pub synced_flows: u64,
    /// Records the workers queued for the peers, and lost because their ring was full.
    pub queued: u64,
    pub queue_full: u64,
    pub records_sent: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
    /// Records dropped over `max_records_per_second` (each worker queues its share of it).
    pub rate_limited: u64,
    pub datagrams_received: u64,
    pub records_received: u64,
    /// Datagrams a peer sent that did not arrive (gaps in its sequence numbers).
    pub missed: u64,
    /// Datagrams from an address that is no peer.
    pub unknown_sender: u64,
    /// Datagrams refused, by reason (length, magic, version, sync_id, record).
    pub refused: BTreeMap<String, u64>,
    /// Records for a worker whose inbound ring was full.
    pub deliver_full: u64,
    /// Peers' records installed as synced flows, replacing a synced flow, refused because a
    /// flow of ours has the tuple, because the table is full of ours, or because the service
    /// or backend is not here.
    pub installed: u64,
    pub updated: u64,
    pub known: u64,
    pub table_full: u64,
    pub unknown: u64,
    /// Synced flows a packet made ours, and synced flows evicted or expired before one came.
    pub adopted: u64,
    pub evicted: u64,
}

/// Answers to packets for a VIP port without a service ([replies]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct ClosedPortStats {
    pub tcp_resets: u64,
    pub port_unreachables: u64,
    /// Not answered, over the per-second budget (counted as no_service drops too).
    pub rate_limited: u64,
}

/// The packet-buffer pool: its size and the mbufs taken from it (in rx and tx queues, rings,
/// bursts). Flat under steady traffic; growth without traffic growing is a leak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct MbufStats {
    pub size: u64,
    pub in_use: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct PortStats {
    pub port: u16,
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the device did not take (tx queue full); freed and counted.
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct WorkerStats {
    pub worker: usize,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// Entries in its flow table.
    pub flows: u64,
}

/// What the workers did with the packets they received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ActionStats {
    pub forwarded: u64,
    pub replied: u64,
    pub consumed: u64,
    pub redirected: u64,
    pub redirect_dropped: u64,
    /// Held while their next hop was resolved (then forwarded, or dropped as
    /// neighbor_unresolved or neighbor_failed).
    pub held: u64,
    pub dropped: u64,
    /// Handed to the kernel interfaces (the exception path), and what they did not take.
    pub to_kernel: u64,
    pub to_kernel_dropped: u64,
    /// Sent out of the ports for the kernel interfaces.
    pub from_kernel: u64,
}

/// The flow tables of all workers (copied out by the workers ten times a second).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct FlowStats {
    pub entries: u64,
    pub capacity: u64,
    /// Bytes the flow tables hold (slabs and indexes) for their capacity.
    pub memory_bytes: u64,
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
    pub evicted_established: u64,
    pub flushed: u64,
    /// New TCP flows given a backend by the hash of their tuple, not by their scheduler,
    /// because a SYN flood was evicting half-open flows.
    pub syn_flood_hashed: u64,
    /// Persistence templates held (all workers).
    pub templates: u64,
    /// New flows of a persistent service that got no template: the worker's template table
    /// (an eighth of its flow capacity, at least 1024) was full.
    pub templates_full: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Traffic {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    /// Established TCP connections (IPVS's ActiveConn).
    pub active: u64,
    /// Other flows: TCP in handshake or closing, UDP (IPVS's InActConn).
    pub inactive: u64,
}

impl From<dataplane::counters::TrafficTotals> for Traffic {
    fn from(t: dataplane::counters::TrafficTotals) -> Traffic {
        Traffic {
            packets_in: t.packets_in,
            bytes_in: t.bytes_in,
            packets_out: t.packets_out,
            bytes_out: t.bytes_out,
            new_flows: t.new_flows,
            active: t.active,
            inactive: t.inactive,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ServiceStats {
    pub id: String,
    pub protocol: String,
    pub vip: String,
    pub port: u16,
    pub scheduler: String,
    pub forwarding: String,
    #[serde(flatten)]
    pub traffic: Traffic,
    pub backends: Vec<BackendStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct BackendStats {
    pub id: String,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    pub enabled: bool,
    /// Its next hop's MAC: static, resolved, resolving, failed (no new flows until it
    /// answers) or unknown (not asked for yet).
    pub neighbor: String,
    /// Times its next hop failed to resolve.
    pub neighbor_failures: u64,
    pub health: HealthStats,
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Whether a backend takes new flows as far as its health goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct HealthStats {
    /// up, or down: its service's health check failed `fall` times in a row (and has not
    /// succeeded `rise` times since), or its next hop does not answer ARP/NDP.
    pub state: String,
    /// The service's check: tcp, http, udp or none.
    pub check: String,
    /// Since when it is in that state (Unix time, seconds).
    pub since_unix: f64,
    /// Why it is down, or what its last failed probe said.
    pub last_error: Option<String>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    /// Times the check took it down or brought it back.
    pub transitions: u64,
}

/// One live flow, as `GET /api/v1/services/{id}/flows` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FlowSample {
    /// The service's id.
    pub service: String,
    /// Client address and port.
    pub client: String,
    /// The backend's id.
    pub backend: String,
    /// The backend's address and port.
    pub backend_address: String,
    /// syn, established, fin, close (TCP) or udp.
    pub state: String,
    pub idle_seconds: u32,
    pub age_seconds: u32,
    /// The worker whose table holds it.
    pub worker: u16,
}

/// Prometheus' text exposition format: a label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes families in the text format, each with its HELP and TYPE once.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP l4lb_{name} {help}");
        let _ = writeln!(self.out, "# TYPE l4lb_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str("l4lb_");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one sample per item.
    fn each<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        items: &[T],
        labels: impl Fn(&T) -> Vec<(&'static str, String)>,
        value: impl Fn(&T) -> u64,
    ) {
        self.family(name, kind, help);
        for it in items {
            let l = labels(it);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &l, value(it));
        }
    }
}

/// The counters as Prometheus text (format 0.0.4), every name prefixed `l4lb_`.
pub fn render_metrics(s: &Stats) -> String {
    let mut x = Exposition { out: String::new() };
    x.family("build_info", "gauge", "Version of the running appliance.");
    x.sample("build_info", &[("version", &s.version)], 1);
    x.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the workers started.",
    );
    x.sample("uptime_seconds", &[], format!("{:.3}", s.uptime_seconds));
    x.family(
        "config_epoch",
        "gauge",
        "Configuration changes made (1 at start, one more per API change or reload).",
    );
    x.sample("config_epoch", &[], s.epoch);
    x.family(
        "snapshot_epoch",
        "gauge",
        "Epoch of the snapshot the workers use (also moves when a neighbour is learned).",
    );
    x.sample("snapshot_epoch", &[], s.snapshot_epoch);
    x.family(
        "config_reloads_total",
        "counter",
        "Reloads applied (SIGHUP or the API), including those that changed nothing.",
    );
    x.sample("config_reloads_total", &[], s.reloads);
    x.family(
        "config_reload_failures_total",
        "counter",
        "Reloads refused: an invalid file, or a change that needs a restart.",
    );
    x.sample("config_reload_failures_total", &[], s.reload_failures);
    x.family(
        "config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the last reload was applied (Unix time; 0: never).",
    );
    x.sample(
        "config_last_reload_success_timestamp_seconds",
        &[],
        format!("{:.3}", s.last_reload_success_unix.unwrap_or(0.0)),
    );
    x.family("workers", "gauge", "Worker lcores polling the ports.");
    x.sample("workers", &[], s.workers);
    let worker = |w: &WorkerStats| vec![("worker", w.worker.to_string())];
    x.each(
        "worker_rx_packets_total",
        "counter",
        "Packets a worker received from its rx queues.",
        &s.per_worker,
        worker,
        |w| w.rx_packets,
    );
    x.family(
        "mbufs",
        "gauge",
        "Packet buffers: the pool's size and those in use.",
    );
    x.sample("mbufs", &[("state", "size")], s.mbufs.size);
    x.sample("mbufs", &[("state", "in_use")], s.mbufs.in_use);
    x.each(
        "worker_flows",
        "gauge",
        "Entries in a worker's flow table.",
        &s.per_worker,
        worker,
        |w| w.flows,
    );

    let port = |p: &PortStats| vec![("port", p.port.to_string()), ("name", p.name.clone())];
    for (name, help, f) in [
        (
            "port_rx_packets_total",
            "Packets received on the port.",
            (|p: &PortStats| p.rx_packets) as fn(&PortStats) -> u64,
        ),
        ("port_rx_bytes_total", "Bytes received on the port.", |p| {
            p.rx_bytes
        }),
        ("port_tx_packets_total", "Packets sent on the port.", |p| {
            p.tx_packets
        }),
        ("port_tx_bytes_total", "Bytes sent on the port.", |p| {
            p.tx_bytes
        }),
        (
            "port_tx_dropped_total",
            "Packets the port's tx queue did not take.",
            |p| p.tx_dropped,
        ),
    ] {
        x.each(name, "counter", help, &s.ports, port, f);
    }

    x.family(
        "packets_total",
        "counter",
        "Packets by what the workers did with them.",
    );
    let a = &s.actions;
    for (action, v) in [
        ("forwarded", a.forwarded),
        ("replied", a.replied),
        ("consumed", a.consumed),
        ("redirected", a.redirected),
        ("redirect_dropped", a.redirect_dropped),
        ("held", a.held),
        ("dropped", a.dropped),
        ("to_kernel", a.to_kernel),
        ("to_kernel_dropped", a.to_kernel_dropped),
        ("from_kernel", a.from_kernel),
    ] {
        x.sample("packets_total", &[("action", action)], v);
    }
    x.family(
        "closed_port_replies_total",
        "counter",
        "Answers to packets for a VIP port without a service: tcp_reset, port_unreachable, and rate_limited (not answered).",
    );
    let c = &s.closed_ports;
    for (kind, v) in [
        ("tcp_reset", c.tcp_resets),
        ("port_unreachable", c.port_unreachables),
        ("rate_limited", c.rate_limited),
    ] {
        x.sample("closed_port_replies_total", &[("kind", kind)], v);
    }
    x.family(
        "backend_neighbor_failed",
        "gauge",
        "1 while a backend's next hop does not answer ARP/NDP (it takes no new flows), else 0.",
    );
    for svc in &s.services {
        for b in &svc.backends {
            x.sample(
                "backend_neighbor_failed",
                &[("service", &svc.id), ("backend", &b.id)],
                u8::from(b.neighbor == "failed"),
            );
        }
    }
    x.family(
        "backend_up",
        "gauge",
        "1 while a backend is up as far as its health goes (checks and neighbour), else 0.",
    );
    x.family(
        "backend_health_since_timestamp_seconds",
        "gauge",
        "When a backend's health state last changed (Unix time).",
    );
    x.family(
        "backend_health_probes_total",
        "counter",
        "Health probes of a backend, by result (ok, failed).",
    );
    x.family(
        "backend_health_transitions_total",
        "counter",
        "Times a backend's health check took it down or brought it back.",
    );
    for svc in &s.services {
        for b in &svc.backends {
            let l = [("service", svc.id.as_str()), ("backend", b.id.as_str())];
            let h = &b.health;
            x.sample("backend_up", &l, u8::from(h.state == "up"));
            x.sample(
                "backend_health_since_timestamp_seconds",
                &l,
                format!("{:.3}", h.since_unix),
            );
            for (result, v) in [("ok", h.probes_ok), ("failed", h.probes_failed)] {
                x.sample(
                    "backend_health_probes_total",
                    &[l[0], l[1], ("result", result)],
                    v,
                );
            }
            x.sample("backend_health_transitions_total", &l, h.transitions);
        }
    }
    x.family("drops_total", "counter", "Packets dropped, by reason.");
    for (reason, v) in &s.drops {
        x.sample("drops_total", &[("reason", reason)], v);
    }

    let f = &s.flows;
    x.family("flows", "gauge", "Flow table entries, all workers.");
    x.sample("flows", &[], f.entries);
    x.family(
        "flow_memory_bytes",
        "gauge",
        "Bytes of the flow tables (slabs and indexes), all workers.",
    );
    x.sample("flow_memory_bytes", &[], f.memory_bytes);
    x.family(
        "flow_capacity",
        "gauge",
        "Flow table capacity, all workers.",
    );
    x.sample("flow_capacity", &[], f.capacity);
    x.family(
        "persistence_templates",
        "gauge",
        "Persistence templates held, all workers.",
    );
    x.sample("persistence_templates", &[], f.templates);
    x.family(
        "persistence_templates_full_total",
        "counter",
        "New flows of persistent services that got no template (the template table was full).",
    );
    x.sample("persistence_templates_full_total", &[], f.templates_full);
    let y = &s.sync;
    x.family(
        "sync_synced_flows",
        "gauge",
        "Synced flows held: a peer's, no packet of them seen here yet.",
    );
    x.sample("sync_synced_flows", &[], y.synced_flows);
    x.family(
        "sync_records_total",
        "counter",
        "Flow-state synchronisation records: queued by the workers, lost to a full journal (queue_full), sent, rate_limited, received, lost to a full worker ring (deliver_full), and what the workers did with the peers' (installed, updated, known, table_full, unknown).",
    );
    for (event, v) in [
        ("queued", y.queued),
        ("queue_full", y.queue_full),
        ("sent", y.records_sent),
        ("rate_limited", y.rate_limited),
        ("received", y.records_received),
        ("deliver_full", y.deliver_full),
        ("installed", y.installed),
        ("updated", y.updated),
        ("known", y.known),
        ("table_full", y.table_full),
        ("unknown", y.unknown),
    ] {
        x.sample("sync_records_total", &[("event", event)], v);
    }
    x.family(
        "sync_datagrams_total",
        "counter",
        "Flow-state synchronisation datagrams: sent, send_errors, received, missed (gaps in a peer's sequence), unknown_sender, and refused ones by reason.",
    );
    for (event, v) in [
        ("sent", y.datagrams_sent),
        ("send_errors", y.send_errors),
        ("received", y.datagrams_received),
        ("missed", y.missed),
        ("unknown_sender", y.unknown_sender),
    ] {
        x.sample("sync_datagrams_total", &[("event", event)], v);
    }
    for (reason, v) in &y.refused {
        x.sample(
            "sync_datagrams_total",
            &[("event", "refused"), ("reason", reason)],
            *v,
        );
    }
    x.family(
        "sync_flows_total",
        "counter",
        "Synced flows a packet made ours (adopted), and those evicted or expired before one came.",
    );
    x.sample("sync_flows_total", &[("event", "adopted")], y.adopted);
    x.sample("sync_flows_total", &[("event", "evicted")], y.evicted);
    x.family(
        "flow_events_total",
        "counter",
        "Flow table events: created, expired, evicted (of those evicted_established), flushed, and syn_flood_hashed (new flows given a backend by hash during a SYN flood).",
    );
    for (event, v) in [
        ("created", f.created),
        ("expired", f.expired),
        ("evicted", f.evicted),
        ("evicted_established", f.evicted_established),
        ("flushed", f.flushed),
        ("syn_flood_hashed", f.syn_flood_hashed),
    ] {
        x.sample("flow_events_total", &[("event", event)], v);
    }

    // Services, then backends (labels service and backend), the same families for both.
    struct Row<'a> {
        service: &'a str,
        backend: Option<&'a str>,
        t: &'a Traffic,
    }
    let mut services = Vec::new();
    let mut backends = Vec::new();
    for svc in &s.services {
        services.push(Row {
            service: &svc.id,
            backend: None,
            t: &svc.traffic,
        });
        for b in &svc.backends {
            backends.push(Row {
                service: &svc.id,
                backend: Some(&b.id),
                t: &b.traffic,
            });
        }
    }
    let labels = |r: &Row| {
        let mut l = vec![("service", r.service.to_string())];
        if let Some(b) = r.backend {
            l.push(("backend", b.to_string()));
        }
        l
    };
    for (what, rows) in [("service", &services), ("backend", &backends)] {
        for (name, kind, help, f) in [
            (
                "packets_in_total",
                "counter",
                "Packets from clients.",
                (|t: &Traffic| t.packets_in) as fn(&Traffic) -> u64,
            ),
            ("bytes_in_total", "counter", "Bytes from clients.", |t| {
                t.bytes_in
            }),
            (
                "packets_out_total",
                "counter",
                "Reply packets to clients (NAT).",
                |t| t.packets_out,
            ),
            (
                "bytes_out_total",
                "counter",
                "Reply bytes to clients (NAT).",
                |t| t.bytes_out,
            ),
            ("new_flows_total", "counter", "Flows scheduled.", |t| {
                t.new_flows
            }),
            (
                "active_connections",
                "gauge",
                "Established TCP connections (ActiveConn).",
                |t| t.active,
            ),
            (
                "inactive_connections",
                "gauge",
                "Other flows (InActConn).",
                |t| t.inactive,
            ),
        ] {
            x.each(&format!("{what}_{name}"), kind, help, rows, labels, |r| {
                f(r.t)
            });
        }
    }
    let weights: Vec<(&str, &BackendStats)> = s
        .services
        .iter()
        .flat_map(|svc| svc.backends.iter().map(move |b| (svc.id.as_str(), b)))
        .collect();
    let bl = |(s, b): &(&str, &BackendStats)| {
        vec![("service", s.to_string()), ("backend", b.id.clone())]
    };
    x.each(
        "backend_weight",
        "gauge",
        "Configured weight (0: drained).",
        &weights,
        bl,
        |(_, b)| u64::from(b.weight),
    );
    x.each(
        "backend_enabled",
        "gauge",
        "1 if the backend takes new flows by configuration.",
        &weights,
        bl,
        |(_, b)| u64::from(b.enabled),
    );
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_help_type_and_escaped_labels() {
        let s = Stats {
            version: "0.1.0".into(),
            drops: [("no_service".to_string(), 7)].into_iter().collect(),
            services: vec![ServiceStats {
                id: "we\"b".into(),
                traffic: Traffic {
                    packets_in: 12,
                    ..Traffic::default()
                },
                backends: vec![BackendStats {
                    id: "b1".into(),
                    weight: 3,
                    enabled: true,
                    ..BackendStats::default()
                }],
                ..ServiceStats::default()
            }],
            ..Stats::default()
        };
        let m = render_metrics(&s);
        assert!(
            m.contains(
                "# TYPE l4lb_drops_total counter\nl4lb_drops_total{reason=\"no_service\"} 7\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("l4lb_service_packets_in_total{service=\"we\\\"b\"} 12\n"),
            "{m}"
        );
        assert!(
            m.contains("l4lb_backend_weight{service=\"we\\\"b\",backend=\"b1\"} 3\n"),
            "{m}"
        );
        assert_eq!(m.matches("# TYPE l4lb_backend_weight ").count(), 1);
        for line in m.lines() {
            assert!(
                line.starts_with("# HELP l4lb_")
                    || line.starts_with("# TYPE l4lb_")
                    || line.starts_with("l4lb_"),
                "{line}"
            );
        }
    }
}
