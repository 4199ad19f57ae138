use super::*;
use crate::flow::NewFlow;
use proptest::prelude::*;

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        6,
        std::net::IpAddr::V4((0xc612_0000 + i).into()),
        1000 + (i % 60000) as u16,
        "198.18.0.100".parse().unwrap(),
        80,
    )
}

fn ep(b: u32) -> Endpoint {
    Endpoint {
        addr: addr_of(b),
        port: 8080,
    }
}

fn addr_of(b: u32) -> [u8; 16] {
    crate::flow::addr_bytes(std::net::IpAddr::V4((0xc612_0100 + b).into()))
}

fn table(cap: u32) -> FlowTable {
    FlowTable::new(cap, 16, FlowTimeouts::default())
}

fn add(t: &mut FlowTable, i: u32, backend: u32, state: FlowState, now: u32) -> u32 {
    t.insert(
        NewFlow {
            key: key(i),
            service: ServiceId(1),
            backend: BackendId(backend),
            endpoint: ep(backend),
            nat: false,
            state,
            template: None,
        },
        now,
    )
    .unwrap()
}

#[test]
fn each_state_expires_after_its_own_timeout() {
    let cases = [
        (FlowState::Syn, 60),
        (FlowState::Established, 900),
        (FlowState::Fin, 120),
        (FlowState::Closed, 10),
        (FlowState::Udp, 300),
    ];
    for (i, (state, timeout)) in cases.into_iter().enumerate() {
        let mut t = table(8);
        add(&mut t, i as u32, 0, state, 1000);
        assert!(
            t.lookup(&key(i as u32), 1000 + timeout).is_some(),
            "{state:?} alive at its timeout"
        );
        assert!(
            t.lookup(&key(i as u32), 1001 + timeout).is_none(),
            "{state:?} gone one second after"
        );
        assert_eq!(t.stats().expired, 1);
        assert!(t.is_empty());
    }
}

#[test]
fn tcp_flags_move_the_state_like_ipvs_input_only_table() {
    use crate::wire::tcp::{ACK, FIN, PSH, RST, SYN};
    let mut t = table(8);
    let s = add(&mut t, 1, 0, FlowState::for_new_tcp(SYN).unwrap(), 0);
    assert_eq!(t.get(s).state, FlowState::Syn);
    assert_eq!(
        t.touch(s, Some(SYN), 1),
        FlowState::Syn,
        "a retransmitted SYN"
    );
    assert_eq!(
        t.touch(s, Some(ACK), 2),
        FlowState::Established,
        "the client's ACK of the SYN-ACK"
    );
    assert_eq!(t.touch(s, Some(ACK | PSH), 3), FlowState::Established);
    assert_eq!(t.touch(s, Some(FIN | ACK), 4), FlowState::Fin);
    assert_eq!(
        t.touch(s, Some(ACK), 5),
        FlowState::Fin,
        "the last ACK keeps it closing"
    );
    assert_eq!(
        t.touch(s, Some(SYN), 6),
        FlowState::Syn,
        "the tuple reused by a new connection"
    );
    assert_eq!(t.touch(s, Some(RST | ACK), 7), FlowState::Closed);
    assert_eq!(t.touch(s, Some(FIN), 8), FlowState::Closed);
    assert_eq!(
        FlowState::for_new_tcp(RST),
        Err(NoFlow::Reset),
        "a RST never creates a flow"
    );
    assert_eq!(
        FlowState::for_new_tcp(ACK),
        Ok(FlowState::Midstream),
        "mid-stream pickup"
    );
    assert_eq!(FlowState::for_new_tcp(FIN | ACK), Ok(FlowState::Fin));
    for impossible in [
        SYN | FIN,
        SYN | RST,
        SYN | FIN | ACK,
        0,
        PSH,
        0x20, /* URG */
    ] {
        assert_eq!(
            FlowState::for_new_tcp(impossible),
            Err(NoFlow::ImpossibleFlags),
            "flags {impossible:#04x}"
        );
    }
}

