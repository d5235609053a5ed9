//! The products' vector code for x86-64: AVX2 (+FMA, F16C) and AVX-512
//! VNNI. Callers check the CPU first (`Isa::detected`).

use std::arch::x86_64::*;

use super::act::{ActRow, TILE};

/// A Q4_1 block's `d` and `m` from their f16 bits, by F16C.
#[target_feature(enable = "avx2,fma,f16c")]
fn halves_f16c(bits: [u16; 2]) -> [f32; 2] {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(
        (bits[0] as u32 | (bits[1] as u32) << 16) as i32,
    ));
    let mut s = [0f32; 4];
    // SAFETY: four floats into four.
    unsafe { _mm_storeu_ps(s.as_mut_ptr(), v) };
    [s[0], s[1]]
}

#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 four-bit values of a Q4_1 block as bytes, in value order.
#[target_feature(enable = "avx2,fma")]
unsafe fn nibbles(q: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(q as *const __m128i);
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    _mm256_set_m128i(hi, lo)
}

/// Adds Σ_b d_b·dy_b·(w_b · y_b) to `out` for each activation row,
/// unpacking each weight block once for all rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_rows_avx2(
    qs: &[u8],
    dm: &[[u16; 2]],
    acts: &[ActRow<'_>],
    out: &mut [f32; TILE],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); TILE];
    let mut mins = [0f32; TILE];
    for (b, &bits) in dm.iter().enumerate() {
        let [d, m] = halves_f16c(bits);
        let w = nibbles(qs.as_ptr().add(b * 16));
        for ((acc, mins), a) in acc.iter_mut().zip(&mut mins).zip(acts) {
            let v = _mm256_loadu_si256(a.qs.as_ptr().add(b * 32) as *const __m256i);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), ones);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a.d[b]), *acc);
            *mins += m * a.s[b];
        }
    }
    for ((o, acc), mins) in out.iter_mut().zip(acc).zip(mins).take(acts.len()) {
        *o = hsum(acc) + mins;
    }
}

/// As [`q4_1_rows_avx2`], two blocks per 512-bit step, the integer
/// products by VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn q4_1_rows_vnni(
    qs: &[u8],
    dm: &[[u16; 2]],
    acts: &[ActRow<'_>],
    out: &mut [f32; TILE],
) {
    let nb = dm.len();
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); TILE];
    let mut mins = [0f32; TILE];
    let mut b = 0;
    while b + 2 <= nb {
        // Two blocks' 64 values in order: block b's low and high
        // nibbles, then block b+1's.
        let raw = _mm256_loadu_si256(qs.as_ptr().add(b * 16) as *const __m256i);
        let lo = _mm256_and_si256(raw, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
        let w = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
            _mm256_permute2x128_si256(lo, hi, 0x31),
            1,
        );
        // d0, m0, d1, m1 in one conversion.
        let four = _mm_cvtph_ps(_mm_loadl_epi64(dm.as_ptr().add(b) as *const __m128i));
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), four);
        let [d0, m0, d1, m1] = s;
        let dw = _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
        for ((acc, mins), a) in acc.iter_mut().zip(&mut mins).zip(acts) {
            *mins += m0 * a.s[b] + m1 * a.s[b + 1];
            let v = _mm512_loadu_si512(a.qs.as_ptr().add(b * 32) as *const _);
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, v);
            let dy = _mm512_insertf32x8(_mm512_set1_ps(a.d[b]), _mm256_set1_ps(a.d[b + 1]), 1);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, dy), *acc);
        }
        b += 2;
    }
    for (((o, acc), mins), a) in out.iter_mut().zip(acc).zip(mins).zip(acts) {
        *o = _mm512_reduce_add_ps(acc) + mins;
        if b < nb {
            let [d, m] = halves_f16c(dm[b]);
            *o += m * a.s[b];
            // An odd last block, 256 bits wide.
            let w = nibbles(qs.as_ptr().add(b * 16));
            let v = _mm256_loadu_si256(a.qs.as_ptr().add(b * 32) as *const __m256i);
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, v);
            *o += hsum(_mm256_mul_ps(
                _mm256_cvtepi32_ps(p),
                _mm256_set1_ps(d * a.d[b]),
            ));
        }
    }
}

/// Σ_b d_b·dy_b·(w_b · y_b) for each activation row, each weight
/// block loaded once for all rows.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q8_0_rows_avx2(qs: &[i8], d: &[f32], acts: &[ActRow<'_>], out: &mut [f32; TILE]) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); TILE];
    for (b, &db) in d.iter().enumerate() {
        let w = _mm256_loadu_si256(qs.as_ptr().add(b * 32) as *const __m256i);
        let aw = _mm256_sign_epi8(w, w);
        for (acc, a) in acc.iter_mut().zip(acts) {
            let v = _mm256_loadu_si256(a.qs.as_ptr().add(b * 32) as *const __m256i);
            // |w| · (v with w's sign): unsigned × signed, as maddubs needs.
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(v, w)), ones);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(db * a.d[b]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc).take(acts.len()) {
        *o = hsum(acc);
    }
}

/// As [`q8_0_rows_avx2`], two blocks per 512-bit step, the integer
/// products by VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn q8_0_rows_vnni(qs: &[i8], d: &[f32], acts: &[ActRow<'_>], out: &mut [f32; TILE]) {
    let nb = d.len();
    let mut acc = [_mm512_setzero_ps(); TILE];
    let mut b = 0;
    while b + 2 <= nb {
        let w = _mm512_loadu_si512(qs.as_ptr().add(b * 32) as *const _);
        let aw = _mm512_abs_epi8(w);
        let negative = _mm512_movepi8_mask(w);
        let dw = _mm512_insertf32x8(_mm512_set1_ps(d[b]), _mm256_set1_ps(d[b + 1]), 1);
        for (acc, a) in acc.iter_mut().zip(acts) {
            let v = _mm512_loadu_si512(a.qs.as_ptr().add(b * 32) as *const _);
            // v with w's sign, so |w| can be the unsigned side.
            let sv = _mm512_mask_sub_epi8(v, negative, _mm512_setzero_si512(), v);
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sv);
            let dy = _mm512_insertf32x8(_mm512_set1_ps(a.d[b]), _mm256_set1_ps(a.d[b + 1]), 1);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, dy), *acc);
        }
        b += 2;
    }
    for ((o, acc), a) in out.iter_mut().zip(acc).zip(acts) {
        *o = _mm512_reduce_add_ps(acc);
        if b < nb {
            let w = _mm256_loadu_si256(qs.as_ptr().add(b * 32) as *const __m256i);
            let v = _mm256_loadu_si256(a.qs.as_ptr().add(b * 32) as *const __m256i);
            let p = _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(w, w),
                _mm256_sign_epi8(v, w),
            );
            *o += hsum(_mm256_mul_ps(
                _mm256_cvtepi32_ps(p),
                _mm256_set1_ps(d[b] * a.d[b]),
            ));
        }
    }
}
