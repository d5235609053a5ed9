//! Every architecture on every device (tests): the outputs and gradients of
//! candle's ops, which are what a GPU runs, equal those of kiln's CPU
//! kernels within 1e-4 of each tensor's largest value; where a CUDA GPU
//! answers, its outputs and gradients equal the CPU's within 1e-4 too.
//! Without a GPU the CUDA half says on stderr that it skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::{json, Value as Json};

use super::arch::build;
use crate::graph::{Graph, Level};
use crate::nn::cpu::with_candle_ops;
use crate::nn::init::{var_builder, SeededVars};
use crate::nn::{assert_close, cuda_or_skip, gradients, token_rows, Dims, Mode};

const TOLERANCE: f32 = 1e-4;

/// What a case feeds its network.
enum Input {
    Rows(Tensor),
    Graph(Box<Graph>),
}

/// One training-mode pass: the outputs, and each variable's gradient of
/// `Σ out · up`, all on the CPU.
struct Pass {
    out: Tensor,
    grads: BTreeMap<String, Tensor>,
}

fn pass(
    arch: &Json,
    dims: &Dims,
    weights: &HashMap<String, Tensor>,
    input: &Input,
    up: &Tensor,
    device: &Device,
) -> Pass {
    let vars = Arc::new(SeededVars::new(0, weights.clone()));
    let net = build(
        arch,
        dims,
        var_builder(vars.clone(), device),
        &Default::default(),
    )
    .expect("a valid architecture");
    let mut mode = Mode {
        train: true,
        rng: None,
    };
    let out = match input {
        Input::Rows(x) => net.forward(&x.to_device(device).unwrap(), &mut mode),
        Input::Graph(g) => {
            let rows: Vec<u32> = (0..g.examples() as u32).collect();
            net.forward_graph(&g.batch(&rows, device).unwrap(), &mut mode)
        }
    }
    .expect("a forward pass");
    let store = gradients(&out, &up.to_device(device).unwrap());
    let grads = vars
        .sorted_vars()
        .into_iter()
        .filter_map(|(name, var)| {
            let g = store.get(var.as_tensor())?;
            Some((name, g.to_device(&Device::Cpu).unwrap()))
        })
        .collect();
    Pass {
        out: out.to_device(&Device::Cpu).unwrap(),
        grads,
    }
}

fn assert_same(a: &Pass, b: &Pass, what: &str) {
    assert_close(&a.out, &b.out, TOLERANCE, &format!("{what}: outputs"));
    assert_eq!(
        a.grads.keys().collect::<Vec<_>>(),
        b.grads.keys().collect::<Vec<_>>(),
        "{what}: the variables with gradients differ"
    );
    assert!(!a.grads.is_empty(), "{what}: no gradients");
    for (name, g) in &a.grads {
        assert_close(
            g,
            &b.grads[name],
            TOLERANCE,
            &format!("{what}: gradient of {name}"),
        );
    }
}

/// Builds `arch` for `dims` with weights drawn from a seed, then checks
/// candle's ops, and a GPU where one answers, against kiln's CPU kernels.
fn check(what: &str, arch: Json, dims: Dims, input: Input) {
    let vars = Arc::new(SeededVars::new(5, HashMap::new()));
    build(
        &arch,
        &dims,
        var_builder(vars.clone(), &Device::Cpu),
        &Default::default(),
    )
    .expect("a valid architecture");
    let weights: HashMap<String, Tensor> = vars
        .sorted_vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().copy().unwrap()))
        .collect();
    let examples = match &input {
        Input::Rows(x) => x.dim(0).unwrap(),
        Input::Graph(g) => g.examples(),
    };
    let up = Tensor::randn(0f32, 1.0, (examples, dims.output), &Device::Cpu).unwrap();
    let own = pass(&arch, &dims, &weights, &input, &up, &Device::Cpu);
    let composed = with_candle_ops(|| pass(&arch, &dims, &weights, &input, &up, &Device::Cpu));
    assert_same(&own, &composed, &format!("{what}, candle's ops"));
    if let Some(gpu) = cuda_or_skip(what) {
        let on_gpu = pass(&arch, &dims, &weights, &input, &up, &gpu);
        assert_same(&own, &on_gpu, &format!("{what}, cuda"));
    }
}

