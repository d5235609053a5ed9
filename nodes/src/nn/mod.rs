//! Neural-network building blocks shared by the model kinds: the
//! [`Network`] trait every architecture implements, the sizes it is built
//! for ([`Dims`], [`Task`]), seeded initialisation, dropout and batch norm,
//! activations, and the CPU kernels. Nothing here knows an architecture:
//! those are in `model`, which builds on this.

pub mod batch_norm;
pub mod conv;
pub(crate) mod cpu;
pub mod dense;
pub mod dropout;
pub mod encoder;
pub mod init;
pub mod kept;
pub mod lstm;
mod matrix;
mod network;
mod packed;
pub mod pointwise;
pub mod pool;
pub mod pruning;
pub mod quantized;
mod shape;
pub mod spmm;
#[cfg(test)]
mod testing;

pub(crate) use cpu::cpu_f32;
pub(crate) use matrix::softmax_rows;
pub use network::{embedding, zeros_in, Activation, Mode, Network, UnitGroup, ACTIVATIONS};
pub(crate) use packed::Packed;
pub use quantized::{BlockFormat, QuantizedWeight};
pub use shape::{Dims, LayerShapes, Task};
#[cfg(test)]
pub(crate) use testing::{
    assert_all_have_gradients, assert_close, bits, cuda_or_skip, gradients, max_diff, token_rows,
};
