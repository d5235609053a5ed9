//! A model value built into its network: variables drawn from the node's
//! seed or taken from the value's weights, quantized weights decoded, the
//! architecture's network around them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use kiln_engine::NodeError;

use super::value::ModelValue;
use crate::data::Features;
use crate::nn::dense::Quantized;
use crate::nn::init::{var_builder, SeededVars};
use crate::nn::{Dims, Network, Task};

impl ModelValue {
    /// Builds the network for `dims` on `device`: new variables drawn from
    /// `seed`, the model's own weights where it has them.
    pub fn instantiate(
        &self,
        dims: &Dims,
        seed: u64,
        device: &Device,
    ) -> Result<Trained, NodeError> {
        let initial: HashMap<String, Tensor> = self
            .weights
            .iter()
            .filter(|(k, _)| !self.quantized.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut quantized = Quantized::new();
        for (name, q) in &self.quantized {
            let bytes = self.weights.get(name).ok_or_else(|| {
                NodeError::new(format!(
                    "the model lists `{name}` as quantized but holds no bytes for it"
                ))
            })?;
            quantized.insert(name.clone(), Arc::new(q.decode(bytes, device)?));
        }
        let vars = Arc::new(SeededVars::new(seed, initial));
        let vb = var_builder(vars.clone(), device);
        let net = super::arch::build(&self.arch, dims, vb, &quantized)?;
        Ok(Trained { net, vars })
    }

    /// A model of `arch` with random weights, as if trained on examples of
    /// shape `input` into 3 classes (for tests).
    #[cfg(test)]
    pub fn random(arch: serde_json::Value, input: &[usize]) -> ModelValue {
        let dims = Dims {
            input: input.to_vec(),
            output: 3,
            vocab: None,
        };
        let vars = Arc::new(SeededVars::new(3, HashMap::new()));
        super::arch::build(
            &arch,
            &dims,
            var_builder(vars.clone(), &Device::Cpu),
            &Quantized::new(),
        )
        .expect("a valid architecture");
        ModelValue {
            arch,
            dims: Some(dims),
            task: Some(Task {
                kind: "classification".into(),
                target: "y".into(),
                labels: None,
            }),
            weights: vars
                .sorted_vars()
                .into_iter()
                .map(|(k, v)| (k, v.as_tensor().clone()))
                .collect(),
            masks: BTreeMap::new(),
            quantized: BTreeMap::new(),
            prune_schedule: None,
        }
    }

    /// Builds a trained model for inference.
    pub fn load(&self, device: &Device) -> Result<(Trained, Dims, Task), NodeError> {
        let (Some(dims), Some(task)) = (&self.dims, &self.task) else {
            return Err(NodeError::new(format!(
                "the {} model is not trained: connect it through `train.supervised` first",
                self.arch_type()
            )));
        };
        let trained = self.instantiate(dims, 0, device)?;
        let expected = trained.vars.sorted_vars().len() + self.quantized.len();
        if expected != self.weights.len() {
            return Err(NodeError::new(format!(
                "the model holds {} weight tensors, but its architecture has {expected}",
                self.weights.len()
            )));
        }
        Ok((trained, dims.clone(), task.clone()))
    }
}

/// A built network and its variables.
pub struct Trained {
    /// The network.
    pub net: Box<dyn Network>,
    /// Its variables (weights and statistics).
    pub vars: Arc<SeededVars>,
}

impl Trained {
    /// A copy of the current weights, by name.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>, NodeError> {
        self.vars
            .sorted_vars()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().copy()?)))
            .collect()
    }

    /// Outputs for the examples `rows` of a graph (inference mode): one pass
    /// over the whole graph for nodes, batches of graphs for graphs.
    pub fn predict_graph(
        &self,
        graph: &crate::graph::Graph,
        rows: &[u32],
        device: &Device,
    ) -> Result<Tensor, NodeError> {
        if rows.is_empty() {
            return Err(NodeError::new("no examples to predict"));
        }
        match graph.level {
            crate::graph::Level::Node => {
                let all = self
                    .net
                    .forward_graph(&graph.batch(&[], device)?, &mut crate::nn::Mode::eval())?;
                Ok(all.index_select(&Tensor::from_slice(rows, rows.len(), device)?, 0)?)
            }
            crate::graph::Level::Graph => {
                let outs = rows
                    .chunks(256)
                    .map(|chunk| {
                        self.net
                            .forward_graph(
                                &graph.batch(chunk, device)?,
                                &mut crate::nn::Mode::eval(),
                            )
                            .map_err(NodeError::from)
                    })
                    .collect::<Result<Vec<_>, NodeError>>()?;
                Ok(Tensor::cat(&outs, 0)?)
            }
        }
    }

    /// Outputs for `x` in one pass (inference mode): dense features, or
    /// sparse rows through the network's sparse path.
    pub fn forward(&self, x: &Features) -> Result<Tensor, NodeError> {
        let mode = &mut crate::nn::Mode::eval();
        Ok(match x {
            Features::Dense(t) => self.net.forward(t, mode)?,
            Features::Sparse(rows) => self.net.forward_sparse(rows, mode)?,
        })
    }

    /// Outputs for `x`, in batches of `batch` (inference mode).
    pub fn predict(&self, x: &Features, batch: usize) -> Result<Tensor, NodeError> {
        let n = x.len();
        let mut outs = Vec::new();
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            outs.push(self.forward(&x.narrow(start, len)?)?);
            start += len;
        }
        if outs.is_empty() {
            return Err(NodeError::new("no examples to predict"));
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}
