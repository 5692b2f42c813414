//! XIDs from the kernel log: parsing `NVRM: Xid (…): N, …` lines, reading `/dev/kmsg`
//! (or a replay file) and attaching each XID to its GPU by PCI bus id.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ugro_types::{Timestamp, Xid};

/// A PCI address reduced to what both NVML (`00000000:3B:00.0`) and the driver's XID lines
/// (`PCI:0000:3b:00`, `0000:3b:00`) carry: domain, bus, device. The function is dropped
/// because XID lines leave it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciKey {
    domain: u32,
    bus: u8,
    device: u8,
}

impl PciKey {
    /// Parses `[PCI:][domain:]bus:device[.function]`, hex, any case, any domain width.
    pub fn parse(s: &str) -> Option<PciKey> {
        let s = s.trim();
        let s = s
            .strip_prefix("PCI:")
            .or_else(|| s.strip_prefix("pci:"))
            .unwrap_or(s);
        let s = s.split('.').next()?;
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (u32::from_str_radix(d, 16).ok()?, *b, *v),
            [b, v] => (0, *b, *v),
            _ => return None,
        };
        Some(PciKey {
            domain,
            bus: u8::from_str_radix(bus, 16).ok()?,
            device: u8::from_str_radix(device, 16).ok()?,
        })
    }
}

/// Parses the message part of a kernel-log record. Returns `None` for anything that is not
/// an NVRM XID line.
pub fn parse_xid_message(msg: &str, ts: Option<Timestamp>) -> Option<Xid> {
    let at = msg.find("NVRM: Xid")?;
    let rest = &msg[at + "NVRM: Xid".len()..];
    let rest = rest.trim_start();
    let (pci, rest) = if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        (Some(r[..close].trim().to_owned()), &r[close + 1..])
    } else {
        (None, rest)
    };
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let code: u32 = digits.parse().ok()?;
    let after = rest[digits.len()..].trim_start_matches(',').trim();
    Some(Xid {
        code,
        pci_bus_id: pci,
        ts,
        message: (!after.is_empty()).then(|| after.to_owned()),
    })
}

/// A kmsg record header: `pri,seq,usec,flags;message`. Returns (microseconds since boot,
/// message); a line without the header is returned whole with no time (a plain `dmesg`
/// line in a replay file). Continuation lines (` KEY=value`) give `None`.
pub fn split_kmsg_record(line: &str) -> Option<(Option<u64>, &str)> {
    if line.starts_with(' ') {
        return None;
    }
    if let Some((head, msg)) = line.split_once(';') {
        let mut f = head.split(',');
        let pri = f.next();
        let _seq = f.next();
        let usec = f.next();
        if let (Some(p), Some(u)) = (pri, usec)
            && p.parse::<u32>().is_ok()
            && let Ok(us) = u.parse::<u64>()
        {
            return Some((Some(us), msg));
        }
    }
    Some((None, line))
}

/// Attaches XIDs to devices by PCI key; the rest (no bus id, or a bus id no visible GPU
/// has) are returned separately.
pub fn attach_xids(devices: &[Option<PciKey>], xids: Vec<Xid>) -> (Vec<Vec<Xid>>, Vec<Xid>) {
    let mut per = vec![Vec::new(); devices.len()];
    let mut rest = Vec::new();
    for x in xids {
        let key = x.pci_bus_id.as_deref().and_then(PciKey::parse);
        match key.and_then(|k| devices.iter().position(|d| *d == Some(k))) {
            Some(i) => per[i].push(x),
            None => rest.push(x),
        }
    }
    (per, rest)
}

/// Where kernel-log lines come from.
#[derive(Debug, Clone)]
pub enum KmsgSource {
    /// `/dev/kmsg`.
    Device,
    /// A replay file (`--kmsg-file`).
    File(PathBuf),
}

/// Keeps the kernel-log reader between samples. In resident modes the `/dev/kmsg` handle stays
/// open, so each sample reads only new records, and XIDs are kept until they leave the window.
#[derive(Debug)]
pub struct XidReader {
    source: KmsgSource,
    lookback: Duration,
    handle: Option<File>,
    seen: VecDeque<Xid>,
}

/// The kernel log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct KmsgError {
    path: String,
    source: std::io::Error,
}

impl KmsgError {
    /// Whether this is a permission problem (then the XID field is absent, not an error).
    pub fn is_permission(&self) -> bool {
        self.source.kind() == ErrorKind::PermissionDenied
    }
}

