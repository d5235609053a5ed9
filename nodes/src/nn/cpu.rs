//! Reading a custom op's CPU input: the one helper every kernel in `nn`
//! starts from.

use candle_core::Result;

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
