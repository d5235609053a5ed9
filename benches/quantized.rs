//! Quantized inference: LeNet-300-100's layers as f32 matrix products
//! against candle's `QMatMul` in Q8_0 and Q4_0 (`cargo bench --bench main -- quantized/`).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{BenchmarkId, Criterion};

/// 784-300-100-10, inputs padded to the block size as `compress.quantize` does.
const LAYERS: [(usize, usize); 3] = [(800, 300), (320, 100), (128, 10)];

fn weights() -> Vec<Tensor> {
    LAYERS
        .iter()
        .map(|&(i, o)| Tensor::randn(0f32, 0.05, (o, i), &Device::Cpu).expect("weights"))
        .collect()
}

/// f32 and quantized forward passes of the three layers at batch 1 and 256.
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
        let layers: Vec<QMatMul> = w
            .iter()
            .map(|t| match dtype {
                None => QMatMul::Tensor(t.clone()),
                Some(d) => QMatMul::from_qtensor(QTensor::quantize(t, d).expect("quantize"))
                    .expect("qmatmul"),
            })
            .collect();
        for batch in [1usize, 256] {
            let x = Tensor::randn(0f32, 1.0, (batch, 800), &Device::Cpu).expect("input");
            group.bench_with_input(BenchmarkId::new(name, batch), &x, |b, x| {
                b.iter(|| {
                    let mut h = x.clone();
                    for (k, layer) in layers.iter().enumerate() {
                        h = layer.forward(&h).expect("forward");
                        if k + 1 < layers.len() {
                            let pad = LAYERS[k + 1].0 - h.dim(1).expect("dim");
                            h = Tensor::cat(
                                &[
                                    &h,
                                    &Tensor::zeros((batch, pad), h.dtype(), h.device())
                                        .expect("zeros"),
                                ],
                                1,
                            )
                            .expect("pad");
                        }
                    }
                    h
                })
            });
        }
    }
    group.finish();
}

/// One 1024×1024 linear layer, the size where quantized products pay off.
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
        let layer = match dtype {
            None => QMatMul::Tensor(w.clone()),
            Some(d) => {
                QMatMul::from_qtensor(QTensor::quantize(&w, d).expect("quantize")).expect("qmatmul")
            }
        };
        for batch in [1usize, 32] {
            let x = Tensor::randn(0f32, 1.0, (batch, 1024), &Device::Cpu).expect("input");
            group.bench_with_input(BenchmarkId::new(name, batch), &x, |b, x| {
                b.iter(|| layer.forward(x).expect("forward"))
            });
        }
    }
    group.finish();
}
