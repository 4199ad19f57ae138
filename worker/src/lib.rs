//! The loop each worker lcore runs (DPDK's l2fwd/l3fwd shape): rx bursts, `process` on every
//! packet, per-interface tx buffers flushed when full or after a drain interval counted in TSC
//! cycles, drops freed in bulk, NAT packets of other workers handed over on SP/SC rings.
//! Nothing here allocates, locks, logs or makes a system call per packet.
//!
//! This crate is the only glue between the packet logic (`dataplane`, plain Rust over byte
//! slices) and DPDK (`dpdk-rs`): the logic crates build and test without libdpdk.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::command::{Command, FlowDump};
use dataplane::counters::WorkerCounters;
use dataplane::drop_reason::DropReason;
use dataplane::flow::FlowTableStats;
use dataplane::neighbor::{HoldQueue, NeighborEvent, Released};
use dataplane::packet::PacketBuf;
use dataplane::pipeline::{
    Action, WARM_ABOVE_BYTES, Warmed, WorkerState, process_hinted, warm_burst,
};
use dataplane::shared::{Reader, SharedSnapshot};
pub use dpdk_rs::MAX_BURST;
use dpdk_rs::{MbufBurst, MbufMut, RingConsumer, RingProducer, RxQueue, TxQueue};

// A burst as DPDK hands it over is one the pipeline can warm and process whole.
const _: () = assert!(MAX_BURST == dataplane::pipeline::MAX_BURST);

/// An mbuf as the pipeline sees it: its bytes, and room to grow at the front (encapsulation)
/// or back.
struct Packet<'b>(MbufMut<'b>);

impl PacketBuf for Packet<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0.data()
    }

    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| self.0.prepend(n))
    }

    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        u16::try_from(len).is_ok_and(|l| self.0.set_len(l))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    pub burst: usize,
    /// Sleep this long after a round in which nothing arrived (None: busy-poll).
    pub idle_sleep: Option<Duration>,
    /// TSC cycles per second (`dpdk_rs::tsc_hz()`).
    pub tsc_hz: u64,
    /// Test hook: worker 0 stops polling for the second duration, the first after its start.
    pub test_stall: Option<(Duration, Duration)>,
}

/// Flush partly filled tx buffers after this long (DPDK's examples use ~100 µs).
const DRAIN_US: u64 = 100;
/// How often a worker looks for the control side's commands and the peers' flows (a command
/// waits this long at most before a busy worker takes it).
const CHORES_US: u64 = 10;
/// How often the connection counts are copied out for the control side.
const MIRRORS_PER_SECOND: u64 = 10;
/// Expired flows removed between bursts, at most, per loop iteration.
const SWEEP_PER_ITERATION: usize = 64;
/// Peers' flows installed per look, at most (6.4 million a second when busy).
const SYNC_PER_LOOK: usize = 64;
/// Packets a worker holds for next hops being resolved: in all, and for one next hop.
pub const HOLD_CAPACITY: usize = 256;
const HOLD_PER_NEIGHBOR: usize = 16;

/// Everything one worker owns.
pub struct Worker<'p> {
    pub index: usize,
    /// (interface index, queue) pairs this worker polls.
    pub rx: Vec<(u16, RxQueue<'p>)>,
    /// One tx queue per interface, indexed by interface.
    pub tx: Vec<TxQueue<'p>>,
    /// Rings to each other worker (None for itself), and from each other worker.
    pub to_workers: Vec<Option<RingProducer<'p>>>,
    pub from_workers: Vec<RingConsumer<'p>>,
    /// DPDK port id -> interface index.
    pub interface_of_port: Vec<u16>,
    pub state: WorkerState,
    pub commands: crossbeam_channel::Receiver<Command>,
    /// Frames the control side wants sent (ARP and NDP), the egress port in each mbuf's port
    /// field; one worker has it.
    pub control_frames: Option<RingConsumer<'p>>,
    /// Where neighbour events go (the control side's table).
    pub neighbor_events: crossbeam_channel::Sender<NeighborEvent>,
    /// Per interface, this worker's queues of the kernel interface beside it (if any).
    pub kernel: Vec<Option<KernelQueues<'p>>>,
}

/// A worker's queue pair on a kernel interface (the exception path): what `process` hands to
/// the kernel is written there, what the kernel sends is read there and goes out of the port.
pub struct KernelQueues<'p> {
    pub rx: RxQueue<'p>,
    pub tx: TxQueue<'p>,
}

