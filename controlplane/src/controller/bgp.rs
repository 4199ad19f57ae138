//! What the controller tells its BGP speaker: which VIPs to announce, drained or not, and
//! the withdrawal at shutdown (see `crate::bgp`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Controller, Reply};
use crate::api::ApiError;
use crate::bgp::Speaker;

impl Controller {
    /// Hands the controller the speaker l4lb started; it announces from the next tick on.
    pub fn set_speaker(&mut self, speaker: Speaker) {
        self.bgp = Some(speaker);
    }

    /// The VIPs to announce now: those with a service whose backends take new flows, unless
    /// the appliance is drained or stopping.
    pub fn wanted_vips(&self) -> BTreeSet<IpAddr> {
        if self.drained || self.stopping {
            return BTreeSet::new();
        }
        self.publisher
            .shared()
            .current()
            .services
            .iter()
            .filter(|s| s.sched_backends.iter().any(|b| b.weight > 0))
            .map(|s| s.config.vip)
            .collect()
    }

    /// Brings the speaker's announcements to what [`wanted_vips`](Self::wanted_vips) says
    /// (each tick; a failure is logged once and tried again at the next).
    pub(super) fn bgp_tick(&mut self) {
        let wanted = self.wanted_vips();
        let Some(speaker) = self.bgp.as_mut() else {
            return;
        };
        let was_dead = self.bgp_dead.is_some();
        self.bgp_dead = speaker.exited().map(str::to_string);
        if let (false, Some(e)) = (was_dead, &self.bgp_dead) {
            tracing::error!("{e}");
        }
        if self.bgp_dead.is_some() || *speaker.announced() == wanted {
            return;
        }
        let had_error = speaker.last_error.is_some();
        match speaker.announce(wanted) {
            Ok((added, removed)) => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("announced {}", list(&added)));
                }
                if !removed.is_empty() {
                    parts.push(format!("withdrawn {}", list(&removed)));
                }
                self.record(true, format!("bgp: {}", parts.join(", ")));
            }
            Err(e) if !had_error => warn!("{e} (tried again every tick)"),
            Err(_) => {}
        }
    }

    /// SIGTERM: every VIP is withdrawn now; the caller waits the grace period before it
    /// stops forwarding. Returns the grace period (zero without a speaker).
    pub fn begin_stop(&mut self) -> std::time::Duration {
        self.stopping = true;
        let Some(grace) = self.bgp.as_ref().map(|s| s.settings().grace_period) else {
            return std::time::Duration::ZERO;
        };
        self.bgp_tick();
        info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: the VIPs are withdrawn; forwarding goes on for the grace period"
        );
        grace
    }

    /// Stops the speaker (its sessions close), after forwarding stopped.
    pub fn stop_speaker(&mut self) {
        if let Some(mut s) = self.bgp.take() {
            s.stop();
        }
    }

    /// `GET /api/v1/bgp`.
    pub(super) fn get_bgp(&self) -> Reply {
        let Some(s) = &self.bgp else {
            return Reply::json(
                200,
                json!({ "enabled": false, "drained": self.drained, "announced": [], "sessions": [] }),
            );
        };
        let (sessions, speaker_error) = match s.sessions() {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Reply::json(
            200,
            json!({
                "enabled": true,
                "drained": self.drained,
                "stopping": self.stopping,
                "wanted": self.wanted_vips(),
                "announced": s.announced(),
                "sessions": sessions,
                "error": self.bgp_dead.clone().or(s.last_error.clone()).or(speaker_error),
            }),
        )
    }

    /// `PATCH /api/v1/bgp` `{"drained": bool}`: a drained appliance withdraws every VIP and
    /// keeps forwarding what still comes (the routers move the flows to the other instances).
    pub(super) fn patch_bgp(&mut self, body: &Value) -> Reply {
        let Value::Object(m) = body else {
            return ApiError::invalid("body: a JSON object is expected").into();
        };
        let mut drained = self.drained;
        for (k, v) in m {
            match (k.as_str(), v) {
                ("drained", Value::Bool(b)) => drained = *b,
                ("drained", _) => {
                    return ApiError::invalid("drained: a boolean is expected").into();
                }
                (other, _) => {
                    return ApiError::invalid(format!(
                        "{other}: unknown field (expected `drained`)"
                    ))
                    .into();
                }
            }
        }
        if self.bgp.is_none() {
            return ApiError::new(409, "bgp: no speaker runs ([bgp] local_as is not set)").into();
        }
        if drained != self.drained {
            if let Some(path) = &self.running.api.state_file
                && let Err(e) = crate::state::save_all(
                    path,
                    &self.running.services,
                    self.api_timeouts.as_ref(),
                    drained,
                )
            {
                let e = ApiError::new(
                    500,
                    format!(
                        "cannot save the state file {}: {e}; nothing changed",
                        path.display()
                    ),
                );
                self.record(false, format!("api: bgp drain: refused ({})", e.message));
                return e.into();
            }
            self.drained = drained;
            let line = format!(
                "api: bgp {}",
                if drained {
                    if self.running.api.state_file.is_some() {
                        "drained: every VIP is withdrawn (until undrained; saved in the state file)"
                    } else {
                        "drained: every VIP is withdrawn (until undrained or restarted: no state file keeps it)"
                    }
                } else {
                    "undrained: the VIPs are announced again"
                }
            );
            self.record(true, line);
            self.bgp_tick();
        }
        self.get_bgp()
    }
}

fn list(a: &[IpAddr]) -> String {
    a.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
