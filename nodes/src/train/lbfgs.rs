//! L-BFGS (Nocedal & Wright, algorithm 7.4–7.5): the exact solver behind
//! linear models. Smooth, convex objectives only (the penalised likelihoods
//! of logistic and least-squares regression); a backtracking line search
//! with the Armijo condition, and a curvature pair kept only when it keeps
//! the inverse-Hessian estimate positive definite.

use std::collections::VecDeque;

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// At most this many iterations.
    pub max_iter: usize,
    /// Converged when no gradient entry exceeds this.
    pub tol: f64,
}

/// Where the search ended.
#[derive(Clone, Debug)]
pub struct Minimum {
    /// The point.
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the gradient fell below the tolerance (else the iteration
    /// limit, or no further decrease in floating point, ended it).
    pub converged: bool,
    /// The objective after each iteration.
    pub trace: Vec<f64>,
}

/// Pairs kept for the inverse-Hessian estimate.
const MEMORY: usize = 10;
/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;
/// Step halvings before the line search gives up.
const HALVINGS: usize = 40;

/// `a · b`, in eight independent sums (so the compiler can use vector
/// registers; the order is fixed, so the bits are too).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `y += a·x`.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Minimises `f` (value and gradient at a point) from `x0`. `each` is
/// called after every iteration with its number and value, and may stop
/// the search by returning an error.
pub fn minimize<E>(
    f: impl FnMut(&[f64]) -> Result<(f64, Vec<f64>), E>,
    x0: Vec<f64>,
    stop: Stop,
    each: impl FnMut(usize, f64) -> Result<(), E>,
) -> Result<Minimum, E> {
    minimize_l1(f, x0, &[], stop, each)
}

/// Minimises `f(x) + Σ l1[i]·|x[i]|` (coordinates beyond `l1` carry no
/// penalty): with no penalty, L-BFGS; with one, OWL-QN (Andrew & Gao 2007),
/// which steps along the pseudo-gradient within one orthant at a time, so
/// weights the penalty makes useless become exactly zero. The values
/// reported include the penalty.
pub fn minimize_l1<E>(
    mut f: impl FnMut(&[f64]) -> Result<(f64, Vec<f64>), E>,
    x0: Vec<f64>,
    l1: &[f64],
    stop: Stop,
    mut each: impl FnMut(usize, f64) -> Result<(), E>,
) -> Result<Minimum, E> {
    let penalty = |x: &[f64]| -> f64 { l1.iter().zip(x).map(|(w, v)| w * v.abs()).sum() };
    let mut x = x0;
    let (smooth, mut grad) = f(&x)?;
    let mut value = smooth + penalty(&x);
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let mut trace = Vec::new();
    let mut iterations = 0;
    let mut trial = vec![0.0; x.len()];
    let mut steepest = pseudo_gradient(&x, &grad, l1);
    let mut converged = max_abs(&steepest) <= stop.tol;
    while !converged && iterations < stop.max_iter {
        // Two-loop recursion: d = −H·(pseudo-)gradient.
        let mut q = steepest.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            axpy(&mut q, -a, y);
            alphas.push(a);
        }
        let gamma = pairs
            .back()
            .map_or(1.0 / max_abs(&steepest).max(1e-12), |(s, y, _)| {
                dot(s, y) / dot(y, y)
            });
        for qi in q.iter_mut() {
            *qi *= gamma;
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            axpy(&mut q, a - b, s);
        }
        let mut direction: Vec<f64> = q.into_iter().map(|v| -v).collect();
        // OWL-QN: keep only the parts that descend along the pseudo-gradient.
        for (i, d) in direction.iter_mut().enumerate().take(l1.len()) {
            if *d * steepest[i] >= 0.0 {
                *d = 0.0;
            }
        }
        let mut slope = dot(&steepest, &direction);
        if slope >= 0.0 {
            // Not a descent direction (rounding): restart from the gradient.
            pairs.clear();
            let scale = max_abs(&steepest).max(1e-12);
            direction = steepest.iter().map(|g| -g / scale).collect();
            slope = dot(&steepest, &direction);
        }
        // The orthant the step stays in: the sign of each weight, or for a
        // zero weight the sign it is moving to.
        let orthant: Vec<f64> = (0..l1.len())
            .map(|i| {
                if x[i] != 0.0 {
                    x[i].signum()
                } else {
                    -steepest[i].signum()
                }
            })
            .collect();
        // Backtracking line search from the full step.
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..HALVINGS {
            for ((t, a), d) in trial.iter_mut().zip(&x).zip(&direction) {
                *t = a + step * d;
            }
            for (t, o) in trial.iter_mut().zip(&orthant) {
                if *t * o <= 0.0 {
                    *t = 0.0;
                }
            }
            let (smooth, g) = f(&trial)?;
            let v = smooth + penalty(&trial);
            // Armijo along the step taken (projected, with a penalty).
            let moved: f64 = steepest
                .iter()
                .zip(trial.iter().zip(&x))
                .map(|(p, (t, a))| p * (t - a))
                .sum();
            if v.is_finite() && v <= value + ARMIJO * moved {
                accepted = Some((v, g));
                break;
            }
            step *= 0.5;
        }
        iterations += 1;
        let Some((next_value, next_grad)) = accepted else {
            // No decrease left to find at this precision: as far as it goes.
            trace.push(value);
            each(iterations, value)?;
            break;
        };
        // The oldest pair's vectors are reused for the newest.
        let (mut s, mut y) = if pairs.len() == MEMORY {
            let (s, y, _) = pairs.pop_front().expect("a full memory");
            (s, y)
        } else {
            (vec![0.0; x.len()], vec![0.0; x.len()])
        };
        for ((si, t), a) in s.iter_mut().zip(&trial).zip(&x) {
            *si = t - a;
        }
        for ((yi, g1), g0) in y.iter_mut().zip(&next_grad).zip(&grad) {
            *yi = g1 - g0;
        }
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            pairs.push_back((s, y, 1.0 / sy));
        }
        let decrease = value - next_value;
        std::mem::swap(&mut x, &mut trial);
        value = next_value;
        grad = next_grad;
        steepest = pseudo_gradient(&x, &grad, l1);
        trace.push(value);
        each(iterations, value)?;
        converged = max_abs(&steepest) <= stop.tol;
        if decrease <= f64::EPSILON * value.abs().max(1.0) {
            break;
        }
    }
    Ok(Minimum {
        x,
        value,
        iterations,
        converged,
        trace,
    })
}