#[test]
fn a_midstream_flow_is_established_by_its_second_segment() {
    use crate::wire::tcp::{ACK, FIN, PSH};
    let mut t = table(8);
    let s = add(&mut t, 1, 3, FlowState::Midstream, 10);
    assert_eq!(
        t.conns(BackendId(3)),
        Conns {
            active: 0,
            inactive: 1
        }
    );
    assert_eq!(
        t.touch(s, Some(ACK | PSH), 10),
        FlowState::Established,
        "same second too"
    );
    assert_eq!(t.count(FlowState::Midstream), 0);
    assert_eq!(t.count(FlowState::Established), 1);
    assert_eq!(
        t.conns(BackendId(3)),
        Conns {
            active: 1,
            inactive: 0
        }
    );
    let f = add(&mut t, 2, 3, FlowState::Midstream, 10);
    assert_eq!(t.touch(f, Some(FIN | ACK), 11), FlowState::Fin);
    add(&mut t, 3, 3, FlowState::Midstream, 20);
    assert!(
        t.lookup(&key(3), 20 + 900).is_some(),
        "a quiet mid-stream flow lives as long"
    );
    assert!(t.lookup(&key(3), 21 + 900).is_none());
}

#[test]
fn an_ack_flood_takes_room_and_half_open_flows_then_its_own_kind_never_established_ones() {
    let mut t = table(100);
    for i in 0..50 {
        add(&mut t, i, i % 4, FlowState::Established, 0);
    }
    for i in 50..80 {
        add(&mut t, i, 0, FlowState::Syn, 1);
    }
    // 10_000 ACKs of tuples never seen: each starts a mid-stream flow
    for i in 1000..11_000 {
        add(&mut t, i, 1, FlowState::Midstream, 5);
    }
    assert_eq!(t.count(FlowState::Established), 50);
    assert_eq!(t.count(FlowState::Syn), 0, "half-open flows go first");
    assert_eq!(
        t.count(FlowState::Midstream),
        50,
        "then the flood's own oldest"
    );
    assert_eq!(t.stats().evicted, 10_000 - 20);
    assert_eq!(t.stats().evicted_established, 0);
    assert!(
        t.syn_flood(5),
        "half-open flows were evicted: handshakes are hashed"
    );
    for i in (0..50).chain(10_950..11_000) {
        assert!(t.lookup(&key(i), 5).is_some(), "flow {i} kept");
    }
    // New established flows evict mid-stream ones, oldest first.
    for i in 20_000..20_030 {
        add(&mut t, i, 2, FlowState::Established, 6);
    }
    assert_eq!(t.count(FlowState::Midstream), 20);
    assert_eq!(t.count(FlowState::Established), 80);
    assert_eq!(t.stats().evicted_established, 0);
    assert!(t.lookup(&key(10_979), 6).is_none() && t.lookup(&key(10_980), 6).is_some());
}

#[test]
fn midstream_flows_beside_a_syn_churn_stay_until_their_second_segment() {
    // A failover under SYN load: a table full of half-open flows and more mid-stream flows
    // than any share would hold; the half-open ones make room.
    let mut t = table(100);
    for i in 0..40 {
        add(&mut t, i, 0, FlowState::Syn, 0);
    }
    for i in 100..190 {
        add(&mut t, i, 0, FlowState::Midstream, 1);
    }
    assert_eq!(
        (t.count(FlowState::Midstream), t.count(FlowState::Syn)),
        (90, 10)
    );
    for i in 100..190 {
        let s = t.lookup(&key(i), 1).expect("kept");
        assert_eq!(
            t.touch(s, Some(crate::wire::tcp::ACK), 1),
            FlowState::Established
        );
    }
}

#[test]
fn a_syn_flood_is_remembered_for_the_syn_timeout() {
    let mut t = table(10);
    for i in 0..10 {
        add(&mut t, i, 0, FlowState::Syn, 100);
    }
    assert!(!t.syn_flood(100), "full, nothing evicted yet");
    add(&mut t, 10, 0, FlowState::Syn, 100);
    assert!(t.syn_flood(100));
    assert!(t.syn_flood(160), "within the SYN timeout (60 s)");
    assert!(!t.syn_flood(161));
    t.count_hashed();
    assert_eq!(t.stats().syn_flood_hashed, 1);
}

