//! Schedulers pick a backend for a new flow. One trait; each kind is built on the control side
//! from a service's backends (precomputing what it can, such as the Maglev table) and used by
//! every worker with that worker's own [`Cursor`] (round-robin positions) and connection counts.
//!
//! Weights are effective weights: 0 for a drained (weight 0) or disabled backend, which then
//! gets no new flow from any scheduler. Neither does an overloaded one (at its upper
//! connection threshold, [`ConnBoard`]): every scheduler skips it, as IPVS's do.

mod failover;
mod hashing;
mod least;
mod maglev;
mod overload;
mod rr;
mod twos;
mod wrr;

use std::fmt::Debug;

pub use failover::{WeightedFailover, WeightedOverflow};
pub use hashing::{DestinationHash, Hashed, SourceHash, WeightedHash};
pub use least::{LeastConnection, NeverQueue, ShortestExpectedDelay, WeightedLeastConnection};
pub use maglev::{AHEAD_BYTES, MaglevTable, prebuild_loop, prebuild_without_each};
pub use overload::ConnBoard;
pub use rr::RoundRobin;
pub use twos::TwoChoices;
pub use wrr::WeightedRoundRobin;

use crate::flow::FlowKey;
use crate::service::{BackendId, SchedFlags, SchedulerKind};

/// What a scheduler knows of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedBackend {
    pub id: BackendId,
    /// 0: no new flows (drained or disabled).
    pub weight: u32,
}

/// A backend's connections as IPVS counts them: active = TCP established, inactive = all
/// other states (SYN, FIN, closing, and every UDP flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conns {
    pub active: u32,
    pub inactive: u32,
}

/// Where the least-connection schedulers read the counts (the worker's flow table), and every
/// scheduler the overload flags.
pub trait ConnSource {
    fn conns(&self, backend: BackendId) -> Conns;

    /// At its upper connection threshold: no new flows.
    fn overloaded(&self, _backend: BackendId) -> bool {
        false
    }
}

/// One worker's mutable scheduling state for one service. `generation` tells it when the
/// service's backends changed, so it can restart the way IPVS does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub generation: u64,
    /// rr: the last backend picked. wrr: the current position (IPVS's mark->cl).
    pub position: Option<usize>,
    /// wrr: the current weight (IPVS's mark->cw).
    pub current_weight: i64,
    /// twos: the state of the worker's random numbers (0 until the first pick seeds it).
    pub random: u64,
}

pub struct PickInput<'a> {
    pub backends: &'a [SchedBackend],
    pub flow: &'a FlowKey,
    pub conns: &'a dyn ConnSource,
}

impl PickInput<'_> {
    /// Backend `i` may take a new flow: a weight above 0 and not overloaded.
    #[inline]
    pub fn available(&self, i: usize) -> bool {
        let b = &self.backends[i];
        b.weight > 0 && !self.conns.overloaded(b.id)
    }

    /// Some backend may take a new flow.
    pub fn any_available(&self) -> bool {
        (0..self.backends.len()).any(|i| self.available(i))
    }
}

