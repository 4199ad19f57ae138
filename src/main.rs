//! l4lb, the appliance: reads the configuration, starts DPDK and its ports, runs a worker loop
//! on each worker lcore, and on SIGINT/SIGTERM stops cleanly and prints the final counters.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use controlplane::config::{self, ConfigError, Model};
use dataplane::counters::{WorkerCounters, port_totals};
use dataplane::lcore::{LoopSettings, PoolNeeds, RxPort, run_counting_loop};
use dpdk_rs::{Eal, LcoreId, Mempool, Port, PortConfig, PortStats};
use tracing::{info, warn};

/// Exit status for a configuration or usage error (clap uses 2 as well).
const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure at run time (DPDK, ports).
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "l4lb",
    about = "Layer-4 load balancer on DPDK: NAT, DR and TUN forwarding, LVS schedulers and Maglev",
    disable_version_flag = true
)]
struct Cli {
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

    /// EAL arguments; when given they replace `[dpdk] eal_args` of the configuration.
    #[arg(last = true, value_name = "EAL ARGS")]
    eal_args: Vec<String>,
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

fn init_logging(level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level {l:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        println!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(cli.log_level.as_deref()) {
        eprintln!("l4lb: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let model = match config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(m) => m,
        Err(e) => return config_failed(&e),
    };
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
    let eal_args = if cli.eal_args.is_empty() {
        model.dpdk.eal_args.clone()
    } else {
        cli.eal_args.clone()
    };
    match run(&model, &eal_args) {
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

/// Starts DPDK, runs until SIGINT/SIGTERM, stops, prints the final counters.
fn run(model: &Model, eal_args: &[String]) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }

    info!(args = ?eal_args, "starting EAL");
    let eal =
        Eal::init(eal_args).map_err(|e| format!("{e} (EAL arguments: {})", eal_args.join(" ")))?;
    let available = dpdk_rs::port_count(&eal);
    for (i, itf) in model.interfaces.iter().enumerate() {
        if itf.port >= available {
            return Err(format!(
                "interfaces[{i}].port: DPDK port {} does not exist; EAL found {available} port(s) (check --vdev / PCI devices in the EAL arguments)",
                itf.port
            ));
        }
    }

    // The main lcore runs the loop itself when EAL was given no worker lcore.
    let workers: Vec<LcoreId> = eal.worker_lcores().to_vec();
    let n_workers = workers.len().max(1);
    let needs = PoolNeeds {
        ports: model.interfaces.len() as u32,
        rx_queues_per_port: n_workers as u32,
        tx_queues_per_port: n_workers as u32,
        rx_desc: u32::from(model.dpdk.rx_desc),
        tx_desc: u32::from(model.dpdk.tx_desc),
        workers: n_workers as u32,
        burst: model.dpdk.burst as u32,
        ring_slots: 0,
        cache: PoolNeeds::CACHE,
        lcores: workers.len() as u32 + 1,
    };
    let pool_size = needs.pool_size();
    let pool = Mempool::pktmbuf(
        &eal,
        "l4lb_pkts",
        pool_size,
        PoolNeeds::CACHE,
        2048 + 128,
        None,
    )
    .map_err(|e| e.to_string())?;
    info!(mbufs = pool_size, "mbuf pool created");

    let port_config = PortConfig {
        rx_queues: n_workers as u16,
        tx_queues: n_workers as u16,
        rx_desc: model.dpdk.rx_desc,
        tx_desc: model.dpdk.tx_desc,
    };
    let mut ports = Vec::with_capacity(model.interfaces.len());
    for (i, itf) in model.interfaces.iter().enumerate() {
        let mut port = Port::configure(&eal, itf.port, &port_config, &pool)
            .map_err(|e| format!("interfaces[{i}]: {e}"))?;
        port.start().map_err(|e| format!("interfaces[{i}]: {e}"))?;
        let mac = dataplane::addr::MacAddr(port.mac_address());
        let link = port.link().map_err(|e| e.to_string())?;
        info!(
            port = itf.port,
            name = port.name(),
            driver = port.driver(),
            %mac,
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

    let counters: Vec<WorkerCounters> = (0..n_workers)
        .map(|_| WorkerCounters::new(ports.len()))
        .collect();
    let settings = LoopSettings {
        burst: model.dpdk.burst,
        idle_sleep: (model.dpdk.idle_sleep_us > 0)
            .then(|| Duration::from_micros(model.dpdk.idle_sleep_us)),
    };
    let started = Instant::now();
    {
        // Worker w polls queue w of every port. Each worker takes its queues once, at start.
        let mut per_worker: Vec<Vec<RxPort<'_>>> = (0..n_workers).map(|_| Vec::new()).collect();
        for (interface, port) in ports.iter_mut().enumerate() {
            let (rx, _tx) = port.take_queues().expect("queues are taken once");
            for (w, queue) in rx.into_iter().enumerate() {
                per_worker[w].push(RxPort { interface, queue });
            }
        }
        let slots: Vec<Mutex<Option<Vec<RxPort<'_>>>>> = per_worker
            .into_iter()
            .map(|q| Mutex::new(Some(q)))
            .collect();
        let work = |index: usize| {
            let mut rx = slots[index]
                .lock()
                .expect("not poisoned")
                .take()
                .expect("each worker starts once");
            run_counting_loop(&mut rx, &counters[index], &stop, settings);
        };
        info!(workers = n_workers, lcores = ?workers.iter().map(|l| l.0).collect::<Vec<_>>(), "running; SIGINT or SIGTERM stops");
        if workers.is_empty() {
            work(0);
        } else {
            let on_lcore = |lcore: LcoreId| {
                let index = workers
                    .iter()
                    .position(|l| *l == lcore)
                    .expect("launched on a worker");
                work(index);
            };
            eal.run_on_workers(&workers, &on_lcore, || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .map_err(|e| e.to_string())?;
        }
    }
    let elapsed = started.elapsed();
    info!("stopping");

    let mut report = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let pmd = port.stats().unwrap_or_default();
        let name = port.name().to_string();
        let id = port.id();
        if let Err(e) = port.close() {
            warn!(port = id, "close failed: {e}");
        }
        report.push(port_report(id, &name, &port_totals(&counters, i), &pmd));
    }
    println!("l4lb: stopped after {:.3} s", elapsed.as_secs_f64());
    for line in report {
        println!("{line}");
    }
    Ok(())
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
