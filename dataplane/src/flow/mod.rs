//! Flows: their key, and the per-worker table of established choices.

mod key;

pub use key::{FlowKey, addr_bytes, addr_from_bytes, address_hash};
