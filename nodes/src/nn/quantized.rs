//! How quantized weights are stored in a model value, and read back.
//!
//! Dense: the ggml block bytes of the `[outputs, padded inputs]` matrix
//! (`q8_0`, `q4_0`, `q4k`), exactly as `QMatMul` uses them.
//!
//! Sparse (pruned weights): only the non-zero weights are stored — their
//! positions as gaps between them (one byte each; 255 means "255 further,
//! no weight here"), deflated, then their values in the same block format.
//! Reading it back scatters the values into the dense matrix and quantizes
//! that for `QMatMul`; the same function runs before and after saving, so a
//! saved and reloaded model gives the same outputs bit for bit.

use std::borrow::Cow;
use std::io::{Read, Write};

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use kiln_engine::NodeError;
use serde::{Deserialize, Serialize};

/// How a quantized weight is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizedWeight {
    /// The block format.
    pub format: BlockFormat,
    /// `[outputs, inputs padded to the block size]`.
    pub shape: [usize; 2],
    /// The layer's inputs (the columns past them are zero padding).
    pub inputs: usize,
    /// Set when only the non-zero weights are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<Sparse>,
}

/// The layout of a sparsely stored weight's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sparse {
    /// Weights stored.
    pub nonzero: usize,
    /// Bytes of the deflated positions, before the value blocks.
    pub position_bytes: usize,
}

kiln_engine::choices! {
    /// A ggml block format.
    pub enum BlockFormat {
        /// 8-bit values, one scale per 32.
        Q8_0 = "q8_0",
        /// 4-bit values, one scale per 32.
        Q4_0 = "q4_0",
        /// 4-bit values with 6-bit scales and minimums, in super-blocks of 256.
        Q4k = "q4k",
    }
}

impl BlockFormat {
    /// candle's block type.
    pub fn dtype(self) -> GgmlDType {
        match self {
            BlockFormat::Q8_0 => GgmlDType::Q8_0,
            BlockFormat::Q4_0 => GgmlDType::Q4_0,
            BlockFormat::Q4k => GgmlDType::Q4K,
        }
    }
}

fn blocks(values: Vec<f32>, dtype: GgmlDType) -> Result<Vec<u8>, NodeError> {
    let n = values
        .len()
        .next_multiple_of(dtype.block_size())
        .max(dtype.block_size());
    let mut padded = values;
    padded.resize(n, 0.0);
    let t = Tensor::from_vec(padded, n, &Device::Cpu)?;
    Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
}

fn unblock(bytes: &[u8], n: usize, dtype: GgmlDType) -> Result<Vec<f32>, NodeError> {
    let expected = n / dtype.block_size() * dtype.type_size();
    if !n.is_multiple_of(dtype.block_size()) || bytes.len() != expected {
        return Err(NodeError::new(format!(
            "{n} quantized values take {expected} bytes, but {} are stored",
            bytes.len()
        )));
    }
    // A fresh allocation: candle reads the blocks in place and needs them
    // aligned, which a slice into the middle of the stored bytes is not.
    let storage = QStorage::from_data(Cow::Owned(bytes.to_vec()), &Device::Cpu, dtype)?;
    Ok(QTensor::new(storage, n)?
        .dequantize(&Device::Cpu)?
        .to_vec1()?)
}

impl QuantizedWeight {
    /// candle's block type for the format.
    pub fn dtype(&self) -> GgmlDType {
        self.format.dtype()
    }

