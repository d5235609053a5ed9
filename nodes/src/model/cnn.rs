//! `model.cnn`: a convolutional network described layer by layer.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, SettingType,
    Settings, ValueType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::model::ModelValue;
use crate::nn::batch_norm::BatchNorm;
use crate::nn::dense::{Dense, Quantized};
use crate::nn::dropout::dropout;
use crate::nn::{Activation, Dims, Mode, Network, UnitGroup};

/// One layer of the stack, as written in `layers:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// 2-D convolution, then the activation.
    Conv {
        /// Output channels.
        channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Max pooling over `size`×`size` windows (stride `size`).
    Pool {
        /// Window size.
        size: usize,
    },
    /// Average pooling over `size`×`size` windows.
    AvgPool {
        /// Window size.
        size: usize,
    },
    /// Batch normalisation over channels (or units after a dense layer).
    BatchNorm,
    /// Dropout with this probability while training.
    Dropout {
        /// Drop probability.
        p: f64,
    },
    /// Fully connected layer (flattens first), then the activation.
    Dense {
        /// Units.
        units: usize,
    },
}

const LAYER_KEYS: &[&str] = &["conv", "pool", "avg_pool", "batch_norm", "dropout", "dense"];

/// Reads one `layers:` item: `{conv: 16, kernel: 3, padding: 1}`, `{pool: 2}`, `{dense: 64}`, …
fn parse_layer(item: &Json) -> std::result::Result<Layer, String> {
    let map = item
        .as_object()
        .ok_or("each layer is a mapping such as `{ conv: 16, kernel: 3 }`")?;
    let kind = LAYER_KEYS
        .iter()
        .find(|k| map.contains_key(**k))
        .ok_or_else(|| {
            let given: Vec<&str> = map.keys().map(String::as_str).collect();
            let hint = given
                .iter()
                .find_map(|g| kiln_engine::ids::did_you_mean(g, LAYER_KEYS.iter().copied()))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            format!(
                "`{}` is not a layer: use one of {}{hint}",
                given.join(", "),
                LAYER_KEYS.join(", ")
            )
        })?;
    let allowed: &[&str] = match *kind {
        "conv" => &["conv", "kernel", "stride", "padding"],
        _ => &[kind],
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`{kind}` layers take no `{extra}` (they take: {})",
            allowed.join(", ")
        ));
    }
    let count = |key: &str, default: Option<usize>| -> std::result::Result<usize, String> {
        match map.get(key) {
            None => default.ok_or_else(|| format!("`{key}` is required")),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1 || key == "padding")
                .map(|n| n as usize)
                .ok_or_else(|| format!("`{key}` should be a positive integer, not {v}")),
        }
    };
    Ok(match *kind {
        "conv" => {
            let kernel = count("kernel", Some(3))?;
            Layer::Conv {
                channels: count("conv", None)?,
                kernel,
                stride: count("stride", Some(1))?,
                padding: count("padding", Some(kernel / 2))?,
            }
        }
        "pool" => Layer::Pool {
            size: count("pool", None)?,
        },
        "avg_pool" => Layer::AvgPool {
            size: count("avg_pool", None)?,
        },
        "batch_norm" => Layer::BatchNorm,
        "dropout" => Layer::Dropout {
            p: map
                .get("dropout")
                .and_then(Json::as_f64)
                .filter(|p| (0.0..1.0).contains(p))
                .ok_or("`dropout` should be a probability in [0, 1)")?,
        },
        _ => Layer::Dense {
            units: count("dense", None)?,
        },
    })
}

/// The CNN's architecture: the settings of `model.cnn` and what a model
/// value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct CnnConfig {
    /// channels, height and width of one example, e.g. [1, 8, 8]
    #[setting(min = 1)]
    pub input_shape: Vec<usize>,
    /// the layer stack, in order
    #[setting(ty = SettingType::list(SettingType::Object))]
    #[serde(deserialize_with = "stack")]
    pub layers: Vec<Layer>,
    /// activation after each conv and dense layer
    #[setting(default = "relu")]
    pub activation: Activation,
}

/// Reads the layer stack as a pipeline writes it (`{conv: 16, kernel: 3}`)
/// or as a model value records it (`{"conv": {"channels": 16, …}}`).
fn stack<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<Layer>, D::Error> {
    use serde::de::Error;
    let items = Vec::<Json>::deserialize(d)?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let recorded = item.is_string()
                || item
                    .as_object()
                    .is_some_and(|m| m.len() == 1 && m.values().all(Json::is_object));
            if recorded {
                Layer::deserialize(item).map_err(D::Error::custom)
            } else {
                parse_layer(item).map_err(|e| D::Error::custom(format!("layer {i}: {e}")))
            }
        })
        .collect()
}