#[test]
fn a_full_table_evicts_the_least_recently_used() {
    let mut t = table(3);
    for i in 0..3 {
        add(&mut t, i, 0, FlowState::Established, i);
    }
    let a = t.lookup(&key(0), 10).unwrap();
    t.touch(a, Some(crate::wire::tcp::ACK), 10); // 0 is now the newest; 1 the oldest
    add(&mut t, 3, 0, FlowState::Established, 11);
    assert!(
        t.lookup(&key(1), 11).is_none(),
        "the least recently used went"
    );
    for i in [0, 2, 3] {
        assert!(t.lookup(&key(i), 11).is_some(), "flow {i} stays");
    }
    assert_eq!((t.stats().evicted, t.stats().evicted_established), (1, 1));
    assert_eq!(t.len(), 3);
}

#[test]
fn a_syn_flood_evicts_half_open_flows_never_established_ones() {
    let mut t = table(100);
    for i in 0..90 {
        add(&mut t, i, i % 4, FlowState::Established, 0);
    }
    // 10_000 SYNs from new sources into a table with 10 free entries
    for i in 1000..11_000 {
        add(&mut t, i, 0, FlowState::Syn, 5);
    }
    assert_eq!(t.count(FlowState::Established), 90);
    assert_eq!(t.count(FlowState::Syn), 10);
    for i in 0..90 {
        assert!(
            t.lookup(&key(i), 5).is_some(),
            "established flow {i} survived"
        );
    }
    assert_eq!(t.stats().evicted, 10_000 - 10);
    assert_eq!(t.stats().evicted_established, 0);
    // the same holds with closing flows: they go before established ones
    add(&mut t, 50_000, 0, FlowState::Fin, 6);
    assert_eq!(t.count(FlowState::Established), 90);
}

#[test]
fn the_sweep_removes_expired_flows_within_its_budget() {
    let mut t = table(64);
    for i in 0..10 {
        add(&mut t, i, 0, FlowState::Closed, 0);
    }
    for i in 10..20 {
        add(&mut t, i, 0, FlowState::Established, 0);
    }
    assert_eq!(t.sweep(11, 4), 4);
    assert_eq!(t.sweep(11, 100), 6);
    assert_eq!(t.sweep(11, 100), 0, "established flows are not due");
    assert_eq!(t.len(), 10);
    assert_eq!(t.sweep(901, 100), 10);
}

#[test]
fn replies_find_their_nat_flow_by_backend_and_client() {
    let mut t = table(8);
    let k = key(7);
    let s = t
        .insert(
            NewFlow {
                key: k,
                service: ServiceId(2),
                backend: BackendId(3),
                endpoint: ep(3),
                nat: true,
                state: FlowState::Syn,
                template: None,
            },
            0,
        )
        .unwrap();
    let rk = ReplyKey {
        protocol: 6,
        backend: ep(3),
        client: k.client,
        client_port: k.client_port,
    };
    assert_eq!(t.lookup_reply(&rk, 1), Some(s));
    let other = ReplyKey {
        backend: ep(4),
        ..rk
    };
    assert_eq!(t.lookup_reply(&other, 1), None, "another backend's reply");
    // a DR flow is not in the reply index
    let d = key(8);
    t.insert(
        NewFlow {
            key: d,
            service: ServiceId(2),
            backend: BackendId(3),
            endpoint: ep(3),
            nat: false,
            state: FlowState::Syn,
            template: None,
        },
        0,
    )
    .unwrap();
    let rd = ReplyKey {
        client: d.client,
        client_port: d.client_port,
        ..rk
    };
    assert_eq!(t.lookup_reply(&rd, 1), None);
    t.remove(s);
    assert_eq!(t.lookup_reply(&rk, 1), None);
}

