//! Turning scores into answers: `postprocess.softmax`, `postprocess.argmax`,
//! `postprocess.threshold`, `postprocess.topk` and `postprocess.decode`.
//!
//! Scores are datasets whose columns are the class labels (what
//! `infer.predict` gives). A decision is a one-column dataset `class` holding
//! class indices, with the label names kept as that column's categories, so
//! `sink.csv` writes names and `postprocess.decode` turns them into text.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::data::Dataset;

fn scores_input() -> InputSpec {
    InputSpec::required(
        "predictions",
        ValueType::Dataset,
        "scores, one column per class (from `infer.predict`)",
    )
}

fn scores(ctx: &RunContext<'_>) -> Result<(Dataset, Vec<String>), NodeError> {
    let data = Dataset::from_value(ctx.input("predictions")?)?;
    if data.features.tensor()?.rank() != 2 {
        return Err(NodeError::new(format!(
            "scores should be one row per example, one column per class, not shape {:?}",
            data.features.dims()
        )));
    }
    let k = data.features.tensor()?.dim(1)?;
    let labels = data
        .columns
        .clone()
        .unwrap_or_else(|| (0..k).map(|i| i.to_string()).collect());
    Ok((data, labels))
}

/// A one-column dataset of class indices named by `labels`.
fn classes(data: &Dataset, idx: Vec<u32>, labels: Vec<String>) -> Result<Value, NodeError> {
    let n = idx.len();
    let values: Vec<f32> = idx.into_iter().map(|i| i as f32).collect();
    Ok(Dataset {
        features: Tensor::from_vec(values, (n, 1), &Device::Cpu)?.into(),
        columns: Some(vec!["class".into()]),
        target: data.target.clone(),
        categories: BTreeMap::from([("class".to_string(), labels)]),
    }
    .into_value())
}

/// `postprocess.softmax`.
pub struct Softmax;

/// What `postprocess.softmax` reads from `with:`.
#[derive(Config, Deserialize)]
struct SoftmaxSettings {
    /// scores are divided by it first
    #[setting(default = 1.0, gt = 0.0)]
    temperature: f64,
}

impl NodeKind for Softmax {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.softmax",
            version: 1,
            doc: "Turns raw scores (logits) into probabilities that sum to 1 per example, optionally sharpened or softened by `temperature`.",
            inputs: vec![scores_input()],
            outputs: vec![OutputSpec::new("probabilities", ValueType::Dataset, "one probability per class")],
            settings: SoftmaxSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (data, _) = scores(ctx)?;
        let t = ctx.settings().read::<SoftmaxSettings>()?.temperature;
        let features = candle_nn::ops::softmax(
            &(data.features.tensor()?.to_dtype(DType::F32)? / t)?,
            D::Minus1,
        )?;
        Ok(vec![(
            PortName::new_static("probabilities"),
            Dataset {
                features: features.into(),
                ..data
            }
            .into_value(),
        )])
    }
}

/// `postprocess.argmax`.
pub struct Argmax;

impl NodeKind for Argmax {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.argmax",
            version: 1,
            doc: "Picks the class with the highest score for each example.",
            inputs: vec![scores_input()],
            outputs: vec![OutputSpec::new(
                "classes",
                ValueType::Dataset,
                "column `class`: the chosen class, named by its label",
            )],
            settings: vec![],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (data, labels) = scores(ctx)?;
        let idx = data
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        Ok(vec![(
            PortName::new_static("classes"),
            classes(&data, idx, labels)?,
        )])
    }
}

/// `postprocess.threshold`.
pub struct Threshold;

/// What `postprocess.threshold` reads from `with:`.
#[derive(Config, Deserialize)]
struct ThresholdSettings {
    /// the score at which the answer is yes
    #[setting(default = 0.5, min = 0.0, max = 1.0)]
    threshold: f64,
    /// the class whose score is tested (default: the last column)
    class: Option<String>,
}

