//! Classic pcap files (the format net_pcap reads and writes): Ethernet, microsecond stamps.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The file header: magic, version 2.4, thiszone, sigfigs, snaplen, linktype 1 (Ethernet).
pub fn header() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out
}

/// One record: stamped `seconds`, then the frame.
pub fn record(out: &mut Vec<u8>, seconds: u32, f: &[u8]) {
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(f.len() as u32).to_le_bytes());
    out.extend_from_slice(&(f.len() as u32).to_le_bytes());
    out.extend_from_slice(f);
}

/// Writes `frames` to a pcap file at `path`, stamped 0, 1, 2... seconds.
pub fn write(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = header();
    out.reserve(frames.iter().map(|f| 16 + f.len()).sum());
    for (i, f) in frames.iter().enumerate() {
        record(&mut out, i as u32, f);
    }
    std::fs::write(path, out)
}

/// A named pipe that net_pcap reads as its `rx_pcap`: the test decides when packets arrive.
/// net_pcap's read blocks while the pipe is empty, and a worker blocked there takes up no new
/// configuration (a change through the API would wait for it and answer 503). So while the test
/// sends nothing, the feed writes a filler frame every millisecond — broadcast, of an EtherType
/// nobody uses, which the appliance drops as `unknown_ethertype` — and the worker keeps running,
/// as it does on a NIC. Give the appliance `burst = 1` (or a partial burst waits for the next
/// frame). Dropping the feed closes the pipe: end of file, and the worker runs on.
pub struct Feed {
    pipe: Arc<Mutex<Pipe>>,
    stop: Arc<AtomicBool>,
    filler: Option<std::thread::JoinHandle<()>>,
}

struct Pipe {
    file: std::fs::File,
    /// Records written (the test's frames and the fillers).
    sent: u32,
    fillers: u64,
}

/// The filler: broadcast, EtherType 0x88b5 (IEEE 802 local experimental), padded to 60 bytes.
pub const FILLER: [u8; 60] = {
    let mut f = [0u8; 60];
    let mut i = 0;
    while i < 6 {
        f[i] = 0xff;
        i += 1;
    }
    f[6] = 0x02;
    f[11] = 0x99;
    f[12] = 0x88;
    f[13] = 0xb5;
    f
};

impl Pipe {
    fn write(&mut self, mut bytes: &[u8]) {
        use std::io::Write;
        while !bytes.is_empty() {
            match self.file.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("writing to the pcap pipe: {e}"),
            }
        }
    }

    fn send(&mut self, frames: &[&[u8]]) {
        let mut out = Vec::new();
        for f in frames {
            record(&mut out, self.sent, f);
            self.sent += 1;
        }
        self.write(&out);
    }
}

impl Feed {
    /// Makes the pipe at `path` (before the appliance starts).
    pub fn create(path: &Path) {
        let st = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(st.success(), "mkfifo {}", path.display());
    }

    /// Opens the pipe for writing once the appliance has opened it for reading, writes the
    /// pcap header, and starts the filler.
    pub fn open(path: &Path, timeout: std::time::Duration) -> Feed {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = std::time::Instant::now() + timeout;
        let file = loop {
            // O_NONBLOCK: fails with ENXIO until there is a reader, instead of hanging.
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(0o4000)
                .open(path)
            {
                Ok(f) => break f,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("nobody opened {} for reading: {e}", path.display())
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        let mut pipe = Pipe {
            file,
            sent: 0,
            fillers: 0,
        };
        pipe.write(&header());
        let pipe = Arc::new(Mutex::new(pipe));
        let stop = Arc::new(AtomicBool::new(false));
        let filler = {
            let (pipe, stop) = (Arc::clone(&pipe), Arc::clone(&stop));
            std::thread::spawn(move || {
                // Bounded: a test runs for seconds, not minutes.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    {
                        let mut p = pipe.lock().unwrap();
                        p.send(&[&FILLER]);
                        p.fillers += 1;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        Feed {
            pipe,
            stop,
            filler: Some(filler),
        }
    }

    pub fn send(&mut self, frames: &[Vec<u8>]) {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        self.pipe.lock().unwrap().send(&frames);
    }

    /// Frames written so far, the fillers included.
    pub fn sent(&self) -> u64 {
        u64::from(self.pipe.lock().unwrap().sent)
    }

    /// Fillers written so far.
    pub fn fillers(&self) -> u64 {
        self.pipe.lock().unwrap().fillers
    }

    /// Stops the filler; the pipe stays open until the feed is dropped. Returns the fillers
    /// written in all.
    pub fn stop_filler(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.filler.take() {
            let _ = t.join();
        }
        self.fillers()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop_filler();
    }
}

pub fn read(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read pcap");
    assert!(data.len() >= 24, "{} is not a pcap file", path.display());
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "pcap magic {magic:#x}"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        frames.push(data[at..at + caplen].to_vec());
        at += caplen;
    }
    frames
}
