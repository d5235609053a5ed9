//! The products' vector code for x86-64: AVX2 (+FMA, F16C) and AVX-512
//! VNNI. Callers check the CPU first (`Isa::detected`).

use std::arch::x86_64::*;

use super::act::{ActRow, GROUP, TILE};

/// Activation rows a VNNI Q4_1 kernel call takes: each row holds eight
/// 512-bit sums, so more than two rows spill them to the stack (measured,
/// Zen 5, SmolLM2: eight decoding together 448–487 tokens/s taking all
/// eight rows at once, 457–572 two at a time, 516–547 three at a time).
const VNNI_ROWS: usize = 2;

/// As [`VNNI_ROWS`] for AVX2, whose kernel decodes weights as it uses them
/// (one to eight rows measured within noise of each other).
const AVX2_ROWS: usize = TILE;

#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Calls `$kernel::<R>` on the activation rows `$most` at a time, R = the
/// rows of each call, so each count gets its accumulators in registers.
macro_rules! by_rows {
    ($kernel:ident, $most:expr, $qs:expr, $dm:expr, $acts:expr, $out:expr) => {
        for (acts, out) in $acts.chunks($most).zip($out.chunks_mut($most)) {
            match acts.len() {
                1 => $kernel::<1>($qs, $dm, acts, out),
                2 => $kernel::<2>($qs, $dm, acts, out),
                3 => $kernel::<3>($qs, $dm, acts, out),
                4 => $kernel::<4>($qs, $dm, acts, out),
                5 => $kernel::<5>($qs, $dm, acts, out),
                6 => $kernel::<6>($qs, $dm, acts, out),
                7 => $kernel::<7>($qs, $dm, acts, out),
                _ => $kernel::<8>($qs, $dm, acts, out),
            }
        }
    };
}

/// Four activation bytes `4j..4j+4` of a block, in every 32-bit lane.
#[inline(always)]
unsafe fn four_bytes(y: *const i8, j: usize) -> i32 {
    (y.add(4 * j) as *const i32).read_unaligned()
}

/// Sixteen interleaved Q4_1 rows (see `q4_1.rs`) against each activation
/// row, by AVX-512 VNNI: per block, eight `vpdpbusd` give the sixteen
/// rows' sums of four products each, the scales are one f16 vector each.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q4_1_group_vnni(
    qs: &[u8],
    dm: &[u16],
    acts: &[ActRow<'_>],
    out: &mut [[f32; GROUP]; TILE],
) {
    by_rows!(q4_1_group_vnni_rows, VNNI_ROWS, qs, dm, acts, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_group_vnni_rows<const R: usize>(
    qs: &[u8],
    dm: &[u16],
    acts: &[ActRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    let nb = dm.len() / (2 * GROUP);
    let mask = _mm512_set1_epi8(0x0F);
    // As ggml rounds: per activation row, eight float sums (one per four
    // values of a block, over the blocks), added at the end in the order
    // of its horizontal sum, and the minimums' terms summed apart.
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    let mut mins = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let q = qs.as_ptr().add(b * GROUP * 16);
        let mut w = [_mm512_setzero_si512(); 8];
        for j in 0..4 {
            let raw = _mm512_loadu_si512(q.add(64 * j) as *const _);
            w[j] = _mm512_and_si512(raw, mask);
            w[4 + j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
        }
        let scales = dm.as_ptr().add(b * 2 * GROUP);
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(scales as *const __m256i));
        let m = _mm512_cvtph_ps(_mm256_loadu_si256(scales.add(GROUP) as *const __m256i));
        for k in 0..R {
            let a = &acts[k];
            let y = a.qs.as_ptr().add(b * 32);
            let dd = _mm512_mul_ps(d, _mm512_set1_ps(a.d[b]));
            for j in 0..8 {
                let p = _mm512_dpbusd_epi32(
                    _mm512_setzero_si512(),
                    w[j],
                    _mm512_set1_epi32(four_bytes(y, j)),
                );
                acc[k][j] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc[k][j]);
            }
            mins[k] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s[b]), mins[k]);
        }
    }
    for k in 0..R {
        let a = &acc[k];
        let even = _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6]));
        let odd = _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7]));
        let sum = _mm512_add_ps(_mm512_add_ps(even, odd), mins[k]);
        _mm512_storeu_ps(out[k].as_mut_ptr(), sum);
    }
}

