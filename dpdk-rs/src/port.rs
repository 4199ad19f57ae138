//! Ethernet ports: configure queues (with RSS when there are several), start, stop, close,
//! addresses, link and statistics. Queues are handed out once each, so that exactly one lcore
//! polls a queue, as DPDK requires.

use std::ffi::CStr;
use std::marker::PhantomData;

use crate::eal::Eal;
use crate::error::{DpdkError, Result, check};
use crate::mbuf::MbufBurst;
use crate::mempool::Mempool;
use crate::sys;

/// A DPDK port id (vdevs and PCI devices in probe order).
pub type PortId = u16;

/// How many ports EAL found (vdevs and PCI devices).
pub fn port_count(_eal: &Eal) -> u16 {
    // SAFETY: EAL is initialised (we hold an &Eal).
    unsafe { sys::rte_eth_dev_count_avail() }
}

/// Creates a virtual device after EAL start (`rte_eal_hotplug_add` on the vdev bus, which is
/// `rte_vdev_init` without linking the bus library), e.g. `net_tap_l4lb0` with
/// `iface=l4lb0,mac=02:00:00:00:00:01`, and returns its port id. The device goes away when
/// its port is closed.
pub fn create_vdev(_eal: &Eal, name: &str, args: &str) -> Result<PortId> {
    let c = |s: &str| {
        std::ffi::CString::new(s)
            .map_err(|_| DpdkError::usage("rte_eal_hotplug_add", format!("{s:?} holds a NUL byte")))
    };
    let (bus, cname, cargs) = (c("vdev")?, c(name)?, c(args)?);
    // SAFETY: EAL is initialised (we hold an &Eal); the strings are NUL-terminated and live
    // for the call, which copies them.
    check("rte_eal_hotplug_add", unsafe {
        sys::rte_eal_hotplug_add(bus.as_ptr(), cname.as_ptr(), cargs.as_ptr())
    })?;
    let mut id: PortId = 0;
    // SAFETY: cname is NUL-terminated; id is a writable u16.
    check("rte_eth_dev_get_port_by_name", unsafe {
        sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id)
    })?;
    Ok(id)
}

