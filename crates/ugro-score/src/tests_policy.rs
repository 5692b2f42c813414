//! Every policy entry this revision changed or added, from a real-format kernel line read by the
//! probe's own XID parser into a sample, to the state, action and reason it must give.

use ugro_types::{Action, HealthState, ReasonCode, Sample, Timestamp};

use crate::Scorer;
use crate::config::ScoreConfig;
use crate::policy::XidPolicy;

const BUSY: &str = include_str!("../fixtures/h200-busy.jsonl");

/// The busy H200 node with one XID from `line` (as the kernel logged it) on its GPU. The GPU
/// reports no row remapping, so 63 and 64 are judged by the XID itself.
fn sample_with(line: &str) -> Sample {
    let mut s: Sample = serde_json::from_str(BUSY.trim()).unwrap();
    let x = ugro_probe::xid::parse_xid_message(line, Some(Timestamp(s.ts.0 - 5_000))).unwrap();
    let g = &mut s.gpu.as_mut().unwrap().devices[0];
    g.remapped_rows = None;
    g.xids = vec![x];
    s
}

fn kernel(code: u32, rest: &str) -> String {
    format!("NVRM: Xid (PCI:0000:18:00): {code}, {rest}")
}

use Action::{
    CheckHost, HardwareInspection as Inspect, None as NoAction, Reboot, ResetGpu, RestartApp,
};
use HealthState::{Critical, Degraded, Healthy};
use ReasonCode::{XidApplication as App, XidFatal as Fatal, XidWarning as Warn};

/// (code, message after the code, state, action, reason code).
type Case = (u32, String, HealthState, Action, ReasonCode);