    /// Stores `w` (`[outputs, inputs]`) in `format`, sparsely when asked.
    pub fn encode(
        w: &Tensor,
        format: BlockFormat,
        sparse: bool,
    ) -> Result<(Self, Vec<u8>), NodeError> {
        let dtype = format.dtype();
        let w = w.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let (rows, inputs) = w.dims2()?;
        let padded = inputs.next_multiple_of(dtype.block_size());
        let mut layout = QuantizedWeight {
            format,
            shape: [rows, padded],
            inputs,
            sparse: None,
        };
        if !sparse {
            let w = if padded > inputs {
                Tensor::cat(
                    &[
                        &w,
                        &Tensor::zeros((rows, padded - inputs), DType::F32, &Device::Cpu)?,
                    ],
                    1,
                )?
            } else {
                w
            };
            return Ok((layout, QTensor::quantize(&w, dtype)?.data()?.into_owned()));
        }
        let flat: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let mut gaps = Vec::new();
        let mut values = Vec::new();
        let mut next = 0usize;
        for (i, v) in flat.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            let mut gap = i - next;
            while gap >= 255 {
                gaps.push(255u8);
                gap -= 255;
            }
            gaps.push(gap as u8);
            values.push(*v);
            next = i + 1;
        }
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        deflate
            .write_all(&gaps)
            .map_err(|e| NodeError::new(format!("cannot compress positions: {e}")))?;
        let mut bytes = deflate
            .finish()
            .map_err(|e| NodeError::new(format!("cannot compress positions: {e}")))?;
        layout.sparse = Some(Sparse {
            nonzero: values.len(),
            position_bytes: bytes.len(),
        });
        bytes.extend(blocks(values, dtype)?);
        Ok((layout, bytes))
    }

    /// The weight as candle's quantized tensor `[outputs, padded inputs]`,
    /// from its stored bytes.
    pub fn decode(&self, bytes: &Tensor, device: &Device) -> Result<QTensor, NodeError> {
        let dtype = self.dtype();
        let [rows, cols] = self.shape;
        let data: Vec<u8> = bytes.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let bad = |what: &str| {
            NodeError::new(format!(
                "a stored {} weight is damaged: {what}",
                self.format.name()
            ))
        };
        if !cols.is_multiple_of(dtype.block_size()) || self.inputs > cols {
            return Err(bad("its shape does not fit the block size"));
        }
        let Some(sparse) = &self.sparse else {
            let expected = rows * cols / dtype.block_size() * dtype.type_size();
            if data.len() != expected {
                return Err(bad(&format!(
                    "{expected} bytes expected, {} stored",
                    data.len()
                )));
            }
            let storage = QStorage::from_data(Cow::Owned(data), device, dtype)?;
            return Ok(QTensor::new(storage, (rows, cols))?);
        };
        let (positions, value_bytes) = data
            .split_at_checked(sparse.position_bytes)
            .ok_or_else(|| bad("too short"))?;
        let mut gaps = Vec::new();
        flate2::read::DeflateDecoder::new(positions)
            .read_to_end(&mut gaps)
            .map_err(|e| bad(&format!("positions: {e}")))?;
        let n = sparse
            .nonzero
            .next_multiple_of(dtype.block_size())
            .max(dtype.block_size());
        let values = unblock(value_bytes, n, dtype)?;
        let mut dense = vec![0f32; rows * cols];
        let (mut at, mut k) = (0usize, 0usize);
        for gap in gaps {
            at += gap as usize;
            if gap == 255 {
                continue;
            }
            let (r, c) = (at / self.inputs.max(1), at % self.inputs.max(1));
            if k >= sparse.nonzero || r >= rows {
                return Err(bad("positions run past the matrix"));
            }
            dense[r * cols + c] = values[k];
            k += 1;
            at += 1;
        }
        if k != sparse.nonzero {
            return Err(bad("fewer positions than weights"));
        }
        let t = Tensor::from_vec(dense, (rows, cols), &Device::Cpu)?;
        Ok(QTensor::quantize_onto(&t, dtype, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse_matrix() -> Tensor {
        // 10×300 with ~5% non-zeros, one row empty, a long run of zeros.
        let mut v = vec![0f32; 3000];
        for i in (0..3000).step_by(19) {
            v[i] = ((i % 7) as f32 - 3.0) * 0.1 + 0.05;
        }
        for x in &mut v[300..600] {
            *x = 0.0;
        }
        v[2999] = 0.7;
        Tensor::from_vec(v, (10, 300), &Device::Cpu).unwrap()
    }

    #[test]
    fn sparse_storage_decodes_to_the_same_values_and_is_small() {
        let w = sparse_matrix();
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0] {
            let (dense_layout, dense_bytes) = QuantizedWeight::encode(&w, format, false).unwrap();
            let (sparse_layout, sparse_bytes) = QuantizedWeight::encode(&w, format, true).unwrap();
            assert!(
                sparse_bytes.len() * 3 < dense_bytes.len(),
                "{format:?}: {} vs {}",
                sparse_bytes.len(),
                dense_bytes.len()
            );
            let n = sparse_bytes.len();
            let stored = Tensor::from_vec(sparse_bytes, n, &Device::Cpu).unwrap();
            let back = sparse_layout
                .decode(&stored, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let n = dense_bytes.len();
            let dense = dense_layout
                .decode(
                    &Tensor::from_vec(dense_bytes, n, &Device::Cpu).unwrap(),
                    &Device::Cpu,
                )
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            assert_eq!(back.dims(), [10, 320]);
            let original = w.to_vec2::<f32>().unwrap();
            let back = back.to_vec2::<f32>().unwrap();
            let dense = dense.to_vec2::<f32>().unwrap();
            for r in 0..10 {
                for c in 0..300 {
                    // Zeros stay exactly zero; values are within quantization error.
                    if original[r][c] == 0.0 {
                        assert_eq!(back[r][c], 0.0, "{format:?} ({r}, {c})");
                    }
                    let tol = if format == BlockFormat::Q8_0 {
                        0.01
                    } else {
                        0.1
                    };
                    assert!(
                        (back[r][c] - original[r][c]).abs() < tol,
                        "{format:?} ({r}, {c})"
                    );
                    assert!(
                        (dense[r][c] - original[r][c]).abs() < tol,
                        "{format:?} ({r}, {c})"
                    );
                }
                assert!(back[r][300..].iter().all(|v| *v == 0.0));
            }
        }
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let (layout, bytes) =
            QuantizedWeight::encode(&sparse_matrix(), BlockFormat::Q8_0, true).unwrap();
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            let t = Tensor::from_vec(bytes[..cut].to_vec(), cut, &Device::Cpu).unwrap();
            assert!(layout.decode(&t, &Device::Cpu).is_err(), "cut at {cut}");
        }
        let mut garbled = bytes.clone();
        garbled[1] ^= 0xff;
        let n = garbled.len();
        let _ = layout.decode(
            &Tensor::from_vec(garbled, n, &Device::Cpu).unwrap(),
            &Device::Cpu,
        );
    }
}