#[test]
fn flush_by_service_and_by_backend_removes_exactly_those_flows() {
    let mut t = table(64);
    for i in 0..30 {
        t.insert(
            NewFlow {
                key: key(i),
                service: ServiceId(i % 3),
                backend: BackendId(i % 5),
                endpoint: ep(i % 5),
                nat: true,
                state: FlowState::Established,
                template: None,
            },
            0,
        )
        .unwrap();
    }
    assert_eq!(t.flush_service(ServiceId(0)), 10);
    assert!(t.iter().all(|f| f.service != ServiceId(0)));
    let left_on_2 = t.iter().filter(|f| f.backend == BackendId(2)).count();
    assert_eq!(t.flush_backend(BackendId(2)), left_on_2);
    assert_eq!(t.conns(BackendId(2)), Conns::default());
    assert_eq!(t.len(), 30 - 10 - left_on_2);
    assert_eq!(t.stats().flushed, (10 + left_on_2) as u64);
}

#[test]
fn backend_ids_beyond_the_table_are_refused() {
    let mut t = table(4);
    let e = t.insert(
        NewFlow {
            key: key(1),
            service: ServiceId(0),
            backend: BackendId(16),
            endpoint: ep(0),
            nat: false,
            state: FlowState::Udp,
            template: None,
        },
        0,
    );
    assert_eq!(e, Err(InsertError::BackendIdTooLarge));
    assert!(t.is_empty());
}

#[test]
fn churn_never_grows_the_table() {
    let mut t = table(1000);
    let (slab, index, reply) = (
        t.slots.capacity(),
        t.index.allocation_size(),
        t.reply_index.allocation_size(),
    );
    for round in 0..50u32 {
        for i in 0..1000 {
            let k = round * 1000 + i;
            t.insert(
                NewFlow {
                    key: key(k),
                    service: ServiceId(0),
                    backend: BackendId(k % 8),
                    endpoint: ep(k % 8),
                    nat: true,
                    state: FlowState::Syn,
                    template: None,
                },
                round,
            )
            .unwrap();
        }
    }
    assert_eq!(t.len(), 1000);
    assert_eq!(
        (
            t.slots.capacity(),
            t.index.allocation_size(),
            t.reply_index.allocation_size()
        ),
        (slab, index, reply)
    );
}

/// The model: counts recomputed from the flows themselves.
fn recount(t: &FlowTable) -> Vec<Conns> {
    let mut c = vec![Conns::default(); 16];
    for f in t.iter() {
        if f.state == FlowState::Established {
            c[f.backend.0 as usize].active += 1;
        } else {
            c[f.backend.0 as usize].inactive += 1;
        }
    }
    c
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u32, u8),
    Touch(u32, u8),
    Advance(u32),
    Sweep(usize),
    FlushBackend(u32),
    FlushService(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..64u32, 0..16u32, any::<u8>()).prop_map(|(k, b, f)| Op::Insert(k, b, f)),
        4 => (0..64u32, any::<u8>()).prop_map(|(k, f)| Op::Touch(k, f)),
        1 => (0..200u32).prop_map(Op::Advance),
        1 => (0..10usize).prop_map(Op::Sweep),
        1 => (0..16u32).prop_map(Op::FlushBackend),
        1 => (0..3u32).prop_map(Op::FlushService),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever happens (creates, state changes, expiry, eviction, flushes), the per-backend
    /// counts equal a recount of the flows, and the lists hold exactly the indexed flows.
    #[test]
    fn counts_stay_exact(ops in proptest::collection::vec(op(), 1..300)) {
        let mut t = FlowTable::new(32, 16, FlowTimeouts { tcp_established: 100, tcp_syn: 20, tcp_fin: 30, tcp_close: 5, udp: 50 });
        let mut now = 0u32;
        for o in ops {
            match o {
                Op::Insert(k, b, flags) => {
                    if t.lookup(&key(k), now).is_none() {
                        let state = if flags & 0x80 != 0 { Some(FlowState::Udp) } else { FlowState::for_new_tcp(flags).ok() };
                        if let Some(s) = state {
                            t.insert(NewFlow { key: key(k), service: ServiceId(k % 3), backend: BackendId(b), endpoint: ep(b), nat: k % 2 == 0, state: s, template: None }, now).unwrap();
                        }
                    }
                }
                Op::Touch(k, flags) => {
                    if let Some(s) = t.lookup(&key(k), now) {
                        let tcp = (t.get(s).state != FlowState::Udp).then_some(flags);
                        t.touch(s, tcp, now);
                    }
                }
                Op::Advance(d) => now += d,
                Op::Sweep(n) => { t.sweep(now, n); }
                Op::FlushBackend(b) => { t.flush_backend(BackendId(b)); }
                Op::FlushService(s) => { t.flush_service(ServiceId(s)); }
            }
            let model = recount(&t);
            for b in 0..16 {
                prop_assert_eq!(t.conns(BackendId(b)), model[b as usize]);
            }
            prop_assert_eq!(t.iter().count(), t.len());
            prop_assert_eq!(t.index.len(), t.len());
            prop_assert_eq!(t.reply_index.len(), t.iter().filter(|f| f.is_nat()).count());
            prop_assert!(t.len() <= 32);
        }
    }
}

