//! The shape shared by fitted preprocessing steps (impute, normalize,
//! one-hot, standardize): statistics fitted on `fit` only, applied unchanged
//! to every `apply` input, and given as `transform` — no train/test leakage,
//! no train/serve skew. `apply` takes one reference or a list; with a list the
//! outputs are `apply_0`, `apply_1`, … in order, and `apply` is the first.

use candle_core::Tensor;
use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, NodeError, OutputSpec, OutputTypes, Outputs, PortName, RunContext,
    Value, ValueType,
};

use crate::data::Dataset;
use crate::text::Texts;

/// Inputs `fit` (required) and `apply` (optional; one reference or a list).
pub fn inputs(ty: ValueType, fit_doc: &'static str, apply_doc: &'static str) -> Vec<InputSpec> {
    vec![
        InputSpec::required("fit", ty, fit_doc),
        InputSpec::optional("apply", ty, apply_doc).many(),
    ]
}

/// Outputs `fit`, `apply` and `transform` (`apply_N` are added per list item).
pub fn outputs(ty: ValueType, transform_doc: &'static str) -> Vec<OutputSpec> {
    vec![
        OutputSpec::new("fit", ty, "`fit`, transformed"),
        OutputSpec::new("apply", ty, "`apply`, transformed (the first, when a list is given; then also `apply_0`, `apply_1`, …)"),
        OutputSpec::new("transform", ValueType::Transform, transform_doc),
    ]
}

/// The port of the `i`th `apply` input's output: `apply_{i}`.
pub fn apply_port(i: usize) -> Result<PortName, String> {
    format!("apply_{i}")
        .parse()
        .map_err(|e: kiln_engine::ids::BadName| e.to_string())
}

/// Each output keeps its input's type (a table stays a table); `apply`
/// exists only when connected, `apply_N` only for a list.
pub fn output_types(inputs: &InputTypes) -> Result<OutputTypes, String> {
    let fit = types_at(inputs, "fit")
        .first()
        .copied()
        .unwrap_or(ValueType::Dataset);
    ported(
        fit,
        types_at(inputs, "apply").to_vec(),
        ValueType::Transform,
    )
}

/// Output types of a step fitted on documents (`fit` and `apply` are
/// `text`): `fit`, `apply` when connected and `apply_N` for a list, all
/// datasets, then `transform`.
pub fn text_output_types(inputs: &InputTypes) -> Result<OutputTypes, String> {
    let applied = types_at(inputs, "apply").len();
    ported(
        ValueType::Dataset,
        vec![ValueType::Dataset; applied],
        ValueType::Transform,
    )
}

/// `fit`, then `apply` (the first of `applied`) and `apply_N` when there are
/// several, then `transform`: the ports of every fitted step, with their
/// types or their values.
fn ported<T: Clone>(fit: T, applied: Vec<T>, transform: T) -> Result<Vec<(PortName, T)>, String> {
    let mut out = vec![(PortName::new_static("fit"), fit)];
    if let Some(first) = applied.first() {
        out.push((PortName::new_static("apply"), first.clone()));
    }
    if applied.len() > 1 {
        for (i, item) in applied.into_iter().enumerate() {
            out.push((apply_port(i)?, item));
        }
    }
    out.push((PortName::new_static("transform"), transform));
    Ok(out)
}

/// The outputs of a step fitted on documents: `encode` (the function
/// `preprocess.apply` and served requests use too) applied with
/// `transform` to `fit` and to every `apply` input, then `transform`.
pub fn encode_all(
    ctx: &RunContext<'_>,
    fit: &Texts,
    transform: Value,
    encode: fn(&Value, &Texts) -> Result<Dataset, NodeError>,
) -> Result<Outputs, NodeError> {
    let fitted = encode(&transform, fit)?.into_value();
    let applied = ctx
        .inputs("apply")
        .iter()
        .map(|v| Ok(encode(&transform, &Texts::from_value(v)?)?.into_value()))
        .collect::<Result<Vec<Value>, NodeError>>()?;
    ported(fitted, applied, transform).map_err(NodeError::new)
}

