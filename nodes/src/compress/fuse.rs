//! `compress.fuse`: folds batch norm into the layers around it and merges
//! linear layers with nothing non-linear between them. Same outputs, fewer
//! layers.

use candle_core::{DType, Device, Tensor};
use kiln_engine::{
    InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, Value,
    ValueType,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use crate::model::{Arch, ModelValue};
use crate::nn::Mode;

/// Batch norm's epsilon (as in `nn::batch_norm`).
const EPS: f64 = 1e-5;

/// Fuses layers of a trained model.
pub struct Fuse;

impl NodeKind for Fuse {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "compress.fuse",
            version: 1,
            doc: "Folds batch norm into a neighbouring linear or conv layer and merges consecutive linear layers with no non-linearity between them (an MLP with `activation: identity`), so the model has fewer layers and gives the same outputs.
MLP: each hidden layer's batch norm goes into that layer. CNN: a batch norm (which follows the activation there) goes into the next dense layer, the head, or an unpadded conv, through dropout and average pooling, and through max pooling when every scale is positive; one that can't be folded exactly is kept and the report says why. The report gives the largest output difference from the original on random inputs.",
            inputs: vec![InputSpec::required("model", ValueType::Model, "a trained model")],
            outputs: vec![
                OutputSpec::new("model", ValueType::Model, "the fused model"),
                OutputSpec::new("report", ValueType::Metrics, "what was folded and merged, and the largest output difference"),
            ],
            settings: vec![],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let model = ModelValue::from_value(ctx.input("model")?)?;
        if model.dims.is_none() || !model.quantized.is_empty() {
            return Err(NodeError::new(
                "fuse a trained f32 model (before `compress.quantize`)",
            ));
        }
        let (fused, mut report) = fuse(model.clone())?;
        report["max_difference"] = json!(difference(&model, &fused, ctx.seed())?);
        Ok(vec![
            (PortName::new_static("model"), fused.into_value()),
            (
                PortName::new_static("report"),
                Value::from_json(ValueType::Metrics, report),
            ),
        ])
    }
}

fn fuse(model: ModelValue) -> Result<(ModelValue, Json), NodeError> {
    match Arch::of(&model.arch)? {
        Arch::Mlp(_) => fuse_mlp(model),
        Arch::Cnn(_) => fuse_cnn(model),
        other @ (Arch::Rnn(_)
        | Arch::Gnn(_)
        | Arch::Transformer(_)
        | Arch::Linear(_)
        | Arch::NaiveBayes(_)
        | Arch::Bert(_)) => {
            Err(NodeError::new(format!(
                "fusing works on `mlp` and `cnn` models, not `{}` (a linear model is one layer already)",
                other.name()
            )))
        }
    }
}

fn take(model: &mut ModelValue, name: &str) -> Result<Tensor, NodeError> {
    let t = model
        .weights
        .remove(name)
        .ok_or_else(|| NodeError::new(format!("the model has no `{name}`")))?;
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)
}

/// Batch norm at `prefix` as a per-channel affine map `x·scale + shift`.
fn affine(model: &mut ModelValue, prefix: &str) -> Result<(Tensor, Tensor), NodeError> {
    let gamma = take(model, &format!("{prefix}.weight"))?;
    let beta = take(model, &format!("{prefix}.bias"))?;
    let mean = take(model, &format!("{prefix}.running_mean"))?;
    let var = take(model, &format!("{prefix}.running_var"))?;
    let scale = (gamma / (var + EPS)?.sqrt()?)?;
    let shift = (beta - (mean * &scale)?)?;
    Ok((scale, shift))
}

fn fuse_mlp(mut model: ModelValue) -> Result<(ModelValue, Json), NodeError> {
    let hidden: Vec<usize> = serde_json::from_value(model.arch["hidden"].clone())
        .map_err(|e| NodeError::new(format!("the mlp architecture is malformed: {e}")))?;
    let mut folded = Vec::new();
    if model.arch["batch_norm"] == json!(true) {
        for i in 0..hidden.len() {
            // linear → batch norm: W' = diag(s)·W, b' = s·b + t.
            let (s, t) = affine(&mut model, &format!("layers.{i}.bn"))?;
            let w = take(&mut model, &format!("layers.{i}.weight"))?;
            let b = take(&mut model, &format!("layers.{i}.bias"))?;
            model.weights.insert(
                format!("layers.{i}.weight"),
                w.broadcast_mul(&s.unsqueeze(1)?)?,
            );
            model
                .weights
                .insert(format!("layers.{i}.bias"), ((b * &s)? + t)?);
            folded.push(
                json!({ "batch_norm": format!("layers.{i}.bn"), "into": format!("layers.{i}") }),
            );
        }
        model.arch["batch_norm"] = json!(false);
    }
    let mut merged = Vec::new();
    if model.arch["activation"] == json!("identity") && !hidden.is_empty() {
        // Nothing non-linear anywhere: the whole network is one linear map.
        let names: Vec<String> = (0..hidden.len())
            .map(|i| format!("layers.{i}"))
            .chain(["head".to_string()])
            .collect();
        let mut w = take(&mut model, &format!("{}.weight", names[0]))?;
        let mut b = take(&mut model, &format!("{}.bias", names[0]))?;
        for name in &names[1..] {
            let (w2, b2) = (
                take(&mut model, &format!("{name}.weight"))?,
                take(&mut model, &format!("{name}.bias"))?,
            );
            b = (w2.matmul(&b.unsqueeze(1)?)?.squeeze(1)? + b2)?;
            w = w2.matmul(&w)?;
        }
        model.weights.insert("head.weight".into(), w);
        model.weights.insert("head.bias".into(), b);
        model.arch["hidden"] = json!([]);
        merged = names;
    }
    if folded.is_empty() && merged.is_empty() {
        return Err(NodeError::new(
            "nothing to fuse: the MLP has no batch norm, and its activation is not `identity`",
        ));
    }
    Ok((model, json!({ "folded": folded, "merged": merged })))
}

