//! From the validated model to the snapshot the workers read: stable numeric ids for services
//! and backends (kept across changes, so flows and counters that outlive a snapshot still
//! mean the same thing), then the publish itself (DESIGN.md §2).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::addr::MacAddr;
use dataplane::service::{BackendId, ServiceId};
use dataplane::shared::SharedSnapshot;
use dataplane::snapshot::{
    BackendConfig, InterfaceConfig, ServiceConfig, Snapshot, SnapshotConfig,
};
use parking_lot::Mutex;

use crate::config::{Model, Service};

/// Ids handed out so far. A service keeps its id while its id string exists; a backend keeps
/// its id while (service id, backend id) exists and its address and port stay the same — a
/// backend that moves is a new backend to the flow table.
#[derive(Debug, Default)]
pub struct Ids {
    services: HashMap<String, ServiceId>,
    backends: HashMap<(String, String), (BackendId, std::net::IpAddr, u16)>,
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

/// What of a backend the schedulers depend on: id, weight, enabled.
type BackendShape = (String, u32, bool);

/// Bounds the workers size their per-id state for.
pub const MAX_SERVICES: u32 = 4096;
pub const MAX_BACKENDS: u32 = 65536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    TooManyServices,
    TooManyBackends,
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::TooManyServices => write!(f, "services: more than {MAX_SERVICES}"),
            IdError::TooManyBackends => {
                write!(f, "backends: more than {MAX_BACKENDS} in all services")
            }
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
                    None if self.next_service < MAX_SERVICES => {
                        self.next_service += 1;
                        ServiceId(self.next_service - 1)
                    }
                    None => return Err(IdError::TooManyServices),
                };
                self.services.insert(s.id.clone(), id);
            }
            for b in &s.backends {
                let k = (s.id.clone(), b.id.clone());
                if !self.backends.contains_key(&k) {
                    let id = match self.free_backends.pop() {
                        Some(id) => id,
                        None if self.next_backend < MAX_BACKENDS => {
                            self.next_backend += 1;
                            BackendId(self.next_backend - 1)
                        }
                        None => return Err(IdError::TooManyBackends),
                    };
                    self.backends.insert(k, (id, b.address, b.port));
                }
            }
        }
        Ok(released)
    }

    fn generation(&mut self, id: ServiceId, s: &Service) -> u64 {
        let shape: Vec<BackendShape> = s
            .backends
            .iter()
            .map(|b| (b.id.clone(), b.weight, b.enabled))
            .collect();
        let e = self.generations.entry(id).or_insert((0, Vec::new()));
        if e.0 == 0 || e.1 != shape {
            e.0 += 1;
            e.1 = shape;
        }
        e.0
    }
}

/// Builds the snapshot input for `model` with stable ids; `macs` are the ports' MAC addresses
/// in the order of `model.interfaces`.
pub fn snapshot_config(
    model: &Model,
    macs: &[MacAddr],
    workers: u16,
    ids: &mut Ids,
) -> Result<(SnapshotConfig, Vec<BackendId>), IdError> {
    let released = ids.assign(&model.services)?;
    let services = model
        .services
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
                backends: s
                    .backends
                    .iter()
                    .map(|b| BackendConfig {
                        id: ids.backends[&(s.id.clone(), b.id.clone())].0,
                        name: b.id.clone(),
                        address: b.address,
                        port: b.port,
                        weight: b.weight,
                        enabled: b.enabled,
                    })
                    .collect(),
                generation: ids.generation(id, s),
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
                })
                .collect(),
            routes: model.routes.iter().map(|r| (r.prefix, r.via)).collect(),
            neighbors: model.neighbors.iter().map(|n| (n.address, n.mac)).collect(),
            services,
            timeouts: model.timeouts,
            workers,
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
    state: Mutex<PublisherState>,
}

#[derive(Debug)]
struct PublisherState {
    ids: Ids,
    epoch: u64,
    /// Replaced snapshots a worker may still use, with the epoch that replaced each: freed
    /// once every running worker has seen that epoch.
    retired: Vec<(u64, Arc<Snapshot>)>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub epoch: u64,
    /// Backend ids that no longer exist: the workers must flush their flows.
    pub released_backends: Vec<BackendId>,
    /// Every running worker uses the new snapshot (false: it timed out waiting).
    pub live: bool,
    pub build_time: Duration,
}

impl Publisher {
    /// The first snapshot, from `model`.
    pub fn new(model: &Model, macs: Vec<MacAddr>, workers: u16) -> Result<Publisher, IdError> {
        let mut ids = Ids::default();
        let (config, _) = snapshot_config(model, &macs, workers, &mut ids)?;
        let shared = SharedSnapshot::new(Snapshot::build(config, 1), usize::from(workers));
        Ok(Publisher {
            shared,
            macs,
            workers,
            state: Mutex::new(PublisherState {
                ids,
                epoch: 1,
                retired: Vec::new(),
            }),
        })
    }

