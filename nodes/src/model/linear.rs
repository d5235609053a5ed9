//! `model.linear` (logistic and linear regression) and `model.naive_bayes`
//! (multinomial): one linear layer from the features to the outputs, fitted
//! exactly by `train.supervised` (L-BFGS for the penalised likelihood;
//! counts for naive Bayes, whose log-probabilities are a linear layer too).
//! Being a linear layer, both read sparse rows (tf-idf) as they are, and
//! compress, serve and compare like every other model.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, ValueType,
};
use serde::{Deserialize, Serialize};

use crate::graph::GraphBatch;
use crate::model::ModelValue;
use crate::nn::dense::{Dense, Quantized};
use crate::nn::{Dims, Mode, Network};
use crate::sparse::Csr;

/// A linear model's settings: the `model.linear` kind's, and what a model
/// value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct LinearConfig {
    /// L2 penalty on the weights, added to the mean loss as `l2/2·‖W‖²` (scikit-learn's `C` is `1 / (l2 · examples)`)
    #[setting(default = 0.0001, min = 0.0)]
    pub l2: f64,
    /// L1 penalty on the weights, added to the mean loss as `l1·Σ|w|`: weights it does not pay for become exactly zero (OWL-QN)
    #[setting(default = 0.0, min = 0.0)]
    pub l1: f64,
    /// at most this many L-BFGS iterations
    #[setting(default = 500, min = 1, max = 100_000)]
    pub max_iter: usize,
    /// converged when no entry of the objective's gradient exceeds this (scikit-learn's `tol`)
    #[setting(default = 0.0001, gt = 0.0)]
    pub tol: f64,
}

/// Multinomial naive Bayes's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct NaiveBayesConfig {
    /// additive (Laplace/Lidstone) smoothing of every feature's count per class
    #[setting(default = 1.0, gt = 0.0)]
    pub alpha: f64,
    /// learn class priors from the training data (else uniform)
    #[setting(default = true)]
    pub fit_prior: bool,
}

/// One linear layer, `head`, from the flattened features to the outputs
/// (weights `head.weight` `[outputs, features]`, `head.bias`).
pub struct Linear {
    head: Dense,
}

impl Linear {
    /// The layer for `dims`; a quantized `head.weight` runs quantized.
    pub fn new(dims: &Dims, vb: VarBuilder, quantized: &Quantized) -> Result<Self> {
        let inputs = dims.input.iter().product();
        Ok(Linear {
            head: Dense::new(inputs, dims.output, vb.pp("head"), quantized)?,
        })
    }
}

impl Network for Linear {
    fn forward(&self, x: &Tensor, _: &mut Mode<'_>) -> Result<Tensor> {
        self.head.forward(&x.flatten_from(1)?)
    }

    fn forward_sparse(&self, x: &Csr, _: &mut Mode<'_>) -> Result<Tensor> {
        let (w, b) = self.head.weight_and_bias()?;
        let (k, d) = w.dims2()?;
        if d != x.cols {
            candle_core::bail!("the model takes {d} features, but the rows have {}", x.cols);
        }
        let w = w.flatten_all()?.to_vec1::<f32>()?;
        let out = Tensor::from_vec(x.matmul_t(&w, k), (x.rows(), k), &candle_core::Device::Cpu)?;
        out.to_device(b.device())?.broadcast_add(&b)
    }

    /// Each node on its own features: the edges are not read (a baseline
    /// beside graph networks, on structural features).
    fn forward_graph(&self, batch: &GraphBatch, mode: &mut Mode<'_>) -> Result<Tensor> {
        if batch.pool.is_some() {
            candle_core::bail!(
                "a linear model scores nodes one by one; to classify whole graphs use `model.gnn`"
            );
        }
        self.forward(&batch.x, mode)
    }
}

/// The `model.linear` kind.
pub struct LinearKind;

impl NodeKind for LinearKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.linear",
            version: 1,
            doc: "A linear model: logistic regression (binary or multinomial) for classes, least squares for numbers, with an L2 penalty and optionally an L1 one (sparse weights).
`train.supervised` fits it exactly (L-BFGS to convergence — OWL-QN with `l1` — from zero weights, so the result does not depend on the seed) and ignores its gradient-descent settings. Reads sparse rows (`preprocess.tfidf`) without densifying them; on a graph, scores each node from its own features.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained model")],
            settings: LinearConfig::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model = ModelValue::configured("linear", &ctx.settings().read::<LinearConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}

/// The `model.naive_bayes` kind.
pub struct NaiveBayesKind;

impl NodeKind for NaiveBayesKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.naive_bayes",
            version: 1,
            doc: "Multinomial naive Bayes, for counts (word or n-gram counts from `preprocess.tfidf` with `use_idf: false, norm: none`; tf-idf weights work too): per class, smoothed log-frequencies of the features and the class's log prior.
`train.supervised` fits it in one pass over the data (its gradient-descent settings are ignored); features must not be negative. Its scores are a linear layer, so it compresses, serves and compares like any model.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained model")],
            settings: NaiveBayesConfig::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model =
            ModelValue::configured("naive_bayes", &ctx.settings().read::<NaiveBayesConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}
