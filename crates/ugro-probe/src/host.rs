//! Host collectors: CPU (delta of `/proc/stat`), load, memory, swap, uptime, and disks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_types::{Disk, HostSection, Timestamp};

/// Cumulative CPU time from the first line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// When it was read, ms since the epoch.
    pub at_ms: i64,
    /// All ticks.
    pub total: u64,
    /// Idle + iowait ticks.
    pub idle: u64,
}

/// Parses `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_stat(text: &str, at_ms: i64) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
            // already counted in user/nice, so it is left out of the total.
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            times = Some(CpuTimes { at_ms, total, idle });
        } else if line.starts_with("cpu") {
            cpus += 1;
        } else if times.is_some() && !line.starts_with("cpu") {
            break;
        }
    }
    times.map(|t| (t, cpus))
}

/// Busy percentage between two readings; `None` when no tick elapsed.
pub fn cpu_pct(prev: &CpuTimes, now: &CpuTimes) -> Option<f64> {
    let dt = now.total.checked_sub(prev.total)?;
    if dt == 0 {
        return None;
    }
    let di = now.idle.saturating_sub(prev.idle).min(dt);
    Some(((dt - di) as f64 * 100.0 / dt as f64 * 10.0).round() / 10.0)
}

/// The two most recent readings kept between one-shot runs. Two slots, so that runs closer
/// together than `min_window` still find a reading old enough to give a meaningful delta
/// (with 100 Hz ticks a 5 ms delta is noise) and the file is rewritten at most once per
/// `min_window`, not on every run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuState {
    /// Older reading.
    pub older: Option<CpuTimes>,
    /// Newer reading.
    pub newer: Option<CpuTimes>,
}

const STATE_FORMAT: &str = "ugro-probe-cpu";
const STATE_VERSION: u32 = 1;

/// How CPU % is measured.
#[derive(Debug, Clone)]
pub struct CpuConfig {
    /// Previous-reading file for one-shot runs; `None` keeps readings in memory only.
    pub state_file: Option<PathBuf>,
    /// A previous reading older than this is not used.
    pub max_age: Duration,
    /// A previous reading younger than this is not used (too few ticks).
    pub min_window: Duration,
    /// Sleep this long to measure when no usable previous reading exists; zero means report
    /// `cpu_pct` absent instead of sleeping.
    pub window: Duration,
}

/// Chooses the previous reading to use and the state to keep. Pure: the clock is `now.at_ms`.
pub fn choose_prev(
    state: &CpuState,
    now: &CpuTimes,
    cfg: &CpuConfig,
) -> (Option<CpuTimes>, CpuState) {
    let min = i64::try_from(cfg.min_window.as_millis()).unwrap_or(i64::MAX);
    let max = i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX);
    let usable = |t: &CpuTimes| {
        let age = now.at_ms - t.at_ms;
        age >= min && age <= max && t.total <= now.total
    };
    match (state.older, state.newer) {
        (_, Some(n)) if usable(&n) => (
            Some(n),
            CpuState {
                older: Some(n),
                newer: Some(*now),
            },
        ),
        (Some(o), Some(n)) if usable(&o) && now.at_ms - n.at_ms < min => (Some(o), state.clone()),
        (_, Some(n)) if now.at_ms - n.at_ms < min && n.total <= now.total => (None, state.clone()),
        _ => (
            None,
            CpuState {
                older: None,
                newer: Some(*now),
            },
        ),
    }
}

/// CPU measurement state shared across samples of one process.
#[derive(Debug)]
pub struct CpuTracker {
    cfg: CpuConfig,
    mem: Option<CpuState>,
}

impl CpuTracker {
    /// A tracker; the state file is read lazily on the first sample.
    pub fn new(cfg: CpuConfig) -> Self {
        CpuTracker { cfg, mem: None }
    }

