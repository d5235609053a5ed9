//! Helpers for the kernels' and architectures' tests.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

/// Asserts that every trainable variable in `vars` gets a non-zero
/// gradient from `out` (tests: a forward-only op would silently stop
/// training below it); `what` names the case in failures.
pub(crate) fn assert_all_have_gradients(vars: &super::init::SeededVars, out: &Tensor, what: &str) {
    let grads = out
        .sqr()
        .and_then(|o| o.sum_all())
        .and_then(|o| o.backward())
        .expect("a backward pass");
    for (name, var) in vars.sorted_vars() {
        if super::batch_norm::is_statistic(&name) {
            continue;
        }
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: {name} gets no gradient"));
        let norm = g
            .sqr()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("a gradient norm");
        assert!(norm > 0.0, "{what}: {name} gets a zero gradient");
    }
}

/// Rows of token ids as a model reads them (tests).
pub(crate) fn token_rows<const N: usize>(rows: &[[u32; N]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&i| i as f32).collect();
    Tensor::from_vec(flat, (rows.len(), N), &candle_core::Device::Cpu).expect("token rows")
}

/// The largest absolute difference between two tensors of one shape (tests).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .expect("tensors of one shape")
}

/// Every value's bit pattern, to compare two tensors exactly (tests).
pub(crate) fn bits(t: &Tensor) -> Vec<u32> {
    let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>());
    values
        .expect("f32 values")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The gradients of `Σ out · up`: `up` stands for what the layers above
/// would send back (tests).
pub(crate) fn gradients(out: &Tensor, up: &Tensor) -> GradStore {
    (out * up)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .expect("a backward pass")
}
