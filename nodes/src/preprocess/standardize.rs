//! `preprocess.standardize`: zero mean, unit variance, fitted on one dataset
//! and applied unchanged to others.

use std::collections::BTreeMap;

use candle_core::DType;
use kiln_engine::{
    Config, InputTypes, KindSpec, NodeError, NodeKind, OutputTypes, Outputs, RunContext, Settings,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::data::Dataset;

/// Standardizes features with statistics fitted on `fit`.
pub struct Standardize;

/// What `preprocess.standardize` reads from `with:`.
#[derive(Config, Deserialize)]
struct StandardizeSettings {
    /// subtract the mean
    #[setting(default = true)]
    center: bool,
    /// divide by the standard deviation
    #[setting(default = true)]
    scale: bool,
}

impl NodeKind for Standardize {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.standardize",
            version: 1,
            doc: "Rescales each feature to zero mean and unit variance, fitted on `fit` only.
The fitted means and deviations are applied unchanged to every `apply` input (no train/test leakage) and are given as `transform`.
A constant feature is only centred.",
            inputs: super::fitted::inputs(
                ValueType::Dataset,
                "the data the statistics are fitted on",
                "data transformed with the fitted statistics; one reference or a list",
            ),
            outputs: super::fitted::outputs(ValueType::Dataset, "the fitted means and standard deviations"),
            settings: StandardizeSettings::specs(),
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        _: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        super::fitted::output_types(inputs)
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: StandardizeSettings = ctx.settings().read()?;
        let fit = Dataset::from_value(ctx.input("fit")?)?;
        if fit.is_empty() {
            return Err(NodeError::new("input `fit` has no examples to fit on"));
        }
        let x = fit.features.tensor()?.to_dtype(DType::F32)?;
        let mean = if s.center {
            x.mean_keepdim(0)?
        } else {
            x.zeros_like()?.narrow(0, 0, 1)?
        };
        let std = if s.scale {
            let var = x
                .broadcast_sub(&x.mean_keepdim(0)?)?
                .sqr()?
                .mean_keepdim(0)?;
            let std = var.sqrt()?;
            // Constant features keep scale 1 instead of dividing by zero.
            let tiny = std.lt(1e-12)?;
            tiny.where_cond(&std.ones_like()?, &std)?
        } else {
            mean.ones_like()?
        };
        let transform = Value::new(
            ValueType::Transform,
            BTreeMap::from([
                ("mean".to_string(), mean.squeeze(0)?),
                ("std".to_string(), std.squeeze(0)?),
            ]),
            json!({ "transform": "standardize", "columns": fit.columns }),
        );
        super::fitted::apply_all(ctx, &fit, transform, apply)
    }
}

/// Applies a fitted `standardize` transform.
pub(crate) fn apply(transform: &Value, data: &Dataset) -> Result<Dataset, NodeError> {
    super::fitted::shift_and_scale(data, transform.tensor("mean")?, transform.tensor("std")?)
}
