//! `compress.prune`: magnitude pruning, unstructured (masks) or structured
//! (whole neurons and channels removed, so layers really shrink).

use candle_core::{DType, Device, Tensor};
use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::model::ModelValue;
use crate::nn::pruning::{magnitude_masks, prunable, GradualSchedule};
use crate::nn::UnitGroup;

kiln_engine::choices! {
    /// What is pruned (the `method` setting).
    enum Method {
        /// Single weights, by magnitude (held at zero by masks).
        Magnitude = "magnitude",
        /// Whole neurons and channels (the layers shrink).
        Structured = "structured",
    }
}

kiln_engine::choices! {
    /// Where magnitude pruning draws its threshold (the `scope` setting).
    enum Scope {
        /// One threshold over all layers.
        Global = "global",
        /// The same share in each layer.
        Layer = "layer",
    }
}

kiln_engine::choices! {
    /// When the sparsity is reached (the `schedule` setting).
    enum When {
        /// Now.
        Once = "once",
        /// Along a ramp during the next fine-tuning.
        Gradual = "gradual",
    }
}

/// Prunes a trained model.
pub struct Prune;

/// What `compress.prune` reads from `with:`.
#[derive(Config, Deserialize)]
struct PruneSettings {
    /// the share to remove, e.g. 0.9
    #[setting(min = 0.0, lt = 1.0)]
    sparsity: f64,
    /// single weights (masks), or whole neurons and channels
    #[setting(default = "magnitude")]
    method: Method,
    /// magnitude: one threshold over all layers, or the same share in each
    #[setting(default = "global")]
    scope: Scope,
    /// weights left whole, e.g. [head.weight]
    exclude: Option<Vec<String>>,
    /// prune now, or ramp the sparsity up during the next fine-tuning
    #[setting(default = "once")]
    schedule: When,
    /// `gradual`: the sparsity pruned now, where the ramp starts
    #[setting(default = 0.0, min = 0.0, lt = 1.0)]
    initial_sparsity: f64,
    /// `gradual`: fine-tuning epochs the ramp lasts (default: three quarters of them)
    #[setting(min = 1)]
    ramp_epochs: Option<usize>,
}

impl NodeKind for Prune {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "compress.prune",
            version: 2,
            doc: "Removes the smallest weights of a trained model.
`method: magnitude` zeroes the `sparsity` share of weights with the smallest magnitude, over all layers together (`scope: global`) or in each layer (`scope: layer`); weight matrices and kernels are pruned, biases and batch-norm parameters are not. The zeros are kept as masks in the model, so fine-tuning with `train.supervised` keeps them at zero.
`method: structured` removes the `sparsity` share of each hidden layer's neurons (MLP) or each conv layer's channels (CNN) with the smallest weight norm, with their biases, batch-norm parameters and the next layer's inputs: the model gets smaller layers, not just zeros.
`schedule: gradual` (magnitude only) prunes to `initial_sparsity` now and leaves a ramp in the model: the next `train.supervised` raises the sparsity to `sparsity` over `ramp_epochs` epochs (cubic, most weights first; default three quarters of its epochs) and fine-tunes the rest at the final sparsity.",
            inputs: vec![InputSpec::required("model", ValueType::Model, "a trained model")],
            outputs: vec![
                OutputSpec::new("model", ValueType::Model, "the pruned model"),
                OutputSpec::new("report", ValueType::Metrics, "per layer: shape and zeros before and after"),
            ],
            settings: PruneSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: PruneSettings = ctx.settings().read()?;
        let model = ModelValue::from_value(ctx.input("model")?)?;
        if !model.quantized.is_empty() {
            return Err(NodeError::new(
                "the model is quantized: prune first, then quantize",
            ));
        }
        if model.dims.is_none() {
            return Err(NodeError::new(
                "the model is not trained: prune the output of `train.supervised`",
            ));
        }
        let sparsity = s.sparsity;
        let exclude = s.exclude.unwrap_or_default();
        for name in &exclude {
            if !model.weights.contains_key(name) {
                return Err(NodeError::new(format!(
                    "setting `exclude`: the model has no weight `{name}` (its weights: {})",
                    prunable(&model.weights, &[]).join(", ")
                )));
            }
        }
        if model.prune_schedule.is_some() {
            return Err(NodeError::new(
                "the model already carries a gradual pruning ramp: fine-tune it with `train.supervised` before pruning again",
            ));
        }
        let global = s.scope == Scope::Global;
        let gradual = s.schedule == When::Gradual;
        let (pruned, report) = match (s.method, gradual) {
            (Method::Structured, true) => {
                return Err(NodeError::new(
                    "`schedule: gradual` ramps magnitude pruning: use `method: magnitude`, or `schedule: once` for structured pruning",
                ))
            }
            (Method::Structured, false) => structured(model, sparsity, &exclude)?,
            (Method::Magnitude, false) => magnitude(model, sparsity, global, &exclude)?,
            (Method::Magnitude, true) => {
                let initial = s.initial_sparsity;
                if initial > sparsity {
                    return Err(NodeError::new(format!(
                        "setting `initial_sparsity` ({initial}) is above `sparsity` ({sparsity}): the ramp only adds zeros"
                    )));
                }
                let (mut model, mut report) = magnitude(model, initial, global, &exclude)?;
                let schedule = GradualSchedule {
                    initial,
                    target: sparsity,
                    global,
                    exclude,
                    ramp_epochs: s.ramp_epochs,
                };
                report["schedule"] = json!(schedule);
                model.prune_schedule = Some(schedule);
                (model, report)
            }
        };
        Ok(vec![
            (PortName::new_static("model"), pruned.into_value()),
            (
                PortName::new_static("report"),
                Value::from_json(ValueType::Metrics, report),
            ),
        ])
    }
}

