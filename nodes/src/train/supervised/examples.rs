//! Examples ready for batching: rows of features, or the examples of a
//! graph (its nodes, or whole graphs) read with the edges.

use candle_core::{DType, Device, Tensor};
use kiln_engine::NodeError;

use super::config::Loss;
use crate::data::{Dataset, Features};
use crate::graph::{Graph, GraphBatch, Level, Part};
use crate::model::Trained;
use crate::nn::{Mode, Network};

/// Examples ready for batching: rows of features, or examples of a graph
/// (nodes or graphs) that the model reads with the edges.
pub(super) enum Examples {
    Rows {
        x: Features,
        y: Tensor,
    },
    Graph {
        graph: Box<Graph>,
        /// The whole graph, built once (node level).
        whole: Option<GraphBatch>,
        /// The examples of this part, by index in the graph.
        rows: Vec<u32>,
        /// Their targets.
        y: Tensor,
        device: Device,
    },
}

/// Targets as `loss` reads them: class indices, or a column of numbers.
pub(super) fn loss_target(values: &Tensor, loss: Loss) -> Result<Tensor, NodeError> {
    let n = values.dim(0)?;
    Ok(match loss {
        Loss::CrossEntropy => values.to_dtype(DType::U32)?,
        Loss::Mse | Loss::Bce => values.to_dtype(DType::F32)?.reshape((n, 1))?,
    })
}

impl Examples {
    pub(super) fn rows(data: &Dataset, loss: Loss) -> Result<Self, NodeError> {
        let target = data
            .target
            .as_ref()
            .ok_or_else(|| NodeError::new("the data has no target"))?;
        if data.is_empty() {
            return Err(NodeError::new("the data has no examples"));
        }
        Ok(Examples::Rows {
            x: match &data.features {
                Features::Dense(t) => Features::Dense(t.to_dtype(DType::F32)?),
                sparse => sparse.clone(),
            },
            y: loss_target(&target.values, loss)?,
        })
    }

    /// The examples in `part` of `graph`; `None` when there are none.
    pub(super) fn graph(
        graph: &Graph,
        part: Part,
        loss: Loss,
        device: &Device,
    ) -> Result<Option<Self>, NodeError> {
        let rows = graph.part(part);
        if rows.is_empty() {
            return Ok(None);
        }
        let d = graph.targets_of(&rows)?;
        let target = d
            .target
            .as_ref()
            .ok_or_else(|| NodeError::new("the graph has no target"))?;
        let whole = match graph.level {
            Level::Node => Some(graph.batch(&[], device)?),
            Level::Graph => None,
        };
        Ok(Some(Examples::Graph {
            graph: Box::new(graph.clone()),
            whole,
            y: loss_target(&target.values, loss)?.to_device(device)?,
            rows,
            device: device.clone(),
        }))
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Examples::Rows { x, .. } => x.len(),
            Examples::Graph { rows, .. } => rows.len(),
        }
    }

    /// The features of a graph's examples when they are its nodes (what a
    /// model that reads no edges sees).
    pub(super) fn node_features(&self) -> Result<Tensor, NodeError> {
        match self {
            Examples::Graph { graph, rows, .. } if graph.level == Level::Node => {
                let ids = Tensor::from_slice(rows, rows.len(), graph.x.device())?;
                Ok(graph.x.index_select(&ids, 0)?)
            }
            Examples::Graph { .. } => Err(NodeError::new(
                "this model scores nodes from their own features; to classify whole graphs use `model.gnn`",
            )),
            Examples::Rows { x, .. } => x.tensor(),
        }
    }

    pub(super) fn targets(&self) -> &Tensor {
        match self {
            Examples::Rows { y, .. } | Examples::Graph { y, .. } => y,
        }
    }

    /// Outputs and targets of the examples at `positions` (into this set).
    pub(super) fn forward(
        &self,
        net: &dyn Network,
        positions: &[u32],
        mode: &mut Mode<'_>,
    ) -> Result<(Tensor, Tensor), NodeError> {
        let pick = Tensor::from_slice(positions, positions.len(), self.targets().device())?;
        let y = self.targets().index_select(&pick, 0)?;
        let out = match self {
            // Sparse rows are spelled out a batch at a time.
            Examples::Rows { x, .. } => match x {
                Features::Dense(x) => net.forward(&x.index_select(&pick, 0)?, mode)?,
                Features::Sparse(_) => {
                    let batch = x.select(positions)?.tensor()?.to_device(pick.device())?;
                    net.forward(&batch, mode)?
                }
            },
            Examples::Graph {
                graph,
                whole,
                rows,
                device,
                ..
            } => {
                let ids: Vec<u32> = positions.iter().map(|&p| rows[p as usize]).collect();
                match whole {
                    Some(all) => {
                        let ids = Tensor::from_slice(&ids, ids.len(), device)?;
                        net.forward_graph(all, mode)?.index_select(&ids, 0)?
                    }
                    None => net.forward_graph(&graph.batch(&ids, device)?, mode)?,
                }
            }
        };
        Ok((out, y))
    }

    /// Outputs for every example (inference mode).
    pub(super) fn outputs(&self, trained: &Trained) -> Result<Tensor, NodeError> {
        match self {
            Examples::Rows { x, .. } => trained.predict(x, 1024),
            Examples::Graph {
                graph,
                rows,
                device,
                ..
            } => Ok(trained.predict_graph(graph, rows, device)?),
        }
    }
}