fn cases() -> Vec<Case> {
    let pid = "pid=2931, name=python3,";
    let engine = |code: u32, what: &str| -> Case {
        (
            code,
            format!("{pid} {what} Exception: ESR 0x4041b0=0x80000000"),
            Healthy,
            RestartApp,
            App,
        )
    };
    let mut v: Vec<Case> = vec![
        (
            11,
            format!("{pid} Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS"),
            Healthy,
            RestartApp,
            App,
        ),
        (
            25,
            format!("{pid} Ch 00000010, Illegal notify"),
            Healthy,
            RestartApp,
            App,
        ),
        (
            32,
            format!("{pid} Channel ID 00000023 intr0 00040000"),
            Healthy,
            RestartApp,
            App,
        ),
        (
            37,
            format!("{pid} Unimplemented FECS firmware method"),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            38,
            format!("{pid} FECS watchdog timeout"),
            Healthy,
            NoAction,
            Warn,
        ),
        (43, format!("{pid} Ch 00000008"), Healthy, NoAction, App),
        (
            44,
            format!("{pid} Graphics engine fault during context switch"),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            46,
            format!("{pid} GPU stopped processing"),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            54,
            "Auxiliary power is not connected to the GPU board".into(),
            Degraded,
            Inspect,
            Warn,
        ),
        (56, "Display engine error".into(), Healthy, Inspect, Warn),
        (
            57,
            "Error programming video memory interface".into(),
            Healthy,
            Inspect,
            Warn,
        ),
        (
            58,
            "Unstable video memory interface detected".into(),
            Healthy,
            Inspect,
            Warn,
        ),
        (
            61,
            "Internal micro-controller breakpoint/warning".into(),
            Healthy,
            Inspect,
            Warn,
        ),
        (
            62,
            "Internal micro-controller halt (0x00000001)".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            63,
            "Row Remapper: New row marked for remapping, reset gpu to activate.".into(),
            Healthy,
            ResetGpu,
            Warn,
        ),
        (
            64,
            "Row Remapper: Failed to remap a row".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            66,
            "Illegal access by driver".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            67,
            "Illegal access by driver".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (78, "vGPU start failed".into(), Healthy, CheckHost, Warn),
        (
            80,
            format!("{pid} Corrupted data sent to GPU"),
            Healthy,
            RestartApp,
            App,
        ),
        (
            92,
            "High single-bit ECC error rate".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (106, "SMBPBI test message".into(), Healthy, NoAction, Warn),
        (107, "SMBPBI test message".into(), Healthy, NoAction, Warn),
        (
            109,
            format!("{pid} Ch 00000021, errorString CTX SWITCH TIMEOUT, Info 0x1c00a"),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            110,
            "Security fault error".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (121, "C2C link error".into(), Healthy, NoAction, Warn),
        (
            136,
            "NVLink link training failed".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            137,
            "NVLink privilege error".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            141,
            format!("{pid} CUDA fast path error"),
            Healthy,
            NoAction,
            Warn,
        ),
        (142, "NVENC3 error".into(), Healthy, Inspect, Warn),
        (
            143,
            "GPU Initialization Failure".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (151, "Key rotation error".into(), Critical, Reboot, Fatal),
        (152, "DLA SMMU error".into(), Healthy, NoAction, Warn),
        (153, "DLA timeout".into(), Healthy, NoAction, Warn),
        (
            155,
            "NVLINK: SW Defined Error".into(),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            156,
            "Resource retirement event".into(),
            Degraded,
            ResetGpu,
            Warn,
        ),
        (
            157,
            "Resource retirement failure".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (158, "GPU fatal timeout".into(), Critical, ResetGpu, Fatal),
        (159, "CHI non-data error".into(), Healthy, CheckHost, Warn),
        (
            160,
            "Channel retirement event".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            161,
            "Channel retirement failure".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            162,
            "Power smoothing HW circuitry capability reengaged".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            163,
            "Power smoothing HW circuitry capability disengaged".into(),
            Healthy,
            Reboot,
            Warn,
        ),
        (
            164,
            "Power smoothing HW circuitry low lifetime reached".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            165,
            "Power smoothing HW circuitry lifetime exhausted".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            166,
            "NVLink CC traffic before link configured".into(),
            Healthy,
            Reboot,
            Warn,
        ),
        (167, "PCIE_FATAL_TIMEOUT".into(), Critical, Reboot, Fatal),
        (168, "Errors found in WPR".into(), Healthy, Inspect, Warn),
        (169, "SEC2 halt".into(), Critical, ResetGpu, Fatal),
        (
            170,
            "Interrupt seen in CC mode".into(),
            Healthy,
            CheckHost,
            Warn,
        ),
        (
            171,
            "Uncorrectable DRAM error".into(),
            Healthy,
            NoAction,
            Warn,
        ),
        (
            172,
            "Uncorrectable SRAM error".into(),
            Healthy,
            ResetGpu,
            Warn,
        ),
        (
            173,
            "C2C fatal link failure".into(),
            Critical,
            Reboot,
            Fatal,
        ),
    ];
    for (code, what) in [
        (39, "CE0"),
        (40, "CE1"),
        (41, "CE2"),
        (60, "SEC2"),
        (68, "NVDEC0"),
        (69, "Graphics class error:"),
        (70, "CE3"),
        (71, "CE4"),
        (72, "CE5"),
        (75, "CE6"),
        (76, "CE7"),
        (77, "CE8"),
        (82, "NVJPG0"),
        (83, "NVDEC1"),
        (84, "NVDEC2"),
        (85, "CE9"),
        (86, "OFA0"),
        (88, "NVDEC3"),
        (89, "NVDEC4"),
        (139, "OFA1"),
    ] {
        v.push(engine(code, what));
    }
    for code in (96..=105).chain(126..=135) {
        v.push(engine(code, "engine"));
    }
    // NVLink 5: the driver's severity word decides; without one, the entry's warning.
    for (code, unit) in [
        (144, "SAW_MVB"),
        (145, "RLW_REMAP"),
        (146, "TLW_TX"),
        (147, "TREX"),
        (148, "NVLPW_CTRL"),
        (149, "NETIR_LINK_EVT"),
        (150, "MSE_WATCHDOG"),
    ] {
        let regs = "(0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)";
        v.push((
            code,
            format!("{unit} Fatal XC0 i0 Link 01 {regs}"),
            Critical,
            ResetGpu,
            Fatal,
        ));
        v.push((
            code,
            format!("{unit}  Nonfatal XC1 i0 Link 03 {regs}"),
            Healthy,
            NoAction,
            Warn,
        ));
        v.push((code, "Placeholder message".into(), Degraded, ResetGpu, Warn));
    }
    // 154: the action the driver changes to.
    let changed = |to: &str| format!("GPU recovery action changed from 0x0 (None) to {to}");
    v.extend([
        (154, changed("0x0 (None)"), Healthy, NoAction, Warn),
        (
            154,
            changed("0x1 (GPU Reset Required)"),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            154,
            changed("0x2 (Node Reboot Required)"),
            Critical,
            Reboot,
            Fatal,
        ),
        (154, changed("0x3 (Drain P2P)"), Degraded, RestartApp, Warn),
        (
            154,
            changed("0x4 (Drain and Reset)"),
            Critical,
            ResetGpu,
            Fatal,
        ),
        (
            154,
            "GPU recovery action changed".into(),
            Healthy,
            ResetGpu,
            Warn,
        ),
    ]);
    v
}

#[test]
fn every_changed_policy_entry_gives_its_state_and_action_from_a_real_kernel_line() {
    let mut failures = Vec::new();
    for (code, rest, state, action, reason) in cases() {
        let line = kernel(code, &rest);
        let sc = Scorer::new(ScoreConfig::default()).score_sample(&sample_with(&line));
        let r = sc.reasons.iter().find(|r| r.value == Some(code.into()));
        let got = (sc.state, sc.action, r.map(|r| r.code.clone()));
        if got != (state, action, Some(reason.clone())) {
            failures.push(format!(
                "{line}\n  want {state:?} {action:?} {reason}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_driver_words_are_quoted_when_they_decide() {
    let line = kernel(
        149,
        "NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x004505c6 0x00000000)",
    );
    let sc = Scorer::new(ScoreConfig::default()).score_sample(&sample_with(&line));
    assert!(
        sc.reasons[0].message.contains("\"NETIR_LINK_EVT Fatal"),
        "{}",
        sc.reasons[0].message
    );
}

#[test]
fn a_site_override_still_wins_over_the_message() {
    let site =
        "xids:\n  154: {severity: warning, action: none, deduction: 1}\n  149: {deduction: 12}\n";
    let cfg = ScoreConfig {
        policy: XidPolicy::with_site(std::path::Path::new("site.yaml"), site).unwrap(),
        ..ScoreConfig::default()
    };
    let line = kernel(
        154,
        "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
    );
    let sc = Scorer::new(cfg.clone()).score_sample(&sample_with(&line));
    assert_eq!((sc.state, sc.action), (Healthy, NoAction), "{}", sc.summary);
    assert_eq!(sc.reasons[0].deduction, 1.0);
    // A site that changes only the points keeps the message rules.
    let line = kernel(149, "NETIR_LINK_EVT Nonfatal XC0 i0 Link 08 (0x0)");
    let sc = Scorer::new(cfg.clone()).score_sample(&sample_with(&line));
    assert_eq!((sc.action, sc.reasons[0].deduction), (NoAction, 10.0));
    let line = kernel(149, "Placeholder message");
    let sc = Scorer::new(cfg).score_sample(&sample_with(&line));
    assert_eq!((sc.action, sc.reasons[0].deduction), (ResetGpu, 12.0));
}