pub(crate) fn magnitude(
    mut model: ModelValue,
    sparsity: f64,
    global: bool,
    exclude: &[String],
) -> Result<(ModelValue, Json), NodeError> {
    let names = prunable(&model.weights, exclude);
    if names.is_empty() {
        return Err(NodeError::new(
            "the model has no weight matrices left to prune",
        ));
    }
    let masks = magnitude_masks(&model.weights, &model.masks, &names, sparsity, global)?;
    let mut layers = Vec::new();
    for (name, mask) in masks {
        let w = &model.weights[&name];
        let before = count_zeros(w)?;
        let mask = Tensor::from_vec(mask, w.shape(), w.device())?;
        let pruned = w.mul(&mask.to_dtype(w.dtype())?)?;
        // Stored as bytes: a quarter of an f32 mask's size.
        let mask = mask.to_dtype(DType::U8)?;
        let after = count_zeros(&pruned)?;
        layers.push(json!({
            "weight": name, "shape": w.dims(), "params": w.elem_count(),
            "zeros_before": before, "zeros_after": after,
            "sparsity": after as f64 / w.elem_count() as f64,
        }));
        model.weights.insert(name.clone(), pruned);
        model.masks.insert(name, mask);
    }
    let report = totals(&model, "magnitude", layers)?;
    Ok((model, report))
}

fn count_zeros(t: &Tensor) -> Result<usize, NodeError> {
    Ok(crate::nn::zeros_in(t)?)
}

/// Parameters and non-zero parameters of the whole model, with the layers.
fn totals(model: &ModelValue, method: &str, layers: Vec<Json>) -> Result<Json, NodeError> {
    let mut params = 0;
    let mut zeros = 0;
    for (name, t) in &model.weights {
        if crate::nn::batch_norm::is_statistic(name) {
            continue;
        }
        params += t.elem_count();
        zeros += count_zeros(t)?;
    }
    Ok(json!({
        "method": method,
        "params": params,
        "nonzero_params": params - zeros,
        "sparsity": zeros as f64 / params.max(1) as f64,
        "layers": layers,
    }))
}

