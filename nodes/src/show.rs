//! JSON views of values, for `sink.json` and for the outputs printed after a run.

use candle_core::{DType, Device};
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
        return table_records(&Dataset::from_value(value)?);
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

fn table_records(data: &Dataset) -> Result<Json, NodeError> {
    let rows: Vec<Vec<f32>> = data
        .features
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
    let columns = data.columns.clone().unwrap_or_default();
    let targets: Option<Vec<Json>> = match &data.target {
        Some(t) if t.is_classification() => {
            let idx = t.values.to_device(&Device::Cpu)?.to_vec1::<u32>()?;
            Some(
                idx.into_iter()
                    .map(|i| match &t.labels {
                        Some(l) => json!(l.get(i as usize)),
                        None => json!(i),
                    })
                    .collect(),
            )
        }
        Some(t) => Some(
            t.values
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|x| json!(x))
                .collect(),
        ),
        None => None,
    };
    let target_name = data.target.as_ref().map(|t| t.name.clone());
    let records = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut rec: Map<String, Json> = columns
                .iter()
                .cloned()
                .zip(row.into_iter().map(|x| json!(x)))
                .collect();
            if let (Some(name), Some(t)) = (&target_name, &targets) {
                rec.insert(name.clone(), t[i].clone());
            }
            Json::Object(rec)
        })
        .collect();
    Ok(Json::Array(records))
}
