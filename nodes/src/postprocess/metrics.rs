//! `postprocess.metrics`: scores a model (or its predictions) against a dataset's target.

use candle_core::{DType, Device, D};
use kiln_engine::kind::types_at;
use kiln_engine::{
    InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, Value, ValueType,
};

use crate::data::Dataset;
use crate::graph::Graph;
use crate::model::{prepared, Prepared};

/// Scores predictions against targets.
pub struct Metrics;

impl NodeKind for Metrics {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.metrics",
            version: 3,
            doc: "Scores a model on a dataset: accuracy, precision, recall and F1 (macro and per class) and the confusion matrix for classes; MSE, MAE and R² for numbers.
Connect `model` and `data` (the model predicts `data`), or `predictions` from `infer.predict` and `data`.",
            inputs: vec![
                InputSpec::optional("model", ValueType::Model, "a trained model, run on `data`"),
                InputSpec::optional("predictions", ValueType::Dataset, "scores from `infer.predict`, instead of `model`"),
                InputSpec::required("data", ValueType::Dataset, "the examples with their true target (of a graph: its test part, or every example if unsplit)").or(&[ValueType::Graph]),
            ],
            outputs: vec![OutputSpec::new("metrics", ValueType::Metrics, "the scores")],
            settings: vec![],
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        spec: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        let model = !types_at(inputs, "model").is_empty();
        let predictions = !types_at(inputs, "predictions").is_empty();
        if model == predictions {
            return Err("connect exactly one of `model` and `predictions` (with `data`)".into());
        }
        Ok(spec
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.ty))
            .collect())
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let predictions = match (ctx.opt_input("model"), ctx.opt_input("predictions")) {
            (Some(model), _) => Scored::Model(prepared(model, ctx.device())?),
            (None, Some(p)) => Scored::Predictions(Dataset::from_value(p)?),
            (None, None) => return Err(NodeError::new("connect `model` or `predictions`")),
        };
        let metrics = score_value(predictions, ctx.input("data")?)?;
        Ok(vec![(
            PortName::new_static("metrics"),
            Value::from_json(ValueType::Metrics, metrics),
        )])
    }
}

/// What is scored: a model run on the data, or predictions made before.
pub(crate) enum Scored {
    Model(std::sync::Arc<Prepared>),
    Predictions(Dataset),
}

/// The task's metrics on `data_value`: a dataset, or a graph's test part
/// (every example if unsplit).
pub(crate) fn score_value(
    scored: Scored,
    data_value: &Value,
) -> Result<serde_json::Value, NodeError> {
    let graph = (data_value.ty() == ValueType::Graph)
        .then(|| Graph::from_value(data_value))
        .transpose()?;
    let data = match &graph {
        Some(g) => g.targets_of(&(0..g.examples() as u32).collect::<Vec<_>>())?,
        None => Dataset::from_value(data_value)?,
    };
    let predictions = match (scored, &graph) {
        (Scored::Model(model), Some(g)) => crate::infer::graph_scores(&model, g, true)?,
        (Scored::Model(model), None) => crate::infer::scores(&model, &data, 1024, true)?,
        (Scored::Predictions(p), _) => p,
    };
    // A graph is scored on its test part.
    let (predictions, data) = match &graph {
        Some(g) => {
            if predictions.len() != g.examples() {
                return Err(NodeError::new(format!(
                    "{} predictions for a graph of {} examples: predict the same graph you score",
                    predictions.len(),
                    g.examples()
                )));
            }
            let rows = g.scored();
            if rows.is_empty() {
                return Err(NodeError::new(
                    "the graph's split has no test examples to score: lower `train` + `valid` on `preprocess.graph_split`",
                ));
            }
            (predictions.select(&rows)?, data.select(&rows)?)
        }
        None => (predictions, data),
    };
    score(&predictions, &data)
}

/// The task's metrics for `predictions` (scores, one row per example) of `data`.
pub(crate) fn score(predictions: &Dataset, data: &Dataset) -> Result<serde_json::Value, NodeError> {
    let truth = data.target.as_ref().ok_or_else(|| {
        NodeError::new("`data` has no target to score against: name it on the source (`target:`)")
    })?;
    if predictions.len() != data.len() {
        return Err(NodeError::new(format!(
            "{} predictions for {} examples: predict the same data you score",
            predictions.len(),
            data.len()
        )));
    }
    let scores = predictions
        .features
        .tensor()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?;
    Ok(if truth.is_classification() {
        let classes: Vec<u32> = if scores.dim(1)? == 1 {
            scores
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|p| u32::from(p > 0.5))
                .collect()
        } else {
            scores.argmax(D::Minus1)?.to_vec1::<u32>()?
        };
        let truth_idx = truth.values.to_device(&Device::Cpu)?.to_vec1::<u32>()?;
        let labels = truth.labels.clone().unwrap_or_default();
        crate::metrics::classification(&classes, &truth_idx, &labels)
    } else {
        let pred = scores.flatten_all()?.to_vec1::<f32>()?;
        let t = truth
            .values
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        crate::metrics::regression(&pred, &t)
    })
}
