//! The shape shared by fitted preprocessing steps (impute, normalize,
//! one-hot, standardize): statistics fitted on `fit` only, applied unchanged
//! to `apply`, and given as `transform` — no train/test leakage, no
//! train/serve skew.

use kiln_engine::kind::types_at;
use kiln_engine::{InputSpec, InputTypes, OutputSpec, OutputTypes, PortName, ValueType};

/// Inputs `fit` (required) and `apply` (optional).
pub fn inputs(ty: ValueType, fit_doc: &'static str, apply_doc: &'static str) -> Vec<InputSpec> {
    vec![
        InputSpec::required("fit", ty, fit_doc),
        InputSpec::optional("apply", ty, apply_doc),
    ]
}

/// Outputs `fit`, `apply` and `transform`.
pub fn outputs(ty: ValueType, transform_doc: &'static str) -> Vec<OutputSpec> {
    vec![
        OutputSpec::new("fit", ty, "`fit`, transformed"),
        OutputSpec::new("apply", ty, "`apply`, transformed"),
        OutputSpec::new("transform", ValueType::Transform, transform_doc),
    ]
}

/// `fit` and `apply` keep their input's type (a table stays a table);
/// `apply` exists only when connected.
pub fn output_types(inputs: &InputTypes) -> OutputTypes {
    let ty = |port| {
        types_at(inputs, port)
            .first()
            .copied()
            .unwrap_or(ValueType::Dataset)
    };
    let mut out = vec![(PortName::new_static("fit"), ty("fit"))];
    if !types_at(inputs, "apply").is_empty() {
        out.push((PortName::new_static("apply"), ty("apply")));
    }
    out.push((PortName::new_static("transform"), ValueType::Transform));
    out
}

/// The outputs of a fitted step: `step` applied to `fit` and, when
/// connected, to `apply`, then the fitted `transform`.
pub fn apply_all(
    ctx: &kiln_engine::RunContext<'_>,
    fit: &crate::data::Dataset,
    step: impl Fn(&crate::data::Dataset) -> Result<crate::data::Dataset, kiln_engine::NodeError>,
    transform: kiln_engine::Value,
) -> Result<kiln_engine::Outputs, kiln_engine::NodeError> {
    let mut out = vec![(PortName::new_static("fit"), step(fit)?.into_value())];
    if let Some(apply) = ctx.opt_input("apply") {
        let apply = crate::data::Dataset::from_value(apply)?;
        out.push((PortName::new_static("apply"), step(&apply)?.into_value()));
    }
    out.push((PortName::new_static("transform"), transform));
    Ok(out)
}

/// An error unless `data` has examples shaped like the fitted ones.
pub fn check_shape(
    data: &crate::data::Dataset,
    fitted: &[usize],
) -> Result<(), kiln_engine::NodeError> {
    let given = data.features.dims().get(1..).unwrap_or(&[]);
    if given == fitted {
        Ok(())
    } else {
        Err(kiln_engine::NodeError::new(format!(
            "`apply` has features of shape {given:?} per example, but `fit` has {fitted:?}: \
             transform data with the same columns it was fitted on"
        )))
    }
}