/// Wall-clock time of boot, for turning kmsg's microseconds since boot into timestamps.
/// kmsg stamps come from the kernel's local clock, which tracks CLOCK_MONOTONIC closely.
pub fn boot_time_ms() -> i64 {
    let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let mono_ms = mono.tv_sec.saturating_mul(1000) + mono.tv_nsec / 1_000_000;
    Timestamp::now().millis() - mono_ms
}

impl XidReader {
    /// A reader for `source` keeping XIDs from the last `lookback`.
    pub fn new(source: KmsgSource, lookback: Duration) -> Self {
        XidReader {
            source,
            lookback,
            handle: None,
            seen: VecDeque::new(),
        }
    }

    /// The XIDs logged within the lookback window before `now`. Lines without a time (plain
    /// replay lines) are always included.
    pub fn read(&mut self, now: Timestamp, boot_ms: i64) -> Result<Vec<Xid>, KmsgError> {
        let mut fresh = Vec::new();
        match &self.source {
            KmsgSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| KmsgError {
                    path: p.display().to_string(),
                    source,
                })?;
                // A replay file is read whole every time: it may have been appended to.
                self.seen.clear();
                for line in text.lines() {
                    push_line(&mut fresh, line, boot_ms);
                }
            }
            KmsgSource::Device => self.read_device(&mut fresh, boot_ms)?,
        }
        self.seen.extend(fresh);
        let cutoff = now.sub(self.lookback);
        self.seen.retain(|x| x.ts.is_none_or(|t| t >= cutoff));
        Ok(self.seen.iter().cloned().collect())
    }

    fn read_device(&mut self, out: &mut Vec<Xid>, boot_ms: i64) -> Result<(), KmsgError> {
        let path = "/dev/kmsg";
        let err = |source| KmsgError {
            path: path.into(),
            source,
        };
        if self.handle.is_none() {
            use rustix::fs::{Mode, OFlags};
            // A fresh open starts at the oldest record still in the ring buffer.
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err(e.into()))?;
            self.handle = Some(File::from(fd));
        }
        let Some(f) = self.handle.as_mut() else {
            return Ok(());
        };
        // One read returns one record; a record longer than the buffer fails with EINVAL.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some(first) = rec.lines().next() {
                        push_line(out, first, boot_ms);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; carry on from the next.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.handle = None;
                    return Err(err(e));
                }
            }
        }
        Ok(())
    }
}

fn push_line(out: &mut Vec<Xid>, line: &str, boot_ms: i64) {
    if !line.contains("NVRM: Xid") {
        return;
    }
    let Some((usec, msg)) = split_kmsg_record(line) else {
        return;
    };
    let ts = usec.map(|us| Timestamp(boot_ms + i64::try_from(us / 1000).unwrap_or(i64::MAX)));
    if let Some(x) = parse_xid_message(msg, ts) {
        out.push(x);
    }
}

/// Parses replay lines (fixture `kmsg` entries) stamped at `now`: a fixture describes the
/// node as it is at probe time.
pub fn parse_fixture_lines(lines: &[String], now: Timestamp) -> Vec<Xid> {
    lines
        .iter()
        .filter_map(|l| split_kmsg_record(l))
        .filter_map(|(_, msg)| parse_xid_message(msg, Some(now)))
        .collect()
}

/// The most XIDs listed per GPU (and unattributed) in one sample. An XID storm (thousands of
/// XID 13 a minute) would otherwise make one multi-megabyte record; the most recent are what
/// a scorer needs, and the count of the rest is kept.
pub const MAX_XIDS_LISTED: usize = 64;

/// Key in a device's `absent` map (and, for unattributed XIDs, the section's) saying how many
/// older XIDs were left out of the list.
pub const XIDS_TRUNCATED: &str = "xids_truncated";

/// Key in the GPU section's `absent` map for unattributed XIDs left out of the list.
pub const UNATTRIBUTED_TRUNCATED: &str = "unattributed_xids_truncated";

/// Keeps the `max` most recent XIDs of `list` (the list is in log order, oldest first) and
/// returns how many were dropped.
fn keep_recent(list: &mut Vec<Xid>, max: usize) -> usize {
    let extra = list.len().saturating_sub(max);
    if extra > 0 {
        list.drain(..extra);
    }
    extra
}

