//! A tool's man page: NAME, DESCRIPTION and OPTIONS from its clap command (the `--help` text),
//! a SYNOPSIS with every option's argument, COMMANDS for subcommands, EXIT STATUS from the
//! shared table in ugro-types, and ENVIRONMENT, FILES, EXAMPLES and SEE ALSO from the tool's
//! extras file (`crates/xtask/man/TOOL.md`) plus what all tools share (`common.md`).

use clap::{Arg, ArgAction, Command};
use ugro_types::Exit;

use crate::roff::{self, Block};

/// The date on every page; bumped with a release, not with each build, so `--check` is stable.
pub const DATE: &str = "2026-11-28";

/// The sections an extras file may have, in page order.
const EXTRA_SECTIONS: [&str; 5] = [
    "EXIT STATUS",
    "ENVIRONMENT",
    "FILES",
    "EXAMPLES",
    "SEE ALSO",
];

/// Renders `cmd`'s page. `tools` are all tool names (for SEE ALSO); `extras` and `common` are
/// the markdown extras of this tool and of all tools.
pub fn page(cmd: Command, tools: &[String], extras: &str, common: &str) -> Result<Vec<u8>, String> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let extras = Extras::parse(extras).map_err(|e| format!("crates/xtask/man/{name}.md: {e}"))?;
    let common = Extras::parse(common).map_err(|e| format!("crates/xtask/man/common.md: {e}"))?;
    let (description, exit_note) = description(&cmd);

    let mut out = title(&cmd);
    out.push_str(".SH NAME\n");
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    out.push_str(&roff::fill(&roff::inline(&format!("{name} - {about}"))));
    out.push('\n');
    out.push_str(&synopsis(&cmd));
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(&roff::render(&description, true));
    out.push_str(&options(&cmd));
    if cmd.has_subcommands() {
        out.push_str(&commands(&cmd));
    }
    out.push_str(&exit_status(&name, exit_note, extras.get("EXIT STATUS")));
    out.push_str(&environment(&cmd, &extras, &common));
    for section in ["FILES", "EXAMPLES"] {
        if let Some(blocks) = extras.get(section) {
            out.push_str(&roff::section(section));
            out.push_str(&roff::render(blocks, true));
        }
    }
    out.push_str(&see_also(&name, tools, &extras));
    Ok(out.into_bytes())
}

/// The sections of an extras file, by upper-case title.
struct Extras(Vec<(String, Vec<Block>)>);

impl Extras {
    fn parse(md: &str) -> Result<Self, String> {
        let mut sections: Vec<(String, Vec<Block>)> = Vec::new();
        for block in roff::parse(md) {
            match (block, sections.last_mut()) {
                (Block::Heading(_, title), _) => {
                    let title = title.to_uppercase();
                    if !EXTRA_SECTIONS.contains(&title.as_str()) {
                        return Err(format!("unknown section {title:?} ({EXTRA_SECTIONS:?})"));
                    }
                    sections.push((title, Vec::new()));
                }
                (other, Some((_, blocks))) => blocks.push(other),
                (other, None) => return Err(format!("text before the first heading: {other:?}")),
            }
        }
        Ok(Extras(sections))
    }

    fn get(&self, title: &str) -> Option<&[Block]> {
        self.0
            .iter()
            .find(|(t, _)| t == title)
            .map(|(_, b)| b.as_slice())
    }
}

/// clap_mangen's `.TH` line and the `\*(Aq` string definition its option text uses.
fn title(cmd: &Command) -> String {
    let version = cmd.get_version().unwrap_or_default();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(cmd.get_name().to_uppercase())
        .date(DATE)
        .source(format!("ugro {version}"))
        .manual("ugro manual");
    let mut buf = Vec::new();
    // Writing to memory cannot fail.
    let _ = man.render_title(&mut buf);
    String::from_utf8_lossy(&buf).into_owned() + LAYOUT
}

/// No hyphenation and a ragged right margin: these pages are full of flags, paths and field
/// names that an operator copies, and groff would otherwise break `accept_new_host_keys` as
/// `ac-cept_new_host_keys`. (groff's man macros restore hyphenation from the `HY` register
/// at each paragraph, so `.nh` alone is not enough.)
pub const LAYOUT: &str = ".nr HY 0\n.nh\n.ad l\n";

