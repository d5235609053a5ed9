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

/// The first CUDA GPU, or `None` after saying on stderr that `what`'s GPU
/// half is skipped (a CPU-only build, or no GPU answers). With
/// `KILN_REQUIRE_GPU` set (the GPU check script), no GPU is a failure.
pub(crate) fn cuda_or_skip(what: &str) -> Option<candle_core::Device> {
    match candle_core::Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) if std::env::var_os("KILN_REQUIRE_GPU").is_some() => {
            panic!("{what}: KILN_REQUIRE_GPU is set, but no GPU answers: {e}")
        }
        Err(e) => {
            eprintln!("{what}: GPU half skipped, no GPU answers ({e})");
            None
        }
    }
}

/// Asserts `a` and `b` are equal within `tolerance` relative to `a`'s
/// largest magnitude; `what` names them in failures.
pub(crate) fn assert_close(a: &Tensor, b: &Tensor, tolerance: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let scale = a
        .abs()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<f32>())
        .expect("a largest magnitude")
        .max(1e-6);
    let diff = max_diff(a, b);
    assert!(
        diff <= tolerance * scale,
        "{what}: differ by {diff} (largest value {scale}, tolerance {tolerance})"
    );
}
