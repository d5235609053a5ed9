//! Activations quantized to 8 bits in blocks of 32, as ggml's Q8_1 holds
//! them: what every product with quantized weights reads.

use rayon::prelude::*;

use super::isa::Isa;

/// Values per block.
pub const BLOCK: usize = 32;

/// Activation rows computed together against one weight row.
pub const TILE: usize = 8;

/// Weight rows a Q4_1 product advances together: the rows interleaved in
/// one group (see `q4_1`), one per 32-bit lane of a 512-bit register.
pub const GROUP: usize = 16;

/// Activations quantized to Q8 blocks, row by row.
#[derive(Default)]
pub struct Q8Rows {
    blocks: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// d · Σq per block (what Q4_1's minimum multiplies).
    s: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `m` rows of `cols` values (`cols` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        let blocks = cols / BLOCK;
        let total = x.len() / BLOCK;
        self.blocks = blocks;
        self.qs.resize(total * BLOCK, 0);
        self.d.resize(total, 0.0);
        self.s.resize(total, 0.0);
        let work = self
            .qs
            .par_chunks_mut(BLOCK * 64)
            .zip(self.d.par_chunks_mut(64))
            .zip(self.s.par_chunks_mut(64))
            .zip(x.par_chunks(BLOCK * 64));
        let vector = Isa::detected() != Isa::Generic;
        work.for_each(|(((qs, d), s), x)| {
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: AVX2 is there (`Isa::detected`).
                return unsafe { quantize_avx2(qs, d, s, x) };
            }
            let _ = vector;
            quantize_blocks(qs, d, s, x)
        });
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> ActRow<'_> {
        let (a, b) = (r * self.blocks, (r + 1) * self.blocks);
        ActRow {
            qs: &self.qs[a * BLOCK..b * BLOCK],
            d: &self.d[a..b],
            s: &self.s[a..b],
        }
    }
}

/// Quantizes `x` into blocks: 8-bit values, scale and scaled sum.
#[inline(always)]
fn quantize_blocks(qs: &mut [i8], d: &mut [f32], s: &mut [f32], x: &[f32]) {
    for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        // Rounded half to even, as ggml's vector code rounds.
        for (q, v) in qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(xs) {
            let r = (v * inv).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        // Stored as f16, as ggml's Q8_1 stores them.
        d[b] = half::f16::from_f32(scale).to_f32();
        s[b] = half::f16::from_f32(d[b] * sum as f32).to_f32();
    }
}

/// [`quantize_blocks`] compiled for AVX2 (rounding in one instruction, not
/// a call to libm).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(qs: &mut [i8], d: &mut [f32], s: &mut [f32], x: &[f32]) {
    quantize_blocks(qs, d, s, x)
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    /// The 8-bit values.
    pub qs: &'a [i8],
    /// Each block's scale.
    pub d: &'a [f32],
    /// Each block's scale times the sum of its values.
    pub s: &'a [f32],
}
