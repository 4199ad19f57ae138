//! Flows: their key, and the per-worker table of established choices.

mod index;
mod key;
pub mod persist;
mod table;

pub(crate) use index::folded_multiply;
pub use key::{FlowKey, addr_bytes, addr_from_bytes, address_hash};
pub use table::{
    Endpoint, Flow, FlowState, FlowTable, FlowTableStats, FlowTimeouts, InsertError, Installed,
    NewFlow, NoFlow, ReplyKey,
};