impl NodeKind for Threshold {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.threshold",
            version: 1,
            doc: "A yes/no decision per example: is the score of one class at least `threshold`?
With one score column (a binary model's probability) that column is used; otherwise the class named by `class`.",
            inputs: vec![scores_input()],
            outputs: vec![OutputSpec::new("classes", ValueType::Dataset, "column `class`: `no` (0) or `yes` (1)")],
            settings: ThresholdSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (data, labels) = scores(ctx)?;
        let s: ThresholdSettings = ctx.settings().read()?;
        let column = match &s.class {
            Some(name) => labels.iter().position(|l| l == name).ok_or_else(|| {
                NodeError::new(format!(
                    "setting `class`: no class `{name}` (classes: {})",
                    labels.join(", ")
                ))
            })?,
            None => labels.len().saturating_sub(1),
        };
        let t = s.threshold as f32;
        let col = data
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .narrow(1, column, 1)?
            .flatten_all()?;
        let idx = col
            .to_vec1::<f32>()?
            .into_iter()
            .map(|p| u32::from(p >= t))
            .collect();
        let name = &labels[column];
        Ok(vec![(
            PortName::new_static("classes"),
            classes(&data, idx, vec![format!("not {name}"), name.clone()])?,
        )])
    }
}

/// `postprocess.topk`.
pub struct TopK;

/// What `postprocess.topk` reads from `with:`.
#[derive(Config, Deserialize)]
struct TopKSettings {
    /// how many classes to keep
    #[setting(default = 3, min = 1)]
    k: usize,
}

impl NodeKind for TopK {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.topk",
            version: 1,
            doc: "The `k` best classes of each example with their scores, best first.",
            inputs: vec![scores_input()],
            outputs: vec![OutputSpec::new(
                "top",
                ValueType::Report,
                "per example, a list of { label, score }",
            )],
            settings: TopKSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (data, labels) = scores(ctx)?;
        let k = ctx.settings().read::<TopKSettings>()?.k.min(labels.len());
        let rows: Vec<Vec<f32>> = data
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        let top: Vec<_> = rows
            .iter()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                order[..k]
                    .iter()
                    .map(|&c| json!({ "label": labels[c], "score": row[c] }))
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(vec![(
            PortName::new_static("top"),
            Value::from_json(ValueType::Report, json!({ "k": k, "rows": top })),
        )])
    }
}

/// `postprocess.decode`.
pub struct Decode;

impl NodeKind for Decode {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.decode",
            version: 1,
            doc: "Turns decisions into label names: from `classes` (argmax, threshold) or straight from scores (the best class of each).
The names are those fitted upstream (the training data's labels, carried by the model), so served and offline answers agree.",
            inputs: vec![InputSpec::required("data", ValueType::Dataset, "classes, or scores with one column per class")],
            outputs: vec![OutputSpec::new("labels", ValueType::Text, "one label per example")],
            settings: vec![],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let data = Dataset::from_value(ctx.input("data")?)?;
        let features = data
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?;
        let (idx, names): (Vec<u32>, Vec<String>) = match data.categories.get("class") {
            Some(names) if data.columns.as_deref() == Some(&["class".to_string()][..]) => (
                features
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|c| c as u32)
                    .collect(),
                names.clone(),
            ),
            _ => {
                let k = features.dim(1)?;
                let names = data
                    .columns
                    .clone()
                    .unwrap_or_else(|| (0..k).map(|i| i.to_string()).collect());
                (features.argmax(D::Minus1)?.to_vec1::<u32>()?, names)
            }
        };
        let labels: Vec<&str> = idx
            .iter()
            .map(|&i| names.get(i as usize).map_or("?", String::as_str))
            .collect();
        Ok(vec![(
            PortName::new_static("labels"),
            Value::from_json(ValueType::Text, json!({ "values": labels })),
        )])
    }
}
