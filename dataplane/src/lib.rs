//! Everything per packet. The logic works on byte slices and plain structs (no DPDK types), so
//! it unit-tests, fuzzes and benchmarks without EAL; `lcore` glues it to dpdk-rs bursts.
#![deny(unsafe_code)]

pub mod addr;
pub mod checksum;
pub mod counters;
pub mod flow;
pub mod hash;
pub mod lcore;
pub mod sched;
pub mod service;
pub mod wire;
