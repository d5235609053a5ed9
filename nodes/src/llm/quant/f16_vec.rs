//! f16 vectors (a key/value cache holds them) read in f32: a dot product
//! and a scaled add, with F16C conversions where the CPU has them.

use super::isa::Isa;

/// `v` as f16 bits (rounded to nearest).
pub fn to_f16_bits(v: &[f32], out: &mut Vec<u16>) {
    out.extend(v.iter().map(|&x| half::f16::from_f32(x).to_bits()));
}

/// Σ q·k, `k` in f16 bits.
pub fn dot_f16(q: &[f32], k: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() != Isa::Generic {
        // SAFETY: AVX2, FMA and F16C are there (`Isa::detected`).
        return unsafe { x86::dot(q, k) };
    }
    q.iter()
        .zip(k)
        .map(|(&a, &b)| a * half::f16::from_bits(b).to_f32())
        .sum()
}

/// out += w·v, `v` in f16 bits.
pub fn add_scaled_f16(out: &mut [f32], w: f32, v: &[u16]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() != Isa::Generic {
        // SAFETY: as in `dot_f16`.
        return unsafe { x86::add_scaled(out, w, v) };
    }
    for (o, &b) in out.iter_mut().zip(v) {
        *o += w * half::f16::from_bits(b).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(q: &[f32], k: &[u16]) -> f32 {
        let n = q.len().min(k.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), kv, acc);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum: f32 = lanes.iter().sum();
        for j in i..n {
            sum += q[j] * half::f16::from_bits(k[j]).to_f32();
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn add_scaled(out: &mut [f32], w: f32, v: &[u16]) {
        let n = out.len().min(v.len());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
            let o = _mm256_loadu_ps(out.as_ptr().add(i));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_fmadd_ps(wv, x, o));
            i += 8;
        }
        for j in i..n {
            out[j] += w * half::f16::from_bits(v[j]).to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_reads_equal_the_portable_ones_on_odd_lengths() {
        for n in [1, 3, 8, 17, 64, 67] {
            let q: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut k = Vec::new();
            to_f16_bits(&q.iter().map(|v| v * 0.5 - 0.1).collect::<Vec<_>>(), &mut k);
            let portable: f32 = q
                .iter()
                .zip(&k)
                .map(|(&a, &b)| a * half::f16::from_bits(b).to_f32())
                .sum();
            assert!((dot_f16(&q, &k) - portable).abs() < 1e-5, "n = {n}");
            let mut out = vec![1.0f32; n];
            add_scaled_f16(&mut out, 0.5, &k);
            for (o, &b) in out.iter().zip(&k) {
                assert!((o - (1.0 + 0.5 * half::f16::from_bits(b).to_f32())).abs() < 1e-6);
            }
        }
    }
}
