//! From YAML tree to a located pipeline declaration, checking the format's
//! shape (keys, types, names) and collecting every problem with its place.
//! Knows nothing of node kinds: that is [`crate::validate`]'s job.

use std::collections::HashMap;

use crate::device::DeviceSpec;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::format::{NODE_KEYS, PIPELINE_KEYS, SERVE_KEYS};
use crate::ids::{NodeId, PipelineName, PortRef};
pub use crate::located::Located;
use crate::located::{type_error, unknown_key};
use crate::yaml::{Data, Doc, Pos};

/// A pipeline as declared, before node kinds are consulted.
#[derive(Clone, Debug, Default)]
pub struct Declaration {
    /// The `pipeline:` name, if valid.
    pub name: Option<Located<PipelineName>>,
    /// The description.
    pub description: Option<String>,
    /// The seed.
    pub seed: u64,
    /// The pipeline-wide device.
    pub device: Option<Located<DeviceSpec>>,
    /// Params by name, with their values.
    pub params: Vec<(Located<String>, Doc)>,
    /// Nodes in file order.
    pub nodes: Vec<NodeDecl>,
    /// The `outputs:` references.
    pub outputs: Vec<Located<PortRef>>,
    /// The `serve:` block.
    pub serve: Option<ServeDecl>,
    /// The `sweep:` block.
    pub sweep: Option<crate::sweep_decl::SweepDecl>,
}

/// The `serve:` block as declared.
#[derive(Clone, Debug)]
pub struct ServeDecl {
    /// Where the block starts.
    pub pos: Pos,
    /// `input:`, the node that takes requests.
    pub input: Option<Located<NodeId>>,
    /// `output:`, the answer.
    pub output: Option<Located<PortRef>>,
    /// `max_batch:`.
    pub max_batch: usize,
    /// `max_wait_ms:`.
    pub max_wait_ms: u64,
    /// `max_rows:`.
    pub max_rows: usize,
    /// `max_queue:`, if given.
    pub max_queue: Option<usize>,
    /// `timeout_ms:`.
    pub timeout_ms: u64,
}

/// One node as declared.
#[derive(Clone, Debug)]
pub struct NodeDecl {
    /// Its id.
    pub id: NodeId,
    /// Where its id is written.
    pub pos: Pos,
    /// Its `kind:`, if given as a string.
    pub kind: Option<Located<String>>,
    /// Its `inputs:`.
    pub inputs: Vec<InputDecl>,
    /// Its `with:` entries, unsubstituted.
    pub settings: Vec<(Located<String>, Doc)>,
    /// Its own `device:`.
    pub device: Option<Located<DeviceSpec>>,
    /// Its `cache:` flag.
    pub cache: bool,
}

/// One entry of a node's `inputs:`.
#[derive(Clone, Debug)]
pub struct InputDecl {
    /// The port name as written.
    pub port: Located<String>,
    /// The references, each checked for shape.
    pub refs: Vec<Located<PortRef>>,
    /// Whether they were written as a list.
    pub is_list: bool,
}

