//! Exact fitting for models that have it: a linear model's penalised
//! likelihood minimised by L-BFGS to convergence, naive Bayes's smoothed
//! counts in one pass. Both read the features as they are held (sparse
//! rows stay sparse) and start from nothing random, so the result does not
//! depend on the seed or the thread count.

use candle_core::{DType, Device, Tensor};
use kiln_engine::{NodeError, RunContext};
use serde_json::json;

use super::super::lbfgs::{minimize_l1, Stop};
use super::config::Loss;
use super::examples::Examples;
use super::fit::{evaluate, Outcome};
use super::history::History;
use crate::data::Features;
use crate::model::{Arch, LinearConfig, NaiveBayesConfig, Trained};

/// How a model is fitted exactly, if it is.
pub(super) enum Solver {
    Lbfgs(LinearConfig),
    Counts(NaiveBayesConfig),
}

impl Solver {
    /// The exact solver of `arch`, or `None` for gradient-descent models.
    pub(super) fn of(arch: &serde_json::Value) -> Result<Option<Solver>, NodeError> {
        Ok(match Arch::of(arch)? {
            Arch::Linear(cfg) => Some(Solver::Lbfgs(cfg)),
            Arch::NaiveBayes(cfg) => Some(Solver::Counts(cfg)),
            _ => None,
        })
    }
}

/// The features of `examples` as a matrix `[n, d]`: sparse rows as they
/// are, dense ones flattened into one f32 tensor on the CPU.
enum Design {
    Dense(Tensor),
    Sparse(std::sync::Arc<crate::sparse::Csr>),
}

impl Design {
    fn of(examples: &Examples) -> Result<Design, NodeError> {
        let features = match examples {
            Examples::Rows { x, .. } => x.clone(),
            Examples::Graph { .. } => Features::Dense(examples.node_features()?),
        };
        Ok(match features {
            Features::Dense(t) => Design::Dense(
                t.flatten_from(1)?
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .contiguous()?,
            ),
            Features::Sparse(rows) => Design::Sparse(rows),
        })
    }

    fn cols(&self) -> Result<usize, NodeError> {
        Ok(match self {
            Design::Dense(x) => x.dim(1)?,
            Design::Sparse(rows) => rows.cols,
        })
    }

    /// `X · Wᵀ`, `[n, k]` row-major, for `w` `[k, d]`.
    fn times_t(&self, w: &[f32], k: usize) -> Result<Vec<f32>, NodeError> {
        Ok(match self {
            Design::Dense(x) => {
                let w = Tensor::from_slice(w, (k, x.dim(1)?), &Device::Cpu)?;
                x.matmul(&w.t()?)?.flatten_all()?.to_vec1()?
            }
            Design::Sparse(rows) => rows.matmul_t(w, k),
        })
    }

    /// `Gᵀ · X`, `[k, d]` row-major, for `g` `[n, k]`.
    fn t_times(&self, g: &[f32], k: usize) -> Result<Vec<f32>, NodeError> {
        Ok(match self {
            Design::Dense(x) => {
                let g = Tensor::from_slice(g, (x.dim(0)?, k), &Device::Cpu)?;
                g.t()?.matmul(x)?.flatten_all()?.to_vec1()?
            }
            Design::Sparse(rows) => rows.t_matmul(g, k),
        })
    }

    fn any_negative(&self) -> Result<bool, NodeError> {
        Ok(match self {
            Design::Dense(x) => x.flatten_all()?.min(0)?.to_scalar::<f32>()? < 0.0,
            Design::Sparse(rows) => rows.values.iter().any(|&v| v < 0.0),
        })
    }
}