#[test]
fn a_flow_is_one_cache_line() {
    assert_eq!(std::mem::size_of::<Flow>(), 64);
    assert_eq!(std::mem::align_of::<Flow>(), 64);
}

fn synced(i: u32, backend: u32, state: FlowState, nat: bool) -> NewFlow {
    NewFlow {
        key: key(i),
        service: ServiceId(1),
        backend: BackendId(backend),
        endpoint: ep(backend),
        nat,
        state,
        template: None,
    }
}

#[test]
fn a_synced_flow_counts_for_no_backend_until_its_first_packet_makes_it_ours() {
    let mut t = table(8);
    assert_eq!(
        t.install(synced(1, 3, FlowState::Established, true), 100),
        Installed::New
    );
    assert_eq!((t.len(), t.synced()), (1, 1));
    assert_eq!(t.conns(BackendId(3)), Conns::default());
    assert_eq!(t.count(FlowState::Established), 0);
    // Found by both directions already (NAT).
    let slot = t.lookup(&key(1), 100).unwrap();
    assert!(t.get(slot).is_synced());
    let rk = ReplyKey {
        protocol: 6,
        backend: ep(3),
        client: key(1).client,
        client_port: key(1).client_port,
    };
    assert_eq!(t.lookup_reply(&rk, 100), Some(slot));
    // The first packet, in the same second: adopted.
    assert_eq!(t.touch(slot, Some(tcp::ACK), 100), FlowState::Established);
    assert!(!t.get(slot).is_synced());
    assert_eq!((t.synced(), t.count(FlowState::Established)), (0, 1));
    assert_eq!(
        t.conns(BackendId(3)),
        Conns {
            active: 1,
            inactive: 0
        }
    );
    assert_eq!(t.stats().sync_adopted, 1);
    // A peer's news of a flow of ours changes nothing.
    assert_eq!(
        t.install(synced(1, 5, FlowState::Fin, true), 101),
        Installed::Known
    );
    assert_eq!(t.get(slot).backend, BackendId(3));
    assert_eq!(t.get(slot).state, FlowState::Established);
    t.remove(slot);
    assert_eq!(t.conns(BackendId(3)), Conns::default());
}

