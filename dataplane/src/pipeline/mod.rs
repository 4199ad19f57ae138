//! The packet path: one entry point, [`process`], that turns a received frame into an
//! [`Action`]. Each stage is one decision in a module of its own, and every drop names its
//! [`DropReason`]:
//!
//! - [`fast`]: the established IPv4 and IPv6 flow on a straight line, and the warming of a
//!   burst;
//! - [`classify`]: Ethernet, IP and transport headers into a parsed description, and where
//!   the packet goes next;
//! - [`flow`]: to a VIP — the service, the flow, a new flow's backend;
//! - [`egress`]: the one way out towards a backend (NAT, DR, TUN with its MTU check) and the
//!   choice of next hop;
//! - [`nat`]: a backend's reply on its way back to the client;
//! - [`icmp`]: echo, and ICMP errors about flows;
//! - [`local`]: what the appliance answers and learns itself (ARP, NDP);
//! - [`state`]: what a worker owns (flow table, cursors, counters).
//!
//! The stages share one [`Ctx`] (the configuration, the worker's state, the ingress
//! interface, the clock) and the parsed description [`Ip`] of the packet.

mod classify;
mod egress;
mod fast;
mod flow;
mod icmp;
mod local;
mod lookup;
mod nat;
mod state;

pub use fast::{MAX_BURST, WARM_ABOVE_BYTES, Warmed, warm_burst};
pub use lookup::{Lookup, lookup, owner_of};
pub use state::{WorkerState, owner};
pub(crate) use state::{flow_owner, nat_owner};

use crate::drop_reason::DropReason;
use crate::forward::IpView;
use crate::packet::PacketBuf;
use crate::snapshot::Snapshot;

/// What to do with a packet after [`process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rewritten, Ethernet addresses included (the next hop's MAC is the destination): send
    /// it on interface `interface` (an index into the snapshot's interfaces). Four bytes in
    /// all, returned in a register: carrying the next hop's address as well cost the
    /// established path 8% (`cargo bench -p dataplane --bench pipeline`).
    Forward {
        interface: u16,
    },
    /// Turned into an answer (ARP, echo, neighbour advertisement, too big): send it back out
    /// of the interface it came in on.
    Reply,
    /// Taken in by l4lb itself (an ARP reply or neighbour advertisement it learned from).
    Consumed,
    Drop(DropReason),
    /// It belongs to another worker's flow table (NAT ownership): hand it over unchanged.
    Redirect(u16),
    /// Not the packet path's business, and the interface it came in on has a kernel interface
    /// beside it: hand it, unchanged, to the kernel (management traffic to our addresses,
    /// transit traffic, ARP and NDP the kernel needs, ICMP we do not answer).
    Kernel,
}

/// What every stage of one packet's processing shares.
pub(crate) struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub w: &'a mut WorkerState,
    /// The interface it came in on (an index into the snapshot's interfaces).
    pub ingress: u16,
    /// The flow table's clock (seconds).
    pub now: u32,
}

impl Ctx<'_> {
    /// What the packet path does not handle: to the kernel when the ingress interface has a
    /// kernel interface, else dropped as `reason`.
    #[inline]
    pub(crate) fn kernel_or(&self, reason: DropReason) -> Result<Action, DropReason> {
        match self.snap.interfaces.get(usize::from(self.ingress)) {
            Some(i) if i.kernel => Ok(Action::Kernel),
            _ => Err(reason),
        }
    }

    /// Taken in by the packet path (an ARP reply, a neighbour advertisement): the kernel, when
    /// there is one, needs it as well (it may have asked).
    #[inline]
    pub(crate) fn consumed(&self) -> Result<Action, DropReason> {
        Ok(self
            .kernel_or(DropReason::ArpIgnored)
            .unwrap_or(Action::Consumed))
    }
}

/// The parsed description of an IP packet (Katran's `packet_description`): where its
/// headers are and what they say; TCP and UDP packets carry their [`L4`] beside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip {
    /// Offset of the IP header (the Ethernet header's length).
    pub l2: usize,
    pub ip: IpView,
}

/// The transport part of a parsed packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L4 {
    pub sport: u16,
    pub dport: u16,
    /// TCP flags; None for UDP.
    pub tcp_flags: Option<u8>,
}

/// Processes one frame received on interface `ingress` (an index into the snapshot's
/// interfaces) at `now` (seconds, the flow table's clock).
pub fn process<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Action {
    process_hinted(pkt, ingress, snap, w, now, None)
}

/// [`process`] of a frame [`warm_burst`] read, with what it hashed (`hints[i]` for frame i of
/// the burst): the fast paths look the flow up by that hash instead of hashing again.
#[inline(always)]
pub fn process_hinted<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hint: Option<Warmed>,
) -> Action {
    // By the EtherType, so that an IPv6 packet does not first fail the IPv4 path's checks.
    let fast = if pkt.data().get(12..14) == Some(&ETHERTYPE_IPV6_BYTES[..]) {
        fast::established_v6(pkt, ingress, snap, w, now, hint)
    } else {
        fast::established_v4(pkt, ingress, snap, w, now, hint)
    };
    match fast {
        Ok(a) => a,
        Err(why) => general(pkt, ingress, snap, w, now, why == fast::Fast::NoFlow),
    }
}

const ETHERTYPE_IPV6_BYTES: [u8; 2] = crate::wire::ethernet::ETHERTYPE_IPV6.to_be_bytes();

/// The general path; `no_flow`: the fast path found no flow for this packet.
#[inline(always)]
fn general<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    no_flow: bool,
) -> Action {
    let mut cx = Ctx {
        snap,
        w,
        ingress,
        now,
    };
    classify::classify(pkt, &mut cx, no_flow).unwrap_or_else(Action::Drop)
}

/// [`process`] without the fast path: every packet through the general parse.
#[cfg(test)]
pub(crate) fn process_general<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Action {
    general(pkt, ingress, snap, w, now, false)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
