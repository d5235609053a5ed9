//! Modules form layers: in no crate does a module use one that uses it back,
//! directly or through others. A module's uses are the paths it names
//! (`use` trees, `crate::…`, `super::…`, `self::…` and its own child
//! modules), each resolved to the module that defines the item, following
//! `pub use` re-exports, so a parent that re-exports its children is not a
//! cycle but a child that calls back into its parent's own code is. Test
//! modules and comments are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;
use regex::Regex;

use crate::common::root;

/// Module path (`nn::conv`, `` for the crate root) -> its source, test
/// modules and comments removed.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let comments = Regex::new(r"//[^\n]*").unwrap();
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src).into_iter().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let mut segs: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            segs.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            segs.pop();
        }
        let mut text = fs::read_to_string(path).unwrap();
        if let Some(at) = text.find("#[cfg(test)]\nmod tests") {
            text.truncate(at);
        }
        out.insert(
            segs.join("::"),
            comments.replace_all(&text, "").into_owned(),
        );
    }
    out
}

/// `a::{b, c::{d as e, f}}` -> `a::b`, `a::c::d`, `a::c::f`, each with the
/// name it is known by here (`b`, `e`, `f`).
fn expand(tree: &str) -> Vec<(String, String)> {
    // Spaces go, but a rename's ` as ` stays recognisable (`Dataset` holds "as").
    let tree = tree
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" as ", "@")
        .replace(' ', "");
    expand_tree(&tree)
}

fn expand_tree(tree: &str) -> Vec<(String, String)> {
    let Some(open) = tree.find('{') else {
        let (path, alias) = tree.split_once('@').unwrap_or((tree, ""));
        let name = if alias.is_empty() {
            path.rsplit("::").next().unwrap_or("")
        } else {
            alias
        };
        return vec![(path.to_string(), name.to_string())];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let body = &tree[open + 1..close];
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for ch in body.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    parts.push(current);
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_tree(p))
        .map(|(path, name)| (format!("{prefix}{path}"), name))
        .collect()
}

struct Crate {
    modules: BTreeMap<String, String>,
    /// Module -> name it re-exports -> the absolute path it names.
    reexports: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let modules = modules(src);
        let mut krate = Crate {
            modules,
            reexports: BTreeMap::new(),
        };
        let pub_use = Regex::new(r"(?m)^\s*pub(?:\([a-z]+\))?\s+use\s+([^;]+);").unwrap();
        let mut reexports = BTreeMap::new();
        for (m, text) in &krate.modules {
            for cap in pub_use.captures_iter(text) {
                for (path, name) in expand(&cap[1]) {
                    if let Some(abs) = krate.absolute(m, &path) {
                        reexports
                            .entry(m.clone())
                            .or_insert_with(BTreeMap::new)
                            .insert(name, abs);
                    }
                }
            }
        }
        krate.reexports = reexports;
        krate
    }

    fn children(&self, m: &str) -> Vec<String> {
        let depth = if m.is_empty() {
            0
        } else {
            m.matches("::").count() + 1
        };
        self.modules
            .keys()
            .filter(|k| {
                !k.is_empty()
                    && (m.is_empty() || k.starts_with(&format!("{m}::")))
                    && k.matches("::").count() == depth
            })
            .cloned()
            .collect()
    }

    /// A path as written in module `m`, as segments from the crate root;
    /// `None` for another crate's path.
    fn absolute(&self, m: &str, path: &str) -> Option<Vec<String>> {
        let segs: Vec<&str> = path.split("::").collect();
        let base: Vec<String> = if m.is_empty() {
            Vec::new()
        } else {
            m.split("::").map(String::from).collect()
        };
        let rest = |from: usize| segs[from..].iter().map(|s| s.to_string());
        match segs[0] {
            "crate" => Some(rest(1).collect()),
            "self" => Some(base.into_iter().chain(rest(1)).collect()),
            "super" => {
                let ups = segs.iter().take_while(|s| **s == "super").count();
                let keep = base.len().saturating_sub(ups);
                Some(base[..keep].iter().cloned().chain(rest(ups)).collect())
            }
            first => {
                let is_child = self
                    .children(m)
                    .iter()
                    .any(|c| c.rsplit("::").next() == Some(first));
                is_child.then(|| base.into_iter().chain(rest(0)).collect())
            }
        }
    }

    /// The module that defines what `segs` names.
    fn resolve(&self, segs: &[String], depth: usize) -> String {
        let mut best = String::new();
        let mut candidate: Vec<&str> = Vec::new();
        for s in segs {
            candidate.push(s);
            let joined = candidate.join("::");
            if self.modules.contains_key(&joined) {
                best = joined;
                continue;
            }
            if let Some(target) = self.reexports.get(&best).and_then(|r| r.get(s)) {
                if depth < 16 {
                    return self.resolve(target, depth + 1);
                }
            }
            break;
        }
        best
    }

    /// Module -> the modules it uses.
    fn uses(&self) -> BTreeMap<String, BTreeSet<String>> {
        let use_tree = Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);").unwrap();
        let path =
            Regex::new(r"(?:^|[^\w:])((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
        let mut edges = BTreeMap::new();
        for (m, text) in &self.modules {
            let mut paths: Vec<String> = use_tree
                .captures_iter(text)
                .flat_map(|c| expand(&c[1]))
                .map(|(path, _)| path)
                .collect();
            paths.extend(path.captures_iter(text).map(|c| c[1].to_string()));
            for child in self.children(m) {
                let name = child.rsplit("::").next().unwrap_or("").to_string();
                let child_path = Regex::new(&format!(
                    r"(?:^|[^\w:])({name}(?:::[A-Za-z_][A-Za-z0-9_]*)+)"
                ))
                .unwrap();
                paths.extend(child_path.captures_iter(text).map(|c| c[1].to_string()));
            }
            let used: BTreeSet<String> = paths
                .iter()
                .filter_map(|p| self.absolute(m, p))
                .map(|abs| self.resolve(&abs, 0))
                .filter(|target| target != m)
                .collect();
            edges.insert(m.clone(), used);
        }
        edges
    }
}