/// The link of a port by id, without waiting; safe from any thread while lcores poll it.
pub fn link(id: PortId) -> Result<LinkStatus> {
    let mut link = sys::rte_eth_link::default();
    // SAFETY: link is writable; an invalid id is answered with -ENODEV.
    check("rte_eth_link_get_nowait", unsafe {
        sys::rte_eth_link_get_nowait(id, &mut link)
    })?;
    Ok(LinkStatus {
        up: link.link_status() != 0,
        speed_mbps: link.link_speed,
        full_duplex: link.link_duplex() != 0,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Descriptors per queue; DPDK rounds them to what the device supports.
    pub rx_desc: u16,
    pub tx_desc: u16,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The basic counters every PMD keeps (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the hardware because rx queues were full (`imissed`).
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Rx failures for lack of mbufs.
    pub rx_nombuf: u64,
}

/// A configured port. Dropping it stops and closes it.
#[derive(Debug)]
pub struct Port {
    id: PortId,
    name: String,
    driver: String,
    config: PortConfig,
    rss_hf: u64,
    started: bool,
    closed: bool,
    queues_taken: bool,
}

impl Port {
    /// Configures port `id` with the given queues, rx descriptors filled from `pool`. With more
    /// than one rx queue, RSS over IP addresses and TCP/UDP ports spreads the flows (as much of
    /// it as the device offers).
    pub fn configure(eal: &Eal, id: PortId, config: &PortConfig, pool: &Mempool) -> Result<Port> {
        let count = port_count(eal);
        // SAFETY: EAL is initialised; any id may be asked about.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(DpdkError::usage(
                "rte_eth_dev_configure",
                format!(
                    "port {id} does not exist (EAL found {count} port(s); is its --vdev or PCI device given?)"
                ),
            ));
        }
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: id is valid; info is a writable rte_eth_dev_info.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(id, &mut info)
        })?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: DPDK sets driver_name to a static NUL-terminated string.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let name = port_name(id);
        if config.rx_queues == 0 || config.rx_queues > info.max_rx_queues {
            return Err(DpdkError::usage(
                "rte_eth_dev_configure",
                format!(
                    "port {id} ({name}): {} rx queues asked, the device has 1 to {}",
                    config.rx_queues, info.max_rx_queues
                ),
            ));
        }
        if config.tx_queues == 0 || config.tx_queues > info.max_tx_queues {
            return Err(DpdkError::usage(
                "rte_eth_dev_configure",
                format!(
                    "port {id} ({name}): {} tx queues asked, the device has 1 to {}",
                    config.tx_queues, info.max_tx_queues
                ),
            ));
        }

        let mut conf = sys::rte_eth_conf::default();
        let mut rss_hf = 0;
        if config.rx_queues > 1 {
            // SAFETY: plain constants defined in the shim.
            let wanted =
                unsafe { sys::l4lb_eth_rss_ip | sys::l4lb_eth_rss_tcp | sys::l4lb_eth_rss_udp };
            rss_hf = wanted & info.flow_type_rss_offloads;
            if rss_hf != 0 {
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            }
        }
        // SAFETY: id is valid; conf is a fully initialised rte_eth_conf that DPDK copies.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(id, config.rx_queues, config.tx_queues, &conf)
        })?;
        let (mut rxd, mut txd) = (config.rx_desc, config.tx_desc);
        // SAFETY: id is configured; both pointers are to live u16s.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd)
        })?;
        // SAFETY: id is valid.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) } as u32; // -1 = SOCKET_ID_ANY
        for q in 0..config.rx_queues {
            // SAFETY: id is configured with rx_queues queues; a null rxconf means the device
            // defaults; pool is a live pktmbuf pool that is never freed.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(id, q, rxd, socket, std::ptr::null(), pool.as_ptr())
            })?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: as above, with a null txconf for the device defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(id, q, txd, socket, std::ptr::null())
            })?;
        }
        let config = PortConfig {
            rx_desc: rxd,
            tx_desc: txd,
            ..config.clone()
        };
        Ok(Port {
            id,
            name,
            driver,
            config,
            rss_hf,
            started: false,
            closed: false,
            queues_taken: false,
        })
    }

    pub fn id(&self) -> PortId {
        self.id
    }

    /// The device name, e.g. `net_pcap0` or `0000:3b:00.0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The configuration as applied (descriptor counts as the device adjusted them).
    pub fn config(&self) -> &PortConfig {
        &self.config
    }

    /// The RSS hash functions in use (0 = no RSS: one queue, or the device has none).
    pub fn rss_hash_functions(&self) -> u64 {
        self.rss_hf
    }

    pub fn start(&mut self) -> Result<()> {
        // SAFETY: the port is configured with all its queues set up.
        check("rte_eth_dev_start", unsafe {
            sys::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        Ok(())
    }

    pub fn stop(&mut self) -> Result<()> {
        if self.started {
            // SAFETY: the port is started; no queue handle is alive (they borrow the port).
            check("rte_eth_dev_stop", unsafe {
                sys::rte_eth_dev_stop(self.id)
            })?;
            self.started = false;
        }
        Ok(())
    }

    /// Stops (if needed) and closes the port; `net_pcap` finishes its output file here.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.stop()?;
        self.closed = true;
        // SAFETY: the port is stopped and no queue handle is alive.
        check("rte_eth_dev_close", unsafe {
            sys::rte_eth_dev_close(self.id)
        })?;
        Ok(())
    }

    pub fn mac_address(&self) -> [u8; 6] {
        mac_address(self.id)
    }

    pub fn link(&self) -> Result<LinkStatus> {
        link(self.id)
    }

    pub fn stats(&self) -> Result<PortStats> {
        stats(self.id)
    }

    /// The device's extended statistics, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        // SAFETY: id is valid; a null array with size 0 asks for the count.
        let n = check("rte_eth_xstats_get_names", unsafe {
            sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0)
        })? as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: both arrays hold n writable elements.
        let got_names = check("rte_eth_xstats_get_names", unsafe {
            sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32)
        })? as usize;
        // SAFETY: as above.
        let got = check("rte_eth_xstats_get", unsafe {
            sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32)
        })? as usize;
        let names = &names[..got_names.min(n)];
        Ok(values[..got.min(n)]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates xstat names inside their fixed array.
                let name = unsafe { CStr::from_ptr(name.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                Some((name, v.value))
            })
            .collect())
    }

    /// Hands out the queues, each exactly once: one rx and one tx handle per queue index.
    /// They borrow the port, so it cannot be stopped or closed while any is in use.
    pub fn take_queues(&mut self) -> Option<(Vec<RxQueue<'_>>, Vec<TxQueue<'_>>)> {
        if self.queues_taken {
            return None;
        }
        self.queues_taken = true;
        let id = self.id;
        let rx = (0..self.config.rx_queues)
            .map(|q| RxQueue {
                port: id,
                queue: q,
                _port: PhantomData,
            })
            .collect();
        let tx = (0..self.config.tx_queues)
            .map(|q| TxQueue {
                port: id,
                queue: q,
                _port: PhantomData,
            })
            .collect();
        Some((rx, tx))
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

/// Basic counters of a port by id; safe to call from any thread while lcores poll the port.
pub fn stats(id: PortId) -> Result<PortStats> {
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: s is writable; an invalid id is answered with -ENODEV.
    check("rte_eth_stats_get", unsafe {
        sys::rte_eth_stats_get(id, &mut s)
    })?;
    Ok(PortStats {
        rx_packets: s.ipackets,
        tx_packets: s.opackets,
        rx_bytes: s.ibytes,
        tx_bytes: s.obytes,
        rx_missed: s.imissed,
        rx_errors: s.ierrors,
        tx_errors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

fn mac_address(id: PortId) -> [u8; 6] {
    let mut mac = sys::rte_ether_addr::default();
    // SAFETY: mac is writable; an invalid id leaves it zeroed.
    unsafe { sys::rte_eth_macaddr_get(id, &mut mac) };
    mac.addr_bytes
}

fn port_name(id: PortId) -> String {
    let mut buf = [0 as std::os::raw::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, which DPDK fills with a NUL-terminated name.
    if unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } != 0 {
        return format!("port{id}");
    }
    // SAFETY: the call above NUL-terminated buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The right to poll one rx queue. Not `Clone`: one poller per queue.
#[derive(Debug)]
pub struct RxQueue<'p> {
    port: PortId,
    queue: u16,
    _port: PhantomData<&'p Port>,
}

impl RxQueue<'_> {
    pub fn port(&self) -> PortId {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `max` packets (and at most the burst's room) at the end of `burst`;
    /// returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize {
        let (ptr, room) = burst.spare();
        let want = room.min(max).min(u16::MAX as usize) as u16;
        // SAFETY: this handle is the queue's only poller; ptr has room for `want` pointers.
        let n = unsafe { sys::rte_eth_rx_burst(self.port, self.queue, ptr, want) } as usize;
        // SAFETY: DPDK wrote n valid mbufs that we now own.
        unsafe { burst.extend_by(n) };
        n
    }
}

/// The right to send on one tx queue. Not `Clone`: one sender per queue.
#[derive(Debug)]
pub struct TxQueue<'p> {
    port: PortId,
    queue: u16,
    _port: PhantomData<&'p Port>,
}

impl TxQueue<'_> {
    pub fn port(&self) -> PortId {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Sends as much of `burst` as the queue takes, from the front; what was not taken stays in
    /// the burst (the caller retries or frees it). Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let len = burst.len().min(u16::MAX as usize) as u16;
        // SAFETY: this handle is the queue's only sender; the burst owns `len` valid mbufs,
        // and the ones DPDK accepts are forgotten by consume_front.
        let n = unsafe { sys::rte_eth_tx_burst(self.port, self.queue, burst.as_mut_ptr(), len) }
            as usize;
        burst.consume_front(n);
        n
    }
}