/// What each layer of the stack reads and gives: `[channels, height,
/// width]`, or `[units]` once flattened by a dense layer.
pub fn layer_shapes(cfg: &CnnConfig) -> Vec<crate::nn::LayerShapes> {
    let mut shape = cfg.input_shape.clone();
    let mut out = Vec::new();
    for layer in &cfg.layers {
        let before = shape.clone();
        match layer {
            Layer::Conv {
                channels,
                kernel,
                stride,
                padding,
            } if shape.len() == 3 => {
                let side = |x: usize| (x + 2 * padding).saturating_sub(*kernel) / stride + 1;
                shape = vec![*channels, side(shape[1]), side(shape[2])];
            }
            Layer::Pool { size } | Layer::AvgPool { size } if shape.len() == 3 => {
                shape = vec![shape[0], shape[1] / size, shape[2] / size];
            }
            Layer::Dense { units } => shape = vec![*units],
            _ => {}
        }
        out.push((before, shape.clone()));
    }
    out
}

/// What structured pruning can remove: the channels of each conv layer and
/// the units of each dense layer.
pub fn unit_groups(cfg: &CnnConfig) -> Vec<UnitGroup> {
    // Spatial size after each layer, to know how many flattened columns one
    // channel feeds into the first dense layer.
    let after: Vec<usize> = layer_shapes(cfg)
        .into_iter()
        .map(|(_, out)| out.iter().skip(1).product())
        .collect();
    let mut groups = Vec::new();
    for (i, layer) in cfg.layers.iter().enumerate() {
        let (units, arch_path, spatial) = match layer {
            Layer::Conv { channels, .. } => (*channels, format!("/layers/{i}/conv/channels"), true),
            Layer::Dense { units } => (*units, format!("/layers/{i}/dense/units"), false),
            _ => continue,
        };
        let mut producers = vec![format!("layers.{i}.weight"), format!("layers.{i}.bias")];
        let mut consumer = (
            "head.weight".to_string(),
            if spatial {
                after[cfg.layers.len() - 1]
            } else {
                1
            },
        );
        for (j, next) in cfg.layers.iter().enumerate().skip(i + 1) {
            match next {
                Layer::BatchNorm => {
                    for p in ["weight", "bias", "running_mean", "running_var"] {
                        producers.push(format!("layers.{j}.{p}"));
                    }
                }
                Layer::Conv { .. } => {
                    consumer = (format!("layers.{j}.weight"), 1);
                    break;
                }
                Layer::Dense { .. } => {
                    let group = if spatial { after[j - 1] } else { 1 };
                    consumer = (format!("layers.{j}.weight"), group);
                    break;
                }
                _ => {}
            }
        }
        groups.push(UnitGroup {
            layer: format!("layers.{i}"),
            units,
            arch_path,
            producers,
            consumers: vec![consumer],
        });
    }
    groups
}

enum Built {
    Conv(Conv2d),
    Pool(usize),
    AvgPool(usize),
    BatchNorm(BatchNorm),
    Dropout(f64),
    Dense(Dense),
}

/// The network: the layer stack, then a linear head.
pub struct Cnn {
    layers: Vec<Built>,
    head: Dense,
    cfg: CnnConfig,
}