/// Buffers of the loop, kept together so that they are allocated once, before it starts.
struct Buffers {
    rx: MbufBurst,
    tx: Vec<MbufBurst>,
    redirect: Vec<MbufBurst>,
    dropped: MbufBurst,
    /// Per interface, what goes to its kernel interface in this loop iteration (one burst at
    /// most: each packet costs the TAP device a write).
    kernel: Vec<MbufBurst>,
    /// Packets waiting for their next hop's MAC.
    hold: HoldQueue<dpdk_rs::Mbuf>,
    /// What the warm pass hashed for each packet of the burst.
    hints: Box<[Option<Warmed>; MAX_BURST]>,
}

impl Worker<'_> {
    /// Runs until `stop` is set; a burst in progress is always finished, and what is buffered
    /// is sent before returning.
    /// Returns the flow table's statistics at the end.
    pub fn run(
        mut self,
        shared: &SharedSnapshot,
        counters: &WorkerCounters,
        stop: &AtomicBool,
        settings: LoopSettings,
    ) -> FlowTableStats {
        let mut reader = shared.reader(self.index);
        let mut seen_epoch = reader.snapshot().epoch;
        self.state.adopt(reader.snapshot());
        let mut b = Buffers {
            rx: MbufBurst::new(),
            tx: (0..self.tx.len()).map(|_| MbufBurst::new()).collect(),
            redirect: (0..self.to_workers.len())
                .map(|_| MbufBurst::new())
                .collect(),
            dropped: MbufBurst::new(),
            kernel: (0..self.tx.len()).map(|_| MbufBurst::new()).collect(),
            hold: HoldQueue::new(HOLD_CAPACITY, HOLD_PER_NEIGHBOR),
            hints: Box::new([None; MAX_BURST]),
        };
        let mut last_release = 0;
        let burst = settings.burst.clamp(1, MAX_BURST);
        let hz = settings.tsc_hz.max(1);
        let drain_cycles = hz / 1_000_000 * DRAIN_US;
        let start = dpdk_rs::rdtsc();
        let mut last_drain = start;
        let mut last_mirror = start;
        let mut last_chores = start;
        let chores_cycles = hz / 1_000_000 * CHORES_US;
        let mut stall_done = false;
        while !stop.load(Ordering::Relaxed) {
            let stall = settings
                .test_stall
                .filter(|_| self.index == 0 && !stall_done);
            // The clock and the snapshot, once per iteration.
            let tsc = dpdk_rs::rdtsc();
            let now = ((tsc - start) / hz) as u32;
            let mut changed = false;
            if reader.refresh(shared).epoch != seen_epoch {
                seen_epoch = reader.snapshot().epoch;
                self.state.adopt(reader.snapshot());
                changed = true;
            }
            // Held packets go when a snapshot resolves (or fails) their next hop, or grow
            // old: looked at when the snapshot changes and once a second.
            if !b.hold.is_empty() && (changed || now != last_release) {
                self.release_held(&mut b, &reader, counters, now, burst);
                last_release = now;
            }
            let mut polled = 0;
            for i in 0..self.rx.len() {
                let (interface, ref mut q) = self.rx[i];
                let n = q.rx_burst(&mut b.rx, burst);
                if n == 0 {
                    continue;
                }
                polled += n;
                let c = &counters.ports[interface as usize];
                c.rx_packets.add(n as u64);
                c.rx_bytes.add(b.rx.bytes());
                self.process_burst(&mut b, &reader, counters, now, burst);
            }
            if let Some(c) = self.control_frames.as_mut() {
                c.dequeue_burst(&mut b.rx);
            }
            for m in b.rx.drain() {
                let itf = self
                    .interface_of_port
                    .get(usize::from(m.port()))
                    .map_or(usize::MAX, |i| usize::from(*i));
                if itf < b.tx.len() {
                    self.queue(itf, m, &mut b.tx[itf], counters, burst);
                }
            }
            for i in 0..self.from_workers.len() {
                let n = self.from_workers[i].dequeue_burst(&mut b.rx);
                if n > 0 {
                    polled += n;
                    self.process_burst(&mut b, &reader, counters, now, burst);
                }
            }
            polled += self.exchange_with_kernel(&mut b, counters, burst);
            if tsc - last_drain >= drain_cycles {
                for itf in 0..b.tx.len() {
                    self.flush(itf, &mut b.tx[itf], counters);
                }
                last_drain = tsc;
            }
            // The control side's commands and the peers' flows, every CHORES_US: looking
            // for them costs a fence or a shared line each (crossbeam's empty channel fences),
            // on every iteration otherwise.
            if tsc - last_chores >= chores_cycles {
                last_chores = tsc;
                while let Ok(cmd) = self.commands.try_recv() {
                    match cmd {
                        Command::FlushBackend(id) => {
                            self.state.flows.flush_backend(id);
                        }
                        Command::Lookup { key, reply } => {
                            let answer = dataplane::pipeline::lookup(
                                reader.snapshot(),
                                &self.state,
                                &key,
                                now,
                            );
                            let _ = reply.try_send((self.index as u16, answer));
                        }
                        Command::RemoveFlow { key, reply } => {
                            let had = match self.state.flows.find(&key) {
                                Some(slot) => {
                                    self.state.flows.remove(slot);
                                    true
                                }
                                None => false,
                            };
                            let _ = reply.try_send((self.index as u16, had));
                        }
                        Command::DumpFlows {
                            filter,
                            mut into,
                            reply,
                        } => {
                            let room = into.capacity();
                            into.extend(
                                self.state
                                    .flows
                                    .iter()
                                    .filter(|f| filter.matches(f))
                                    .take(room)
                                    .copied(),
                            );
                            // The control side may have given up waiting; then nobody needs it.
                            let _ = reply.try_send(FlowDump {
                                worker: self.index as u16,
                                now,
                                flows: into,
                            });
                        }
                    }
                }
                // The peers' flows come in, a bounded number at a time.
                polled += self
                    .state
                    .install_synced(reader.snapshot(), now, SYNC_PER_LOOK);
            }
            // What this iteration told the peers goes to the sync thread in one chunk.
            self.state.flows.flush_journal();
            self.state.flows.sweep(now, SWEEP_PER_ITERATION);
            if tsc - last_mirror >= hz / MIRRORS_PER_SECOND {
                self.state.mirror_connections(reader.snapshot());
                last_mirror = tsc;
                if let Some((after, stall)) = stall
                    && (tsc - start) / (hz / 1000).max(1) >= after.as_millis() as u64
                {
                    std::thread::sleep(stall);
                    stall_done = true;
                }
            }
            if polled == 0
                && let Some(d) = settings.idle_sleep
            {
                std::thread::sleep(d);
            }
        }
        for itf in 0..b.tx.len() {
            self.flush(itf, &mut b.tx[itf], counters);
        }
        self.state.mirror_connections(reader.snapshot());
        reader.retire(shared);
        self.state.flows.stats()
    }

    fn process_burst(
        &mut self,
        b: &mut Buffers,
        reader: &Reader,
        counters: &WorkerCounters,
        now: u32,
        burst: usize,
    ) {
        let snap = reader.snapshot();
        let n = b.rx.len();
        // Flows that do not stay in the caches: the burst's index buckets, then its flows, are
        // prefetched first, so their cache misses overlap; the processing below then finds
        // its lines in cache, and looks them up by the hashes the warm pass computed.
        // (Interleaved with the rest of the work, each miss would be waited for alone.)
        let warmed = if self.state.flows.touched_bytes() > WARM_ABOVE_BYTES {
            warm_burst(
                (0..n).map(|i| b.rx.data(i)),
                snap,
                &self.state,
                &mut b.hints,
            )
        } else {
            0
        };
        // One pass: each packet is processed, then put where its action sends it.
        let mut rx = b.rx.drain();
        let mut i = 0;
        while let Some(mut m) = rx.next() {
            // The next packets' headers are on their way to the cache while this one runs.
            rx.prefetch(1);
            let port_interface = self
                .interface_of_port
                .get(usize::from(m.port()))
                .copied()
                .unwrap_or(u16::MAX);
            let hint = if i < warmed { b.hints[i] } else { None };
            i += 1;
            let a = process_hinted(
                &mut Packet(m.as_mut()),
                port_interface,
                snap,
                &mut self.state,
                now,
                hint,
            );
            if a == Action::Drop(DropReason::NeighborUnresolved)
                && let Some((next_hop, interface)) = self.state.neighbor_events.take_unresolved()
            {
                // Rewritten but for its Ethernet header: held until the MAC comes.
                match b.hold.hold(next_hop, interface, now, m) {
                    Ok(()) => counters.actions.held.add(1),
                    Err(m) => {
                        counters
                            .actions
                            .record(&Action::Drop(DropReason::NeighborHoldFull));
                        let _ = b.dropped.push(m);
                    }
                }
                continue;
            }
            if a == Action::Kernel {
                let itf = usize::from(port_interface);
                match b.kernel.get_mut(itf) {
                    Some(k) if self.kernel.get(itf).is_some_and(Option::is_some) => {
                        if let Err(m) = k.push(m) {
                            counters.actions.to_kernel_dropped.add(1);
                            let _ = b.dropped.push(m);
                        }
                    }
                    _ => {
                        counters.actions.to_kernel_dropped.add(1);
                        let _ = b.dropped.push(m);
                    }
                }
                continue;
            }
            counters.actions.record(&a);
            let out = match a {
                Action::Forward { interface, .. } => usize::from(interface),
                Action::Reply => usize::from(port_interface),
                Action::Redirect(w) => {
                    let w = usize::from(w);
                    if w < b.redirect.len() && self.to_workers[w].is_some() {
                        let _ = b.redirect[w].push(m);
                    } else {
                        let _ = b.dropped.push(m);
                    }
                    continue;
                }
                Action::Drop(_) | Action::Consumed | Action::Kernel => usize::MAX,
            };
            if out < b.tx.len() {
                self.queue(out, m, &mut b.tx[out], counters, burst);
            } else {
                let _ = b.dropped.push(m);
            }
        }
        drop(rx);
        b.dropped.clear();
        // A full channel loses an event; the next packet to the same next hop raises it again.
        self.state.neighbor_events.drain(|e| {
            let _ = self.neighbor_events.try_send(e);
        });
        for (w, buf) in b.redirect.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            if let Some(p) = self.to_workers[w].as_mut() {
                p.enqueue_burst(buf);
            }
            // A full ring: the owner is overloaded; drop rather than wait.
            counters.actions.redirect_dropped.add(buf.len() as u64);
            buf.clear();
        }
    }

    /// The exception path, once per loop iteration: what this iteration's bursts handed to
    /// the kernel is written to its interfaces (what they do not take is counted), and at most
    /// one burst of what the kernel sent is read from each and goes out of its port. Returns
    /// how many packets it read.
    fn exchange_with_kernel(
        &mut self,
        b: &mut Buffers,
        counters: &WorkerCounters,
        burst: usize,
    ) -> usize {
        let mut read = 0;
        for itf in 0..self.kernel.len() {
            let Some(k) = self.kernel[itf].as_mut() else {
                continue;
            };
            let out = &mut b.kernel[itf];
            if !out.is_empty() {
                let n = out.len() as u64;
                k.tx.tx_burst(out);
                let left = out.len() as u64;
                counters.actions.to_kernel.add(n - left);
                counters.actions.to_kernel_dropped.add(left);
                out.clear();
            }
            let n = k.rx.rx_burst(&mut b.rx, burst);
            if n == 0 {
                continue;
            }
            read += n;
            counters.actions.from_kernel.add(n as u64);
            for m in b.rx.drain() {
                self.queue(itf, m, &mut b.tx[itf], counters, burst);
            }
        }
        read
    }

    /// Sends the held packets whose next hop the snapshot now knows, with its MAC; drops (and
    /// counts) those whose next hop failed or that waited too long.
    fn release_held(
        &mut self,
        b: &mut Buffers,
        reader: &Reader,
        counters: &WorkerCounters,
        now: u32,
        burst: usize,
    ) {
        let snap = reader.snapshot();
        // Taken out while it hands packets to the tx buffers beside it (an empty queue in its
        // place holds no memory: nothing is allocated).
        let mut hold = std::mem::replace(&mut b.hold, HoldQueue::new(0, 0));
        hold.release(
            now,
            |a| snap.resolution(a),
            |mut m, r| match r {
                Released::Send { mac, interface } => {
                    let itf = usize::from(interface);
                    let (Some(out), true) = (snap.interfaces.get(itf), itf < b.tx.len()) else {
                        // The interface is gone from the configuration: freed, and counted.
                        counters.actions.record(&Action::Drop(DropReason::NoRoute));
                        return;
                    };
                    let f = m.data_mut();
                    f[..6].copy_from_slice(&mac.0);
                    f[6..12].copy_from_slice(&out.mac.0);
                    counters.actions.forwarded.add(1);
                    self.queue(itf, m, &mut b.tx[itf], counters, burst);
                }
                Released::Failed => {
                    counters
                        .actions
                        .record(&Action::Drop(DropReason::NeighborFailed));
                }
                Released::Expired => {
                    counters
                        .actions
                        .record(&Action::Drop(DropReason::NeighborUnresolved));
                }
            },
        );
        b.hold = hold;
    }

    /// Puts `m` in interface `itf`'s tx buffer (sending the buffer first if it is full, so
    /// nothing is freed uncounted) and sends the buffer once it holds a burst.
    #[inline]
    fn queue(
        &mut self,
        itf: usize,
        m: dpdk_rs::Mbuf,
        buf: &mut MbufBurst,
        counters: &WorkerCounters,
        burst: usize,
    ) {
        if let Err(m) = buf.push(m) {
            self.flush(itf, buf, counters);
            let _ = buf.push(m);
        }
        if buf.len() >= burst {
            self.flush(itf, buf, counters);
        }
    }

    /// Sends a tx buffer; what the queue does not take after a second try is freed and counted.
    fn flush(&mut self, itf: usize, buf: &mut MbufBurst, counters: &WorkerCounters) {
        if buf.is_empty() {
            return;
        }
        let bytes = buf.bytes();
        let before = buf.len();
        let q = &mut self.tx[itf];
        q.tx_burst(buf);
        if !buf.is_empty() {
            q.tx_burst(buf);
        }
        let left = buf.len();
        let c = &counters.ports[itf];
        c.tx_packets.add((before - left) as u64);
        // Bytes of what was sent: all of it unless something was left (then approximately).
        c.tx_bytes.add(if left == 0 {
            bytes
        } else {
            bytes * (before - left) as u64 / before as u64
        });
        if left > 0 {
            c.tx_dropped.add(left as u64);
            buf.clear();
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
    /// Mbufs that may sit in inter-worker rings and the control ring.
    pub ring_slots: u32,
    /// Per-lcore mempool cache size.
    pub cache: u32,
    /// Lcores that allocate or free (workers plus the main lcore).
    pub lcores: u32,
}

// Each worker may hold this many packets for next hops being resolved.
const HELD: u32 = HOLD_CAPACITY as u32;

impl PoolNeeds {
    /// Per-lcore mempool cache: DPDK caps it at RTE_MEMPOOL_CACHE_MAX_SIZE (512); 256 is its
    /// examples' choice.
    pub const CACHE: u32 = 256;

    /// The pool size, with the arithmetic written out:
    /// ```text
    ///   every rx descriptor holds an mbuf                 ports x rx_queues x rx_desc
    /// + every tx descriptor may hold one until sent       ports x tx_queues x tx_desc
    /// + each worker's rx burst, one tx buffer per port     workers x MAX_BURST x (1 + ports)
    ///   and one redirect buffer per worker                 + workers x workers x MAX_BURST
    /// + packets waiting in inter-worker rings             ring_slots
    /// + packets held for a next hop being resolved        workers x HOLD_CAPACITY
    /// + what per-lcore caches may hold                    lcores x cache x 1.5
    /// ```
    /// (DPDK flushes a cache above 1.5 x its size), rounded up to 2^k - 1: rte_mempool's ring
    /// holds 2^k - 1 objects, so that size wastes nothing.
    pub fn pool_size(&self) -> u32 {
        let rx = self.ports * self.rx_queues_per_port * self.rx_desc;
        let tx = self.ports * self.tx_queues_per_port * self.tx_desc;
        let max = MAX_BURST as u32;
        let bursts = self.workers * max * (1 + self.ports) + self.workers * self.workers * max;
        let caches = self.lcores * self.cache * 3 / 2;
        let need = rx + tx + bursts + self.ring_slots + self.workers * HELD + caches;
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
            ring_slots: 0,
            cache: PoolNeeds::CACHE,
            lcores: 2,
        };
        // 1024 + 1024 + 1x256x2 + 1x1x256 + 0 + 1x256 + 2x256x1.5 = 3840 -> 4095
        assert_eq!(needs.pool_size(), 4095);
        let two = PoolNeeds {
            ports: 2,
            rx_queues_per_port: 2,
            tx_queues_per_port: 2,
            workers: 2,
            lcores: 3,
            ring_slots: 2048,
            ..needs
        };
        // 2x2x1024 x2 + 2x256x3 + 2x2x256 + 2048 + 2x256 + 3x384
        //   = 8192 + 1536 + 1024 + 2048 + 512 + 1152 = 14464 -> 16383
        assert_eq!(two.pool_size(), 16383);
    }
}
