//! From the validated model to the snapshot the workers read: stable numeric ids for services
//! and backends (kept across changes, so flows and counters that outlive a snapshot still
//! mean the same thing), then the publish itself (docs/architecture.md, "The snapshot").
//!
//! A publish has two steps so that nothing is changed by a publish that cannot happen:
//! [`Publisher::prepare`] assigns ids on a copy of the bookkeeping and builds the snapshot (it
//! is the step that can fail, at the id limits); the caller saves what it must, then
//! [`Publisher::publish`] swaps the snapshot in and adopts the copy. `publish` takes
//! `&mut self`: the owner of the publisher is the one writer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::addr::MacAddr;
use dataplane::service::{BackendId, ServiceId};
use dataplane::shared::SharedSnapshot;
use dataplane::snapshot::{
    BackendConfig, InterfaceConfig, ServiceConfig, ServiceOptions, Snapshot, SnapshotConfig,
};

use crate::config::{Model, Service};

/// Ids handed out so far. A service keeps its id while its id string exists; a backend keeps
/// its id while (service id, backend id) exists and its address and port stay the same — a
/// backend that moves is a new backend to the flow table.
#[derive(Debug, Clone)]
pub struct Ids {
    limits: Limits,
    services: HashMap<String, ServiceId>,
    backends: HashMap<(String, String), (BackendId, IpAddr, u16)>,
    /// Per service id, what its backends and weights were (their change bumps the generation).
    generations: HashMap<ServiceId, (u64, Vec<BackendShape>)>,
    free_services: Vec<ServiceId>,
    free_backends: Vec<BackendId>,
    /// Released by the last assignment: reusable only from the next one on, once the workers
    /// have flushed their flows (a reused id must never meet the old backend's flows).
    quarantined_backends: Vec<BackendId>,
    next_service: u32,
    next_backend: u32,
}

/// How many ids there are of each kind (the workers size their per-id counters for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub services: u32,
    pub backends: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            services: MAX_SERVICES,
            backends: MAX_BACKENDS,
        }
    }
}

impl Ids {
    pub fn new(limits: Limits) -> Ids {
        Ids {
            limits,
            services: HashMap::new(),
            backends: HashMap::new(),
            generations: HashMap::new(),
            free_services: Vec::new(),
            free_backends: Vec::new(),
            quarantined_backends: Vec::new(),
            next_service: 0,
            next_backend: 0,
        }
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new(Limits::default())
    }
}

/// What of a backend the schedulers depend on: id, weight, enabled.
type BackendShape = (String, u32, bool);

pub use crate::config::{MAX_BACKENDS, MAX_SERVICES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    TooManyServices(u32),
    /// Counting the ids of backends removed by the change before, which are reused only once
    /// the workers have flushed their flows.
    TooManyBackends(u32),
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::TooManyServices(n) => write!(f, "services: more than {n}"),
            IdError::TooManyBackends(n) => write!(
                f,
                "backends: more than {n} in all services (with those removed by the last change, whose ids are free again after it)"
            ),
        }
    }
}

