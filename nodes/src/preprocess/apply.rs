//! `preprocess.apply`: applies a transform fitted elsewhere to new data.

use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, ValueType,
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
        let out = super::fitted::apply_transform(ctx.input("transform")?, &data)?;
        Ok(vec![(PortName::new_static("data"), out.into_value())])
    }
}
