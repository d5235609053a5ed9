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

/// Blocks quantized by one task.
const CHUNK: usize = 64;

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
        let vector = Isa::detected() != Isa::Generic;
        // A few rows are quantized in less time than the pool takes to
        // hand out work.
        if total <= CHUNK * 4 {
            return quantize_on(vector, &mut self.qs, &mut self.d, &mut self.s, x);
        }
        self.qs
            .par_chunks_mut(BLOCK * CHUNK)
            .zip(self.d.par_chunks_mut(CHUNK))
            .zip(self.s.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(BLOCK * CHUNK))
            .for_each(|(((qs, d), s), x)| quantize_on(vector, qs, d, s, x));
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

/// [`quantize_blocks`] by vector code where the CPU has it.
fn quantize_on(vector: bool, qs: &mut [i8], d: &mut [f32], s: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: AVX2 is there (`Isa::detected`).
        return unsafe { quantize_avx2(qs, d, s, x) };
    }
    let _ = vector;
    quantize_blocks(qs, d, s, x)
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

/// [`quantize_blocks`] by AVX2, the same numbers: a block's largest
/// magnitude in four vector maxima (the scalar fold is a chain of 32
/// dependent `maxss`), its values rounded and packed eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(qs: &mut [i8], d: &mut [f32], s: &mut [f32], x: &[f32]) {
    use std::arch::x86_64::*;
    let magnitude = _mm256_set1_ps(-0.0);
    for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
        let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(xs.as_ptr().add(8 * k)));
        let abs = |v| _mm256_andnot_ps(magnitude, v);
        let most = _mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        );
        let most = _mm_max_ps(_mm256_castps256_ps128(most), _mm256_extractf128_ps(most, 1));
        let most = _mm_max_ps(most, _mm_movehl_ps(most, most));
        let amax = _mm_cvtss_f32(_mm_max_ss(most, _mm_movehdup_ps(most)));
        let scale = amax / 127.0;
        let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        // Rounded half to even, as `round_ties_even`.
        let q: [__m256i; 4] = std::array::from_fn(|k| {
            let r = _mm256_round_ps(
                _mm256_mul_ps(v[k], inv),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            _mm256_cvtps_epi32(r)
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01)));
        // Packing interleaves 128-bit lanes; the permute puts them back.
        let words = _mm256_packs_epi32(q[0], q[1]);
        let words2 = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_packs_epi16(words, words2);
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(qs.as_mut_ptr().add(b * BLOCK) as *mut __m256i, bytes);
        // Stored as f16, as ggml's Q8_1 stores them.
        d[b] = half::f16::from_f32(scale).to_f32();
        s[b] = half::f16::from_f32(d[b] * sum as f32).to_f32();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_quantizer_gives_the_portable_numbers() {
        #[cfg(target_arch = "x86_64")]
        if Isa::detected() != Isa::Generic {
            // Random values, exact halves (ties), a zero block and a block
            // of one repeated magnitude.
            let mut x: Vec<f32> = (0..BLOCK * 40)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            x[BLOCK..2 * BLOCK].fill(0.0);
            for (i, v) in x[2 * BLOCK..3 * BLOCK].iter_mut().enumerate() {
                *v = if i % 2 == 0 { 2.5 } else { -2.5 };
            }
            for (i, v) in x[3 * BLOCK..4 * BLOCK].iter_mut().enumerate() {
                *v = 127.0 * (i as f32 - 16.0) / 32.0 + 0.5;
            }
            let n = x.len() / BLOCK;
            let (mut q0, mut d0, mut s0) = (vec![0i8; x.len()], vec![0f32; n], vec![0f32; n]);
            let (mut q1, mut d1, mut s1) = (q0.clone(), d0.clone(), s0.clone());
            quantize_blocks(&mut q0, &mut d0, &mut s0, &x);
            // SAFETY: AVX2 is there (`Isa::detected`).
            unsafe { quantize_avx2(&mut q1, &mut d1, &mut s1, &x) };
            assert_eq!(q0, q1);
            assert_eq!(d0, d1);
            assert_eq!(s0, s1);
            assert!(q0.contains(&127) && q0.contains(&-127));
        }
    }
}
