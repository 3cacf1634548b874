//! Every `conftag`, `conftag-infer` and `conftag-judge` command line under `deploy/` (compose,
//! Kubernetes, Slurm, systemd, Dockerfiles, scripts, the code in its Markdown) uses
//! subcommands and flags that the binaries' clap definitions have.
//!
//! Extraction, kept simple on purpose:
//! - YAML: the `entrypoint:`, `command:` and `args:` lists of one mapping form one command line
//!   (a Kubernetes container's `command` + `args`, a compose service's `entrypoint` +
//!   `command`); a string form or an item with spaces is also read as shell.
//! - everything else (shell, `.sbatch`, Dockerfiles, systemd units, env files): shell words
//!   with quotes, `\` continuations, `$(…)`, comments, redirections and here-documents.
//! - Markdown: fenced code blocks and inline code spans only (not prose).
//! - Python files are skipped (they do not start the binaries).
//!
//! A binary is recognised by its file name (`conftag`, `/usr/local/bin/conftag-infer`,
//! `ExecStart=/…/conftag-judge`, `"$conftag"`); its command line runs to the end of the shell
//! command. Flags that take a value skip it, so values are never read as subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// Flags and subcommands that other branches of issue #6 add and that the manifests already
/// use: `--metrics-addr` (all binaries), `conftag monitor`, `conftag-infer --engine openai
/// --engine-url URL`. Tolerated while missing; empty this list once they have landed (the test
/// prints which entries already exist).
const PENDING_FLAGS: &[(&str, &str)] = &[];

const BINARIES: [&str; 3] = ["conftag", "conftag-infer", "conftag-judge"];

fn clap_command(bin: &str) -> clap::Command {
    let mut cmd = match bin {
        "conftag" => coordinator::cli::Cli::command(),
        "conftag-infer" => worker_infer::cli::Cli::command(),
        "conftag-judge" => worker_judge::cli::Cli::command(),
        other => panic!("unknown binary {other}"),
    };
    // Adds --help, --version and the `help` subcommand, and propagates global flags.
    cmd.build();
    cmd
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A word, with the line it starts on and the command substitutions (`$(…)`) in it, which
    /// are read as shell on their own. A word after `-c` (`sh -c '…'`) is read as shell too.
    Word {
        text: String,
        line: usize,
        scripts: Vec<String>,
    },
    /// The end of a shell command: newline, `;`, `&&`, `||`, `|`, `&`, `(`, `)`.
    End,
}

#[derive(Debug, Clone)]
struct Invocation {
    file: String,
    line: usize,
    bin: String,
    /// Arguments with their lines.
    args: Vec<(String, usize)>,
}

// ---------------------------------------------------------------------------------------------
// Shell words

