//! The typed view of `graph` values: nodes with features, directed edges
//! with weights, a target and a split.
//!
//! A graph value is either one graph whose *nodes* are the examples (node
//! classification), or many graphs whose *graphs* are the examples (graph
//! classification: every node says which graph it belongs to). Either way
//! the target, the label names and the split index the examples, so
//! `train.supervised`, `infer.predict` and `postprocess.metrics` treat a
//! graph as a dataset of its examples that a model reads together with the
//! edges. An undirected edge is stored once in each direction.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Result as CandleResult, Tensor};
use kiln_engine::{NodeError, Value, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::data::{Dataset, Target};
use crate::nn::spmm::SparseMatrix;

/// What a graph's examples are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One graph; its nodes are the examples.
    Node,
    /// Many graphs; each is an example.
    Graph,
}

/// Which part of the split an example is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Examples the loss is computed on.
    Train = 0,
    /// Examples scored after every epoch.
    Valid = 1,
    /// Examples held out for the final score.
    Test = 2,
    /// Examples in no part (unlabelled).
    None = 3,
}

/// A graph (or a set of graphs) with node features.
#[derive(Clone, Debug)]
pub struct Graph {
    /// What the examples are.
    pub level: Level,
    /// `[nodes, features]`, f32.
    pub x: Tensor,
    /// Edge sources and targets (node indices); a message flows from
    /// `src[i]` to `dst[i]`.
    pub src: Vec<u32>,
    /// See `src`.
    pub dst: Vec<u32>,
    /// Edge weights (1 where the data has none).
    pub weight: Vec<f32>,
    /// Whether the edges were read as directed.
    pub directed: bool,
    /// The graph each node belongs to (graph level only).
    pub node_graph: Vec<u32>,
    /// Number of graphs (1 at node level).
    pub graphs: usize,
    /// Node ids as the data names them.
    pub node_ids: Vec<String>,
    /// Graph ids as the data names them (graph level only).
    pub graph_ids: Vec<String>,
    /// Feature names.
    pub feature_names: Vec<String>,
    /// The target of every example, if labelled.
    pub target: Option<Target>,
    /// Every example's part of the split (`Part` as u8); empty when unsplit.
    pub split: Vec<u8>,
}

