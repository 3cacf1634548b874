//! Every `conftag`, `conftag-infer` and `conftag-judge` command line under `deploy/` (compose,
//! Kubernetes, Slurm, systemd, Dockerfiles, scripts, the code in its Markdown) uses
//! subcommands and flags that the binaries' clap definitions have.
//!
//! Extraction, on real parsers:
//! - YAML (`yaml-rust2`, with line marks): the `entrypoint`, `command` and `args` of one
//!   mapping form one command line (a Kubernetes container's `command` + `args`, a compose
//!   service's `entrypoint` + `command`); a string value or a block-scalar item (`- |`) is read
//!   as shell. A file that is not valid YAML is an error.
//! - everything else (shell, `.sbatch`, Dockerfiles, systemd units, env files): shell words
//!   (`shell-words`: quotes, `\` continuations, comments), one command per logical line, cut at
//!   `;`, `&&`, `||`, `|` and `&`; `$(…)` bodies and `sh -c '…'` scripts are read as commands of
//!   their own; redirections and here-document bodies are skipped.
//! - Markdown: fenced code blocks and inline code spans only (not prose).
//! - Python files are skipped (they do not start the binaries).
//!
//! A binary is recognised by its file name (`conftag`, `/usr/local/bin/conftag-infer`,
//! `ExecStart=/…/conftag-judge`, `"$conftag"`); its command line runs to the end of the shell
//! command. Flags that take a value skip it, so values are never read as subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

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
// Shell: logical lines split by `shell-words`

/// Placeholder for command substitution `n` taken out of a line (its body is read on its
/// own, unless the placeholder ends up in a comment).
fn substituted(n: usize) -> String {
    format!("$__substituted{n}__")
}

/// The shell commands of `src` (its first line is `first_line`), as words and ends.
fn shell_tokens(src: &str, first_line: usize) -> Vec<Tok> {
    let lines: Vec<&str> = src.split('\n').collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        // A logical line runs on while a line ends in `\` or a quote is open.
        let mut chunk = lines[i].to_owned();
        i += 1;
        let mut parsed = None;
        loop {
            if !continues(&chunk) {
                let (text, bodies) = take_substitutions(&chunk);
                if let Ok(words) = shell_words::split(&text) {
                    parsed = Some((text, bodies, words));
                    break;
                }
            }
            if i >= lines.len() {
                break;
            }
            chunk.push('\n');
            chunk.push_str(lines[i]);
            i += 1;
        }
        let (text, bodies, words) = parsed.unwrap_or_else(|| {
            // A quote open to the end (an apostrophe in prose, say): this line alone, with the
            // quote closed.
            i = start + 1;
            let (text, bodies) = take_substitutions(lines[start]);
            let words = shell_words::split(&format!("{text}'"))
                .or_else(|_| shell_words::split(&format!("{text}\"")))
                .unwrap_or_default();
            (text, bodies, words)
        });
        let line = first_line + start;
        for (n, (offset, body)) in bodies.into_iter().enumerate() {
            let placeholder = substituted(n);
            if !words.iter().any(|w| w.contains(&placeholder)) {
                continue; // in a comment
            }
            toks.push(Tok::End);
            toks.extend(shell_tokens(&body, line + offset));
            toks.push(Tok::End);
        }
        let at = word_lines(&text, line, &words);
        let mut w = 0;
        while w < words.len() {
            let (end_before, word, end_after) = operators(&words[w]);
            let line = at[w];
            w += 1;
            if end_before {
                toks.push(Tok::End);
            }
            match redirection(word) {
                Some(Redirection::HereDoc {
                    delimiter,
                    strip_tabs,
                }) => {
                    let delimiter = match delimiter {
                        Some(d) => d,
                        None => target(&words, &mut w, &mut toks),
                    };
                    i = skip_here_document(&lines, i, &delimiter, strip_tabs);
                }
                Some(Redirection::Bare) => {
                    target(&words, &mut w, &mut toks);
                }
                Some(Redirection::WithTarget) => {}
                None if word.is_empty() => {}
                None => toks.push(Tok::Word {
                    text: word.to_owned(),
                    line,
                    scripts: Vec::new(),
                }),
            }
            if end_after {
                toks.push(Tok::End);
            }
        }
        toks.push(Tok::End);
    }
    toks
}

/// The word after a bare redirection operator (`> FILE`, `<< EOF`), taken; a control
/// operator glued to it still ends the command.
fn target(words: &[String], w: &mut usize, toks: &mut Vec<Tok>) -> String {
    let Some(word) = words.get(*w) else {
        return String::new();
    };
    *w += 1;
    let (_, target, end_after) = operators(word);
    if end_after {
        toks.push(Tok::End);
    }
    target.to_owned()
}

/// Whether a line ends in an unescaped `\` (the command goes on on the next line).
fn continues(chunk: &str) -> bool {
    let trailing = chunk.len() - chunk.trim_end_matches('\\').len();
    trailing % 2 == 1
}

