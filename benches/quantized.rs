//! Quantized inference: LeNet-300-100's layers in f32 against Q8_0 and
//! Q4_0, as kiln's `Dense` layers run them and through candle's `QMatMul`
//! alone (`cargo bench --bench main -- quantized/`).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use criterion::{BenchmarkId, Criterion};
use kiln_nodes::nn::dense::{Dense, Quantized};

/// 784-300-100-10, inputs padded to the block size as `compress.quantize` does.
const LAYERS: [(usize, usize); 3] = [(800, 300), (320, 100), (128, 10)];

fn weights() -> Vec<Tensor> {
    LAYERS
        .iter()
        .map(|&(i, o)| Tensor::randn(0f32, 0.05, (o, i), &Device::Cpu).expect("weights"))
        .collect()
}

/// LeNet's three layers at batch 1 and 256 as kiln runs them (`Dense`:
/// f32, or quantized with the small-layer paths), and through candle's
/// `QMatMul` alone for reference.
pub fn lenet_layers(c: &mut Criterion) {
    crate::training::pin_threads();
    let mut group = c.benchmark_group("quantized");
    let w = weights();
    let formats: [(&str, Option<GgmlDType>); 3] = [
        ("f32", None),
        ("q8_0", Some(GgmlDType::Q8_0)),
        ("q4_0", Some(GgmlDType::Q4_0)),
    ];
    for (name, dtype) in formats {
        let mut tensors = HashMap::new();
        let mut quantized = Quantized::new();
        for (k, t) in w.iter().enumerate() {
            let o = LAYERS[k].1;
            let width = [784, 300, 100][k];
            tensors.insert(
                format!("l{k}.bias"),
                Tensor::zeros(o, DType::F32, &Device::Cpu).expect("bias"),
            );
            match dtype {
                None => {
                    tensors.insert(
                        format!("l{k}.weight"),
                        t.narrow(1, 0, width).expect("narrow"),
                    );
                }
                Some(d) => {
                    quantized.insert(
                        format!("l{k}.weight"),
                        Arc::new(QTensor::quantize(t, d).expect("quantize")),
                    );
                }
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let widths = [784, 300, 100];
        let layers: Vec<Dense> = (0..3)
            .map(|k| {
                Dense::new(widths[k], LAYERS[k].1, vb.pp(format!("l{k}")), &quantized)
                    .expect("dense")
            })
            .collect();
        for batch in [1usize, 256] {
            let x = Tensor::randn(0f32, 1.0, (batch, 784), &Device::Cpu).expect("input");
            group.bench_with_input(BenchmarkId::new(name, batch), &x, |b, x| {
                b.iter(|| {
                    let mut h = x.clone();
                    for layer in &layers {
                        h = layer.forward(&h).expect("forward");
                    }
                    h
                })
            });
        }
        if let Some(d) = dtype {
            let raw: Vec<QMatMul> = w
                .iter()
                .map(|t| {
                    QMatMul::from_qtensor(QTensor::quantize(t, d).expect("quantize"))
                        .expect("qmatmul")
                })
                .collect();
            let x = Tensor::randn(0f32, 1.0, (1, 800), &Device::Cpu).expect("input");
            group.bench_with_input(
                BenchmarkId::new(format!("qmatmul-{name}"), 1),
                &x,
                |b, x| {
                    b.iter(|| {
                        let mut h = x.clone();
                        for (k, layer) in raw.iter().enumerate() {
                            h = layer.forward(&h).expect("forward");
                            if k + 1 < raw.len() {
                                let pad = LAYERS[k + 1].0 - h.dim(1).expect("dim");
                                let zeros =
                                    Tensor::zeros((1, pad), h.dtype(), h.device()).expect("zeros");
                                h = Tensor::cat(&[&h, &zeros], 1).expect("pad");
                            }
                        }
                        h
                    })
                },
            );
        }
    }
    group.finish();
}

/// One 1024×1024 linear layer, the size where quantized products pay off:
/// as kiln's `Dense` runs it, and through candle's `QMatMul` alone.
pub fn large_linear(c: &mut Criterion) {
    crate::training::pin_threads();
    let mut group = c.benchmark_group("quantized-1024");
    let w = Tensor::randn(0f32, 0.05, (1024, 1024), &Device::Cpu).expect("weights");
    let formats: [(&str, Option<GgmlDType>); 4] = [
        ("f32", None),
        ("q8_0", Some(GgmlDType::Q8_0)),
        ("q4_0", Some(GgmlDType::Q4_0)),
        ("q4k", Some(GgmlDType::Q4K)),
    ];
    for (name, dtype) in formats {
        let mut tensors = HashMap::from([(
            "l.bias".to_string(),
            Tensor::zeros(1024, DType::F32, &Device::Cpu).expect("bias"),
        )]);
        let mut quantized = Quantized::new();
        match dtype {
            None => {
                tensors.insert("l.weight".into(), w.clone());
            }
            Some(d) => {
                let q = QTensor::quantize(&w, d).expect("quantize");
                quantized.insert("l.weight".into(), Arc::new(q));
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let layer = Dense::new(1024, 1024, vb.pp("l"), &quantized).expect("dense");
        let candle = dtype.map(|d| {
            QMatMul::from_qtensor(QTensor::quantize(&w, d).expect("quantize")).expect("qmatmul")
        });
        for batch in [1usize, 32] {
            let x = Tensor::randn(0f32, 1.0, (batch, 1024), &Device::Cpu).expect("input");
            group.bench_with_input(BenchmarkId::new(name, batch), &x, |b, x| {
                b.iter(|| layer.forward(x).expect("forward"))
            });
            if let Some(candle) = &candle {
                group.bench_with_input(
                    BenchmarkId::new(format!("qmatmul-{name}"), batch),
                    &x,
                    |b, x| b.iter(|| candle.forward(x).expect("forward")),
                );
            }
        }
    }
    group.finish();
}

/// The peer's MLP (64-128-128-10, as `pipelines/digits-mlp.yaml` trains
/// it) answering one example: the network's forward pass at batch 1, in f32
/// and with Q8_0 / Q4_0 layers.
pub fn mlp_batch_1(c: &mut Criterion) {
    use kiln_nodes::model::mlp::{Mlp, MlpConfig};
    use kiln_nodes::nn::{Activation, Dims, Mode, Network};

    crate::training::pin_threads();
    let mut group = c.benchmark_group("mlp-batch-1");
    let cfg = MlpConfig {
        hidden: vec![128, 128],
        activation: Activation::Relu,
        dropout: 0.0,
        batch_norm: false,
    };
    let dims = Dims {
        input: vec![64],
        output: 10,
        vocab: None,
    };
    let shapes = [
        ("layers.0", 128, 64),
        ("layers.1", 128, 128),
        ("head", 10, 128),
    ];
    for (name, dtype) in [
        ("f32", None),
        ("q8_0", Some(GgmlDType::Q8_0)),
        ("q4_0", Some(GgmlDType::Q4_0)),
    ] {
        let mut tensors = HashMap::new();
        let mut quantized = Quantized::new();
        for (layer, o, i) in shapes {
            let w = Tensor::randn(0f32, 0.1, (o, i), &Device::Cpu).expect("weights");
            tensors.insert(
                format!("{layer}.bias"),
                Tensor::zeros(o, DType::F32, &Device::Cpu).expect("bias"),
            );
            match dtype {
                None => {
                    tensors.insert(format!("{layer}.weight"), w);
                }
                Some(d) => {
                    let q = QTensor::quantize(&w, d).expect("quantize");
                    quantized.insert(format!("{layer}.weight"), Arc::new(q));
                }
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let mlp = Mlp::new(&cfg, &dims, vb, &quantized).expect("mlp");
        let x = Tensor::randn(0f32, 1.0, (1, 64), &Device::Cpu).expect("input");
        group.bench_function(name, |b| {
            b.iter(|| mlp.forward(&x, &mut Mode::eval()).expect("forward"))
        });
    }
    group.finish();
}
