//! The modules of `grader/src` import each other without cycles, so data flows one way
//! (docs/ARCHITECTURE.md draws the layers).
//!
//! The rule is checked among siblings: the top-level modules (`manifest`, `runtime`, `engine`,
//! ...) form a graph with no cycle, and so do the children of every module (`probes::paginate`,
//! `probes::request`, ...). A reference from a module into its own ancestor or descendant is not
//! an edge: a parent is the facade of its children. Every `use` and every `crate::`/`super::`
//! path in code counts, test modules included, so a test cannot smuggle a cycle in either.
//!
//! Hand-written rather than a tool such as cargo-modules: that one builds rust-analyzer (minutes
//! on CI's two cores) to answer what a reading of `use` paths answers here in milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `.rs` file under `src`, as its module path (`probes/paginate/run.rs` ->
/// `["probes", "paginate", "run"]`), with its source.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts, std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The source with comments, string and char literals blanked, so paths inside them don't count.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !is_ident(chars.get(i.wrapping_sub(1)))
        {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push(' ');
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The paths a file names: every `use` tree expanded, and every `crate::`/`super::`/`self::`
/// path in code.
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        rest = &rest[at + 4..];
        if before
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
        expand_use(&[], &tree, &mut out);
        rest = &rest[end..];
    }
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            if is_ident(text[..at].chars().last().as_ref()) {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    out
}

fn expand_use(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.split(" as ").next().unwrap_or(tree);
    match tree.find('{') {
        None => {
            let mut path = prefix.to_vec();
            path.extend(
                tree.split("::")
                    .filter(|s| !s.is_empty())
                    .map(|s| s.split("as").next().unwrap_or(s).to_string()),
            );
            out.push(path);
        }
        Some(open) => {
            let mut path = prefix.to_vec();
            path.extend(
                tree[..open]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut part = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand_use(&path, &part, out);
                        part.clear();
                        continue;
                    }
                    _ => {}
                }
                part.push(c);
            }
            if !part.is_empty() {
                expand_use(&path, &part, out);
            }
        }
    }
}

/// The module a path leads into (the longest prefix that is a module), from module `here`.
fn resolve(here: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let (mut base, mut rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (here.clone(), &path[1..]),
        Some("super") => (here.clone(), path),
        _ => return None,
    };
    while rest.first().map(String::as_str) == Some("super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    (0..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|m| known.contains(m))
}

/// Edges between siblings: `a::x` naming `a::y::z` is the edge `a::x -> a::y`.
fn sibling_edges(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let files = modules(src);
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (here, source) in &files {
        for path in referenced_paths(&code_only(source)) {
            let Some(target) = resolve(here, &path, &known) else {
                continue;
            };
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // ancestor or descendant
            }
            edges
                .entry(here[..=common].to_vec())
                .or_default()
                .insert(target[..=common].to_vec());
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<Module> = s.edges.get(v).into_iter().flatten().cloned().collect();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn grader_modules_import_each_other_without_cycles() {
    let edges = sibling_edges(&src());
    let found = cycles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let arrows: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    edges[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", from.join("::"), to.join("::")))
                })
                .collect();
            arrows.join(", ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "import cycles between grader modules:\n  {}",
        described.join("\n  ")
    );
}

#[test]
fn the_checker_sees_the_layers_it_guards() {
    let edges = sibling_edges(&src());
    let has = |from: &str, to: &str| {
        edges
            .get(&vec![from.to_string()])
            .is_some_and(|t| t.contains(&vec![to.to_string()]))
    };
    // Edges that must exist, so a checker that parsed nothing cannot pass the test above.
    assert!(has("run", "runtime"));
    assert!(has("exercise", "probes"));
    assert!(has("probes", "engine"));
    assert!(has("runtime", "manifest"));
    // Edges the architecture forbids.
    assert!(
        !has("manifest", "runtime"),
        "manifest must produce plain data"
    );
    assert!(
        !has("dataset", "runtime"),
        "dataset must not know runtime types"
    );
    assert!(
        !has("spec", "exercise"),
        "seeded data must not import exercise"
    );
    // And the checker does find a cycle when there is one.
    let mut with_cycle = edges.clone();
    with_cycle
        .entry(vec!["runtime".into()])
        .or_default()
        .insert(vec!["run".into()]);
    assert!(!cycles(&with_cycle).is_empty());
}

#[test]
fn use_trees_and_literals_are_read_as_code_reads_them() {
    let code = code_only(
        "use crate::{a::b, c::{d, e as f}};\n// crate::commented\nlet s = \"crate::quoted\";\nlet c = '\"'; crate::x::y();",
    );
    let paths = referenced_paths(&code);
    let joined: BTreeSet<String> = paths.iter().map(|p| p.join("::")).collect();
    assert!(joined.contains("crate::a::b"), "{joined:?}");
    assert!(joined.contains("crate::c::d"), "{joined:?}");
    assert!(joined.contains("crate::c::e"), "{joined:?}");
    assert!(joined.contains("crate::x::y"), "{joined:?}");
    assert!(!joined
        .iter()
        .any(|p| p.contains("commented") || p.contains("quoted")));
}