/// Reads the declaration out of a YAML tree; problems go to `diags`.
pub fn declaration(doc: &Doc, diags: &mut Diagnostics) -> Declaration {
    let mut decl = Declaration::default();
    let Data::Map(entries) = &doc.data else {
        let found = if doc.data == Data::Null {
            "an empty file"
        } else {
            doc.type_name()
        };
        diags.push(Diagnostic::at(
            doc.pos,
            format!(
                "a pipeline file is a mapping with `pipeline:` and `nodes:`, but this is {found}"
            ),
        ));
        return decl;
    };
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut nodes_doc = None;
    for (key, value) in entries {
        let name = key.key_text();
        if let Some(first) = seen.insert(name.clone(), key.pos) {
            diags.push(Diagnostic::at(
                key.pos,
                format!("`{name}` is given twice (first at line {})", first.line),
            ));
            continue;
        }
        match name.as_str() {
            "pipeline" => match value.as_str().map(str::parse::<PipelineName>) {
                Some(Ok(n)) => {
                    decl.name = Some(Located {
                        value: n,
                        pos: value.pos,
                    })
                }
                Some(Err(e)) => diags.push(Diagnostic::at(value.pos, format!("`pipeline`: {e}"))),
                None => diags.push(type_error(value, "`pipeline`", "a name")),
            },
            "description" => match &value.data {
                Data::Str(s) => decl.description = Some(s.clone()),
                Data::Null => {}
                _ => diags.push(type_error(value, "`description`", "a string")),
            },
            "seed" => match value.data {
                Data::Int(i) if i >= 0 => decl.seed = i as u64,
                _ => diags.push(type_error(value, "`seed`", "a non-negative integer")),
            },
            "device" => decl.device = device(value, diags),
            "params" => match &value.data {
                Data::Map(params) => {
                    for (k, v) in params {
                        let pname = k.key_text();
                        if decl.params.iter().any(|(p, _)| p.value == pname) {
                            diags.push(Diagnostic::at(
                                k.pos,
                                format!("param `{pname}` is defined twice"),
                            ));
                        } else {
                            decl.params.push((
                                Located {
                                    value: pname,
                                    pos: k.pos,
                                },
                                v.clone(),
                            ));
                        }
                    }
                }
                Data::Null => {}
                _ => diags.push(type_error(
                    value,
                    "`params`",
                    "a mapping of names to values",
                )),
            },
            "nodes" => nodes_doc = Some(value),
            "outputs" => decl.outputs = refs(value, "`outputs`", diags).1,
            "serve" => decl.serve = serve(value, diags),
            "sweep" => decl.sweep = crate::sweep_decl::parse(value, diags),
            other => diags.push(unknown_key(key.pos, other, "top-level key", &PIPELINE_KEYS)),
        }
    }
    for required in ["pipeline", "nodes"] {
        if !seen.contains_key(required) {
            diags.push(Diagnostic::at(
                doc.pos,
                format!("the required key `{required}` is missing"),
            ));
        }
    }
    if let Some(nodes) = nodes_doc {
        decl.nodes = node_decls(nodes, diags);
    }
    decl
}

fn node_decls(doc: &Doc, diags: &mut Diagnostics) -> Vec<NodeDecl> {
    let Data::Map(entries) = &doc.data else {
        diags.push(type_error(doc, "`nodes`", "a mapping of node ids to nodes"));
        return Vec::new();
    };
    if entries.is_empty() {
        diags.push(Diagnostic::at(
            doc.pos,
            "`nodes` is empty: a pipeline needs at least one node",
        ));
    }
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut nodes = Vec::new();
    for (key, value) in entries {
        let text = key.key_text();
        if let Some(first) = seen.insert(text.clone(), key.pos) {
            diags.push(Diagnostic::at(
                key.pos,
                format!(
                    "duplicate node id `{text}` (first defined at line {}): rename one of them",
                    first.line
                ),
            ));
            continue;
        }
        match text.parse::<NodeId>() {
            Ok(id) => {
                if let Some(node) = node_decl(id, key.pos, value, diags) {
                    nodes.push(node);
                }
            }
            Err(e) => diags.push(Diagnostic::at(key.pos, e.to_string())),
        }
    }
    nodes
}