impl Graph {
    /// The number of examples (nodes or graphs).
    pub fn examples(&self) -> usize {
        match self.level {
            Level::Node => self.nodes(),
            Level::Graph => self.graphs,
        }
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// The examples in `part` of the split, in order; all labelled examples
    /// for `Train` when the graph is not split.
    pub fn part(&self, part: Part) -> Vec<u32> {
        if self.split.is_empty() {
            return match part {
                Part::Train => (0..self.examples() as u32).collect(),
                _ => Vec::new(),
            };
        }
        (0..self.split.len() as u32)
            .filter(|&i| self.split[i as usize] == part as u8)
            .collect()
    }

    /// The examples a final score reads: the test part of a split graph,
    /// every example of an unsplit one.
    pub fn scored(&self) -> Vec<u32> {
        if self.split.is_empty() {
            (0..self.examples() as u32).collect()
        } else {
            self.part(Part::Test)
        }
    }

    /// The examples `rows` as a dataset: the row of features is empty, the
    /// target is theirs (for scoring predictions of them).
    pub fn targets_of(&self, rows: &[u32]) -> Result<Dataset, NodeError> {
        let target = self.target.as_ref().map(|t| t.select(rows)).transpose()?;
        Dataset::of_target(rows.len(), target)
    }

    /// The nodes and edges the model reads to give outputs for the examples
    /// `rows`: the whole graph at node level (outputs for every node, from
    /// which the caller picks `rows`), the union of the graphs `rows` at
    /// graph level (one output per graph, in `rows` order).
    pub fn batch(&self, rows: &[u32], device: &Device) -> Result<GraphBatch, NodeError> {
        match self.level {
            Level::Node => Ok(GraphBatch {
                x: self.x.to_device(device)?,
                src: Tensor::from_slice(&self.src, self.src.len(), device)?,
                dst: Tensor::from_slice(&self.dst, self.dst.len(), device)?,
                weight: Tensor::from_slice(&self.weight, self.weight.len(), device)?,
                nodes: self.nodes(),
                pool: None,
                gcn: OnceLock::new(),
                mean: OnceLock::new(),
            }),
            Level::Graph => {
                // New node numbers: graph by graph, in `rows` order.
                let mut members: Vec<Vec<u32>> = vec![Vec::new(); self.graphs];
                for (node, &g) in self.node_graph.iter().enumerate() {
                    members[g as usize].push(node as u32);
                }
                let mut renumber = vec![u32::MAX; self.nodes()];
                let (mut nodes, mut slot, mut ranges) = (Vec::new(), Vec::new(), Vec::new());
                for (k, &g) in rows.iter().enumerate() {
                    let start = nodes.len();
                    for &node in &members[g as usize] {
                        renumber[node as usize] = nodes.len() as u32;
                        nodes.push(node);
                        slot.push(k as u32);
                    }
                    ranges.push((start, nodes.len() - start));
                }
                let (mut src, mut dst, mut weight) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..self.src.len() {
                    let (s, d) = (
                        renumber[self.src[i] as usize],
                        renumber[self.dst[i] as usize],
                    );
                    if s != u32::MAX && d != u32::MAX {
                        src.push(s);
                        dst.push(d);
                        weight.push(self.weight[i]);
                    }
                }
                let idx = Tensor::from_slice(&nodes, nodes.len(), &Device::Cpu)?;
                Ok(GraphBatch {
                    x: self.x.index_select(&idx, 0)?.to_device(device)?,
                    src: Tensor::from_slice(&src, src.len(), device)?,
                    dst: Tensor::from_slice(&dst, dst.len(), device)?,
                    weight: Tensor::from_slice(&weight, weight.len(), device)?,
                    nodes: nodes.len(),
                    pool: Some(Pool {
                        slot: Tensor::from_slice(&slot, slot.len(), device)?,
                        ranges,
                    }),
                    gcn: OnceLock::new(),
                    mean: OnceLock::new(),
                })
            }
        }
    }

    /// Reads a `graph` value.
    pub fn from_value(value: &Value) -> Result<Graph, NodeError> {
        if value.ty() != ValueType::Graph {
            return Err(NodeError::new(format!(
                "expected a graph, got a {}",
                value.ty()
            )));
        }
        let meta = value.meta();
        let tensors = value.tensors();
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| NodeError::new(format!("the graph value has no `{name}`")))
        };
        let u32s = |name: &str| -> Result<Vec<u32>, NodeError> {
            match tensors.get(name) {
                Some(t) => Ok(t.to_dtype(DType::U32)?.to_vec1()?),
                None => Ok(Vec::new()),
            }
        };
        let strings = |key: &str| -> Vec<String> {
            meta.get(key)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let level: Level = meta
            .get("level")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or(Level::Node);
        let target = tensors.get("y").map(|t| Target::read(meta, t));
        Ok(Graph {
            level,
            x: get("x")?.clone(),
            src: u32s("src")?,
            dst: u32s("dst")?,
            weight: get("weight")?.to_dtype(DType::F32)?.to_vec1()?,
            directed: meta
                .get("directed")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            node_graph: u32s("node_graph")?,
            graphs: meta.get("graphs").and_then(Json::as_u64).unwrap_or(1) as usize,
            node_ids: strings("node_ids"),
            graph_ids: strings("graph_ids"),
            feature_names: strings("features"),
            target,
            split: match tensors.get("split") {
                Some(t) => t.to_dtype(DType::U8)?.to_vec1()?,
                None => Vec::new(),
            },
        })
    }

    /// The value.
    pub fn into_value(self) -> Result<Value, NodeError> {
        let cpu = Device::Cpu;
        let mut tensors = BTreeMap::new();
        let e = self.src.len();
        tensors.insert("x".to_string(), self.x);
        tensors.insert("src".into(), Tensor::from_vec(self.src, e, &cpu)?);
        tensors.insert("dst".into(), Tensor::from_vec(self.dst, e, &cpu)?);
        tensors.insert("weight".into(), Tensor::from_vec(self.weight, e, &cpu)?);
        if !self.node_graph.is_empty() {
            let n = self.node_graph.len();
            tensors.insert(
                "node_graph".into(),
                Tensor::from_vec(self.node_graph, n, &cpu)?,
            );
        }
        if !self.split.is_empty() {
            let n = self.split.len();
            tensors.insert("split".into(), Tensor::from_vec(self.split, n, &cpu)?);
        }
        let mut meta = json!({
            "level": self.level,
            "directed": self.directed,
            "graphs": self.graphs,
            "node_ids": self.node_ids,
            "features": self.feature_names,
        });
        if !self.graph_ids.is_empty() {
            meta["graph_ids"] = json!(self.graph_ids);
        }
        if let Some(t) = self.target {
            t.store("y", &mut meta, &mut tensors);
        }
        Ok(Value::new(ValueType::Graph, tensors, meta))
    }
}

/// What a graph network reads in one forward pass.
pub struct GraphBatch {
    /// `[nodes, features]`.
    pub x: Tensor,
    /// Edge sources, u32 `[edges]`.
    pub src: Tensor,
    /// Edge targets, u32 `[edges]`.
    pub dst: Tensor,
    /// Edge weights, f32 `[edges]`.
    pub weight: Tensor,
    /// Number of nodes.
    pub nodes: usize,
    /// For one output per graph: which graph each node is in.
    pub pool: Option<Pool>,
    gcn: OnceLock<Propagation>,
    mean: OnceLock<Propagation>,
}