fn fuse_cnn(mut model: ModelValue) -> Result<(ModelValue, Json), NodeError> {
    let mut folded = Vec::new();
    let mut kept = Vec::new();
    let mut j = 0;
    loop {
        let layers = model.arch["layers"].as_array().cloned().unwrap_or_default();
        let Some(at) = (j..layers.len()).find(|&k| layers[k] == json!("batch_norm")) else {
            break;
        };
        let prefix = format!("layers.{at}");
        let (scale, shift) = {
            let mut probe = model.clone();
            affine(&mut probe, &prefix)?
        };
        match target(&model, &layers, at, &scale)? {
            Err(why) => {
                kept.push(json!({ "batch_norm": prefix, "why": why }));
                j = at + 1;
            }
            Ok((into, group)) => {
                affine(&mut model, &prefix)?;
                fold_into(&mut model, &into, &scale, &shift, group)?;
                remove_layer(&mut model, at);
                folded.push(json!({ "batch_norm": prefix, "into": into }));
                j = at;
            }
        }
    }
    if folded.is_empty() {
        return Err(NodeError::new(format!(
            "nothing to fuse: {}",
            if kept.is_empty() {
                "the CNN has no batch norm".to_string()
            } else {
                "no batch norm can be folded exactly (see `kiln nodes compress.fuse`)".to_string()
            }
        )));
    }
    Ok((model, json!({ "folded": folded, "kept": kept })))
}

/// The layer a batch norm at `at` folds into (its weight prefix, and how
/// many flattened columns each channel feeds), or why it can't be.
fn target(
    model: &ModelValue,
    layers: &[Json],
    at: usize,
    scale: &Tensor,
) -> Result<Result<(String, usize), String>, NodeError> {
    let dims = model
        .dims
        .as_ref()
        .ok_or_else(|| NodeError::new("the model is not trained"))?;
    let shapes = crate::model::layer_shapes(&model.arch, dims)?;
    // How many flattened columns one channel of this shape feeds.
    let group = |shape: &[usize]| shape.iter().skip(1).product::<usize>().max(1);
    let positive = scale.min_all()?.to_scalar::<f32>()? > 0.0;
    for (k, l) in layers.iter().enumerate().skip(at + 1) {
        if l.get("dropout").is_some() || l.get("avg_pool").is_some() {
            continue;
        }
        if l.get("pool").is_some() {
            if positive {
                continue;
            }
            return Ok(Err("a max pool follows and some scales are negative".into()));
        }
        if let Some(c) = l.get("conv") {
            return Ok(if c["padding"].as_u64() == Some(0) {
                Ok((format!("layers.{k}"), 1))
            } else {
                Err(
                    "the next conv pads its input with zeros, which batch norm would have shifted"
                        .into(),
                )
            });
        }
        if l.get("dense").is_some() {
            return Ok(Ok((format!("layers.{k}"), group(&shapes[k].0))));
        }
        if *l == json!("batch_norm") {
            return Ok(Err("another batch norm follows".into()));
        }
    }
    let last = shapes.last().map_or(&[][..], |(_, out)| out.as_slice());
    Ok(Ok(("head".into(), group(last))))
}

/// `layer(s·x + t)` as a layer of `x`: input channels scaled, bias shifted.
fn fold_into(
    model: &mut ModelValue,
    layer: &str,
    s: &Tensor,
    t: &Tensor,
    group: usize,
) -> Result<(), NodeError> {
    let w = take(model, &format!("{layer}.weight"))?;
    let b = take(model, &format!("{layer}.bias"))?;
    let (w, b) = if w.rank() == 4 {
        // Conv [out, in, k, k], unpadded: every tap sees the shifted input.
        let w_t = w.sum((2, 3))?.matmul(&t.unsqueeze(1)?)?.squeeze(1)?;
        (w.broadcast_mul(&s.reshape((1, (), 1, 1))?)?, (b + w_t)?)
    } else {
        // Dense [out, channels·group]: each channel feeds `group` columns.
        let expand = |v: &Tensor| -> Result<Tensor, NodeError> {
            Ok(v.unsqueeze(1)?.repeat((1, group))?.flatten_all()?)
        };
        let (s, t) = (expand(s)?, expand(t)?);
        let shift = w.matmul(&t.unsqueeze(1)?)?.squeeze(1)?;
        (w.broadcast_mul(&s.unsqueeze(0)?)?, (b + shift)?)
    };
    model.weights.insert(format!("{layer}.weight"), w);
    model.weights.insert(format!("{layer}.bias"), b);
    Ok(())
}