/// The long help as blocks (its `  * ` lines are list items), without its "Exit status:"
/// paragraph, which is returned on its own for the EXIT STATUS section.
fn description(cmd: &Command) -> (Vec<Block>, Option<String>) {
    let text = cmd
        .get_long_about()
        .or_else(|| cmd.get_about())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let md: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("  * ") {
            Some(item) => format!("- {item}"),
            None => l.to_owned(),
        })
        .collect();
    let mut note = None;
    let mut blocks = roff::parse(&md.join("\n"));
    blocks.retain(|b| match b {
        Block::Para(p) if p.starts_with("Exit status: ") => {
            note = Some(p["Exit status: ".len()..].to_owned());
            false
        }
        _ => true,
    });
    (blocks, note)
}

/// One synopsis per form: the tool with its options, then each subcommand with its own and
/// the global options. Every option shows its argument.
fn synopsis(cmd: &Command) -> String {
    let mut out = String::from(".SH SYNOPSIS\n");
    let mut form = |words: &[&str], args: Vec<&Arg>, command: bool| {
        out.push_str(".SY ");
        out.push_str(&roff::inline(words[0]));
        out.push('\n');
        for w in &words[1..] {
            out.push_str(&format!("\\fB{}\\fR\n", roff::inline(w)));
        }
        let (positional, options): (Vec<&Arg>, Vec<&Arg>) =
            args.into_iter().partition(|a| a.is_positional());
        for a in options.into_iter().chain(positional) {
            out.push_str(&synopsis_arg(a));
            out.push('\n');
        }
        if command {
            out.push_str("[\\fICOMMAND\\fR]\n");
        }
        out.push_str(".YS\n");
    };
    form(&[cmd.get_name()], shown_args(cmd), cmd.has_subcommands());
    for sub in subcommands(cmd) {
        form(&[cmd.get_name(), sub.get_name()], shown_args(sub), false);
    }
    out
}

/// Subcommands an operator types: not hidden, and not clap's `help`, which -h covers.
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn shown_args(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

fn synopsis_arg(a: &Arg) -> String {
    let mut text = [
        a.get_short().map(|s| format!("\\fB\\-{s}\\fR")),
        a.get_long()
            .map(|l| format!("\\fB\\-\\-{}\\fR", roff::inline(l))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("|");
    if a.get_action().takes_values() {
        let value = value_name(a);
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("\\fI{}\\fR", roff::inline(&value)));
    }
    let repeated = matches!(a.get_action(), ArgAction::Append | ArgAction::Count);
    let mut text = if a.is_required_set() {
        text
    } else {
        format!("[{text}]")
    };
    if repeated {
        text.push_str("\\&...");
    }
    text
}

fn value_name(a: &Arg) -> String {
    match a.get_value_names() {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        _ => a.get_id().as_str().to_uppercase(),
    }
}

/// clap_mangen's OPTIONS section with backticks turned into bold and text filled.
fn options(cmd: &Command) -> String {
    let mut buf = Vec::new();
    let _ = clap_mangen::Man::new(cmd.clone()).render_options_section(&mut buf);
    tidy(&String::from_utf8_lossy(&buf))
}

/// Makes clap_mangen's roff lint-clean: no `.br` next to a paragraph break (it writes `.br`, a
/// blank line, `.br` around the list of possible values), no blank lines, no string
/// definition (the title has it), `code` spans in bold, and text filled, except a `.TP` tag,
/// which must stay one line.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| lines[p]);
        let next_is_break = lines.get(i + 1).is_some_and(|l| l.is_empty());
        if (*line == ".br" && (next_is_break || prev.is_some_and(str::is_empty)))
            || line.starts_with(".ie \\n(.g .ds Aq")
            || line.starts_with(".el .ds Aq")
        {
            continue;
        }
        if line.is_empty() {
            out.push_str(".sp");
        } else if line.starts_with('.') || prev == Some(".TP") {
            out.push_str(&roff::code_spans(line));
        } else {
            out.push_str(&roff::fill(&roff::code_spans(line)));
        }
        out.push('\n');
    }
    out
}

