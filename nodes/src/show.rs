//! JSON views of values, for `sink.json` and for the outputs printed after a run.

use candle_core::DType;
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Map, Value as Json};

use crate::data::Dataset;

/// Tensors with at most this many elements are shown with their values.
const SHOWN_VALUES: usize = 64;

/// A JSON view: metrics and reports as they are, tables as records, other
/// values as metadata plus tensor shapes.
pub fn to_json(value: &Value) -> Result<Json, NodeError> {
    if value.tensors().is_empty() {
        return Ok(value.meta().clone());
    }
    if value.ty() == ValueType::Table {
        return Ok(Json::Array(Dataset::from_value(value)?.to_rows()?));
    }
    let tensors: Map<String, Json> = value
        .tensors()
        .iter()
        .map(|(k, t)| {
            let mut desc =
                json!({ "dtype": format!("{:?}", t.dtype()).to_lowercase(), "shape": t.dims() });
            if t.elem_count() <= SHOWN_VALUES {
                if let Ok(values) = t
                    .flatten_all()
                    .and_then(|f| f.to_dtype(DType::F64))
                    .and_then(|f| f.to_vec1::<f64>())
                {
                    desc["values"] = json!(values);
                }
            }
            (k.clone(), desc)
        })
        .collect();
    Ok(json!({ "type": value.ty().name(), "meta": value.meta(), "tensors": tensors }))
}