/// The outputs of a fitted step: `transform` applied by the kind's own
/// `apply` (the function `preprocess.apply` dispatches to) to `fit` and to
/// every `apply` input, then `transform` itself.
pub fn apply_all(
    ctx: &RunContext<'_>,
    fit: &Dataset,
    transform: Value,
    apply: fn(&Value, &Dataset) -> Result<Dataset, NodeError>,
) -> Result<Outputs, NodeError> {
    let step = |d: &Dataset| apply(&transform, d);
    let fitted = step(fit)?.into_value();
    let applied: Vec<Value> = ctx
        .inputs("apply")
        .iter()
        .map(|v| {
            Dataset::from_value(v)
                .and_then(|d| step(&d))
                .map(Dataset::into_value)
        })
        .collect::<Result<_, _>>()?;
    ported(fitted, applied, transform).map_err(NodeError::new)
}

/// `(x − shift) / scale` per feature, with the fitted shape checked: how
/// standardize (mean, deviation) and normalize (minimum, range) apply.
pub fn shift_and_scale(
    data: &Dataset,
    shift: &Tensor,
    scale: &Tensor,
) -> Result<Dataset, NodeError> {
    // Examples keep their own shape (and column names) on the way out.
    let features = shaped_as_fitted(data, shift.dims())?
        .to_dtype(candle_core::DType::F32)?
        .broadcast_sub(shift)?
        .broadcast_div(scale)?
        .reshape(data.features.dims())?;
    Ok(Dataset {
        features: features.into(),
        ..data.clone()
    })
}

/// The features of `data` shaped like the fitted ones: as they are, or
/// reshaped when they hold as many values (a served request's flat row of
/// 784 grey levels for statistics fitted on 28×28 images); otherwise an
/// error naming both shapes.
fn shaped_as_fitted(data: &Dataset, fitted: &[usize]) -> Result<Tensor, NodeError> {
    match data.features.in_example_shape(fitted)? {
        Some(features) => features.tensor(),
        None => Err(shape_error(data, fitted)),
    }
}

/// Why `data` can't be transformed as fitted: its examples have another shape.
fn shape_error(data: &Dataset, fitted: &[usize]) -> NodeError {
    NodeError::new(format!(
        "`apply` has features of shape {:?} per example, but `fit` has {fitted:?}: \
         transform data with the same columns it was fitted on",
        data.features.example_shape()
    ))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn data(values: Vec<f32>, shape: &[usize], columns: Option<Vec<String>>) -> Dataset {
        Dataset {
            features: Tensor::from_vec(values, shape, &Device::Cpu)
                .unwrap()
                .into(),
            columns,
            target: None,
            categories: Default::default(),
        }
    }

    #[test]
    fn flat_rows_take_statistics_fitted_on_shaped_examples() {
        // Fitted on 2×2 "images"; a served request sends each as 4 values.
        let shift = Tensor::from_vec(vec![1f32, 2., 3., 4.], (2, 2), &Device::Cpu).unwrap();
        let scale = Tensor::from_vec(vec![2f32; 4], (2, 2), &Device::Cpu).unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("col{i}")).collect();
        let flat = data(vec![3., 4., 5., 6.], &[1, 4], Some(names.clone()));
        let out = shift_and_scale(&flat, &shift, &scale).unwrap();
        assert_eq!(out.features.dims(), [1, 4]);
        assert_eq!(out.columns, Some(names));
        assert_eq!(
            out.features.tensor().unwrap().to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 1.0, 1.0]]
        );
        // The same values shaped as fitted give the same numbers.
        let shaped = data(vec![3., 4., 5., 6.], &[1, 2, 2], None);
        let same = shift_and_scale(&shaped, &shift, &scale).unwrap();
        assert_eq!(
            same.features
                .tensor()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0, 1.0, 1.0, 1.0]
        );
        // A different number of values is still an error.
        let wrong = data(vec![1., 2., 3.], &[1, 3], None);
        let e = shift_and_scale(&wrong, &shift, &scale).unwrap_err();
        assert!(e.message().contains("fitted on"), "{e}");
    }
}
