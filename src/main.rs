//! l4lb, the appliance: reads the configuration, starts DPDK and its ports, runs a worker loop
//! on each worker lcore, and on SIGINT/SIGTERM stops cleanly and prints the final counters.
#![deny(unsafe_code)]

mod control;
mod kernel;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use control::FrameRing;
use controlplane::config::{self, ConfigError, MAX_BACKENDS, MAX_SERVICES, Model};
use controlplane::controller::{Controller, Interface, Setup, Workers};
use controlplane::publish::Limits;
use dataplane::addr::MacAddr;
use dataplane::counters::{ServiceCounters, WorkerCounters, drop_totals, port_totals};
use dataplane::drop_reason::DropReason;
use dataplane::neighbor::NeighborEvent;
use dataplane::pipeline::WorkerState;
use dpdk_rs::{
    Eal, LcoreId, Mempool, Port, PortConfig, PortStats, Ring, RingConsumer, RingProducer, RxQueue,
    TxQueue,
};
use tracing::{info, warn};
use worker::{KernelQueues, LoopSettings, PoolNeeds, Worker};

/// Exit status for a configuration or usage error (clap uses 2 as well).
const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure at run time (DPDK, ports).
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "l4lb",
    about = "Layer-4 load balancer on DPDK: NAT, DR and TUN forwarding, LVS schedulers and Maglev",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,

    /// Configuration file (TOML). Without it, the embedded default (conf/l4lb.toml) is used.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the configuration and exit (0 if valid, 2 if not); DPDK is not started.
    #[arg(long)]
    check: bool,

    /// Print the version, the git commit and the DPDK version, and exit.
    #[arg(short = 'V', long)]
    version: bool,

    /// Log level (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Log lines as text (for people) or as JSON objects, one per line (for log shippers).
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Test hook: AFTER_MS:FOR_MS makes worker 0 stop polling for FOR_MS, AFTER_MS after the
    /// start (what /healthz reports then).
    #[arg(long, value_name = "AFTER_MS:FOR_MS", hide = true, value_parser = stall_arg)]
    test_stall_worker: Option<(u64, u64)>,

    /// EAL arguments; when given they replace `[dpdk] eal_args` of the configuration.
    #[arg(last = true, value_name = "EAL ARGS")]
    eal_args: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Measure throughput like testpmd does (and, with --compare, beside it): runs
    /// `l4lb-bench`, installed beside l4lb, with the same arguments (`l4lb bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `l4lb bench ARGS`: becomes `l4lb-bench ARGS` (the benchmark harness is a program of its
