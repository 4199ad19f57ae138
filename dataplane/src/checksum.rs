//! The Internet checksum: full sums (RFC 1071) for what l4lb builds, incremental updates
//! (RFC 1624) for what it rewrites, so a NAT rewrite touches a few words instead of the payload.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), folded to 16 bits but not complemented.
///
/// RFC 1071 §2(B): the sum may be taken over wider words and folded at the end, so this adds
/// 32-bit halves of 64-bit loads into a 64-bit accumulator (no carry is lost for any IP packet).
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [b] = rest {
        acc += u64::from(*b) << 8;
    }
    fold64(acc)
}

/// Folds a 64-bit one's-complement accumulator to 16 bits.
#[inline]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}

/// Folds a sum of several partial sums to 16 bits. Two steps are enough for any `u32`: the
/// first leaves at most 0x1fffe, the second at most 0xffff.
#[inline]
pub fn fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The Internet checksum of `data` (whose checksum field must be zero): what the IPv4 header
/// and ICMPv4 use.
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// True if a 20-byte IPv4 header (no options) checksums to zero: five 32-bit words, folded
/// (RFC 1071 §2(B)). The general `sum` costs four times as many instructions here.
///
/// The words are summed in native byte order: a one's-complement sum of byte-swapped words is
/// the byte-swapped sum (RFC 1071 §2(B)), and 0xffff is its own swap.
#[inline(always)]
pub fn ipv4_header20_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold64(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// The IPv4 header checksum; the header's own checksum field must be zero.
pub fn ipv4_header(header: &[u8]) -> u16 {
    internet(header)
}

/// [`ipv4_header`] of a 20-byte header, as [`ipv4_header20_ok`] verifies one: five 32-bit
/// words added in the machine's byte order (RFC 1071 §2(B): the sum does not depend on it),
/// folded, and turned back into the field's value.
#[inline]
pub fn ipv4_header20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let c = !(fold64(w(0) + w(4) + w(8) + w(12) + w(16)) as u16);
    u16::from_be_bytes(c.to_ne_bytes())
}

/// The IPv4 pseudo-header sum for TCP/UDP/ICMP-less protocols (RFC 793, RFC 768).
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(protocol) + u32::from(len)
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1), also used by ICMPv6.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// A transport checksum from a pseudo-header sum and the segment (checksum field zeroed).
pub fn transport(pseudo: u32, segment: &[u8]) -> u16 {
    !fold(pseudo + sum(segment))
}

/// True if `segment` (checksum included) verifies against `pseudo`.
pub fn verifies(pseudo: u32, segment: &[u8]) -> bool {
    fold(pseudo + sum(segment)) == 0xffff
}

/// The change that rewriting `old` into `new` (equal, even lengths) makes to a one's-complement
/// sum: ~m + m' summed over the words (RFC 1624). Computed once, it can be applied to several
/// checksums (a NAT rewrite changes the IPv4 header's and the transport's).
#[inline]
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    u32::from(!fold(sum(old))) + sum(new)
}

/// [`delta`] for a 4-byte field (an IPv4 address), without the general loop.
#[inline]
pub fn delta4(old: [u8; 4], new: [u8; 4]) -> u32 {
    let (o, n) = (u32::from_be_bytes(old), u32::from_be_bytes(new));
    (!o >> 16) + (!o & 0xffff) + (n >> 16) + (n & 0xffff)
}

/// [`delta`] for a 16-byte field (an IPv6 address), without the general loop or a call: the
/// complemented old words and the new ones added as 32-bit halves of 64-bit loads, then
/// folded (RFC 1071 §2(B)). Congruent to `delta`'s answer, so a checksum it updates is the
/// same.
#[inline(always)]
pub fn delta16(old: &[u8; 16], new: &[u8; 16]) -> u32 {
    let (o, n) = (!u128::from_ne_bytes(*old), u128::from_ne_bytes(*new));
    let halves = |x: u128| {
        let (lo, hi) = (x as u64, (x >> 64) as u64);
        (lo >> 32) + (lo & 0xffff_ffff) + (hi >> 32) + (hi & 0xffff_ffff)
    };
    // Native-endian loads: a one's-complement sum is the same in either byte order once its
    // two bytes are swapped back (RFC 1071 §2(B)), done after the fold.
    let s = fold64(halves(o) + halves(n));
    u32::from(u16::from_be(s as u16))
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the `delta` of the rewrite.
#[inline]
pub fn apply(checksum: u16, delta: u32) -> u16 {
    !fold(u32::from(!checksum) + delta)
}

/// RFC 1624 eqn. 3 for every 16-bit word that changed from `old` to `new`.
#[inline]
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(checksum, delta(old, new))
}

/// RFC 1624 eqn. 3 for one 16-bit field.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// A UDP checksum after an update: over IPv4 a 0 means "no checksum" and must stay 0 (there
/// is nothing to update); a computed 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn udp_update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    udp_apply(checksum, delta(old, new))
}

