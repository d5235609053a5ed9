//! f16 vectors (a key/value cache holds them) read in f32: a dot product,
//! a scaled add, and their many-position forms attention runs on (a query
//! against every cached key; the weighted sum of every cached value), with
//! F16C conversions where the CPU has them.
//!
//! The many-position forms round exactly as the one-position forms repeated
//! (same products, same order of sums): they only share loads, keep sums in
//! registers and add up eight dot products' lanes at once.

use super::isa::Isa;

/// `v` as f16 bits (rounded to nearest).
pub fn to_f16_bits(v: &[f32], out: &mut Vec<u16>) {
    out.extend(v.iter().map(|&x| half::f16::from_f32(x).to_bits()));
}

/// Σ q·k, `k` in f16 bits.
fn dot_f16(q: &[f32], k: &[u16]) -> f32 {
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

/// For each of `heads` query heads side by side in `q` (a group sharing
/// one cached head), `out[h·len + p] = (q_h · k_p) · scale` for each cached
/// key `k_p = keys[p·stride..][..head_dim]` (f16 bits), `p < len`, where
/// `out.len() = heads · len`.
pub fn scores_f16(
    q: &[f32],
    heads: usize,
    keys: &[u16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let (hd, len) = (q.len() / heads, out.len() / heads);
    if hd == 0 || len == 0 {
        out.fill(0.0);
        return;
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() != Isa::Generic && hd.is_multiple_of(8) {
        if len >= 8 {
            assert!(
                keys.len() >= (len / 8 * 8 - 1) * stride + hd,
                "keys within bounds"
            );
        }
        // Up to four heads at a time, each key read once for them.
        for (q, out) in q.chunks(4 * hd).zip(out.chunks_mut(4 * len)) {
            let args = (q, hd, keys, stride, scale, out);
            // SAFETY: as in `dot_f16`; the keys' bounds are asserted above.
            done = unsafe {
                match q.len() / hd {
                    1 => x86::scores::<1>(args),
                    2 => x86::scores::<2>(args),
                    3 => x86::scores::<3>(args),
                    _ => x86::scores::<4>(args),
                }
            };
        }
    }
    for (h, out) in out.chunks_exact_mut(len).enumerate() {
        let q = &q[h * hd..(h + 1) * hd];
        for (p, s) in out.iter_mut().enumerate().skip(done) {
            *s = dot_f16(q, &keys[p * stride..p * stride + hd]) * scale;
        }
    }
}

/// For each of `heads` rows of weights (`weights.len() = heads · len`),
/// `out_h = Σ_p weights[h·len + p] · v_p` for each cached value `v_p =
/// values[p·stride..][..head_dim]` (f16 bits), summed in order of `p`;
/// `out` holds the heads side by side.
pub fn weighted_sum_f16(
    weights: &[f32],
    heads: usize,
    values: &[u16],
    stride: usize,
    out: &mut [f32],
) {
    let (hd, len) = (out.len() / heads, weights.len() / heads);
    if hd == 0 || len == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() != Isa::Generic && hd.is_multiple_of(8) {
        assert!(
            values.len() >= (len - 1) * stride + hd,
            "values within bounds"
        );
        for (w, out) in weights.chunks(4 * len).zip(out.chunks_mut(4 * hd)) {
            let args = (w, len, values, stride, out);
            // SAFETY: as in `dot_f16`; the values' bounds are asserted above.
            unsafe {
                match w.len() / len {
                    1 => x86::weighted_sum::<1>(args),
                    2 => x86::weighted_sum::<2>(args),
                    3 => x86::weighted_sum::<3>(args),
                    _ => x86::weighted_sum::<4>(args),
                }
            }
        }
        return;
    }
    out.fill(0.0);
    for (out, weights) in out.chunks_exact_mut(hd).zip(weights.chunks_exact(len)) {
        for (p, &w) in weights.iter().enumerate() {
            add_scaled_f16(out, w, &values[p * stride..p * stride + hd]);
        }
    }
}

/// Each value rounded to the nearest f16 (ties to even), kept in f32.
pub fn round_to_f16(v: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() != Isa::Generic {
        // SAFETY: as in `dot_f16`.
        done = unsafe { x86::round_to_f16(v) };
    }
    for x in &mut v[done..] {
        *x = half::f16::from_f32(*x).to_f32();
    }
}

/// out += w·v, `v` in f16 bits.
fn add_scaled_f16(out: &mut [f32], w: f32, v: &[u16]) {
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

    /// `scores_f16` for `G` heads and the first multiple of eight positions
    /// (returned), head dimension `hd` a multiple of eight. Eight keys at a
    /// time, each read once for the `G` heads: each dot
    /// product's lanes accumulated exactly as `dot` accumulates them (four
    /// keys at a time, so the sums stay in sixteen registers), then the
    /// eight sums' lanes added in `dot`'s order after one transpose.
    // The sums are a register tile indexed by (head, key): indices say so
    // more plainly than nested iterators.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores<const G: usize>(
        (q, hd, keys, stride, scale, out): (&[f32], usize, &[u16], usize, f32, &mut [f32]),
    ) -> usize {
        let len = out.len() / G;
        let k = keys.as_ptr();
        for p0 in (0..len / 8 * 8).step_by(8) {
            let mut all = [[_mm256_setzero_ps(); 8]; G];
            for half in 0..2 {
                let mut acc = [[_mm256_setzero_ps(); 4]; G];
                for i in (0..hd).step_by(8) {
                    let qv: [__m256; G] =
                        std::array::from_fn(|g| _mm256_loadu_ps(q.as_ptr().add(g * hd + i)));
                    for p in 0..4 {
                        let at = k.add((p0 + 4 * half + p) * stride + i) as *const __m128i;
                        let kc = _mm256_cvtph_ps(_mm_loadu_si128(at));
                        for g in 0..G {
                            acc[g][p] = _mm256_fmadd_ps(qv[g], kc, acc[g][p]);
                        }
                    }
                }
                for g in 0..G {
                    all[g][4 * half..4 * half + 4].copy_from_slice(&acc[g]);
                }
            }
            for (g, all) in all.into_iter().enumerate() {
                let lanes = transpose(all);
                let mut sum = lanes[0];
                for l in &lanes[1..] {
                    sum = _mm256_add_ps(sum, *l);
                }
                let to = out.as_mut_ptr().add(g * len + p0);
                _mm256_storeu_ps(to, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
            }
        }
        len / 8 * 8
    }

    /// Rows become columns: lane `i` of result `j` is lane `j` of `a[i]`.
    #[target_feature(enable = "avx2")]
    fn transpose(a: [__m256; 8]) -> [__m256; 8] {
        let t = |x, y| (_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
        let (t0, t1) = t(a[0], a[1]);
        let (t2, t3) = t(a[2], a[3]);
        let (t4, t5) = t(a[4], a[5]);
        let (t6, t7) = t(a[6], a[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Positions `weighted_sum` takes at a time: 64 values of 64 f16
    /// columns are 8 KiB.
    const POSITIONS: usize = 64;

    /// How many positions ahead `weighted_sum` asks for values: a head's
    /// cached positions come from memory (every sequence's cache together
    /// is larger than the last-level cache), and the hardware's prefetch
    /// alone kept it waiting on them (SmolLM2, eight sequences decoding
    /// together: 13% of a step, 9% so; the same in `scores`, which reads
    /// eight keys at once, gained within the noise, 8.8% to 8.3%).
    const AHEAD: usize = 8;

    /// Asks for the cache lines of `hd` f16 values at `at` (a hint: never
    /// faults, wherever it points).
    #[inline(always)]
    unsafe fn prefetch_row(at: *const u16, hd: usize) {
        for byte in (0..2 * hd).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>((at as *const i8).wrapping_add(byte));
        }
    }

    /// `weighted_sum_f16` for `G` heads of `len` weights each, head
    /// dimension a multiple of eight. Each value read once for the `G`
    /// heads, the sums kept in registers 32 values of each head at a time
    /// over a block of positions, in `out` between blocks (each lane's
    /// fused multiply-adds in the order `add_scaled` does them).
    // As in `scores`: a tile indexed by (head, eight values).
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum<const G: usize>(
        (weights, len, values, stride, out): (&[f32], usize, &[u16], usize, &mut [f32]),
    ) {
        let hd = out.len() / G;
        out.fill(0.0);
        // Positions a block at a time, each block's values read for every
        // 32 columns while they are in L1: one pass over memory where a
        // pass per 32 columns would read a line of each value each time.
        for p0 in (0..len).step_by(POSITIONS) {
            for c0 in (0..hd).step_by(32) {
                let lanes = ((hd - c0) / 8).min(4);
                let mut acc = [[_mm256_setzero_ps(); 4]; G];
                for (g, acc) in acc.iter_mut().enumerate() {
                    for (l, acc) in acc.iter_mut().enumerate().take(lanes) {
                        *acc = _mm256_loadu_ps(out.as_ptr().add(g * hd + c0 + 8 * l));
                    }
                }
                for p in p0..(p0 + POSITIONS).min(len) {
                    let w: [__m256; G] =
                        std::array::from_fn(|g| _mm256_set1_ps(weights[g * len + p]));
                    let v = values.as_ptr().add(p * stride + c0);
                    if c0 == 0 {
                        prefetch_row(values.as_ptr().wrapping_add((p + AHEAD) * stride), hd);
                    }
                    for l in 0..lanes {
                        let x = _mm256_cvtph_ps(_mm_loadu_si128(v.add(8 * l) as *const __m128i));
                        for g in 0..G {
                            acc[g][l] = _mm256_fmadd_ps(w[g], x, acc[g][l]);
                        }
                    }
                }
                for (g, acc) in acc.iter().enumerate() {
                    for (l, acc) in acc.iter().enumerate().take(lanes) {
                        _mm256_storeu_ps(out.as_mut_ptr().add(g * hd + c0 + 8 * l), *acc);
                    }
                }
            }
        }
    }

    /// `round_to_f16` for the first multiple of eight values (returned).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn round_to_f16(v: &mut [f32]) -> usize {
        let len = v.len() / 8 * 8;
        for i in (0..len).step_by(8) {
            let x = _mm256_loadu_ps(v.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_ps(v.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        len
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

    /// A cache of `positions` rows of `stride` f16 values.
    fn cache(positions: usize, stride: usize, seed: f32) -> Vec<u16> {
        let v: Vec<f32> = (0..positions * stride)
            .map(|i| (i as f32 * seed).sin() * 2.0)
            .collect();
        let mut bits = Vec::new();
        to_f16_bits(&v, &mut bits);
        bits
    }

    #[test]
    fn many_positions_round_as_one_position_repeated() {
        for heads in [1, 3, 5] {
            for hd in [8, 12, 64, 72] {
                for len in [0, 1, 3, 8, 17, 33, 65, 130] {
                    // Two cached heads side by side: the group reads the second.
                    let stride = 2 * hd;
                    let (keys, values) = (cache(len, stride, 0.71), cache(len, stride, 0.43));
                    let q: Vec<f32> = (0..heads * hd).map(|i| (i as f32 * 0.37).cos()).collect();
                    let mut scores = vec![0f32; heads * len];
                    scores_f16(
                        &q,
                        heads,
                        &keys[hd.min(keys.len())..],
                        stride,
                        0.125,
                        &mut scores,
                    );
                    let mut sum = vec![0f32; heads * hd];
                    weighted_sum_f16(
                        &scores,
                        heads,
                        &values[hd.min(values.len())..],
                        stride,
                        &mut sum,
                    );
                    for h in 0..heads {
                        let at = |p: usize| p * stride + hd..p * stride + 2 * hd;
                        let mut one = vec![0f32; hd];
                        for p in 0..len {
                            let s = dot_f16(&q[h * hd..(h + 1) * hd], &keys[at(p)]) * 0.125;
                            let got = scores[h * len + p];
                            assert_eq!(
                                got.to_bits(),
                                s.to_bits(),
                                "score {p} head {h}, hd {hd}, len {len}"
                            );
                            add_scaled_f16(&mut one, s, &values[at(p)]);
                        }
                        assert_eq!(
                            sum[h * hd..(h + 1) * hd],
                            one,
                            "head {h}, hd {hd}, len {len}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_to_f16_is_halfs_rounding() {
        let mut v: Vec<f32> = (0..37).map(|i| (i as f32 * 1.37).tan() * 100.0).collect();
        let expected: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        round_to_f16(&mut v);
        assert_eq!(v, expected);
    }
}