/// Each subcommand: its synopsis as the tag, its help, its options and arguments.
fn commands(cmd: &Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in subcommands(cmd) {
        out.push_str(".TP\n");
        let own: Vec<String> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version"))
            .map(synopsis_arg)
            .collect();
        // A command with subcommands of its own (`budget reset`) names them in place of
        // arguments; trimmed, so a command with neither leaves no trailing blank (mandoc style).
        let nested: Vec<String> = sub
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .map(|c| format!("\\fB{}\\fR", roff::inline(c.get_name())))
            .collect();
        let args = if own.is_empty() && !nested.is_empty() {
            nested.join(" | ")
        } else {
            own.join(" ")
        };
        let head = format!("\\fB{}\\fR {args}", roff::inline(sub.get_name()));
        out.push_str(head.trim_end());
        out.push('\n');
        let help = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push_str(&roff::fill(&roff::inline(&sentence(&help))));
        out.push('\n');
        let options: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_long().is_some() && a.get_id() != "help")
            .collect();
        if !options.is_empty() {
            out.push_str(
                ".RS
",
            );
            for a in options {
                out.push_str(&format!(
                    ".TP
{}
",
                    synopsis_arg(a).trim_matches(['[', ']'])
                ));
                out.push_str(&roff::fill(&roff::inline(&arg_help(a))));
                out.push('\n');
            }
            out.push_str(".RE\n");
        }
    }
    out
}

/// "Output format (table, json; default table)."
fn arg_help(a: &Arg) -> String {
    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
    let mut extra = Vec::new();
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    if !values.is_empty() {
        extra.push(values.join(", "));
    }
    if let Some(d) = a.get_default_values().first() {
        extra.push(format!("default {}", d.to_string_lossy()));
    }
    let help = help.trim_end_matches('.');
    if extra.is_empty() {
        format!("{help}.")
    } else {
        format!("{help} ({}).", extra.join("; "))
    }
}

fn sentence(text: &str) -> String {
    let t = text.trim();
    if t.ends_with('.') || t.is_empty() {
        t.to_owned()
    } else {
        format!("{t}.")
    }
}

/// The shared table, then what this tool says about its statuses.
fn exit_status(name: &str, note: Option<String>, extra: Option<&[Block]>) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    out.push_str(&roff::fill(&roff::inline(
        "Every ugro tool uses one table of exit statuses, the values of BSD's sysexits.h:",
    )));
    out.push('\n');
    for e in Exit::ALL {
        out.push_str(&format!(
            ".TP\n.B {}\n{}\n",
            e.code(),
            roff::inline(e.meaning())
        ));
    }
    let mut blocks = Vec::new();
    if let Some(note) = note {
        blocks.push(Block::Para(format!("`{name}` exits with {note}")));
    }
    blocks.extend(extra.unwrap_or_default().iter().cloned());
    out.push_str(&roff::render(&blocks, false));
    out
}

/// The variables the tool's options read (clap `env`), the tool's own, then the shared ones.
fn environment(cmd: &Command, extras: &Extras, common: &Extras) -> String {
    let mut blocks: Vec<Block> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a.get_long().unwrap_or_default();
            Some(Block::Term(
                format!("`{env}`"),
                format!("{} Used when `--{long}` is not given.", sentence(&help)),
            ))
        })
        .collect();
    blocks.extend(
        extras
            .get("ENVIRONMENT")
            .unwrap_or_default()
            .iter()
            .cloned(),
    );
    blocks.extend(
        common
            .get("ENVIRONMENT")
            .unwrap_or_default()
            .iter()
            .cloned(),
    );
    let mut out = roff::section("ENVIRONMENT");
    out.push_str(&roff::render(&blocks, true));
    out
}

/// The other tools, ugro(7), then the extras' references (`name(section)`, comma-separated).
fn see_also(name: &str, tools: &[String], extras: &Extras) -> String {
    let mut refs: Vec<String> = tools
        .iter()
        .filter(|t| *t != name)
        .map(|t| format!("{t}(1)"))
        .collect();
    refs.push("ugro(7)".into());
    for block in extras.get("SEE ALSO").unwrap_or_default() {
        if let Block::Para(p) = block {
            refs.extend(
                p.split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty()),
            );
        }
    }
    let refs: Vec<String> = refs
        .iter()
        .map(|r| match r.split_once('(') {
            Some((page, sec)) => format!("\\fB{}\\fR({sec}", roff::inline(page)),
            None => roff::inline(r),
        })
        .collect();
    let mut out = roff::section("SEE ALSO");
    out.push_str(&roff::fill(&refs.join(", ")));
    out.push('\n');
    out
}
