//! `source.graph`: a graph from a CSV of edges and (optionally) one of nodes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, ValueType,
};
use serde::Deserialize;

use crate::data::Target;
use crate::graph::{Graph, Level, Part};

/// Reads a graph.
pub struct GraphSource;

const DOC: &str = "Reads a graph: `edges` is a CSV with a row per edge (`from`, `to`, and optionally a `weight` column); `nodes` a CSV with a row per node (`id`, a `target` label, numeric feature columns).
Undirected edges (the default) carry messages both ways. Node features: `columns` (listed, or every numeric column when `features: auto`), `identity` (one-hot node ids, for graphs without features), or `degree`.
For graph classification, `graph` names the nodes column saying which graph each node belongs to, and `graphs` a CSV with a row per graph holding its `target`: the graphs are then the examples.
Nodes with an empty target cell are unlabelled: they are read and propagate messages, but never split, trained on or scored.";

const MAX_IDENTITY_NODES: usize = 20_000;

kiln_engine::choices! {
    /// Where node features come from.
    pub enum Features {
        /// `columns`, or every numeric column of the nodes file (identity if there is none).
        Auto = "auto",
        /// A one-hot row per node.
        Identity = "identity",
        /// Each node's in-degree.
        Degree = "degree",
    }
}

/// What `source.graph` reads from `with:`.
#[derive(Config, Deserialize)]
struct GraphSettings {
    /// CSV with a header, one row per edge
    edges: InputPath,
    /// CSV with a header, one row per node (without it, nodes are the ids the edges name)
    nodes: Option<InputPath>,
    /// `nodes`: the column of node ids
    #[setting(default = "node")]
    id: String,
    /// `edges`: the column of source node ids
    #[setting(default = "source")]
    from: String,
    /// `edges`: the column of target node ids
    #[setting(default = "target")]
    to: String,
    /// `edges`: a column of edge weights (default: every edge weighs 1)
    weight: Option<String>,
    /// messages flow only from `from` to `to`
    #[setting(default = false)]
    directed: bool,
    /// the label column (in `nodes`, or in `graphs` for graph classification)
    target: Option<String>,
    /// `auto`: `columns`, or every numeric nodes column (identity if there is none)
    #[setting(default = "auto")]
    features: Features,
    /// `nodes`: the feature columns
    columns: Option<Vec<String>>,
    /// `nodes`: the column naming each node's graph (graph classification)
    graph: Option<String>,
    /// CSV with a row per graph: its id (column named as `graph`) and `target`
    graphs: Option<InputPath>,
}

impl NodeKind for GraphSource {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.graph",
            version: 1,
            doc: DOC,
            inputs: vec![],
            outputs: vec![OutputSpec::new(
                "graph",
                ValueType::Graph,
                "nodes, edges, features and target",
            )],
            settings: GraphSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<GraphSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let mut problems = Vec::new();
        if s.graph.is_some() != s.graphs.is_some() {
            problems.push((
                if s.graph.is_some() { "graphs" } else { "graph" }.to_string(),
                "graph classification needs both `graph` (the nodes column) and `graphs` (the file of graphs)".into(),
            ));
        }
        if (s.columns.is_some() || s.graph.is_some()) && s.nodes.is_none() {
            problems.push((
                "nodes".into(),
                "`columns` and `graph` are columns of the nodes file: set `nodes`".into(),
            ));
        }
        problems
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let graph = read(&ctx.settings().read()?)?;
        Ok(vec![(PortName::new_static("graph"), graph.into_value()?)])
    }
}

/// A CSV file's header and rows, with the file named in errors.
struct Csv {
    shown: String,
    header: Vec<String>,
    rows: Vec<csv::StringRecord>,
}

impl Csv {
    fn read(path: &Path) -> Result<Csv, NodeError> {
        let shown = path.display().to_string();
        let err = |e: csv::Error| NodeError::new(format!("`{shown}`: {e}"));
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(err)?;
        let header = reader
            .headers()
            .map_err(err)?
            .iter()
            .map(String::from)
            .collect();
        let rows = reader
            .records()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(Csv {
            shown,
            header,
            rows,
        })
    }