impl Ids {
    /// Assigns ids for `services`, releasing those of services and backends that are gone.
    /// Returns the backend ids that were released (their flows must be flushed).
    fn assign(&mut self, services: &[Service]) -> Result<Vec<BackendId>, IdError> {
        let wanted_s: std::collections::HashSet<&str> =
            services.iter().map(|s| s.id.as_str()).collect();
        let wanted_b: std::collections::HashSet<(&str, &str)> = services
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(move |b| (s.id.as_str(), b.id.as_str()))
            })
            .collect();
        let mut released = Vec::new();
        self.free_backends.append(&mut self.quarantined_backends);
        self.services.retain(|k, v| {
            let keep = wanted_s.contains(k.as_str());
            if !keep {
                self.free_services.push(*v);
            }
            keep
        });
        let moved: Vec<(String, String)> = services
            .iter()
            .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
            .filter_map(|(s, b)| {
                let k = (s.id.clone(), b.id.clone());
                match self.backends.get(&k) {
                    Some((_, a, p)) if *a != b.address || *p != b.port => Some(k),
                    _ => None,
                }
            })
            .collect();
        self.backends.retain(|k, v| {
            let keep = wanted_b.contains(&(k.0.as_str(), k.1.as_str())) && !moved.contains(k);
            if !keep {
                released.push(v.0);
                self.quarantined_backends.push(v.0);
            }
            keep
        });
        for s in services {
            if !self.services.contains_key(&s.id) {
                let id = match self.free_services.pop() {
                    Some(id) => id,
                    None if self.next_service < self.limits.services => {
                        self.next_service += 1;
                        ServiceId(self.next_service - 1)
                    }
                    None => return Err(IdError::TooManyServices(self.limits.services)),
                };
                self.services.insert(s.id.clone(), id);
            }
            for b in &s.backends {
                let k = (s.id.clone(), b.id.clone());
                if !self.backends.contains_key(&k) {
                    let id = match self.free_backends.pop() {
                        Some(id) => id,
                        None if self.next_backend < self.limits.backends => {
                            self.next_backend += 1;
                            BackendId(self.next_backend - 1)
                        }
                        None => return Err(IdError::TooManyBackends(self.limits.backends)),
                    };
                    self.backends.insert(k, (id, b.address, b.port));
                }
            }
        }
        Ok(released)
    }

    fn generation(&mut self, id: ServiceId, s: &Service, down: &Down) -> u64 {
        let shape: Vec<BackendShape> = s
            .backends
            .iter()
            .map(|b| {
                (
                    b.id.clone(),
                    b.weight,
                    b.enabled && !down.contains(&s.id, &b.id),
                )
            })
            .collect();
        let e = self.generations.entry(id).or_insert((0, Vec::new()));
        if e.0 == 0 || e.1 != shape {
            e.0 += 1;
            e.1 = shape;
        }
        e.0
    }
}

/// The name the sorry backend has in the snapshot, the flow samples and the counters (no
/// backend id can be it: ids take neither parentheses nor spaces).
pub const SORRY: &str = "(sorry)";

/// The backends a health check or the operator's health source holds down: they take no new
/// flows (their weight is 0 in the snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Down(HashMap<String, std::collections::HashSet<String>>);

impl Down {
    pub fn insert(&mut self, service: &str, backend: &str) {
        self.0
            .entry(service.to_string())
            .or_default()
            .insert(backend.to_string());
    }

    pub fn contains(&self, service: &str, backend: &str) -> bool {
        self.0.get(service).is_some_and(|b| b.contains(backend))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The services as the snapshot holds them: a service's sorry backend is one more backend,
/// named [`SORRY`].
fn with_sorry(services: &[Service]) -> Vec<Service> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some((address, port)) = s.sorry {
                s.backends.push(crate::config::Backend {
                    id: SORRY.to_string(),
                    address,
                    port,
                    weight: 1,
                    enabled: true,
                    upper_threshold: 0,
                    lower_threshold: 0,
                });
            }
            s
        })
        .collect()
}

