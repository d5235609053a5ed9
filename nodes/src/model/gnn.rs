//! `model.gnn`: graph convolution networks (GCN, GraphSAGE) for node and
//! graph classification.
//!
//! Message passing is sparse ([`Propagation`]): time and memory grow with
//! the edges, never with nodes².

use candle_core::{DType, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, ValueType,
};
use serde::{Deserialize, Serialize};

use crate::graph::{GraphBatch, Pool, Propagation};
use crate::model::ModelValue;
use crate::nn::dropout::dropout;
use crate::nn::{Activation, Dims, Mode, Network};

kiln_engine::choices! {
    /// The graph convolution (the `conv` setting).
    pub enum ConvKind {
        /// Kipf & Welling's GCN.
        Gcn = "gcn",
        /// GraphSAGE with mean aggregation.
        Sage = "sage",
    }
}

kiln_engine::choices! {
    /// What a graph's nodes become (the `readout` setting).
    pub enum Readout {
        /// Nothing: one output per node.
        None = "none",
        /// The mean of a graph's nodes.
        Mean = "mean",
        /// Their element-wise maximum.
        Max = "max",
        /// Their sum.
        Sum = "sum",
    }
}

/// The GNN's architecture: the settings of `model.gnn` and what a model
/// value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct GnnConfig {
    /// how a node combines its neighbours
    #[setting(default = "gcn")]
    pub conv: ConvKind,
    /// units of each hidden graph convolution
    #[setting(default = [16], min = 1)]
    pub hidden: Vec<usize>,
    /// activation after each hidden layer
    #[setting(default = "relu")]
    pub activation: Activation,
    /// dropout before every layer while training
    #[setting(default = 0.5, min = 0.0, lt = 1.0)]
    pub dropout: f64,
    /// `none`: an output per node; otherwise per graph, pooled this way
    #[setting(default = "none")]
    pub readout: Readout,
}

/// How messages are combined.
enum Conv {
    /// Kipf & Welling: `D^-½ (A + I) D^-½ · H · W`.
    Gcn(Linear),
    /// Hamilton et al., mean aggregation: `H · W_self + mean_neighbours(H) · W_neigh`.
    Sage { own: Linear, neighbours: Linear },
}

impl Conv {
    fn new(kind: ConvKind, inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Conv> {
        Ok(match kind {
            ConvKind::Sage => Conv::Sage {
                own: candle_nn::linear(inputs, outputs, vb.pp("own"))?,
                neighbours: candle_nn::linear_no_bias(inputs, outputs, vb.pp("neighbours"))?,
            },
            ConvKind::Gcn => Conv::Gcn(candle_nn::linear(inputs, outputs, vb)?),
        })
    }

    fn forward(&self, h: &Tensor, m: &Propagation) -> Result<Tensor> {
        match self {
            // Transform first: the messages then carry the (usually
            // narrower) output width.
            Conv::Gcn(linear) => {
                let bias = linear.bias();
                let w = Linear::new(linear.weight().clone(), None);
                let out = m.pass(&w.forward(h)?)?;
                match bias {
                    Some(b) => out.broadcast_add(b),
                    None => Ok(out),
                }
            }
            Conv::Sage { own, neighbours } => own.forward(h)? + neighbours.forward(&m.pass(h)?)?,
        }
    }
}

/// Graph convolutions, then (for graphs) a readout and a linear head; at
/// node level the output layer is a graph convolution too, as in Kipf &
/// Welling's two-layer GCN.
pub struct Gnn {
    layers: Vec<Conv>,
    node_head: Option<Conv>,
    graph_head: Option<Linear>,
    cfg: GnnConfig,
}

impl Gnn {
    /// Builds the layers: `layers.{i}` (`.own`/`.neighbours` for SAGE), `head`.
    pub fn new(cfg: &GnnConfig, dims: &Dims, vb: VarBuilder) -> Result<Self> {
        let mut width: usize = dims.input.iter().product();
        let mut layers = Vec::new();
        for (i, &units) in cfg.hidden.iter().enumerate() {
            layers.push(Conv::new(
                cfg.conv,
                width,
                units,
                vb.pp(format!("layers.{i}")),
            )?);
            width = units;
        }
        let (node_head, graph_head) = if cfg.readout == Readout::None {
            (
                Some(Conv::new(cfg.conv, width, dims.output, vb.pp("head"))?),
                None,
            )
        } else {
            (
                None,
                Some(candle_nn::linear(width, dims.output, vb.pp("head"))?),
            )
        };
        Ok(Gnn {
            layers,
            node_head,
            graph_head,
            cfg: cfg.clone(),
        })
    }