impl Cnn {
    /// Builds the stack; weights are named `layers.{i}.weight`, `head.weight`.
    pub fn new(
        cfg: &CnnConfig,
        dims: &Dims,
        vb: VarBuilder,
        quantized: &Quantized,
    ) -> Result<Self> {
        let n_in: usize = dims.input.iter().product();
        let n_shape: usize = cfg.input_shape.iter().product();
        if cfg.input_shape.len() != 3 || n_in != n_shape {
            candle_core::bail!(
                "`input_shape: {:?}` holds {n_shape} values, but each example has {n_in} ({:?})",
                cfg.input_shape,
                dims.input
            );
        }
        let (mut c, mut h, mut w) = (cfg.input_shape[0], cfg.input_shape[1], cfg.input_shape[2]);
        let mut flat: Option<usize> = None;
        let mut layers = Vec::new();
        for (i, layer) in cfg.layers.iter().enumerate() {
            let vb = vb.pp(format!("layers.{i}"));
            let built = match layer {
                Layer::Conv {
                    channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    if flat.is_some() {
                        candle_core::bail!("layer {i}: a conv layer cannot follow a dense layer");
                    }
                    let conf = Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        ..Default::default()
                    };
                    let conv = candle_nn::conv2d(c, *channels, *kernel, conf, vb)?;
                    let out = |x: usize| {
                        (x + 2 * padding)
                            .checked_sub(*kernel)
                            .map(|d| d / stride + 1)
                    };
                    (h, w) = match (out(h), out(w)) {
                        (Some(h), Some(w)) if h > 0 && w > 0 => (h, w),
                        _ => candle_core::bail!(
                            "layer {i}: a {kernel}×{kernel} kernel does not fit a {h}×{w} input"
                        ),
                    };
                    c = *channels;
                    Built::Conv(conv)
                }
                Layer::Pool { size } | Layer::AvgPool { size } => {
                    if flat.is_some() || h < *size || w < *size {
                        candle_core::bail!(
                            "layer {i}: cannot pool {size}×{size} over a {h}×{w} input"
                        );
                    }
                    (h, w) = (h / size, w / size);
                    if matches!(layer, Layer::Pool { .. }) {
                        Built::Pool(*size)
                    } else {
                        Built::AvgPool(*size)
                    }
                }
                Layer::BatchNorm => Built::BatchNorm(BatchNorm::new(flat.unwrap_or(c), vb)?),
                Layer::Dropout { p } => Built::Dropout(*p),
                Layer::Dense { units } => {
                    let width = flat.unwrap_or(c * h * w);
                    flat = Some(*units);
                    Built::Dense(Dense::new(width, *units, vb, quantized)?)
                }
            };
            layers.push(built);
        }
        let head = Dense::new(
            flat.unwrap_or(c * h * w),
            dims.output,
            vb.pp("head"),
            quantized,
        )?;
        Ok(Cnn {
            layers,
            head,
            cfg: cfg.clone(),
        })
    }
}

impl Network for Cnn {
    fn forward(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let s = &self.cfg.input_shape;
        let mut h = x.reshape((x.dim(0)?, s[0], s[1], s[2]))?;
        for layer in &self.layers {
            h = match layer {
                Built::Conv(conv) => self
                    .cfg
                    .activation
                    .apply(&crate::nn::conv::conv2d(conv, &h)?)?,
                Built::Pool(size) => crate::nn::pool::max_pool2d(&h, *size)?,
                Built::AvgPool(size) => h.avg_pool2d(*size)?,
                Built::BatchNorm(bn) => bn.forward(&h, mode)?,
                Built::Dropout(p) => dropout(&h, *p, mode)?,
                Built::Dense(linear) => self
                    .cfg
                    .activation
                    .apply(&linear.forward(&h.flatten_from(1)?)?)?,
            };
        }
        self.head.forward(&h.flatten_from(1)?)
    }
}

/// The `model.cnn` kind.
pub struct CnnKind;

impl NodeKind for CnnKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.cnn",
            version: 1,
            doc: "A convolutional network: a stack of conv, pooling, batch-norm, dropout and dense layers, then a linear output layer.
Examples are read as `input_shape` (channels × height × width); flat pixel rows of the same size are reshaped. Layers: `{ conv: 16, kernel: 3, stride: 1, padding: 1 }`, `{ pool: 2 }`, `{ avg_pool: 2 }`, `{ batch_norm: true }`, `{ dropout: 0.25 }`, `{ dense: 64 }`.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: CnnConfig::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let cfg = match settings.read_checked::<CnnConfig>() {
            Ok(cfg) => cfg,
            Err(problems) => return problems,
        };
        if cfg.input_shape.len() != 3 {
            return vec![(
                "input_shape".into(),
                format!(
                    "needs 3 numbers (channels, height, width), not {}",
                    cfg.input_shape.len()
                ),
            )];
        }
        Vec::new()
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model = ModelValue::configured("cnn", &ctx.settings().read::<CnnConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layers_parse_with_defaults_and_clear_errors() {
        assert_eq!(
            parse_layer(&json!({"conv": 16})).unwrap(),
            Layer::Conv {
                channels: 16,
                kernel: 3,
                stride: 1,
                padding: 1
            }
        );
        assert_eq!(
            parse_layer(&json!({"pool": 2})).unwrap(),
            Layer::Pool { size: 2 }
        );
        let e = parse_layer(&json!({"poll": 2})).unwrap_err();
        assert!(e.contains("did you mean `pool`"), "{e}");
        let e = parse_layer(&json!({"conv": 8, "kernal": 3})).unwrap_err();
        assert!(e.contains("take no `kernal`"), "{e}");
        assert!(parse_layer(&json!({"dropout": 1.5})).is_err());
    }
}
