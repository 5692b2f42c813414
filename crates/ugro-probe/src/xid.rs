//! XIDs from the kernel log: parsing `NVRM: Xid (…): N, …` lines, reading `/dev/kmsg`
//! (or a replay file) and attaching each XID to its GPU by PCI bus id.
//!
//! Every event read from a kmsg record carries the boot id and the record's sequence number
//! (its identity) and a wall time derived once, when it is read, from the boot's start
//! ([`Boot`]): the same record gets the same three values in every probe process.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ugro_types::{Timestamp, Xid};

use crate::boot::Boot;
pub use crate::xid_window::XidRead;
use crate::xid_window::XidWindow;

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
        boot_id: None,
        seq: None,
    })
}

/// One kernel-log line split into its kmsg header fields and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    /// The record's sequence number (64-bit, per boot, never reused).
    pub seq: Option<u64>,
    /// Microseconds since boot.
    pub usec: Option<u64>,
    /// The message text.
    pub msg: &'a str,
}

/// Splits a kmsg record, `prio,seq,usec,flags[,…];message` (Documentation/ABI/testing/
/// dev-kmsg). A line without the header is returned whole with no sequence number and no
/// time (a plain `dmesg` line in a replay file). Continuation lines (` KEY=value`) give
/// `None`.
pub fn split_kmsg_record(line: &str) -> Option<KmsgRecord<'_>> {
    if line.starts_with(' ') {
        return None;
    }
    if let Some((head, msg)) = line.split_once(';') {
        let mut f = head.split(',');
        if let (Some(p), Some(q), Some(u)) = (f.next(), f.next(), f.next())
            && p.parse::<u32>().is_ok()
            && let (Ok(seq), Ok(usec)) = (q.parse::<u64>(), u.parse::<u64>())
        {
            return Some(KmsgRecord {
                seq: Some(seq),
                usec: Some(usec),
                msg,
            });
        }
    }
    Some(KmsgRecord {
        seq: None,
        usec: None,
        msg: line,
    })
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
/// open, so each sample reads only new records, and XIDs are kept (bounded, see
/// [`XidWindow`]) until they leave the window.
#[derive(Debug)]
pub struct XidReader {
    source: KmsgSource,
    boot: Boot,
    handle: Option<File>,
    window: XidWindow,
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

impl XidReader {
    /// A reader for `source`, a log of `boot`, keeping XIDs from the last `lookback`.
    pub fn new(source: KmsgSource, lookback: Duration, boot: Boot) -> Self {
        XidReader {
            source,
            boot,
            handle: None,
            window: XidWindow::new(lookback, MAX_XIDS_LISTED),
        }
    }

