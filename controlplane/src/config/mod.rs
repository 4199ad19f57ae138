//! The configuration file (TOML, `conf/l4lb.toml` documents every key), environment overrides, and validation into a
//! typed [`Model`]. Errors name the file and the field: `services[1].vip: "10.0.0.300" is not
//! an IP address`.

pub(crate) mod file;
mod model;
mod validate;

pub use file::{
    BackendSpec, ConfigFile, DpdkSection, HealthCheckSpec, ServiceSpec, SorryBackendSpec,
};
pub use model::*;
pub use validate::{
    MAX_BACKENDS, MAX_SERVICES, timeouts, validate, validate_service, validate_service_list,
};

use std::fmt;
use std::path::Path;

/// The embedded default configuration (conf/l4lb.toml), used when no --config is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../conf/l4lb.toml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded conf/l4lb.toml>";

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `services[0].backends[1].address`; empty when the file itself is bad.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Everything wrong with one configuration source, each on its own line, prefixed by the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration at `path` (or the embedded default for `None`), with
/// `L4LB_<SECTION>__<KEY>` environment variables taken from `env` overriding the file.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Model, ConfigError> {
    let (name, text) = match path {
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source: name.clone(),
                errors: vec![FieldError {
                    field: String::new(),
                    message: format!("cannot read the file: {e}"),
                }],
            })?;
            (name, text)
        }
        None => (EMBEDDED_NAME.to_string(), EMBEDDED_DEFAULT.to_string()),
    };
    load_str(&name, &text, env)
}

/// Parses and validates configuration `text`; `name` is how messages call it.
pub fn load_str(
    name: &str,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Model, ConfigError> {
    let file = file::parse(text, env).map_err(|errors| ConfigError {
        source: name.to_string(),
        errors: vec![errors],
    })?;
    validate(&file).map_err(|errors| ConfigError {
        source: name.to_string(),
        errors,
    })
}