pub trait Scheduler: Send + Sync + Debug {
    /// The index (into `input.backends`) of the backend for a new flow, or None when no
    /// backend may take one.
    fn pick(&self, input: &PickInput<'_>, cursor: &mut Cursor) -> Option<usize>;

    /// True when `pick` gives a flow the same backend every time while the backends and
    /// weights stay (it hashes the flow, its client or its VIP, and reads no state).
    fn is_per_flow(&self) -> bool {
        false
    }
}

/// Builds the scheduler of `kind` for `backends` (id string and effective weight, in the
/// service's order), with the sh/mh `flags`. `generation` must change whenever the backends or
/// weights change.
pub fn build(
    kind: SchedulerKind,
    flags: SchedFlags,
    backends: &[(&str, u32)],
    maglev_size: u32,
    generation: u64,
) -> Box<dyn Scheduler> {
    let weights: Vec<u32> = backends.iter().map(|b| b.1).collect();
    let mh = |hashed| {
        Box::new(
            MaglevTable::build_recent(backends, maglev_size).hashing(Hashed {
                fallback: flags.mh_fallback,
                ..hashed
            }),
        )
    };
    match kind {
        SchedulerKind::RoundRobin => Box::new(RoundRobin { generation }),
        SchedulerKind::WeightedRoundRobin => {
            Box::new(WeightedRoundRobin::new(&weights, generation))
        }
        SchedulerKind::LeastConnection => Box::new(LeastConnection),
        SchedulerKind::WeightedLeastConnection => Box::new(WeightedLeastConnection),
        SchedulerKind::ShortestExpectedDelay => Box::new(ShortestExpectedDelay),
        SchedulerKind::NeverQueue => Box::new(NeverQueue),
        SchedulerKind::SourceHash => Box::new(SourceHash(
            hashing::HashTable::new(&weights),
            Hashed {
                what: if flags.sh_port {
                    hashing::HashOf::ClientAndPort
                } else {
                    hashing::HashOf::Client
                },
                fallback: flags.sh_fallback,
            },
        )),
        SchedulerKind::DestinationHash => {
            Box::new(DestinationHash(hashing::HashTable::new(&weights)))
        }
        // Katran's Maglev: the whole tuple (for one service, the client's address and port).
        SchedulerKind::Maglev => mh(Hashed {
            what: hashing::HashOf::Tuple,
            fallback: false,
        }),
        // IPVS's mh: the client's address, and its port with mh-port.
        SchedulerKind::MaglevIpvs => mh(Hashed {
            what: if flags.mh_port {
                hashing::HashOf::ClientAndPort
            } else {
                hashing::HashOf::Client
            },
            fallback: false,
        }),
        SchedulerKind::WeightedFailover => Box::new(WeightedFailover),
        SchedulerKind::WeightedOverflow => Box::new(WeightedOverflow),
        SchedulerKind::TwoChoices => Box::new(TwoChoices),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::collections::HashMap;

    /// Connection counts, and the backends that are overloaded.
    #[derive(Default)]
    pub struct Counts(pub HashMap<BackendId, Conns>, pub Vec<BackendId>);

    impl ConnSource for Counts {
        fn conns(&self, b: BackendId) -> Conns {
            self.0.get(&b).copied().unwrap_or_default()
        }

        fn overloaded(&self, b: BackendId) -> bool {
            self.1.contains(&b)
        }
    }

    /// Counts (active, inactive) per backend index, and the indexes that are overloaded.
    pub fn counts(conns: &[(u32, u32)], overloaded: &[u32]) -> Counts {
        Counts(
            conns
                .iter()
                .enumerate()
                .map(|(i, &(active, inactive))| (BackendId(i as u32), Conns { active, inactive }))
                .collect(),
            overloaded.iter().map(|&i| BackendId(i)).collect(),
        )
    }

    pub fn backends(weights: &[u32]) -> Vec<SchedBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| SchedBackend {
                id: BackendId(i as u32),
                weight: *w,
            })
            .collect()
    }

    pub fn flow(i: u32) -> FlowKey {
        FlowKey::new(
            6,
            std::net::IpAddr::V4((0xc612_0000 + i).into()),
            1024 + (i % 50000) as u16,
            "198.18.0.100".parse().unwrap(),
            80,
        )
    }

    /// Picks `n` times with the same cursor and no connections, for sequence tests.
    pub fn sequence(s: &dyn Scheduler, weights: &[u32], n: usize) -> Vec<Option<usize>> {
        let b = backends(weights);
        let counts = Counts::default();
        let mut cursor = Cursor::default();
        let f = flow(0);
        (0..n)
            .map(|_| {
                s.pick(
                    &PickInput {
                        backends: &b,
                        flow: &f,
                        conns: &counts,
                    },
                    &mut cursor,
                )
            })
            .collect()
    }
}