fn dims(input: &[usize], vocab: Option<usize>) -> Dims {
    Dims {
        input: input.to_vec(),
        output: 3,
        vocab,
    }
}

fn rows(shape: &[usize]) -> Input {
    Input::Rows(Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap())
}

#[test]
fn an_mlp_agrees_on_every_device() {
    let arch = json!({"type": "mlp", "hidden": [17, 9], "activation": "relu", "dropout": 0.0, "batch_norm": true});
    check("mlp", arch, dims(&[5], None), rows(&[13, 5]));
}

#[test]
fn a_cnn_agrees_on_every_device() {
    let arch = json!({
        "type": "cnn", "input_shape": [2, 9, 9], "activation": "relu",
        "layers": [
            {"conv": {"channels": 5, "kernel": 3, "stride": 1, "padding": 1}},
            "batch_norm",
            {"pool": {"size": 2}},
            {"conv": {"channels": 4, "kernel": 3, "stride": 2, "padding": 0}},
            {"dense": {"units": 7}},
        ],
    });
    // More images than one part of kiln's conv (8), and not a multiple.
    check("cnn", arch, dims(&[162], None), rows(&[19, 162]));
}

#[test]
fn an_rnn_agrees_on_every_device() {
    for (cell, bidirectional) in [("lstm", false), ("lstm", true), ("gru", true)] {
        let arch = json!({"type": "rnn", "cell": cell, "hidden": 6, "layers": 2, "bidirectional": bidirectional, "pooling": "last"});
        check(
            &format!("rnn/{cell}"),
            arch,
            dims(&[7, 3], None),
            rows(&[11, 7, 3]),
        );
    }
}

#[test]
fn a_transformer_agrees_on_every_device() {
    let arch = json!({"type": "transformer", "dim": 8, "heads": 2, "layers": 2, "ff": 16, "dropout": 0.0, "pooling": "mean"});
    let ids = token_rows(&[
        [3, 4, 5, 0, 0, 0],
        [7, 8, 9, 10, 11, 12],
        [1, 19, 2, 0, 0, 0],
    ]);
    check("transformer", arch, dims(&[6], Some(20)), Input::Rows(ids));
}

#[test]
fn a_linear_model_agrees_on_every_device() {
    let arch = json!({"type": "linear", "l2": 0.0001, "l1": 0.0, "max_iter": 500, "tol": 0.0001});
    check("linear", arch, dims(&[33], None), rows(&[9, 33]));
}

#[test]
fn graph_networks_agree_on_every_device() {
    for conv in ["gcn", "sage"] {
        let arch = json!({"type": "gnn", "conv": conv, "hidden": [8, 8], "activation": "tanh", "dropout": 0.0, "readout": "none"});
        check(
            &format!("gnn/{conv}"),
            arch,
            dims(&[3], None),
            Input::Graph(Box::new(graph(Level::Node))),
        );
    }
    let arch = json!({"type": "gnn", "conv": "gcn", "hidden": [8], "activation": "relu", "dropout": 0.0, "readout": "mean"});
    check(
        "gnn/readout",
        arch,
        dims(&[3], None),
        Input::Graph(Box::new(graph(Level::Graph))),
    );
}

/// A 6-node graph: a triangle 0-1-2, an edge 2-3 of weight 2, a pair 4-5.
fn graph(level: Level) -> Graph {
    let (src, dst, weight) = (
        vec![0, 1, 1, 2, 0, 2, 2, 3, 4, 5],
        vec![1, 0, 2, 1, 2, 0, 3, 2, 5, 4],
        vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0],
    );
    let graph_level = level == Level::Graph;
    Graph {
        level,
        x: Tensor::randn(0f32, 1.0, (6, 3), &Device::Cpu).unwrap(),
        src,
        dst,
        weight,
        directed: false,
        node_graph: if graph_level {
            vec![0, 0, 0, 0, 1, 1]
        } else {
            vec![]
        },
        graphs: if graph_level { 2 } else { 1 },
        node_ids: (0..6).map(|i| i.to_string()).collect(),
        graph_ids: vec![],
        feature_names: vec![],
        target: None,
        split: vec![],
    }
}
