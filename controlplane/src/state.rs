//! The state file (`[api] state_file`): the services as changed through the API, and the flow
//! timeouts once the API set them, so that they survive a restart. Written to a temporary file in the same directory, flushed to disk, then
//! renamed over the old one (and the directory flushed), so a crash at any moment leaves either
//! the old or the new file, never a torn one. The temporary is created exclusively under a
//! random name (a file or link planted in the directory is never followed or overwritten), and
//! what a crash left of one is removed at the next start; a state file that is a symbolic link
//! stays one (the file it points to is replaced).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::file::TimeoutsSection;
use crate::config::{
    ConfigError, FieldError, FlowTimeouts, Service, ServiceSpec, validate_service_list,
};

/// The file's format version; a file of another version is refused.
pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    services: Vec<ServiceSpec>,
    /// Set through the API (`PATCH /api/v1/timeouts`): they win over the file's `[timeouts]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeouts: Option<TimeoutsSection>,
    /// The operator drained the appliance (`PATCH /api/v1/bgp`): it stays drained at start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bgp_drained: bool,
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
    parse(&bytes, path).map(Some)
}

/// The timeouts saved in `path` (set through the API), if any.
pub fn load_timeouts(path: &Path) -> Result<Option<FlowTimeouts>, ConfigError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(path, "", format!("cannot read it: {e}"))),
    };
    let file = read(&bytes, path)?;
    let Some(t) = file.timeouts else {
        return Ok(None);
    };
    let t = crate::config::timeouts(&t, "timeouts").map_err(|errors| ConfigError {
        source: format!("state file {}", path.display()),
        errors,
    })?;
    Ok(Some(t))
}

/// Whether the operator left the appliance drained (false without a state file; a file that
/// cannot be read fails the start in [`load`] already).
pub fn load_drained(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|b| read(&b, path).ok())
        .is_some_and(|f| f.bgp_drained)
}

/// The services in the bytes of a state file (`path` names it in errors).
pub fn parse(bytes: &[u8], path: impl AsRef<Path>) -> Result<Vec<Service>, ConfigError> {
    let path = path.as_ref();
    let file = read(bytes, path)?;
    validate_service_list(&file.services, "services").map_err(|errors| ConfigError {
        source: format!("state file {}", path.display()),
        errors,
    })
}

fn read(bytes: &[u8], path: impl AsRef<Path>) -> Result<StateFile, ConfigError> {
    let path = path.as_ref();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let file: StateFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
    de.end().map_err(|e| {
        error(
            path,
            "",
            format!("{e} (a corrupt or foreign file: fix or remove it)"),
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
    Ok(file)
}

/// Saves `services` to `path` atomically (see the module comment).
pub fn save(path: &Path, services: &[Service]) -> std::io::Result<()> {
    save_all(path, services, None, false)
}

/// Saves `services`, `timeouts` when the API set them, and whether the appliance is drained,
/// to `path` atomically.
pub fn save_all(
    path: &Path,
    services: &[Service],
    timeouts: Option<&FlowTimeouts>,
    bgp_drained: bool,
) -> std::io::Result<()> {
    let file = StateFile {
        format: FORMAT,
        services: services.iter().map(ServiceSpec::from).collect(),
        timeouts: timeouts.map(TimeoutsSection::from),
        bgp_drained,
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let (dir, name) = place(path)?;
    // Created exclusively (O_CREAT | O_EXCL: a planted file or link at its name makes it fail,
    // never followed), under a random name, readable by its owner only.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temporary_prefix(&name))
        .suffix(TEMPORARY_SUFFIX)
        .tempfile_in(&dir)?;
    tmp.write_all(&text)?;
    tmp.as_file().sync_all()?;
    // A failed rename leaves the temporary to `tmp`'s drop, which removes it.
    tmp.persist(dir.join(&name)).map_err(|e| e.error)?;
    // The rename itself is durable once the directory is.
    File::open(&dir)?.sync_all()
}

/// Where the state file really is: its directory and name. A state file that is a symbolic
/// link stays one: what is written replaces the file it points to.
fn place(path: &Path) -> std::io::Result<(PathBuf, std::ffi::OsString)> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let name = target
        .file_name()
        .ok_or_else(|| std::io::Error::other("the state file path names no file"))?
        .to_os_string();
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

const TEMPORARY_SUFFIX: &str = ".tmp";

fn temporary_prefix(name: &std::ffi::OsStr) -> String {
    format!(".{}.", name.to_string_lossy())
}

/// Removes the temporaries a save interrupted by a crash left beside the state file (ours only:
/// `.NAME.*.tmp`, regular files); returns how many. Called at start, before anything is saved.
pub fn remove_stale_temporaries(path: &Path) -> std::io::Result<usize> {
    let (dir, name) = place(path)?;
    let prefix = temporary_prefix(&name);
    let mut removed = 0;
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let n = file_name.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(TEMPORARY_SUFFIX) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
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
    fn a_planted_link_is_never_followed_and_a_linked_state_file_stays_a_link() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // What an attacker plants: links at the names the old code used, to a victim file.
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        for pid in [std::process::id(), 1, 2] {
            symlink(&victim, dir.path().join(format!(".state.json.tmp.{pid}"))).unwrap();
        }
        save(&path, &services()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "state.json is a file of ours");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "readable by its owner only"
        );
        // A state file the operator made a link: written through, still a link.
        let real = dir.path().join("real.json");
        let linked = dir.path().join("linked.json");
        save(&real, &services()[..0]).unwrap();
        symlink(&real, &linked).unwrap();
        save(&linked, &services()).unwrap();
        assert!(
            fs::symlink_metadata(&linked)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(load(&real).unwrap(), Some(services()));
    }

    #[test]
    fn stale_temporaries_of_a_crashed_save_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &services()).unwrap();
        fs::write(dir.path().join(".state.json.Ab3xZ9.tmp"), "half").unwrap();
        fs::write(dir.path().join(".other.json.Ab3xZ9.tmp"), "not ours").unwrap();
        fs::create_dir(dir.path().join(".state.json.dir.tmp")).unwrap();
        assert_eq!(remove_stale_temporaries(&path).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".other.json.Ab3xZ9.tmp",
                ".state.json.dir.tmp",
                "state.json"
            ]
        );
        assert_eq!(load(&path).unwrap(), Some(services()));
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
            e.ends_with("services[0].port: 0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535"),
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
