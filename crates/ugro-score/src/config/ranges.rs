//! Range checks for every numeric rule (issue 15): a deduction of `-1e308` would make a
//! degraded node healthy 100, a negative margin would silence a rule. The loader already
//! refuses non-finite numbers (`.nan`, `.inf`); these say what each finite value may be.

use ugro_support::config::{Range, first_bad};

use super::{GpuRules, NetworkRules, ProcessRules, SystemRules};

/// Points taken off a 100-point score.
const DEDUCTION: Range<f64> = Range::new(0.0, 100.0);
const PERCENT: Range<f64> = Range::new(0.0, 100.0);

/// `Err((field, message))` for the first rule value out of its range.
pub fn check(
    gpu: &GpuRules,
    system: &SystemRules,
    network: &NetworkRules,
    process: &ProcessRules,
) -> Result<(), (String, String)> {
    first_bad(
        gpu_checks(gpu)
            .into_iter()
            .chain(system_checks(system))
            .chain(network_checks(network))
            .chain(process_checks(process)),
    )
}

type Check = Result<(), (String, String)>;

fn deductions<'a>(
    section: &'a str,
    pairs: &'a [(&'a str, f64)],
) -> impl Iterator<Item = Check> + 'a {
    pairs
        .iter()
        .map(move |(name, v)| DEDUCTION.check(&format!("{section}.{name}"), *v))
}

fn gpu_checks(g: &GpuRules) -> Vec<Check> {
    let mut v = vec![
        Range::new(0.0, 150.0).check(
            "gpu.temperature_slowdown_default_c",
            g.temperature_slowdown_default_c,
        ),
        Range::new(0.0, 100.0).check("gpu.temperature_margin_c", g.temperature_margin_c),
        Range::new(0.0, 1000.0).check("gpu.power_over_limit_pct", g.power_over_limit_pct),
        Range::new(0, 100).check("gpu.busy_utilization_pct", g.busy_utilization_pct),
        Range::new(0.0, 1.0).check("gpu.worst_weight", g.worst_weight),
    ];
    v.extend(deductions(
        "gpu",
        &[
            ("temperature_deduction", g.temperature_deduction),
            ("power_deduction", g.power_deduction),
            ("hw_throttle_deduction", g.hw_throttle_deduction),
            ("sw_thermal_deduction", g.sw_thermal_deduction),
            ("sw_power_cap_idle_deduction", g.sw_power_cap_idle_deduction),
            ("remap_pending_deduction", g.remap_pending_deduction),
            ("ecc_aggregate_deduction", g.ecc_aggregate_deduction),
            ("pcie_gen_deduction", g.pcie_gen_deduction),
            ("pcie_width_deduction", g.pcie_width_deduction),
            ("replay_growth_deduction", g.replay_growth_deduction),
            ("replay_high_deduction", g.replay_high_deduction),
        ],
    ));
    v
}

fn system_checks(s: &SystemRules) -> Vec<Check> {
    let mut v: Vec<Check> = [
        ("cpu_pct_warn", s.cpu_pct_warn),
        ("memory_available_warn_pct", s.memory_available_warn_pct),
        ("memory_available_crit_pct", s.memory_available_crit_pct),
        ("swap_used_warn_pct", s.swap_used_warn_pct),
        ("disk_used_warn_pct", s.disk_used_warn_pct),
        ("disk_used_crit_pct", s.disk_used_crit_pct),
    ]
    .iter()
    .map(|(name, x)| PERCENT.check(&format!("system.{name}"), *x))
    .collect();
    let load = Range::new(0.0, 1000.0);
    v.push(load.check("system.load_per_cpu_warn", s.load_per_cpu_warn));
    v.push(load.check("system.load_per_cpu_crit", s.load_per_cpu_crit));
    v.extend(deductions(
        "system",
        &[
            ("cpu_deduction", s.cpu_deduction),
            ("warn_deduction", s.warn_deduction),
            ("crit_deduction", s.crit_deduction),
        ],
    ));
    v
}

fn network_checks(n: &NetworkRules) -> Vec<Check> {
    let mut v = vec![
        Range::new(0.0, 3_600_000.0).check("network.peer_latency_warn_ms", n.peer_latency_warn_ms),
    ];
    if let Some(rate) = n.ib_min_rate_gbps {
        v.push(Range::new(0.0, 100_000.0).check("network.ib_min_rate_gbps", rate));
    }
    v.extend(deductions(
        "network",
        &[
            ("interface_deduction", n.interface_deduction),
            ("ib_port_deduction", n.ib_port_deduction),
            ("ib_rate_deduction", n.ib_rate_deduction),
            ("peer_unreachable_deduction", n.peer_unreachable_deduction),
            ("peer_latency_deduction", n.peer_latency_deduction),
        ],
    ));
    v
}

fn process_checks(p: &ProcessRules) -> Vec<Check> {
    deductions(
        "process",
        &[
            ("zombie_deduction", p.zombie_deduction),
            ("d_state_deduction", p.d_state_deduction),
            ("training_d_deduction", p.training_d_deduction),
            ("training_zombie_deduction", p.training_zombie_deduction),
        ],
    )
    .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::config::ScoreConfig;

    fn load(yaml: &str) -> Result<ScoreConfig, String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        ScoreConfig::load(Some(f.path())).map_err(|e| e.to_string())
    }

    #[test]
    fn out_of_range_rule_values_are_refused_naming_line_field_and_value() {
        for (yaml, line, field, value) in [
            (
                "gpu:\n  hw_throttle_deduction: -1e308\n",
                2,
                "gpu.hw_throttle_deduction",
                "-1e308",
            ),
            (
                "gpu:\n  temperature_margin_c: -5\n",
                2,
                "gpu.temperature_margin_c",
                "-5",
            ),
            (
                "system:\n  cpu_deduction: 1\n  disk_used_crit_pct: 250\n",
                3,
                "system.disk_used_crit_pct",
                "250",
            ),
            (
                "network:\n  peer_latency_deduction: -0.5\n",
                2,
                "network.peer_latency_deduction",
                "-0.5",
            ),
            (
                "process:\n  zombie_deduction: 101\n",
                2,
                "process.zombie_deduction",
                "101",
            ),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(&format!(":{line}: {field}: ")), "{yaml}: {e}");
            assert!(
                e.contains(value) && e.contains("out of range"),
                "{yaml}: {e}"
            );
        }
    }

    #[test]
    fn non_finite_rule_values_are_refused() {
        for v in [".nan", ".inf", "-.inf"] {
            let e = load(&format!("gpu:\n  hw_throttle_deduction: {v}\n")).unwrap_err();
            assert!(
                e.contains(":2:") && e.contains("hw_throttle_deduction"),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn the_defaults_are_within_every_range() {
        let d = ScoreConfig::default();
        super::check(&d.gpu, &d.system, &d.network, &d.process).unwrap();
    }
}
