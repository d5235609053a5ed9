//! The `sweep:` block: which params vary, how trials are drawn, what ranks
//! them. Parsed with positions (every problem reported with `line:col`),
//! checked against the pipeline in validation, expanded into trials, each
//! a set of `--set`-style param overrides.

use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::format::{RANGE_KEYS, SWEEP_KEYS};
use crate::ids::PortRef;
use crate::load::{type_error, unknown_key, Located};
use crate::plan::Outlet;
use crate::yaml::{Data, Doc, Pos};

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

/// The block as declared, with positions.
#[derive(Clone, Debug)]
pub struct SweepDecl {
    /// Where it starts.
    pub pos: Pos,
    /// How trials are drawn.
    pub method: Method,
    /// Param -> its values, in the order written.
    pub params: Vec<(Located<String>, Domain)>,
    /// Random sweeps: how many trials.
    pub trials: Option<usize>,
    /// The output to rank by and the key inside it.
    pub metric: Option<(Located<PortRef>, String)>,
    /// Which way is better.
    pub goal: Goal,
    /// Trials at once.
    pub parallel: usize,
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
    /// The `metrics` output ranked by, as written (`eval.metrics`), and its outlet.
    pub metric_output: (String, Outlet),
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

/// Parses the block.
pub fn parse(doc: &Doc, diags: &mut Diagnostics) -> Option<SweepDecl> {
    let Data::Map(entries) = &doc.data else {
        diags.push(type_error(
            doc,
            "`sweep`",
            "a mapping such as `{ params: { lr: [0.01, 0.1] }, metric: eval.metrics.accuracy }`",
        ));
        return None;
    };
    let mut decl = SweepDecl {
        pos: doc.pos,
        method: Method::Grid,
        params: Vec::new(),
        trials: None,
        metric: None,
        goal: Goal::Maximize,
        parallel: 1,
    };
    let mut seen = std::collections::HashSet::new();
    let mut params_pos = None;
    for (key, value) in entries {
        let name = key.key_text();
        if !seen.insert(name.clone()) {
            diags.push(Diagnostic::at(
                key.pos,
                format!("`sweep.{name}` is given twice"),
            ));
            continue;
        }
        match name.as_str() {
            "method" => match value.as_str() {
                Some("grid") => decl.method = Method::Grid,
                Some("random") => decl.method = Method::Random,
                _ => diags.push(type_error(value, "`sweep.method`", "`grid` or `random`")),
            },
            "goal" => match value.as_str() {
                Some("maximize") => decl.goal = Goal::Maximize,
                Some("minimize") => decl.goal = Goal::Minimize,
                _ => diags.push(type_error(
                    value,
                    "`sweep.goal`",
                    "`maximize` or `minimize`",
                )),
            },
            "trials" => match value.data {
                Data::Int(n) if n >= 1 => decl.trials = Some(n as usize),
                _ => diags.push(type_error(value, "`sweep.trials`", "a positive integer")),
            },
            "parallel" => match value.data {
                Data::Int(n) if n >= 1 => decl.parallel = n as usize,
                _ => diags.push(type_error(value, "`sweep.parallel`", "a positive integer")),
            },
            "metric" => match value.as_str().and_then(split_metric) {
                Some((output, key)) => match output.parse::<PortRef>() {
                    Ok(r) => {
                        decl.metric = Some((
                            Located {
                                value: r,
                                pos: value.pos,
                            },
                            key,
                        ))
                    }
                    Err(e) => diags.push(Diagnostic::at(value.pos, format!("`sweep.metric`: {e}"))),
                },
                None => diags.push(type_error(
                    value,
                    "`sweep.metric`",
                    "`node.port.key`, e.g. `eval.metrics.accuracy`",
                )),
            },
            "params" => {
                params_pos = Some(value.pos);
                decl.params = domains(value, diags);
            }
            other => diags.push(unknown_key(key.pos, other, "`sweep` key", &SWEEP_KEYS)),
        }
    }
    for required in ["params", "metric"] {
        if !seen.contains(required) {
            diags.push(Diagnostic::at(
                doc.pos,
                format!("`sweep` needs `{required}:`"),
            ));
        }
    }
    if seen.contains("params") && decl.params.is_empty() {
        diags.push(Diagnostic::at(
            params_pos.unwrap_or(doc.pos),
            "`sweep.params` names no param to vary",
        ));
    }
    match decl.method {
        Method::Grid => {
            for (name, d) in &decl.params {
                if matches!(d, Domain::Range { .. }) {
                    diags.push(Diagnostic::at(
                        name.pos,
                        format!("`sweep.params.{}`: a range has no grid; list the values, or use `method: random` with `trials:`", name.value),
                    ));
                }
            }
            if decl.trials.is_some() {
                diags.push(Diagnostic::at(
                    doc.pos,
                    "`sweep.trials` is for `method: random`; a grid runs every combination",
                ));
            }
        }
        Method::Random if decl.trials.is_none() => diags.push(Diagnostic::at(
            doc.pos,
            "a random sweep needs `trials: N` (how many to draw)",
        )),
        Method::Random => {}
    }
    Some(decl)
}

/// `eval.metrics.accuracy` -> (`eval.metrics`, `accuracy`); `eval.accuracy`
/// -> (`eval`, `accuracy`) (the node's default output).
fn split_metric(text: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = text.split('.').collect();
    match parts.len() {
        0 | 1 => None,
        2 => Some((parts[0].to_string(), parts[1].to_string())),
        _ => Some((format!("{}.{}", parts[0], parts[1]), parts[2..].join("."))),
    }
}

fn domains(doc: &Doc, diags: &mut Diagnostics) -> Vec<(Located<String>, Domain)> {
    let Data::Map(entries) = &doc.data else {
        diags.push(type_error(
            doc,
            "`sweep.params`",
            "a mapping of param names to lists of values",
        ));
        return Vec::new();
    };
    let mut out: Vec<(Located<String>, Domain)> = Vec::new();
    for (key, value) in entries {
        let name = key.key_text();
        let what = format!("`sweep.params.{name}`");
        if out.iter().any(|(n, _)| n.value == name) {
            diags.push(Diagnostic::at(key.pos, format!("{what} is given twice")));
            continue;
        }
        let domain = match &value.data {
            Data::Seq(items) if items.is_empty() => {
                diags.push(Diagnostic::at(
                    value.pos,
                    format!("{what} is an empty list: give at least one value"),
                ));
                continue;
            }
            Data::Seq(items) => Domain::Values(items.iter().map(Doc::to_json).collect()),
            Data::Map(_) => match range(value, &what, diags) {
                Some(d) => d,
                None => continue,
            },
            _ => {
                diags.push(type_error(
                    value,
                    &what,
                    "a list of values, or a range `{ min, max, log: true }`",
                ));
                continue;
            }
        };
        out.push((
            Located {
                value: name,
                pos: key.pos,
            },
            domain,
        ));
    }
    out
}

fn range(doc: &Doc, what: &str, diags: &mut Diagnostics) -> Option<Domain> {
    let Data::Map(entries) = &doc.data else {
        return None;
    };
    let (mut min, mut max, mut log, mut integer) = (None, None, false, false);
    let mut ok = true;
    for (key, value) in entries {
        let number = match value.data {
            Data::Int(i) => Some(i as f64),
            Data::Float(x) if x.is_finite() => Some(x),
            _ => None,
        };
        match key.key_text().as_str() {
            "min" | "max" if number.is_none() => {
                diags.push(type_error(
                    value,
                    &format!("{what}.{}", key.key_text()),
                    "a number",
                ));
                ok = false;
            }
            "min" => min = number,
            "max" => max = number,
            "log" | "integer" => match value.data {
                Data::Bool(b) if key.key_text() == "log" => log = b,
                Data::Bool(b) => integer = b,
                _ => {
                    diags.push(type_error(
                        value,
                        &format!("{what}.{}", key.key_text()),
                        "true or false",
                    ));
                    ok = false;
                }
            },
            other => {
                diags.push(unknown_key(
                    key.pos,
                    other,
                    &format!("{what} key"),
                    &RANGE_KEYS,
                ));
                ok = false;
            }
        }
    }
    let (Some(min), Some(max)) = (min, max) else {
        diags.push(Diagnostic::at(
            doc.pos,
            format!("{what}: a range needs `min:` and `max:`"),
        ));
        return None;
    };
    if min > max || (log && min <= 0.0) {
        let why = if min > max {
            "`min` is above `max`"
        } else {
            "a log range needs `min` above 0"
        };
        diags.push(Diagnostic::at(doc.pos, format!("{what}: {why}")));
        return None;
    }
    ok.then_some(Domain::Range {
        min,
        max,
        log,
        integer,
    })
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
                Outlet {
                    node: petgraph::graph::NodeIndex::new(0),
                    port: crate::ids::PortName::new_static("metrics"),
                },
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
    fn metric_paths_split_into_output_and_key() {
        assert_eq!(
            split_metric("eval.metrics.accuracy"),
            Some(("eval.metrics".into(), "accuracy".into()))
        );
        assert_eq!(split_metric("eval.f1"), Some(("eval".into(), "f1".into())));
        assert_eq!(split_metric("eval"), None);
        let s = spec(Method::Grid, vec![], 0);
        assert_eq!(
            s.metric_in(&serde_json::json!({ "accuracy": 0.5 })),
            Some(0.5)
        );
        assert_eq!(s.metric_in(&serde_json::json!({ "loss": 0.5 })), None);
    }
}
