//! `preprocess.apply`: applies a transform fitted elsewhere to new data.

use candle_core::Device;
use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, Value, ValueType,
};

use crate::data::Dataset;
use crate::text::Texts;

/// Applies a fitted `transform` unchanged to `data`.
pub struct Apply;

impl NodeKind for Apply {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.apply",
            version: 1,
            doc: "Applies a transform fitted by preprocess.standardize, normalize, impute or onehot (their `transform` output) to other data, or one fitted by preprocess.tfidf or tokenize to other documents, unchanged: the same code the fitting node runs, so served requests are transformed exactly like the test set.",
            inputs: vec![
                InputSpec::required("transform", ValueType::Transform, "a fitted transform"),
                InputSpec::required("data", ValueType::Dataset, "the examples to transform (documents, for a tfidf or tokenize transform)").or(&[ValueType::Text]),
            ],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "the examples, transformed (targets kept)")],
            settings: vec![],
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        _: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        let ty = match types_at(inputs, "data").first().copied() {
            Some(ValueType::Text) | None => ValueType::Dataset,
            Some(ty) => ty,
        };
        Ok(vec![(PortName::new_static("data"), ty)])
    }

    /// A served tf-idf reads its vocabulary once, before the first request.
    fn prepare(&self, fixed: &[(PortName, Vec<Value>)], _: &Device) -> Result<(), NodeError> {
        let transform = fixed
            .iter()
            .find(|(port, _)| port.as_str() == "transform")
            .and_then(|(_, values)| values.first());
        if let Some(t) = transform.filter(|t| t.meta()["transform"] == "tfidf") {
            super::tfidf::Fitted::of(t)?;
        }
        Ok(())
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (transform, data) = (ctx.input("transform")?, ctx.input("data")?);
        let out = if data.ty() == ValueType::Text {
            apply_to_texts(transform, &Texts::from_value(data)?)?
        } else {
            apply_transform(transform, &Dataset::from_value(data)?)?
        };
        Ok(vec![(PortName::new_static("data"), out.into_value())])
    }
}

/// Applies a fitted transform of any kind to `data`, by the function its
/// fitting node applies it with: so `preprocess.apply`, and through it a
/// served pipeline, compute exactly what the fitting node did.
pub fn apply_transform(transform: &Value, data: &Dataset) -> Result<Dataset, NodeError> {
    if transform.ty() != ValueType::Transform {
        return Err(NodeError::new(format!(
            "expected a fitted transform, got a {}",
            transform.ty()
        )));
    }
    match transform.meta().get("transform").and_then(|t| t.as_str()) {
        Some("standardize") => super::standardize::apply(transform, data),
        Some("normalize") => super::normalize::apply(transform, data),
        Some("impute") => super::impute::apply(transform, data),
        Some("onehot") => super::onehot::apply(transform, data),
        Some(text @ ("tfidf" | "tokenize")) => Err(NodeError::new(format!(
            "a `{text}` transform applies to documents, but `data` is a dataset: give it `text` (e.g. from source.text or source.text_request)"
        ))),
        other => Err(NodeError::new(format!(
            "unknown transform {other:?}: expected one fitted by preprocess.standardize, normalize, impute or onehot"
        ))),
    }
}

/// Applies a transform fitted on documents (`preprocess.tfidf`,
/// `preprocess.tokenize`) to `texts`, by the function its fitting node
/// encodes with.
pub fn apply_to_texts(transform: &Value, texts: &Texts) -> Result<Dataset, NodeError> {
    match transform.meta().get("transform").and_then(|t| t.as_str()) {
        Some("tfidf") => super::tfidf::encode(transform, texts),
        Some("tokenize") => super::tokenize::encode(transform, texts),
        Some(other) => Err(NodeError::new(format!(
            "a `{other}` transform applies to tables, but `data` is documents: fit the transform with preprocess.tfidf or tokenize"
        ))),
        None => Err(NodeError::new(
            "the transform names no kind: expected one fitted by preprocess.tfidf or tokenize",
        )),
    }
}