fn node_decl(id: NodeId, pos: Pos, doc: &Doc, diags: &mut Diagnostics) -> Option<NodeDecl> {
    let node = id.to_string();
    let Data::Map(entries) = &doc.data else {
        diags.push(type_error(doc, "the node", "a mapping with `kind:`").in_node(&node));
        return None;
    };
    let mut decl = NodeDecl {
        id,
        pos,
        kind: None,
        inputs: Vec::new(),
        settings: Vec::new(),
        device: None,
        cache: true,
    };
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for (key, value) in entries {
        let name = key.key_text();
        if let Some(first) = seen.insert(name.clone(), key.pos) {
            diags.push(
                Diagnostic::at(
                    key.pos,
                    format!("`{name}` is given twice (first at line {})", first.line),
                )
                .in_node(&node),
            );
            continue;
        }
        match name.as_str() {
            "kind" => match value.as_str() {
                Some(k) => {
                    decl.kind = Some(Located {
                        value: k.to_string(),
                        pos: value.pos,
                    })
                }
                None => diags.push(
                    type_error(value, "`kind`", "a kind name such as `source.csv`").in_node(&node),
                ),
            },
            "inputs" => decl.inputs = inputs(value, &node, diags),
            "with" => match &value.data {
                Data::Map(settings) => {
                    let mut seen_setting: HashMap<String, Pos> = HashMap::new();
                    for (k, v) in settings {
                        let sname = k.key_text();
                        if let Some(first) = seen_setting.insert(sname.clone(), k.pos) {
                            diags.push(
                                Diagnostic::at(
                                    k.pos,
                                    format!(
                                        "setting `{sname}` is given twice (first at line {})",
                                        first.line
                                    ),
                                )
                                .in_node(&node),
                            );
                        } else {
                            decl.settings.push((
                                Located {
                                    value: sname,
                                    pos: k.pos,
                                },
                                v.clone(),
                            ));
                        }
                    }
                }
                Data::Null => {}
                _ => {
                    diags.push(type_error(value, "`with`", "a mapping of settings").in_node(&node))
                }
            },
            "device" => {
                let mut local = Diagnostics::new("");
                decl.device = device(value, &mut local);
                for d in local.items {
                    diags.push(d.in_node(&node));
                }
            }
            "cache" => match value.data {
                Data::Bool(b) => decl.cache = b,
                _ => diags.push(type_error(value, "`cache`", "`true` or `false`").in_node(&node)),
            },
            other => diags.push(unknown_key(key.pos, other, "node key", &NODE_KEYS).in_node(&node)),
        }
    }
    if decl.kind.is_none() && !seen.contains_key("kind") {
        diags.push(
            Diagnostic::at(
                pos,
                "the required key `kind` is missing (see `kiln nodes` for the kinds)",
            )
            .in_node(&node),
        );
    }
    Some(decl)
}

fn inputs(doc: &Doc, node: &str, diags: &mut Diagnostics) -> Vec<InputDecl> {
    let Data::Map(entries) = &doc.data else {
        if doc.data != Data::Null {
            diags.push(
                type_error(doc, "`inputs`", "a mapping of ports to references").in_node(node),
            );
        }
        return Vec::new();
    };
    let mut out: Vec<InputDecl> = Vec::new();
    for (key, value) in entries {
        let port = key.key_text();
        if out.iter().any(|i| i.port.value == port) {
            diags.push(
                Diagnostic::at(key.pos, format!("input `{port}` is given twice")).in_node(node),
            );
            continue;
        }
        let mut local = Diagnostics::new("");
        let (is_list, refs) = refs(value, &format!("input `{port}`"), &mut local);
        for d in local.items {
            diags.push(d.in_node(node));
        }
        out.push(InputDecl {
            port: Located {
                value: port,
                pos: key.pos,
            },
            refs,
            is_list,
        });
    }
    out
}

/// Reads one reference or a list of them; returns whether it was a list.
fn refs(doc: &Doc, what: &str, diags: &mut Diagnostics) -> (bool, Vec<Located<PortRef>>) {
    let one = |d: &Doc, diags: &mut Diagnostics| match d.as_str().map(str::parse::<PortRef>) {
        Some(Ok(r)) => Some(Located {
            value: r,
            pos: d.pos,
        }),
        Some(Err(e)) => {
            diags.push(Diagnostic::at(d.pos, format!("{what}: {e}")));
            None
        }
        None => {
            diags.push(type_error(d, what, "a reference `node` or `node.port`"));
            None
        }
    };
    match &doc.data {
        Data::Seq(items) => (true, items.iter().filter_map(|d| one(d, diags)).collect()),
        Data::Null => (false, Vec::new()),
        _ => (false, one(doc, diags).into_iter().collect()),
    }
}