/// own, not part of the appliance).
fn bench(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e.with_file_name("l4lb-bench"),
        Err(e) => {
            eprintln!("l4lb bench: finding l4lb itself: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let e = std::process::Command::new(&exe).args(args).exec();
    eprintln!("l4lb bench: cannot run {}: {e}", exe.display());
    ExitCode::from(EXIT_RUNTIME)
}

fn version_text() -> String {
    format!(
        "l4lb {} (git {})\nDPDK {} (built against), {} (running)",
        env!("CARGO_PKG_VERSION"),
        env!("L4LB_GIT_COMMIT"),
        dpdk_rs::DPDK_BUILD_VERSION,
        dpdk_rs::runtime_version(),
    )
}

fn version_json() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("L4LB_GIT_COMMIT"),
        "dpdk_built_against": dpdk_rs::DPDK_BUILD_VERSION,
        "dpdk_running": dpdk_rs::runtime_version(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn stall_arg(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not AFTER_MS:FOR_MS"))?;
    let ms = |x: &str| {
        x.parse::<u64>()
            .map_err(|_| format!("{x:?} is not a number of milliseconds"))
    };
    Ok((ms(a)?, ms(b)?))
}

/// Tells systemd (`Type=notify`) how the start or the stop goes, when it asked: a datagram to
/// `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`). Without it, nothing.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        warn!("cannot tell systemd {state:?} on {path}: {e}");
    }
}

fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level {l:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object a line: timestamp, level, target, fields (the message among them).
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

/// Large allocations (the flow tables) on huge pages: DPDK's on the worker's NUMA node when
/// EAL has hugepages, transparent huge pages otherwise.
#[global_allocator]
static ALLOCATOR: dpdk_rs::memory::Allocator = dpdk_rs::memory::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Bench { args }) = &cli.command {
        return bench(args);
    }
    if cli.version {
        println!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("l4lb: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut model = match config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(m) => m,
        Err(e) => return config_failed(&e),
    };
    // The services as last changed through the API (or a reload) replace the file's.
    if let Some(path) = model.api.state_file.clone() {
        match controlplane::state::load(&path) {
            Ok(Some(services)) => {
                info!(
                    state_file = %path.display(),
                    services = services.len(),
                    "services from the state file (the configuration file's are not used)"
                );
                model.services = services;
            }
            Ok(None) => {
                info!(state_file = %path.display(), "no state file yet: services from the configuration")
            }
            Err(e) => return config_failed(&e),
        }
        match controlplane::state::load_timeouts(&path) {
            Ok(Some(t)) => {
                info!(
                    state_file = %path.display(),
                    "timeouts from the state file, as the API set them (the configuration file's are not used)"
                );
                model.timeouts = t;
            }
            Ok(None) => {}
            Err(e) => return config_failed(&e),
        }
    }
    if cli.check {
        let backends: usize = model.services.iter().map(|s| s.backends.len()).sum();
        println!(
            "{}: configuration is valid: {} interface(s), {} service(s), {} backend(s)",
            source_name(&cli),
            model.interfaces.len(),
            model.services.len(),
            backends
        );
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &model.api.state_file {
        match controlplane::state::remove_stale_temporaries(path) {
            Ok(0) => {}
            Ok(n) => {
                info!(state_file = %path.display(), removed = n, "removed what interrupted saves left")
            }
            Err(e) => warn!(state_file = %path.display(), "cannot look for stale temporaries: {e}"),
        }
    }
    let eal_args = if cli.eal_args.is_empty() {
        model.dpdk.eal_args.clone()
    } else {
        cli.eal_args.clone()
    };
    let stall = cli
        .test_stall_worker
        .map(|(after, d)| (Duration::from_millis(after), Duration::from_millis(d)));
    match run(&model, &eal_args, cli.config.as_deref(), stall) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("l4lb: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn source_name(cli: &Cli) -> String {
    cli.config.as_ref().map_or_else(
        || config::EMBEDDED_NAME.to_string(),
        |p| p.display().to_string(),
    )
}

fn config_failed(e: &ConfigError) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("l4lb: {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Slots of each ring between two workers (NAT packets handed to their flow's owner).
const RING_SLOTS: u32 = 1024;
/// Slots of the ring of control frames (ARP, NDP) to worker 0.
const CONTROL_RING_SLOTS: u32 = 256;
/// How long a change waits for every worker to use it before it answers 503.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);

/// The signals the appliance reacts to: SIGINT/SIGTERM stop it, SIGHUP reloads.
struct Signals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

fn signals() -> Result<Signals, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    Ok(Signals { stop, reload })
}

/// The mbuf pool, sized for every holder (see `PoolNeeds`) plus `[dpdk] extra_mbufs`.
fn mbuf_pool(eal: &Eal, model: &Model, n_workers: usize, lcores: usize) -> Result<Mempool, String> {
    // A kernel interface is one more port with a queue pair per worker.
    let kernels = model
        .interfaces
        .iter()
        .filter(|i| i.kernel.is_some())
        .count();
    let needs = PoolNeeds {
        ports: (model.interfaces.len() + kernels) as u32,
        rx_queues_per_port: n_workers as u32,
        tx_queues_per_port: n_workers as u32,
        rx_desc: u32::from(model.dpdk.rx_desc),
        tx_desc: u32::from(model.dpdk.tx_desc),
        workers: n_workers as u32,
        ring_slots: RING_SLOTS * (n_workers * (n_workers - 1)) as u32 + CONTROL_RING_SLOTS,
        cache: PoolNeeds::CACHE,
        lcores: lcores as u32 + 1,
    };
    let pool_size = needs.pool_size().saturating_add(model.dpdk.extra_mbufs);
    let pool = Mempool::pktmbuf(
        eal,
        "l4lb_pkts",
        pool_size,
        PoolNeeds::CACHE,
        model.dpdk.mbuf_data_room + 128,
        None,
    )
    .map_err(|e| e.to_string())?;
    info!(mbufs = pool_size, "mbuf pool created");
    Ok(pool)
}

/// Configures and starts every interface's port with one rx and one tx queue per worker.
fn start_ports(
    eal: &Eal,
    model: &Model,
    n_workers: usize,
    pool: &Mempool,
) -> Result<Vec<Port>, String> {
    let available = dpdk_rs::port_count(eal);
    for (i, itf) in model.interfaces.iter().enumerate() {
        if itf.port >= available {
            return Err(format!(
                "interfaces[{i}].port: DPDK port {} does not exist; EAL found {available} port(s) (check --vdev / PCI devices in the EAL arguments)",
                itf.port
            ));
        }
    }
    let port_config = PortConfig {
        rx_queues: n_workers as u16,
        tx_queues: n_workers as u16,
        rx_desc: model.dpdk.rx_desc,
        tx_desc: model.dpdk.tx_desc,
    };
    let mut ports = Vec::with_capacity(model.interfaces.len());
    for (i, itf) in model.interfaces.iter().enumerate() {
        let mut port = Port::configure(eal, itf.port, &port_config, pool)
            .map_err(|e| format!("interfaces[{i}]: {e}"))?;
        port.start().map_err(|e| format!("interfaces[{i}]: {e}"))?;
        let link = port.link().map_err(|e| e.to_string())?;
        info!(
            port = itf.port,
            name = port.name(),
            driver = port.driver(),
            mac = %MacAddr(port.mac_address()),
            link_up = link.up,
            speed_mbps = link.speed_mbps,
            rx_queues = port.config().rx_queues,
            rss = port.rss_hash_functions() != 0,
            "port started"
        );
        if n_workers > 1 && port.rss_hash_functions() == 0 {
            warn!(
                port = itf.port,
                "the device offers no RSS: its queue 0 gets every packet"
            );
        }
        ports.push(port);
    }
    Ok(ports)
}

/// One ring per ordered pair of workers (a -> b), in the order of `ring_pairs`.
fn ring_pairs(n_workers: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n_workers).flat_map(move |a| (0..n_workers).filter(move |b| *b != a).map(move |b| (a, b)))
}

/// What each worker gets besides its queues and rings.
struct WorkerParts {
    states: Vec<WorkerState>,
    commands: Vec<crossbeam_channel::Receiver<dataplane::command::Command>>,
    /// DPDK port id -> interface index.
    interface_of_port: Vec<u16>,
    events: crossbeam_channel::Sender<NeighborEvent>,
}

/// The workers: worker w polls rx queue w and sends on tx queue w of every port, has a ring to
/// each other worker (in the order of `ring_pairs`), and worker 0 takes the control frames.
fn assemble_workers<'p>(
    ports: &'p mut [Port],
    kernel_ports: &'p mut [Option<Port>],
    rings: &'p mut [Ring],
    control: RingConsumer<'p>,
    parts: WorkerParts,
) -> Vec<Worker<'p>> {
    let n = parts.states.len();
    let mut rx: Vec<Vec<(u16, RxQueue<'_>)>> = (0..n).map(|_| Vec::new()).collect();
    let mut tx: Vec<Vec<TxQueue<'_>>> = (0..n).map(|_| Vec::new()).collect();
    for (interface, port) in ports.iter_mut().enumerate() {
        let (rxq, txq) = port.take_queues().expect("queues are taken once");
        for (w, q) in rxq.into_iter().enumerate() {
            rx[w].push((interface as u16, q));
        }
        for (w, q) in txq.into_iter().enumerate() {
            tx[w].push(q);
        }
    }
    let mut kernel: Vec<Vec<Option<KernelQueues<'_>>>> = (0..n)
        .map(|_| (0..kernel_ports.len()).map(|_| None).collect())
        .collect();
    for (interface, port) in kernel_ports.iter_mut().enumerate() {
        let Some(port) = port else { continue };
        let (rxq, txq) = port.take_queues().expect("queues are taken once");
        for (w, (rx, tx)) in rxq.into_iter().zip(txq).enumerate() {
            kernel[w][interface] = Some(KernelQueues { rx, tx });
        }
    }
    let mut to: Vec<Vec<Option<RingProducer<'_>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<RingConsumer<'_>>> = (0..n).map(|_| Vec::new()).collect();
    for (ring, (a, b)) in rings.iter_mut().zip(ring_pairs(n)) {
        let (p, c) = ring.split();
        to[a][b] = Some(p);
        from[b].push(c);
    }
    let mut control = Some(control);
    let WorkerParts {
        states,
        commands,
        interface_of_port,
        events,
    } = parts;
    rx.into_iter()
        .zip(tx)
        .zip(to.into_iter().zip(from))
        .zip(states.into_iter().zip(commands))
        .zip(kernel)
        .enumerate()
        .map(
            |(w, ((((rx, tx), (to, from)), (state, commands)), kernel))| Worker {
                index: w,
                rx,
                tx,
                to_workers: to,
                from_workers: from,
                interface_of_port: interface_of_port.clone(),
                state,
                commands,
                control_frames: if w == 0 { control.take() } else { None },
                neighbor_events: events.clone(),
                kernel,
            },
        )
        .collect()
}

/// Starts DPDK, runs until SIGINT/SIGTERM, stops, prints the final counters.
fn run(
    model: &Model,
    eal_args: &[String],
    config_path: Option<&std::path::Path>,
    test_stall: Option<(Duration, Duration)>,
) -> Result<(), String> {
    let signals = signals()?;
    // SIGINT/SIGTERM ask for the stop; the control thread stops forwarding (`stop`) at once,
    // or after the BGP withdrawal's grace period.
    let term = &*signals.stop;
    let stop_flag = AtomicBool::new(false);
    let stop = &stop_flag;

    // The API's socket first: a taken address stops the start before DPDK does anything.
    let api_listener = std::net::TcpListener::bind(model.api.listen)
        .map_err(|e| format!("api.listen: cannot listen on {}: {e}", model.api.listen))?;
    let api_address = api_listener
        .local_addr()
        .map_err(|e| format!("api.listen: {e}"))?;

    // The sync socket too.
    let sync_socket = model
        .sync
        .as_ref()
        .map(controlplane::sync::bind)
        .transpose()?;

    info!(args = ?eal_args, "starting EAL");
    let eal =
        Eal::init(eal_args).map_err(|e| format!("{e} (EAL arguments: {})", eal_args.join(" ")))?;
    // The main lcore runs the loop itself when EAL was given no worker lcore.
    let lcores: Vec<LcoreId> = eal.worker_lcores().to_vec();
    let n_workers = lcores.len().max(1);
    let pool = mbuf_pool(&eal, model, n_workers, lcores.len())?;
    let mut ports = start_ports(&eal, model, n_workers, &pool)?;
    let mut kernel_ports: Vec<Option<Port>> = Vec::with_capacity(ports.len());
    for (i, (itf, port)) in model.interfaces.iter().zip(&ports).enumerate() {
        kernel_ports.push(match &itf.kernel {
            Some(k) => Some(kernel::start(
                &eal,
                model,
                i,
                k,
                MacAddr(port.mac_address()),
                n_workers,
                &pool,
            )?),
            None => None,
        });
    }
    let mut rings: Vec<Ring> = ring_pairs(n_workers)
        .map(|(a, b)| Ring::new(&eal, &format!("l4lb_redirect_{a}_{b}"), RING_SLOTS, None))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut control_ring =
        Ring::new(&eal, "l4lb_control", CONTROL_RING_SLOTS, None).map_err(|e| e.to_string())?;

    // The workers' own state first: the controller holds their counters and command channels.
    let states: Vec<WorkerState> = (0..n_workers)
        .map(|w| {
            // On the NUMA node of the lcore that will run it.
            let socket = eal.socket_of(lcores.get(w).copied().unwrap_or(eal.main_lcore()));
            dpdk_rs::memory::on_socket(socket, || {
                WorkerState::try_new(
                    w as u16,
                    model.dpdk.flow_capacity,
                    MAX_SERVICES,
                    MAX_BACKENDS,
                    model.timeouts,
                )
            })
            .map_err(|e| {
                format!(
                    "dpdk.flow_capacity: cannot allocate worker {w}'s flow table of {} flows (about {} MiB): {e}",
                    model.dpdk.flow_capacity,
                    (u64::from(model.dpdk.flow_capacity) * 82) >> 20
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let placed = dpdk_rs::memory::usage();
    info!(
        flow_capacity = model.dpdk.flow_capacity,
        workers = n_workers,
        dpdk_hugepages_mib = placed.dpdk_hugepages >> 20,
        transparent_huge_pages_mib = placed.advised >> 20,
        "flow tables allocated ({})",
        if placed.dpdk_hugepages > 0 {
            "in DPDK's hugepage memory"
        } else {
            "in mappings advised for transparent huge pages"
        }
    );
    // The backends' connection limits count every worker's connections.
    let mut states = states;
    let board = Arc::new(dataplane::sched::ConnBoard::new(n_workers, MAX_BACKENDS));
    for (i, s) in states.iter_mut().enumerate() {
        s.flows.join_board(Arc::clone(&board), i);
    }
    // Synchronisation: a journal and an inbound ring per worker, the other ends for the
    // sync thread.
    let mut sync_ends = controlplane::sync::WorkerEnds {
        outbound: Vec::new(),
        deliver: Vec::new(),
    };
    if let Some(sync) = &model.sync {
        for s in states.iter_mut() {
            // Each worker queues its share of the records a second the peers may get.
            let share = sync.max_records_per_second.div_ceil(n_workers as u32);
            let r = dataplane::sync::rings(sync.ring_records as usize, sync.refresh_seconds, share);
            s.flows.set_journal(r.journal);
            s.sync_in = Some(r.inbound);
            sync_ends.outbound.push(r.outbound);
            sync_ends.deliver.push(r.deliver);
        }
    }
    let sync_counters = Arc::new(controlplane::sync::SyncCounters::default());
    let (command_senders, command_receivers): (Vec<_>, Vec<_>) = (0..n_workers)
        .map(|_| crossbeam_channel::bounded(1024))
        .unzip();
    let counters: Arc<[WorkerCounters]> = (0..n_workers)
        .map(|_| WorkerCounters::new(ports.len()))
        .collect();
    let traffic: Vec<Arc<ServiceCounters>> =
        states.iter().map(|s| Arc::clone(&s.traffic)).collect();
    let interfaces: Vec<Interface> = model
        .interfaces
        .iter()
        .zip(&ports)
        .map(|(i, p)| Interface {
            port: i.port,
            name: p.name().to_string(),
            mac: MacAddr(p.mac_address()),
            addresses: i.addresses.clone(),
        })
        .collect();
    let mut controller = Controller::new(
        model.clone(),
        Setup {
            config_path: config_path.map(PathBuf::from),
            interfaces,
            workers: Workers {
                commands: command_senders.clone(),
                counters: Arc::clone(&counters),
                traffic,
            },
            publish_wait: PUBLISH_WAIT,
            limits: Limits::default(),
        },
    )
    .map_err(|e| e.to_string())?;
    let shared = Arc::clone(controller.shared());
    controller.set_sync_counters(Arc::clone(&sync_counters));
    // The BGP speaker, started from this thread (it dies with it, so with the process).
    if let Some(b) = &model.bgp {
        let speaker = controlplane::bgp::Speaker::start(b, dpdk_rs::process::die_with_parent)?;
        controller.set_speaker(speaker);
    }
    info!(
        services = model.services.len(),
        epoch = shared.current().epoch,
        "configuration published"
    );

    let settings = LoopSettings {
        burst: model.dpdk.burst,
        idle_sleep: (model.dpdk.idle_sleep_us > 0)
            .then(|| Duration::from_micros(model.dpdk.idle_sleep_us)),
        tsc_hz: dpdk_rs::tsc_hz(),
        test_stall,
    };
    let (events_tx, events_rx) = crossbeam_channel::bounded::<NeighborEvent>(4096);
    let mut interface_of_port = vec![u16::MAX; usize::from(dpdk_rs::port_count(&eal))];
    for (i, itf) in model.interfaces.iter().enumerate() {
        interface_of_port[usize::from(itf.port)] = i as u16;
    }
    let started = Instant::now();
    {
        let (control_producer, control_consumer) = control_ring.split();
        let parts = WorkerParts {
            states,
            commands: command_receivers,
            interface_of_port,
            events: events_tx,
        };
        let workers = assemble_workers(
            &mut ports,
            &mut kernel_ports,
            &mut rings,
            control_consumer,
            parts,
        );
        let (shared, counters) = (&shared, &counters);
        let mut jobs: Vec<_> = workers
            .into_iter()
            .map(|worker| {
                move || {
                    let index = worker.index;
                    worker.run(shared, &counters[index], stop, settings);
                }
            })
            .collect();
        info!(workers = n_workers, lcores = ?lcores.iter().map(|l| l.0).collect::<Vec<_>>(), "running; SIGINT or SIGTERM stops, SIGHUP reloads the configuration");
        let workers_done = AtomicBool::new(false);
        let sync_stop = AtomicBool::new(false);
        let prebuild_stop = AtomicBool::new(false);
        let (calls_tx, calls_rx) = controlplane::api::http::queues();
        let router =
            controlplane::api::http::router(calls_tx, model.api.token.as_deref(), version_json());
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::scope(|scope| -> Result<(), String> {
            // The control side and the API run on ordinary threads, never on an lcore.
            let mut frames = FrameRing {
                ring: control_producer,
                pool: &pool,
            };
            let (done, reload, events, calls) =
                (&workers_done, &*signals.reload, &events_rx, &calls_rx);
            let controller = &mut controller;
            let control = scope.spawn(move || {
                control::run(
                    controller,
                    &mut frames,
                    events,
                    calls,
                    control::Signals { reload, term, stop },
                    done,
                );
            });
            let api = std::thread::Builder::new()
                .name("l4lb-api".into())
                .spawn_scoped(scope, move || {
                    controlplane::api::http::serve(api_listener, router, async {
                        let _ = api_stopped.await;
                    })
                })
                .map_err(|e| format!("cannot start the API thread: {e}"))?;
            info!("REST API listening on http://{api_address}");
            // Maglev tables with one backend out, built before a health check, a drain or a
            // removal asks for them, in the time the control plane leaves (SCHED_IDLE).
            let prebuilder = std::thread::Builder::new()
                .name("l4lb-maglev".into())
                .spawn_scoped(scope, || {
                    use thread_priority::{
                        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                    };
                    if let Err(e) = thread_priority::set_thread_priority_and_policy(
                        thread_priority::thread_native_id(),
                        ThreadPriority::Min,
                        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
                    ) {
                        warn!("the Maglev prebuilder runs at normal priority: {e:?}");
                    }
                    dataplane::sched::prebuild_loop(PREBUILD_QUIET, &prebuild_stop);
                })
                .map_err(|e| format!("cannot start the Maglev prebuilder: {e}"))?;
            // Stopped however this closure ends (an error below too): the scope waits for it.
            let _prebuilder_stops = RaiseOnDrop(&prebuild_stop);
            let sync = match (&model.sync, sync_socket) {
                (Some(settings), Some(socket)) => {
                    let (shared, counters, stop) = (&*shared, &*sync_counters, &sync_stop);
                    let ends = sync_ends;
                    Some(
                        std::thread::Builder::new()
                            .name("l4lb-sync".into())
                            .spawn_scoped(scope, move || {
                                controlplane::sync::run(
                                    settings, socket, ends, shared, counters, stop,
                                )
                            })
                            .map_err(|e| format!("cannot start the sync thread: {e}"))?,
                    )
                }
                _ => None,
            };
            notify_systemd("READY=1");
            let result = if lcores.is_empty() {
                let work = jobs.pop().expect("one worker");
                work();
                Ok(())
            } else {
                eal.run_on_workers(lcores.iter().copied().zip(jobs).collect(), || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
                .map_err(|e| e.to_string())
            };
            workers_done.store(true, Ordering::Relaxed);
            sync_stop.store(true, Ordering::Relaxed);
            prebuild_stop.store(true, Ordering::Relaxed);
            if prebuilder.join().is_err() {
                warn!("the Maglev prebuilder panicked");
            }
            if let Some(t) = sync
                && t.join().is_err()
            {
                warn!("the sync thread panicked");
            }
            let _ = api_stop.send(());
            match api.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("the REST API stopped with an error: {e}"),
                Err(_) => warn!("the REST API thread panicked"),
            }
            control
                .join()
                .map_err(|_| "the control thread panicked".to_string())?;
            result
        })?;
        drop(command_senders);
    }
    let elapsed = started.elapsed();
    info!("stopping");
    controller.stop_speaker();
    notify_systemd("STOPPING=1");

    // The workers have stopped and copied out their last counts.
    // The kernel interfaces go with their ports (net_tap removes its device on close).
    drop(kernel_ports);
    report(ports, &counters, &controller, elapsed);
    Ok(())
}

/// Sets its flag when dropped.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long no Maglev table must have been asked for before the prebuilder builds the next
/// ones: changes come in bursts, and what the middle of one asked for is not what comes next.
const PREBUILD_QUIET: Duration = Duration::from_millis(50);

/// What l4lb prints when it stops: a line per port (`key=value`, for scripts), the actions,
/// the drops by reason, the flow table, each service and backend, the configuration.
fn report(
    ports: Vec<Port>,
    counters: &[WorkerCounters],
    controller: &Controller,
    elapsed: Duration,
) {
    let stats = controller.stats();
    let mut lines = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let pmd = port.stats().unwrap_or_default();
        let name = port.name().to_string();
        let id = port.id();
        if let Err(e) = port.close() {
            warn!(port = id, "close failed: {e}");
        }
        lines.push(port_report(id, &name, &port_totals(counters, i), &pmd));
    }
    println!("l4lb: stopped after {:.3} s", elapsed.as_secs_f64());
    for line in lines {
        println!("{line}");
    }
    println!("{}", action_report(counters));
    println!("{}", drop_report(counters));
    let f = &stats.flows;
    println!(
        "flows: created={} expired={} evicted={} evicted-established={} flushed={} syn-flood-hashed={} templates={} templates-full={}",
        f.created,
        f.expired,
        f.evicted,
        f.evicted_established,
        f.flushed,
        f.syn_flood_hashed,
        f.templates,
        f.templates_full
    );
    let y = &stats.sync;
    if y.enabled {
        println!(
            "sync: queued={} queue-full={} sent={} rate-limited={} datagrams-sent={} send-errors={} received={} datagrams-received={} missed={} deliver-full={} installed={} updated={} known={} table-full={} unknown={} adopted={} evicted={} synced-flows={}",
            y.queued,
            y.queue_full,
            y.records_sent,
            y.rate_limited,
            y.datagrams_sent,
            y.send_errors,
            y.records_received,
            y.datagrams_received,
            y.missed,
            y.deliver_full,
            y.installed,
            y.updated,
            y.known,
            y.table_full,
            y.unknown,
            y.adopted,
            y.evicted,
            y.synced_flows
        );
    }
    let c = &stats.closed_ports;
    println!(
        "closed-ports: tcp-resets={} port-unreachables={} rate-limited={}",
        c.tcp_resets, c.port_unreachables, c.rate_limited
    );
    for line in traffic_report(&stats) {
        println!("{line}");
    }
    let reloads = controller.reloads();
    println!(
        "configuration: reloads={} reloads-unchanged={} reload-failures={} epoch={}",
        reloads.ok,
        reloads.unchanged,
        reloads.failed,
        controller.epoch()
    );
}

/// One line per service and per backend of the running configuration, summed over workers.
fn traffic_report(stats: &controlplane::api::Stats) -> Vec<String> {
    let line = |what: String, t: &controlplane::api::stats::Traffic| {
        format!(
            "{what}: packets-in={} bytes-in={} packets-out={} bytes-out={} new-flows={} active={} inactive={}",
            t.packets_in, t.bytes_in, t.packets_out, t.bytes_out, t.new_flows, t.active, t.inactive
        )
    };
    let mut lines = Vec::new();
    for s in &stats.services {
        lines.push(line(format!("service {}", s.id), &s.traffic));
        for b in &s.backends {
            lines.push(line(format!("backend {}/{}", s.id, b.id), &b.traffic));
        }
    }
    lines
}

/// What happened to packets after the pipeline, summed over workers.
fn action_report(counters: &[WorkerCounters]) -> String {
    let sum = |f: fn(&WorkerCounters) -> u64| counters.iter().map(f).sum::<u64>();
    let dropped: u64 = drop_totals(counters).iter().sum();
    format!(
        "actions: forwarded={} replied={} consumed={} redirected={} redirect-dropped={} dropped={} held={} to-kernel={} to-kernel-dropped={} from-kernel={}",
        sum(|c| c.actions.forwarded.get()),
        sum(|c| c.actions.replied.get()),
        sum(|c| c.actions.consumed.get()),
        sum(|c| c.actions.redirected.get()),
        sum(|c| c.actions.redirect_dropped.get()),
        dropped,
        sum(|c| c.actions.held.get()),
        sum(|c| c.actions.to_kernel.get()),
        sum(|c| c.actions.to_kernel_dropped.get()),
        sum(|c| c.actions.from_kernel.get()),
    )
}

/// Drops by reason, the non-zero ones, `reason=count`.
fn drop_report(counters: &[WorkerCounters]) -> String {
    let totals = drop_totals(counters);
    let parts: Vec<String> = DropReason::ALL
        .iter()
        .zip(totals)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}={n}", r.name()))
        .collect();
    format!(
        "drops:{}{}",
        if parts.is_empty() { "" } else { " " },
        parts.join(" ")
    )
}

/// One line per port, `key=value` so that scripts can read it: what the workers counted,
/// then what the device itself counted as lost.
fn port_report(
    id: u16,
    name: &str,
    t: &dataplane::counters::PortTotals,
    pmd: &PortStats,
) -> String {
    format!(
        "port {id} ({name}): rx-packets={} rx-bytes={} tx-packets={} tx-bytes={} tx-dropped={} rx-missed={} rx-errors={} rx-nombuf={} tx-errors={}",
        t.rx_packets,
        t.rx_bytes,
        t.tx_packets,
        t.tx_bytes,
        t.tx_dropped,
        pmd.rx_missed,
        pmd.rx_errors,
        pmd.rx_nombuf,
        pmd.tx_errors
    )
}
