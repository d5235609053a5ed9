//! JSON views of values, for `sink.json` and for the outputs printed after a run.

use candle_core::DType;
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Map, Value as Json};

use crate::data::Dataset;
use crate::text::Texts;

/// Tensors with at most this many elements are shown with their values.
const SHOWN_VALUES: usize = 64;

/// Documents as records `{"text": …, <target>: <label>}`.
fn text_records(texts: &Texts) -> Result<Json, NodeError> {
    let labels = texts.as_targets()?.to_rows()?;
    Ok(Json::Array(
        texts
            .texts
            .iter()
            .zip(labels)
            .map(|(text, label)| {
                let mut row = Map::new();
                row.insert("text".into(), json!(text));
                if let Json::Object(cells) = label {
                    row.extend(cells);
                }
                Json::Object(row)
            })
            .collect(),
    ))
}

/// A JSON view: metrics and reports as they are, tables and documents as records, other
/// values as metadata plus tensor shapes.
pub fn to_json(value: &Value) -> Result<Json, NodeError> {
    if value.tensors().is_empty() {
        return Ok(value.meta().clone());
    }
    if value.ty() == ValueType::Table {
        return Ok(Json::Array(Dataset::from_value(value)?.to_rows()?));
    }
    if value.ty() == ValueType::Text {
        return text_records(&Texts::from_value(value)?);
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
