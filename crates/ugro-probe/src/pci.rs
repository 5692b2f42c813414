//! GPUs on the PCI bus, counted without NVML (gpud's "PCI device count" check): a GPU that
//! fell out of NVML, or a node whose driver does not load at all, still shows up here.

use std::path::Path;

/// NVIDIA's PCI vendor id.
pub const NVIDIA_VENDOR: u32 = 0x10de;

/// PCI base class of display controllers (VGA 0x0300, 3D controller 0x0302, …). NVSwitches
/// (bridge class 0x0680) and a GPU's HDMI audio function (0x0403) are not counted.
pub const DISPLAY_CLASS: u32 = 0x03;

fn read_hex(path: &Path) -> Option<u32> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// Counts NVIDIA display-class functions under `sys_root/bus/pci/devices`. The vendor is read
/// first and the class only for NVIDIA functions, so a node with hundreds of PCI functions
/// costs about one small read each. A function whose files cannot be read (removed while we
/// look) is not counted; only an unreadable directory is an error.
pub fn count_nvidia_display(sys_root: &Path) -> Result<u32, String> {
    let dir = sys_root.join("bus/pci/devices");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut n = 0u32;
    for e in entries.flatten() {
        let p = e.path();
        if read_hex(&p.join("vendor")) != Some(NVIDIA_VENDOR) {
            continue;
        }
        if read_hex(&p.join("class")).is_some_and(|c| c >> 16 == DISPLAY_CLASS) {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_gpus_of_an_hgx_node_and_not_its_switches_bmc_or_hcas() {
        // 8 GPUs (3D controllers), 4 NVSwitches (bridges), the BMC's VGA, an InfiniBand HCA,
        // a host bridge.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sysfs-hgx8");
        assert_eq!(count_nvidia_display(&root), Ok(8));
    }

    #[test]
    fn no_pci_tree_is_an_error_and_an_empty_one_is_zero() {
        let d = tempfile::tempdir().unwrap();
        let e = count_nvidia_display(d.path()).unwrap_err();
        assert!(e.contains("bus/pci/devices"), "{e}");
        std::fs::create_dir_all(d.path().join("bus/pci/devices")).unwrap();
        assert_eq!(count_nvidia_display(d.path()), Ok(0));
    }
}
