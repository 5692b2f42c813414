//! Roff for man(7) from plain text: escaping, filling to mandoc's line limit, and the small
//! markdown subset that SCHEMA.md, the tools' long help and the man/*.md extras use.

/// The longest input line written (mandoc's style check asks for at most 80 bytes).
const WIDTH: usize = 78;

/// Escapes text for roff: backslashes and hyphens (so options stay searchable minus signs),
/// and `code` spans in bold. A span left open at the end is closed.
pub fn inline(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            _ => s.push(c),
        }
    }
    code_spans(&s)
}

/// Turns `code` spans of text that is already roff into bold (clap_mangen passes backticks
/// through, where they would print literally), and other non-ASCII characters into `\[uXXXX]`:
/// mandoc measures line length in those terms, so filling counts what it counts.
pub fn code_spans(roff: &str) -> String {
    let mut s = String::with_capacity(roff.len() + 8);
    let mut open = false;
    for c in roff.chars() {
        if c == '`' {
            s.push_str(if open { "\\fR" } else { "\\fB" });
            open = !open;
        } else if c.is_ascii() {
            s.push(c);
        } else {
            s.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    if open {
        s.push_str("\\fR");
    }
    s
}

/// Fills roff text to lines of at most [`WIDTH`] bytes, breaking at spaces; a line that would
/// start with a control character gets `\&` first.
pub fn fill(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut width = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if width > 0 && width + 1 + word.len() > WIDTH {
            out.push('\n');
            width = 0;
        } else if width > 0 {
            out.push(' ');
            width += 1;
        }
        if width == 0 && (word.starts_with('.') || word.starts_with('\'')) {
            out.push_str("\\&");
            width += 2;
        }
        out.push_str(word);
        width += word.len();
    }
    out
}

/// One block of the markdown subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// `# Title` (level 1) or `## Section` (level 2).
    Heading(u8, String),
    /// Lines up to a blank line, joined.
    Para(String),
    /// `- item`, with indented continuation lines.
    Item(String),
    /// A line of its own, then `: definition` (continuation lines indented).
    Term(String, String),
    /// Lines between ``` fences, kept as they are.
    Code(Vec<String>),
}

/// Parses the subset: headings, paragraphs, `- ` lists, term/definition pairs, fenced code.
pub fn parse(md: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut code: Option<Vec<String>> = None;
    for line in md.lines() {
        if let Some(lines) = code.as_mut() {
            if line.trim_start().starts_with("```") {
                blocks.push(Block::Code(code.take().unwrap_or_default()));
            } else {
                lines.push(line.to_owned());
            }
            continue;
        }
        let text = line.trim();
        if text.starts_with("```") {
            blocks.extend(open.take());
            code = Some(Vec::new());
        } else if let Some((level, title)) = heading(line) {
            blocks.extend(open.take());
            blocks.push(Block::Heading(level, title.to_owned()));
        } else if text.is_empty() {
            blocks.extend(open.take());
        } else if let Some(item) = line.strip_prefix("- ") {
            blocks.extend(open.take());
            open = Some(Block::Item(item.trim().to_owned()));
        } else if let Some(def) = line.strip_prefix(": ") {
            open = Some(match open.take() {
                Some(Block::Para(term)) => Block::Term(term, def.trim().to_owned()),
                other => {
                    blocks.extend(other);
                    Block::Para(def.trim().to_owned())
                }
            });
        } else {
            open = Some(match open.take() {
                Some(Block::Para(p)) => Block::Para(format!("{p} {text}")),
                Some(Block::Item(p)) => Block::Item(format!("{p} {text}")),
                Some(Block::Term(t, d)) => Block::Term(t, format!("{d} {text}")),
                _ => Block::Para(text.to_owned()),
            });
        }
    }
    blocks.extend(open.take());
    blocks.extend(code.map(Block::Code));
    blocks
}

fn heading(line: &str) -> Option<(u8, &str)> {
    if let Some(t) = line.strip_prefix("## ") {
        Some((2, t.trim()))
    } else {
        line.strip_prefix("# ").map(|t| (1, t.trim()))
    }
}

/// Renders blocks as man(7) body text, to follow a heading (`after_heading`) or other body
/// text. Level-2 headings become sections; level 1 is left to the caller (the page title).
pub fn render(blocks: &[Block], after_heading: bool) -> String {
    let mut out = String::new();
    let mut after_heading = after_heading;
    for block in blocks {
        match block {
            Block::Heading(_, title) => out.push_str(&section(title)),
            Block::Para(text) => {
                // A paragraph macro straight after a heading is redundant (mandoc warns).
                if !after_heading {
                    out.push_str(".PP\n");
                }
                push_filled(&mut out, text);
            }
            Block::Item(text) => {
                out.push_str(".IP \\(bu 2\n");
                push_filled(&mut out, text);
            }
            Block::Term(term, def) => {
                out.push_str(".TP\n");
                out.push_str(&inline(term));
                out.push('\n');
                push_filled(&mut out, def);
            }
            Block::Code(lines) => push_code(&mut out, lines, after_heading),
        }
        after_heading = matches!(block, Block::Heading(..));
    }
    out
}

/// A `.SH` line for a section title.
pub fn section(title: &str) -> String {
    format!(
        ".SH \"{}\"\n",
        inline(&title.to_uppercase()).replace('"', "'")
    )
}

fn push_filled(out: &mut String, text: &str) {
    out.push_str(&fill(&inline(text)));
    out.push('\n');
}

fn push_code(out: &mut String, lines: &[String], after_heading: bool) {
    if !after_heading {
        out.push_str(".PP\n");
    }
    out.push_str(".RS 4\n.EX\n");
    for line in lines {
        let escaped = code_spans(
            &line
                .replace('\\', "\\e")
                .replace('-', "\\-")
                .replace('`', "\\(ga"),
        );
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&escaped);
        out.push('\n');
    }
    out.push_str(".EE\n.RE\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_become_bold_and_an_open_one_is_closed() {
        assert_eq!(code_spans("a `b` c `d"), "a \\fBb\\fR c \\fBd\\fR");
    }

    #[test]
    fn fill_keeps_lines_within_the_limit_and_guards_control_characters() {
        let words = vec!["word"; 60].join(" ") + " .dot";
        let filled = fill(&words);
        assert!(filled.lines().all(|l| l.len() <= WIDTH), "{filled}");
        // 15 four-letter words fill a line, so the 61st word starts the fifth.
        assert_eq!(filled.lines().last(), Some("\\&.dot"), "{filled}");
    }

    #[test]
    fn parse_reads_terms_items_and_fenced_code() {
        let md = "## FILES\n\n`/etc/x`\n: The file,\n  continued.\n\n- one\n- two\n  more\n\n```\nugro-probe | ugro-score\n```\n";
        assert_eq!(
            parse(md),
            vec![
                Block::Heading(2, "FILES".into()),
                Block::Term("`/etc/x`".into(), "The file, continued.".into()),
                Block::Item("one".into()),
                Block::Item("two more".into()),
                Block::Code(vec!["ugro-probe | ugro-score".into()]),
            ]
        );
    }

    #[test]
    fn code_blocks_escape_hyphens_and_leading_dots() {
        let out = render(&[Block::Code(vec!["a -b \\".into(), ".x".into()])], true);
        assert!(out.contains("a \\-b \\e\n\\&.x\n"), "{out}");
    }
}