fn shell_tokens(src: &str, first_line: usize) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut line = first_line;
    let mut word = String::new();
    let mut word_line = line;
    let mut in_word = false;
    let mut scripts: Vec<String> = Vec::new();
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;

    macro_rules! flush {
        () => {
            if in_word {
                toks.push(Tok::Word {
                    text: std::mem::take(&mut word),
                    line: word_line,
                    scripts: std::mem::take(&mut scripts),
                });
                in_word = false;
            }
        };
    }
    macro_rules! start {
        () => {
            if !in_word {
                in_word = true;
                word_line = line;
            }
        };
    }

    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                line += 1;
                i += 2;
            }
            '\\' => {
                start!();
                if let Some(&n) = chars.get(i + 1) {
                    word.push(n);
                }
                i += 2;
            }
            ' ' | '\t' | '\r' => {
                flush!();
                i += 1;
            }
            '\n' => {
                flush!();
                toks.push(Tok::End);
                line += 1;
                i += 1;
                // Skip here-document bodies.
                for (delim, strip_tabs) in std::mem::take(&mut heredocs) {
                    while i < chars.len() {
                        let end = chars[i..]
                            .iter()
                            .position(|&c| c == '\n')
                            .map_or(chars.len(), |p| i + p);
                        let body: String = chars[i..end].iter().collect();
                        let body = if strip_tabs {
                            body.trim_start_matches('\t')
                        } else {
                            &body
                        };
                        i = (end + 1).min(chars.len());
                        line += 1;
                        if body.trim_end() == delim {
                            break;
                        }
                    }
                }
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' | '"' => {
                start!();
                let quote = c;
                let mut quoted = String::new();
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    if quote == '"' && chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    quoted.push(chars[i]);
                    i += 1;
                }
                i += 1;
                if quote == '"' {
                    scripts.extend(substitutions(&quoted));
                }
                word.push_str(&quoted);
            }
            '$' if matches!(chars.get(i + 1), Some('(') | Some('{')) => {
                start!();
                let (open, close) = if chars[i + 1] == '(' {
                    ('(', ')')
                } else {
                    ('{', '}')
                };
                let begin = i;
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == open {
                        depth += 1;
                    } else if chars[i] == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    } else if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                let text: String = chars[begin..(i + 1).min(chars.len())].iter().collect();
                scripts.extend(substitutions(&text));
                word.push_str(&text);
                i += 1;
            }
            '`' => {
                flush!();
                let begin = i + 1;
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                let inner: String = chars[begin..i.min(chars.len())].iter().collect();
                toks.push(Tok::End);
                toks.extend(shell_tokens(&inner, line));
                toks.push(Tok::End);
                line += inner.matches('\n').count();
                i += 1;
            }
            ';' | '&' | '|' | '(' | ')' => {
                flush!();
                toks.push(Tok::End);
                i += 1;
            }
            '<' | '>' => {
                // A redirection: drop a file-descriptor number before it and the target after.
                if in_word && word.chars().all(|c| c.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                flush!();
                let mut op = String::new();
                while i < chars.len() && matches!(chars[i], '<' | '>' | '&' | '-') {
                    op.push(chars[i]);
                    i += 1;
                }
                while i < chars.len() && matches!(chars[i], ' ' | '\t') {
                    i += 1;
                }
                let begin = i;
                while i < chars.len() && !chars[i].is_whitespace() && !";|&()".contains(chars[i]) {
                    i += 1;
                }
                let target: String = chars[begin..i].iter().collect();
                if op.starts_with("<<") && !op.starts_with("<<<") {
                    let delim = target.trim_matches(|c| c == '\'' || c == '"').to_string();
                    heredocs.push((delim, op.ends_with('-')));
                }
            }
            _ => {
                start!();
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        toks.push(Tok::Word {
            text: word,
            line: word_line,
            scripts,
        });
    }
    toks
}

// ---------------------------------------------------------------------------------------------
// YAML (line based: block and flow lists under command/args/entrypoint)

fn strip_yaml_comment(line: &str) -> &str {
    let (mut sq, mut dq) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '#' if !sq && !dq && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"")
    } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else {
        s.to_string()
    }
}

fn flow_items(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    let (mut items, mut cur) = (Vec::new(), String::new());
    let (mut sq, mut dq) = (false, false);
    for c in inner.chars() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            ',' if !sq && !dq => {
                items.push(unquote(&cur));
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        items.push(unquote(&cur));
    }
    items
}

struct YamlLine<'a> {
    indent: usize,
    /// Column of the key (after a `- ` marker), and the key and value.
    key: Option<(usize, &'a str, &'a str)>,
    item: Option<&'a str>,
    is_item: bool,
}

fn yaml_line(raw: &str) -> Option<YamlLine<'_>> {
    let line = strip_yaml_comment(raw).trim_end();
    let body = line.trim_start();
    if body.is_empty() {
        return None;
    }
    let indent = line.len() - body.len();
    let (is_item, rest, col) = if body == "-" {
        (true, "", indent + 1)
    } else if let Some(r) = body.strip_prefix("- ") {
        let r2 = r.trim_start();
        (true, r2, indent + 2 + (r.len() - r2.len()))
    } else {
        (false, body, indent)
    };
    let key = rest.find(':').and_then(|p| {
        let k = &rest[..p];
        let after = &rest[p + 1..];
        let plain = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./<".contains(c));
        (plain && (after.is_empty() || after.starts_with(' '))).then(|| (col, k, after.trim()))
    });
    Some(YamlLine {
        indent,
        key,
        item: is_item.then_some(rest),
        is_item,
    })
}

