//! kiln's own CPU kernels: when they run, and reading a custom op's CPU
//! input (the one helper every kernel in `nn` starts from).
//!
//! Each kernel is chosen by the tensor's device: f32 values on the CPU go
//! to kiln's ops, anything else (a GPU, another dtype) to candle's own
//! composition, which runs wherever candle does. Tests can force candle's
//! path on the CPU ([`with_candle_ops`]) to check, without a GPU, the
//! arithmetic a GPU runs.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Tensor};

thread_local! {
    static CANDLE_OPS_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Whether kiln's CPU kernels run on `device` (from this thread).
pub(crate) fn own_kernels_on(device: &Device) -> bool {
    device.is_cpu() && !CANDLE_OPS_ONLY.with(Cell::get)
}

/// Whether kiln's CPU kernels take `t`: f32 values on the CPU.
pub(crate) fn own_kernel_takes(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && own_kernels_on(t.device())
}

/// Runs `f` with candle's ops in place of kiln's CPU kernels on this
/// thread: what a GPU runs, on the CPU (tests).
#[cfg(test)]
pub(crate) fn with_candle_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CANDLE_OPS_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CANDLE_OPS_ONLY.with(|c| c.replace(true)));
    f()
}

/// The f32 values a custom op's CPU input holds, in order; `op` names the
/// op in the error when the input is not contiguous.
pub(crate) fn cpu_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}
