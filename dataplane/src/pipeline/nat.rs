//! A backend's reply to a client (NAT): found by its reply key, the source becomes the VIP and
//! the service port again, and it goes to the client's next hop.

use super::{Action, Ctx, L4, egress, nat_owner};
use crate::drop_reason::DropReason;
use crate::flow::{Endpoint, ReplyKey, addr_from_bytes};
use crate::forward::{self, IpView, Side};
use crate::packet::PacketBuf;

pub(super) fn reply<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    ip: &IpView,
    l4: &L4,
) -> Result<Action, DropReason> {
    let o = nat_owner(cx.snap, &ip.dst, l4.dport);
    if o != cx.w.index {
        // Only a NAT reply is ever owned elsewhere; if it is not one, the owner drops it.
        return Ok(Action::Redirect(o));
    }
    let rk = ReplyKey {
        protocol: ip.proto,
        backend: Endpoint {
            addr: ip.src,
            port: l4.sport,
        },
        client: ip.dst,
        client_port: l4.dport,
    };
    let flows = &mut cx.w.flows;
    let (service, backend, vip, vip_port) = match flows.lookup_reply(&rk, cx.now) {
        Some(slot) => {
            flows.touch(slot, l4.tcp_flags, cx.now);
            let f = flows.get(slot);
            (f.service, f.backend, f.key.vip, f.key.vip_port)
        }
        None => match cx.snap.one_packet_reply(ip.proto, &ip.src, l4.sport) {
            // A one-packet service keeps no flow: its backend's endpoint names it.
            Some((svc, b)) => (
                svc.config.id,
                b,
                crate::flow::addr_bytes(svc.config.vip),
                svc.config.port,
            ),
            // Transit: the kernel routes it, if there is one and its forwarding is on.
            None => return cx.kernel_or(DropReason::NotForUs),
        },
    };
    let len = pkt.data().len();
    forward::rewrite_endpoint(
        pkt.data_mut(),
        ip,
        Side::Src,
        &vip,
        vip_port,
        ip.end() - ip.l4,
    );
    let action = egress::send(pkt.data_mut(), cx, addr_from_bytes(ip.dst))?;
    if let Some((s, b)) = cx.w.traffic.of(service, backend) {
        s.count_out(len);
        b.count_out(len);
    }
    Ok(action)
}