    fn load(&self) -> CpuState {
        let Some(p) = &self.cfg.state_file else {
            return CpuState::default();
        };
        // Read without the lock: writes are atomic renames, so a reader sees old or new.
        let Ok(bytes) = std::fs::read(p) else {
            return CpuState::default();
        };
        #[derive(Deserialize)]
        struct Env {
            format: String,
            version: u32,
            data: CpuState,
        }
        match serde_json::from_slice::<Env>(&bytes) {
            Ok(e) if e.format == STATE_FORMAT && e.version == STATE_VERSION => e.data,
            _ => CpuState::default(),
        }
    }

    fn save(&self, st: &CpuState) {
        if let Some(p) = &self.cfg.state_file {
            let r = ugro_support::state::StateLock::acquire(p)
                .and_then(|l| l.write(STATE_FORMAT, STATE_VERSION, st));
            if let Err(e) = r {
                tracing::warn!("cpu state not saved: {e}");
            }
        }
    }

    /// Fills `cpu_pct`, `cpu_window_ms` and `cpus`.
    pub fn measure(&mut self, host: &mut HostSection, proc_root: &Path) {
        let read = |p: &Path| {
            std::fs::read_to_string(p.join("stat"))
                .ok()
                .and_then(|t| parse_stat(&t, Timestamp::now().millis()))
        };
        let Some((now, cpus)) = read(proc_root) else {
            host.absent
                .insert("cpu_pct".into(), "/proc/stat unreadable".into());
            return;
        };
        host.cpus = Some(cpus);
        let state = match &self.mem {
            Some(s) => s.clone(),
            None => self.load(),
        };
        let (prev, next) = choose_prev(&state, &now, &self.cfg);
        // Resident and asked faster than min_window: the reading kept in memory gives a short
        // but real window; sleeping instead would add --cpu-window to every such sample.
        let prev = prev.or_else(|| {
            self.cfg
                .state_file
                .is_none()
                .then_some(state.newer)
                .flatten()
                .filter(|n| n.total < now.total)
        });
        if next != state {
            self.save(&next);
        }
        self.mem = Some(next);
        let (prev, now) = match prev {
            Some(p) => (p, now),
            None if self.cfg.window.is_zero() => {
                host.absent
                    .insert("cpu_pct".into(), "no recent previous reading".into());
                return;
            }
            None => {
                std::thread::sleep(self.cfg.window);
                match read(proc_root) {
                    Some((later, _)) => (now, later),
                    None => {
                        host.absent
                            .insert("cpu_pct".into(), "/proc/stat unreadable".into());
                        return;
                    }
                }
            }
        };
        match cpu_pct(&prev, &now) {
            Some(p) => {
                host.cpu_pct = Some(p);
                host.cpu_window_ms = u64::try_from(now.at_ms - prev.at_ms).ok();
            }
            None => {
                host.absent
                    .insert("cpu_pct".into(), "no CPU ticks elapsed".into());
            }
        }
    }
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Load, memory, swap and uptime from `/proc`.
pub fn collect_basic(host: &mut HostSection, proc_root: &Path) {
    match std::fs::read_to_string(proc_root.join("loadavg")) {
        Ok(t) => {
            let v: Vec<f64> = t
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [a, b, c] = v[..] {
                host.load = Some([a, b, c]);
            }
        }
        Err(e) => {
            host.absent.insert("load".into(), e.to_string());
        }
    }
    match std::fs::read_to_string(proc_root.join("meminfo")) {
        Ok(t) => {
            host.memory_total_bytes = kb_field(&t, "MemTotal");
            host.memory_available_bytes = kb_field(&t, "MemAvailable");
            host.swap_total_bytes = kb_field(&t, "SwapTotal");
            if let (Some(tot), Some(free)) = (host.swap_total_bytes, kb_field(&t, "SwapFree")) {
                host.swap_used_bytes = Some(tot.saturating_sub(free));
            }
        }
        Err(e) => {
            host.absent.insert("memory".into(), e.to_string());
        }
    }
    match std::fs::read_to_string(proc_root.join("uptime")) {
        Ok(t) => {
            host.uptime_s = t
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
                .map(|s| s as u64);
        }
        Err(e) => {
            host.absent.insert("uptime_s".into(), e.to_string());
        }
    }
}

/// Filesystem types never reported: kernel pseudo filesystems and memory-backed ones.
pub const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "squashfs",
    "overlay_none",
    "nfsd",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "fuse.lxcfs",
    "devfs",
    "rootfs",
];

