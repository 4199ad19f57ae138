//! Every reason the packet path drops a packet; each has a counter.

use crate::wire::Malformed;

macro_rules! reasons {
    ($($variant:ident = $name:literal: $doc:literal,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)+
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),+];
            pub const COUNT: usize = Self::ALL.len();

            /// The snake_case name used in counters and metrics.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name),+ }
            }
        }
    };
}

reasons! {
    Truncated = "truncated": "A header is cut short.",
    BadHeaderLength = "bad_header_length": "A header-length field below its minimum.",
    BadVersion = "bad_version": "The IP version field does not match the EtherType.",
    BadLength = "bad_length": "A length field that does not fit the packet.",
    BadChecksum = "bad_checksum": "The IPv4 header checksum does not verify.",
    NotOurMac = "not_our_mac": "Unicast to another MAC address.",
    BadSourceMac = "bad_source_mac": "From a broadcast or multicast MAC address, which no station sends from.",
    MartianSource = "martian_source": "From an address no host sends from (0/8, 127/8, multicast, 240/4, broadcast, ::, ::1, IPv4-mapped in IPv6) or one that is ours (our addresses, a VIP, a connected subnet's broadcast): never answered, forwarded or given a flow.",
    UnknownEtherType = "unknown_ethertype": "Neither IPv4, IPv6 nor ARP.",
    ArpIgnored = "arp_ignored": "ARP that is not a request for one of our addresses or VIPs.",
    IpOptions = "ip_options": "IPv4 with options: rare, often hostile, and they move the transport header.",
    Fragment = "fragment": "IPv4 or IPv6 fragments: only the first carries ports, and reassembly state is an attack surface.",
    UnsupportedProtocol = "unsupported_protocol": "To a VIP, neither TCP, UDP nor ICMP.",
    NoService = "no_service": "To a VIP, but no service on that protocol and port.",
    NoBackend = "no_backend": "The service has no backend that takes new flows.",
    ClientDenied = "client_denied": "A new flow from a client the service's allow or deny list refuses.",
    NotForUs = "not_for_us": "Not to our addresses or VIPs, and not the reply of a NAT flow.",
    LocalUnsupported = "local_unsupported": "To one of our own addresses, and not something we answer.",
    IcmpUnsupported = "icmp_unsupported": "An ICMP message we neither answer nor forward.",
    IcmpNoFlow = "icmp_no_flow": "An ICMP error about a flow we do not have.",
    TcpRstNoFlow = "tcp_rst_no_flow": "A TCP reset for a flow we do not have.",
    TcpBadFlags = "tcp_bad_flags": "A TCP segment for a flow we do not have, with flags no connection sends (SYN with FIN or RST, or none at all).",
    NoRoute = "no_route": "No connected prefix or route reaches the next hop.",
    NeighborUnresolved = "neighbor_unresolved": "The next hop's MAC address is not known: held while it is resolved, and dropped as this when no answer came in time.",
    NeighborHoldFull = "neighbor_hold_full": "The next hop's MAC address is not known and the worker's hold queue for it (or in all) is full.",
    NeighborFailed = "neighbor_failed": "The next hop did not answer the requests for its MAC address (it is asked again every second).",
    DrBackendOffLink = "dr_backend_off_link": "Direct routing to a backend that is not on a connected prefix.",
    NoTunnelSource = "no_tunnel_source": "The egress interface has no address of the tunnel's family.",
    TooBigNoDf = "too_big_no_df": "Too big to tunnel, IPv4 without DF (l4lb does not fragment).",
    TooBigIcmpError = "too_big_icmp_error": "An ICMP error too big to tunnel: never answered with another ICMP error (RFC 1122 3.2.2).",
    NdpInvalid = "ndp_invalid": "A neighbour solicitation that RFC 4861 says to ignore (hop limit not 255, ...).",
    FlowInsertFailed = "flow_insert_failed": "The flow table refused a flow (backend id beyond its size).",
    NoHeadroom = "no_headroom": "No room in the buffer for a tunnel header or a reply.",
}

impl From<Malformed> for DropReason {
    fn from(m: Malformed) -> Self {
        match m {
            Malformed::Truncated => DropReason::Truncated,
            Malformed::BadHeaderLength => DropReason::BadHeaderLength,
            Malformed::BadVersion => DropReason::BadVersion,
            Malformed::BadLength => DropReason::BadLength,
            Malformed::BadChecksum => DropReason::BadChecksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_dense() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