/// Removes layer `at` from a CNN's stack; later layers' weights are renamed.
fn remove_layer(model: &mut ModelValue, at: usize) {
    if let Some(layers) = model.arch["layers"].as_array_mut() {
        layers.remove(at);
    }
    model.renumber_layers_after(at);
}

/// The largest output difference between two models on 64 random inputs.
fn difference(a: &ModelValue, b: &ModelValue, seed: u64) -> Result<f64, NodeError> {
    let dims = a
        .dims
        .clone()
        .ok_or_else(|| NodeError::new("untrained model"))?;
    let n: usize = dims.input.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..64 * n).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut shape = vec![64];
    shape.extend(&dims.input);
    let x = Tensor::from_vec(values, shape, &Device::Cpu)?;
    let out = |m: &ModelValue| -> Result<Tensor, NodeError> {
        let (trained, _, _) = m.load(&Device::Cpu)?;
        Ok(trained.net.forward(&x, &mut Mode::eval())?)
    };
    Ok((out(a)? - out(b)?)?.abs()?.max_all()?.to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose batch norms have non-trivial parameters and statistics.
    fn with_statistics(mut m: ModelValue) -> ModelValue {
        let prefixes: Vec<String> = match m.arch_type() {
            "mlp" => (0..m.arch["hidden"].as_array().unwrap().len())
                .map(|i| format!("layers.{i}.bn"))
                .collect(),
            _ => m.arch["layers"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, l)| **l == json!("batch_norm"))
                .map(|(i, _)| format!("layers.{i}"))
                .collect(),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for prefix in prefixes {
            for (param, lo, hi) in [
                ("weight", 0.5, 1.5),
                ("bias", -0.5, 0.5),
                ("running_mean", -0.5, 0.5),
                ("running_var", 0.5, 2.0),
            ] {
                let name = format!("{prefix}.{param}");
                let n = m.weights[&name].elem_count();
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
                m.weights
                    .insert(name, Tensor::from_vec(v, n, &Device::Cpu).unwrap());
            }
        }
        m
    }

    #[test]
    fn folded_batch_norm_gives_the_same_outputs() {
        let mlp = with_statistics(ModelValue::random(
            json!({"type": "mlp", "hidden": [12, 6], "activation": "relu", "dropout": 0.0, "batch_norm": true}),
            &[5],
        ));
        let (fused, report) = fuse(mlp.clone()).unwrap();
        assert_eq!(report["folded"].as_array().unwrap().len(), 2);
        assert!(!fused.weights.keys().any(|k| k.contains("bn")));
        assert!(difference(&mlp, &fused, 1).unwrap() < 1e-5);

        let cnn = with_statistics(ModelValue::random(
            json!({
                "type": "cnn", "input_shape": [1, 8, 8], "activation": "relu",
                "layers": [
                    {"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}}, "batch_norm",
                    {"pool": {"size": 2}},
                    {"conv": {"channels": 3, "kernel": 3, "stride": 1, "padding": 0}}, "batch_norm",
                    {"dense": {"units": 5}}, "batch_norm",
                ],
            }),
            &[64],
        ));
        let (fused, report) = fuse(cnn.clone()).unwrap();
        assert_eq!(report["folded"].as_array().unwrap().len(), 3, "{report}");
        assert_eq!(fused.arch["layers"].as_array().unwrap().len(), 4);
        assert!(difference(&cnn, &fused, 1).unwrap() < 1e-5);
    }

    #[test]
    fn linear_layers_without_activation_merge_into_one() {
        let mlp = ModelValue::random(
            json!({"type": "mlp", "hidden": [12, 6], "activation": "identity", "dropout": 0.0, "batch_norm": false}),
            &[5],
        );
        let (fused, report) = fuse(mlp.clone()).unwrap();
        assert_eq!(report["merged"].as_array().unwrap().len(), 3);
        assert_eq!(fused.weights.len(), 2);
        assert_eq!(fused.weights["head.weight"].dims(), [3, 5]);
        assert!(difference(&mlp, &fused, 1).unwrap() < 1e-5);
    }

    #[test]
    fn a_batch_norm_before_a_padded_conv_is_kept_and_said_so() {
        let cnn = with_statistics(ModelValue::random(
            json!({
                "type": "cnn", "input_shape": [1, 8, 8], "activation": "relu",
                "layers": [
                    {"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}}, "batch_norm",
                    {"conv": {"channels": 3, "kernel": 3, "stride": 1, "padding": 1}},
                ],
            }),
            &[64],
        ));
        let e = fuse(cnn).unwrap_err();
        assert!(e.message().contains("no batch norm can be folded"), "{e}");
    }
}
