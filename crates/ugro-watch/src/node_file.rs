//! The name of a node's file in the state directory. A node name may be 253 bytes (ugro(7)),
//! and `<name>.json` must fit the 255-byte file-name limit of every common filesystem, so a
//! long name is cut and made unique again with a digest of the whole name:
//! `<first 180 bytes>~<16 hex digits of SHA-256>.json`. Names of up to 200 bytes, which is
//! every real host name, keep their own file name. (A node name has no `~`, so a cut name
//! never equals a whole one.)

use sha2::Digest;

/// Longest node name used as it is.
const KEEP: usize = 200;
/// How much of a longer name is kept before its digest.
const CUT: usize = 180;

/// `nodes/<file>` for `node`, always within 255 bytes.
pub fn node_file(node: &str) -> String {
    if node.len() <= KEEP {
        return format!("nodes/{node}.json");
    }
    let digest = sha2::Sha256::digest(node.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // Node names are ASCII (validate_node), so any byte index is a character boundary; the
    // fallback keeps this total for any string.
    let head = node.get(..CUT).unwrap_or(node);
    format!("nodes/{head}~{hex}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_node_names_get_file_names_within_255_bytes_that_stay_unique() {
        assert_eq!(node_file("gpu-01"), "nodes/gpu-01.json");
        let a = format!("{}a", "n".repeat(252));
        let b = format!("{}b", "n".repeat(252));
        for name in [&a, &b] {
            ugro_types::validate_node(name).unwrap();
            let f = node_file(name);
            let file = f.strip_prefix("nodes/").unwrap();
            assert!(file.len() <= 255, "{}", file.len());
            assert_eq!(node_file(name), f, "stable");
        }
        assert_ne!(node_file(&a), node_file(&b));
        let at_limit = "m".repeat(KEEP);
        assert_eq!(node_file(&at_limit), format!("nodes/{at_limit}.json"));
    }
}
