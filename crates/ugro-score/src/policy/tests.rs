use super::*;

/// The bucket → action table the shipped file's header states.
fn bucket_action(bucket: &str) -> Option<Action> {
    Some(match bucket {
        "RESTART_APP" | "WORKFLOW_XID_45" => Action::RestartApp,
        "RESET_GPU" | "WORKFLOW_XID_48" | "WORKFLOW_NVLINK_ERR" => Action::ResetGpu,
        "RESTART_BM" | "RESTART_VM" => Action::Reboot,
        "IGNORE" => Action::None,
        "CONTACT_SUPPORT" | "CHECK_MECHANICALS" => Action::HardwareInspection,
        "UPDATE_SWFW" | "CHECK_UVM" => Action::CheckHost,
        // Judged from the message.
        "WORKFLOW_NVLINK5_ERR" | "XID_154" => return None,
        other => panic!("bucket {other} is not in the table"),
    })
}

#[test]
fn every_shipped_entry_follows_its_catalog_bucket_or_says_why_not() {
    let p = XidPolicy::shipped().unwrap();
    let mut checked = 0;
    for (code, r) in p.rules() {
        let Some(bucket) = &r.bucket else {
            // Only the codes newer than the catalog copy's buckets (162+) go without one.
            assert!(code >= 162, "xid {code} has no catalog bucket");
            continue;
        };
        match bucket_action(bucket) {
            Some(want) if r.action != want => {
                assert!(r.note.is_some(), "xid {code}: {bucket} but {:?}", r.action);
            }
            Some(_) => checked += 1,
            None => assert!(
                !r.message_rules.is_empty(),
                "xid {code} needs message rules"
            ),
        }
        if matches!(bucket.as_str(), "RESET_GPU" | "RESTART_BM" | "RESTART_VM")
            && r.severity != XidSeverity::Fatal
        {
            assert!(r.note.is_some(), "xid {code}: {bucket} but not fatal");
        }
    }
    assert!(checked > 80, "{checked} entries checked");
}

#[test]
fn the_shipped_policy_states_its_version_and_catalog() {
    let p = XidPolicy::shipped().unwrap();
    assert_eq!(p.version, 2);
    let c = p.catalog.unwrap();
    assert!(c.source.contains("docs.nvidia.com"), "{}", c.source);
    assert!(c.revision.contains("2025-10-29"), "{}", c.revision);
    assert_eq!(p.reboots.threshold, 2);
    assert_eq!(p.recurrence.window, Duration::from_secs(86_400));
}

#[test]
fn shipped_policy_has_nvidias_fatal_and_application_xids() {
    let p = XidPolicy::shipped().unwrap();
    for code in [46, 48, 62, 64, 74, 79, 95, 109, 119, 120, 140, 143, 158] {
        let (r, listed) = p.rule(code);
        assert!(listed, "{code} not listed");
        assert_eq!(r.severity, XidSeverity::Fatal, "xid {code}");
    }
    for code in [13, 31, 45, 69] {
        assert_eq!(p.rule(code).0.severity, XidSeverity::Application);
        assert_eq!(p.rule(code).0.action, Action::RestartApp, "xid {code}");
    }
    let esc = p.rule(94).0.escalate.clone().unwrap();
    assert_eq!(esc.count, 3);
    assert_eq!(esc.window, Duration::from_secs(600));
}

#[test]
fn xids_62_63_and_92_follow_the_catalog() {
    let p = XidPolicy::shipped().unwrap();
    let r62 = p.rule(62).0;
    assert_eq!(
        (r62.severity, r62.action),
        (XidSeverity::Fatal, Action::ResetGpu)
    );
    let r63 = p.rule(63).0;
    assert_eq!(r63.action, Action::ResetGpu, "a reset applies the remap");
    assert!(r63.defer_to_remapped_rows && p.rule(64).0.defer_to_remapped_rows);
    let r92 = p.rule(92).0;
    assert_eq!(
        (r92.severity, r92.action),
        (XidSeverity::Warning, Action::None)
    );
}

#[test]
fn nvlink5_xids_are_judged_by_the_severity_word_in_the_message() {
    let p = XidPolicy::shipped().unwrap();
    for code in 144..=150 {
        let r = p.rule(code).0;
        let fatal = "NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000)";
        let (_, v, _) = r.judge(Some(fatal));
        assert_eq!(
            (v.severity, v.action),
            (XidSeverity::Fatal, Action::ResetGpu)
        );
        let (_, v, _) = r.judge(Some("RLW_REMAP Nonfatal XC0 i0 Link 00 (0x00000004)"));
        assert_eq!((v.severity, v.action), (XidSeverity::Warning, Action::None));
        assert_eq!(v.deduction, 10.0);
        let (i, v, _) = r.judge(Some("Placeholder message"));
        assert_eq!((i, v), (0, r.verdict()), "no word: the entry's verdict");
    }
}

