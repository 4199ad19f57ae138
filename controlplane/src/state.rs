//! The state file (`[api] state_file`): the services as changed through the API, so that they
//! survive a restart. Written to a temporary file in the same directory, flushed to disk, then
//! renamed over the old one (and the directory flushed), so a crash at any moment leaves either
//! the old or the new file, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, FieldError, Service, ServiceSpec, validate_service_list};

/// The file's format version; a file of another version is refused.
pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    services: Vec<ServiceSpec>,
}

fn error(path: &Path, field: &str, message: String) -> ConfigError {
    ConfigError {
        source: format!("state file {}", path.display()),
        errors: vec![FieldError {
            field: field.to_string(),
            message,
        }],
    }
}

/// The services saved in `path`; None if there is no such file yet. A file that cannot be read,
/// parsed or validated is an error naming it (never silently ignored: that would bring back an
/// old configuration).
pub fn load(path: &Path) -> Result<Option<Vec<Service>>, ConfigError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(path, "", format!("cannot read it: {e}"))),
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let file: StateFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        error(
            path,
            if at == "." { "" } else { &at },
            format!(
                "{} (a corrupt or foreign file: fix or remove it)",
                e.inner()
            ),
        )
    })?;
    if file.format != FORMAT {
        return Err(error(
            path,
            "format",
            format!(
                "{} is not the format this l4lb writes ({FORMAT})",
                file.format
            ),
        ));
    }
    validate_service_list(&file.services, "services")
        .map(Some)
        .map_err(|errors| ConfigError {
            source: format!("state file {}", path.display()),
            errors,
        })
}

/// Saves `services` to `path` atomically (see the module comment).
pub fn save(path: &Path, services: &[Service]) -> std::io::Result<()> {
    let file = StateFile {
        format: FORMAT,
        services: services.iter().map(ServiceSpec::from).collect(),
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the state file path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is.
        File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EMBEDDED_DEFAULT, file, validate};

    fn services() -> Vec<Service> {
        validate(&file::parse(EMBEDDED_DEFAULT, []).unwrap())
            .unwrap()
            .services
    }

    #[test]
    fn saved_services_load_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), None, "no file yet");
        save(&path, &services()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(services()));
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_broken_file_is_an_error_naming_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"format\":1,\"services\":[{\"id\":\"a\"").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("state file {}: ", path.display())),
            "{e}"
        );
        assert!(e.contains("EOF while parsing"), "{e}");

        fs::write(
            &path,
            r#"{"format":1,"services":[{"id":"a","vip":"198.18.0.1","port":0}]}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("services[0].port: 0 is not a port (1 to 65535)"),
            "{e}"
        );

        fs::write(&path, r#"{"format":2,"services":[]}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("format: 2 is not the format this l4lb writes (1)"),
            "{e}"
        );
    }
}
