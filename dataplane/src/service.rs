//! What a service is, in the terms both the config and the packet path use.

use std::fmt;
use std::str::FromStr;

/// A service's stable number: the control plane assigns it once per service id and keeps it
/// across configuration changes, so state outside the snapshot (flows, counters) can refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceId(pub u32);

/// A backend's stable number, unique across all services (see [`ServiceId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendId(pub u32);

/// The transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How packets reach a backend (the LVS forwarding methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardingMode {
    /// Destination (and on replies, source) address and port rewritten; l4lb is the gateway.
    Nat,
    /// Direct routing: only the destination MAC changes; backends hold the VIP themselves.
    DirectRouting,
    /// IP-in-IP (IPv6-in-IPv6) encapsulation to the backend, which answers the client directly.
    Tunnel,
}

/// The scheduler that picks a backend for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnection,
    WeightedLeastConnection,
    ShortestExpectedDelay,
    NeverQueue,
    SourceHash,
    DestinationHash,
    /// Maglev hashing the whole tuple, as Katran does.
    Maglev,
    /// The same Maglev table hashing what IPVS's mh hashes: the client's address, and its
    /// port with the `mh-port` flag.
    MaglevIpvs,
    /// IPVS's fo: the available backend of the highest weight.
    WeightedFailover,
    /// IPVS's ovf: the available backend of the highest weight whose active connections do not
    /// exceed its weight.
    WeightedOverflow,
    /// IPVS's twos: two backends drawn at random in proportion to their weights, the less
    /// loaded one.
    TwoChoices,
}

/// The flags of the hashing schedulers (ipvsadm `-b`): what sh and mh hash, and whether a
/// client whose backend is overloaded goes to another one (`*-fallback`) or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SchedFlags {
    pub sh_fallback: bool,
    pub sh_port: bool,
    pub mh_fallback: bool,
    pub mh_port: bool,
}

impl SchedFlags {
    pub const NAMES: &'static [&'static str] =
        &["sh-fallback", "sh-port", "mh-fallback", "mh-port"];

    /// Sets the flag of that name.
    pub fn set(&mut self, name: &str) -> Result<(), UnknownName> {
        match name {
            "sh-fallback" => self.sh_fallback = true,
            "sh-port" => self.sh_port = true,
            "mh-fallback" => self.mh_fallback = true,
            "mh-port" => self.mh_port = true,
            _ => {
                return Err(UnknownName {
                    given: name.to_string(),
                    expected: Self::NAMES,
                });
            }
        }
        Ok(())
    }

    /// The names of the flags set, in [`NAMES`](Self::NAMES) order.
    pub fn names(self) -> Vec<&'static str> {
        let on = [
            self.sh_fallback,
            self.sh_port,
            self.mh_fallback,
            self.mh_port,
        ];
        Self::NAMES
            .iter()
            .zip(on)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }
}

/// A name that did not parse, with the names that would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub given: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not one of {}",
            self.given,
            self.expected.join(", ")
        )
    }
}

macro_rules! named {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName { given: s.to_string(), expected: Self::NAMES }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named!(Protocol { Tcp = "tcp", Udp = "udp" });
named!(ForwardingMode { Nat = "nat", DirectRouting = "dr", Tunnel = "tun" });
named!(SchedulerKind {
    RoundRobin = "rr",
    WeightedRoundRobin = "wrr",
    LeastConnection = "lc",
    WeightedLeastConnection = "wlc",
    ShortestExpectedDelay = "sed",
    NeverQueue = "nq",
    SourceHash = "sh",
    DestinationHash = "dh",
    Maglev = "maglev",
    MaglevIpvs = "mh",
    WeightedFailover = "fo",
    WeightedOverflow = "ovf",
    TwoChoices = "twos",
});

impl Protocol {
    /// The IP protocol number (IANA).
    pub fn ip_number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for n in SchedulerKind::NAMES {
            assert_eq!(n.parse::<SchedulerKind>().unwrap().name(), *n);
        }
        assert_eq!(
            "dr".parse::<ForwardingMode>(),
            Ok(ForwardingMode::DirectRouting)
        );
        let e = "fastest".parse::<SchedulerKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"fastest\" is not one of rr, wrr, lc, wlc, sed, nq, sh, dh, maglev, mh, fo, ovf, twos"
        );
        assert_eq!(
            "TCP".parse::<Protocol>().unwrap_err().expected,
            &["tcp", "udp"]
        );
        assert_eq!(Protocol::Udp.ip_number(), 17);
        let mut f = SchedFlags::default();
        f.set("mh-port").unwrap();
        f.set("sh-fallback").unwrap();
        assert_eq!(f.names(), ["sh-fallback", "mh-port"]);
        assert_eq!(
            f.set("sh-ports").unwrap_err().to_string(),
            "\"sh-ports\" is not one of sh-fallback, sh-port, mh-fallback, mh-port"
        );
    }
}
