//! `train.supervised`: fits a model to a dataset's target.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};
use kiln_engine::{
    InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    SettingSpec, SettingType, Settings, Value, ValueType,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::optim::{Optimizer, Rule};
use super::schedule::Schedule;
use crate::data::Dataset;
use crate::graph::{Graph, GraphBatch, Level, Part};
use crate::nn::batch_norm::is_statistic;
use crate::nn::pruning::{magnitude_masks, prunable, GradualSchedule};
use crate::nn::{Dims, Mode, ModelValue, Network, Task, Trained};

/// Trains a model with mini-batch gradient descent.
pub struct Supervised;

const DOC: &str = "Trains a model on `train`'s target with mini-batch gradient descent, and scores it on `valid` after every epoch.
Shuffling, dropout and initial weights follow the node's seed, so a run is repeatable to the bit.
Early stopping (`patience`) watches `monitor`; with `restore_best` the model of the best epoch is kept.
Sizes come from the data: the features' shape in, the number of classes (or 1 for regression) out.";

impl NodeKind for Supervised {
    fn spec(&self) -> KindSpec {
        let positive = || SettingType::Float {
            min: Some((0.0, true)),
            max: None,
        };
        let non_negative = || SettingType::Float {
            min: Some((0.0, false)),
            max: None,
        };
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
            settings: vec![
                SettingSpec::with_default("loss", SettingType::Choice(&["auto", "cross_entropy", "mse", "bce_with_logits"]), json!("auto"), "`auto`: cross-entropy for classes, MSE for numbers; `bce_with_logits` for two classes"),
                SettingSpec::with_default("optimizer", SettingType::Choice(&["sgd", "adam", "adamw"]), json!("adamw"), "the update rule"),
                SettingSpec::with_default("lr", positive(), json!(0.001), "the (peak) learning rate"),
                SettingSpec::with_default("momentum", SettingType::Float { min: Some((0.0, false)), max: Some((1.0, true)) }, json!(0.9), "SGD momentum"),
                SettingSpec::optional("weight_decay", non_negative(), "weight decay (default 0.01 for adamw, 0 otherwise)"),
                SettingSpec::with_default("epochs", SettingType::Int { min: Some(1), max: Some(100_000) }, json!(10), "passes over the training data"),
                SettingSpec::with_default("batch_size", SettingType::Int { min: Some(1), max: Some(1 << 20) }, json!(32), "examples per step"),
                SettingSpec::with_default("shuffle", SettingType::Bool, json!(true), "reshuffle the training data every epoch (from the node's seed)"),
                SettingSpec::with_default("schedule", SettingType::Choice(&["constant", "step", "cosine"]), json!("constant"), "how the learning rate changes over the run"),
                SettingSpec::with_default("warmup", SettingType::int_min(0), json!(0), "epochs of linear warmup from 0 to `lr`"),
                SettingSpec::with_default("step_size", SettingType::int_min(1), json!(10), "`step` schedule: epochs between decays"),
                SettingSpec::with_default("gamma", SettingType::Float { min: Some((0.0, true)), max: Some((1.0, false)) }, json!(0.1), "`step` schedule: decay factor"),
                SettingSpec::with_default("min_lr", non_negative(), json!(0.0), "`cosine` schedule: the final learning rate"),
                SettingSpec::optional("clip_norm", positive(), "clip gradients to this global norm"),
                SettingSpec::optional("patience", SettingType::int_min(1), "stop after this many epochs without improvement of `monitor` (needs `valid`)"),
                SettingSpec::with_default("monitor", SettingType::Choice(&["valid_loss", "valid_accuracy"]), json!("valid_loss"), "the score early stopping and `restore_best` watch"),
                SettingSpec::with_default("restore_best", SettingType::Bool, json!(true), "keep the model of the best epoch (with `valid`)"),
            ],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let cfg = Config::read(ctx.settings())?;
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
            let loss = Loss::choose(&cfg.loss, &task)?;
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
            let loss = Loss::choose(&cfg.loss, &task)?;
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
        let loss = Loss::choose(&cfg.loss, &task)?;
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
        let outcome = fit(
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
        )?;
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

struct Config {
    loss: String,
    rule: Rule,
    lr: f64,
    weight_decay: f64,
    epochs: usize,
    batch_size: usize,
    shuffle: bool,
    schedule: String,
    warmup: usize,
    step_size: usize,
    gamma: f64,
    min_lr: f64,
    clip_norm: Option<f64>,
    patience: Option<usize>,
    monitor: String,
    restore_best: bool,
}

impl Config {
    fn read(s: &Settings) -> Result<Self, NodeError> {
        let optimizer = s.str("optimizer")?;
        let rule = match optimizer {
            "sgd" => Rule::Sgd {
                momentum: s.float("momentum")?,
            },
            "adam" => Rule::Adam,
            _ => Rule::AdamW,
        };
        let default_decay = if optimizer == "adamw" { 0.01 } else { 0.0 };
        Ok(Config {
            loss: s.str("loss")?.to_string(),
            rule,
            lr: s.float("lr")?,
            weight_decay: s
                .get("weight_decay")
                .and_then(Json::as_f64)
                .unwrap_or(default_decay),
            epochs: s.usize("epochs")?,
            batch_size: s.usize("batch_size")?,
            shuffle: s.bool("shuffle")?,
            schedule: s.str("schedule")?.to_string(),
            warmup: s.usize("warmup")?,
            step_size: s.usize("step_size")?,
            gamma: s.float("gamma")?,
            min_lr: s.float("min_lr")?,
            clip_norm: s.get("clip_norm").and_then(Json::as_f64),
            patience: s.get("patience").and_then(Json::as_u64).map(|p| p as usize),
            monitor: s.str("monitor")?.to_string(),
            restore_best: s.bool("restore_best")?,
        })
    }
}

/// What the target is, from a dataset.
pub fn task_of(data: &Dataset, port: &str) -> Result<Task, NodeError> {
    let target = data.target.as_ref().ok_or_else(|| {
        NodeError::new(format!(
            "`{port}` has no target: name the target column on its source (`target:`)"
        ))
    })?;
    Ok(Task {
        kind: if target.is_classification() {
            "classification"
        } else {
            "regression"
        }
        .into(),
        target: target.name.clone(),
        labels: target.labels.clone(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    CrossEntropy,
    Mse,
    Bce,
}

impl Loss {
    fn choose(name: &str, task: &Task) -> Result<Loss, NodeError> {
        let classes = task.is_classification();
        match (name, classes) {
            ("auto", true) | ("cross_entropy", true) => Ok(Loss::CrossEntropy),
            ("auto", false) | ("mse", false) => Ok(Loss::Mse),
            ("bce_with_logits", true) => Ok(Loss::Bce),
            (loss, true) => Err(NodeError::new(format!(
                "`loss: {loss}` needs a numeric target, but `{}` holds classes: use `cross_entropy`",
                task.target
            ))),
            (loss, false) => Err(NodeError::new(format!(
                "`loss: {loss}` needs class labels, but `{}` holds numbers: use `mse`",
                task.target
            ))),
        }
    }

    /// The mean loss of a batch.
    fn compute(self, out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, y),
            Loss::Mse => candle_nn::loss::mse(out, y),
            // Stable form: max(x, 0) - x·y + log(1 + e^-|x|).
            Loss::Bce => (out.relu()? - (out * y)?)?
                .add(&(out.abs()?.neg()?.exp()? + 1.0)?.log()?)?
                .mean_all(),
        }
    }
}

/// Examples ready for batching: rows of features, or examples of a graph
/// (nodes or graphs) that the model reads with the edges.
enum Examples {
    Rows {
        x: Tensor,
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
fn loss_target(values: &Tensor, loss: Loss) -> Result<Tensor, NodeError> {
    let n = values.dim(0)?;
    Ok(match loss {
        Loss::CrossEntropy => values.to_dtype(DType::U32)?,
        Loss::Mse | Loss::Bce => values.to_dtype(DType::F32)?.reshape((n, 1))?,
    })
}

impl Examples {
    fn rows(data: &Dataset, loss: Loss) -> Result<Self, NodeError> {
        let target = data
            .target
            .as_ref()
            .ok_or_else(|| NodeError::new("the data has no target"))?;
        if data.is_empty() {
            return Err(NodeError::new("the data has no examples"));
        }
        Ok(Examples::Rows {
            x: data.features.to_dtype(DType::F32)?,
            y: loss_target(&target.values, loss)?,
        })
    }

    /// The examples in `part` of `graph`; `None` when there are none.
    fn graph(
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

    fn len(&self) -> usize {
        match self {
            Examples::Rows { x, .. } => x.dims()[0],
            Examples::Graph { rows, .. } => rows.len(),
        }
    }

    fn targets(&self) -> &Tensor {
        match self {
            Examples::Rows { y, .. } | Examples::Graph { y, .. } => y,
        }
    }

    /// Outputs and targets of the examples at `positions` (into this set).
    fn forward(
        &self,
        net: &dyn Network,
        positions: &[u32],
        mode: &mut Mode<'_>,
    ) -> Result<(Tensor, Tensor), NodeError> {
        let pick = Tensor::from_slice(positions, positions.len(), self.targets().device())?;
        let y = self.targets().index_select(&pick, 0)?;
        let out = match self {
            Examples::Rows { x, .. } => net.forward(&x.index_select(&pick, 0)?, mode)?,
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
    fn outputs(&self, trained: &Trained) -> Result<Tensor, NodeError> {
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

struct Outcome {
    history: Json,
    metrics: Json,
    best_weights: Option<BTreeMap<String, Tensor>>,
    /// The masks a gradual pruning ramp ended with.
    masks: Option<BTreeMap<String, Tensor>>,
}

/// The pruning a model brings to training: masks to hold, and perhaps a
/// ramp to raise its sparsity along.
struct Pruning<'a> {
    masks: &'a BTreeMap<String, Tensor>,
    schedule: Option<&'a GradualSchedule>,
}

/// Follows a gradual pruning ramp: before each epoch of the ramp, masks the
/// smallest weights up to that epoch's sparsity.
struct Ramp<'a> {
    schedule: &'a GradualSchedule,
    names: Vec<String>,
    masks: BTreeMap<String, Tensor>,
}

impl Ramp<'_> {
    /// Prunes to the sparsity of `epoch`, in the optimizer's masks and the
    /// variables themselves; `vars` are the optimizer's variables by name.
    fn advance(
        &mut self,
        epoch: usize,
        epochs: usize,
        vars: &[(String, Var)],
        opt: &mut Optimizer,
    ) -> Result<f64, NodeError> {
        let sparsity = self.schedule.sparsity_at(epoch, epochs);
        let weights: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .collect();
        let next = magnitude_masks(
            &weights,
            &self.masks,
            &self.names,
            sparsity,
            self.schedule.global,
        )?;
        for (name, mask) in next {
            let w = &weights[&name];
            let mask = Tensor::from_vec(mask, w.shape(), w.device())?.to_dtype(w.dtype())?;
            self.masks.insert(name, mask);
        }
        let masks = vars
            .iter()
            .map(|(name, _)| self.masks.get(name).cloned())
            .collect();
        opt.set_masks(masks)?;
        Ok(sparsity)
    }
}

fn fit(
    ctx: &RunContext<'_>,
    cfg: &Config,
    trained: &Trained,
    pruning: Pruning<'_>,
    loss: Loss,
    train: &Examples,
    valid: Option<&Examples>,
) -> Result<Outcome, NodeError> {
    let device = ctx.device();
    let named: Vec<(String, Var)> = trained
        .vars
        .sorted_vars()
        .into_iter()
        .filter(|(name, _)| !is_statistic(name))
        .collect();
    let vars = named
        .iter()
        .map(|(name, v)| {
            let mask = pruning
                .masks
                .get(name)
                .map(|m| m.to_device(device)?.to_dtype(v.dtype()))
                .transpose()?;
            Ok((v.clone(), mask))
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let mut ramp = match pruning.schedule {
        Some(schedule) => {
            let weights: BTreeMap<String, Tensor> = named
                .iter()
                .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
                .collect();
            let names = prunable(&weights, &schedule.exclude);
            let masks = vars
                .iter()
                .zip(&named)
                .filter_map(|((_, m), (name, _))| Some((name.clone(), m.clone()?)))
                .collect();
            Some(Ramp {
                schedule,
                names,
                masks,
            })
        }
        None => None,
    };
    let ramp_end = pruning.schedule.map_or(0, |s| s.ramp(cfg.epochs));
    let mut opt = Optimizer::new(cfg.rule, cfg.weight_decay, vars);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let schedule = Schedule {
        base: cfg.lr,
        kind: cfg.schedule.clone(),
        warmup: cfg.warmup * steps_per_epoch,
        step_size: cfg.step_size * steps_per_epoch,
        gamma: cfg.gamma,
        min_lr: cfg.min_lr,
        total: cfg.epochs * steps_per_epoch,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed() ^ 0x7261_696e);
    let mut order: Vec<u32> = (0..train.len() as u32).collect();
    let mut history = History::default();
    let (mut best, mut best_epoch, mut best_weights) = (None::<f64>, 0usize, None);
    let higher_is_better = cfg.monitor == "valid_accuracy";
    let mut step = 0usize;
    let mut stopped_early = false;
    for epoch in 1..=cfg.epochs {
        if cfg.shuffle {
            order.shuffle(&mut rng);
        }
        if let Some(ramp) = ramp.as_mut().filter(|_| epoch <= ramp_end) {
            let sparsity = ramp.advance(epoch, cfg.epochs, &named, &mut opt)?;
            history.sparsity.push(sparsity);
        }
        let (mut total, mut lr) = (0.0f64, cfg.lr);
        for (b, rows) in order.chunks(cfg.batch_size).enumerate() {
            ctx.check_cancelled()?;
            lr = schedule.at(step);
            let (out, yb) = train.forward(
                trained.net.as_ref(),
                rows,
                &mut Mode {
                    train: true,
                    rng: Some(&mut rng),
                },
            )?;
            let l = loss.compute(&out, &yb)?;
            let value = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(NodeError::new(format!(
                    "training diverged: the loss became {value} at epoch {epoch}, batch {} (learning rate {lr}); \
                     lower `lr` or set `clip_norm`",
                    b + 1
                )));
            }
            total += value * rows.len() as f64;
            let grads = l.backward()?;
            let scale = match cfg.clip_norm {
                Some(max) => {
                    let norm = opt.grad_norm(&grads)?;
                    if norm > max {
                        max / norm
                    } else {
                        1.0
                    }
                }
                None => 1.0,
            };
            opt.step(&grads, lr, scale)?;
            step += 1;
        }
        let train_loss = total / train.len() as f64;
        let scores = valid.map(|v| evaluate(trained, loss, v)).transpose()?;
        history.push(epoch, lr, train_loss, scores);
        let line = match scores {
            Some((vl, Some(acc))) => format!(
                "epoch {epoch}/{} loss {train_loss:.4} valid loss {vl:.4} accuracy {acc:.4}",
                cfg.epochs
            ),
            Some((vl, None)) => format!(
                "epoch {epoch}/{} loss {train_loss:.4} valid loss {vl:.4}",
                cfg.epochs
            ),
            None => format!("epoch {epoch}/{} loss {train_loss:.4}", cfg.epochs),
        };
        tracing::info!("{}: {line}", ctx.node_id());
        ctx.progress(epoch as u64, cfg.epochs as u64, line);
        // During a pruning ramp the model is not yet the one that is kept:
        // the best epoch and patience count from the final sparsity on.
        let settled = epoch >= ramp_end;
        if let Some((valid_loss, accuracy)) = scores.filter(|_| settled) {
            let watched = if higher_is_better {
                accuracy.ok_or_else(|| {
                    NodeError::new("`monitor: valid_accuracy` needs a classification target")
                })?
            } else {
                valid_loss
            };
            let improved = best.is_none_or(|b| {
                if higher_is_better {
                    watched > b
                } else {
                    watched < b
                }
            });
            if improved {
                best = Some(watched);
                best_epoch = epoch;
                if cfg.restore_best {
                    best_weights = Some(trained.weights()?);
                }
            } else if cfg.patience.is_some_and(|p| epoch - best_epoch >= p) {
                stopped_early = true;
                break;
            }
        }
    }
    let last = history.epochs.len();
    let metrics = json!({
        "train_loss": history.train_loss.last(),
        "valid_loss": history.valid_loss.last(),
        "valid_accuracy": history.valid_accuracy.last(),
        "best_epoch": if best.is_some() { Some(best_epoch) } else { None },
        "best": best,
        "epochs_run": last,
        "stopped_early": stopped_early,
    });
    Ok(Outcome {
        history: history.to_json(),
        metrics,
        best_weights,
        masks: ramp
            .map(|r| {
                r.masks
                    .into_iter()
                    .map(|(k, m)| Ok((k, m.to_dtype(DType::U8)?)))
                    .collect::<Result<_, NodeError>>()
            })
            .transpose()?,
    })
}

/// Validation loss and, for classes, accuracy.
fn evaluate(
    trained: &Trained,
    loss: Loss,
    data: &Examples,
) -> Result<(f64, Option<f64>), NodeError> {
    let out = data.outputs(trained)?;
    let y = data.targets();
    let l = loss
        .compute(&out, y)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let accuracy = match loss {
        Loss::CrossEntropy => {
            let pred = out.argmax(D::Minus1)?;
            Some(
                pred.eq(y)?
                    .to_dtype(DType::F64)?
                    .mean_all()?
                    .to_scalar::<f64>()?,
            )
        }
        Loss::Bce => {
            let pred = out.gt(0.0)?.to_dtype(DType::F32)?;
            Some(
                pred.eq(y)?
                    .to_dtype(DType::F64)?
                    .mean_all()?
                    .to_scalar::<f64>()?,
            )
        }
        Loss::Mse => None,
    };
    Ok((l, accuracy))
}

#[derive(Default)]
struct History {
    epochs: Vec<usize>,
    lr: Vec<f64>,
    train_loss: Vec<f64>,
    valid_loss: Vec<f64>,
    valid_accuracy: Vec<f64>,
    /// Sparsity per epoch of a pruning ramp.
    sparsity: Vec<f64>,
}

impl History {
    fn push(&mut self, epoch: usize, lr: f64, train_loss: f64, valid: Option<(f64, Option<f64>)>) {
        self.epochs.push(epoch);
        self.lr.push(lr);
        self.train_loss.push(train_loss);
        if let Some((l, acc)) = valid {
            self.valid_loss.push(l);
            if let Some(a) = acc {
                self.valid_accuracy.push(a);
            }
        }
    }

    fn to_json(&self) -> Json {
        let mut out = json!({
            "epoch": self.epochs,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "valid_accuracy": self.valid_accuracy,
        });
        if !self.sparsity.is_empty() {
            out["sparsity"] = json!(self.sparsity);
        }
        out
    }
}
