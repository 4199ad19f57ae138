//! Classic pcap files (the format net_pcap reads and writes): Ethernet, microsecond stamps.

use std::path::Path;

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

pub fn write(path: &Path, frames: &[Vec<u8>]) {
    let mut out = header();
    for (i, f) in frames.iter().enumerate() {
        record(&mut out, i as u32, f);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// A named pipe that net_pcap reads as its `rx_pcap`: the test decides when packets arrive.
/// net_pcap's read blocks while the pipe is empty, so a worker fed by it stops between the
/// test's batches (give it `burst = 1`, or a partial burst waits for the next batch). Dropping
/// the feed closes the pipe: end of file, and the worker runs on.
pub struct Feed {
    file: std::fs::File,
    sent: u32,
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

    /// Opens the pipe for writing once the appliance has opened it for reading, and writes the
    /// pcap header.
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
        let mut feed = Feed { file, sent: 0 };
        feed.write(&header());
        feed
    }

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

    pub fn send(&mut self, frames: &[Vec<u8>]) {
        let mut out = Vec::new();
        for f in frames {
            record(&mut out, self.sent, f);
            self.sent += 1;
        }
        self.write(&out);
    }

    /// Frames written so far.
    pub fn sent(&self) -> u64 {
        u64::from(self.sent)
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
