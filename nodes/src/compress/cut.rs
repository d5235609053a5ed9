//! `compress.cut`: removes layers whose input and output shapes match, so
//! the layers around them still fit together.

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Setting, SettingType, Settings, Value, ValueType,
};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::model::{Arch, ModelValue};

/// Cuts layers out of a trained model.
pub struct Cut;

/// A layer to remove: its index, or its name (`layers.1`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum LayerRef {
    Index(usize),
    Name(String),
}

impl LayerRef {
    fn index(&self) -> Option<usize> {
        match self {
            LayerRef::Index(i) => Some(*i),
            LayerRef::Name(name) => name.strip_prefix("layers.").and_then(|i| i.parse().ok()),
        }
    }
}

impl Setting for LayerRef {
    fn setting_type() -> SettingType {
        SettingType::OneOf(vec![SettingType::int_min(0), SettingType::Str])
    }
}

/// What `compress.cut` reads from `with:`.
#[derive(Config, Deserialize)]
struct CutSettings {
    /// layers to remove: indices, or names such as `layers.1`
    layers: Vec<LayerRef>,
}

impl NodeKind for Cut {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "compress.cut",
            version: 1,
            doc: "Removes layers from a trained model: an MLP's hidden layers, a CNN's stack entries (conv, pool, batch norm, dropout, dense), named `layers.N` or given by index. A layer can go when what it reads and what it gives have the same shape (a square dense layer, a conv that keeps channels and size, batch norm, dropout), so the next layer reads what the previous gave; otherwise the error names the layer and both shapes. The rest keep their trained weights; fine-tune afterwards to recover accuracy.",
            inputs: vec![InputSpec::required("model", ValueType::Model, "a trained model")],
            outputs: vec![
                OutputSpec::new("model", ValueType::Model, "the model without those layers"),
                OutputSpec::new("report", ValueType::Metrics, "the layers removed and the parameters left"),
            ],
            settings: CutSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<CutSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        s.layers
            .iter()
            .filter_map(|l| match l {
                LayerRef::Name(name) if l.index().is_none() => Some((
                    "layers".to_string(),
                    format!("`{name}` is not a layer index or a name such as `layers.1`"),
                )),
                _ => None,
            })
            .collect()
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let model = ModelValue::from_value(ctx.input("model")?)?;
        let s: CutSettings = ctx.settings().read()?;
        let targets = s
            .layers
            .iter()
            .map(|l| {
                l.index().ok_or_else(|| {
                    NodeError::new(format!(
                        "setting `layers`: {l:?} is not a layer index or a name such as `layers.1`"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (cut, report) = cut(model, &targets)?;
        Ok(vec![
            (PortName::new_static("model"), cut.into_value()),
            (
                PortName::new_static("report"),
                Value::from_json(ValueType::Metrics, report),
            ),
        ])
    }
}

fn cut(mut model: ModelValue, targets: &[usize]) -> Result<(ModelValue, Json), NodeError> {
    if !model.quantized.is_empty() {
        return Err(NodeError::new(
            "the model is quantized: cut first, then quantize",
        ));
    }
    let dims = model
        .dims
        .as_ref()
        .ok_or_else(|| NodeError::new("the model is not trained"))?;
    let layers = crate::model::layer_shapes(&model.arch, dims)?;
    let mut sorted = targets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &t in &sorted {
        let Some((reads, gives)) = layers.get(t) else {
            return Err(NodeError::new(format!(
                "setting `layers`: there is no `layers.{t}` (the model has layers.0 to layers.{})",
                layers.len().saturating_sub(1)
            )));
        };
        if reads != gives {
            return Err(NodeError::new(format!(
                "cannot cut `layers.{t}`: it reads {reads:?} and gives {gives:?}, so the layer after it could not read what the layer before gives; cut layers whose input and output shapes match"
            )));
        }
    }
    // From the last, so earlier indices stay valid.
    for &t in sorted.iter().rev() {
        let key = if matches!(Arch::of(&model.arch)?, Arch::Mlp(_)) {
            "hidden"
        } else {
            "layers"
        };
        if let Some(list) = model.arch[key].as_array_mut() {
            list.remove(t);
        }
        let prefix = format!("layers.{t}.");
        model.weights.retain(|name, _| !name.starts_with(&prefix));
        model.masks.retain(|name, _| !name.starts_with(&prefix));
        model.renumber_layers_after(t);
    }
    let params: usize = model.weights.values().map(|t| t.elem_count()).sum();
    let removed: Vec<String> = sorted.iter().map(|t| format!("layers.{t}")).collect();
    Ok((model, json!({ "removed": removed, "params": params })))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::nn::Mode;

    fn runs(m: &ModelValue, input: &[usize]) {
        let (trained, _, _) = m.load(&Device::Cpu).unwrap();
        let mut shape = vec![2];
        shape.extend_from_slice(input);
        let y = trained
            .net
            .forward(
                &Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap(),
                &mut Mode::eval(),
            )
            .unwrap();
        assert_eq!(y.dims(), [2, 3]);
    }

    #[test]
    fn square_layers_go_and_the_rest_still_fit() {
        let mlp = ModelValue::random(
            json!({"type": "mlp", "hidden": [8, 8, 4], "activation": "relu", "dropout": 0.0, "batch_norm": true}),
            &[5],
        );
        let (cut_mlp, report) = cut(mlp.clone(), &[1]).unwrap();
        assert_eq!(report["removed"], json!(["layers.1"]));
        assert_eq!(cut_mlp.arch["hidden"], json!([8, 4]));
        assert_eq!(cut_mlp.weights["layers.1.weight"].dims(), [4, 8]);
        assert!(cut_mlp.weights.contains_key("layers.1.bn.weight"));
        assert!(!cut_mlp.weights.contains_key("layers.2.weight"));
        runs(&cut_mlp, &[5]);
        let e = cut(mlp, &[2]).unwrap_err();
        assert!(
            e.message()
                .contains("cannot cut `layers.2`: it reads [8] and gives [4]"),
            "{e}"
        );

        let cnn = ModelValue::random(
            json!({
                "type": "cnn", "input_shape": [1, 8, 8], "activation": "relu",
                "layers": [
                    {"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}},
                    {"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}},
                    "batch_norm", {"dropout": {"p": 0.1}}, {"pool": {"size": 2}},
                ],
            }),
            &[64],
        );
        let (cut_cnn, _) = cut(cnn.clone(), &[1, 2, 3]).unwrap();
        assert_eq!(cut_cnn.arch["layers"].as_array().unwrap().len(), 2);
        assert_eq!(cut_cnn.weights["head.weight"].dims(), [3, 64]);
        runs(&cut_cnn, &[64]);
        let e = cut(cnn.clone(), &[4]).unwrap_err();
        assert!(
            e.message()
                .contains("`layers.4`: it reads [4, 8, 8] and gives [4, 4, 4]"),
            "{e}"
        );
        assert!(cut(cnn, &[9])
            .unwrap_err()
            .message()
            .contains("no `layers.9`"));
    }
}