/// Block scalar lines (`|`, `>-`, …) after line `i`: more indented than `parent`.
fn block_scalar(lines: &[&str], mut i: usize, parent: usize) -> (String, usize) {
    let mut out = Vec::new();
    let mut min = usize::MAX;
    while i < lines.len() {
        let l = lines[i];
        if !l.trim().is_empty() {
            let ind = l.len() - l.trim_start().len();
            if ind <= parent {
                break;
            }
            min = min.min(ind);
        }
        out.push(l);
        i += 1;
    }
    let text = out
        .iter()
        .map(|l| if l.len() >= min { &l[min..] } else { l.trim() })
        .collect::<Vec<_>>()
        .join("\n");
    (text, i)
}

struct ListRec {
    key: String,
    col: usize,
    mapping: usize,
    line: usize,
    toks: Vec<Tok>,
}

fn scan_yaml(
    text: &str,
    file: &str,
    first_line: usize,
    out: &mut Vec<Invocation>,
    errors: &mut Vec<String>,
) {
    let lines: Vec<&str> = text.lines().collect();
    let parsed: Vec<Option<YamlLine>> = lines.iter().map(|l| yaml_line(l)).collect();
    // The mapping a key at column `col` on line `i` belongs to: the line that opens it.
    let mapping_of = |i: usize, col: usize| -> usize {
        if let Some(Some(l)) = parsed.get(i) {
            if l.is_item && l.key.map(|k| k.0) == Some(col) {
                return i;
            }
        }
        for j in (0..i).rev() {
            if let Some(l) = &parsed[j] {
                if l.indent < col {
                    return j;
                }
            }
        }
        usize::MAX
    };
    let mut lists: Vec<ListRec> = Vec::new();
    let mut images: BTreeMap<(usize, usize), String> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(Some(l)) = parsed.get(i) else {
            i += 1;
            continue;
        };
        let Some((col, key, value)) = l.key else {
            i += 1;
            continue;
        };
        let lineno = first_line + i;
        if key == "image" {
            images.insert((col, mapping_of(i, col)), unquote(value));
        }
        if !matches!(key, "command" | "args" | "entrypoint") {
            i += 1;
            continue;
        }
        let mapping = mapping_of(i, col);
        let mut toks = Vec::new();
        let word = |text: String, line: usize| Tok::Word {
            scripts: substitutions(&text),
            text,
            line,
        };
        i += 1;
        if value.starts_with('[') {
            let mut flow = value.to_string();
            while !flow.trim_end().ends_with(']') && i < lines.len() {
                flow.push(' ');
                flow.push_str(strip_yaml_comment(lines[i]).trim());
                i += 1;
            }
            toks.extend(flow_items(&flow).into_iter().map(|t| word(t, lineno)));
        } else if value.starts_with('|') || value.starts_with('>') {
            let (body, next) = block_scalar(&lines, i, col);
            toks.extend(shell_tokens(&body, lineno + 1));
            i = next;
        } else if !value.is_empty() {
            toks.extend(shell_tokens(&unquote(value), lineno));
        } else {
            // A block list: items at this column or deeper.
            while i < lines.len() {
                let Some(Some(item)) = parsed.get(i) else {
                    i += 1;
                    continue;
                };
                if item.indent < col || (!item.is_item && item.indent == col) {
                    break;
                }
                let ln = first_line + i;
                i += 1;
                let Some(v) = item.item else {
                    // A continuation of a plain multi-line item.
                    if let Some(Tok::Word { text, .. }) = toks.last_mut() {
                        text.push(' ');
                        text.push_str(strip_yaml_comment(lines[i - 1]).trim());
                    }
                    continue;
                };
                if v.starts_with('|') || v.starts_with('>') {
                    let (body, next) = block_scalar(&lines, i, item.indent);
                    // A script item (`- |`): read it as shell.
                    toks.push(Tok::Word {
                        text: body.clone(),
                        line: ln + 1,
                        scripts: vec![body],
                    });
                    i = next;
                } else {
                    toks.push(word(unquote(v), ln));
                }
            }
        }
        lists.push(ListRec {
            key: key.to_string(),
            col,
            mapping,
            line: lineno,
            toks,
        });
    }

    // One command line per mapping: entrypoint, then command, then args.
    let mut groups: BTreeMap<(usize, usize), Vec<&ListRec>> = BTreeMap::new();
    for rec in &lists {
        groups.entry((rec.col, rec.mapping)).or_default().push(rec);
    }
    for (at, mut recs) in groups {
        recs.sort_by_key(|r| match r.key.as_str() {
            "entrypoint" => 0,
            "command" => 1,
            _ => 2,
        });
        let toks: Vec<Tok> = recs.iter().flat_map(|r| r.toks.iter().cloned()).collect();
        let before = out.len();
        find_invocations(&toks, file, out);
        let found_here = out.len() > before;
        let image = images.get(&at).cloned().unwrap_or_default();
        let has_flags = toks
            .iter()
            .any(|t| matches!(t, Tok::Word { text, .. } if text.starts_with("--")));
        if !found_here
            && has_flags
            && (image.contains("conftag")
                || (image.is_empty() && recs.iter().all(|r| r.key == "args")))
        {
            errors.push(format!(
                "{file}:{}: flags without the binary that takes them (image `{image}`): name it in `command:`/`entrypoint:` so they can be checked",
                recs[0].line
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown: fenced code and inline code only

fn scan_markdown(text: &str, file: &str, out: &mut Vec<Invocation>, errors: &mut Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    // Inline code in a run of prose lines (a span may wrap onto the next line).
    let inline = |from: usize, to: usize, out: &mut Vec<Invocation>| {
        let prose = lines[from..to].join("\n");
        let mut line = from + 1;
        for (n, part) in prose.split('`').enumerate() {
            if n % 2 == 1 {
                find_invocations(&shell_tokens(part, line), file, out);
            }
            line += part.matches('\n').count();
        }
    };
    let mut prose_from = 0;
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        inline(prose_from, i, out);
        let info = info.trim().to_ascii_lowercase();
        let start = i + 1;
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            i += 1;
        }
        let body = lines[start..i.min(lines.len())].join("\n");
        if info.starts_with("yaml") || info.starts_with("yml") {
            scan_yaml(&body, file, start + 1, out, errors);
        } else {
            find_invocations(&shell_tokens(&body, start + 1), file, out);
        }
        i += 1;
        prose_from = i.min(lines.len());
    }
    inline(prose_from, lines.len(), out);
}

// ---------------------------------------------------------------------------------------------
// Invocations

/// The bodies of the `$(…)` command substitutions in a word.
fn substitutions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find("$(") {
        let body = &rest[p + 2..];
        let mut depth = 1;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push(body[..end].to_string());
        rest = &body[end.min(body.len())..];
    }
    out
}

fn clean(word: &str) -> String {
    word.trim_start_matches(['"', '\'', '`', '[', '{', '('])
        .trim_end_matches(['"', '\'', '`', ']', '}', ')', ',', ';'])
        .to_string()
}

/// The binary a word starts, if it names one: `conftag`, `/usr/local/bin/conftag-infer`,
/// `ExecStart=/usr/local/bin/conftag-judge`, `$G/conftag`, `$conftag`.
fn base_name(word: &str) -> Option<&'static str> {
    let w = clean(word);
    if w.contains(char::is_whitespace) {
        return None;
    }
    // `KEY=VALUE`: `ExecStart=/usr/local/bin/conftag`, `conftag="$dir/conftag"`; not
    // `User=conftag` or `Description=conftag judge worker`.
    let w = match w.split_once('=') {
        Some((k, v)) if !k.starts_with('-') => {
            if !(v.contains('/') || k.starts_with("Exec")) {
                return None;
            }
            v.to_string()
        }
        _ => w.clone(),
    };
    let (dir, base) = w.rsplit_once('/').unwrap_or(("", w.as_str()));
    // Kubernetes references such as deploy/conftag-infer are names, not programs.
    if [
        "deploy",
        "deployment",
        "job",
        "pod",
        "sts",
        "statefulset",
        "svc",
        "service",
    ]
    .contains(&dir)
    {
        return None;
    }
    let base = base.trim_start_matches('$');
    BINARIES.into_iter().find(|b| *b == base)
}

