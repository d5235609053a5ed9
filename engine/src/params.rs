//! `${params.NAME}` substitution in settings.
//!
//! A string that is exactly one reference takes the param's value with its
//! type (a list stays a list); a reference inside longer text is replaced by
//! the value's text.

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::ids::did_you_mean;
use crate::yaml::{Data, Doc, Pos};

/// A reference to a param that does not exist, or a malformed `${…}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamProblem {
    /// Where the string holding it starts.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Substitutes params in `doc`, giving plain JSON; problems are collected.
pub fn substitute(
    doc: &Doc,
    params: &IndexMap<String, Json>,
    problems: &mut Vec<ParamProblem>,
) -> Json {
    match &doc.data {
        Data::Str(s) if s.contains("${") => substitute_str(s, doc.pos, params, problems),
        Data::Seq(items) => Json::Array(
            items
                .iter()
                .map(|d| substitute(d, params, problems))
                .collect(),
        ),
        Data::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.key_text(), substitute(v, params, problems)))
                .collect(),
        ),
        _ => doc.to_json(),
    }
}

fn substitute_str(
    text: &str,
    pos: Pos,
    params: &IndexMap<String, Json>,
    problems: &mut Vec<ParamProblem>,
) -> Json {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push(ParamProblem {
                pos,
                message: format!("`{text}` has a `${{` with no closing `}}`"),
            });
            return Json::String(text.to_string());
        };
        let inner = after[..end].trim();
        let Some(name) = inner.strip_prefix("params.") else {
            problems.push(ParamProblem {
                pos,
                message: format!(
                    "`${{{inner}}}` is not a param reference: write `${{params.NAME}}`"
                ),
            });
            return Json::String(text.to_string());
        };
        let Some(value) = params.get(name) else {
            let hint = did_you_mean(name, params.keys().map(String::as_str))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_else(|| {
                    if params.is_empty() {
                        " (the pipeline defines no `params:`)".to_string()
                    } else {
                        format!(
                            " (defined: {})",
                            params
                                .keys()
                                .map(String::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                });
            problems.push(ParamProblem {
                pos,
                message: format!("`${{params.{name}}}` refers to an undefined param{hint}"),
            });
            return Json::String(text.to_string());
        };
        let whole = start == 0 && end + 3 == rest.len() && out.is_empty();
        if whole {
            return value.clone();
        }
        out.push_str(&crate::yaml::show(value));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Json::String(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> IndexMap<String, Json> {
        IndexMap::from([
            ("lr".to_string(), json!(0.01)),
            ("hidden".to_string(), json!([32, 32])),
            ("name".to_string(), json!("iris")),
        ])
    }

    fn run(text: &str) -> (Json, Vec<ParamProblem>) {
        let doc = crate::yaml::parse(text).unwrap();
        let mut problems = Vec::new();
        (substitute(&doc, &params(), &mut problems), problems)
    }

    #[test]
    fn whole_values_keep_their_type() {
        let (v, p) = run("a: ${params.lr}\nb: '${params.hidden}'\n");
        assert!(p.is_empty());
        assert_eq!(v, json!({"a": 0.01, "b": [32, 32]}));
    }

    #[test]
    fn text_is_interpolated() {
        let (v, _) = run("path: out/${params.name}-${params.lr}.csv\n");
        assert_eq!(v, json!({"path": "out/iris-0.01.csv"}));
    }

    #[test]
    fn undefined_params_are_reported_with_a_suggestion() {
        let (_, p) = run("a: ${params.lrr}\n");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("did you mean `lr`"),
            "{}",
            p[0].message
        );
        assert_eq!(p[0].pos.line, 1);
    }
}