/// Fits `trained` (a linear layer `head`) exactly on `train`, scores
/// `valid`, and reports what the solver did.
pub(super) fn fit_exact(
    ctx: &RunContext<'_>,
    solver: &Solver,
    trained: &Trained,
    loss: Loss,
    train: &Examples,
    valid: Option<&Examples>,
) -> Result<Outcome, NodeError> {
    let x = Design::of(train)?;
    let y = train.targets().to_device(&Device::Cpu)?;
    let d = x.cols()?;
    let mut history = History::default();
    let (weight, bias, report) = match solver {
        Solver::Lbfgs(cfg) => {
            let k = match loss {
                Loss::CrossEntropy => trained_outputs(trained)?,
                Loss::Bce | Loss::Mse => 1,
            };
            let objective = Objective::new(loss, &y, k)?;
            let stop = Stop {
                max_iter: cfg.max_iter,
                tol: cfg.tol,
            };
            let l2 = cfg.l2;
            let start = vec![0.0; k * d + k];
            // The penalty covers the weights, not the biases after them.
            let l1 = if cfg.l1 > 0.0 {
                vec![cfg.l1; k * d]
            } else {
                Vec::new()
            };
            let m = minimize_l1(
                |p| objective.value_and_gradient(&x, p, d, l2),
                start,
                &l1,
                stop,
                |iteration, value| {
                    ctx.check_cancelled()?;
                    history.push(iteration, 0.0, value, None);
                    ctx.progress_with(
                        iteration as u64,
                        stop.max_iter as u64,
                        format!("iteration {iteration} objective {value:.6}"),
                        &[("objective", Some(value))],
                    );
                    Ok::<(), NodeError>(())
                },
            )?;
            tracing::info!(
                "{}: L-BFGS {} after {} iterations, objective {:.6}",
                ctx.node_id(),
                if m.converged { "converged" } else { "stopped" },
                m.iterations,
                m.value
            );
            let (w, b) = m.x.split_at(k * d);
            (
                w.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                b.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                json!({
                    "solver": "lbfgs",
                    "iterations": m.iterations,
                    "converged": m.converged,
                    "objective": m.value,
                }),
            )
        }
        Solver::Counts(cfg) => {
            if loss != Loss::CrossEntropy {
                return Err(NodeError::new(
                    "naive Bayes predicts classes: train it with `loss: auto` (or `cross_entropy`) on a class target",
                ));
            }
            if x.any_negative()? {
                return Err(NodeError::new(
                    "multinomial naive Bayes reads counts or frequencies, but the features have negative values: use `preprocess.tfidf` (or counts), not standardized features",
                ));
            }
            let k = trained_outputs(trained)?;
            let (w, b) = naive_bayes(&x, &y, k, d, cfg)?;
            (
                w,
                b,
                json!({ "solver": "counts", "iterations": 1, "converged": true }),
            )
        }
    };
    let k = bias.len();
    for (name, var) in trained.vars.sorted_vars() {
        let value = match name.as_str() {
            "head.weight" => Tensor::from_vec(weight.clone(), (k, d), &Device::Cpu)?,
            "head.bias" => Tensor::from_vec(bias.clone(), k, &Device::Cpu)?,
            other => {
                return Err(NodeError::new(format!(
                    "an exactly fitted model has only `head.weight` and `head.bias`, not `{other}`"
                )))
            }
        };
        var.set(&value.to_device(var.device())?)?;
    }
    let (train_loss, train_accuracy) = evaluate(trained, loss, train)?;
    let scores = valid.map(|v| evaluate(trained, loss, v)).transpose()?;
    let mut metrics = json!({
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "valid_loss": scores.map(|s| s.0),
        "valid_accuracy": scores.and_then(|s| s.1),
        "best_epoch": null,
        "best": null,
        "epochs_run": report["iterations"],
        "stopped_early": false,
    });
    if let (Some(m), Some(r)) = (metrics.as_object_mut(), report.as_object()) {
        m.extend(r.clone());
    }
    Ok(Outcome {
        history: history.to_json(),
        metrics,
        best_weights: None,
        masks: None,
    })
}

/// The number of outputs the built layer has.
fn trained_outputs(trained: &Trained) -> Result<usize, NodeError> {
    trained
        .vars
        .sorted_vars()
        .into_iter()
        .find(|(name, _)| name == "head.bias")
        .map(|(_, v)| v.dim(0))
        .transpose()?
        .ok_or_else(|| NodeError::new("the model has no `head.bias`"))
}

/// The data part of the objective: targets as each loss reads them.
enum Objective {
    /// Softmax cross-entropy over `k` classes.
    Classes { y: Vec<u32>, k: usize },
    /// Logistic loss on one logit, targets 0/1.
    Binary(Vec<f32>),
    /// Half the squared error.
    Squares(Vec<f32>),
}