/// Commands whose arguments name units or programs rather than run them.
const NAME_TAKERS: &[&str] = &[
    "systemctl",
    "journalctl",
    "which",
    "type",
    "command",
    "pkill",
    "pgrep",
    "killall",
];

fn find_invocations(toks: &[Tok], file: &str, out: &mut Vec<Invocation>) {
    let mut cur: Option<Invocation> = None;
    let mut prev = String::new();
    // The first word of the shell command: after `systemctl`, `journalctl`, `which`, … the
    // binaries' names are unit or program names.
    let mut head = String::new();
    for tok in toks {
        match tok {
            Tok::End => {
                out.extend(cur.take());
                prev.clear();
                head.clear();
            }
            Tok::Word {
                text,
                line,
                scripts,
            } => {
                for s in scripts {
                    find_invocations(&shell_tokens(s, *line), file, out);
                }
                if prev == "-c" {
                    // `sh -c '…'`, `bash -c '…'`
                    find_invocations(&shell_tokens(text, *line), file, out);
                }
                // A word after a flag is that flag's value (`--gid conftag`, `-u conftag-judge`,
                // `--home-dir /var/lib/conftag`); after `which`/`type` a name.
                if head.is_empty() {
                    head = clean(text);
                }
                let is_value = (prev.starts_with('-') && prev != "--" && !prev.contains('='))
                    || NAME_TAKERS.contains(&head.as_str());
                match base_name(text) {
                    Some(bin) if !is_value => {
                        out.extend(cur.take());
                        cur = Some(Invocation {
                            file: file.to_string(),
                            line: *line,
                            bin: bin.to_string(),
                            args: Vec::new(),
                        });
                    }
                    _ => {
                        if let Some(inv) = cur.as_mut() {
                            inv.args.push((clean(text), *line));
                        }
                    }
                }
                prev = clean(text);
            }
        }
    }
    out.extend(cur);
}

