//! `preprocess.impute`: fills missing values with statistics fitted on one dataset.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kiln_engine::{
    Config, InputTypes, KindSpec, NodeError, NodeKind, OutputTypes, Outputs, RunContext, Settings,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::data::Dataset;

/// Replaces missing values (NaN) column by column.
pub struct Impute;

/// What `preprocess.impute` reads from `with:`.
#[derive(Config, Deserialize)]
struct ImputeSettings {
    /// how a column's fill value is chosen
    #[setting(default = "mean")]
    strategy: Strategy,
    /// the fill value for `strategy: constant`
    #[setting(default = 0.0)]
    value: f64,
}

impl NodeKind for Impute {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.impute",
            version: 1,
            doc: "Fills missing values (empty cells, `NA`, `nan`) per column with the mean, the median or the most frequent value of `fit`, or a constant.
The fitted fill values are applied unchanged to `apply` and given as `transform`.",
            inputs: super::fitted::inputs(ValueType::Dataset, "the data the fill values come from", "data filled with `fit`'s values"),
            outputs: super::fitted::outputs(ValueType::Dataset, "the fill value of each column"),
            settings: ImputeSettings::specs(),
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
        let s: ImputeSettings = ctx.settings().read()?;
        let fit = Dataset::from_value(ctx.input("fit")?)?;
        let (n, width) = (
            fit.len(),
            fit.features.tensor()?.elem_count() / fit.len().max(1),
        );
        let x: Vec<f32> = fit
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let strategy = s.strategy;
        let fills: Vec<f32> = (0..width)
            .map(|j| {
                let mut col: Vec<f32> = (0..n)
                    .map(|i| x[i * width + j])
                    .filter(|v| !v.is_nan())
                    .collect();
                fill_value(&mut col, strategy, s.value as f32)
            })
            .collect();
        let transform = Value::new(
            ValueType::Transform,
            BTreeMap::from([(
                "fill".to_string(),
                Tensor::from_vec(fills, width, &Device::Cpu)?,
            )]),
            json!({ "transform": "impute", "strategy": strategy, "columns": fit.columns }),
        );
        super::fitted::apply_all(ctx, &fit, transform, apply)
    }
}

/// Applies a fitted `impute` transform: missing values get their column's fill.
pub(crate) fn apply(transform: &Value, data: &Dataset) -> Result<Dataset, NodeError> {
    let fills: Vec<f32> = transform
        .tensor("fill")?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    let per_example: usize = data.features.dims().iter().skip(1).product();
    if per_example != fills.len() {
        return Err(NodeError::new(format!(
            "the data has {per_example} values per example, but the fill values were fitted on {}: \
             impute data with the same columns it was fitted on",
            fills.len()
        )));
    }
    let mut v: Vec<f32> = data
        .features
        .tensor()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    for (i, x) in v.iter_mut().enumerate() {
        if x.is_nan() {
            *x = fills[i % fills.len()];
        }
    }
    let features = Tensor::from_vec(v, data.features.tensor()?.shape(), &Device::Cpu)?;
    Ok(Dataset {
        features: features.into(),
        ..data.clone()
    })
}

kiln_engine::choices! {
    /// How a column's fill value is chosen (the `strategy` setting).
    enum Strategy {
        /// The mean of the column's values.
        Mean = "mean",
        /// Their median.
        Median = "median",
        /// The value that occurs most often.
        MostFrequent = "most_frequent",
        /// The `value` setting.
        Constant = "constant",
    }
}

/// A column's fill value; a column with no values at all gets the constant.
fn fill_value(col: &mut [f32], strategy: Strategy, constant: f32) -> f32 {
    if col.is_empty() || strategy == Strategy::Constant {
        return constant;
    }
    match strategy {
        Strategy::Constant => constant,
        Strategy::Median => {
            col.sort_by(f32::total_cmp);
            let m = col.len() / 2;
            if col.len().is_multiple_of(2) {
                (col[m - 1] + col[m]) / 2.0
            } else {
                col[m]
            }
        }
        Strategy::MostFrequent => {
            col.sort_by(f32::total_cmp);
            let mut best = (col[0], 0usize);
            let mut run = (col[0], 0usize);
            for &v in col.iter() {
                run = if v == run.0 { (v, run.1 + 1) } else { (v, 1) };
                if run.1 > best.1 {
                    best = run;
                }
            }
            best.0
        }
        Strategy::Mean => (col.iter().map(|&v| v as f64).sum::<f64>() / col.len() as f64) as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_values_follow_the_strategy() {
        assert_eq!(fill_value(&mut [1.0, 2.0, 6.0], Strategy::Mean, 0.0), 3.0);
        assert_eq!(
            fill_value(&mut [5.0, 1.0, 2.0, 9.0], Strategy::Median, 0.0),
            3.5
        );
        assert_eq!(
            fill_value(&mut [2.0, 7.0, 7.0, 1.0], Strategy::MostFrequent, 0.0),
            7.0
        );
        assert_eq!(fill_value(&mut [2.0], Strategy::Constant, -1.0), -1.0);
        assert_eq!(fill_value(&mut [], Strategy::Mean, 4.0), 4.0);
    }
}