fn truncated_note(n: usize, max: usize) -> String {
    format!("{n} more XID events not listed (only the {max} most recent are)")
}

/// Caps every device's XID list and the unattributed list at `max`, naming what was left out
/// in the `absent` maps under [`XIDS_TRUNCATED`] / [`UNATTRIBUTED_TRUNCATED`].
pub fn cap_xids(sec: &mut ugro_types::GpuSection, max: usize) {
    for d in &mut sec.devices {
        let n = keep_recent(&mut d.xids, max);
        if n > 0 {
            d.absent
                .insert(XIDS_TRUNCATED.into(), truncated_note(n, max));
        }
    }
    let n = keep_recent(&mut sec.unattributed_xids, max);
    if n > 0 {
        sec.absent
            .insert(UNATTRIBUTED_TRUNCATED.into(), truncated_note(n, max));
    }
}

/// How many XIDs a [`cap_xids`] note says were left out (0 without a note).
pub fn truncated_count(note: Option<&String>) -> usize {
    note.and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// True for paths that mean the real kernel log.
pub fn is_device(p: &Path) -> bool {
    p == Path::new("/dev/kmsg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_current_and_older_driver_formats() {
        let x = parse_xid_message(
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.",
            None,
        )
        .unwrap();
        assert_eq!(x.code, 79);
        assert_eq!(x.pci_bus_id.as_deref(), Some("PCI:0000:3b:00"));
        assert_eq!(
            x.message.as_deref(),
            Some("pid=1234, name=python, GPU has fallen off the bus.")
        );
        let x = parse_xid_message("NVRM: Xid (0000:3b:00): 13, Graphics Exception", None).unwrap();
        assert_eq!(x.code, 13);
        assert!(parse_xid_message("NVRM: loading NVIDIA UNIX driver", None).is_none());
        assert!(parse_xid_message("usb 1-1: new device", None).is_none());
    }

    #[test]
    fn pci_forms_from_nvml_and_the_driver_match() {
        let nvml = PciKey::parse("00000000:3B:00.0").unwrap();
        assert_eq!(PciKey::parse("PCI:0000:3b:00"), Some(nvml));
        assert_eq!(PciKey::parse("0000:3b:00"), Some(nvml));
        assert_eq!(PciKey::parse("3b:00.0"), Some(nvml));
        assert_ne!(PciKey::parse("0000:3c:00"), Some(nvml));
        assert_eq!(PciKey::parse("garbage"), None);
    }

    #[test]
    fn kmsg_header_gives_boot_relative_time() {
        let (us, msg) =
            split_kmsg_record("3,1234,5000000,-;NVRM: Xid (PCI:0000:3b:00): 79, x").unwrap();
        assert_eq!(us, Some(5_000_000));
        assert!(msg.starts_with("NVRM"));
        assert_eq!(split_kmsg_record(" SUBSYSTEM=pci"), None);
        assert_eq!(split_kmsg_record("plain line").unwrap().0, None);
    }

    #[test]
    fn unknown_bus_ids_stay_unattributed() {
        let devs = [PciKey::parse("00000000:3B:00.0"), None];
        let xids = vec![
            parse_xid_message("NVRM: Xid (PCI:0000:3b:00): 79, a", None).unwrap(),
            parse_xid_message("NVRM: Xid (PCI:0000:86:00): 48, b", None).unwrap(),
        ];
        let (per, rest) = attach_xids(&devs, xids);
        assert_eq!(per[0].len(), 1);
        assert!(per[1].is_empty());
        assert_eq!(rest[0].code, 48);
    }

    #[test]
    fn replay_keeps_only_the_lookback_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmsg");
        // boot at t=0 ms; now = 100 s; lookback 10 s.
        std::fs::write(
            &p,
            "3,1,5000000,-;NVRM: Xid (PCI:0000:3b:00): 48, old\n\
             3,2,95000000,-;NVRM: Xid (PCI:0000:3b:00): 79, new\n\
             4,3,96000000,-;unrelated\n",
        )
        .unwrap();
        let mut r = XidReader::new(KmsgSource::File(p), Duration::from_secs(10));
        let xs = r.read(Timestamp(100_000), 0).unwrap();
        assert_eq!(xs.len(), 1);
        assert_eq!(xs[0].code, 79);
        assert_eq!(xs[0].ts, Some(Timestamp(95_000)));
    }
}