fn device(doc: &Doc, diags: &mut Diagnostics) -> Option<Located<DeviceSpec>> {
    match doc.as_str().map(str::parse::<DeviceSpec>) {
        Some(Ok(d)) => Some(Located {
            value: d,
            pos: doc.pos,
        }),
        Some(Err(e)) => {
            diags.push(Diagnostic::at(doc.pos, format!("`device`: {e}")));
            None
        }
        None => {
            diags.push(type_error(
                doc,
                "`device`",
                "`cpu`, `cuda`, `cuda:N` or `auto`",
            ));
            None
        }
    }
}

fn serve(doc: &Doc, diags: &mut Diagnostics) -> Option<ServeDecl> {
    let Data::Map(entries) = &doc.data else {
        diags.push(type_error(
            doc,
            "`serve`",
            "a mapping such as `{ input: request, output: label }`",
        ));
        return None;
    };
    let mut decl = ServeDecl {
        pos: doc.pos,
        input: None,
        output: None,
        max_batch: crate::format::default_max_batch() as usize,
        max_wait_ms: crate::format::default_max_wait_ms(),
        max_rows: crate::format::default_max_rows() as usize,
        max_queue: None,
        timeout_ms: crate::format::default_timeout_ms(),
    };
    let count = |value: &Doc, what: &str, min: i64, diags: &mut Diagnostics| match value.data {
        Data::Int(i) if i >= min => Some(i as u64),
        _ => {
            let expected = if min > 0 {
                "a positive integer"
            } else {
                "a non-negative integer"
            };
            diags.push(type_error(value, what, expected));
            None
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in entries {
        let name = key.key_text();
        if !seen.insert(name.clone()) {
            diags.push(Diagnostic::at(
                key.pos,
                format!("`serve.{name}` is given twice"),
            ));
            continue;
        }
        match name.as_str() {
            "input" => match value.as_str().map(str::parse::<NodeId>) {
                Some(Ok(id)) => {
                    decl.input = Some(Located {
                        value: id,
                        pos: value.pos,
                    })
                }
                Some(Err(e)) => {
                    diags.push(Diagnostic::at(value.pos, format!("`serve.input`: {e}")))
                }
                None => diags.push(type_error(value, "`serve.input`", "a node id")),
            },
            "output" => {
                let (_, found) = refs(value, "`serve.output`", diags);
                decl.output = found.into_iter().next();
                if matches!(value.data, Data::Seq(_)) {
                    diags.push(type_error(
                        value,
                        "`serve.output`",
                        "one reference `node` or `node.port`",
                    ));
                }
            }
            "max_batch" => {
                if let Some(n) = count(value, "`serve.max_batch`", 1, diags) {
                    decl.max_batch = n as usize;
                }
            }
            "max_wait_ms" => {
                if let Some(n) = count(value, "`serve.max_wait_ms`", 0, diags) {
                    decl.max_wait_ms = n;
                }
            }
            "max_rows" => {
                if let Some(n) = count(value, "`serve.max_rows`", 1, diags) {
                    decl.max_rows = n as usize;
                }
            }
            "max_queue" => {
                if let Some(n) = count(value, "`serve.max_queue`", 1, diags) {
                    decl.max_queue = Some(n as usize);
                }
            }
            "timeout_ms" => {
                if let Some(n) = count(value, "`serve.timeout_ms`", 1, diags) {
                    decl.timeout_ms = n;
                }
            }
            other => diags.push(unknown_key(key.pos, other, "`serve` key", &SERVE_KEYS)),
        }
    }
    for required in ["input", "output"] {
        if !seen.contains(required) {
            diags.push(Diagnostic::at(
                doc.pos,
                format!("`serve` needs `{required}:` (e.g. `serve: {{ input: request, output: label }}`)"),
            ));
        }
    }
    Some(decl)
}
