//! `preprocess.apply`: applies a transform fitted elsewhere to new data.

use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, Value, ValueType,
};

use crate::data::Dataset;

/// Applies a fitted `transform` unchanged to `data`.
pub struct Apply;

impl NodeKind for Apply {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.apply",
            version: 1,
            doc: "Applies a transform fitted by preprocess.standardize, normalize, impute or onehot (their `transform` output) to other data, unchanged: the same code the fitting node runs, so served requests are transformed exactly like the test set.",
            inputs: vec![
                InputSpec::required("transform", ValueType::Transform, "a fitted transform"),
                InputSpec::required("data", ValueType::Dataset, "the examples to transform"),
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
        let ty = types_at(inputs, "data")
            .first()
            .copied()
            .unwrap_or(ValueType::Dataset);
        Ok(vec![(PortName::new_static("data"), ty)])
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let data = Dataset::from_value(ctx.input("data")?)?;
        let out = apply_transform(ctx.input("transform")?, &data)?;
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
        other => Err(NodeError::new(format!(
            "unknown transform {other:?}: expected one fitted by preprocess.standardize, normalize, impute or onehot"
        ))),
    }
}
