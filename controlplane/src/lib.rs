//! The control plane: the configuration model (one model for the file and the API), its
//! validation, and (in later issues) the REST API and the table publisher.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod neighbors;
pub mod publish;
pub mod state;
