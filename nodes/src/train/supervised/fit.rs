//! The training loop: epochs of shuffled mini-batches, the learning-rate
//! schedule, gradient clipping, the pruning ramp, scoring on `valid`, early
//! stopping and the best epoch's weights.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var, D};
use kiln_engine::{NodeError, RunContext};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::super::optim::Optimizer;
use super::super::schedule::Schedule;
use super::config::{Loss, Monitor, SupervisedSettings};
use super::examples::Examples;
use super::history::History;
use super::ramp::{Pruning, Ramp};
use crate::model::Trained;
use crate::nn::batch_norm::is_statistic;
use crate::nn::pruning::prunable;
use crate::nn::Mode;

pub(super) struct Outcome {
    pub(super) history: Json,
    pub(super) metrics: Json,
    pub(super) best_weights: Option<BTreeMap<String, Tensor>>,
    /// The masks a gradual pruning ramp ended with.
    pub(super) masks: Option<BTreeMap<String, Tensor>>,
}

pub(super) fn fit(
    ctx: &RunContext<'_>,
    cfg: &SupervisedSettings,
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
    let mut opt = Optimizer::new(cfg.rule(), cfg.weight_decay(), vars);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let schedule = Schedule {
        base: cfg.lr,
        kind: cfg.schedule,
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
    let higher_is_better = cfg.monitor == Monitor::ValidAccuracy;
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
        ctx.progress_with(
            epoch as u64,
            cfg.epochs as u64,
            line,
            &[
                ("train_loss", Some(train_loss)),
                ("valid_loss", scores.map(|s| s.0)),
                ("valid_accuracy", scores.and_then(|s| s.1)),
                ("lr", Some(lr)),
            ],
        );
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
pub(super) fn evaluate(
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
