//! Sparse rows (compressed sparse row storage): what `preprocess.tfidf`
//! gives, and the products linear models compute on it without ever
//! allocating the dense matrix. 5 000 documents over 50 000 n-grams hold a
//! few hundred thousand non-zeros; dense they would be 1 GB.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kiln_engine::NodeError;
use rayon::prelude::*;
use serde_json::{json, Value as Json};

/// Rows of a matrix with most entries zero: row `r`'s entries are
/// `indices[indptr[r]..indptr[r + 1]]` (columns, ascending) with `values`
/// at the same positions.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    /// Number of columns.
    pub cols: usize,
    /// `rows + 1` offsets into `indices` and `values`.
    pub indptr: Vec<usize>,
    /// Column of each stored entry.
    pub indices: Vec<u32>,
    /// Value of each stored entry.
    pub values: Vec<f32>,
}

/// Rows per parallel task in `X · Wᵀ`.
const ROWS_PER_TASK: usize = 256;
/// Rows per parallel task in `Gᵀ · X`: each task sums into a matrix of
/// the weight's size, so fewer, larger tasks.
const ROWS_PER_SUM: usize = 2048;

impl Csr {
    /// Rows built from `(column, value)` lists; columns need not be sorted
    /// and repeated columns are summed.
    pub fn from_rows(cols: usize, rows: Vec<Vec<(u32, f32)>>) -> Csr {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for mut row in rows {
            row.sort_unstable_by_key(|&(c, _)| c);
            let start = indices.len();
            for (c, v) in row {
                if indices.len() > start && indices.last() == Some(&c) {
                    if let Some(last) = values.last_mut() {
                        *last += v;
                    }
                } else {
                    indices.push(c);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Csr {
            cols,
            indptr,
            indices,
            values,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Row `r`: its columns and values.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// The rows `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Csr, NodeError> {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for &r in rows {
            let r = r as usize;
            if r >= self.rows() {
                return Err(NodeError::new(format!(
                    "row {r} of {} asked for",
                    self.rows()
                )));
            }
            let (i, v) = self.row(r);
            indices.extend_from_slice(i);
            values.extend_from_slice(v);
            indptr.push(indices.len());
        }
        Ok(Csr {
            cols: self.cols,
            indptr,
            indices,
            values,
        })
    }

    /// The dense `[rows, cols]` matrix (what models without a sparse path
    /// read, a batch at a time).
    pub fn to_dense(&self) -> candle_core::Result<Tensor> {
        let mut dense = vec![0f32; self.rows() * self.cols];
        for r in 0..self.rows() {
            let (cols, vals) = self.row(r);
            let out = &mut dense[r * self.cols..(r + 1) * self.cols];
            for (&c, &v) in cols.iter().zip(vals) {
                out[c as usize] = v;
            }
        }
        Tensor::from_vec(dense, (self.rows(), self.cols), &Device::Cpu)
    }

    /// `X · Wᵀ`: `w` is `[k, cols]` row-major; the result `[rows, k]`.
    pub fn matmul_t(&self, w: &[f32], k: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows() * k];
        out.par_chunks_mut(ROWS_PER_TASK * k.max(1))
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, o) in chunk.chunks_mut(k.max(1)).enumerate() {
                    let (cols, vals) = self.row(task * ROWS_PER_TASK + i);
                    for (j, o) in o.iter_mut().enumerate() {
                        let wj = &w[j * self.cols..(j + 1) * self.cols];
                        *o = cols
                            .iter()
                            .zip(vals)
                            .map(|(&c, &v)| v * wj[c as usize])
                            .sum();
                    }
                }
            });
        out
    }

    /// `Gᵀ · X`: `g` is `[rows, k]` row-major; the result `[k, cols]` (the
    /// gradient of a linear layer's weight). Each task sums its own rows,
    /// then the tasks' sums are added in a fixed order (the same bits
    /// whatever the thread count).
    pub fn t_matmul(&self, g: &[f32], k: usize) -> Vec<f32> {
        let tasks = self.rows().div_ceil(ROWS_PER_SUM);
        let partial: Vec<Vec<f32>> = (0..tasks)
            .into_par_iter()
            .map(|task| {
                let mut acc = vec![0f32; k * self.cols];
                let end = ((task + 1) * ROWS_PER_SUM).min(self.rows());
                for r in task * ROWS_PER_SUM..end {
                    let (cols, vals) = self.row(r);
                    for j in 0..k {
                        let gj = g[r * k + j];
                        if gj == 0.0 {
                            continue;
                        }
                        let a = &mut acc[j * self.cols..(j + 1) * self.cols];
                        for (&c, &v) in cols.iter().zip(vals) {
                            a[c as usize] += gj * v;
                        }
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; k * self.cols];
        for p in partial {
            for (o, x) in out.iter_mut().zip(p) {
                *o += x;
            }
        }
        out
    }

    /// Stores the rows as tensors `{key}.indptr` (`i64`), `{key}.indices`
    /// (`u32`) and `{key}.values` (`f32`), and the column count in
    /// `meta["sparse"][key]`.
    pub fn store(
        &self,
        key: &str,
        meta: &mut Json,
        tensors: &mut BTreeMap<String, Tensor>,
    ) -> Result<(), NodeError> {
        let indptr: Vec<i64> = self.indptr.iter().map(|&p| p as i64).collect();
        let cpu = &Device::Cpu;
        tensors.insert(
            format!("{key}.indptr"),
            Tensor::from_vec(indptr, self.indptr.len(), cpu)?,
        );
        tensors.insert(
            format!("{key}.indices"),
            Tensor::from_slice(&self.indices, self.indices.len(), cpu)?,
        );
        tensors.insert(
            format!("{key}.values"),
            Tensor::from_slice(&self.values, self.values.len(), cpu)?,
        );
        meta["sparse"][key] = json!({ "cols": self.cols });
        Ok(())
    }

    /// The rows [`Csr::store`] put under `key`, if the value holds them;
    /// malformed parts are an error, never a panic later.
    pub fn read(
        key: &str,
        meta: &Json,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Option<Csr>, NodeError> {
        let Some(cols) = meta
            .get("sparse")
            .and_then(|s| s.get(key))
            .and_then(|s| s.get("cols"))
            .and_then(Json::as_u64)
        else {
            return Ok(None);
        };
        let part = |name: &str| {
            tensors.get(&format!("{key}.{name}")).ok_or_else(|| {
                NodeError::new(format!("the sparse `{key}` holds no `{name}` tensor"))
            })
        };
        let indptr: Vec<usize> = part("indptr")?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|p| p.max(0) as usize)
            .collect();
        let csr = Csr {
            cols: cols as usize,
            indptr,
            indices: part("indices")?.to_vec1::<u32>()?,
            values: part("values")?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        };
        csr.check()
            .map_err(|e| NodeError::new(format!("the sparse `{key}` is malformed: {e}")))?;
        Ok(Some(csr))
    }

    /// Whether the parts agree with each other.
    fn check(&self) -> Result<(), String> {
        if self.indptr.first() != Some(&0) || self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err("row offsets do not start at 0 and grow".into());
        }
        if self.indptr.last() != Some(&self.indices.len())
            || self.indices.len() != self.values.len()
        {
            return Err("row offsets, columns and values disagree in length".into());
        }
        if self.indices.iter().any(|&c| c as usize >= self.cols) {
            return Err(format!("a column index is not below {}", self.cols));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Csr {
        // [[0, 2, 0], [1, 0, 3]]
        Csr::from_rows(3, vec![vec![(1, 2.0)], vec![(2, 3.0), (0, 1.0)]])
    }

    #[test]
    fn products_match_the_dense_ones() {
        let x = example();
        assert_eq!(
            x.to_dense().unwrap().to_vec2::<f32>().unwrap(),
            [[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]
        );
        // W = [[1, 1, 1], [0, 1, -1]]
        let w = [1.0, 1.0, 1.0, 0.0, 1.0, -1.0];
        assert_eq!(x.matmul_t(&w, 2), [2.0, 2.0, 4.0, -3.0]);
        // G = [[1, 0], [2, 1]] → Gᵀ X = [[2, 2, 6], [1, 0, 3]]
        assert_eq!(
            x.t_matmul(&[1.0, 0.0, 2.0, 1.0], 2),
            [2.0, 2.0, 6.0, 1.0, 0.0, 3.0]
        );
    }

    #[test]
    fn rows_round_trip_through_a_value_and_select() {
        let x = example();
        let (mut meta, mut tensors) = (json!({}), BTreeMap::new());
        x.store("features", &mut meta, &mut tensors).unwrap();
        let back = Csr::read("features", &meta, &tensors).unwrap().unwrap();
        assert_eq!(back, x);
        let picked = x.select(&[1, 1, 0]).unwrap();
        assert_eq!(picked.rows(), 3);
        assert_eq!(picked.row(1), (&[0u32, 2][..], &[1.0f32, 3.0][..]));
        assert!(x.select(&[2]).is_err());
        // A damaged part is an error, not a panic later.
        tensors.insert(
            "features.indices".into(),
            Tensor::from_slice(&[7u32, 0, 2], 3, &Device::Cpu).unwrap(),
        );
        let e = Csr::read("features", &meta, &tensors).unwrap_err();
        assert!(e.message().contains("not below 3"), "{e}");
    }
}
