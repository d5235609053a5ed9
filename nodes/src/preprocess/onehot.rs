//! `preprocess.onehot`: categorical columns -> one indicator column per category.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kiln_engine::{
    Config, InputTypes, KindSpec, NodeError, NodeKind, OutputTypes, Outputs, RunContext, Settings,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::data::Dataset;

/// Expands categorical columns into indicator columns.
pub struct OneHot;

/// What `preprocess.onehot` reads from `with:`.
#[derive(Config, Deserialize)]
struct OnehotSettings {
    /// the columns to encode (default: every categorical column)
    columns: Option<Vec<String>>,
}

impl NodeKind for OneHot {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.onehot",
            version: 1,
            doc: "Replaces each categorical column (see `source.csv`'s `categorical`) by one 0/1 column per category, named `column=category`.
The categories are those of `fit`; `apply` is encoded with them unchanged, so a category `fit` never saw becomes all zeros, and a missing cell too.",
            inputs: super::fitted::inputs(ValueType::Table, "the table whose categories define the columns", "a table encoded with `fit`'s categories"),
            outputs: super::fitted::outputs(ValueType::Table, "the categories of each encoded column"),
            settings: OnehotSettings::specs(),
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
        let chosen: Vec<String> = match ctx.settings().read::<OnehotSettings>()?.columns {
            Some(cols) => cols,
            None => fit.categories.keys().cloned().collect(),
        };
        let mut vocab = BTreeMap::new();
        for col in &chosen {
            let names = fit.categories.get(col).ok_or_else(|| {
                NodeError::new(format!(
                    "setting `columns`: `{col}` is not a categorical column (categorical: {})",
                    fit.categories
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            vocab.insert(col.clone(), names.clone());
        }
        let transform = Value::from_json(
            ValueType::Transform,
            json!({ "transform": "onehot", "categories": vocab }),
        );
        super::fitted::apply_all(ctx, &fit, transform, apply)
    }
}

/// Applies a fitted `onehot` transform.
pub(crate) fn apply(transform: &Value, data: &Dataset) -> Result<Dataset, NodeError> {
    let vocab: BTreeMap<String, Vec<String>> = transform
        .meta()
        .get("categories")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .ok_or_else(|| NodeError::new("the onehot transform has no categories"))?;
    encode(data, &vocab)
}

/// Encodes `data` with the categories in `vocab` (column -> names).
fn encode(data: &Dataset, vocab: &BTreeMap<String, Vec<String>>) -> Result<Dataset, NodeError> {
    let columns = data
        .columns
        .clone()
        .ok_or_else(|| NodeError::new("onehot needs a table with named columns"))?;
    let rows: Vec<Vec<f32>> = data
        .features
        .tensor()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
    let mut names = Vec::new();
    // For each input column: None (copied) or Some(map from its own index to fit's index, width).
    let mut plan: Vec<Option<(Vec<Option<usize>>, usize)>> = Vec::new();
    for col in &columns {
        match vocab.get(col) {
            Some(fit_names) => {
                let own = data.categories.get(col).ok_or_else(|| {
                    NodeError::new(format!(
                        "`{col}` is categorical in `fit` but not in this table"
                    ))
                })?;
                let map = own
                    .iter()
                    .map(|name| fit_names.iter().position(|f| f == name))
                    .collect();
                names.extend(fit_names.iter().map(|c| format!("{col}={c}")));
                plan.push(Some((map, fit_names.len())));
            }
            None => {
                names.push(col.clone());
                plan.push(None);
            }
        }
    }
    let width = names.len();
    let mut values = Vec::with_capacity(rows.len() * width);
    for row in &rows {
        for (x, how) in row.iter().zip(&plan) {
            match how {
                None => values.push(*x),
                Some((map, k)) => {
                    let hot = if x.is_nan() {
                        None
                    } else {
                        map.get(*x as usize).copied().flatten()
                    };
                    values.extend((0..*k).map(|i| if Some(i) == hot { 1.0 } else { 0.0 }));
                }
            }
        }
    }
    let mut categories = data.categories.clone();
    categories.retain(|c, _| !vocab.contains_key(c));
    Ok(Dataset {
        features: Tensor::from_vec(values, (rows.len(), width), &Device::Cpu)?.into(),
        columns: Some(names),
        target: data.target.clone(),
        categories,
    })
}