    pub fn shared(&self) -> &Arc<SharedSnapshot> {
        &self.shared
    }

    /// Builds and publishes a snapshot of `model`, then waits (up to `wait`) until every
    /// running worker uses it; the replaced snapshot is freed here, on the caller's thread.
    pub fn publish(&self, model: &Model, wait: Duration) -> Result<Published, IdError> {
        let mut st = self.state.lock();
        let started = Instant::now();
        let (config, released_backends) =
            snapshot_config(model, &self.macs, self.workers, &mut st.ids)?;
        st.epoch += 1;
        let snapshot = Snapshot::build_after(config, st.epoch, Some(&self.shared.current()));
        let build_time = started.elapsed();
        let epoch = st.epoch;
        let old = self.shared.swap(snapshot);
        st.retired.push((epoch, old));
        let live = self.shared.wait_seen(epoch, wait);
        let shared = &self.shared;
        st.retired
            .retain(|(replaced_by, _)| !shared.all_seen(*replaced_by));
        Ok(Published {
            epoch,
            released_backends,
            live,
            build_time,
        })
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
        let (c1, released) = snapshot_config(&base, &[MAC], 1, &mut ids).unwrap();
        assert!(released.is_empty());
        let web = &c1.services[0];
        assert_eq!(
            (web.id, web.backends[0].id, web.backends[1].id),
            (ServiceId(0), BackendId(0), BackendId(1))
        );

        // weight change: same ids, new generation
        let reweighted = model(&EMBEDDED_DEFAULT.replacen("weight = 1", "weight = 5", 1));
        let (c2, released) = snapshot_config(&reweighted, &[MAC], 1, &mut ids).unwrap();
        assert!(released.is_empty());
        assert_eq!(c2.services[0].backends[0].id, BackendId(0));
        assert_eq!(c2.services[0].generation, web.generation + 1);
        // no change: same generation
        let (c3, _) = snapshot_config(&reweighted, &[MAC], 1, &mut ids).unwrap();
        assert_eq!(c3.services[0].generation, c2.services[0].generation);

        // web-2 removed: its id is released (its flows must go)
        let cut = EMBEDDED_DEFAULT.rfind("[[services.backends]]").unwrap();
        let (c4, released) =
            snapshot_config(&model(&EMBEDDED_DEFAULT[..cut]), &[MAC], 1, &mut ids).unwrap();
        assert_eq!(released, vec![BackendId(1)]);
        assert_eq!(c4.services[0].backends.len(), 1);

        // a backend whose address changes is a new backend
        let moved = model(&EMBEDDED_DEFAULT.replacen(
            "198.18.0.10\"\nport = 8080",
            "198.18.0.12\"\nport = 8080",
            1,
        ));
        let (c5, released) = snapshot_config(&moved, &[MAC], 1, &mut ids).unwrap();
        assert_eq!(released, vec![BackendId(0)]);
        assert_ne!(c5.services[0].backends[0].id, BackendId(0));
    }

    #[test]
    fn unchanged_services_keep_their_scheduler_and_changed_ones_get_a_new_one() {
        let base = model(EMBEDDED_DEFAULT);
        let p = Publisher::new(&base, vec![MAC], 1).unwrap();
        let first = Arc::clone(&p.shared().current().services[0].scheduler);
        p.publish(&base, Duration::from_millis(10)).unwrap();
        assert!(
            Arc::ptr_eq(&first, &p.shared().current().services[0].scheduler),
            "the same inputs: the Maglev table is not built again"
        );
        let reweighted = model(&EMBEDDED_DEFAULT.replacen("weight = 1", "weight = 5", 1));
        p.publish(&reweighted, Duration::from_millis(10)).unwrap();
        assert!(!Arc::ptr_eq(
            &first,
            &p.shared().current().services[0].scheduler
        ));
        let rescheduled = model(&EMBEDDED_DEFAULT.replacen("\"maglev\"", "\"wrr\"", 1));
        let before = Arc::clone(&p.shared().current().services[0].scheduler);
        p.publish(&rescheduled, Duration::from_millis(10)).unwrap();
        assert!(!Arc::ptr_eq(
            &before,
            &p.shared().current().services[0].scheduler
        ));
    }

    #[test]
    fn publish_swaps_and_the_epoch_grows() {
        let base = model(EMBEDDED_DEFAULT);
        let p = Publisher::new(&base, vec![MAC], 1).unwrap();
        assert_eq!(p.shared().current().epoch, 1);
        let done = p.publish(&base, Duration::from_millis(10)).unwrap();
        assert_eq!(done.epoch, 2);
        assert!(done.live, "no worker runs, so nothing to wait for");
        assert_eq!(p.shared().current().epoch, 2);
        assert_eq!(p.shared().current().services[0].config.name, "web");
    }
}
