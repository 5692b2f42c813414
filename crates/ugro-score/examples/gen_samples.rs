//! Writes N realistic 8-GPU sample lines (about 5.4 KB each) for scripts/bench-score.sh.
//!
//! Each GPU carries the fields the score reads (about 530 bytes); a full probe line with
//! names, processes and `absent` maps is about 8 KB, and costs proportionally more to parse.
//!
//! The readings follow the real H200 node in `fixtures/` (700 W limit, PCIe gen 5 x16, 141 GB)
//! with deterministic variation: most nodes are busy and healthy, a few per hundred carry a
//! hardware slowdown, a pending row remap, an XID or a full disk, so every rule path runs. Each
//! node keeps its workload and each GPU its temperature (with a degree of jitter) from sample
//! to sample, and carries the counters the trend rules read (replays, corrected ECC, remapped
//! rows), the recovery action, the PCI GPU count and a boot id, as a real stream does: the
//! history rules run on every GPU without firing on noise.
//!
//! Usage: `gen_samples [N] [NODES]` (defaults 200000 and 1000).

use std::io::{self, BufWriter, Write};

use ugro_types::{
    CollectorRun, Disk, Ecc, Gpu, GpuSection, GpuStatus, HostSection, IbPort, Interface,
    NetworkSection, Pcie, Peer, ProcessSection, RecoveryAction, RemappedRows, Sample, Timestamp,
    TrainingProcess, Xid,
};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn gpu(rng: &mut Rng, node: u64, i: u32, busy: bool, trouble: u64) -> Gpu {
    let util = if busy { 90 + rng.below(10) as u32 } else { 0 };
    // A GPU's own temperature, steady for its workload, plus a degree of jitter.
    let base = (node * 8 + u64::from(i)) % 16;
    let temp = if busy { 56 + base } else { 33 + base / 2 } + rng.below(2);
    let power = if busy {
        600.0 + rng.below(1000) as f64 / 10.0
    } else {
        75.0 + rng.below(100) as f64 / 10.0
    };
    let mut throttle = vec![if busy { "sw_power_cap" } else { "gpu_idle" }.to_owned()];
    let mut remapped = RemappedRows {
        correctable: Some(0),
        uncorrectable: None,
        pending: Some(false),
        failure: Some(false),
    };
    let mut xids = Vec::new();
    if i == 3 {
        match trouble {
            0 => throttle.push("hw_slowdown".into()),
            1 => remapped.pending = Some(true),
            2 => xids.push(Xid {
                code: 13,
                pci_bus_id: None,
                ts: None,
                message: None,
                boot_id: None,
                seq: None,
            }),
            3 => xids.push(Xid {
                code: 79,
                pci_bus_id: None,
                ts: None,
                message: None,
                boot_id: None,
                seq: None,
            }),
            _ => {}
        }
    }
    Gpu {
        index: i,
        uuid: Some(format!("GPU-{node:08x}-{i:04x}-4a26-e547-b5e85a9cf5{i:02}")),
        pci_bus_id: Some(format!("00000000:{:02x}:00.0", 0x18 + i * 0x10)),
        utilization_pct: Some(util),
        memory_used_bytes: Some(if busy { 120_000_000_000 } else { 0 } + rng.below(1 << 30)),
        memory_total_bytes: Some(150_754_820_096),
        temperature_c: Some(temp as u32),
        power_w: Some(power),
        power_limit_w: Some(700.0),
        throttle_reasons: Some(throttle),
        ecc: Some(Ecc {
            enabled: None,
            corrected_volatile: Some(0),
            uncorrected_volatile: Some(0),
            corrected_aggregate: None,
            uncorrected_aggregate: Some(0),
        }),
        remapped_rows: Some(remapped),
        recovery_action: Some(RecoveryAction::None),
        pcie: Some(Pcie {
            generation: Some(5),
            max_gen: Some(5),
            width: Some(16),
            max_width: Some(16),
            replay_counter: Some(0),
        }),
        xids,
        ..Gpu::default()
    }
}

fn sample(rng: &mut Rng, n: u64, nodes: u64) -> Sample {
    let node = n % nodes;
    // Eight nodes in ten run a job, and keep running it.
    let busy = node % 10 < 8;
    // One node-sample in 25 has something wrong on GPU 3 (or a full disk).
    let trouble = if rng.below(25) == 0 { rng.below(5) } else { 9 };
    let ts = Timestamp(1_795_000_000_000 + (n / nodes) as i64 * 30_000 + node as i64);
    let mut s = Sample::new(format!("gpu-node-{node:05}"), ts);
    s.gpu = Some(GpuSection {
        status: GpuStatus::Ok,
        reason: None,
        expected: Some(8),
        found: Some(8),
        pci_devices: Some(8),
        driver_version: Some("580.159.04".into()),
        cuda_version: Some("13.0".into()),
        source: None,
        devices: (0..8).map(|i| gpu(rng, node, i, busy, trouble)).collect(),
        unattributed_xids: Vec::new(),
        absent: Default::default(),
    });
    let root_used = if trouble == 4 {
        262_000_000_000
    } else {
        201_851_904_000
    };
    s.host = Some(HostSection {
        cpu_pct: Some(if busy { 35.0 } else { 1.0 } + rng.below(100) as f64 / 10.0),
        cpus: Some(192),
        load: Some([40.5, 38.2, 37.9]),
        memory_total_bytes: Some(2_164_000_000_000),
        memory_available_bytes: Some(1_500_000_000_000 + rng.below(1 << 36)),
        boot_id: Some(format!("{node:08x}-7d1b-4c5e-9a8f-1b2c3d4e5f60")),
        disks: vec![Disk {
            mount: "/".into(),
            fstype: Some("ext4".into()),
            total_bytes: 270_553_174_016,
            used_bytes: root_used,
            available_bytes: 270_553_174_016 - root_used,
            inodes_used_pct: Some(4.1),
        }],
        ..HostSection::default()
    });
    s.network = Some(NetworkSection {
        interfaces: vec![Interface {
            name: "eth0".into(),
            oper_state: "up".into(),
            carrier: Some(true),
            speed_mbps: Some(100_000),
        }],
        infiniband: (0..2)
            .map(|p| IbPort {
                device: format!("mlx5_{p}"),
                port: 1,
                state: "ACTIVE".into(),
                phys_state: "LinkUp".into(),
                rate_gbps: Some(400.0),
            })
            .collect(),
        peers: vec![Peer {
            target: "10.0.0.1:22".into(),
            reachable: true,
            latency_ms: Some(0.2 + rng.below(10) as f64 / 100.0),
            error: None,
        }],
        ..NetworkSection::default()
    });
    s.processes = Some(ProcessSection {
        total: Some(900 + rng.below(100) as u32),
        zombies: Some(0),
        d_state: Some(rng.below(2) as u32),
        training: if busy {
            vec![TrainingProcess {
                pid: 4000,
                command: "python train.py --config llama.yaml".into(),
                state: Some("R".into()),
                gpu_memory_bytes: Some(952_000_000_000),
                gpus: (0..8).collect(),
                matched_by: "nvml".into(),
            }]
        } else {
            Vec::new()
        },
        ..ProcessSection::default()
    });
    s.collectors = vec![CollectorRun {
        name: "gpu".into(),
        duration_ms: 2.7,
        ok: true,
    }];
    s
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let nodes: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    for i in 0..n {
        let s = sample(&mut rng, i, nodes);
        serde_json::to_writer(&mut out, &s)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
