//! Which boot this is, and when it started: what turns a kmsg record into an event with a
//! stable identity and a stable wall time.
//!
//! The boot's wall-clock start is the kernel's `btime` (`/proc/stat`), not "now minus
//! CLOCK_MONOTONIC" computed per process: two clock reads never happen at the same instant, so
//! that difference moves by a millisecond between runs, and the same kernel record got a
//! different timestamp from each probe. `btime` is one number the kernel keeps for the boot;
//! every reader sees the same value, so a record's time is the same in every probe process.
//! It is whole seconds (a record's wall time can be up to 1 s early) and moves only when the
//! wall clock is stepped; the kmsg clock itself is not NTP-disciplined either, so neither
//! makes a record's time more exact than that.

use std::path::Path;

use ugro_types::Timestamp;

/// The boot a kernel log belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `/proc/sys/kernel/random/boot_id`, or `--boot-id` for a replay; the error says why
    /// there is none.
    pub id: Result<String, String>,
    /// Wall-clock time of boot, milliseconds since the epoch.
    pub start_ms: i64,
}

impl Boot {
    /// This host's boot, read from `proc_root` (normally `/proc`).
    pub fn of_host(proc_root: &Path) -> Boot {
        Boot {
            id: read_boot_id(proc_root),
            start_ms: boot_start_ms(proc_root),
        }
    }

    /// The wall time of a kmsg record logged `usec` microseconds after boot.
    pub fn wall_time(&self, usec: u64) -> Timestamp {
        Timestamp(
            self.start_ms
                .saturating_add(i64::try_from(usec / 1000).unwrap_or(i64::MAX)),
        )
    }
}

/// This boot's id from `proc_root/sys/kernel/random/boot_id`.
pub fn read_boot_id(proc_root: &Path) -> Result<String, String> {
    let p = proc_root.join("sys/kernel/random/boot_id");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    validate_boot_id(text.trim()).map_err(|e| format!("{}: {e}", p.display()))
}

/// A boot id is the kernel's random UUID: 8-4-4-4-12 lower-case hex digits. Upper case is
/// accepted for `--boot-id` and folded, so one boot has one spelling.
pub fn validate_boot_id(id: &str) -> Result<String, String> {
    let groups: Vec<&str> = id.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if lens == [8, 4, 4, 4, 12] && hex {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(format!(
            "{id:?} is not a boot id (a UUID like 0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60)"
        ))
    }
}

/// `btime` from `proc_root/stat`, in milliseconds; without it (no such file, a `/proc` that
/// hides it), now − CLOCK_MONOTONIC, computed once by the caller and kept.
pub fn boot_start_ms(proc_root: &Path) -> i64 {
    std::fs::read_to_string(proc_root.join("stat"))
        .ok()
        .and_then(|t| parse_btime(&t))
        .map_or_else(monotonic_boot_ms, |s| s.saturating_mul(1000))
}

fn parse_btime(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn monotonic_boot_ms() -> i64 {
    let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let mono_ms = mono.tv_sec.saturating_mul(1000) + mono.tv_nsec / 1_000_000;
    Timestamp::now().millis() - mono_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_start_is_btime_so_every_process_derives_the_same_record_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("stat"),
            "cpu  1 2 3 4\nintr 5\nbtime 1795000000\nprocesses 9\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("sys/kernel/random")).unwrap();
        std::fs::write(
            d.path().join("sys/kernel/random/boot_id"),
            "6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13\n",
        )
        .unwrap();
        let a = Boot::of_host(d.path());
        let b = Boot::of_host(d.path());
        assert_eq!(a, b);
        assert_eq!(a.start_ms, 1_795_000_000_000);
        assert_eq!(a.wall_time(2_500_999), Timestamp(1_795_000_002_500));
        assert_eq!(a.id.as_deref(), Ok("6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13"));
    }

    #[test]
    fn the_real_host_has_a_boot_id_and_btime() {
        let b = Boot::of_host(Path::new("/proc"));
        assert!(b.id.is_ok(), "{:?}", b.id);
        let btime = parse_btime(&std::fs::read_to_string("/proc/stat").unwrap()).unwrap();
        assert_eq!(b.start_ms, btime * 1000);
    }

    #[test]
    fn boot_ids_must_look_like_the_kernels() {
        assert_eq!(
            validate_boot_id("6F1A7C52-3B0E-4D8E-9C41-2A5B7E9D0F13").unwrap(),
            "6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f13"
        );
        assert!(validate_boot_id("boot-1").is_err());
        assert!(validate_boot_id("6f1a7c52-3b0e-4d8e-9c41-2a5b7e9d0f1g").is_err());
        assert!(validate_boot_id("").is_err());
    }

    #[test]
    fn a_missing_boot_id_says_which_file() {
        let d = tempfile::tempdir().unwrap();
        let e = read_boot_id(d.path()).unwrap_err();
        assert!(e.contains("sys/kernel/random/boot_id"), "{e}");
    }
}