/// `text` with every `$(…)` and `` `…` `` replaced by a [`substituted`] placeholder, and the bodies taken
/// out, each with the number of lines before it.
fn take_substitutions(text: &str) -> (String, Vec<(usize, String)>) {
    let mut out = String::new();
    let mut bodies = Vec::new();
    let mut rest = text;
    loop {
        let dollar = rest.find("$(");
        let tick = rest.find('`');
        let (p, body_start, close): (usize, usize, Option<usize>) = match (dollar, tick) {
            (Some(d), t) if t.is_none_or(|t| d < t) => {
                let body = &rest[d + 2..];
                let mut depth = 1;
                let end = body.char_indices().find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                });
                (d, d + 2, end.map(|e| d + 2 + e))
            }
            (_, Some(t)) => (t, t + 1, rest[t + 1..].find('`').map(|e| t + 1 + e)),
            _ => break,
        };
        let Some(close) = close else { break };
        out.push_str(&rest[..p]);
        out.push_str(&substituted(bodies.len()));
        let lines_before = text[..text.len() - rest.len() + p].matches('\n').count();
        bodies.push((lines_before, rest[body_start..close].to_owned()));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    (out, bodies)
}

/// The line each word starts on: where it (or, quoted, its text) next appears in `text`.
fn word_lines(text: &str, first_line: usize, words: &[String]) -> Vec<usize> {
    let mut cursor = 0;
    words
        .iter()
        .map(|w| {
            let found = text[cursor..].find(w.as_str()).filter(|_| !w.is_empty());
            if let Some(p) = found {
                cursor += p;
            }
            let line = first_line + text[..cursor].matches('\n').count();
            if found.is_some() {
                cursor += w.len();
            }
            line
        })
        .collect()
}

enum Redirection {
    /// `>`, `2>`, `<`: the next word is the target.
    Bare,
    /// `2>/dev/null`, `>&2`, `2>&1`.
    WithTarget,
    /// `<<EOF`, `<<-EOF`, `<< 'EOF'` (`None`: the next word).
    HereDoc {
        delimiter: Option<String>,
        strip_tabs: bool,
    },
}

/// A word that is a redirection (shell-words leaves operators in the words).
fn redirection(word: &str) -> Option<Redirection> {
    let op_start = word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '&');
    if !op_start.starts_with(['<', '>']) {
        return None;
    }
    if let Some(rest) = op_start.strip_prefix("<<") {
        if !rest.starts_with('<') {
            let (strip_tabs, delim) = match rest.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, rest),
            };
            return Some(Redirection::HereDoc {
                delimiter: (!delim.is_empty()).then(|| delim.to_owned()),
                strip_tabs,
            });
        }
    }
    let target = op_start.trim_start_matches(['<', '>', '&', '|']);
    Some(if target.is_empty() {
        Redirection::Bare
    } else {
        Redirection::WithTarget
    })
}

/// The line after the here-document that starts at line `i` and ends at `delimiter`.
fn skip_here_document(lines: &[&str], mut i: usize, delimiter: &str, strip_tabs: bool) -> usize {
    while i < lines.len() {
        let body = if strip_tabs {
            lines[i].trim_start_matches('\t')
        } else {
            lines[i]
        };
        i += 1;
        if body.trim_end() == delimiter {
            break;
        }
    }
    i
}

/// A word cut at the control operators shell-words leaves in it (`a;`, `&&`, `(cd`, `x)`):
/// whether a command ends before it, what is left of it, and whether one ends after it.
fn operators(word: &str) -> (bool, &str, bool) {
    if matches!(
        word,
        ";" | "&&" | "||" | "|" | "&" | "(" | ")" | "{" | "}" | ";;" | "!"
    ) {
        return (true, "", false);
    }
    let (end_before, mut w) = match word.strip_prefix('(') {
        Some(inner) => (true, inner),
        None => (false, word),
    };
    let mut end_after = false;
    for op in [";;", ";", "&&", "||", "|", "&"] {
        if let Some(inner) = w.strip_suffix(op) {
            w = inner;
            end_after = true;
            break;
        }
    }
    if !w.contains('(') {
        if let Some(inner) = w.strip_suffix(')') {
            w = inner;
            end_after = true;
        }
    }
    (end_before, w, end_after)
}

// ---------------------------------------------------------------------------------------------
// YAML: `yaml-rust2` events into a tree with line numbers

#[derive(Debug)]
enum Node {
    Scalar {
        text: String,
        line: usize,
        /// A block scalar (`|`, `>`): a script.
        block: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// Aliases (`*x`) are not followed.
    Alias,
}

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Frame {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// Builds the documents of a YAML stream from the parser's events.
#[derive(Debug, Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
}

impl TreeBuilder {
    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items)) => items.push(node),
            Some(Frame::Map(entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, ..) => self.add(Node::Scalar {
                text,
                line: mark.line(),
                block: matches!(style, TScalarStyle::Literal | TScalarStyle::Folded),
            }),
            Event::Alias(_) => self.add(Node::Alias),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(items)) => Node::Seq(items),
                    Some(Frame::Map(entries, _)) => Node::Map(entries),
                    None => return,
                };
                self.add(node);
            }
            _ => {}
        }
    }
}