#[test]
fn xid_154_takes_the_recovery_action_named_in_its_message() {
    let p = XidPolicy::shipped().unwrap();
    let r = p.rule(154).0;
    let msg = |to: &str| format!("GPU recovery action changed from 0x4 (Drain and Reset) to {to}");
    for (to, sev, action) in [
        ("0x0 (None)", XidSeverity::Warning, Action::None),
        (
            "0x1 (GPU Reset Required)",
            XidSeverity::Fatal,
            Action::ResetGpu,
        ),
        (
            "0x2 (Node Reboot Required)",
            XidSeverity::Fatal,
            Action::Reboot,
        ),
        ("0x3 (Drain P2P)", XidSeverity::Warning, Action::RestartApp),
        (
            "0x4 (Drain and Reset)",
            XidSeverity::Fatal,
            Action::ResetGpu,
        ),
    ] {
        let (_, v, meaning) = r.judge(Some(&msg(to)));
        assert_eq!((v.severity, v.action), (sev, action), "{to}");
        assert!(
            meaning.starts_with("GPU recovery action changed to"),
            "{meaning}"
        );
    }
}

#[test]
fn newer_codes_after_154_are_listed() {
    let p = XidPolicy::shipped().unwrap();
    for code in 155..=173 {
        assert!(p.rule(code).1, "xid {code} not listed");
    }
    assert_eq!(p.rule(155).0.severity, XidSeverity::Fatal);
    assert_eq!(p.rule(156).0.action, Action::ResetGpu);
}

#[test]
fn a_site_verdict_replaces_the_message_rules_and_the_deferral() {
    let site = "xids:\n  149: {severity: fatal, action: hardware_inspection}\n  63: {action: reboot}\n  150: {deduction: 33}\n";
    let p = XidPolicy::with_site(Path::new("site.yaml"), site).unwrap();
    let r = p.rule(149).0;
    let (_, v, _) = r.judge(Some("NETIR Nonfatal XC0 i0 Link 00 (0x0)"));
    assert_eq!(
        (v.severity, v.action),
        (XidSeverity::Fatal, Action::HardwareInspection)
    );
    assert!(!p.rule(63).0.defer_to_remapped_rows);
    // A site that changes only the points keeps the shipped message rules.
    let r150 = p.rule(150).0;
    assert_eq!(r150.deduction, 33.0);
    let (_, v, _) = r150.judge(Some("MSE_WATCHDOG Fatal XC0 i0 Link 00 (0x0)"));
    assert_eq!(v.severity, XidSeverity::Fatal);
}

#[test]
fn site_file_overrides_single_fields_and_adds_entries() {
    let site = "version: 7\nreboots: {threshold: 3}\nxids:\n  31:\n    severity: warning\n    deduction: 12\n  999:\n    severity: fatal\n    action: reboot\n";
    let p = XidPolicy::with_site(Path::new("site.yaml"), site).unwrap();
    let (r31, _) = p.rule(31);
    assert_eq!(r31.severity, XidSeverity::Warning);
    assert_eq!(r31.deduction, 12.0);
    assert_eq!(
        r31.action,
        Action::RestartApp,
        "action kept from the shipped file"
    );
    assert!(r31.meaning.contains("page fault"));
    assert_eq!(p.rule(999).0.action, Action::Reboot);
    assert_eq!(p.rule(999).0.deduction, 100.0);
    assert_eq!(p.version, 7);
    assert_eq!(p.reboots.threshold, 3);
    assert_eq!(p.reboots.window, Duration::from_secs(7 * 86_400), "kept");
}

#[test]
fn unlisted_xid_uses_the_unknown_rule() {
    let p = XidPolicy::shipped().unwrap();
    let (r, listed) = p.rule(4242);
    assert!(!listed);
    assert_eq!(r.severity, XidSeverity::Warning);
}

#[test]
fn bad_site_file_names_file_line_and_field() {
    let site = "xids:\n  13:\n    severity: deadly\n";
    let e = XidPolicy::with_site(Path::new("site.yaml"), site).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("site.yaml:3: xids"), "{msg}");
    let site = "xids:\n  500:\n    action: reboot\n";
    let msg = XidPolicy::with_site(Path::new("site.yaml"), site)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("site.yaml:") && msg.contains("severity"),
        "{msg}"
    );
    let site = "xids:\n  501:\n    severity: fatal\n    message_rules:\n      - {word: Fatal, contains: x}\n";
    let msg = XidPolicy::with_site(Path::new("site.yaml"), site)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("xids.501.message_rules"), "{msg}");
}

#[test]
fn a_word_rule_does_not_match_inside_another_word() {
    let m = Matcher::Word("fatal".into());
    assert!(m.matches("SAW_MVB Fatal XC0"));
    assert!(!m.matches("SAW_MVB Nonfatal XC0"));
    assert!(
        Matcher::Contains("to 0x2 (".into())
            .matches("from 0x0 (None) to 0x2 (Node Reboot Required)")
    );
}
