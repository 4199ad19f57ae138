//! What the control side asks of a worker, on a channel the worker polls between bursts (never
//! per packet).

use crate::flow::{Flow, FlowKey, FlowState};
use crate::pipeline::Lookup;
use crate::service::{BackendId, ServiceId};

/// Control messages a worker polls between bursts (never per packet).
#[derive(Debug)]
pub enum Command {
    /// Remove every flow of this backend (it was deleted or moved).
    FlushBackend(BackendId),
    /// Copy up to `into.capacity()` flows of `service` into `into` (allocated by the control
    /// side, so the worker does not allocate) and send it back on `reply`.
    DumpFlows {
        filter: FlowFilter,
        into: Vec<Flow>,
        reply: crossbeam_channel::Sender<FlowDump>,
    },
    /// Remove the flow of `key` if this worker has it; the answer says whether it had.
    RemoveFlow {
        key: FlowKey,
        reply: crossbeam_channel::Sender<(u16, bool)>,
    },
    /// Where a flow goes on this worker ([`crate::pipeline::lookup`]); answered on `reply`.
    Lookup {
        key: FlowKey,
        reply: crossbeam_channel::Sender<(u16, Lookup)>,
    },
}

/// Which flows a dump copies: each given part must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub service: Option<ServiceId>,
    /// The client's address (16-byte form), and its port when given.
    pub client: Option<([u8; 16], Option<u16>)>,
    pub backend: Option<BackendId>,
    pub state: Option<FlowState>,
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        self.service.is_none_or(|s| f.service == s)
            && self
                .client
                .is_none_or(|(a, p)| f.key.client == a && p.is_none_or(|p| f.key.client_port == p))
            && self.backend.is_none_or(|b| f.backend == b)
            && self.state.is_none_or(|s| f.state == s)
    }
}

/// A worker's answer to [`Command::DumpFlows`].
#[derive(Debug)]
pub struct FlowDump {
    pub worker: u16,
    /// The worker's clock when it copied them (the same clock as the flows' times).
    pub now: u32,
    pub flows: Vec<Flow>,
}
