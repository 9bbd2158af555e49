//! The library's modules form layers that only point down the data flow
//! (`docs/architecture.md`, "Layers"): a module may use modules of its own
//! layer and of the layers below, never one above, and no modules use
//! each other in a circle. Checked on the source: every `crate::…` and
//! `super::…` path outside comments and `#[cfg(test)]` modules is an edge
//! from the module it is written in to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module is its top-level name, or a
/// submodule listed here on its own (identity's pure core sits below the
/// catalog, its store side above).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &["error", "redact", "keyed", "executor", "host"],
    ),
    ("storage", &["schema", "lake"]),
    (
        "rules",
        &[
            "identity::normalize",
            "identity::config",
            "identity::consent",
            "identity::retention",
            "functions",
        ],
    ),
    ("catalog", &["catalog"]),
    (
        "domain",
        &[
            "identity",
            "ingest",
            "collect",
            "maintenance",
            "analytics",
            "export",
            "query",
        ],
    ),
    ("producers", &["generate", "seed"]),
    ("sessions", &["postgres", "engine"]),
    ("engine users", &["privacy", "jobs"]),
    ("front ends", &["pgwire", "console", "cluster"]),
    ("wiring", &["config", "server"]),
];

/// One module's reference to another: where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: &'static str,
    to: &'static str,
    file: String,
}

#[test]
fn modules_only_use_their_own_layer_and_the_layers_below_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (*m, i)))
        .collect();
    let files = rust_files(&src);
    assert!(files.len() > 50, "found only {} source files", files.len());

    // Every top-level module has a place.
    let unplaced: BTreeSet<String> = files
        .iter()
        .filter_map(|(module, _)| module.first().cloned())
        .filter(|top| !layer_of.contains_key(top.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules with no layer in tests/layers.rs: {unplaced:?}"
    );

    let mut edges = BTreeSet::new();
    for (module, path) in &files {
        let from = node_of(module, &layer_of).expect("placed above");
        let text = std::fs::read_to_string(path).expect("read a source file");
        for target in referenced_paths(&code_of(&text), module) {
            if let Some(to) = node_of(&target, &layer_of)
                && to != from
            {
                let file = path.strip_prefix(&src).unwrap_or(path);
                edges.insert(Edge {
                    from,
                    to,
                    file: file.display().to_string(),
                });
            }
        }
    }
    assert!(
        edges.len() > 50,
        "found only {} references between modules",
        edges.len()
    );

    let upward: Vec<String> = edges
        .iter()
        .filter(|e| layer_of[e.to] > layer_of[e.from])
        .map(|e| {
            format!(
                "{} ({}) uses {} ({}) in src/{}",
                e.from, LAYERS[layer_of[e.from]].0, e.to, LAYERS[layer_of[e.to]].0, e.file
            )
        })
        .collect();
    assert!(
        upward.is_empty(),
        "modules using a layer above their own:\n{}",
        upward.join("\n")
    );

    let graph: BTreeMap<&str, BTreeSet<&str>> =
        edges.iter().fold(BTreeMap::new(), |mut graph, e| {
            graph.entry(e.from).or_default().insert(e.to);
            graph
        });
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "modules that use each other in a circle: {cycles:?}\n(edges: {:?})",
        edges
            .iter()
            .filter(|e| cycles
                .iter()
                .any(|c| c.contains(&e.from) && c.contains(&e.to)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_path_reader_sees_through_groups_super_and_comments() {
    let module = vec!["identity".to_string(), "normalize".to_string()];
    let code = code_of(
        "use crate::{lake::Lake, schema::{self, RawTable}};\n\
         // crate::pgwire in a comment\n\
         let x = super::graph::Graph::new(crate::error::Error::Config);\n\
         /// crate::console in a doc\n\
         #[cfg(test)]\nmod tests { use crate::server; }",
    );
    let paths = referenced_paths(&code, &module);
    let joined: BTreeSet<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "error::Error::Config",
            "identity::graph::Graph::new",
            "lake::Lake",
            "schema",
            "schema::RawTable"
        ]
        .map(String::from)
        .into()
    );
}

/// Every `.rs` file under `src` but the crate roots, with its module path.
fn rust_files(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["main"] || module == ["lib"] {
                continue;
            }
            out.push((module, path));
        }
    }
    out.sort();
    out
}

/// The layered module a module path belongs to: the longest listed prefix.
fn node_of(path: &[String], layer_of: &BTreeMap<&'static str, usize>) -> Option<&'static str> {
    (1..=path.len().min(2)).rev().find_map(|n| {
        let name = path[..n].join("::");
        layer_of.get_key_value(name.as_str()).map(|(k, _)| *k)
    })
}

/// `text` without comments and without what follows its first
/// `#[cfg(test)]` (the unit tests close every file that has them).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `code` names through `crate::` or `super::`, as paths
/// from the crate root (a `use crate::{a::b, c}` group gives each member).
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let (root, rest) = if code[start..].starts_with("crate::") {
            (Vec::new(), &code[start + "crate::".len()..])
        } else {
            // Every `super::` of a chain climbs one level.
            let mut rest = &code[start..];
            let mut up = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                up += 1;
            }
            if up > module.len() {
                continue;
            }
            (module[..module.len() - up].to_vec(), rest)
        };
        collect_paths(root, rest, &mut out);
    }
    out
}

/// The paths of `rest` (what follows `prefix::`), into `out`.
fn collect_paths(prefix: Vec<String>, rest: &str, out: &mut Vec<Vec<String>>) {
    if let Some(group) = rest.strip_prefix('{') {
        // Split the group's members at top-level commas.
        let (mut depth, mut member_start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    collect_member(&prefix, &group[member_start..i], out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    collect_member(&prefix, &group[member_start..i], out);
                    member_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let mut path = prefix;
    let mut rest = rest;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => return collect_paths(path, r, out),
            Some(r) => rest = r,
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

fn collect_member(prefix: &[String], member: &str, out: &mut Vec<Vec<String>>) {
    let member = member.trim();
    match member {
        "" => {}
        "self" => out.push(prefix.to_vec()),
        _ => collect_paths(prefix.to_vec(), member, out),
    }
}

/// The groups of two or more modules that reach each other (Tarjan's
/// strongly connected components).
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<BTreeSet<&'a str>> {
    struct Walk<'a, 'g> {
        graph: &'g BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<&'a str>>,
    }
    impl<'a> Walk<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for &w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    component.insert(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}
