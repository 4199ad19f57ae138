//! The loop each worker lcore runs, and the sizing of what it needs.
//!
//! At this stage a worker receives bursts, counts packets and bytes per port and frees them in
//! bulk; the runtime issue replaces the middle with the real pipeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use dpdk_rs::MAX_BURST;
use dpdk_rs::{MbufBurst, RxQueue};

use crate::counters::WorkerCounters;

/// One rx queue a worker polls, and which interface (position in the config) it belongs to.
#[derive(Debug)]
pub struct RxPort<'p> {
    pub interface: usize,
    pub queue: RxQueue<'p>,
}

#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    pub burst: usize,
    /// Sleep this long after a round in which no queue had a packet (None: busy-poll).
    pub idle_sleep: Option<Duration>,
}

/// Polls `rx` round-robin until `stop` is set; a burst in progress is always finished.
pub fn run_counting_loop(
    rx: &mut [RxPort<'_>],
    counters: &WorkerCounters,
    stop: &AtomicBool,
    settings: LoopSettings,
) {
    let mut burst = MbufBurst::new();
    let max = settings.burst.min(MAX_BURST);
    while !stop.load(Ordering::Relaxed) {
        let mut polled = 0;
        for port in rx.iter_mut() {
            let n = port.queue.rx_burst(&mut burst, max);
            if n == 0 {
                continue;
            }
            polled += n;
            let c = &counters.ports[port.interface];
            c.rx_packets.add(n as u64);
            c.rx_bytes.add(burst.bytes());
            burst.clear();
        }
        if polled == 0
            && let Some(d) = settings.idle_sleep
        {
            std::thread::sleep(d);
        }
    }
}

/// What the mbuf pool must hold, so that no queue or worker ever starves for buffers.
#[derive(Debug, Clone, Copy)]
pub struct PoolNeeds {
    pub ports: u32,
    pub rx_queues_per_port: u32,
    pub tx_queues_per_port: u32,
    pub rx_desc: u32,
    pub tx_desc: u32,
    pub workers: u32,
    pub burst: u32,
    /// Mbufs that may sit in inter-worker rings.
    pub ring_slots: u32,
    /// Per-lcore mempool cache size.
    pub cache: u32,
    /// Lcores that allocate or free (workers plus the main lcore).
    pub lcores: u32,
}

impl PoolNeeds {
    /// Per-lcore mempool cache: DPDK caps it at RTE_MEMPOOL_CACHE_MAX_SIZE (512); 256 is its
    /// examples' choice and divides the pool sizes below evenly.
    pub const CACHE: u32 = 256;

    /// The pool size, with the arithmetic written out:
    /// ```text
    ///   every rx descriptor holds an mbuf                 ports x rx_queues x rx_desc
    /// + every tx descriptor may hold one until sent       ports x tx_queues x tx_desc
    /// + each worker's rx burst and one tx buffer a port   workers x burst x (1 + ports)
    /// + packets waiting in inter-worker rings             ring_slots
    /// + what per-lcore caches may hold                    lcores x cache x 1.5
    /// ```
    /// (DPDK flushes a cache above 1.5 x its size), rounded up to 2^k - 1: rte_mempool's ring
    /// holds 2^k - 1 objects, so that size wastes nothing.
    pub fn pool_size(&self) -> u32 {
        let rx = self.ports * self.rx_queues_per_port * self.rx_desc;
        let tx = self.ports * self.tx_queues_per_port * self.tx_desc;
        let bursts = self.workers * self.burst * (1 + self.ports);
        let caches = self.lcores * self.cache * 3 / 2;
        let need = rx + tx + bursts + self.ring_slots + caches;
        (need + 1).next_power_of_two() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_covers_every_holder_and_is_a_mersenne_number() {
        let needs = PoolNeeds {
            ports: 1,
            rx_queues_per_port: 1,
            tx_queues_per_port: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            workers: 1,
            burst: 32,
            ring_slots: 0,
            cache: PoolNeeds::CACHE,
            lcores: 2,
        };
        // 1024 + 1024 + 1x32x2 + 0 + 2x256x1.5 = 2880 -> 4095
        assert_eq!(needs.pool_size(), 4095);
        let two = PoolNeeds {
            ports: 2,
            rx_queues_per_port: 2,
            tx_queues_per_port: 2,
            workers: 2,
            lcores: 3,
            ..needs
        };
        // 2x2x1024 x2 + 2x32x3 + 3x384 = 8192 + 192 + 1152 = 9536 -> 16383
        assert_eq!(two.pool_size(), 16383);
    }
}