impl Objective {
    fn new(loss: Loss, y: &Tensor, k: usize) -> Result<Objective, NodeError> {
        Ok(match loss {
            Loss::CrossEntropy => Objective::Classes {
                y: y.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?,
                k,
            },
            Loss::Bce => Objective::Binary(y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
            Loss::Mse => Objective::Squares(y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
        })
    }

    fn outputs(&self) -> usize {
        match self {
            Objective::Classes { k, .. } => *k,
            Objective::Binary(_) | Objective::Squares(_) => 1,
        }
    }

    /// `mean(loss) + l2/2·‖W‖²` and its gradient, at `p` = `[W (k×d), b (k)]`.
    fn value_and_gradient(
        &self,
        x: &Design,
        p: &[f64],
        d: usize,
        l2: f64,
    ) -> Result<(f64, Vec<f64>), NodeError> {
        let k = self.outputs();
        let (w, b) = p.split_at(k * d);
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let mut z = x.times_t(&w32, k)?;
        let n = z.len() / k.max(1);
        // z becomes the gradient of the summed loss with respect to z.
        let mut total = 0.0f64;
        match self {
            Objective::Classes { y, k } => {
                for (row, &label) in z.chunks_mut(*k).zip(y) {
                    let logits: Vec<f64> = row
                        .iter()
                        .zip(b)
                        .map(|(&v, &bias)| v as f64 + bias)
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                    let lse = max + sum.ln();
                    total += lse - logits[label as usize];
                    for (j, (g, l)) in row.iter_mut().zip(&logits).enumerate() {
                        let p = (l - lse).exp();
                        *g = (p - f64::from(j == label as usize)) as f32;
                    }
                }
            }
            Objective::Binary(y) => {
                for (g, &t) in z.iter_mut().zip(y) {
                    let v = *g as f64 + b[0];
                    // log(1 + e^v) − t·v, stably.
                    total += v.max(0.0) + (-v.abs()).exp().ln_1p() - t as f64 * v;
                    *g = (1.0 / (1.0 + (-v).exp()) - t as f64) as f32;
                }
            }
            Objective::Squares(y) => {
                for (g, &t) in z.iter_mut().zip(y) {
                    let r = *g as f64 + b[0] - t as f64;
                    total += 0.5 * r * r;
                    *g = r as f32;
                }
            }
        }
        let scale = 1.0 / n.max(1) as f64;
        let gw = x.t_times(&z, k)?;
        let mut grad = Vec::with_capacity(p.len());
        grad.extend(gw.iter().zip(w).map(|(&g, &wi)| g as f64 * scale + l2 * wi));
        for j in 0..k {
            grad.push(z.iter().skip(j).step_by(k).map(|&g| g as f64).sum::<f64>() * scale);
        }
        let penalty = 0.5 * l2 * w.iter().map(|v| v * v).sum::<f64>();
        Ok((total * scale + penalty, grad))
    }
}

/// Multinomial naive Bayes: per class, `log((count of each feature + α) /
/// (all counts + α·d))` and the log prior.
fn naive_bayes(
    x: &Design,
    y: &Tensor,
    k: usize,
    d: usize,
    cfg: &NaiveBayesConfig,
) -> Result<(Vec<f32>, Vec<f32>), NodeError> {
    let labels: Vec<u32> = y.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    let mut onehot = vec![0f32; labels.len() * k];
    let mut per_class = vec![0usize; k];
    for (i, &c) in labels.iter().enumerate() {
        onehot[i * k + c as usize] = 1.0;
        per_class[c as usize] += 1;
    }
    let counts = x.t_times(&onehot, k)?;
    let mut weight = Vec::with_capacity(k * d);
    for row in counts.chunks(d.max(1)) {
        let total: f64 = row.iter().map(|&c| c as f64).sum::<f64>() + cfg.alpha * d as f64;
        weight.extend(
            row.iter()
                .map(|&c| ((c as f64 + cfg.alpha) / total).ln() as f32),
        );
    }
    let n = labels.len().max(1) as f64;
    let bias = per_class
        .iter()
        .map(|&c| {
            if cfg.fit_prior {
                // A class absent from the data gets a tiny prior, not −∞.
                ((c as f64).max(1e-3) / n).ln() as f32
            } else {
                -(k as f64).ln() as f32
            }
        })
        .collect();
    Ok((weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;
    use crate::train::lbfgs::minimize;

    /// Rows of three features, some zero, as both designs.
    fn designs() -> (Design, Design) {
        let rows = vec![
            vec![(0, 1.0), (2, 0.5)],
            vec![(1, 2.0)],
            vec![(0, -1.0), (1, 0.5), (2, 1.5)],
            vec![(2, -2.0)],
        ];
        let csr = Csr::from_rows(3, rows);
        let dense = csr.to_dense().unwrap();
        (
            Design::Dense(dense),
            Design::Sparse(std::sync::Arc::new(csr)),
        )
    }

    #[test]
    fn gradients_match_finite_differences_on_dense_and_sparse_rows() {
        let (dense, sparse) = designs();
        let y = Tensor::from_slice(&[0u32, 2, 1, 2], 4, &Device::Cpu).unwrap();
        let objective = Objective::new(Loss::CrossEntropy, &y, 3).unwrap();
        let p: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.1).collect();
        let (v, g) = objective.value_and_gradient(&dense, &p, 3, 0.3).unwrap();
        let (vs, gs) = objective.value_and_gradient(&sparse, &p, 3, 0.3).unwrap();
        assert!((v - vs).abs() < 1e-6);
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] += 1e-3;
            let up = objective.value_and_gradient(&dense, &q, 3, 0.3).unwrap().0;
            q[i] -= 2e-3;
            let down = objective.value_and_gradient(&dense, &q, 3, 0.3).unwrap().0;
            let numeric = (up - down) / 2e-3;
            assert!((numeric - g[i]).abs() < 1e-4, "{i}: {numeric} vs {}", g[i]);
            assert!((g[i] - gs[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn least_squares_recovers_the_coefficients() {
        // y = 2·x0 − 3·x1 + 0.5·x2 + 1, exactly, on the rows above and two more.
        let x = [
            [1.0f32, 0.0, 0.5],
            [0.0, 2.0, 0.0],
            [-1.0, 0.5, 1.5],
            [0.0, 0.0, -2.0],
            [3.0, 1.0, 1.0],
            [0.5, -1.0, 2.0],
        ];
        let y: Vec<f32> = x
            .iter()
            .map(|r| 2.0 * r[0] - 3.0 * r[1] + 0.5 * r[2] + 1.0)
            .collect();
        let design = Design::Dense(
            Tensor::from_iter(x.iter().flatten().copied(), &Device::Cpu)
                .unwrap()
                .reshape((6, 3))
                .unwrap(),
        );
        let y = Tensor::from_vec(y, (6, 1), &Device::Cpu).unwrap();
        let objective = Objective::new(Loss::Mse, &y, 1).unwrap();
        let stop = Stop {
            max_iter: 200,
            tol: 1e-10,
        };
        let m = minimize(
            |p| objective.value_and_gradient(&design, p, 3, 0.0),
            vec![0.0; 4],
            stop,
            |_, _| Ok::<(), NodeError>(()),
        )
        .unwrap();
        for (got, want) in m.x.iter().zip([2.0, -3.0, 0.5, 1.0]) {
            assert!((got - want).abs() < 1e-4, "{:?}", m.x);
        }
    }

    #[test]
    fn naive_bayes_is_smoothed_log_frequencies() {
        let (_, sparse) = designs();
        // Counts must not be negative; these rows are, so take absolute values.
        let Design::Sparse(rows) = sparse else {
            unreachable!()
        };
        let mut counts = (*rows).clone();
        counts.values.iter_mut().for_each(|v| *v = v.abs());
        let y = Tensor::from_slice(&[0u32, 1, 0, 1], 4, &Device::Cpu).unwrap();
        let cfg = NaiveBayesConfig {
            alpha: 1.0,
            fit_prior: true,
        };
        let (w, b) = naive_bayes(&Design::Sparse(counts.into()), &y, 2, 3, &cfg).unwrap();
        // Class 0 (rows 0 and 2): counts [2, 0.5, 2] + 1 over 4.5 + 3.
        let expected = [3.0 / 7.5, 1.5 / 7.5, 3.0 / 7.5];
        for (got, want) in w[..3].iter().zip(expected) {
            assert!((got - (want as f32).ln()).abs() < 1e-6);
        }
        assert!((b[0] - 0.5f32.ln()).abs() < 1e-6 && (b[1] - 0.5f32.ln()).abs() < 1e-6);
    }
}
