//! argv templates from configuration files: `{name}` placeholders in arguments, checked against
//! the names a caller knows when the file is read, and replaced when the program runs. Never a
//! shell: each argument stays one argument whatever a value holds.

/// The placeholder names in `arg` (`{node}` and `--gpu={gpu}` name `node` and `gpu`); a `{`
/// without a closing `}` is literal.
pub fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    let mut rest = arg;
    std::iter::from_fn(move || {
        let i = rest.find('{')?;
        let tail = &rest[i..];
        let j = tail.find('}')?;
        rest = &tail[j + 1..];
        Some(&tail[1..j])
    })
}

/// Checks a template: a non-empty program and only placeholders from `known`.
pub fn check(argv: &[String], known: &[&str]) -> Result<(), String> {
    match argv.first() {
        None => return Err("needs a program (argv, no shell)".into()),
        Some(p) if p.is_empty() => return Err("empty program name".into()),
        Some(_) => {}
    }
    for a in argv {
        if let Some(name) = placeholders(a).find(|n| !known.contains(n)) {
            let list: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
            return Err(format!(
                "unknown placeholder {{{name}}} in {a:?} (known: {})",
                list.join(" ")
            ));
        }
    }
    Ok(())
}

/// Replaces every placeholder with its value. A placeholder whose value is `None` (a GPU index
/// for a fault that names no GPU) makes the template unusable: its name is the error.
pub fn expand(argv: &[String], values: &[(&str, Option<&str>)]) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|a| {
            let mut out = String::with_capacity(a.len());
            let mut rest = a.as_str();
            while let Some(i) = rest.find('{') {
                let tail = &rest[i..];
                let Some(j) = tail.find('}') else { break };
                let name = &tail[1..j];
                let value = values
                    .iter()
                    .find(|(k, _)| *k == name)
                    .ok_or_else(|| format!("unknown placeholder {{{name}}}"))?
                    .1
                    .ok_or_else(|| format!("no value for {{{name}}}"))?;
                out.push_str(&rest[..i]);
                out.push_str(value);
                rest = &tail[j + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn placeholders_are_found_inside_arguments() {
        let p: Vec<&str> = placeholders("--gpu={gpu},{node}").collect();
        assert_eq!(p, ["gpu", "node"]);
        assert_eq!(placeholders("a{b").count(), 0);
    }

    #[test]
    fn unknown_placeholders_and_empty_programs_are_refused() {
        assert!(check(&v(&["ssh", "{node}"]), &["node"]).is_ok());
        let e = check(&v(&["ssh", "{host}"]), &["node", "gpu"]).unwrap_err();
        assert!(e.contains("{host}") && e.contains("{node} {gpu}"), "{e}");
        assert!(check(&[], &["node"]).is_err());
        assert!(check(&v(&[""]), &["node"]).is_err());
    }

    #[test]
    fn values_replace_placeholders_and_a_missing_one_is_named() {
        let vals = [("node", Some("gpu-01")), ("gpu", None)];
        assert_eq!(
            expand(&v(&["ssh", "{node}", "x={node}!"]), &vals).unwrap(),
            ["ssh", "gpu-01", "x=gpu-01!"]
        );
        let e = expand(&v(&["nvidia-smi", "-i", "{gpu}"]), &vals).unwrap_err();
        assert_eq!(e, "no value for {gpu}");
        assert_eq!(
            expand(&v(&["awk", "{print", "$1}"]), &vals).unwrap(),
            ["awk", "{print", "$1}"],
            "an unclosed brace is literal"
        );
    }
}
