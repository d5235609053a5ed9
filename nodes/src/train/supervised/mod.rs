//! `train.supervised`: fits a model to a dataset's target. This file is the
//! kind (ports, settings, reading its inputs, writing its outputs); the
//! loop and its parts are beside it: [`config`] (settings, task, loss),
//! [`examples`] (rows or a graph's examples), [`ramp`] (pruning during
//! training), [`fit`] (the loop) and [`history`].

mod config;
mod exact;
mod examples;
mod fit;
mod history;
mod ramp;

pub use config::task_of;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};

use crate::data::Dataset;
use crate::graph::{Graph, Part};
use crate::model::ModelValue;
use crate::nn::Dims;
use config::{Loss, SupervisedSettings};
use exact::{fit_exact, Solver};
use examples::Examples;
use fit::fit;
use ramp::Pruning;

/// Trains a model with mini-batch gradient descent.
pub struct Supervised;

const DOC: &str = "Trains a model on `train`'s target with mini-batch gradient descent, and scores it on `valid` after every epoch (`model.linear` and `model.naive_bayes` are fitted exactly instead: L-BFGS to convergence, or counts; the gradient-descent settings do not apply to them).
Shuffling, dropout and initial weights follow the node's seed, so a run is repeatable to the bit.
Early stopping (`patience`) watches `monitor`; with `restore_best` the model of the best epoch is kept.
Sizes come from the data: the features' shape in, the number of classes (or 1 for regression) out.";

impl NodeKind for Supervised {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "train.supervised",
            version: 3,
            doc: DOC,
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "the model to train (untrained, or trained to fine-tune)"),
                InputSpec::required("train", ValueType::Dataset, "training examples with a target (of a graph: its train part)").or(&[ValueType::Graph]),
                InputSpec::optional("valid", ValueType::Dataset, "examples scored after every epoch (of a graph: its valid part, by default `train`'s)").or(&[ValueType::Graph]),
            ],
            outputs: vec![
                OutputSpec::new("model", ValueType::Model, "the trained model"),
                OutputSpec::new("history", ValueType::Report, "per-epoch learning rate, losses and accuracy"),
                OutputSpec::new("metrics", ValueType::Metrics, "final losses, accuracy, best and last epoch"),
            ],
            settings: SupervisedSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let cfg: SupervisedSettings = ctx.settings().read()?;
        let model = ModelValue::from_value(ctx.input("model")?)?;
        if !model.quantized.is_empty() {
            return Err(NodeError::new(
                "the model is quantized and can't be trained further: train (or fine-tune) first, then quantize",
            ));
        }
        let device = ctx.device();
        let train_value = ctx.input("train")?;
        let (task, input, vocab, train_set, valid_set) = if train_value.ty() == ValueType::Graph {
            let graph = Graph::from_value(train_value)?;
            let task = task_of(&graph.targets_of(&[])?, "train")?;
            let loss = Loss::choose(cfg.loss, &task)?;
            // The valid part of the `valid` graph, or else of `train`'s.
            let valid_graph = ctx.opt_input("valid").map(Graph::from_value).transpose()?;
            let valid_set = Examples::graph(
                valid_graph.as_ref().unwrap_or(&graph),
                Part::Valid,
                loss,
                device,
            )?;
            if valid_graph.is_some() && valid_set.is_none() {
                return Err(NodeError::new(
                    "`valid` is a graph with no valid examples: split it with `preprocess.graph_split` (`valid` > 0)",
                ));
            }
            let input = graph.x.dims()[1..].to_vec();
            let train_set = Examples::graph(&graph, Part::Train, loss, device)?
                .ok_or_else(|| NodeError::new("the graph has no training examples"))?;
            (task, input, None, train_set, valid_set)
        } else {
            let train = Dataset::from_value(train_value)?;
            let valid = ctx
                .opt_input("valid")
                .map(Dataset::from_value)
                .transpose()?;
            let task = task_of(&train, "train")?;
            let loss = Loss::choose(cfg.loss, &task)?;
            if let Some(v) = &valid {
                if v.features.dims()[1..] != train.features.dims()[1..] {
                    return Err(NodeError::new(format!(
                        "`valid` has examples of shape {:?}, `train` {:?}",
                        &v.features.dims()[1..],
                        &train.features.dims()[1..]
                    )));
                }
            }
            let valid_set = valid
                .as_ref()
                .map(|v| Examples::rows(v, loss))
                .transpose()?;
            let input = train.features.dims()[1..].to_vec();
            let vocab = train.categories.get(crate::data::TOKENS).map(Vec::len);
            (task, input, vocab, Examples::rows(&train, loss)?, valid_set)
        };
        if cfg.patience.is_some() && valid_set.is_none() {
            return Err(NodeError::new(
                "`patience` needs validation examples to watch (a `valid` input)",
            ));
        }
        let loss = Loss::choose(cfg.loss, &task)?;
        let output = match loss {
            Loss::CrossEntropy => task.labels.as_ref().map_or(0, Vec::len),
            Loss::Bce | Loss::Mse => 1,
        };
        if loss == Loss::Bce && output != 1 && task.labels.as_ref().is_some_and(|l| l.len() != 2) {
            return Err(NodeError::new(
                "`loss: bce_with_logits` needs a target with exactly two classes",
            ));
        }
        let dims = Dims {
            input,
            output,
            vocab,
        };
        if let Some(d) = &model.dims {
            if d != &dims {
                return Err(NodeError::new(format!(
                    "the model was built for examples of shape {:?} and {} outputs, but this data has {:?} and {}",
                    d.input, d.output, dims.input, dims.output
                )));
            }
        }
        let trained = model.instantiate(&dims, ctx.seed(), device)?;
        let outcome = match Solver::of(&model.arch)? {
            Some(solver) => {
                fit_exact(ctx, &solver, &trained, loss, &train_set, valid_set.as_ref())?
            }
            None => fit(
                ctx,
                &cfg,
                &trained,
                Pruning {
                    masks: &model.masks,
                    schedule: model.prune_schedule.as_ref(),
                },
                loss,
                &train_set,
                valid_set.as_ref(),
            )?,
        };
        let weights = match (&outcome.best_weights, cfg.restore_best) {
            (Some(best), true) => best.clone(),
            _ => trained.weights()?,
        };
        let fitted = ModelValue {
            arch: model.arch,
            dims: Some(dims),
            task: Some(task),
            weights,
            masks: outcome.masks.unwrap_or(model.masks),
            quantized: Default::default(),
            prune_schedule: None,
        };
        Ok(vec![
            (PortName::new_static("model"), fitted.into_value()),
            (
                PortName::new_static("history"),
                Value::from_json(ValueType::Report, outcome.history),
            ),
            (
                PortName::new_static("metrics"),
                Value::from_json(ValueType::Metrics, outcome.metrics),
            ),
        ])
    }
}
