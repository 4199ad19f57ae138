//! What the control side asks of a worker, on a channel the worker polls between bursts (never
//! per packet).

use crate::flow::{Flow, FlowKey};
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
        service: ServiceId,
        into: Vec<Flow>,
        reply: crossbeam_channel::Sender<FlowDump>,
    },
    /// Where a flow goes on this worker ([`crate::pipeline::lookup`]); answered on `reply`.
    Lookup {
        key: FlowKey,
        reply: crossbeam_channel::Sender<(u16, Lookup)>,
    },
}

/// A worker's answer to [`Command::DumpFlows`].
#[derive(Debug)]
pub struct FlowDump {
    pub worker: u16,
    /// The worker's clock when it copied them (the same clock as the flows' times).
    pub now: u32,
    pub flows: Vec<Flow>,
}