fn scan_file(path: &Path, rel: &str, out: &mut Vec<Invocation>, errors: &mut Vec<String>) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".py") {
        return;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return; // not text
    };
    if text.contains('\0') {
        return;
    }
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        scan_yaml(&text, rel, 1, out, errors);
    } else if name.ends_with(".md") {
        scan_markdown(&text, rel, out, errors);
    } else {
        find_invocations(&shell_tokens(&text, 1), rel, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Checking against clap

fn find_arg<'a>(path: &[&'a clap::Command], long: &str) -> Option<&'a clap::Arg> {
    let matches = |a: &&clap::Arg| {
        a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
    };
    let (cur, ancestors) = path.split_last()?;
    cur.get_arguments().find(matches).or_else(|| {
        ancestors.iter().rev().find_map(|c| {
            c.get_arguments()
                .filter(|a| a.is_global_set())
                .find(matches)
        })
    })
}

fn find_short<'a>(path: &[&'a clap::Command], short: char) -> Option<&'a clap::Arg> {
    let (cur, ancestors) = path.split_last()?;
    cur.get_arguments()
        .find(|a| a.get_short() == Some(short))
        .or_else(|| {
            ancestors.iter().rev().find_map(|c| {
                c.get_arguments()
                    .find(|a| a.is_global_set() && a.get_short() == Some(short))
            })
        })
}