fn structured(
    mut model: ModelValue,
    sparsity: f64,
    exclude: &[String],
) -> Result<(ModelValue, Json), NodeError> {
    if !model.masks.is_empty() {
        return Err(NodeError::new(
            "the model already carries magnitude-pruning masks: prune structurally first, then by magnitude",
        ));
    }
    let groups = crate::model::unit_groups(&model.arch)?;
    let mut layers = Vec::new();
    for g in groups {
        if exclude.contains(&g.producers[0]) {
            continue;
        }
        let keep_n = ((1.0 - sparsity) * g.units as f64).round().max(1.0) as usize;
        let keep = strongest(&model, &g, keep_n)?;
        shrink(&mut model, &g, &keep)?;
        layers.push(json!({
            "layer": g.layer, "units_before": g.units, "units_after": keep.len(), "kept": keep,
        }));
    }
    let report = totals(&model, "structured", layers)?;
    Ok((model, report))
}

/// The `n` units with the largest L2 norm of their weight rows, in order.
fn strongest(model: &ModelValue, g: &UnitGroup, n: usize) -> Result<Vec<u32>, NodeError> {
    let w = model
        .weights
        .get(&g.producers[0])
        .ok_or_else(|| NodeError::new(format!("the model has no weight `{}`", g.producers[0])))?;
    let norms: Vec<f32> = w
        .to_dtype(DType::F32)?
        .flatten_from(1)?
        .sqr()?
        .sum(1)?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    let mut order: Vec<usize> = (0..norms.len()).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut keep: Vec<u32> = order[..n.min(order.len())]
        .iter()
        .map(|&i| i as u32)
        .collect();
    keep.sort_unstable();
    Ok(keep)
}