/// As [`q4_1_group_vnni`] on AVX2: each half of the group (eight rows) in
/// 256-bit registers, the integer products by `vpmaddubsw` and `vpmaddwd`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_group_avx2(
    qs: &[u8],
    dm: &[u16],
    acts: &[ActRow<'_>],
    out: &mut [[f32; GROUP]; TILE],
) {
    by_rows!(q4_1_group_avx2_rows, AVX2_ROWS, qs, dm, acts, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_group_avx2_rows<const R: usize>(
    qs: &[u8],
    dm: &[u16],
    acts: &[ActRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    let nb = dm.len() / (2 * GROUP);
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for half in 0..2 {
        // Summed as in `q4_1_group_vnni`.
        let mut acc = [[_mm256_setzero_ps(); 8]; R];
        let mut mins = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let q = qs.as_ptr().add(b * GROUP * 16 + 32 * half);
            let scales = dm.as_ptr().add(b * 2 * GROUP + 8 * half);
            let d = _mm256_cvtph_ps(_mm_loadu_si128(scales as *const __m128i));
            let m = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(GROUP) as *const __m128i));
            let dd: [__m256; R] =
                std::array::from_fn(|k| _mm256_mul_ps(d, _mm256_set1_ps(acts[k].d[b])));
            // Sixteen registers only: each 32-byte load decoded as it is
            // used (then read again from L1 for the next row), not all
            // eight decoded vectors held across rows.
            for j in 0..4 {
                let raw = _mm256_loadu_si256(q.add(64 * j) as *const __m256i);
                let lo = _mm256_and_si256(raw, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                for k in 0..R {
                    let y = acts[k].qs.as_ptr().add(b * 32);
                    let yj = _mm256_set1_epi32(four_bytes(y, j));
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, yj), ones);
                    acc[k][j] = _mm256_fmadd_ps(dd[k], _mm256_cvtepi32_ps(p), acc[k][j]);
                    let yj = _mm256_set1_epi32(four_bytes(y, 4 + j));
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yj), ones);
                    acc[k][4 + j] = _mm256_fmadd_ps(dd[k], _mm256_cvtepi32_ps(p), acc[k][4 + j]);
                }
            }
            for k in 0..R {
                mins[k] = _mm256_fmadd_ps(m, _mm256_set1_ps(acts[k].s[b]), mins[k]);
            }
        }
        for k in 0..R {
            let a = &acc[k];
            let even = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
            let odd = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
            let sum = _mm256_add_ps(_mm256_add_ps(even, odd), mins[k]);
            _mm256_storeu_ps(out[k].as_mut_ptr().add(8 * half), sum);
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

/// [`q8_0_rows_avx2`] for one activation row against four weight rows
/// (`qs` and `d` hold the four rows one after the other): four independent
/// sums where one row alone waits on each addition, each summed exactly as
/// [`q8_0_rows_avx2`] sums it.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q8_0_four_rows_avx2(qs: &[i8], d: &[f32], act: &ActRow<'_>, out: &mut [f32; 4]) {
    let nb = d.len() / 4;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        let v = _mm256_loadu_si256(act.qs.as_ptr().add(b * 32) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = _mm256_loadu_si256(qs.as_ptr().add((r * nb + b) * 32) as *const __m256i);
            let aw = _mm256_sign_epi8(w, w);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(v, w)), ones);
            let scale = _mm256_set1_ps(d[r * nb + b] * act.d[b]);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum(acc);
    }
}

/// [`q8_0_rows_vnni`] for one activation row against four weight rows, as
/// [`q8_0_four_rows_avx2`] is to [`q8_0_rows_avx2`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn q8_0_four_rows_vnni(qs: &[i8], d: &[f32], act: &ActRow<'_>, out: &mut [f32; 4]) {
    let nb = d.len() / 4;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut b = 0;
    while b + 2 <= nb {
        let v = _mm512_loadu_si512(act.qs.as_ptr().add(b * 32) as *const _);
        let dy = _mm512_insertf32x8(_mm512_set1_ps(act.d[b]), _mm256_set1_ps(act.d[b + 1]), 1);
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = r * nb + b;
            let w = _mm512_loadu_si512(qs.as_ptr().add(at * 32) as *const _);
            let aw = _mm512_abs_epi8(w);
            let negative = _mm512_movepi8_mask(w);
            let dw = _mm512_insertf32x8(_mm512_set1_ps(d[at]), _mm256_set1_ps(d[at + 1]), 1);
            let sv = _mm512_mask_sub_epi8(v, negative, _mm512_setzero_si512(), v);
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sv);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, dy), *acc);
        }
        b += 2;
    }
    for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
        *o = _mm512_reduce_add_ps(acc);
        if b < nb {
            let at = r * nb + b;
            let w = _mm256_loadu_si256(qs.as_ptr().add(at * 32) as *const __m256i);
            let v = _mm256_loadu_si256(act.qs.as_ptr().add(b * 32) as *const __m256i);
            let p = _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(w, w),
                _mm256_sign_epi8(v, w),
            );
            *o += hsum(_mm256_mul_ps(
                _mm256_cvtepi32_ps(p),
                _mm256_set1_ps(d[at] * act.d[b]),
            ));
        }
    }
}
