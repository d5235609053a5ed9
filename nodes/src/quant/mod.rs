//! Weight matrices in ggml's block formats and their products with
//! activations, with vector code chosen at run time.
//!
//! A weight matrix keeps its rows in the GGUF's blocks of 32 (Q4_1: a scale,
//! a minimum and 32 four-bit values, interleaved sixteen rows at a time, see
//! [`q4_1`]; Q8_0: a scale, widened to f32 at load, and 32 bytes). Activations are quantized to Q8 blocks
//! (a scale, the 32 bytes and their scaled sum, as ggml's Q8_1) and each dot
//! product runs on integers, as llama.cpp computes it. Formats without a
//! kernel here are decoded to f32 at load.
//!
//! candle's own Q4_1 product is scalar code, and its vector kernels are
//! chosen when candle is compiled; these are chosen on the machine that runs
//! them ([`Isa::detected`]): AVX-512 VNNI, AVX2 + FMA, or portable code.
//! The language models ([`crate::llm`]) and quantized fully connected
//! layers ([`crate::nn::dense`]) both multiply here; products too small to
//! be worth a second thread stay on the calling one.

use rayon::prelude::*;

mod act;
mod f16_vec;
mod isa;
pub mod q4_1;

use act::{ActRow, TILE};
pub use act::{Q8Rows, BLOCK};
pub use f16_vec::{round_to_f16, scores_f16, to_f16_bits, weighted_sum_f16};
pub use isa::Isa;
use q4_1::{GROUP, Q4_1};

/// A weight matrix's values.
#[derive(Clone, Debug)]
pub enum Weights {
    /// ggml Q4_1 (value = d·q + m), `d` and `m` kept in f16 as the file
    /// has them (decoding is memory-bound: wider scales would be 20% more
    /// bytes per token), rows interleaved by sixteen.
    Q4_1(Q4_1),
    /// ggml Q8_0: per block, `d` (value = d·q) and 32 signed bytes.
    Q8_0 { qs: Vec<i8>, d: Vec<f32> },
    /// Plain f32, row-major.
    F32(Vec<f32>),
}

/// A `rows × cols` weight matrix (a linear layer's `out × in`).
#[derive(Clone, Debug)]
pub struct QMatrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The values.
    pub weights: Weights,
}

/// Output rows computed by one task.
const ROWS_PER_TASK: usize = 16;

/// A single activation row meets four Q8_0 weight rows at a time in
/// matrices of at most this many weights, which sit in cache, where the
/// four sums' independence pays (LeNet-300-100 at batch 1: 8.7 µs against
/// 15 µs). Larger ones stream from memory, where four rows at once showed
/// no gain (SmolLM2's 49 152 × 576 output layer, inside this machine's
/// run-to-run spread of decoding speed).
const FOUR_ROWS_UP_TO: usize = 1 << 20;

/// Products of at most this many multiply-adds run on the
/// calling thread: handing a small layer to the pool costs more than the
/// second core saves.
const SERIAL_WORK: usize = 1 << 18;

/// The same bound for a call from outside the pool (a served batch, a
/// model's forward pass on the caller's thread): there the caller hands the
/// work over and sleeps until it is done, which costs more (measured, Zen 5,
/// 1024 × 1024 Q4_0 at batch 1: 21.7 µs handed to two threads, 9.5 µs on
/// the caller alone).
const SERIAL_WORK_FROM_OUTSIDE: usize = 1 << 20;

/// Whether a product of `work` multiply-adds runs on the calling thread.
fn serial(work: usize) -> bool {
    let most = match rayon::current_thread_index() {
        Some(_) => SERIAL_WORK,
        None => SERIAL_WORK_FROM_OUTSIDE,
    };
    work <= most
}

/// Scratch for products: the quantized activations.
#[derive(Default)]
pub struct Scratch {
    q8: Q8Rows,
}

