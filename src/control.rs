//! The control thread (an ordinary thread, never an lcore): a select loop that hands API
//! calls, SIGHUP, the workers' neighbour events, health probes' results and the clock to the
//! [`Controller`], the one writer of the configuration, and copies the frames it asks for into
//! mbufs for the worker that sends them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use controlplane::api::http::{Call, CallQueues};
use controlplane::controller::Controller;
use controlplane::health::Prober;
use crossbeam_channel::Receiver;
use dataplane::neighbor::NeighborEvent;
use dpdk_rs::{MbufBurst, Mempool, RingProducer};
use tracing::error;

/// Frames of the control side (ARP, NDP) into the ring that worker 0 sends from.
pub struct FrameRing<'a> {
    pub ring: RingProducer<'a>,
    pub pool: &'a Mempool,
}

impl FrameRing<'_> {
    /// Copies `bytes` into an mbuf for DPDK port `port`; dropped if the pool or the ring is full
    /// (the neighbour timers ask again).
    fn send(&mut self, port: u16, bytes: &[u8]) {
        let Ok(mut m) = self.pool.alloc() else { return };
        let Some(room) = m.append(bytes.len() as u16) else {
            return;
        };
        room.copy_from_slice(bytes);
        m.set_port(port);
        let mut burst = MbufBurst::new();
        if burst.push(m).is_ok() {
            self.ring.enqueue_burst(&mut burst);
        }
    }
}

/// What the control thread reacts to besides its queues: SIGHUP (`reload`), SIGINT/SIGTERM
/// (`term`), and the flag it sets to stop the workers (`stop`).
pub struct Signals<'a> {
    pub reload: &'a AtomicBool,
    pub term: &'a AtomicBool,
    pub stop: &'a AtomicBool,
}

/// How often the ports' links are read (for /healthz).
const LINKS_EVERY: Duration = Duration::from_millis(500);

/// Runs until `done`: events and API calls as they come, reloads when asked, the controller's
/// timers every millisecond or so.
pub fn run(
    controller: &mut Controller,
    frames: &mut FrameRing<'_>,
    events: &Receiver<NeighborEvent>,
    calls: &CallQueues,
    signals: Signals<'_>,
    done: &AtomicBool,
) {
    let Signals { reload, term, stop } = signals;
    // When forwarding stops: at the stop signal, or the BGP grace period after it.
    let mut stop_at: Option<Instant> = None;
    controller.start();
    // The health probes run on a thread of their own and report here.
    let (probe_tx, probe_rx) = crossbeam_channel::bounded(4096);
    let prober = match Prober::spawn(probe_tx) {
        Ok(p) => Some(p),
        Err(e) => {
            error!("cannot start the health-check thread: {e}; no backend is probed");
            None
        }
    };
    // A channel whose senders are all gone is replaced by one that never delivers.
    let (mut events, mut reads, mut changes, mut probes) = (
        events.clone(),
        calls.reads.clone(),
        calls.changes.clone(),
        probe_rx,
    );
    let answer = |controller: &mut Controller, c: Call| {
        let reply = controller.handle(c.request);
        let _ = c.reply.send(reply);
    };
    let ports = controller.ports();
    let mut links_read = Instant::now() - LINKS_EVERY;
    while !done.load(Ordering::Relaxed) {
        if stop_at.is_none() && term.load(Ordering::Relaxed) {
            stop_at = Some(Instant::now() + controller.begin_stop());
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) && !stop.load(Ordering::Relaxed) {
            // The speaker goes while the dataplane still carries its sessions: its neighbours
            // hear it close them (not a hold timer later).
            controller.stop_speaker();
            stop.store(true, Ordering::Relaxed);
        }
        if links_read.elapsed() >= LINKS_EVERY {
            let links: Vec<(u16, bool)> = ports
                .iter()
                .map(|&p| (p, dpdk_rs::port_link(p).is_ok_and(|l| l.up)))
                .collect();
            controller.set_links(&links);
            links_read = Instant::now();
        }
        // Changes first: however many reads wait, a change is not held up behind them.
        while let Ok(c) = changes.try_recv() {
            answer(controller, c);
        }
        crossbeam_channel::select! {
            recv(events) -> e => match e {
                Ok(e) => {
                    controller.neighbor_event(e);
                    while let Ok(e) = events.try_recv() {
                        controller.neighbor_event(e);
                    }
                }
                Err(_) => events = crossbeam_channel::never(),
            },
            recv(changes) -> c => match c {
                Ok(c) => answer(controller, c),
                Err(_) => changes = crossbeam_channel::never(),
            },
            recv(reads) -> c => match c {
                Ok(c) => answer(controller, c),
                Err(_) => reads = crossbeam_channel::never(),
            },
            recv(probes) -> r => match r {
                Ok(r) => controller.probe_result(r),
                Err(_) => probes = crossbeam_channel::never(),
            },
            default(Duration::from_millis(1)) => {}
        }
        if reload.swap(false, Ordering::Relaxed) {
            // Refusals are logged (and counted) by the controller.
            let _ = controller.reload("SIGHUP", false);
        }
        controller.set_mbufs(frames.pool.size(), frames.pool.in_use());
        controller.tick(Instant::now());
        for f in controller.take_frames() {
            frames.send(f.port, &f.bytes);
        }
        if let (Some(p), Some(t)) = (&prober, controller.take_targets()) {
            p.set(t);
        }
    }
}
