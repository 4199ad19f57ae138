//! Frames the control side sends: gratuitous ARP and unsolicited neighbour advertisements for
//! our addresses and VIPs, and requests for next hops the workers could not resolve. They wait
//! in the controller's outbox until the binary copies them into mbufs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use dataplane::addr::IpPrefix;
use dataplane::neighbor;
use tracing::debug;

use super::{Controller, Frame};
use crate::neighbors::Request;

impl Controller {
    fn send(&mut self, port: u16, bytes: &[u8]) {
        self.outbox.push(Frame {
            port,
            bytes: bytes.to_vec(),
        });
    }

    /// Tells the neighbours where `vips` (and, at start, our own addresses) are: gratuitous ARP
    /// for IPv4, unsolicited neighbour advertisements for IPv6, on every interface.
    pub(super) fn announce(&mut self, vips: &BTreeSet<IpAddr>, own_addresses: bool) {
        for i in 0..self.interfaces.len() {
            let (port, mac) = (self.interfaces[i].port, self.interfaces[i].mac);
            let own: Vec<IpAddr> = if own_addresses {
                self.interfaces[i]
                    .addresses
                    .iter()
                    .map(|p| p.addr)
                    .collect()
            } else {
                Vec::new()
            };
            for addr in vips.iter().copied().chain(own) {
                match addr {
                    IpAddr::V4(a) => {
                        let mut f = [0u8; neighbor::MIN_FRAME];
                        neighbor::gratuitous_arp(&mut f, mac, a);
                        self.send(port, &f);
                    }
                    IpAddr::V6(a) => {
                        let mut f = [0u8; neighbor::NDP_FRAME];
                        neighbor::unsolicited_advertisement(&mut f, mac, a);
                        self.send(port, &f);
                    }
                }
            }
        }
    }

    /// Asks who has `r.target`, from our address on the same prefix (else our first of the
    /// family) on that interface.
    pub(super) fn request(&mut self, r: Request) {
        let Some(itf) = self.interfaces.get(usize::from(r.interface)) else {
            return;
        };
        let same_family = |p: &&IpPrefix| p.addr.is_ipv4() == r.target.is_ipv4();
        let src = itf
            .addresses
            .iter()
            .find(|p| p.contains(r.target))
            .or_else(|| itf.addresses.iter().find(same_family));
        let Some(src) = src.map(|p| p.addr) else {
            return;
        };
        let (port, mac) = (itf.port, itf.mac);
        debug!(target = %r.target, interface = r.interface, "resolving");
        match (src, r.target) {
            (IpAddr::V4(s), IpAddr::V4(t)) => {
                let mut f = [0u8; neighbor::MIN_FRAME];
                neighbor::arp_request(&mut f, mac, s, t);
                self.send(port, &f);
            }
            (IpAddr::V6(s), IpAddr::V6(t)) => {
                let mut f = [0u8; neighbor::NDP_FRAME];
                neighbor::neighbor_solicitation(&mut f, mac, s, t);
                self.send(port, &f);
            }
            _ => {}
        }
    }
}