/// Builds the snapshot input for `model` with stable ids; `macs` are the ports' MAC addresses
/// in the order of `model.interfaces`; `learned` are dynamic neighbours (the configuration's
/// static ones come after them, and the snapshot keeps the last entry of an address, so static
/// entries win).
pub fn snapshot_config(
    model: &Model,
    learned: &[(IpAddr, MacAddr)],
    failed: &[IpAddr],
    down: &Down,
    macs: &[MacAddr],
    workers: u16,
    ids: &mut Ids,
) -> Result<(SnapshotConfig, Vec<BackendId>), IdError> {
    let with_sorry = with_sorry(&model.services);
    let released = ids.assign(&with_sorry)?;
    let services = with_sorry
        .iter()
        .map(|s| {
            let id = ids.services[&s.id];
            ServiceConfig {
                id,
                name: s.id.clone(),
                protocol: s.protocol,
                vip: s.vip,
                port: s.port,
                scheduler: s.scheduler,
                forwarding: s.forwarding,
                maglev_table_size: s.maglev_table_size,
                options: ServiceOptions {
                    flags: s.scheduler_flags,
                    one_packet: s.one_packet,
                    allow: s.allow.clone(),
                    deny: s.deny.clone(),
                    tunnel: s.tunnel,
                    persistence: s.persistence,
                },
                backends: s
                    .backends
                    .iter()
                    .map(|b| BackendConfig {
                        id: ids.backends[&(s.id.clone(), b.id.clone())].0,
                        name: b.id.clone(),
                        address: b.address,
                        port: b.port,
                        weight: b.weight,
                        enabled: b.enabled && !down.contains(&s.id, &b.id),
                        sorry: b.id == SORRY,
                        upper_threshold: b.upper_threshold,
                        lower_threshold: b.lower_threshold,
                    })
                    .collect(),
                generation: ids.generation(id, s, down),
            }
        })
        .collect();
    Ok((
        SnapshotConfig {
            interfaces: model
                .interfaces
                .iter()
                .zip(macs)
                .map(|(i, mac)| InterfaceConfig {
                    port: i.port,
                    mac: *mac,
                    addresses: i.addresses.clone(),
                    mtu: i.mtu,
                    kernel: i.kernel.is_some(),
                })
                .collect(),
            routes: model.routes.iter().map(|r| (r.prefix, r.via)).collect(),
            neighbors: learned
                .iter()
                .copied()
                .chain(model.neighbors.iter().map(|n| (n.address, n.mac)))
                .collect(),
            services,
            timeouts: model.timeouts,
            workers,
            failed_neighbors: failed.to_vec(),
            replies: model.replies,
        },
        released,
    ))
}

/// The single writer of the shared snapshot.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<SharedSnapshot>,
    macs: Vec<MacAddr>,
    workers: u16,
    ids: Ids,
    epoch: u64,
    /// Replaced snapshots a worker may still use, with the epoch that replaced each: freed
    /// once every running worker has seen that epoch.
    retired: Vec<(u64, Arc<Snapshot>)>,
}

/// A snapshot built and its ids assigned, not yet published.
#[derive(Debug)]
pub struct Prepared {
    snapshot: Snapshot,
    ids: Ids,
    released_backends: Vec<BackendId>,
    build_time: Duration,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub epoch: u64,
    /// Backend ids that no longer exist: the workers must flush their flows.
    pub released_backends: Vec<BackendId>,
    /// Running workers that did not report the new snapshot in time (empty: live everywhere).
    pub lagging: Vec<usize>,
    pub build_time: Duration,
}

impl Published {
    pub fn live(&self) -> bool {
        self.lagging.is_empty()
    }
}

impl Publisher {
    /// The first snapshot, from `model`.
    pub fn new(model: &Model, macs: Vec<MacAddr>, workers: u16) -> Result<Publisher, IdError> {
        Publisher::with_limits(model, macs, workers, Limits::default())
    }

    /// The same with other id limits (tests of what happens at a limit).
    pub fn with_limits(
        model: &Model,
        macs: Vec<MacAddr>,
        workers: u16,
        limits: Limits,
    ) -> Result<Publisher, IdError> {
        let mut ids = Ids::new(limits);
        let (config, _) =
            snapshot_config(model, &[], &[], &Down::default(), &macs, workers, &mut ids)?;
        let shared = SharedSnapshot::new(Snapshot::build(config, 1), usize::from(workers));
        Ok(Publisher {
            shared,
            macs,
            workers,
            ids,
            epoch: 1,
            retired: Vec::new(),
        })
    }

    pub fn shared(&self) -> &Arc<SharedSnapshot> {
        &self.shared
    }

