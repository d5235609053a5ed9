//! `source.text_request`: the documents a served text pipeline answers.

use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RequestError, RunContext,
    Settings, ValueType,
};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::text::Texts;

/// Takes documents from requests.
pub struct TextRequest;

/// What `source.text_request` reads from `with:`.
#[derive(Config, Deserialize)]
struct TextRequestSettings {
    /// the longest document a request may hold, in characters
    #[setting(default = 100_000, min = 1)]
    max_chars: usize,
    /// documents to use when the pipeline is run rather than served
    example: Option<Vec<String>>,
}

impl NodeKind for TextRequest {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.text_request",
            version: 1,
            doc: "The documents a served pipeline answers (SPEC §7): a request's rows are strings, or objects `{\"text\": \"…\"}`, and become a `text` value that `preprocess.apply` turns into features with a transform fitted by `preprocess.tfidf` or `preprocess.tokenize` (the same code as the fitted data: no train/serve skew).
In `kiln run` the node gives the `example` documents.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("text", ValueType::Text, "the documents, unlabelled")],
            settings: TextRequestSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<TextRequestSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        match s.example.map(|e| documents(&Json::from(e), s.max_chars)) {
            Some(Err(e)) => vec![("example".into(), e.to_string())],
            _ => Vec::new(),
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: TextRequestSettings = ctx.settings().read()?;
        let example = s.example.ok_or_else(|| {
            NodeError::new(
                "this node takes its documents from requests (`kiln serve`); to run the pipeline, \
                 give it documents in setting `example`",
            )
        })?;
        let texts = Texts {
            texts: example,
            target: None,
        };
        Ok(vec![(PortName::new_static("text"), texts.into_value())])
    }

    fn takes_requests(&self) -> bool {
        true
    }

    fn serve_only(&self, settings: &Settings) -> bool {
        settings
            .read::<TextRequestSettings>()
            .map_or(true, |s| s.example.is_none())
    }

    fn request(&self, settings: &Settings, rows: &Json) -> Result<Outputs, RequestError> {
        let s: TextRequestSettings = settings
            .read()
            .map_err(|e| RequestError::new("", e.to_string()))?;
        let texts = Texts {
            texts: documents(rows, s.max_chars)?,
            target: None,
        };
        Ok(vec![(PortName::new_static("text"), texts.into_value())])
    }
}

/// The documents of a request: a list of strings or of `{"text": …}`.
fn documents(rows: &Json, max_chars: usize) -> Result<Vec<String>, RequestError> {
    let Json::Array(rows) = rows else {
        return Err(RequestError::new(
            "",
            "expected a list of documents: strings, or objects with a `text` string",
        ));
    };
    if rows.is_empty() {
        return Err(RequestError::new("", "the list of documents is empty"));
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let text = match row {
                Json::String(s) => s,
                Json::Object(fields) => match (fields.get("text"), fields.len()) {
                    (Some(Json::String(s)), 1) => s,
                    (Some(Json::String(_)), _) => {
                        let other = fields.keys().find(|k| *k != "text").cloned();
                        return Err(RequestError::new(
                            format!("[{i}].{}", other.unwrap_or_default()),
                            "unknown field: a document object holds only `text`",
                        ));
                    }
                    (Some(_), _) => {
                        return Err(RequestError::new(format!("[{i}].text"), "expected a string"))
                    }
                    (None, _) => {
                        return Err(RequestError::new(
                            format!("[{i}]"),
                            "expected an object with a `text` string",
                        ))
                    }
                },
                _ => {
                    return Err(RequestError::new(
                        format!("[{i}]"),
                        "expected a string, or an object with a `text` string",
                    ))
                }
            };
            let chars = text.chars().count();
            if chars > max_chars {
                return Err(RequestError::new(
                    format!("[{i}]"),
                    format!("the document has {chars} characters; this pipeline takes at most {max_chars} (setting `max_chars`)"),
                ));
            }
            Ok(text.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_are_strings_or_text_objects_and_bad_ones_name_their_place() {
        let docs = documents(&json!(["good film", {"text": "bad film"}]), 100).unwrap();
        assert_eq!(docs, ["good film", "bad film"]);
        let cases = [
            (json!({"text": "x"}), "", "expected a list"),
            (json!([]), "", "empty"),
            (json!(["ok", 3]), "[1]", "expected a string"),
            (json!([{"text": 3}]), "[0].text", "expected a string"),
            (json!([{"body": "x"}]), "[0]", "`text` string"),
            (
                json!([{"text": "x", "lang": "en"}]),
                "[0].lang",
                "unknown field",
            ),
            (json!(["ok", "far too long"]), "[1]", "at most 5"),
        ];
        for (rows, field, message) in cases {
            let e = documents(&rows, 5).unwrap_err();
            assert_eq!(e.field, field, "{rows}: {e}");
            assert!(e.message.contains(message), "{rows}: {e}");
        }
    }
}
