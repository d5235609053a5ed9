//! `infer.predict`: a trained model's scores for a dataset.

use candle_core::{DType, D};
use kiln_engine::{
    InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    SettingSpec, SettingType, Value, ValueType,
};
use serde_json::json;

use crate::data::Dataset;
use crate::graph::Graph;
use crate::model::{prepared, Prepared};

/// Runs a trained model over a dataset in batches.
pub struct Predict;

impl NodeKind for Predict {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "infer.predict",
            version: 3,
            doc: "Runs a trained model over a dataset, in batches, on the node's device.
Gives a dataset whose features are the scores: class probabilities (one column per label) for classification, predicted values for regression; the input's target, if any, is kept for scoring.",
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "a trained model"),
                InputSpec::required("data", ValueType::Dataset, "examples shaped as the model was trained on (of a graph: every node, or every graph)").or(&[ValueType::Graph]),
            ],
            outputs: vec![OutputSpec::new("predictions", ValueType::Dataset, "the scores, one row per example")],
            settings: vec![
                SettingSpec::with_default("batch_size", SettingType::Int { min: Some(1), max: Some(1 << 20) }, json!(256), "examples per forward pass"),
                SettingSpec::with_default("scores", SettingType::Choice(&["probabilities", "logits"]), json!("probabilities"), "class scores as probabilities, or the raw outputs (for `postprocess.softmax`)"),
            ],
            side_effects: false,
        }
    }

    fn prepare(
        &self,
        fixed: &[(PortName, Vec<Value>)],
        device: &candle_core::Device,
    ) -> Result<(), NodeError> {
        let model = fixed
            .iter()
            .find(|(port, _)| port.as_str() == "model")
            .and_then(|(_, values)| values.first());
        if let Some(model) = model {
            prepared(model, device)?;
        }
        Ok(())
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let model = prepared(ctx.input("model")?, ctx.device())?;
        let data = ctx.input("data")?;
        let probabilities = ctx.settings().str("scores")? == "probabilities";
        let predictions = if data.ty() == ValueType::Graph {
            graph_scores(&model, &Graph::from_value(data)?, probabilities)?
        } else {
            scores(
                &model,
                &Dataset::from_value(data)?,
                ctx.settings().usize("batch_size")?,
                probabilities,
            )?
        };
        Ok(vec![(
            PortName::new_static("predictions"),
            predictions.into_value(),
        )])
    }
}

/// Scores of `model` on `data`: for classes, probabilities (or the raw
/// outputs when `probabilities` is false); for regression, the values.
pub fn scores(
    model: &Prepared,
    data: &Dataset,
    batch: usize,
    probabilities: bool,
) -> Result<Dataset, NodeError> {
    let given = &data.features.dims()[1..];
    if given != model.dims.input.as_slice() {
        return Err(NodeError::new(format!(
            "the model takes examples of shape {:?}, but the data's are {given:?}: preprocess it as the training data was",
            model.dims.input
        )));
    }
    let x = data
        .features
        .to_dtype(DType::F32)?
        .to_device(&model.device)?;
    let out = model.trained.predict(&x, batch)?;
    as_scores(out, model, probabilities, data.target.clone())
}

/// Scores of `model` for every example of `graph` (nodes, or graphs), in
/// order, with the graph's target.
pub fn graph_scores(
    model: &Prepared,
    graph: &Graph,
    probabilities: bool,
) -> Result<Dataset, NodeError> {
    let given = &graph.x.dims()[1..];
    if given != model.dims.input.as_slice() {
        return Err(NodeError::new(format!(
            "the model takes nodes with {:?} features, but the graph's have {given:?}: build the graph's features as the training graph's were",
            model.dims.input
        )));
    }
    let rows: Vec<u32> = (0..graph.examples() as u32).collect();
    let out = model.trained.predict_graph(graph, &rows, &model.device)?;
    as_scores(out, model, probabilities, graph.target.clone())
}

/// Outputs as a dataset of scores, with `target` kept for scoring.
fn as_scores(
    out: candle_core::Tensor,
    model: &Prepared,
    probabilities: bool,
    target: Option<crate::data::Target>,
) -> Result<Dataset, NodeError> {
    let (dims, task) = (&model.dims, &model.task);
    let (features, columns) = if task.is_classification() {
        if dims.output == 1 {
            (
                if probabilities {
                    candle_nn::ops::sigmoid(&out)?
                } else {
                    out
                },
                vec![format!(
                    "p({})",
                    task.labels
                        .as_ref()
                        .and_then(|l| l.get(1))
                        .map_or("1", |s| s.as_str())
                )],
            )
        } else {
            let labels = task
                .labels
                .clone()
                .unwrap_or_else(|| (0..dims.output).map(|i| i.to_string()).collect());
            let scores = if probabilities {
                candle_nn::ops::softmax(&out, D::Minus1)?
            } else {
                out
            };
            (scores, labels)
        }
    } else {
        (out, vec![task.target.clone()])
    };
    Ok(Dataset {
        features,
        columns: Some(columns),
        target,
        categories: Default::default(),
    })
}
