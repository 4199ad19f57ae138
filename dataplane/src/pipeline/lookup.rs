//! Where a flow goes, asked from the control side between bursts (Katran's simulator, l4lb's
//! `GET .../lookup`): its flow if it has one, else the backend its persistence template keeps,
//! else the scheduler's pick now, made on a copy of the worker's cursor so that nothing moves.

use super::WorkerState;
use crate::flow::persist::{TemplateKey, masked};
use crate::flow::{FlowKey, FlowState};
use crate::sched::PickInput;
use crate::service::BackendId;
use crate::snapshot::{ServiceKey, Snapshot};

/// What a worker answers about a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No service takes the flow's protocol, VIP and port.
    NoService,
    /// The worker has the flow: its backend and state.
    Flow {
        backend: BackendId,
        state: FlowState,
    },
    /// The service's allow or deny list refuses the client.
    Denied,
    /// A new flow would get the backend of the client's live persistence template.
    Template { backend: BackendId },
    /// A new flow would get the scheduler's pick (None: no backend takes new flows).
    Scheduler { backend: Option<BackendId> },
}

/// What worker `w` would do with the first packet of `key` at `now` (`syn`: a TCP SYN; any other
/// segment starts a flow the same way).
pub fn lookup(snap: &Snapshot, w: &WorkerState, key: &FlowKey, now: u32) -> Lookup {
    let Some(svc) = snap.service(&ServiceKey {
        protocol: key.protocol,
        vip: key.vip,
        port: key.vip_port,
    }) else {
        return Lookup::NoService;
    };
    if let Some(slot) = w.flows.find(key)
        && !w.flows.expired_at(slot, now)
    {
        let f = w.flows.get(slot);
        if f.service == svc.config.id {
            return Lookup::Flow {
                backend: f.backend,
                state: f.state,
            };
        }
    }
    if !svc.admits(&key.client) {
        return Lookup::Denied;
    }
    if let Some(m) = svc.persist_mask() {
        let k = TemplateKey {
            service: svc.config.id,
            client: masked(&key.client, m),
        };
        if let Some(t) = w.flows.templates.peek(&k, now)
            && svc.template_backend(t.backend).is_some()
        {
            return Lookup::Template { backend: t.backend };
        }
    }
    let mut cursor = w
        .cursors
        .get(svc.config.id.0 as usize)
        .copied()
        .unwrap_or_default();
    let pick = svc.scheduler.pick(
        &PickInput {
            backends: &svc.sched_backends,
            flow: key,
            conns: &w.flows,
        },
        &mut cursor,
    );
    Lookup::Scheduler {
        backend: pick.map(|i| svc.config.backends[i].id),
    }
}

/// The worker that keeps the flows of `key`, if its service says (NAT, persistence); None when
/// the worker that receives the packet keeps it.
pub fn owner_of(snap: &Snapshot, key: &FlowKey) -> Option<u16> {
    let svc = snap.service(&ServiceKey {
        protocol: key.protocol,
        vip: key.vip,
        port: key.vip_port,
    })?;
    super::flow_owner(svc, snap, &key.client, key.client_port)
}
