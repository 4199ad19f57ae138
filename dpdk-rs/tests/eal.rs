//! Everything that needs EAL, in one process of its own (rte_eal_init works once per process,
//! so this file holds a single test that walks through the API in order).

use std::sync::atomic::{AtomicU32, Ordering};

use dpdk_rs::{Eal, LcoreId, MbufBurst, Mempool, Port, PortConfig, Ring, port_count};

#[test]
fn eal_mempool_mbuf_ring_port_and_lcores() {
    let prefix = format!("--file-prefix=dpdkrs-test-{}", std::process::id());
    let eal = Eal::init(&[
        "-l",
        "0-1",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--log-level=*:warning",
        prefix.as_str(),
        // One port whose tx ring is its own rx ring: what goes out comes back in.
        "--vdev=net_ring0",
        "--vdev=net_null0",
    ])
    .expect("EAL init");

    // A second init is an error, not a second rte_eal_init.
    let again = Eal::init(&["--no-huge"]).unwrap_err();
    assert_eq!(again.function, "rte_eal_init");
    assert_eq!(again.code, 114, "{again}");

    assert_eq!(eal.main_lcore(), LcoreId(0));
    assert_eq!(eal.worker_lcores(), &[LcoreId(1)]);
    assert_eq!(port_count(&eal), 2);

    // Mbufs: append, prepend, adj, trim keep data and lengths consistent.
    let pool = Mempool::pktmbuf(&eal, "test_pool", 1023, 32, 2048 + 128, None).expect("pool");
    let before = pool.available();
    let mut m = pool.alloc().expect("alloc");
    assert_eq!(pool.available(), before - 1);
    assert_eq!(m.pkt_len(), 0);
    m.append(4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
    m.prepend(2).unwrap().copy_from_slice(&[9, 8]);
    assert_eq!(m.data(), &[9, 8, 1, 2, 3, 4]);
    assert!(m.adj(1));
    assert!(m.trim(2));
    assert_eq!(m.data(), &[8, 1, 2]);
    assert!(!m.adj(10), "adj past the end refuses and changes nothing");
    assert_eq!(m.pkt_len(), 3);
    let headroom = m.headroom();
    assert!(
        m.prepend(headroom + 1).is_none(),
        "prepend beyond the headroom refuses"
    );
    drop(m);
    assert_eq!(pool.available(), before, "Drop returned the mbuf");

    // A bad pool (zero data room for a pool name already used) fails with DPDK's reason.
    let dup = Mempool::pktmbuf(&eal, "test_pool", 1023, 32, 2048, None).unwrap_err();
    assert_eq!(dup.function, "rte_pktmbuf_pool_create");
    assert_eq!(dup.message, "File exists", "{dup}");

    // Ring: SP/SC, exact capacity, frees what is left when dropped.
    let mut ring = Ring::new(&eal, "test_ring", 4, None).expect("ring");
    {
        let (mut tx, mut rx) = ring.split();
        let mut burst = MbufBurst::new();
        for i in 0..6u8 {
            let mut m = pool.alloc().unwrap();
            m.append(1).unwrap()[0] = i;
            burst.push(m).unwrap();
        }
        assert_eq!(tx.enqueue_burst(&mut burst), 4, "capacity 4 is exact");
        assert_eq!(burst.len(), 2, "the rest stays with the caller");
        assert_eq!(burst.data(0), &[4]);
        burst.clear();
        let mut out = MbufBurst::new();
        assert_eq!(rx.dequeue_burst(&mut out), 4);
        assert_eq!(
            (0..4).map(|i| out.data(i)[0]).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        out.clear();
        let mut m = pool.alloc().unwrap();
        m.append(1).unwrap();
        burst.push(m).unwrap();
        assert_eq!(tx.enqueue_burst(&mut burst), 1);
    }
    assert_eq!(ring.count(), 1);
    drop(ring);
    assert_eq!(
        pool.available(),
        before,
        "ring drop freed its mbuf; bursts freed theirs"
    );

    // Drain: what it did not yield is freed when it drops; a drain that is forgotten leaks
    // those mbufs (never freed twice: the burst forgot them when the drain began).
    {
        let mut burst = MbufBurst::new();
        for _ in 0..4 {
            burst.push(pool.alloc().expect("an mbuf")).unwrap();
        }
        assert_eq!(pool.available(), before - 4);
        let mut d = burst.drain();
        let first = d.next().expect("one");
        drop(d);
        assert_eq!(
            pool.available(),
            before - 1,
            "the three not yielded were freed"
        );
        assert!(burst.is_empty());
        drop(first);
        for _ in 0..4 {
            burst.push(pool.alloc().expect("an mbuf")).unwrap();
        }
        let mut d = burst.drain();
        drop(d.next());
        std::mem::forget(d);
        assert!(
            burst.is_empty(),
            "the burst lists none of the drained mbufs"
        );
        drop(burst);
        assert_eq!(
            pool.available(),
            before - 3,
            "the forgotten drain leaked its three, and nothing was freed twice"
        );
    }
    let before = pool.available();

    // Port: a bad queue count is refused with the reason; a good one starts and loops packets.
    let too_many = PortConfig {
        rx_queues: 64,
        ..PortConfig::default()
    };
    let err = Port::configure(&eal, 0, &too_many, &pool).unwrap_err();
    assert!(err.message.contains("64 rx queues asked"), "{err}");
    let err = Port::configure(&eal, 7, &PortConfig::default(), &pool).unwrap_err();
    assert!(err.message.contains("port 7 does not exist"), "{err}");

    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 256,
        tx_desc: 256,
    };
    let mut port = Port::configure(&eal, 0, &cfg, &pool).expect("configure net_ring0");
    assert_eq!(port.name(), "net_ring0");
    assert_eq!(port.driver(), "net_ring");
    port.start().expect("start");
    assert!(port.link().unwrap().up);
    {
        let (mut rxq, mut txq) = port.take_queues().expect("queues");
        let mut burst = MbufBurst::new();
        for i in 0..10u8 {
            let mut m = pool.alloc().unwrap();
            m.append(60).unwrap().fill(i);
            burst.push(m).unwrap();
        }
        assert_eq!(txq[0].tx_burst(&mut burst), 10);
        assert!(burst.is_empty());
        assert_eq!(rxq[0].rx_burst(&mut burst, 32), 10);
        assert_eq!(burst.bytes(), 600);
        assert_eq!(burst.data(3), &[3u8; 60][..]);
        burst.clear();
    }
    let stats = port.stats().unwrap();
    assert_eq!((stats.tx_packets, stats.rx_packets), (10, 10));
    // net_ring counts packets but not bytes (its stats leave ibytes/obytes at 0).
    assert_eq!((stats.tx_bytes, stats.rx_bytes), (0, 0));
    let xstats = port.xstats().unwrap();
    assert!(
        xstats
            .iter()
            .any(|(n, v)| n == "rx_good_packets" && *v == 10),
        "{xstats:?}"
    );
    assert!(port.take_queues().is_none(), "queues are handed out once");
    port.close().expect("close");
    assert_eq!(pool.available(), before, "no mbuf leaked through the port");

    // Lcores: work runs on the worker, main runs here, both are joined.
    let ran_on = AtomicU32::new(u32::MAX);
    let seen_main = eal
        .run_on_workers(
            eal.worker_lcores()
                .iter()
                .map(|l| {
                    let (ran_on, eal) = (&ran_on, &eal);
                    (*l, move || {
                        let on = eal.current_lcore().map_or(u32::MAX, |c| c.0);
                        ran_on.store(on, Ordering::SeqCst)
                    })
                })
                .collect(),
            || eal.current_lcore(),
        )
        .expect("launch");
    assert_eq!(ran_on.load(Ordering::SeqCst), 1);
    assert_eq!(seen_main, Some(LcoreId(0)));
    // A panicking worker is reported, not propagated into C.
    let err = eal
        .run_on_workers(
            eal.worker_lcores()
                .iter()
                .map(|l| (*l, || panic!("worker fails")))
                .collect(),
            || (),
        )
        .unwrap_err();
    assert!(err.message.contains("lcore 1 panicked"), "{err}");
    // Launching on the main lcore is refused.
    assert!(
        eal.run_on_workers(vec![(LcoreId(0), || ())], || ())
            .is_err()
    );

    // EAL leaves its runtime folder behind; this test's prefix is its own, so remove it.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/dpdkrs-test-{}", std::process::id()));
}
