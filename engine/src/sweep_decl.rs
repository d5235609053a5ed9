//! Reading the `sweep:` block, with positions: every problem is reported
//! with `line:col` (validation then checks it against the pipeline).

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::format::{RANGE_KEYS, SWEEP_KEYS};
use crate::ids::PortRef;
use crate::located::{type_error, unknown_key, Located};
use crate::sweep::{Domain, Goal, Method};
use crate::yaml::{Data, Doc, Pos};

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

    #[test]
    fn metric_paths_split_into_output_and_key() {
        assert_eq!(
            split_metric("eval.metrics.accuracy"),
            Some(("eval.metrics".into(), "accuracy".into()))
        );
        assert_eq!(split_metric("eval.f1"), Some(("eval".into(), "f1".into())));
        assert_eq!(split_metric("eval"), None);
    }
}