#[test]
fn a_peers_news_replaces_its_synced_flow_and_removing_one_counts_nothing() {
    let mut t = table(8);
    t.install(synced(1, 3, FlowState::Syn, true), 100);
    assert_eq!(
        t.install(synced(1, 4, FlowState::Established, true), 101),
        Installed::Updated
    );
    assert_eq!((t.len(), t.synced()), (1, 1));
    let slot = t.lookup(&key(1), 101).unwrap();
    assert_eq!(
        (t.get(slot).backend, t.get(slot).state),
        (BackendId(4), FlowState::Established)
    );
    // The old backend's reply key is gone with it, the new one finds it.
    let rk = |b| ReplyKey {
        protocol: 6,
        backend: ep(b),
        client: key(1).client,
        client_port: key(1).client_port,
    };
    assert_eq!(t.lookup_reply(&rk(3), 101), None);
    assert_eq!(t.lookup_reply(&rk(4), 101), Some(slot));
    t.remove(slot);
    for b in [3, 4] {
        assert_eq!(t.conns(BackendId(b)), Conns::default());
    }
    assert_eq!((t.stats().sync_installed, t.stats().sync_updated), (1, 1));
}

#[test]
fn synced_flows_go_first_and_never_take_more_than_half_the_table() {
    let mut t = table(8);
    for i in 0..6 {
        t.install(synced(100 + i, 1, FlowState::Established, false), 10 + i);
    }
    // Half the table: the oldest went for each beyond four.
    assert_eq!((t.synced(), t.stats().sync_evicted), (4, 2));
    assert!(t.find(&key(100)).is_none() && t.find(&key(101)).is_none());
    assert!(t.find(&key(102)).is_some());
    // Our own flows fill the rest, then evict synced ones (oldest first) before any of ours.
    for i in 0..6 {
        add(&mut t, i, 2, FlowState::Established, 20);
    }
    assert_eq!((t.len(), t.synced()), (8, 2));
    assert!(t.find(&key(103)).is_none() && t.find(&key(104)).is_some());
    assert_eq!(t.stats().evicted_established, 0);
    add(&mut t, 6, 2, FlowState::Syn, 21);
    add(&mut t, 7, 2, FlowState::Syn, 21);
    assert_eq!((t.len(), t.synced()), (8, 0));
    // Full of ours: a peer's record is refused, nothing of ours goes.
    assert_eq!(
        t.install(synced(200, 1, FlowState::Established, false), 22),
        Installed::Full
    );
    assert_eq!((t.len(), t.stats().sync_full), (8, 1));
    assert_eq!(t.stats().evicted, 0);
    assert_eq!(t.stats().sync_evicted, 6);
}

#[test]
fn synced_flows_expire_by_their_states_timeout() {
    let mut t = table(8);
    t.install(synced(1, 1, FlowState::Established, false), 100);
    assert_eq!(t.sweep(100 + 900, 16), 0);
    assert_eq!(t.sweep(100 + 901, 16), 1);
    assert_eq!((t.len(), t.stats().sync_evicted), (0, 1));
}

#[test]
fn the_journal_hears_of_new_flows_state_changes_and_each_refresh_period() {
    let mut r = crate::sync::rings(64, 10, 1000);
    let mut t = table(8);
    t.set_journal(r.journal);
    let s = add(&mut t, 1, 2, FlowState::Syn, 100);
    t.touch(s, Some(tcp::ACK), 101); // established
    t.touch(s, Some(tcp::ACK), 105); // nothing new
    t.touch(s, Some(tcp::ACK), 109); // period 0 still
    t.touch(s, Some(tcp::ACK), 110); // period 1: sent again
    t.touch(s, Some(tcp::ACK), 111);
    t.touch(s, Some(tcp::ACK), 131); // period 3
    // A synced flow is not sent back, nor is it when a packet makes it ours.
    t.install(synced(2, 3, FlowState::Established, false), 131);
    let s2 = t.find(&key(2)).unwrap();
    t.touch(s2, Some(tcp::ACK), 132);
    t.flush_journal();
    let got: Vec<_> = std::iter::from_fn(|| r.outbound.pop().ok())
        .map(|r| (r.key, r.backend, r.state, r.timeout))
        .collect();
    let e = FlowState::Established;
    assert_eq!(
        got,
        vec![
            (key(1), ep(2), FlowState::Syn, 60),
            (key(1), ep(2), e, 900),
            (key(1), ep(2), e, 900),
            (key(1), ep(2), e, 900),
        ]
    );
    assert_eq!(t.journal_counts(), (4, 0, 0));
}