    fn readout(&self, h: &Tensor, pool: &Pool) -> Result<Tensor> {
        let graphs = pool.ranges.len();
        let width = h.dim(1)?;
        match self.cfg.readout {
            Readout::None => candle_core::bail!("a node-level model has no readout"),
            Readout::Max => {
                let rows = pool
                    .ranges
                    .iter()
                    .map(|&(start, len)| {
                        if len == 0 {
                            Tensor::zeros((1, width), h.dtype(), h.device())
                        } else {
                            h.narrow(0, start, len)?.max_keepdim(0)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            }
            how @ (Readout::Mean | Readout::Sum) => {
                let sum = Tensor::zeros((graphs, width), h.dtype(), h.device())?
                    .index_add(&pool.slot, h, 0)?;
                if how == Readout::Sum {
                    return Ok(sum);
                }
                let counts: Vec<f32> = pool.ranges.iter().map(|&(_, n)| n.max(1) as f32).collect();
                let counts = Tensor::from_vec(counts, (graphs, 1), h.device())?;
                sum.broadcast_div(&counts)
            }
        }
    }
}

impl Network for Gnn {
    fn forward(&self, _x: &Tensor, _mode: &mut Mode<'_>) -> Result<Tensor> {
        candle_core::bail!(
            "a `gnn` model reads graphs: give it the output of `source.graph` (or `preprocess.graph_split`)"
        )
    }

    fn forward_graph(&self, batch: &GraphBatch, mode: &mut Mode<'_>) -> Result<Tensor> {
        let messages = if self.cfg.conv == ConvKind::Sage {
            batch.mean()?
        } else {
            batch.gcn()?
        };
        let mut h = batch.x.to_dtype(DType::F32)?;
        for conv in &self.layers {
            h = dropout(&h, self.cfg.dropout, mode)?;
            h = self.cfg.activation.apply(&conv.forward(&h, messages)?)?;
        }
        h = dropout(&h, self.cfg.dropout, mode)?;
        match (&self.node_head, &self.graph_head, &batch.pool) {
            (Some(head), _, None) => head.forward(&h, messages),
            (_, Some(head), Some(pool)) => head.forward(&self.readout(&h, pool)?),
            (Some(_), _, Some(_)) => candle_core::bail!(
                "this model predicts nodes (`readout: none`), but the graph's examples are graphs: set `readout: mean`, `max` or `sum`"
            ),
            _ => candle_core::bail!(
                "this model predicts graphs (`readout: {}`), but the graph's examples are its nodes: set `readout: none`",
                self.cfg.readout.name()
            ),
        }
    }
}

/// The `model.gnn` kind.
pub struct GnnKind;

impl NodeKind for GnnKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.gnn",
            version: 1,
            doc: "A graph neural network: graph convolutions (`gcn`: Kipf & Welling with self loops and symmetric normalisation; `sage`: GraphSAGE with mean aggregation), sparse over the edges.
`readout: none` classifies nodes (the output layer is a graph convolution, so `hidden: [16]` is the classic two-layer GCN); `mean`, `max` or `sum` pools each graph's nodes and classifies graphs with a linear head.
Train it with `train.supervised` on a graph: the split's train examples count in the loss, every node passes messages.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: GnnConfig::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model = ModelValue::configured("gnn", &ctx.settings().read::<GnnConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    use candle_core::Device;

    use super::*;
    use crate::graph::{Graph, Level};
    use crate::nn::init::{var_builder, SeededVars};
    use crate::nn::{assert_all_have_gradients, max_diff};

    /// A 5-node graph: a triangle 0-1-2 and an edge 2-3 (weight 2), node 4 alone.
    fn small(level: Level) -> Graph {
        let (src, dst, weight) = (
            vec![0, 1, 1, 2, 0, 2, 2, 3],
            vec![1, 0, 2, 1, 2, 0, 3, 2],
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0],
        );
        Graph {
            level,
            x: Tensor::randn(0f32, 1.0, (5, 3), &Device::Cpu).unwrap(),
            src,
            dst,
            weight,
            directed: false,
            node_graph: if level == Level::Graph {
                vec![0, 0, 0, 1, 1]
            } else {
                vec![]
            },
            graphs: if level == Level::Graph { 2 } else { 1 },
            node_ids: (0..5).map(|i| i.to_string()).collect(),
            graph_ids: vec![],
            feature_names: vec![],
            target: None,
            split: vec![],
        }
    }

    #[test]
    fn sparse_messages_equal_the_dense_formulas() {
        let g = small(Level::Node);
        let batch = g.batch(&[], &Device::Cpu).unwrap();
        // Dense adjacency with weights.
        let mut a = [[0f32; 5]; 5];
        for i in 0..g.src.len() {
            a[g.dst[i] as usize][g.src[i] as usize] = g.weight[i];
        }
        // GCN: D^-½ (A + I) D^-½.
        let deg: Vec<f32> = (0..5).map(|i| 1.0 + a[i].iter().sum::<f32>()).collect();
        let gcn: Vec<f32> = (0..25)
            .map(|k| {
                let (i, j) = (k / 5, k % 5);
                (a[i][j] + if i == j { 1.0 } else { 0.0 }) / (deg[i] * deg[j]).sqrt()
            })
            .collect();
        // Mean over incoming neighbours (node 4 has none: zeros).
        let mean: Vec<f32> = (0..25)
            .map(|k| {
                let (i, j) = (k / 5, k % 5);
                let total: f32 = a[i].iter().sum();
                if total > 0.0 {
                    a[i][j] / total
                } else {
                    0.0
                }
            })
            .collect();
        for (messages, dense) in [(batch.gcn().unwrap(), gcn), (batch.mean().unwrap(), mean)] {
            let dense = Tensor::from_vec(dense, (5, 5), &Device::Cpu).unwrap();
            let sparse = messages.pass(&g.x).unwrap();
            assert!(max_diff(&sparse, &dense.matmul(&g.x).unwrap()) < 1e-6);
        }
    }

    /// Every weight gets a gradient, for both convolutions and every readout.
    #[test]
    fn every_gnn_weight_is_trained() {
        for (conv, readout, level) in [
            ("gcn", "none", Level::Node),
            ("sage", "none", Level::Node),
            ("gcn", "max", Level::Graph),
            ("gcn", "mean", Level::Graph),
            ("sage", "sum", Level::Graph),
        ] {
            let cfg = GnnConfig {
                conv: serde_json::from_value(json!(conv)).unwrap(),
                hidden: vec![8, 8],
                activation: Activation::Tanh,
                dropout: 0.0,
                readout: serde_json::from_value(json!(readout)).unwrap(),
            };
            let dims = Dims {
                input: vec![3],
                output: 2,
                vocab: None,
            };
            let vars = Arc::new(SeededVars::new(1, HashMap::new()));
            let net = Gnn::new(&cfg, &dims, var_builder(vars.clone(), &Device::Cpu)).unwrap();
            let g = small(level);
            let rows: Vec<u32> = (0..g.examples() as u32).collect();
            let out = net
                .forward_graph(&g.batch(&rows, &Device::Cpu).unwrap(), &mut Mode::eval())
                .unwrap();
            assert_eq!(out.dims(), [g.examples(), 2], "{conv}/{readout}");
            assert_all_have_gradients(&vars, &out, &format!("{conv}/{readout}"));
        }
    }
}