fn looks_like_subcommand(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks one invocation; returns the number of flags and subcommands verified.
fn check(
    inv: &Invocation,
    roots: &BTreeMap<&str, clap::Command>,
    pending_used: &mut Vec<(String, String, String)>,
    errors: &mut Vec<String>,
) -> usize {
    let root = &roots[inv.bin.as_str()];
    let mut path: Vec<&clap::Command> = vec![root];
    let mut in_pending_subcommand = false;
    let mut checked = 0;
    let mut i = 0;
    let is_pending = |item: &str| {
        PENDING_FLAGS
            .iter()
            .any(|(b, f)| *b == inv.bin && *f == item)
    };
    let here = |path: &[&clap::Command]| {
        path.iter()
            .map(|c| c.get_name().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    while i < inv.args.len() {
        let (a, line) = (inv.args[i].0.as_str(), inv.args[i].1);
        i += 1;
        if a == "--" {
            break;
        }
        if let Some(rest) = a.strip_prefix("--") {
            let (name, inline_value) = match rest.split_once('=') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                continue; // `--$X`, `--)` and the like: nothing to check
            }
            let found = if in_pending_subcommand {
                find_arg(&path[..1], name).filter(|a| a.is_global_set())
            } else {
                find_arg(&path, name)
            };
            match found {
                Some(arg) => {
                    checked += 1;
                    if !inline_value && arg.get_action().takes_values() {
                        i += 1;
                    }
                }
                None if is_pending(&format!("--{name}")) => {
                    pending_used.push((
                        inv.bin.clone(),
                        format!("--{name}"),
                        format!("{}:{line}", inv.file),
                    ));
                    let next_is_value = inv.args.get(i).is_some_and(|n| !n.0.starts_with('-'));
                    if !inline_value && next_is_value {
                        i += 1;
                    }
                }
                None => errors.push(format!(
                    "{}:{line}: `{}` has no flag `--{name}`",
                    inv.file,
                    here(&path)
                )),
            }
        } else if a.len() == 2 && a.starts_with('-') && a.as_bytes()[1].is_ascii_alphabetic() {
            let short = a.as_bytes()[1] as char;
            match find_short(&path, short) {
                Some(arg) => {
                    checked += 1;
                    if arg.get_action().takes_values() {
                        i += 1;
                    }
                }
                None => errors.push(format!(
                    "{}:{line}: `{}` has no flag `{a}`",
                    inv.file,
                    here(&path)
                )),
            }
        } else if !in_pending_subcommand {
            let cur = *path.last().expect("root");
            if let Some(sub) = cur.find_subcommand(a) {
                checked += 1;
                path.push(sub);
            } else if cur.has_subcommands() && is_pending(a) {
                pending_used.push((
                    inv.bin.clone(),
                    a.to_string(),
                    format!("{}:{}", inv.file, inv.line),
                ));
                in_pending_subcommand = true;
            } else if cur.has_subcommands()
                && cur.get_positionals().next().is_none()
                && looks_like_subcommand(a)
            {
                errors.push(format!(
                    "{}:{line}: `{}` has no subcommand `{a}`",
                    inv.file,
                    here(&path)
                ));
                break; // the rest belongs to a subcommand we do not know
            }
            // Anything else is a positional argument or a value we cannot see ($VAR, ${…}).
        }
    }
    checked
}

fn scan_dir(
    dir: &Path,
    root: &Path,
    out: &mut Vec<Invocation>,
    errors: &mut Vec<String>,
    files: &mut usize,
) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            scan_dir(&p, root, out, errors, files);
        } else if p.is_file() {
            *files += 1;
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            scan_file(&p, &rel, out, errors);
        }
    }
}

/// Scan text as if it were the file `name`; returns (invocations, errors).
fn check_text(name: &str, text: &str) -> (Vec<Invocation>, Vec<String>) {
    let roots: BTreeMap<&str, clap::Command> =
        BINARIES.iter().map(|b| (*b, clap_command(b))).collect();
    let (mut invs, mut errors) = (Vec::new(), Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    scan_file(&path, name, &mut invs, &mut errors);
    let mut pending = Vec::new();
    for inv in &invs {
        check(inv, &roots, &mut pending, &mut errors);
    }
    (invs, errors)
}

#[test]
fn deploy_manifests_use_existing_flags() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let deploy = repo.join("deploy");
    let roots: BTreeMap<&str, clap::Command> =
        BINARIES.iter().map(|b| (*b, clap_command(b))).collect();
    let (mut invs, mut errors, mut files) = (Vec::new(), Vec::new(), 0);
    scan_dir(&deploy, repo, &mut invs, &mut errors, &mut files);

    let mut pending_used = Vec::new();
    let mut checked_per_bin: BTreeMap<&str, (usize, usize)> =
        BINARIES.iter().map(|b| (*b, (0, 0))).collect();
    for inv in &invs {
        let n = check(inv, &roots, &mut pending_used, &mut errors);
        let e = checked_per_bin
            .get_mut(inv.bin.as_str())
            .expect("known binary");
        e.0 += 1;
        e.1 += n;
    }
    eprintln!(
        "scanned {files} files under deploy/: {} invocations",
        invs.len()
    );
    for (bin, (n, flags)) in &checked_per_bin {
        eprintln!("  {bin}: {n} invocations, {flags} flags/subcommands checked");
    }
    pending_used.sort();
    pending_used.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    for (bin, item, at) in &pending_used {
        eprintln!("  pending (PENDING_FLAGS): {bin} {item} (first at {at})");
    }
    // Entries that exist by now can leave PENDING_FLAGS.
    for (bin, item) in PENDING_FLAGS {
        let cmd = &roots[bin];
        let landed = match item.strip_prefix("--") {
            Some(long) => find_arg(&[cmd], long).is_some(),
            None => cmd.find_subcommand(item).is_some(),
        };
        if landed {
            eprintln!("  note: `{bin} {item}` exists now: remove it from PENDING_FLAGS");
        }
    }

    assert!(
        errors.is_empty(),
        "deploy/ uses flags or subcommands that do not exist:\n  {}",
        errors.join("\n  ")
    );
    assert!(
        !invs.is_empty(),
        "found no conftag invocations under {}: the scan is broken",
        deploy.display()
    );
    for (bin, (n, flags)) in &checked_per_bin {
        assert!(
            *n > 0 && *flags > 0,
            "no checked invocation of {bin} under deploy/ ({n} invocations, {flags} flags): the scan is broken"
        );
    }
}

