//! A checked `sweep:` block: which params vary, how trials are drawn, what
//! ranks them; expanded into trials, each a set of `--set`-style param
//! overrides. (`sweep_decl` reads the block, validation checks it.)

use petgraph::graph::NodeIndex;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use crate::ids::PortName;

/// How trials are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every combination of the listed values, in the order written.
    Grid,
    /// `trials` draws, seeded by the pipeline seed.
    Random,
}

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Higher is better.
    Maximize,
    /// Lower is better.
    Minimize,
}

/// A swept param's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// These values.
    Values(Vec<Json>),
    /// A range (random sweeps): uniform, or uniform in log space; integers if asked.
    Range {
        /// Smallest.
        min: f64,
        /// Largest.
        max: f64,
        /// Log-uniform.
        log: bool,
        /// Whole numbers.
        integer: bool,
    },
}

/// The checked block, in a plan.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    /// How trials are drawn.
    pub method: Method,
    /// Param -> its values.
    pub params: Vec<(String, Domain)>,
    /// Random sweeps: how many trials.
    pub trials: usize,
    /// The `metrics` output ranked by, as written (`eval.metrics`), its node and port.
    pub metric_output: (String, NodeIndex, PortName),
    /// The key inside it (`accuracy`; dots reach into nested objects).
    pub metric_key: String,
    /// Which way is better.
    pub goal: Goal,
    /// Trials at once.
    pub parallel: usize,
}

/// One trial: the param values it sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// Param -> value, in the sweep's param order.
    pub params: Vec<(String, Json)>,
}

impl SweepSpec {
    /// The trials, in order: a grid's combinations (the last param varying
    /// fastest), or `trials` random draws from `seed`.
    pub fn trials(&self, seed: u64) -> Vec<Trial> {
        match self.method {
            Method::Grid => {
                let mut trials = vec![Trial { params: Vec::new() }];
                for (name, domain) in &self.params {
                    let Domain::Values(values) = domain else {
                        continue;
                    };
                    trials = trials
                        .into_iter()
                        .flat_map(|t| {
                            values.iter().map(move |v| {
                                let mut params = t.params.clone();
                                params.push((name.clone(), v.clone()));
                                Trial { params }
                            })
                        })
                        .collect();
                }
                trials
            }
            Method::Random => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5377_6565_7020);
                (0..self.trials)
                    .map(|_| Trial {
                        params: self
                            .params
                            .iter()
                            .map(|(name, d)| (name.clone(), draw(d, &mut rng)))
                            .collect(),
                    })
                    .collect()
            }
        }
    }

    /// Whether `a` ranks before `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Maximize => a > b,
            Goal::Minimize => a < b,
        }
    }

    /// The metric in a `metrics` value's JSON.
    pub fn metric_in(&self, metrics: &Json) -> Option<f64> {
        self.metric_key
            .split('.')
            .try_fold(metrics, |v, k| v.get(k))
            .and_then(Json::as_f64)
    }
}

fn draw(domain: &Domain, rng: &mut impl Rng) -> Json {
    match domain {
        Domain::Values(values) => values[rng.random_range(0..values.len())].clone(),
        Domain::Range {
            min,
            max,
            log,
            integer,
        } => {
            let u: f64 = rng.random();
            let x = if *log {
                (min.ln() + u * (max.ln() - min.ln())).exp()
            } else {
                min + u * (max - min)
            };
            if *integer {
                Json::from(x.round().clamp(*min, *max) as i64)
            } else {
                serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method, params: Vec<(&str, Domain)>, trials: usize) -> SweepSpec {
        SweepSpec {
            method,
            params: params
                .into_iter()
                .map(|(n, d)| (n.to_string(), d))
                .collect(),
            trials,
            metric_output: (
                "eval.metrics".into(),
                NodeIndex::new(0),
                PortName::new_static("metrics"),
            ),
            metric_key: "accuracy".into(),
            goal: Goal::Maximize,
            parallel: 1,
        }
    }

    #[test]
    fn a_grid_is_every_combination_last_param_fastest() {
        let s = spec(
            Method::Grid,
            vec![
                ("lr", Domain::Values(vec![0.1.into(), 0.01.into()])),
                ("h", Domain::Values(vec![1.into(), 2.into(), 3.into()])),
            ],
            0,
        );
        let t = s.trials(1);
        assert_eq!(t.len(), 6);
        assert_eq!(
            t[1].params,
            vec![("lr".into(), 0.1.into()), ("h".into(), 2.into())]
        );
        assert_eq!(t[3].params[0].1, Json::from(0.01));
    }

    #[test]
    fn random_draws_follow_the_seed_and_stay_in_range() {
        let s = spec(
            Method::Random,
            vec![(
                "lr",
                Domain::Range {
                    min: 1e-4,
                    max: 1e-1,
                    log: true,
                    integer: false,
                },
            )],
            8,
        );
        assert_eq!(s.trials(7), s.trials(7));
        assert_ne!(s.trials(7), s.trials(8));
        for t in s.trials(7) {
            let x = t.params[0].1.as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&x), "{x}");
        }
    }

    #[test]
    fn the_metric_is_found_by_its_key() {
        let s = spec(Method::Grid, vec![], 0);
        assert_eq!(
            s.metric_in(&serde_json::json!({ "accuracy": 0.5 })),
            Some(0.5)
        );
        assert_eq!(s.metric_in(&serde_json::json!({ "loss": 0.5 })), None);
    }
}
