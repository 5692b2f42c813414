//! Shell completions from each tool's clap command (clap_complete), one file per shell, named
//! and placed the way each shell's completion loader looks them up.

use clap::Command;
use clap_complete::Shell;

/// `(path under completions/, script)` for bash, zsh and fish.
pub fn scripts(cmd: &Command) -> Vec<(String, Vec<u8>)> {
    let name = cmd.get_name().to_owned();
    [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        (path, buf)
    })
    .collect()
}