/// Every cycle among the modules of the crate whose sources are in `src`,
/// each as the modules in it and what each uses of the others.
fn cycles(src: &Path) -> Vec<String> {
    let uses = Crate::load(src).uses();
    let mut graph = DiGraph::<String, ()>::new();
    let index: BTreeMap<&String, _> = uses
        .keys()
        .map(|m| (m, graph.add_node(m.clone())))
        .collect();
    for (m, targets) in &uses {
        for t in targets {
            if let Some(&to) = index.get(t) {
                graph.add_edge(index[m], to, ());
            }
        }
    }
    let name = |m: &str| {
        if m.is_empty() {
            "<crate root>".to_string()
        } else {
            m.to_string()
        }
    };
    tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let members: BTreeSet<&String> = scc.iter().map(|i| &graph[*i]).collect();
            members
                .iter()
                .map(|m| {
                    let inside: Vec<String> = uses[*m]
                        .iter()
                        .filter(|t| members.contains(t))
                        .map(|t| name(t))
                        .collect();
                    format!("{} uses {}", name(m), inside.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect()
}

#[test]
fn no_crate_has_an_import_cycle() {
    for src in ["engine/src", "nodes/src", "src"] {
        let found = cycles(&root().join(src));
        assert!(
            found.is_empty(),
            "{src}: import cycles:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_check_sees_a_cycle_through_a_parent_and_not_a_re_export() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let file = dir.path().join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, text).unwrap();
    };
    // A parent re-exporting its children, children using a sibling: layers.
    write("lib.rs", "mod a;\nmod b;\npub use a::Thing;\n");
    write("a.rs", "use crate::b::helper;\npub struct Thing;\n");
    write("b.rs", "pub fn helper() {}\n");
    assert!(cycles(dir.path()).is_empty());
    // `b` calls back into `a` through the root's re-export: a cycle.
    write("b.rs", "pub fn helper() { let _ = crate::Thing; }\n");
    let found = cycles(dir.path());
    assert_eq!(found, vec!["a uses b; b uses a".to_string()]);
    // Names holding "as" (`base`, `Dataset`) and renames are read whole.
    write("lib.rs", "mod a;\nmod base;\n");
    write(
        "a.rs",
        "use crate::base::Dataset as Rows;\npub struct Thing;\n",
    );
    write(
        "base.rs",
        "pub struct Dataset;\nfn f() { let _ = crate::a::Thing; }\n",
    );
    fs::remove_file(dir.path().join("b.rs")).unwrap();
    assert_eq!(
        cycles(dir.path()),
        vec!["a uses base; base uses a".to_string()]
    );
}
