//! Process-table health and training processes.

use std::collections::BTreeMap;
use std::path::Path;

use ugro_types::{GpuSection, ProcessSection, TrainingProcess};

/// Command-line substrings that mark a training launcher or worker.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "torchrun",
    "torch.distributed",
    "deepspeed",
    "accelerate launch",
    "accelerate-launch",
    "megatron",
    "horovodrun",
    "mpirun",
];

const MAX_COMMAND: usize = 256;

/// The state letter from `/proc/PID/stat` (the field after the parenthesised name, which
/// may itself contain spaces and parentheses).
pub fn stat_state(stat: &str) -> Option<char> {
    let close = stat.rfind(')')?;
    stat[close + 1..].trim_start().chars().next()
}

/// `/proc/PID/cmdline` (NUL-separated) as one line, whole: patterns are matched against all
/// of it, since launchers put the telling argument anywhere (a long `--env` list first).
pub fn cmdline_full(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/proc/PID/cmdline` as one line, truncated to 256 bytes for the `command` field.
pub fn cmdline_text(raw: &[u8]) -> String {
    truncate_command(cmdline_full(raw))
}

/// Cuts a command line to 256 bytes on a character boundary.
pub fn truncate_command(mut s: String) -> String {
    if s.len() > MAX_COMMAND {
        let mut cut = MAX_COMMAND;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// What one scan of `/proc` found, before NVML's processes are merged in.
#[derive(Debug, Default)]
pub struct Scan {
    /// The section without GPU-derived entries.
    pub section: ProcessSection,
    /// State letter per pid (to fill in NVML pids).
    pub states: BTreeMap<u32, char>,
}

/// Walks `proc_root`: counts, Z and D states, and pattern-matched training processes.
pub fn scan(proc_root: &Path, patterns: &[String]) -> std::io::Result<Scan> {
    let me = std::process::id();
    let mut s = Scan::default();
    let (mut total, mut z, mut d) = (0u32, 0u32, 0u32);
    for e in std::fs::read_dir(proc_root)? {
        let Ok(e) = e else { continue };
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between readdir and read: skip it silently.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(st) = stat_state(&stat) else {
            continue;
        };
        total += 1;
        match st {
            'Z' => z += 1,
            'D' => d += 1,
            _ => {}
        }
        s.states.insert(pid, st);
        if patterns.is_empty() || pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        let cmd = cmdline_full(&raw);
        if let Some(p) = patterns.iter().find(|p| cmd.contains(p.as_str())) {
            s.section.training.push(TrainingProcess {
                pid,
                command: truncate_command(cmd),
                state: Some(st.to_string()),
                gpu_memory_bytes: None,
                gpus: Vec::new(),
                matched_by: format!("pattern:{p}"),
            });
        }
    }
    s.section.total = Some(total);
    s.section.zombies = Some(z);
    s.section.d_state = Some(d);
    Ok(s)
}

/// Adds NVML compute processes: GPU memory and GPU indices for pattern matches, and new
/// entries (`matched_by: nvml`) for GPU processes no pattern caught.
pub fn merge_gpu(scan: &mut Scan, gpu: &GpuSection, proc_root: &Path) {
    let mut by_pid: BTreeMap<u32, (Option<u64>, Vec<u32>)> = BTreeMap::new();
    for dev in &gpu.devices {
        for p in dev.processes.iter().flatten() {
            let e = by_pid.entry(p.pid).or_insert((None, Vec::new()));
            if let Some(b) = p.used_memory_bytes {
                e.0 = Some(e.0.unwrap_or(0) + b);
            }
            e.1.push(dev.index);
        }
    }
    for (pid, (mem, gpus)) in by_pid {
        if let Some(t) = scan.section.training.iter_mut().find(|t| t.pid == pid) {
            t.gpu_memory_bytes = mem;
            t.gpus = gpus;
            continue;
        }
        let command = std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
            .map(|r| cmdline_text(&r))
            .unwrap_or_default();
        scan.section.training.push(TrainingProcess {
            pid,
            command,
            state: scan.states.get(&pid).map(char::to_string),
            gpu_memory_bytes: mem,
            gpus,
            matched_by: "nvml".into(),
        });
    }
    scan.section.training.sort_by_key(|t| t.pid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ugro_types::{Gpu, GpuProcess, GpuStatus};

    #[test]
    fn state_survives_parentheses_in_the_name() {
        assert_eq!(stat_state("42 (a) (b) c) D 1 2 3"), Some('D'));
        assert_eq!(stat_state("1 (init) S 0"), Some('S'));
    }

    #[test]
    fn cmdline_is_joined_and_truncated_on_a_char_boundary() {
        assert_eq!(
            cmdline_text(b"torchrun\0--nproc=8\0train.py\0"),
            "torchrun --nproc=8 train.py"
        );
        let long = "é".repeat(200);
        assert!(cmdline_text(long.as_bytes()).len() <= 256);
    }

    #[test]
    fn a_pattern_past_the_output_limit_still_matches_and_the_command_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("20");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("stat"), "20 (python) S 1").unwrap();
        let mut cmd = b"python".to_vec();
        for i in 0..40 {
            cmd.extend_from_slice(format!("\0--env=VAR{i}=x").as_bytes());
        }
        cmd.extend_from_slice(b"\0-m\0torch.distributed.run\0train.py");
        assert!(cmd.len() > 300);
        std::fs::write(p.join("cmdline"), &cmd).unwrap();
        let s = scan(d.path(), &["torch.distributed".to_owned()]).unwrap();
        assert_eq!(s.section.training.len(), 1, "{:?}", s.section);
        let t = &s.section.training[0];
        assert_eq!(t.matched_by, "pattern:torch.distributed");
        assert!(t.command.len() <= 256);
        assert!(t.command.starts_with("python --env=VAR0=x"));
    }

    #[test]
    fn scan_finds_pattern_matches_and_counts_states() {
        let d = tempfile::tempdir().unwrap();
        for (pid, st, cmd) in [
            (10, 'S', &b"torchrun\0train.py"[..]),
            (11, 'Z', &b""[..]),
            (12, 'D', &b"dd\0if=/dev/zero"[..]),
        ] {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("stat"), format!("{pid} (x) {st} 1")).unwrap();
            std::fs::write(p.join("cmdline"), cmd).unwrap();
        }
        let pats = vec!["torchrun".to_owned()];
        let mut s = scan(d.path(), &pats).unwrap();
        assert_eq!(s.section.total, Some(3));
        assert_eq!(s.section.zombies, Some(1));
        assert_eq!(s.section.d_state, Some(1));
        assert_eq!(s.section.training.len(), 1);
        assert_eq!(s.section.training[0].matched_by, "pattern:torchrun");

        let gpu = GpuSection {
            status: GpuStatus::Ok,
            reason: None,
            expected: None,
            found: Some(2),
            pci_devices: None,
            driver_version: None,
            cuda_version: None,
            source: None,
            devices: vec![
                Gpu {
                    index: 0,
                    processes: Some(vec![
                        GpuProcess {
                            pid: 10,
                            used_memory_bytes: Some(100),
                        },
                        GpuProcess {
                            pid: 12,
                            used_memory_bytes: Some(5),
                        },
                    ]),
                    ..Gpu::default()
                },
                Gpu {
                    index: 1,
                    processes: Some(vec![GpuProcess {
                        pid: 10,
                        used_memory_bytes: Some(50),
                    }]),
                    ..Gpu::default()
                },
            ],
            unattributed_xids: Vec::new(),
            absent: Default::default(),
        };
        merge_gpu(&mut s, &gpu, d.path());
        let t = &s.section.training;
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].gpu_memory_bytes, Some(150));
        assert_eq!(t[0].gpus, vec![0, 1]);
        assert_eq!(t[1].matched_by, "nvml");
        assert_eq!(t[1].command, "dd if=/dev/zero");
        assert_eq!(t[1].state.as_deref(), Some("D"));
    }
}