    /// The XIDs logged within the lookback window before `now`. Lines without a time (plain
    /// replay lines) are always included.
    pub fn read(&mut self, now: Timestamp) -> Result<XidRead, KmsgError> {
        match &self.source {
            KmsgSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| KmsgError {
                    path: p.display().to_string(),
                    source,
                })?;
                // A replay file is read whole every time: it may have been appended to.
                self.window.clear();
                for line in text.lines() {
                    push_line(&mut self.window, line, &self.boot);
                }
            }
            KmsgSource::Device => self.read_device()?,
        }
        self.window.expire(now);
        Ok(self.window.snapshot())
    }

    fn read_device(&mut self) -> Result<(), KmsgError> {
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
                        push_line(&mut self.window, first, &self.boot);
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

/// The XID in one kernel-log line, with its identity and its wall time derived from `boot`.
pub fn parse_line(line: &str, boot: &Boot) -> Option<Xid> {
    if !line.contains("NVRM: Xid") {
        return None;
    }
    let rec = split_kmsg_record(line)?;
    let mut x = parse_xid_message(rec.msg, rec.usec.map(|us| boot.wall_time(us)))?;
    x.seq = rec.seq;
    x.boot_id = boot.id.as_ref().ok().cloned();
    Some(x)
}

fn push_line(window: &mut XidWindow, line: &str, boot: &Boot) {
    if let Some(x) = parse_line(line, boot) {
        window.push(x);
    }
}

/// Parses replay lines (fixture `kmsg` entries) stamped at `now`: a fixture describes the
/// node as it is at probe time. Their sequence numbers are kept, so a fixture replayed by
/// two runs reports the same events.
pub fn parse_fixture_lines(lines: &[String], now: Timestamp, boot_id: Option<&str>) -> Vec<Xid> {
    lines
        .iter()
        .filter_map(|l| split_kmsg_record(l))
        .filter_map(|r| {
            let mut x = parse_xid_message(r.msg, Some(now))?;
            x.seq = r.seq;
            x.boot_id = boot_id.map(str::to_owned);
            Some(x)
        })
        .collect()
}

/// The most XIDs listed per GPU (and unattributed) in one sample. An XID storm (thousands of
/// XID 13 a minute) would otherwise make one multi-megabyte record; the most recent are what
/// a scorer needs, and the count of the rest is kept.
pub const MAX_XIDS_LISTED: usize = 64;

// The absent-map keys and their reader are part of the schema (readers count what was left out).
pub use ugro_types::sample::{UNATTRIBUTED_TRUNCATED, XIDS_TRUNCATED, truncated_count};

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
/// in the `absent` maps under [`XIDS_TRUNCATED`] / [`UNATTRIBUTED_TRUNCATED`]. `older` are the
/// events the reader's window counted but no longer keeps, by PCI address: they count as
/// left out for the GPU with that address, or for the unattributed list.
pub fn cap_xids(sec: &mut ugro_types::GpuSection, max: usize, older: &[(Option<PciKey>, u64)]) {
    let keys: Vec<Option<PciKey>> = sec
        .devices
        .iter()
        .map(|d| d.pci_bus_id.as_deref().and_then(PciKey::parse))
        .collect();
    let mut unattributed_older = 0usize;
    for (k, n) in older {
        if k.is_none() || !keys.contains(k) {
            unattributed_older += usize::try_from(*n).unwrap_or(usize::MAX);
        }
    }
    for (d, key) in sec.devices.iter_mut().zip(&keys) {
        let counted: u64 = older
            .iter()
            .filter(|(k, _)| k.is_some() && k == key)
            .map(|(_, n)| n)
            .sum();
        let n = keep_recent(&mut d.xids, max) + usize::try_from(counted).unwrap_or(usize::MAX);
        if n > 0 {
            d.absent
                .insert(XIDS_TRUNCATED.into(), truncated_note(n, max));
        }
    }
    let n = keep_recent(&mut sec.unattributed_xids, max) + unattributed_older;
    if n > 0 {
        sec.absent
            .insert(UNATTRIBUTED_TRUNCATED.into(), truncated_note(n, max));
    }
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
    fn kmsg_header_gives_sequence_and_boot_relative_time() {
        let r = split_kmsg_record("3,1234,5000000,-;NVRM: Xid (PCI:0000:3b:00): 79, x").unwrap();
        assert_eq!(r.seq, Some(1234));
        assert_eq!(r.usec, Some(5_000_000));
        assert!(r.msg.starts_with("NVRM"));
        // Newer kernels append fields after the flags (caller id): still a header.
        let r = split_kmsg_record("4,99,7,-,caller=T12;NVRM: Xid (0000:3b:00): 13, y").unwrap();
        assert_eq!((r.seq, r.usec), (Some(99), Some(7)));
        assert_eq!(split_kmsg_record(" SUBSYSTEM=pci"), None);
        let plain = split_kmsg_record("plain line").unwrap();
        assert_eq!(
            (plain.seq, plain.usec, plain.msg),
            (None, None, "plain line")
        );
    }

    fn boot(id: &str, start_ms: i64) -> Boot {
        Boot {
            id: Ok(id.to_owned()),
            start_ms,
        }
    }

    #[test]
    fn a_record_carries_boot_id_and_sequence_number_as_its_identity() {
        let b = boot("6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13", 1_795_000_000_000);
        let line = "4,10456,812345678,-;NVRM: Xid (PCI:0000:5d:00): 79, pid=1, GPU has fallen off the bus.";
        let x = parse_line(line, &b).unwrap();
        assert_eq!(
            x.identity(),
            Some(("6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13", 10456))
        );
        assert_eq!(x.ts, Some(Timestamp(1_795_000_812_345)));
        // Parsed again (another process, a restart): the same event in every field.
        assert_eq!(parse_line(line, &b), Some(x));
        // A plain dmesg line has no sequence number, so no identity.
        let plain = parse_line("NVRM: Xid (PCI:0000:5d:00): 79, x", &b).unwrap();
        assert_eq!(plain.identity(), None);
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
        let b = boot("6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13", 0);
        let mut r = XidReader::new(KmsgSource::File(p), Duration::from_secs(10), b);
        let xs = r.read(Timestamp(100_000)).unwrap().xids;
        assert_eq!(xs.len(), 1);
        assert_eq!(xs[0].code, 79);
        assert_eq!(xs[0].ts, Some(Timestamp(95_000)));
        assert_eq!(xs[0].seq, Some(2));
    }
}