impl QMatrix {
    /// A matrix of `cols` columns from Q4_1 block bytes as a GGUF stores
    /// them: the rows of each part (whole rows) one after the other, read
    /// straight into the interleaved layout.
    pub fn from_q4_1(cols: usize, parts: &[&[u8]]) -> QMatrix {
        let nb = cols / BLOCK;
        let rows_of = |p: &[u8]| p.len() / (nb * 20);
        // Each row's part and row within it.
        let owner: Vec<(usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..rows_of(p)).map(move |r| (i, r)))
            .collect();
        let weights = Q4_1::from_blocks(owner.len(), nb, |r, b| {
            let (i, r) = owner[r];
            let raw = &parts[i][(r * nb + b) * 20..(r * nb + b + 1) * 20];
            let dm = [
                u16::from_le_bytes([raw[0], raw[1]]),
                u16::from_le_bytes([raw[2], raw[3]]),
            ];
            (dm, raw[4..20].try_into().expect("16 bytes"))
        });
        QMatrix {
            rows: owner.len(),
            cols,
            weights: Weights::Q4_1(weights),
        }
    }

    /// A matrix of `cols` columns from Q4_0 block bytes (value = d·(q − 8)),
    /// run as Q4_1 with the minimum −8·d: exact, since multiplying an f16 by
    /// eight only moves its exponent (for any block whose largest weight is
    /// under f16's 65 504).
    pub fn from_q4_0(cols: usize, bytes: &[u8]) -> QMatrix {
        let nb = cols / BLOCK;
        let rows = bytes.len() / (nb * 18);
        let weights = Q4_1::from_blocks(rows, nb, |r, b| {
            let raw = &bytes[(r * nb + b) * 18..(r * nb + b + 1) * 18];
            let d = half::f16::from_bits(u16::from_le_bytes([raw[0], raw[1]]));
            let m = half::f16::from_f32(-8.0 * d.to_f32());
            (
                [d.to_bits(), m.to_bits()],
                raw[2..18].try_into().expect("16 bytes"),
            )
        });
        QMatrix {
            rows,
            cols,
            weights: Weights::Q4_1(weights),
        }
    }

    /// A matrix of `cols` columns from Q8_0 block bytes, the rows of each
    /// part one after the other.
    pub fn from_q8_0(cols: usize, parts: &[&[u8]]) -> QMatrix {
        let blocks: usize = parts.iter().map(|p| p.len() / 34).sum();
        let mut qs = Vec::with_capacity(blocks * BLOCK);
        let mut d = Vec::with_capacity(blocks);
        for b in parts.iter().flat_map(|p| p.chunks_exact(34)) {
            d.push(f16(b[0], b[1]));
            qs.extend(b[2..34].iter().map(|&v| v as i8));
        }
        QMatrix {
            rows: blocks * BLOCK / cols,
            cols,
            weights: Weights::Q8_0 { qs, d },
        }
    }

    /// Every value, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.rows).flat_map(|r| self.row_f32(r)).collect()
    }

    /// Row `r`'s values (an embedding lookup).
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let nb = self.cols / BLOCK;
        match &self.weights {
            Weights::Q4_1(w) => w.row_f32(r),
            Weights::Q8_0 { qs, d } => qs[r * self.cols..(r + 1) * self.cols]
                .iter()
                .enumerate()
                .map(|(i, &q)| q as f32 * d[r * nb + i / BLOCK])
                .collect(),
            Weights::F32(w) => w[r * self.cols..(r + 1) * self.cols].to_vec(),
        }
    }

    /// Bytes the values take in memory.
    pub fn bytes(&self) -> usize {
        match &self.weights {
            Weights::Q4_1(w) => w.bytes(),
            Weights::Q8_0 { qs, d } => qs.len() + d.len() * 4,
            Weights::F32(w) => w.len() * 4,
        }
    }

    /// `out[i][j] = Σ_k x[i][k] · W[j][k]` for the `x.len() / cols` rows of
    /// `x`, on the best path this CPU has, across the thread pool.
    pub fn matmul(&self, x: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        self.matmul_on(Isa::detected(), x, out, scratch)
    }

    /// [`QMatrix::matmul`] on the given path (`isa` must be one of
    /// [`Isa::available`]).
    pub fn matmul_on(&self, isa: Isa, x: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        let m = x.len() / self.cols;
        assert_eq!(out.len(), m * self.rows, "product output size");
        if !matches!(self.weights, Weights::F32(_)) {
            scratch.q8.quantize(x, self.cols);
        }
        match &self.weights {
            Weights::Q4_1(w) => {
                let serial = serial(m * self.rows * self.cols);
                matmul_groups(w, isa, &scratch.q8, m, self.rows, serial, out)
            }
            _ => self.matmul_rows(isa, &scratch.q8, x, out),
        }
    }

    /// A Q8_0 or f32 product, weight row by weight row.
    fn matmul_rows(&self, isa: Isa, q8: &Q8Rows, x: &[f32], out: &mut [f32]) {
        let m = x.len() / self.cols;
        let n = self.rows;
        let out_at = SyncPtr(out.as_mut_ptr());
        // A few tasks per thread: enough to balance, few enough that a
        // one-token step is not spent handing out work.
        let per_task = (n / (rayon::current_num_threads() * 4)).max(ROWS_PER_TASK);
        let tasks = n.div_ceil(per_task);
        let four_rows = n * self.cols <= FOUR_ROWS_UP_TO;
        let task = |t: usize| {
            let out_at = &out_at;
            let mut rows = t * per_task..((t + 1) * per_task).min(n);
            // One activation row (a token, a request of one): four weight
            // rows at a time, so four sums advance together.
            while m == 1 && four_rows && rows.len() >= 4 {
                let Some(v) = self.dot_four_rows(isa, rows.start, &q8.row(0)) else {
                    break;
                };
                for (k, v) in v.into_iter().enumerate() {
                    // SAFETY: as below.
                    unsafe { *out_at.0.add(rows.start + k) = v };
                }
                rows.start += 4;
            }
            // Up to eight activation rows share each weight row's decoding.
            for i0 in (0..m).step_by(TILE) {
                let r = TILE.min(m - i0);
                let tile: [ActRow<'_>; TILE] = std::array::from_fn(|k| q8.row(i0 + k.min(r - 1)));
                for j in rows.clone() {
                    let v = self.dot_rows(isa, j, i0, &tile[..r], x);
                    for (k, v) in v.into_iter().take(r).enumerate() {
                        // SAFETY: each (i, j) is written by exactly one task,
                        // and `out` holds m × n values (asserted in `matmul_on`).
                        unsafe { *out_at.0.add((i0 + k) * n + j) = v };
                    }
                }
            }
        };
        if serial(m * n * self.cols) {
            (0..tasks).for_each(task);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    }

    /// Weight rows `j..j + 4` of a Q8_0 matrix against one activation row,
    /// each summed as [`QMatrix::dot_rows`] sums it; `None` where no
    /// four-row kernel fits (portable code, f32 weights).
    fn dot_four_rows(&self, isa: Isa, j: usize, act: &ActRow<'_>) -> Option<[f32; 4]> {
        let Weights::Q8_0 { qs, d } = &self.weights else {
            return None;
        };
        let nb = self.cols / BLOCK;
        let (a, b) = (j * nb, (j + 4) * nb);
        let (qs, d) = (&qs[a * BLOCK..b * BLOCK], &d[a..b]);
        let mut out = [0f32; 4];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is one this CPU has (`Isa::available`).
            Isa::Avx2 => unsafe { x86::q8_0_four_rows_avx2(qs, d, act, &mut out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::q8_0_four_rows_vnni(qs, d, act, &mut out) },
            _ => return None,
        }
        Some(out)
    }

    /// Weight row `j` of a Q8_0 or f32 matrix against the activation rows `acts` (quantized rows
    /// `i0..i0 + acts.len()` of `x`, at most [`TILE`]).
    fn dot_rows(
        &self,
        isa: Isa,
        j: usize,
        i0: usize,
        acts: &[ActRow<'_>],
        x: &[f32],
    ) -> [f32; TILE] {
        let nb = self.cols / BLOCK;
        let (a, b) = (j * nb, (j + 1) * nb);
        let mut out = [0f32; TILE];
        match &self.weights {
            Weights::Q4_1(_) => unreachable!("Q4_1 products run by groups"),
            Weights::Q8_0 { qs, d } => {
                dot_q8_0_rows(isa, &qs[a * BLOCK..b * BLOCK], &d[a..b], acts, &mut out);
            }
            Weights::F32(w) => {
                for (k, o) in out.iter_mut().take(acts.len()).enumerate() {
                    let i = i0 + k;
                    *o = dot_f32(
                        &w[j * self.cols..(j + 1) * self.cols],
                        &x[i * self.cols..(i + 1) * self.cols],
                    );
                }
            }
        }
        out
    }
}

struct SyncPtr(*mut f32);
// SAFETY: tasks write disjoint elements through it (see `matmul_on`).
unsafe impl Sync for SyncPtr {}

/// A Q4_1 product, sixteen interleaved weight rows at a time, on the
/// calling thread alone if `serial`.
fn matmul_groups(
    w: &Q4_1,
    isa: Isa,
    q8: &Q8Rows,
    m: usize,
    n: usize,
    serial: bool,
    out: &mut [f32],
) {
    let out_at = SyncPtr(out.as_mut_ptr());
    let groups = n.div_ceil(GROUP);
    // A few tasks per thread, as in `matmul_rows`.
    let per_task = (groups / (rayon::current_num_threads() * 4)).max(1);
    let task = |t: usize| {
        let out_at = &out_at;
        for g in t * per_task..((t + 1) * per_task).min(groups) {
            let width = GROUP.min(n - g * GROUP);
            for i0 in (0..m).step_by(TILE) {
                let r = TILE.min(m - i0);
                let tile: [ActRow<'_>; TILE] = std::array::from_fn(|k| q8.row(i0 + k.min(r - 1)));
                let mut o = [[0f32; GROUP]; TILE];
                w.group_dot(isa, g, &tile[..r], &mut o);
                for (k, o) in o.iter().take(r).enumerate() {
                    // SAFETY: each (i, j) is written by exactly one task,
                    // and `out` holds m × n values (asserted in `matmul_on`).
                    unsafe {
                        let to = out_at.0.add((i0 + k) * n + g * GROUP);
                        std::ptr::copy_nonoverlapping(o.as_ptr(), to, width);
                    }
                }
            }
        }
    };
    let tasks = groups.div_ceil(per_task);
    if serial {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// An IEEE half from its two little-endian bytes, as f32.
fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Σ a·b in f32, eight lanes at a time (vectorised by the compiler).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ over blocks of Q8_0 weights times each activation row in `acts`.
fn dot_q8_0_rows(isa: Isa, qs: &[i8], d: &[f32], acts: &[ActRow<'_>], out: &mut [f32; TILE]) {
    for a in acts {
        debug_assert_eq!(qs.len(), a.qs.len());
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_q4_1_rows`.
        Isa::Avx2 => unsafe { x86::q8_0_rows_avx2(qs, d, acts, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::q8_0_rows_vnni(qs, d, acts, out) },
        _ => {
            for (o, act) in out.iter_mut().zip(acts) {
                *o = 0.0;
                for (b, &db) in d.iter().enumerate() {
                    let int: i32 = qs[b * BLOCK..(b + 1) * BLOCK]
                        .iter()
                        .zip(&act.qs[b * BLOCK..(b + 1) * BLOCK])
                        .map(|(&w, &y)| w as i32 * y as i32)
                        .sum();
                    *o += int as f32 * db * act.d[b];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Raw Q4_1 blocks for `values` (as ggml quantizes: d = (max-min)/15, m = min).
    fn q4_1_bytes(values: &[f32]) -> Vec<u8> {
        let mut raw = Vec::new();
        for b in values.chunks(BLOCK) {
            let (lo, hi) = b
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let d = (hi - lo) / 15.0;
            let dh = half::f16::from_f32(d);
            let mh = half::f16::from_f32(lo);
            raw.extend(dh.to_bits().to_le_bytes());
            raw.extend(mh.to_bits().to_le_bytes());
            let q = |v: f32| (((v - lo) / d).round().clamp(0.0, 15.0)) as u8;
            for k in 0..16 {
                raw.push(q(b[k]) | (q(b[k + 16]) << 4));
            }
        }
        raw
    }

    fn q8_0_bytes(values: &[f32]) -> Vec<u8> {
        let mut raw = Vec::new();
        for b in values.chunks(BLOCK) {
            let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            raw.extend(half::f16::from_f32(d).to_bits().to_le_bytes());
            raw.extend(b.iter().map(|v| (v / d).round() as i8 as u8));
        }
        raw
    }

    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let m = x.len() / cols;
        let mut out = vec![0f32; m * rows];
        for i in 0..m {
            for j in 0..rows {
                out[i * rows + j] = (0..cols)
                    .map(|k| (w[j * cols + k] as f64) * (x[i * cols + k] as f64))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn products_match_the_decoded_weights_on_every_path_and_odd_shapes() {
        for (rows, cols, m) in [
            (1, 32, 1),
            (3, 64, 1),
            (17, 96, 3),
            (255, 32, 2),
            (257, 576, 5),
        ] {
            let w = random(rows * cols, rows as u64);
            let x = random(m * cols, 7 + cols as u64);
            for q in [
                QMatrix::from_q4_1(cols, &[&q4_1_bytes(&w)]),
                QMatrix::from_q8_0(cols, &[&q8_0_bytes(&w)]),
            ] {
                // The product of the decoded weights is the reference; the
                // activations' own 8-bit rounding is what remains.
                let want = reference(&q.to_f32(), &x, rows, cols);
                let scale = (cols as f32).sqrt() * 0.02;
                let mut first: Option<Vec<f32>> = None;
                for isa in Isa::available() {
                    let mut out = vec![0f32; m * rows];
                    q.matmul_on(isa, &x, &mut out, &mut Scratch::default());
                    for (a, b) in out.iter().zip(&want) {
                        assert!((a - b).abs() <= scale, "{isa:?} {rows}x{cols}: {a} vs {b}");
                    }
                    // The vector paths sum in another order than the portable one.
                    if let Some(f) = &first {
                        for (a, b) in out.iter().zip(f) {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{isa:?}: {a} vs {b}"
                            );
                        }
                    }
                    first.get_or_insert(out);
                }
            }
        }
    }

    #[test]
    fn one_row_against_four_weight_rows_sums_as_one_weight_row() {
        // 4k + 3 weight rows: groups of four, then the rest one by one.
        let (rows, cols) = (4 * 9 + 3, 96);
        let q = QMatrix::from_q8_0(cols, &[&q8_0_bytes(&random(rows * cols, 5))]);
        let x = random(cols, 6);
        let mut scratch = Scratch::default();
        scratch.q8.quantize(&x, cols);
        let act = scratch.q8.row(0);
        for isa in Isa::available() {
            let mut out = vec![0f32; rows];
            q.matmul_on(isa, &x, &mut out, &mut Scratch::default());
            for (j, &o) in out.iter().enumerate() {
                let alone = q.dot_rows(isa, j, 0, std::slice::from_ref(&act), &x)[0];
                assert_eq!(
                    o.to_bits(),
                    alone.to_bits(),
                    "{isa:?} row {j}: {o} vs {alone}"
                );
            }
            assert_eq!(q.dot_four_rows(isa, 0, &act).is_some(), isa != Isa::Generic);
        }
    }

    #[test]
    fn q4_0_reads_as_the_q4_1_it_equals() {
        // Q4_0 of 3 rows × 64: d·(q − 8), nibbles as ggml packs them.
        let w = random(3 * 64, 9);
        let mut raw = Vec::new();
        for b in w.chunks(BLOCK) {
            let amax = b
                .iter()
                .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
            let d = amax / -8.0;
            raw.extend(half::f16::from_f32(d).to_bits().to_le_bytes());
            let q = |v: f32| ((v / d + 8.5) as u8).min(15);
            raw.extend((0..16).map(|k| q(b[k]) | (q(b[k + 16]) << 4)));
        }
        let m = QMatrix::from_q4_0(64, &raw);
        assert_eq!(m.rows, 3);
        for (r, block) in raw.chunks(18).enumerate() {
            let d = half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
            let values = m.row_f32(r / 2);
            let part = &values[(r % 2) * BLOCK..(r % 2 + 1) * BLOCK];
            for (k, &v) in part.iter().enumerate() {
                let q = if k < 16 {
                    block[2 + k] & 15
                } else {
                    block[2 + k - 16] >> 4
                };
                assert_eq!(
                    v,
                    d * (q as f32 - 8.0),
                    "row {} block {} value {k}",
                    r / 2,
                    r % 2
                );
            }
        }
    }

    #[test]
    fn q4_1_decodes_as_ggml_lays_it_out() {
        let w: Vec<f32> = (0..32).map(|i| i as f32 / 31.0).collect();
        let q = QMatrix::from_q4_1(32, &[&q4_1_bytes(&w)]);
        let back = q.row_f32(0);
        for (a, b) in back.iter().zip(&w) {
            assert!((a - b).abs() < 0.04, "{a} vs {b}");
        }
    }

    #[test]
    fn parts_are_stacked_in_order() {
        let (a, b) = (q4_1_bytes(&random(64, 1)), q4_1_bytes(&random(96, 2)));
        let s = QMatrix::from_q4_1(32, &[&a, &b]);
        let (a, b) = (QMatrix::from_q4_1(32, &[&a]), QMatrix::from_q4_1(32, &[&b]));
        assert_eq!((s.rows, a.rows, b.rows), (5, 2, 3));
        assert_eq!(s.row_f32(3), b.row_f32(1));
        assert_eq!(s.row_f32(1), a.row_f32(1));
        let (c, d) = (q8_0_bytes(&random(32, 3)), q8_0_bytes(&random(64, 4)));
        let s = QMatrix::from_q8_0(32, &[&c, &d]);
        let d = QMatrix::from_q8_0(32, &[&d]);
        assert_eq!(s.rows, 3);
        assert_eq!(s.row_f32(2), d.row_f32(1));
    }
}
