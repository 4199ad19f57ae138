//! Everything per packet. The logic works on byte slices and plain structs (no DPDK types), so
//! it unit-tests, fuzzes and benchmarks without EAL or libdpdk; the `worker` crate glues it to
//! dpdk-rs bursts.
#![deny(unsafe_code)]

pub mod addr;
pub mod checksum;
pub mod command;
pub mod counters;
pub mod drop_reason;
pub mod flow;
pub mod forward;
pub mod hash;
pub mod neighbor;
pub mod packet;
pub mod pipeline;
pub mod prefetch;
pub mod respond;
pub mod sched;
pub mod service;
pub mod shared;
pub mod snapshot;
pub mod sync;
pub mod wire;
