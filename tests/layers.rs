//! The layer rules of `src/` (docs/ARCHITECTURE.md): every folder is a layer, and
//! the `crate::` paths of its files may only point the allowed ways. This test
//! reads every source file and fails naming the file and line that breaks a rule:
//!
//! * no import cycle between folders;
//! * `core` imports nothing else of the crate;
//! * `model` imports only `core`;
//! * `analysis` and `report` import no `io`, `protocol`, `probe` or `app`;
//! * `io` and `protocol` never see `report`, `analysis` or `app`;
//! * only `app` is imported by nobody, and only `app` names clap.
//!
//! Its own tests below show each rule catching a violating line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 8] = [
    "core", "model", "io", "protocol", "analysis", "probe", "report", "app",
];

/// One `crate::` reference: which file and line, from which layer to which.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The layer of a source path like `src/probe/check.rs` (None for `lib.rs`, `main.rs`).
fn layer_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("src/")?;
    let (first, _) = rest.split_once('/')?;
    Some(first.to_string())
}

/// The module path of a file inside the crate: `src/probe/check.rs` -> [probe, check].
fn module_path(path: &str) -> Vec<String> {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let rest = rest.strip_suffix(".rs").unwrap_or(rest);
    let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Code without comments: whole-line and trailing `//` comments are dropped (a
/// doc link to another layer is not an import). String contents are kept; paths
/// in strings are rare enough to be fixed by hand should one appear.
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The identifiers at the top level of a `use crate::{...}` group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut at_start = true;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                at_start = true;
                current.clear();
            }
            c if depth == 0 && at_start => {
                if c.is_alphanumeric() || c == '_' {
                    current.push(c);
                } else if !current.is_empty() {
                    heads.push(std::mem::take(&mut current));
                    at_start = false;
                }
            }
            _ => {}
        }
    }
    if at_start && !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// Every layer a file refers to, with the line: `crate::x`, `$crate::x`,
/// `use crate::{x::.., y::..}` (also across lines) and `super::` paths that climb
/// to the crate root.
fn references(path: &str, source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let module = module_path(path);
    let mut open_group: Option<(usize, String)> = None;
    for (i, raw) in source.lines().enumerate() {
        let number = i + 1;
        let line = code_of(raw);
        if let Some((start, mut text)) = open_group.take() {
            text.push_str(line);
            // The group's own `{` is not in `text`.
            if text.matches('{').count() + 1 > text.matches('}').count() {
                open_group = Some((start, text));
            } else {
                out.extend(group_heads(&text).into_iter().map(|h| (start, h)));
            }
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let text = group.to_string();
                if text.matches('{').count() + 1 > text.matches('}').count() {
                    open_group = Some((number, text));
                } else {
                    out.extend(group_heads(&text).into_iter().map(|h| (number, h)));
                }
                break;
            }
            let head: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                out.push((number, head));
            }
            rest = after;
        }
        // `super::` from a folder's own mod.rs (or deeper chains) may reach the root.
        let mut rest = line;
        while let Some(at) = rest.find("super::") {
            let before = &rest[..at];
            if before.ends_with("::") {
                rest = &rest[at + 7..];
                continue;
            }
            let mut depth = module.len();
            let mut tail = &rest[at..];
            while let Some(t) = tail.strip_prefix("super::") {
                depth = depth.saturating_sub(1);
                tail = t;
            }
            if depth == 0 {
                let head: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() {
                    out.push((number, head));
                }
            }
            rest = tail;
        }
    }
    out
}

/// Whether a line names clap (`use clap`, `clap::`, `clap_complete`, `clap_mangen`).
fn names_clap(line: &str) -> bool {
    let code = code_of(line);
    code.match_indices("clap").any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + 4..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && matches!(after, Some(':') | Some('_') | Some(';') | Some(' ') | None)
    })
}

