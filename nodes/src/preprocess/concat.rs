//! `preprocess.concat`: stacks the rows of several datasets.

use candle_core::Tensor;
use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, ValueType,
};

use crate::data::{Dataset, Target};

/// Stacks datasets with the same columns into one.
pub struct Concat;

impl NodeKind for Concat {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.concat",
            version: 1,
            doc: "Stacks the examples of several datasets, in the order listed.
All parts must have the same features per example and the same kind of target; class label names must agree.",
            inputs: vec![InputSpec::required("parts", ValueType::Dataset, "the datasets to stack, a list of references").many()],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "all examples (a table when the parts are tables)")],
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
        let types = types_at(inputs, "parts");
        let ty = if !types.is_empty() && types.iter().all(|t| *t == ValueType::Table) {
            ValueType::Table
        } else {
            ValueType::Dataset
        };
        Ok(vec![(PortName::new_static("data"), ty)])
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let parts: Vec<Dataset> = ctx
            .inputs("parts")
            .iter()
            .map(Dataset::from_value)
            .collect::<Result<_, _>>()?;
        let first = parts
            .first()
            .ok_or_else(|| NodeError::new("input `parts` is empty"))?;
        for (i, p) in parts.iter().enumerate().skip(1) {
            if p.features.dims()[1..] != first.features.dims()[1..]
                || p.columns != first.columns
                || p.categories != first.categories
            {
                return Err(NodeError::new(format!(
                    "part {i} has other features than part 0: concat needs the same columns"
                )));
            }
            let same_target = match (&p.target, &first.target) {
                (None, None) => true,
                (Some(a), Some(b)) => a.labels == b.labels && a.values.dtype() == b.values.dtype(),
                _ => false,
            };
            if !same_target {
                return Err(NodeError::new(format!(
                    "part {i} has another target than part 0"
                )));
            }
        }
        let dense = parts
            .iter()
            .map(|p| p.features.tensor())
            .collect::<Result<Vec<_>, _>>()?;
        let features = Tensor::cat(&dense, 0)?;
        let target = match &first.target {
            Some(t) => {
                let values: Vec<&Tensor> = parts
                    .iter()
                    .filter_map(|p| p.target.as_ref().map(|t| &t.values))
                    .collect();
                Some(Target {
                    values: Tensor::cat(&values, 0)?,
                    ..t.clone()
                })
            }
            None => None,
        };
        let data = Dataset {
            features: features.into(),
            columns: first.columns.clone(),
            target,
            categories: first.categories.clone(),
        };
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }
}