/// Network filesystems, skipped by default: a dead server would hang `statvfs`, and their
/// health is the storage system's, not the node's.
pub const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "fuse.sshfs",
    "ceph",
    "fuse.ceph",
    "ceph-fuse",
    "9p",
    "afs",
    "glusterfs",
    "fuse.glusterfs",
    "beegfs",
    "wekafs",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.rclone",
    "fuse.juicefs",
    "panfs",
    "orangefs",
    "virtiofs",
];

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor`.
    pub dev: String,
    /// Mount point (octal escapes decoded).
    pub point: String,
    /// Filesystem type.
    pub fstype: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts to report: local, non-pseudo, one per device (bind mounts of the same
/// filesystem are reported once, at the first mount point).
pub fn parse_mountinfo(text: &str, include_network: bool) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(dev), Some(point), Some(fstype)) = (l.get(2), l.get(4), r.first()) else {
            continue;
        };
        let fstype = (*fstype).to_owned();
        if PSEUDO_FS.contains(&fstype.as_str()) {
            continue;
        }
        if !include_network && NETWORK_FS.contains(&fstype.as_str()) {
            continue;
        }
        if out.iter().any(|m| m.dev == *dev) {
            continue;
        }
        out.push(Mount {
            dev: (*dev).to_owned(),
            point: unescape(point),
            fstype,
        });
    }
    out
}

/// `statvfs` of each mount. `current` names the mount being examined so that a timeout can
/// say which one hung.
pub fn collect_disks(mounts: &[Mount], current: &Arc<Mutex<String>>) -> Vec<Disk> {
    let mut out = Vec::new();
    for m in mounts {
        if let Ok(mut c) = current.lock() {
            c.clone_from(&m.point);
        }
        let Ok(st) = rustix::fs::statvfs(m.point.as_str()) else {
            continue;
        };
        let frsize = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        let total = st.f_blocks.saturating_mul(frsize);
        if total == 0 {
            continue;
        }
        let free = st.f_bfree.saturating_mul(frsize);
        let avail = st.f_bavail.saturating_mul(frsize);
        let inodes_used_pct = (st.f_files > 0).then(|| {
            let used = st.f_files.saturating_sub(st.f_ffree);
            (used as f64 * 1000.0 / st.f_files as f64).round() / 10.0
        });
        out.push(Disk {
            mount: m.point.clone(),
            fstype: Some(m.fstype.clone()),
            total_bytes: total,
            used_bytes: total.saturating_sub(free),
            available_bytes: avail,
            inodes_used_pct,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1 2 3\n";

    #[test]
    fn stat_gives_totals_and_cpu_count() {
        let (t, n) = parse_stat(STAT, 5).unwrap();
        assert_eq!(n, 2);
        assert_eq!(t.total, 1000);
        assert_eq!(t.idle, 800);
    }

    #[test]
    fn busy_share_is_one_minus_idle_share() {
        let a = CpuTimes {
            at_ms: 0,
            total: 1000,
            idle: 800,
        };
        let b = CpuTimes {
            at_ms: 1000,
            total: 1200,
            idle: 850,
        };
        assert_eq!(cpu_pct(&a, &b), Some(75.0));
        assert_eq!(cpu_pct(&b, &b), None);
    }

    fn cfg() -> CpuConfig {
        CpuConfig {
            state_file: None,
            max_age: Duration::from_secs(300),
            min_window: Duration::from_secs(1),
            window: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_resident_probe_polled_faster_than_the_min_window_uses_its_last_reading_not_a_sleep() {
        let d = tempfile::tempdir().unwrap();
        let stat = |busy: u64, idle: u64| {
            std::fs::write(
                d.path().join("stat"),
                format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1\n"),
            )
            .unwrap();
        };
        // window 0: where no previous reading is usable, cpu_pct is absent (never a sleep).
        let mut tr = CpuTracker::new(CpuConfig {
            window: Duration::ZERO,
            ..cfg()
        });
        stat(100, 900);
        let mut h = HostSection::default();
        tr.measure(&mut h, d.path());
        assert_eq!(h.cpu_pct, None);
        stat(150, 950);
        let mut h = HostSection::default();
        tr.measure(&mut h, d.path());
        assert_eq!(h.cpu_pct, Some(50.0), "{:?}", h.absent);
    }

    fn t(at_ms: i64) -> CpuTimes {
        CpuTimes {
            at_ms,
            total: u64::try_from(at_ms).unwrap(),
            idle: 0,
        }
    }

    #[test]
    fn recent_previous_reading_is_used_and_rotated() {
        let st = CpuState {
            older: None,
            newer: Some(t(0)),
        };
        let (p, next) = choose_prev(&st, &t(2000), &cfg());
        assert_eq!(p, Some(t(0)));
        assert_eq!(
            next,
            CpuState {
                older: Some(t(0)),
                newer: Some(t(2000))
            }
        );
    }

    #[test]
    fn runs_closer_than_the_min_window_use_the_older_slot_without_rewriting() {
        let st = CpuState {
            older: Some(t(0)),
            newer: Some(t(1500)),
        };
        let (p, next) = choose_prev(&st, &t(1600), &cfg());
        assert_eq!(p, Some(t(0)));
        assert_eq!(next, st);
    }

    #[test]
    fn stale_or_missing_state_means_no_previous_reading() {
        let st = CpuState {
            older: None,
            newer: Some(t(0)),
        };
        let (p, next) = choose_prev(&st, &t(400_000), &cfg());
        assert_eq!(p, None);
        assert_eq!(next.newer, Some(t(400_000)));
        let (p, _) = choose_prev(&CpuState::default(), &t(5), &cfg());
        assert_eq!(p, None);
    }

    #[test]
    fn a_reboot_invalidates_the_previous_reading() {
        let st = CpuState {
            older: None,
            newer: Some(CpuTimes {
                at_ms: 0,
                total: 9_999_999,
                idle: 0,
            }),
        };
        assert_eq!(choose_prev(&st, &t(2000), &cfg()).0, None);
    }

    #[test]
    fn mountinfo_skips_pseudo_network_and_duplicate_mounts() {
        let mi = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw - proc proc rw
24 22 0:40 / /mnt/nfs rw - nfs4 srv:/x rw
25 22 8:1 /home /srv/my\\040data rw - ext4 /dev/sda1 rw
26 22 8:2 / /scratch rw - xfs /dev/sda2 rw
";
        let m = parse_mountinfo(mi, false);
        let points: Vec<&str> = m.iter().map(|m| m.point.as_str()).collect();
        assert_eq!(points, vec!["/", "/scratch"]);
        let m = parse_mountinfo(mi, true);
        assert!(m.iter().any(|m| m.fstype == "nfs4"));
        assert_eq!(unescape("/srv/my\\040data"), "/srv/my data");
    }

    #[test]
    fn meminfo_values_are_bytes() {
        assert_eq!(
            kb_field("MemTotal:  1024 kB\nSwapFree: 0 kB\n", "MemTotal"),
            Some(1_048_576)
        );
        assert_eq!(kb_field("SwapFree:       0 kB\n", "SwapFree"), Some(0));
    }
}