impl GraphBatch {
    /// GCN's propagation (symmetric normalisation, self loops), built on
    /// first use and kept: a node-level batch serves every epoch.
    pub fn gcn(&self) -> CandleResult<&Propagation> {
        cached(&self.gcn, || Propagation::gcn(self))
    }

    /// The mean over each node's incoming neighbours, built on first use.
    pub fn mean(&self) -> CandleResult<&Propagation> {
        cached(&self.mean, || Propagation::mean(self))
    }
}

fn cached(
    cell: &OnceLock<Propagation>,
    make: impl FnOnce() -> CandleResult<Propagation>,
) -> CandleResult<&Propagation> {
    if let Some(p) = cell.get() {
        return Ok(p);
    }
    let p = make()?;
    Ok(cell.get_or_init(|| p))
}

/// Which graph of a batch each node belongs to.
pub struct Pool {
    /// The graph (output row) of every node, u32 `[nodes]`.
    pub slot: Tensor,
    /// Every graph's nodes, as (first node, count): graphs are contiguous.
    pub ranges: Vec<(usize, usize)>,
}

/// Message passing over a batch's edges: `Σ_edges coef · h[src]` into
/// `dst`. On the CPU one sparse product each way ([`SparseMatrix`]); on
/// other devices every edge's source row is gathered (`index_select`),
/// scaled by the edge's coefficient and summed into its target row
/// (`index_add`), ops candle differentiates. Both give the same numbers.
pub enum Propagation {
    Sparse(SparseMatrix),
    Edges {
        src: Tensor,
        dst: Tensor,
        coef: Tensor,
        nodes: usize,
    },
}

impl Propagation {
    /// `Σ_edges coef · h[src]` into `dst`.
    pub fn pass(&self, h: &Tensor) -> CandleResult<Tensor> {
        match self {
            Propagation::Sparse(m) => m.times(&h.to_dtype(DType::F32)?)?.to_dtype(h.dtype()),
            Propagation::Edges {
                src,
                dst,
                coef,
                nodes,
            } => {
                let gathered = h.index_select(src, 0)?.broadcast_mul(coef)?;
                Tensor::zeros((*nodes, h.dim(1)?), h.dtype(), h.device())?
                    .index_add(dst, &gathered, 0)
            }
        }
    }

    /// GCN's symmetric normalisation over the edges plus a self loop per
    /// node: `w / sqrt(deg(src) · deg(dst))`, degrees counting the loop.
    fn gcn(b: &GraphBatch) -> CandleResult<Propagation> {
        let (src, dst, w) = edge_lists(b)?;
        let mut degree = vec![1f32; b.nodes];
        for (&d, &w) in dst.iter().zip(&w) {
            degree[d as usize] += w;
        }
        let n = b.nodes as u32;
        let (mut s, mut d, mut c) = (src, dst, Vec::with_capacity(w.len() + b.nodes));
        for i in 0..s.len() {
            c.push(w[i] / (degree[s[i] as usize] * degree[d[i] as usize]).sqrt());
        }
        for i in 0..n {
            s.push(i);
            d.push(i);
            c.push(1.0 / degree[i as usize]);
        }
        Propagation::new(s, d, c, b)
    }

    /// GraphSAGE's mean: `w / Σ w` over each node's incoming edges.
    fn mean(b: &GraphBatch) -> CandleResult<Propagation> {
        let (src, dst, w) = edge_lists(b)?;
        let mut total = vec![0f32; b.nodes];
        for (&d, &w) in dst.iter().zip(&w) {
            total[d as usize] += w;
        }
        let c = dst
            .iter()
            .zip(&w)
            .map(|(&d, &w)| w / total[d as usize].max(f32::MIN_POSITIVE))
            .collect();
        Propagation::new(src, dst, c, b)
    }

    fn new(
        src: Vec<u32>,
        dst: Vec<u32>,
        coef: Vec<f32>,
        b: &GraphBatch,
    ) -> CandleResult<Propagation> {
        let device = b.x.device();
        if let Some(i) = src.iter().chain(&dst).find(|i| **i as usize >= b.nodes) {
            candle_core::bail!("edge endpoint {i} is not one of the {} nodes", b.nodes);
        }
        if crate::nn::cpu::own_kernels_on(device) {
            return Ok(Propagation::Sparse(SparseMatrix::new(
                &dst, &src, &coef, b.nodes,
            )));
        }
        let e = src.len();
        Ok(Propagation::Edges {
            src: Tensor::from_vec(src, e, device)?,
            dst: Tensor::from_vec(dst, e, device)?,
            coef: Tensor::from_vec(coef, (e, 1), device)?,
            nodes: b.nodes,
        })
    }
}

fn edge_lists(b: &GraphBatch) -> CandleResult<(Vec<u32>, Vec<u32>, Vec<f32>)> {
    Ok((
        b.src.to_vec1()?,
        b.dst.to_vec1()?,
        b.weight.to_dtype(DType::F32)?.to_vec1()?,
    ))
}