    /// Assigns ids for `model` (on a copy: the publisher's own bookkeeping is untouched) and
    /// builds its snapshot, reusing the current one's unchanged schedulers.
    pub fn prepare(
        &self,
        model: &Model,
        learned: &[(IpAddr, MacAddr)],
        failed: &[IpAddr],
        down: &Down,
    ) -> Result<Prepared, IdError> {
        let started = Instant::now();
        let mut ids = self.ids.clone();
        let (config, released_backends) = snapshot_config(
            model,
            learned,
            failed,
            down,
            &self.macs,
            self.workers,
            &mut ids,
        )?;
        let snapshot = Snapshot::build_after(config, self.epoch + 1, Some(&self.shared.current()));
        Ok(Prepared {
            snapshot,
            ids,
            released_backends,
            build_time: started.elapsed(),
        })
    }

    /// Publishes a prepared snapshot, then waits (up to `wait`) until every running worker
    /// uses it; replaced snapshots are freed here, on the caller's thread, once no worker can
    /// hold them.
    pub fn publish(&mut self, prepared: Prepared, wait: Duration) -> Published {
        let Prepared {
            snapshot,
            ids,
            released_backends,
            build_time,
        } = prepared;
        assert_eq!(
            snapshot.epoch,
            self.epoch + 1,
            "prepared against the snapshot it replaces"
        );
        self.epoch = snapshot.epoch;
        self.ids = ids;
        let old = self.shared.swap(snapshot);
        self.retired.push((self.epoch, old));
        let live = self.shared.wait_seen(self.epoch, wait);
        let shared = &self.shared;
        self.retired
            .retain(|(replaced_by, _)| !shared.all_seen(*replaced_by));
        Published {
            epoch: self.epoch,
            released_backends,
            lagging: if live {
                Vec::new()
            } else {
                self.shared.lagging(self.epoch)
            },
            build_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EMBEDDED_DEFAULT, file, validate};

    fn model(text: &str) -> Model {
        validate(&file::parse(text, []).unwrap()).unwrap()
    }

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn ids_stay_across_changes_and_removed_backends_are_released() {
        let base = model(EMBEDDED_DEFAULT);
        let mut ids = Ids::default();
        let (c1, released) =
            snapshot_config(&base, &[], &[], &Down::default(), &[MAC], 1, &mut ids).unwrap();
        assert!(released.is_empty());
        let web = &c1.services[0];
        assert_eq!(
            (web.id, web.backends[0].id, web.backends[1].id),
            (ServiceId(0), BackendId(0), BackendId(1))
        );

        // weight change: same ids, new generation
        let reweighted = model(&EMBEDDED_DEFAULT.replacen("weight = 1", "weight = 5", 1));
        let (c2, released) =
            snapshot_config(&reweighted, &[], &[], &Down::default(), &[MAC], 1, &mut ids).unwrap();
        assert!(released.is_empty());
        assert_eq!(c2.services[0].backends[0].id, BackendId(0));
        assert_eq!(c2.services[0].generation, web.generation + 1);
        // no change: same generation
        let (c3, _) =
            snapshot_config(&reweighted, &[], &[], &Down::default(), &[MAC], 1, &mut ids).unwrap();
        assert_eq!(c3.services[0].generation, c2.services[0].generation);

        // web-2 removed: its id is released (its flows must go)
        let cut = EMBEDDED_DEFAULT.rfind("[[services.backends]]").unwrap();
        let (c4, released) = snapshot_config(
            &model(&EMBEDDED_DEFAULT[..cut]),
            &[],
            &[],
            &Down::default(),
            &[MAC],
            1,
            &mut ids,
        )
        .unwrap();
        assert_eq!(released, vec![BackendId(1)]);
        assert_eq!(c4.services[0].backends.len(), 1);

        // a backend whose address changes is a new backend
        let moved = model(&EMBEDDED_DEFAULT.replacen(
            "198.18.0.10\"\nport = 8080",
            "198.18.0.12\"\nport = 8080",
            1,
        ));
        let (c5, released) =
            snapshot_config(&moved, &[], &[], &Down::default(), &[MAC], 1, &mut ids).unwrap();
        assert_eq!(released, vec![BackendId(0)]);
        assert_ne!(c5.services[0].backends[0].id, BackendId(0));
    }

    #[test]
    fn unchanged_services_keep_their_scheduler_and_changed_ones_get_a_new_one() {
        let base = model(EMBEDDED_DEFAULT);
        let mut p = Publisher::new(&base, vec![MAC], 1).unwrap();
        let first = Arc::clone(&p.shared().current().services[0].scheduler);
        p.publish(
            p.prepare(&base, &[], &[], &Down::default()).unwrap(),
            Duration::from_millis(10),
        );
        assert!(
            Arc::ptr_eq(&first, &p.shared().current().services[0].scheduler),
            "the same inputs: the Maglev table is not built again"
        );
        let reweighted = model(&EMBEDDED_DEFAULT.replacen("weight = 1", "weight = 5", 1));
        p.publish(
            p.prepare(&reweighted, &[], &[], &Down::default()).unwrap(),
            Duration::from_millis(10),
        );
        assert!(!Arc::ptr_eq(
            &first,
            &p.shared().current().services[0].scheduler
        ));
        let rescheduled = model(&EMBEDDED_DEFAULT.replacen("\"maglev\"", "\"wrr\"", 1));
        let before = Arc::clone(&p.shared().current().services[0].scheduler);
        p.publish(
            p.prepare(&rescheduled, &[], &[], &Down::default()).unwrap(),
            Duration::from_millis(10),
        );
        assert!(!Arc::ptr_eq(
            &before,
            &p.shared().current().services[0].scheduler
        ));
    }

    #[test]
    fn a_refused_prepare_changes_no_id_and_the_next_change_that_fits_is_accepted() {
        let base = model(EMBEDDED_DEFAULT);
        let limits = Limits {
            services: 1,
            backends: 3,
        };
        let mut p = Publisher::with_limits(&base, vec![MAC], 1, limits).unwrap();
        let before = p.ids.clone();
        // A second service: over the service limit.
        let mut two = base.clone();
        let mut other = base.services[0].clone();
        other.id = "other".into();
        other.port = 81;
        two.services.push(other);
        assert_eq!(
            p.prepare(&two, &[], &[], &Down::default()).unwrap_err(),
            IdError::TooManyServices(1)
        );
        // web-2 replaced by two new backends: 2 + 1 quarantined > 3 ... the first fits (3 ids),
        // the second needs a fourth.
        let mut swapped = base.clone();
        let template = swapped.services[0].backends[1].clone();
        swapped.services[0].backends.truncate(1);
        for (i, last) in [(20u8, 12u8), (21, 13)] {
            let mut b = template.clone();
            b.id = format!("web-{i}");
            b.address = std::net::IpAddr::from([198, 18, 0, last]);
            swapped.services[0].backends.push(b);
        }
        assert_eq!(
            p.prepare(&swapped, &[], &[], &Down::default()).unwrap_err(),
            IdError::TooManyBackends(3)
        );
        assert_eq!(
            format!("{:?}", p.ids),
            format!("{before:?}"),
            "refused: the bookkeeping is as it was"
        );
        // One new backend in place of web-2 fits: ids 0 and 2, id 1 quarantined.
        swapped.services[0].backends.truncate(2);
        let done = p.publish(
            p.prepare(&swapped, &[], &[], &Down::default()).unwrap(),
            Duration::from_millis(10),
        );
        assert_eq!(done.released_backends, vec![BackendId(1)]);
        let ids: Vec<BackendId> = p.shared().current().services[0]
            .config
            .backends
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![BackendId(0), BackendId(2)]);
    }

    #[test]
    fn publish_swaps_and_the_epoch_grows() {
        let base = model(EMBEDDED_DEFAULT);
        let mut p = Publisher::new(&base, vec![MAC], 1).unwrap();
        assert_eq!(p.shared().current().epoch, 1);
        let done = p.publish(
            p.prepare(&base, &[], &[], &Down::default()).unwrap(),
            Duration::from_millis(10),
        );
        assert_eq!(done.epoch, 2);
        assert!(done.live(), "no worker runs, so nothing to wait for");
        assert_eq!(p.shared().current().epoch, 2);
        assert_eq!(p.shared().current().services[0].config.name, "web");
    }
}
