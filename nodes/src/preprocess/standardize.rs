//! `preprocess.standardize`: zero mean, unit variance, fitted on one dataset
//! and applied unchanged to others.

use std::collections::BTreeMap;

use candle_core::DType;
use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, SettingSpec, SettingType, Settings, Value, ValueType,
};
use serde_json::json;

use crate::data::Dataset;

/// Standardizes features with statistics fitted on `fit`.
pub struct Standardize;

impl NodeKind for Standardize {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.standardize",
            version: 1,
            doc: "Rescales each feature to zero mean and unit variance, fitted on `fit` only.
The fitted means and deviations are applied unchanged to every `apply` input (no train/test leakage) and are given as `transform`.
With a list of `apply` inputs the outputs are `apply_0`, `apply_1`, … in the same order (`apply` is the first).
A constant feature is only centred.",
            inputs: vec![
                InputSpec::required("fit", ValueType::Dataset, "the data the statistics are fitted on"),
                InputSpec::optional("apply", ValueType::Dataset, "data transformed with the fitted statistics; one reference or a list").many(),
            ],
            outputs: vec![
                OutputSpec::new("fit", ValueType::Dataset, "`fit`, transformed"),
                OutputSpec::new("apply", ValueType::Dataset, "`apply` transformed (the first, when a list is given)"),
                OutputSpec::new("transform", ValueType::Transform, "the fitted means and standard deviations"),
            ],
            settings: vec![
                SettingSpec::with_default("center", SettingType::Bool, json!(true), "subtract the mean"),
                SettingSpec::with_default("scale", SettingType::Bool, json!(true), "divide by the standard deviation"),
            ],
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        _: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        let fit = types_at(inputs, "fit")
            .first()
            .copied()
            .unwrap_or(ValueType::Dataset);
        let mut out = vec![(PortName::new_static("fit"), fit)];
        let apply = types_at(inputs, "apply");
        if let Some(ty) = apply.first() {
            out.push((PortName::new_static("apply"), *ty));
        }
        if apply.len() > 1 {
            for (i, ty) in apply.iter().enumerate() {
                let port = format!("apply_{i}")
                    .parse()
                    .map_err(|e: kiln_engine::ids::BadName| e.to_string())?;
                out.push((port, *ty));
            }
        }
        out.push((PortName::new_static("transform"), ValueType::Transform));
        Ok(out)
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s = ctx.settings();
        let fit = Dataset::from_value(ctx.input("fit")?)?;
        if fit.is_empty() {
            return Err(NodeError::new("input `fit` has no examples to fit on"));
        }
        let x = fit.features.to_dtype(DType::F32)?;
        let mean = if s.bool("center")? {
            x.mean_keepdim(0)?
        } else {
            x.zeros_like()?.narrow(0, 0, 1)?
        };
        let std = if s.bool("scale")? {
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
        let shape = mean.dims()[1..].to_vec();
        let apply = |d: &Dataset| -> Result<Value, NodeError> {
            super::fitted::check_shape(d, &shape)?;
            let features = d
                .features
                .to_dtype(DType::F32)?
                .broadcast_sub(&mean)?
                .broadcast_div(&std)?;
            Ok(Dataset {
                features,
                ..d.clone()
            }
            .into_value())
        };
        let mut out = vec![(PortName::new_static("fit"), apply(&fit)?)];
        let applied: Vec<Value> = ctx
            .inputs("apply")
            .iter()
            .map(|v| Dataset::from_value(v).and_then(|d| apply(&d)))
            .collect::<Result<_, _>>()?;
        if let Some(first) = applied.first() {
            out.push((PortName::new_static("apply"), first.clone()));
        }
        if applied.len() > 1 {
            for (i, v) in applied.into_iter().enumerate() {
                out.push((
                    format!("apply_{i}")
                        .parse()
                        .map_err(|e: kiln_engine::ids::BadName| NodeError::new(e.to_string()))?,
                    v,
                ));
            }
        }
        let transform = Value::new(
            ValueType::Transform,
            BTreeMap::from([
                ("mean".to_string(), mean.squeeze(0)?),
                ("std".to_string(), std.squeeze(0)?),
            ]),
            json!({ "transform": "standardize", "columns": fit.columns }),
        );
        out.push((PortName::new_static("transform"), transform));
        Ok(out)
    }
}