/// The edges between layers in `files` (path, source).
fn edges(files: &[(String, String)]) -> Vec<Edge> {
    let mut out = Vec::new();
    for (path, source) in files {
        let Some(from) = layer_of(path) else { continue };
        for (line, to) in references(path, source) {
            if to != from && LAYERS.contains(&to.as_str()) {
                out.push(Edge {
                    file: path.clone(),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    out
}

/// Why an edge breaks a rule, if it does.
fn rule_broken(from: &str, to: &str) -> Option<&'static str> {
    match (from, to) {
        ("core", _) => Some("core imports nothing else of the crate"),
        ("model", to) if to != "core" => Some("model imports only core"),
        ("analysis" | "report", "io" | "protocol" | "probe" | "app") => {
            Some("analysis and report import no io, protocol, probe or app")
        }
        ("io" | "protocol", "report" | "analysis" | "app") => {
            Some("io and protocol never see report, analysis or app")
        }
        (_, "app") => Some("nothing imports app"),
        _ => None,
    }
}

/// A cycle between folders, as the list of layers around it, if there is one.
fn find_cycle(edges: &[Edge]) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, &graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Every violation in `files`, one line each, naming file and line.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let all = edges(files);
    for e in &all {
        if let Some(rule) = rule_broken(&e.from, &e.to) {
            out.push(format!(
                "{}:{}: {} -> {}: {rule}",
                e.file, e.line, e.from, e.to
            ));
        }
    }
    for (path, source) in files {
        if layer_of(path).is_some_and(|l| l != "app") {
            for (i, line) in source.lines().enumerate() {
                if names_clap(line) {
                    out.push(format!("{path}:{}: only app touches clap", i + 1));
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&all) {
        // Name one line of every edge on the cycle.
        let lines: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| {
                all.iter()
                    .find(|e| e.from == w[0] && e.to == w[1])
                    .map(|e| format!("{}:{} ({} -> {})", e.file, e.line, e.from, e.to))
            })
            .collect();
        out.push(format!(
            "import cycle between folders {}: {}",
            cycle.join(" -> "),
            lines.join(", ")
        ));
    }
    out
}

fn source_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), root, &mut out);
    out
}

#[test]
fn the_source_tree_keeps_its_layers() {
    let files = source_files();
    let layers: BTreeSet<String> = files.iter().filter_map(|(p, _)| layer_of(p)).collect();
    for l in LAYERS {
        assert!(layers.contains(l), "src/{l}/ is missing");
    }
    for l in &layers {
        assert!(
            LAYERS.contains(&l.as_str()),
            "src/{l}/ is not a layer; add it to LAYERS and docs/ARCHITECTURE.md"
        );
    }
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "layer rules broken:\n{}",
        found.join("\n")
    );
}

// ------------------------------------------------------------- the checker's own tests

fn one(path: &str, source: &str) -> Vec<(String, String)> {
    vec![(path.to_string(), source.to_string())]
}

#[test]
fn core_importing_the_crate_is_named_with_file_and_line() {
    let v = violations(&one(
        "src/core/error.rs",
        "use std::fmt;\n// crate::io::net in a comment is fine\nuse crate::io::net::BoxStream;\n",
    ));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("src/core/error.rs:3: core -> io"), "{v:?}");
    assert!(
        violations(&one(
            "src/core/error.rs",
            "use crate::core::phase::Phase;\n"
        ))
        .is_empty()
    );
}

#[test]
fn analysis_and_report_may_not_reach_down_to_the_wire() {
    let v = violations(&one(
        "src/analysis/diagnosis.rs",
        "use crate::model::report::Report;\nfn f() { crate::probe::check::run(); }\n",
    ));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("src/analysis/diagnosis.rs:2: analysis -> probe"),
        "{v:?}"
    );
    let v = violations(&one(
        "src/report/human.rs",
        "use crate::{\n    model::report::Report,\n    io::net,\n};\n",
    ));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("src/report/human.rs:1: report -> io"),
        "{v:?}"
    );
}

#[test]
fn io_and_protocol_never_see_reports_analysis_or_clap() {
    let v = violations(&one(
        "src/io/tls.rs",
        "use crate::model::report::Report;\nuse crate::report::Format;\n",
    ));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("src/io/tls.rs:2: io -> report"), "{v:?}");
    let v = violations(&one(
        "src/protocol/smtp.rs",
        "use clap::ValueEnum;\nuse crate::analysis::diagnosis;\n",
    ));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v.iter()
            .any(|l| l.starts_with("src/protocol/smtp.rs:1: only app touches clap")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|l| l.starts_with("src/protocol/smtp.rs:2: protocol -> analysis")),
        "{v:?}"
    );
    assert!(violations(&one("src/app/cli.rs", "use clap::Parser;\n")).is_empty());
}

#[test]
fn a_cycle_between_folders_is_named() {
    let files = vec![
        (
            "src/io/net.rs".to_string(),
            "use crate::protocol::smtp::x;\n".to_string(),
        ),
        (
            "src/protocol/smtp.rs".to_string(),
            "\nuse crate::io::net::y;\n".to_string(),
        ),
    ];
    let v = violations(&files);
    let cycle = v
        .iter()
        .find(|l| l.starts_with("import cycle"))
        .expect("a cycle");
    assert!(cycle.contains("io -> protocol -> io"), "{cycle}");
    assert!(
        cycle.contains("src/io/net.rs:1") && cycle.contains("src/protocol/smtp.rs:2"),
        "{cycle}"
    );
}

#[test]
fn super_from_a_folders_mod_rs_reaches_the_root() {
    let v = violations(&one(
        "src/model/mod.rs",
        "use super::probe::settings::Settings;\n",
    ));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("src/model/mod.rs:1: model -> probe"),
        "{v:?}"
    );
    // Inside a folder, `super::` stays in the folder.
    assert!(violations(&one("src/report/html.rs", "use super::human::tls_lines;\n")).is_empty());
}
