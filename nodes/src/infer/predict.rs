//! `infer.predict`: a trained model's scores for a dataset.

use candle_core::{DType, D};
use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};
use serde::Deserialize;

use crate::data::{Dataset, Features};
use crate::graph::Graph;
use crate::model::{prepared, Prepared};

/// Runs a trained model over a dataset in batches.
pub struct Predict;

kiln_engine::choices! {
    /// What a classifier's scores are.
    pub enum Scores {
        /// Softmax probabilities, one column per label.
        Probabilities = "probabilities",
        /// The raw outputs.
        Logits = "logits",
    }
}

/// What `infer.predict` reads from `with:`.
#[derive(Config, Deserialize)]
struct PredictSettings {
    /// examples per forward pass
    #[setting(default = 256, min = 1, max = 1 << 20)]
    batch_size: usize,
    /// class scores as probabilities, or the raw outputs (for `postprocess.softmax`)
    #[setting(default = "probabilities")]
    scores: Scores,
}

impl NodeKind for Predict {
    fn computes_on_device(&self) -> bool {
        true
    }

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
            settings: PredictSettings::specs(),
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
        let s: PredictSettings = ctx.settings().read()?;
        let probabilities = s.scores == Scores::Probabilities;
        let predictions = if data.ty() == ValueType::Graph {
            graph_scores(&model, &Graph::from_value(data)?, probabilities)?
        } else {
            scores(
                &model,
                &Dataset::from_value(data)?,
                s.batch_size,
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
    let wanted = model.dims.input.as_slice();
    let Some(x) = data.features.in_example_shape(wanted)? else {
        return Err(NodeError::new(format!(
            "the model takes examples of shape {wanted:?}, but the data's are {:?}: preprocess it as the training data was",
            data.features.example_shape()
        )));
    };
    let x = match x {
        Features::Dense(t) => Features::Dense(t.to_dtype(DType::F32)?.to_device(&model.device)?),
        sparse => sparse,
    };
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
        features: features.into(),
        columns: Some(columns),
        target,
        categories: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use serde_json::json;

    use super::*;
    use crate::model::ModelValue;

    #[test]
    fn flat_rows_with_as_many_values_read_in_the_models_shape() {
        let arch = json!({"type": "mlp", "hidden": [5], "activation": "relu", "dropout": 0.0, "batch_norm": false});
        let model = prepared(
            &ModelValue::random(arch, &[2, 2]).into_value(),
            &Device::Cpu,
        )
        .unwrap();
        let rows = |shape: &[usize]| Dataset {
            features: Tensor::arange(0f32, 8., &Device::Cpu)
                .unwrap()
                .reshape(shape)
                .unwrap()
                .into(),
            columns: None,
            target: None,
            categories: Default::default(),
        };
        let shaped = scores(&model, &rows(&[2, 2, 2]), 16, true).unwrap();
        let flat = scores(&model, &rows(&[2, 4]), 16, true).unwrap();
        assert_eq!(
            shaped.features.tensor().unwrap().to_vec2::<f32>().unwrap(),
            flat.features.tensor().unwrap().to_vec2::<f32>().unwrap()
        );
        let e = scores(&model, &rows(&[4, 2]), 16, true).unwrap_err();
        assert!(
            e.message().contains("takes examples of shape [2, 2]"),
            "{e}"
        );
    }
}