/// [`udp_update`] with a precomputed delta.
#[inline]
pub fn udp_apply(checksum: u16, delta: u32) -> u16 {
    if checksum == 0 {
        return 0;
    }
    match apply(checksum, delta) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 -> ddf2 (the sum, before complementing).
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(sum(&[0xab]), 0xab00, "an odd byte is padded on the right");
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // A widely quoted example header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
    }

    #[test]
    fn an_ipv4_udp_checksum_of_zero_stays_zero() {
        assert_eq!(udp_update(0, &[198, 18, 0, 100], &[198, 18, 1, 10]), 0);
    }

    /// Full recomputation, the way a receiver checks.
    fn full(pseudo: u32, seg: &mut [u8], at: usize) -> u16 {
        seg[at..at + 2].copy_from_slice(&[0, 0]);
        transport(pseudo, seg)
    }

    #[test]
    fn delta16_equals_the_general_delta_at_the_edges() {
        // All-zero and all-one words are where the two zeros of one's complement differ.
        let edges = [[0u8; 16], [0xff; 16], {
            let mut a = [0u8; 16];
            a[15] = 1;
            a
        }];
        for old in edges {
            for new in edges {
                for c in [0, 1, 0xfffe, 0xffff] {
                    assert_eq!(apply(c, delta16(&old, &new)), apply(c, delta(&old, &new)));
                    assert_eq!(
                        udp_apply(c, delta16(&old, &new)),
                        udp_apply(c, delta(&old, &new))
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Rewriting addresses and ports (what NAT does) and updating incrementally gives a
        /// checksum that verifies and equals the full recomputation (0 and 0xffff are the same
        /// one's-complement number).
        #[test]
        fn incremental_equals_full_recomputation(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_dst in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(), new_dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let alen = if v6 { 16 } else { 4 };
            let (proto, at) = if tcp { (6u8, 16usize) } else { (17u8, 6usize) };
            let mut seg = vec![0u8; if tcp { 20 } else { 8 }];
            seg[0..2].copy_from_slice(&sport.to_be_bytes());
            seg[2..4].copy_from_slice(&dport.to_be_bytes());
            if tcp { seg[12] = 0x50; } else { seg[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes()); }
            seg.extend_from_slice(&payload);
            let seg_len = seg.len();
            let pseudo = |d: &[u8]| if v6 {
                pseudo_v6(<[u8; 16]>::try_from(&src[..]).unwrap().into(), <[u8; 16]>::try_from(d).unwrap().into(), proto, seg_len as u32)
            } else {
                pseudo_v4(<[u8; 4]>::try_from(&src[..4]).unwrap().into(), <[u8; 4]>::try_from(d).unwrap().into(), proto, seg_len as u16)
            };
            let before = full(pseudo(&dst[..alen]), &mut seg, at);
            seg[at..at + 2].copy_from_slice(&before.to_be_bytes());

            // rewrite: destination address and port
            let mut c = update(before, &dst[..alen], &new_dst[..alen]);
            c = update_u16(c, dport, new_dport);
            seg[2..4].copy_from_slice(&new_dport.to_be_bytes());
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verifies(pseudo(&new_dst[..alen]), &seg));
            let recomputed = full(pseudo(&new_dst[..alen]), &mut seg.clone(), at);
            prop_assert!(c == recomputed || (c | recomputed) == 0xffff && (c & recomputed) == 0, "{c:#x} vs {recomputed:#x}");
        }

        #[test]
        fn the_20_byte_header_check_agrees_with_the_general_sum(h in any::<[u8; 20]>(), fix in any::<bool>()) {
            let mut h = h;
            if fix {
                h[10] = 0;
                h[11] = 0;
                let c = ipv4_header(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            prop_assert_eq!(ipv4_header20_ok(&h), fold(sum(&h)) == 0xffff);
        }

        #[test]
        fn delta4_equals_the_general_delta(old in any::<[u8; 4]>(), new in any::<[u8; 4]>(), c in any::<u16>()) {
            prop_assert_eq!(apply(c, delta4(old, new)), apply(c, delta(&old, &new)));
        }

        #[test]
        fn delta16_equals_the_general_delta(old in any::<[u8; 16]>(), new in any::<[u8; 16]>(), c in any::<u16>()) {
            prop_assert_eq!(apply(c, delta16(&old, &new)), apply(c, delta(&old, &new)));
            prop_assert_eq!(udp_apply(c, delta16(&old, &new)), udp_apply(c, delta(&old, &new)));
        }

        #[test]
        fn the_20_byte_header_checksum_is_the_general_one(mut h in any::<[u8; 20]>()) {
            h[10] = 0;
            h[11] = 0;
            let c = ipv4_header20(&h);
            prop_assert_eq!(c, ipv4_header(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert!(ipv4_header20_ok(&h));
        }

        #[test]
        fn ipv4_header_update_equals_recomputation(mut h in any::<[u8; 20]>(), new_dst in any::<[u8; 4]>()) {
            h[10] = 0; h[11] = 0;
            let c = ipv4_header(&h);
            let old: [u8; 4] = h[16..20].try_into().unwrap();
            h[16..20].copy_from_slice(&new_dst);
            let inc = update(c, &old, &new_dst);
            let full = ipv4_header(&h);
            prop_assert!(inc == full || (inc | full) == 0xffff && (inc & full) == 0);
        }
    }
}