/// The gradient of `f + Σ l1·|x|` where it exists, and at a zero weight the
/// one-sided derivative that descends (or 0 when neither side does).
fn pseudo_gradient(x: &[f64], grad: &[f64], l1: &[f64]) -> Vec<f64> {
    let mut p = grad.to_vec();
    for ((pi, &xi), &w) in p.iter_mut().zip(x).zip(l1) {
        if w == 0.0 {
            continue;
        }
        *pi = if xi > 0.0 {
            *pi + w
        } else if xi < 0.0 {
            *pi - w
        } else if *pi + w < 0.0 {
            *pi + w
        } else if *pi - w > 0.0 {
            *pi - w
        } else {
            0.0
        };
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_rosenbrocks_valley() {
        let rosenbrock = |p: &[f64]| -> Result<(f64, Vec<f64>), ()> {
            let (x, y) = (p[0], p[1]);
            let v = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
            let g = vec![
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            ];
            Ok((v, g))
        };
        let stop = Stop {
            max_iter: 200,
            tol: 1e-8,
        };
        let m = minimize(rosenbrock, vec![-1.2, 1.0], stop, |_, _| Ok(())).unwrap();
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
        assert!(m.iterations < 100, "{} iterations", m.iterations);
        // The trace only goes down.
        assert!(m.trace.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn a_quadratic_is_solved_to_its_closed_form() {
        // ½xᵀAx − bᵀx with A = [[3, 1], [1, 2]], b = [1, 1]: x = A⁻¹b = [0.2, 0.4].
        let f = |p: &[f64]| -> Result<(f64, Vec<f64>), ()> {
            let ax = [3.0 * p[0] + p[1], p[0] + 2.0 * p[1]];
            Ok((
                0.5 * (p[0] * ax[0] + p[1] * ax[1]) - p[0] - p[1],
                vec![ax[0] - 1.0, ax[1] - 1.0],
            ))
        };
        let stop = Stop {
            max_iter: 50,
            tol: 1e-10,
        };
        let m = minimize(f, vec![0.0, 0.0], stop, |_, _| Ok(())).unwrap();
        assert!(
            (m.x[0] - 0.2).abs() < 1e-9 && (m.x[1] - 0.4).abs() < 1e-9,
            "{m:?}"
        );
    }

    #[test]
    fn an_l1_penalty_zeroes_the_weights_it_does_not_pay_for() {
        // ½(x − 3)² + ½(y − 0.2)² + |x| + |y|: x = 2, and y = 0 exactly
        // (its pull, 0.2, is below the penalty's 1).
        let f = |p: &[f64]| -> Result<(f64, Vec<f64>), ()> {
            Ok((
                0.5 * (p[0] - 3.0).powi(2) + 0.5 * (p[1] - 0.2).powi(2),
                vec![p[0] - 3.0, p[1] - 0.2],
            ))
        };
        let stop = Stop {
            max_iter: 100,
            tol: 1e-9,
        };
        let m = minimize_l1(f, vec![1.0, 1.0], &[1.0, 1.0], stop, |_, _| Ok(())).unwrap();
        assert!((m.x[0] - 2.0).abs() < 1e-7, "{m:?}");
        assert_eq!(m.x[1], 0.0, "{m:?}");
        assert!(m.converged, "{m:?}");
    }
}