#[test]
fn a_wrong_flag_fails_with_file_and_flag() {
    let (_, errors) = check_text(
        "infer.yaml",
        "spec:\n  containers:\n    - name: infer\n      image: conftag-infer\n      command: [\"conftag-infer\"]\n      args:\n        - --model\n        - m\n        - --no-such-flag\n        - \"1\"\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("infer.yaml:") && errors[0].contains("--no-such-flag"),
        "{errors:?}"
    );

    let (_, errors) = check_text(
        "run.sh",
        "#!/bin/sh\n# conftag-judge --not-checked-in-comments\nconftag submit --model m \\\n  --dataset boolq --limt 3 && conftag-judge --drain-secs 5\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("run.sh:4:") && errors[0].contains("--limt"),
        "{errors:?}"
    );

    let (_, errors) = check_text(
        "x.service",
        "[Service]\nExecStart=/usr/local/bin/conftag statsu --json\n",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("statsu"),
        "{errors:?}"
    );

    // Flags in args with no binary in sight cannot be checked: that is an error too.
    let (_, errors) = check_text(
        "c.yaml",
        "      image: ghcr.io/conftag/conftag\n      args: [\"--model\", \"m\"]\n",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("c.yaml:2"),
        "{errors:?}"
    );
}

#[test]
fn values_quotes_and_wrappers_are_understood() {
    let (invs, errors) = check_text(
        "job.sbatch",
        concat!(
            "#SBATCH --job-name=conftag-infer\n",
            "srun --gpus-per-task=1 bash -c 'exec conftag-infer --model \"$M\" --worker-id \"$A-$B\" --exit-when-done'\n",
            "x=\"$(conftag status --json)\" # conftag --nope\n",
            "\"$G/conftag\" submit --model status --dataset boolq 2>/dev/null | head\n",
            "cat <<'EOF'\nconftag --in-heredoc\nEOF\n",
            "CUDA_VISIBLE_DEVICES=0 conftag-infer --model m self-check --prompts 4\n",
            "systemctl enable --now conftag-judge conftag-monitor; journalctl -u conftag-judge -f\n",
        ),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let bins: Vec<&str> = invs.iter().map(|i| i.bin.as_str()).collect();
    assert_eq!(
        bins,
        ["conftag-infer", "conftag", "conftag", "conftag-infer"],
        "{invs:#?}"
    );

    let (invs, errors) = check_text(
        "compose.yaml",
        "services:\n  judge:\n    image: conftag:cpu\n    entrypoint: [\"conftag-judge\"]\n    command:\n      - --num-workers\n      - \"8\"\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n  x:\n    command: conftag --log-format json workers --json\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(invs.len(), 2, "{invs:#?}");
    let args: Vec<&str> = invs[0].args.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(args, ["--num-workers", "8"]);
}