    fn column(&self, name: &str, setting: &str) -> Result<usize, NodeError> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            let hint = kiln_engine::ids::did_you_mean(name, self.header.iter().map(String::as_str))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            NodeError::new(format!(
                "setting `{setting}`: `{}` has no column `{name}`{hint}; its columns: {}",
                self.shown,
                self.header.join(", ")
            ))
        })
    }

    /// The cell of row `i` (0-based data row) in column `col`.
    fn cell(&self, i: usize, col: usize) -> &str {
        self.rows[i].get(col).unwrap_or("")
    }

    /// Where row `i` is, for errors.
    fn at(&self, i: usize) -> String {
        format!("`{}` line {}", self.shown, i + 2)
    }
}

fn read(s: &GraphSettings) -> Result<Graph, NodeError> {
    let edges = Csv::read(&s.edges)?;
    let nodes = s.nodes.as_deref().map(Csv::read).transpose()?;
    let target = s.target.as_deref();
    let graph_col = s.graph.as_deref();

    // Node ids, in the nodes file's order or in order of first mention.
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut ids = Vec::new();
    if let Some(n) = &nodes {
        let id = n.column(&s.id, "id")?;
        for i in 0..n.rows.len() {
            let name = n.cell(i, id).to_string();
            if index.insert(name.clone(), ids.len() as u32).is_some() {
                return Err(NodeError::new(format!(
                    "{}: node `{name}` is listed twice",
                    n.at(i)
                )));
            }
            ids.push(name);
        }
    }
    let (from, to) = (edges.column(&s.from, "from")?, edges.column(&s.to, "to")?);
    let weight_col = s
        .weight
        .as_deref()
        .map(|w| edges.column(w, "weight"))
        .transpose()?;
    let directed = s.directed;
    let (mut src, mut dst, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..edges.rows.len() {
        let mut end = |col: usize| -> Result<u32, NodeError> {
            let name = edges.cell(i, col);
            if let Some(&k) = index.get(name) {
                return Ok(k);
            }
            if nodes.is_some() {
                return Err(NodeError::new(format!(
                    "{}: node `{name}` is not in the nodes file",
                    edges.at(i)
                )));
            }
            index.insert(name.to_string(), ids.len() as u32);
            ids.push(name.to_string());
            Ok(ids.len() as u32 - 1)
        };
        let (a, b) = (end(from)?, end(to)?);
        let w = match weight_col {
            Some(c) => {
                let cell = edges.cell(i, c);
                cell.parse::<f32>()
                    .ok()
                    .filter(|w| w.is_finite())
                    .ok_or_else(|| {
                        NodeError::new(format!("{}: weight `{cell}` is not a number", edges.at(i)))
                    })?
            }
            None => 1.0,
        };
        src.push(a);
        dst.push(b);
        weight.push(w);
        if !directed && a != b {
            src.push(b);
            dst.push(a);
            weight.push(w);
        }
    }
    let n = ids.len();
    if n == 0 {
        return Err(NodeError::new(format!("`{}` holds no edges", edges.shown)));
    }

    // Graph membership, at graph level.
    let (level, node_graph, graph_ids, graph_file) = match (graph_col, &nodes, &s.graphs) {
        (Some(col), Some(nf), Some(graphs)) => {
            let c = nf.column(col, "graph")?;
            let gf = Csv::read(graphs)?;
            let gc = gf.column(col, "graph")?;
            let mut gindex = HashMap::new();
            let mut gids = Vec::new();
            for i in 0..gf.rows.len() {
                let name = gf.cell(i, gc).to_string();
                if gindex.insert(name.clone(), gids.len() as u32).is_some() {
                    return Err(NodeError::new(format!(
                        "{}: graph `{name}` is listed twice",
                        gf.at(i)
                    )));
                }
                gids.push(name);
            }
            let member = (0..nf.rows.len())
                .map(|i| {
                    let g = nf.cell(i, c);
                    gindex.get(g).copied().ok_or_else(|| {
                        NodeError::new(format!(
                            "{}: graph `{g}` is not in `{}`",
                            nf.at(i),
                            gf.shown
                        ))
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?;
            (Level::Graph, member, gids, Some(gf))
        }
        _ => (Level::Node, Vec::new(), Vec::new(), None),
    };

    // The target, with unlabelled examples left out of every split.
    let (mut target_value, mut split) = (None, Vec::new());
    if let Some(t) = target {
        let file = match (&graph_file, &nodes) {
            (Some(g), _) => g,
            (None, Some(nf)) => nf,
            (None, None) => {
                return Err(NodeError::new(
                    "setting `target`: labels are read from the nodes file: set `nodes`",
                ))
            }
        };
        let col = file.column(t, "target")?;
        let cells: Vec<&str> = (0..file.rows.len()).map(|i| file.cell(i, col)).collect();
        let mut names: Vec<String> = cells
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| c.to_string())
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(NodeError::new(format!(
                "`{}`: column `{t}` has no labels",
                file.shown
            )));
        }
        let idx: Vec<u32> = cells
            .iter()
            .map(|c| names.iter().position(|n| n == c).unwrap_or(0) as u32)
            .collect();
        if cells.iter().any(|c| c.is_empty()) {
            split = cells
                .iter()
                .map(|c| if c.is_empty() { Part::None } else { Part::Train } as u8)
                .collect();
        }
        let m = idx.len();
        target_value = Some(Target {
            name: t.to_string(),
            values: Tensor::from_vec(idx, m, &Device::Cpu)?,
            labels: Some(names),
        });
    }

    let (x, feature_names) = features(
        s,
        nodes.as_ref(),
        n,
        &dst,
        &[&s.id, target.unwrap_or(""), graph_col.unwrap_or("")],
    )?;
    Ok(Graph {
        level,
        x,
        src,
        dst,
        weight,
        directed,
        graphs: if level == Level::Graph {
            graph_ids.len()
        } else {
            1
        },
        node_graph,
        node_ids: ids,
        graph_ids,
        feature_names,
        target: target_value,
        split,
    })
}

/// Node features as the settings ask, with their names.
fn features(
    s: &GraphSettings,
    nodes: Option<&Csv>,
    n: usize,
    dst: &[u32],
    not_features: &[&str],
) -> Result<(Tensor, Vec<String>), NodeError> {
    let listed = &s.columns;
    let numeric_columns = |nf: &Csv| -> Vec<usize> {
        (0..nf.header.len())
            .filter(|&c| !not_features.contains(&nf.header[c].as_str()))
            .filter(|&c| (0..nf.rows.len()).all(|i| nf.cell(i, c).parse::<f32>().is_ok()))
            .collect()
    };
    let columns = match (s.features, nodes, listed) {
        (Features::Auto, Some(nf), Some(list)) => Some(
            list.iter()
                .map(|c| nf.column(c, "columns"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        (Features::Auto, Some(nf), None) => Some(numeric_columns(nf)).filter(|c| !c.is_empty()),
        _ => None,
    };
    match (columns, nodes) {
        (Some(cols), Some(nf)) => {
            let mut values = Vec::with_capacity(n * cols.len());
            for i in 0..nf.rows.len() {
                for &c in &cols {
                    let cell = nf.cell(i, c);
                    values.push(cell.parse::<f32>().map_err(|_| {
                        NodeError::new(format!(
                            "{} column `{}`: `{cell}` is not a number",
                            nf.at(i),
                            nf.header[c]
                        ))
                    })?);
                }
            }
            let names = cols.iter().map(|&c| nf.header[c].clone()).collect();
            Ok((
                Tensor::from_vec(values, (n, cols.len()), &Device::Cpu)?,
                names,
            ))
        }
        _ if s.features == Features::Degree => {
            let mut degree = vec![0f32; n];
            for &d in dst {
                degree[d as usize] += 1.0;
            }
            Ok((
                Tensor::from_vec(degree, (n, 1), &Device::Cpu)?,
                vec!["degree".into()],
            ))
        }
        _ => {
            if n > MAX_IDENTITY_NODES {
                return Err(NodeError::new(format!(
                    "identity features for {n} nodes would take {n}×{n} values: give the nodes feature `columns`, or use `features: degree`"
                )));
            }
            let names = (0..n).map(|i| format!("is_{i}")).collect();
            Ok((
                Tensor::eye(n, candle_core::DType::F32, &Device::Cpu)?,
                names,
            ))
        }
    }
}
