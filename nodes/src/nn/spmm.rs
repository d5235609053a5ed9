//! A sparse matrix times a dense one on the CPU, as one op each way: the
//! message passing of the graph networks.
//!
//! Written with candle's ops, passing messages over `e` edges gathers an
//! `[e, features]` copy of the source rows, scales it, and adds it into the
//! targets (`index_select`, `broadcast_mul`, `index_add`), and the backward
//! pass does the same again in reverse: six passes over edge-sized buffers
//! per layer and direction. Here the matrix is kept in compressed rows both
//! ways ([`Csr`], by target for the forward pass and by source for the
//! backward one) and each output row is summed straight from the input
//! rows, rows side by side on the thread pool. Each row adds its edges in
//! the order they were given, as `index_add` does, so the numbers are
//! candle's to the bit and do not depend on the thread count.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// A sparse `rows × cols` matrix in compressed rows.
struct Csr {
    /// Row `r`'s entries are `offsets[r]..offsets[r + 1]`.
    offsets: Vec<usize>,
    cols: Vec<u32>,
    values: Vec<f32>,
    n_cols: usize,
}

impl Csr {
    /// The matrix with `values[i]` at (`rows[i]`, `cols[i]`), each row's
    /// entries in the order given (a stable counting sort).
    fn new(rows: &[u32], cols: &[u32], values: &[f32], n_rows: usize, n_cols: usize) -> Csr {
        let mut offsets = vec![0usize; n_rows + 1];
        for &r in rows {
            offsets[r as usize + 1] += 1;
        }
        for r in 0..n_rows {
            offsets[r + 1] += offsets[r];
        }
        let mut next = offsets.clone();
        let (mut sorted_cols, mut sorted_values) = (vec![0u32; cols.len()], vec![0f32; cols.len()]);
        for ((&r, &c), &v) in rows.iter().zip(cols).zip(values) {
            let at = &mut next[r as usize];
            (sorted_cols[*at], sorted_values[*at]) = (c, v);
            *at += 1;
        }
        Csr {
            offsets,
            cols: sorted_cols,
            values: sorted_values,
            n_cols,
        }
    }

    fn n_rows(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Rows handed to one task of the thread pool at least.
const ROWS_PER_TASK: usize = 64;

/// `Σ value · x[col]` into every row: the matrix times `x` (`[cols, f]`).
struct Product {
    matrix: Arc<Csr>,
    /// The same matrix transposed, for the gradient.
    transposed: Arc<Csr>,
}

impl CustomOp1 for Product {
    fn name(&self) -> &'static str {
        "kiln-sparse-product"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32(storage, layout, self.name())?;
        let (n, f) = layout.shape().dims2()?;
        let a = &self.matrix;
        if n != a.n_cols {
            candle_core::bail!("sparse product: {} columns but {n} input rows", a.n_cols);
        }
        let mut out = vec![0f32; a.n_rows() * f];
        if f > 0 {
            out.par_chunks_mut(f)
                .enumerate()
                .with_min_len(ROWS_PER_TASK)
                .for_each(|(r, row)| {
                    for e in a.offsets[r]..a.offsets[r + 1] {
                        let (c, v) = (a.cols[e] as usize, a.values[e]);
                        for (o, x) in row.iter_mut().zip(&x[c * f..][..f]) {
                            *o += x * v;
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), (a.n_rows(), f).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let back = Product {
            matrix: self.transposed.clone(),
            transposed: self.matrix.clone(),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// A sparse square matrix over `nodes`, kept both ways, to multiply dense
/// f32 CPU tensors by.
pub struct SparseMatrix {
    by_row: Arc<Csr>,
    by_col: Arc<Csr>,
}

impl SparseMatrix {
    /// The matrix with `values[i]` at (`rows[i]`, `cols[i]`); repeated
    /// positions add up.
    pub fn new(rows: &[u32], cols: &[u32], values: &[f32], nodes: usize) -> SparseMatrix {
        SparseMatrix {
            by_row: Arc::new(Csr::new(rows, cols, values, nodes, nodes)),
            by_col: Arc::new(Csr::new(cols, rows, values, nodes, nodes)),
        }
    }

    /// This matrix times `x` (`[nodes, f]`, f32 on the CPU), with its
    /// gradient.
    pub fn times(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(Product {
            matrix: self.by_row.clone(),
            transposed: self.by_col.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::bits;
    use candle_core::{Device, Var};

    /// Forward and backward give the bits of candle's gather, scale and
    /// `index_add`, repeated edges and self loops included.
    #[test]
    fn gives_candles_index_add_bits_both_ways() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (nodes, f, edges) = (300, 7, 2000);
        let src: Vec<u32> = (0..edges)
            .map(|_| rng.random_range(0..nodes as u32))
            .collect();
        let dst: Vec<u32> = (0..edges)
            .map(|_| rng.random_range(0..nodes as u32))
            .collect();
        let coef: Vec<f32> = (0..edges).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x: Vec<f32> = (0..nodes * f)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let up: Vec<f32> = (0..nodes * f)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let dev = Device::Cpu;
        let x = Var::from_vec(x, (nodes, f), &dev).unwrap();
        let up = Tensor::from_vec(up, (nodes, f), &dev).unwrap();

        let ours = SparseMatrix::new(&dst, &src, &coef, nodes)
            .times(&x)
            .unwrap();
        let (s, d) = (
            Tensor::new(src.as_slice(), &dev).unwrap(),
            Tensor::new(dst.as_slice(), &dev).unwrap(),
        );
        let c = Tensor::from_vec(coef, (edges, 1), &dev).unwrap();
        let theirs = x
            .index_select(&s, 0)
            .and_then(|g| g.broadcast_mul(&c))
            .and_then(|g| Tensor::zeros((nodes, f), g.dtype(), &dev)?.index_add(&d, &g, 0))
            .unwrap();
        assert_eq!(bits(&ours), bits(&theirs));
        let g_ours = crate::nn::gradients(&ours, &up);
        let g_theirs = crate::nn::gradients(&theirs, &up);
        assert_eq!(
            bits(g_ours.get(&x).unwrap()),
            bits(g_theirs.get(&x).unwrap())
        );
    }

    /// A graph without edges, or features without columns, multiplies to
    /// zeros of the right shape.
    #[test]
    fn empty_matrices_and_rows_multiply_to_zeros() {
        let m = SparseMatrix::new(&[], &[], &[], 3);
        let x = Tensor::ones((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = m.times(&x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![0.0; 2]; 3]);
        let none = Tensor::zeros((3, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.times(&none).unwrap().dims(), [3, 0]);
    }
}
