//! Matrices as views into `f32` slices and the single-threaded product
//! kiln's CPU kernels build on (gemm, with its own run-time choice of vector
//! code). Kernels that cut their work into parts for the thread pool call
//! this once per part, so a product never spreads over threads it competes
//! with.

/// A matrix inside a slice: element (r, c) is `data[r * row + c * col]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row: usize,
    pub(crate) col: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row: cols,
            col: 1,
        }
    }

    /// This matrix transposed (no copy).
    pub(crate) fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row: self.col,
            col: self.row,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    pub(crate) fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row + (self.cols - 1) * self.col < self.data.len()
    }
}

/// `dst (m × n, row-major) (+)= a (m × k) · b (k × n)` on this thread.
pub(crate) fn product(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && dst.len() == m * n && a.fits() && b.fits(),
        "product shapes"
    );
    // SAFETY: the assertion above keeps every element gemm reads inside `a`
    // and `b` and every element it writes inside `dst`; the slices cannot
    // overlap (one is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col as isize,
            a.row as isize,
            b.data.as_ptr(),
            b.col as isize,
            b.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Softmax of each `width`-wide row of `scores`, in place (attention's
/// weights: the encoder's and the language model's).
pub(crate) fn softmax_rows(scores: &mut [f32], width: usize) {
    for row in scores.chunks_exact_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        for s in row.iter_mut() {
            *s /= total;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn softmax_rows_match_candle() {
        let rows: Vec<f32> = (0..3 * 17).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let want: Vec<f32> = candle_nn::ops::softmax_last_dim(
            &Tensor::from_vec(rows.clone(), (3, 17), &Device::Cpu).unwrap(),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
        let mut got = rows;
        super::softmax_rows(&mut got, 17);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }
}
