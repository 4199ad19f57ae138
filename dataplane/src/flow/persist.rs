//! Persistence templates (IPVS's connection templates, ipvsadm `-p`): while a client (or its
//! network, under `persistence_netmask`) has a live template for a service, its new flows go to
//! the template's backend whatever the scheduler.
//!
//! As in IPVS, a template counts the flows it controls. It lives while it controls any, and
//! `timeout` seconds after the later of its last use (a new flow given its backend) and the end
//! of its last flow; a lookup of an expired one removes it. One table per worker, of a fixed
//! size: nothing allocates once it is made (the map is reserved for twice its cap, so its
//! rehashes happen in place). The map's hash is the standard library's keyed SipHash: clients
//! choose these keys.

use std::collections::HashMap;

use crate::service::{BackendId, ServiceId};

/// A template's key: the service and the client's masked address (16-byte form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub service: ServiceId,
    pub client: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub backend: BackendId,
    /// The clock (seconds) of its last use, or of the end of its last flow.
    pub last: u32,
    /// Flows it controls.
    pub controlled: u32,
    pub timeout: u32,
}

impl Template {
    fn expired(&self, now: u32) -> bool {
        self.controlled == 0 && now.wrapping_sub(self.last) >= self.timeout
    }
}

/// The address `client` (16-byte form, IPv4 mapped) with all but its first `len` bits (of the
/// 16 bytes) cleared.
#[inline]
pub fn masked(client: &[u8; 16], len: u8) -> [u8; 16] {
    let a = u128::from_be_bytes(*client);
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    (a & m).to_be_bytes()
}

#[derive(Debug)]
pub struct Templates {
    map: HashMap<TemplateKey, Template>,
    cap: usize,
    /// Templates not made because the table was full.
    pub full: u64,
}

impl Templates {
    pub fn try_new(cap: usize) -> Result<Self, std::collections::TryReserveError> {
        let mut map = HashMap::new();
        map.try_reserve(cap.max(1) * 2)?;
        Ok(Templates {
            map,
            cap: cap.max(1),
            full: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live template for `key`; an expired one is removed.
    #[inline]
    pub fn lookup(&mut self, key: &TemplateKey, now: u32) -> Option<Template> {
        let t = *self.map.get(key)?;
        if t.expired(now) {
            self.map.remove(key);
            return None;
        }
        Some(t)
    }

    /// The live template for `key`, changing nothing.
    pub fn peek(&self, key: &TemplateKey, now: u32) -> Option<Template> {
        self.map.get(key).filter(|t| !t.expired(now)).copied()
    }

    /// A new flow of `key` given `backend`: the template is made (or pointed at `backend`) and
    /// controls one more flow. False when the table is full (the flow is then not bound).
    #[inline]
    pub fn bind(&mut self, key: TemplateKey, backend: BackendId, now: u32, timeout: u32) -> bool {
        if let Some(t) = self.map.get_mut(&key) {
            t.backend = backend;
            t.last = now;
            t.timeout = timeout;
            t.controlled += 1;
            return true;
        }
        if self.map.len() >= self.cap {
            self.full += 1;
            return false;
        }
        self.map.insert(
            key,
            Template {
                backend,
                last: now,
                controlled: 1,
                timeout,
            },
        );
        true
    }

    /// A peer's template (synchronisation): made for `backend` controlling no flow, so it
    /// lives `timeout` seconds from `now`; an existing one that controls none of our flows is
    /// pointed at `backend` and starts again, one that does is ours and stays.
    pub fn adopt(&mut self, key: TemplateKey, backend: BackendId, now: u32, timeout: u32) {
        let t = Template {
            backend,
            last: now,
            controlled: 0,
            timeout,
        };
        let full = self.map.len() >= self.cap;
        match self.map.get_mut(&key) {
            Some(old) if old.controlled > 0 => {}
            Some(old) => *old = t,
            None if full => self.full += 1,
            None => {
                self.map.insert(key, t);
            }
        }
    }

    /// A flow `key` controlled has ended at `now`.
    #[inline]
    pub fn release(&mut self, key: &TemplateKey, now: u32) {
        if let Some(t) = self.map.get_mut(key) {
            t.controlled = t.controlled.saturating_sub(1);
            if t.controlled == 0 {
                t.last = t.last.max(now);
            }
        }
    }

    /// Removes the expired templates (between bursts: it reads the whole table).
    pub fn sweep(&mut self, now: u32) -> usize {
        let before = self.map.len();
        self.map.retain(|_, t| !t.expired(now));
        before - self.map.len()
    }

    /// Removes every template of `service` (its persistence settings changed).
    pub fn forget_service(&mut self, service: ServiceId) {
        self.map.retain(|k, _| k.service != service);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TemplateKey, &Template)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> TemplateKey {
        TemplateKey {
            service: ServiceId(1),
            client: [i; 16],
        }
    }

    #[test]
    fn a_template_lives_while_it_controls_flows_and_its_timeout_after() {
        let mut t = Templates::try_new(4).unwrap();
        assert!(t.bind(key(1), BackendId(7), 100, 30));
        assert!(t.bind(key(1), BackendId(7), 110, 30), "a second flow");
        assert_eq!(
            t.lookup(&key(1), 500).unwrap().controlled,
            2,
            "flows keep it"
        );
        t.release(&key(1), 500);
        t.release(&key(1), 600);
        assert_eq!(t.lookup(&key(1), 629).unwrap().backend, BackendId(7));
        assert_eq!(
            t.lookup(&key(1), 630),
            None,
            "30 s after its last flow ended"
        );
        assert!(t.is_empty());
        // Without flows: 30 s after its last use.
        t.bind(key(2), BackendId(1), 0, 30);
        t.release(&key(2), 0);
        assert!(t.lookup(&key(2), 29).is_some());
        assert_eq!(t.sweep(30), 1);
    }

    #[test]
    fn a_full_table_makes_no_template_and_counts_it() {
        let mut t = Templates::try_new(2).unwrap();
        assert!(t.bind(key(1), BackendId(0), 0, 10));
        assert!(t.bind(key(2), BackendId(0), 0, 10));
        assert!(!t.bind(key(3), BackendId(0), 0, 10));
        assert_eq!((t.len(), t.full), (2, 1));
        assert!(
            t.bind(key(1), BackendId(1), 1, 10),
            "an existing one is still used"
        );
        t.forget_service(ServiceId(1));
        assert!(t.is_empty());
    }

    #[test]
    fn masks_keep_the_network() {
        let a: [u8; 16] = std::net::Ipv4Addr::new(198, 18, 7, 9)
            .to_ipv6_mapped()
            .octets();
        let m = masked(&a, 96 + 24);
        assert_eq!(
            std::net::Ipv6Addr::from(m).to_ipv4_mapped(),
            Some(std::net::Ipv4Addr::new(198, 18, 7, 0))
        );
        assert_eq!(masked(&a, 128), a);
        assert_eq!(masked(&a, 0), [0; 16]);
    }
}
