//! The control plane, plain Rust without DPDK: the configuration model (one model for the
//! file, the API and the state file) and its validation, the one writer of the running
//! configuration ([`controller::Controller`]) with its snapshot publisher, the neighbour
//! table, the state file, and the REST API in front of it all.
#![deny(unsafe_code)]

pub mod api;
pub mod bgp;
pub mod config;
pub mod controller;
pub mod health;
pub mod neighbors;
pub mod publish;
pub mod state;
pub mod sync;