/// Keeps only the units `keep` of group `g`: producers lose rows, consumers
/// lose the columns those units fed, the architecture gets the new count.
fn shrink(model: &mut ModelValue, g: &UnitGroup, keep: &[u32]) -> Result<(), NodeError> {
    for name in &g.producers {
        let Some(t) = model.weights.get(name) else {
            continue;
        };
        let idx = Tensor::from_slice(keep, keep.len(), t.device())?;
        let kept = t.index_select(&idx, 0)?;
        model.weights.insert(name.clone(), kept);
    }
    for (name, group) in &g.consumers {
        let Some(t) = model.weights.get(name) else {
            continue;
        };
        let columns: Vec<u32> = keep
            .iter()
            .flat_map(|&u| (u * *group as u32)..((u + 1) * *group as u32))
            .collect();
        let idx = Tensor::from_slice(&columns, columns.len(), t.device())?;
        let kept = t.index_select(&idx, 1)?.contiguous()?;
        model.weights.insert(name.clone(), kept);
    }
    let slot = model
        .arch
        .pointer_mut(&g.arch_path)
        .ok_or_else(|| NodeError::new(format!("the architecture has no `{}`", g.arch_path)))?;
    *slot = json!(keep.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Mode;

    fn model(arch: Json, input: &[usize]) -> ModelValue {
        ModelValue::random(arch, input)
    }

    fn mlp() -> ModelValue {
        let arch = json!({"type": "mlp", "hidden": [16, 8], "activation": "relu", "dropout": 0.0, "batch_norm": false});
        model(arch, &[10])
    }

    fn zeros(m: &ModelValue) -> usize {
        m.weights
            .values()
            .filter(|t| t.rank() >= 2)
            .map(|t| count_zeros(t).unwrap())
            .sum()
    }

    fn outputs(m: &ModelValue, x: &Tensor) -> Tensor {
        let (trained, _, _) = m.load(&Device::Cpu).unwrap();
        trained.net.forward(x, &mut Mode::eval()).unwrap()
    }

    #[test]
    fn magnitude_pruning_zeroes_exactly_the_share() {
        // 160 + 128 + 24 = 312 prunable weights.
        let (global, report) = magnitude(mlp(), 0.7, true, &[]).unwrap();
        assert_eq!(zeros(&global), 218);
        assert_eq!(report["nonzero_params"], 312 - 218 + 16 + 8 + 3);
        let (per_layer, _) = magnitude(mlp(), 0.7, false, &[]).unwrap();
        assert_eq!(zeros(&per_layer), 112 + 90 + 17);
        for (name, n) in [
            ("layers.0.weight", 112),
            ("layers.1.weight", 90),
            ("head.weight", 17),
        ] {
            assert_eq!(count_zeros(&per_layer.weights[name]).unwrap(), n, "{name}");
        }
        // Pruning again keeps the earlier zeros and adds to them.
        let (again, _) = magnitude(global, 0.8, true, &[]).unwrap();
        assert_eq!(zeros(&again), 250);
        // Excluded weights stay whole; masks mark exactly the zeros.
        let (kept, _) = magnitude(mlp(), 0.5, true, &["head.weight".to_string()]).unwrap();
        assert_eq!(count_zeros(&kept.weights["head.weight"]).unwrap(), 0);
        assert!(!kept.masks.contains_key("head.weight"));
        let mask = &kept.masks["layers.0.weight"];
        assert_eq!(
            count_zeros(mask).unwrap(),
            count_zeros(&kept.weights["layers.0.weight"]).unwrap()
        );
    }

    /// The shrunk model computes what the original computes with the removed
    /// units' weights zeroed (ReLU of zero is zero, so they feed nothing).
    fn assert_structured_equivalent(original: ModelValue, input: &[usize]) {
        let (pruned, report) = structured(original.clone(), 0.5, &[]).unwrap();
        let mut reference = original.clone();
        let groups = crate::model::unit_groups(&original.arch).unwrap();
        for (g, layer) in groups.iter().zip(report["layers"].as_array().unwrap()) {
            let kept: Vec<usize> = serde_json::from_value(layer["kept"].clone()).unwrap();
            assert_eq!(kept.len(), (g.units as f64 * 0.5).round() as usize);
            for name in &g.producers {
                let t = &reference.weights[name];
                let rows: Vec<f32> = (0..g.units)
                    .map(|u| if kept.contains(&u) { 1.0 } else { 0.0 })
                    .collect();
                let mut shape = vec![1; t.rank()];
                shape[0] = g.units;
                let mask = Tensor::from_vec(rows, shape, &Device::Cpu).unwrap();
                let zeroed = t.broadcast_mul(&mask).unwrap();
                reference.weights.insert(name.clone(), zeroed);
            }
        }
        let mut shape = vec![5];
        shape.extend_from_slice(input);
        let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
        let diff = (outputs(&pruned, &x) - outputs(&reference, &x))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "outputs differ by {diff}");
        let before: usize = original.weights.values().map(Tensor::elem_count).sum();
        let after: usize = pruned.weights.values().map(Tensor::elem_count).sum();
        assert!(after < before / 2, "{after} of {before} parameters left");
    }

    #[test]
    fn structured_pruning_shrinks_mlp_layers() {
        let m = mlp();
        let (pruned, _) = structured(m.clone(), 0.5, &[]).unwrap();
        assert_eq!(pruned.arch["hidden"], json!([8, 4]));
        assert_eq!(pruned.weights["layers.0.weight"].dims(), [8, 10]);
        assert_eq!(pruned.weights["layers.1.weight"].dims(), [4, 8]);
        assert_eq!(pruned.weights["head.weight"].dims(), [3, 4]);
        assert_structured_equivalent(m, &[10]);
    }

    #[test]
    fn structured_pruning_shrinks_cnn_channels_through_flattening() {
        let arch = json!({
            "type": "cnn", "input_shape": [1, 8, 8], "activation": "relu",
            "layers": [
                {"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}},
                {"pool": {"size": 2}},
                {"conv": {"channels": 6, "kernel": 3, "stride": 1, "padding": 1}},
                {"dense": {"units": 8}},
            ],
        });
        let m = model(arch, &[64]);
        let (pruned, _) = structured(m.clone(), 0.5, &[]).unwrap();
        assert_eq!(pruned.weights["layers.0.weight"].dims(), [2, 1, 3, 3]);
        assert_eq!(pruned.weights["layers.2.weight"].dims(), [3, 2, 3, 3]);
        // 3 channels of 4×4 after the pool feed the dense layer.
        assert_eq!(pruned.weights["layers.3.weight"].dims(), [4, 48]);
        assert_eq!(pruned.weights["head.weight"].dims(), [3, 4]);
        assert_structured_equivalent(m, &[64]);
    }
}