/// The shell tokens of one `entrypoint`/`command`/`args` value; `line` maps a line of the YAML
/// text to a line of the file.
fn value_tokens(value: &Node, line: &impl Fn(usize) -> usize) -> Vec<Tok> {
    // `$(VAR)` in a Kubernetes argument is read as a command, like any substitution.
    let word = |text: &str, at: usize| Tok::Word {
        scripts: take_substitutions(text)
            .1
            .into_iter()
            .map(|(_, body)| body)
            .collect(),
        text: text.to_owned(),
        line: at,
    };
    match value {
        // A string, or a block scalar (whose mark is its first line of text): shell.
        Node::Scalar { text, line: l, .. } => shell_tokens(text, line(*l)),
        Node::Seq(items) => items
            .iter()
            .filter_map(|item| match item {
                // A script item (`- |`): read it as shell.
                Node::Scalar {
                    text,
                    line: l,
                    block: true,
                } => Some(Tok::Word {
                    text: text.clone(),
                    line: line(*l),
                    scripts: vec![text.clone()],
                }),
                Node::Scalar { text, line: l, .. } => Some(word(text, line(*l))),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One command line per mapping (entrypoint, then command, then args), in every mapping of
/// the tree.
fn scan_yaml_node(
    node: &Node,
    file: &str,
    line: &impl Fn(usize) -> usize,
    out: &mut Vec<Invocation>,
    errors: &mut Vec<String>,
) {
    match node {
        Node::Seq(items) => {
            for item in items {
                scan_yaml_node(item, file, line, out, errors);
            }
        }
        Node::Map(entries) => {
            let get = |name: &str| {
                entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .map(|(k, v)| (k, v))
            };
            let image = get("image")
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default();
            let parts: Vec<(&str, &Node, &Node)> = ["entrypoint", "command", "args"]
                .into_iter()
                .filter_map(|name| get(name).map(|(k, v)| (name, k, v)))
                .collect();
            if let Some((_, first_key, _)) = parts.first() {
                let toks: Vec<Tok> = parts
                    .iter()
                    .flat_map(|(_, _, v)| value_tokens(v, line))
                    .collect();
                let before = out.len();
                find_invocations(&toks, file, out);
                let found_here = out.len() > before;
                let has_flags = toks
                    .iter()
                    .any(|t| matches!(t, Tok::Word { text, .. } if text.starts_with("--")));
                if !found_here
                    && has_flags
                    && (image.contains("conftag")
                        || (image.is_empty() && parts.iter().all(|(n, ..)| *n == "args")))
                {
                    let at = match first_key {
                        Node::Scalar { line: l, .. } => line(*l),
                        _ => 0,
                    };
                    errors.push(format!(
                        "{file}:{at}: flags without the binary that takes them (image `{image}`): name it in `command:`/`entrypoint:` so they can be checked"
                    ));
                }
            }
            for (_, v) in entries {
                scan_yaml_node(v, file, line, out, errors);
            }
        }
        Node::Scalar { .. } | Node::Alias => {}
    }
}

fn scan_yaml(
    text: &str,
    file: &str,
    first_line: usize,
    out: &mut Vec<Invocation>,
    errors: &mut Vec<String>,
) {
    let mut tree = TreeBuilder::default();
    if let Err(e) = Parser::new_from_str(text).load(&mut tree, true) {
        errors.push(format!(
            "{file}:{}: not valid YAML: {}",
            first_line + e.marker().line().saturating_sub(1),
            e.info()
        ));
        return;
    }
    let line = |l: usize| first_line + l.saturating_sub(1);
    for doc in &tree.docs {
        scan_yaml_node(doc, file, &line, out, errors);
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

    // In a command substitution, unquoted, after a here-document that is not read.
    let (_, errors) = check_text(
        "x.sh",
        "cat <<EOF\nconftag --in-heredoc\nEOF\nn=$(conftag status --jsn | wc -l)\n",
    );
    assert!(
        errors.len() == 1 && errors[0].starts_with("x.sh:4:") && errors[0].contains("--jsn"),
        "{errors:?}"
    );

    // A block-scalar script in YAML, with its line.
    let (_, errors) = check_text(
        "job.yaml",
        "spec:\n  command:\n    - /bin/sh\n    - |\n      set -e\n      conftag-judge \\\n        --bogus 1\n",
    );
    assert!(
        errors.len() == 1 && errors[0].starts_with("job.yaml:7:") && errors[0].contains("--bogus"),
        "{errors:?}"
    );

    // A manifest the YAML parser refuses is an error, not a file silently skipped.
    let (_, errors) = check_text("bad.yaml", "a: [1, 2\nb: c\n");
    assert!(
        errors.len() == 1
            && errors[0].contains("bad.yaml:")
            && errors[0].contains("not valid YAML"),
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
