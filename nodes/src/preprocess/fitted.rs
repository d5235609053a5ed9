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
    let mut out = vec![(PortName::new_static("fit"), fit)];
    let apply = types_at(inputs, "apply");
    if let Some(ty) = apply.first() {
        out.push((PortName::new_static("apply"), *ty));
    }
    if apply.len() > 1 {
        for (i, ty) in apply.iter().enumerate() {
            out.push((apply_port(i)?, *ty));
        }
    }
    out.push((PortName::new_static("transform"), ValueType::Transform));
    Ok(out)
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
    let mut out = vec![(PortName::new_static("fit"), step(fit)?.into_value())];
    let applied: Vec<Value> = ctx
        .inputs("apply")
        .iter()
        .map(|v| {
            Dataset::from_value(v)
                .and_then(|d| step(&d))
                .map(Dataset::into_value)
        })
        .collect::<Result<_, _>>()?;
    if let Some(first) = applied.first() {
        out.push((PortName::new_static("apply"), first.clone()));
    }
    if applied.len() > 1 {
        for (i, v) in applied.into_iter().enumerate() {
            out.push((apply_port(i).map_err(NodeError::new)?, v));
        }
    }
    out.push((PortName::new_static("transform"), transform));
    Ok(out)
}

/// `(x − shift) / scale` per feature, with the fitted shape checked: how
/// standardize (mean, deviation) and normalize (minimum, range) apply.
pub fn shift_and_scale(
    data: &Dataset,
    shift: &Tensor,
    scale: &Tensor,
) -> Result<Dataset, NodeError> {
    check_shape(data, shift.dims())?;
    let features = data
        .features
        .to_dtype(candle_core::DType::F32)?
        .broadcast_sub(shift)?
        .broadcast_div(scale)?;
    Ok(Dataset {
        features,
        ..data.clone()
    })
}

/// An error unless `data` has examples shaped like the fitted ones.
pub fn check_shape(data: &Dataset, fitted: &[usize]) -> Result<(), NodeError> {
    let given = data.features.dims().get(1..).unwrap_or(&[]);
    if given == fitted {
        Ok(())
    } else {
        Err(NodeError::new(format!(
            "`apply` has features of shape {given:?} per example, but `fit` has {fitted:?}: \
             transform data with the same columns it was fitted on"
        )))
    }
}
