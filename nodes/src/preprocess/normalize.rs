//! `preprocess.normalize`: min-max scaling to [0, 1], fitted on one dataset
//! and applied unchanged to another.

use std::collections::BTreeMap;

use candle_core::DType;
use kiln_engine::{
    Config, InputTypes, KindSpec, NodeError, NodeKind, OutputTypes, Outputs, RunContext, Settings,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::data::Dataset;

/// Min-max scaling with ranges fitted on `fit`.
pub struct Normalize;

/// What `preprocess.normalize` reads from `with:`.
#[derive(Config, Deserialize)]
struct NormalizeSettings {
    /// fit a range per feature (true) or one for all (false)
    #[setting(default = true)]
    per_feature: bool,
}

impl NodeKind for Normalize {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.normalize",
            version: 1,
            doc: "Scales features to [0, 1] with the minimum and maximum fitted on `fit` only, per feature or over all of them (`per_feature: false`, e.g. 0–255 pixels).
The fitted range is applied unchanged to `apply` and given as `transform`; a constant feature becomes 0.",
            inputs: super::fitted::inputs(ValueType::Dataset, "the data the range is fitted on", "data scaled with the fitted range"),
            outputs: super::fitted::outputs(ValueType::Dataset, "the fitted minimum and range"),
            settings: NormalizeSettings::specs(),
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
        let fit = Dataset::from_value(ctx.input("fit")?)?;
        if fit.is_empty() {
            return Err(NodeError::new("input `fit` has no examples to fit on"));
        }
        let x = fit.features.tensor()?.to_dtype(DType::F32)?;
        let (min, max) = if ctx.settings().read::<NormalizeSettings>()?.per_feature {
            (x.min_keepdim(0)?, x.max_keepdim(0)?)
        } else {
            let lo = x.flatten_all()?.min(0)?.to_scalar::<f32>()?;
            let hi = x.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let one = x.narrow(0, 0, 1)?.ones_like()?;
            ((&one * lo as f64)?, (&one * hi as f64)?)
        };
        let range = (&max - &min)?;
        let range = range.le(0.0)?.where_cond(&range.ones_like()?, &range)?;
        let transform = Value::new(
            ValueType::Transform,
            BTreeMap::from([
                ("min".to_string(), min.squeeze(0)?),
                ("range".to_string(), range.squeeze(0)?),
            ]),
            json!({ "transform": "normalize", "columns": fit.columns }),
        );
        super::fitted::apply_all(ctx, &fit, transform, apply)
    }
}

/// Applies a fitted `normalize` transform.
pub(crate) fn apply(transform: &Value, data: &Dataset) -> Result<Dataset, NodeError> {
    super::fitted::shift_and_scale(data, transform.tensor("min")?, transform.tensor("range")?)
}
