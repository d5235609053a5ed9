//! f32 weight matrices packed once, at load, for kiln's own product kernel:
//! `dst += a · w` where `w` is a fixed `inputs × outputs` matrix (a
//! pre-trained encoder's layers) and `a` the activations. gemm packs its
//! right-hand side again at every call and cannot keep it; here the
//! weights lie as the kernel reads them: panels of [`PANEL`] outputs, each
//! input's [`PANEL`] values one 64-byte line.
//!
//! The kernel keeps a tile of [`TILE_ROWS`] rows of outputs in registers
//! (AVX2: one panel, AVX-512: four) and walks the inputs in blocks that
//! stay in the L1 cache. Every output is
//! `dst + a₀w₀ + a₁w₁ + …` as fused multiply-adds in input order, the same
//! on every path and for every row whatever the rows around it, so a row's
//! result does not depend on its batch or on the CPU's vector extension
//! (tested).

use crate::quant::Isa;

/// Outputs per panel: one AVX-512 register, two AVX2 registers.
const PANEL: usize = 16;

/// Rows of `a` one kernel call covers.
const TILE_ROWS: usize = 6;

/// Inputs per block: a panel's block (16 KiB) and a tile's (6 KiB) stay in
/// the L1 cache while every tile of the rows passes over them.
const BLOCK: usize = 256;

/// One input's values in one panel, aligned to a cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; PANEL]);

/// An `inputs × outputs` matrix packed for [`Packed::add_product`].
pub(crate) struct Packed {
    inputs: usize,
    outputs: usize,
    /// Panel `p`'s input `i` is `lines[p * inputs + i]`; outputs past
    /// `outputs` in the last panel are zero.
    lines: Vec<Line>,
}

impl Packed {
    /// The matrix whose element (input `i`, output `o`) is `at(i, o)`.
    fn from_fn(inputs: usize, outputs: usize, at: impl Fn(usize, usize) -> f32) -> Packed {
        let panels = outputs.div_ceil(PANEL);
        let mut lines = vec![Line::default(); panels * inputs];
        for (p, panel) in lines.chunks_exact_mut(inputs.max(1)).enumerate() {
            for (i, line) in panel.iter_mut().enumerate() {
                for (j, v) in line.0.iter_mut().enumerate() {
                    let o = p * PANEL + j;
                    if o < outputs {
                        *v = at(i, o);
                    }
                }
            }
        }
        Packed {
            inputs,
            outputs,
            lines,
        }
    }

    /// A layer's weight as files store it: row-major `[outputs, inputs]`
    /// (the product multiplies by its transpose).
    pub(crate) fn from_out_in(w: &[f32], outputs: usize, inputs: usize) -> Packed {
        assert_eq!(w.len(), outputs * inputs, "weight shape");
        Packed::from_fn(inputs, outputs, |i, o| w[o * inputs + i])
    }

    /// `dst (rows × outputs) += a (rows × inputs) · self`, both row-major,
    /// on this thread, on the given vector path (one of [`Isa::available`]).
    pub(crate) fn add_product_on(&self, isa: Isa, dst: &mut [f32], a: &[f32]) {
        let (k, n) = (self.inputs, self.outputs);
        if k == 0 || n == 0 {
            return;
        }
        let rows = a.len() / k;
        assert!(
            a.len() == rows * k && dst.len() == rows * n,
            "product shapes: {} activations of {k} inputs, {} outputs of {n}",
            a.len(),
            dst.len()
        );
        let group = panels_per_tile(isa);
        let panels = n.div_ceil(PANEL);
        for k0 in (0..k).step_by(BLOCK) {
            let depth = BLOCK.min(k - k0);
            for p in (0..panels).step_by(group) {
                let width = (group * PANEL).min(n - p * PANEL);
                for r in (0..rows).step_by(TILE_ROWS) {
                    let tile = Tile {
                        a: &a[r * k + k0..],
                        lda: k,
                        rows: TILE_ROWS.min(rows - r),
                        panels: &self.lines[p * k + k0..],
                        panel_stride: k,
                        depth,
                    };
                    let out = &mut dst[r * n + p * PANEL..];
                    tile.run(isa, out, n, width);
                }
            }
        }
    }
}

/// Panels one kernel call covers: AVX-512 four, a register each per row
/// (24 of its 32 registers for six rows); AVX2 one, as two registers per
/// row (12 of its 16).
fn panels_per_tile(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni => 4,
        _ => 1,
    }
}

/// One kernel call: `rows` rows of `a` against one block of `depth` inputs
/// of up to [`panels_per_tile`] panels.
struct Tile<'a> {
    a: &'a [f32],
    lda: usize,
    rows: usize,
    /// The first panel's first line; the next panel's is `panel_stride`
    /// lines on.
    panels: &'a [Line],
    panel_stride: usize,
    depth: usize,
}

impl Tile<'_> {
    /// Adds the tile's product into the `width` outputs of each row of
    /// `out` (rows `ldc` apart). A tile reaching past the last output goes
    /// through a full-width copy.
    fn run(&self, isa: Isa, out: &mut [f32], ldc: usize, width: usize) {
        let full = panels_per_tile(isa) * PANEL;
        if width == full {
            let last = (self.rows - 1) * ldc + full;
            self.kernel(isa, &mut out[..last], ldc, full);
            return;
        }
        let mut copy = [0f32; TILE_ROWS * 4 * PANEL];
        for r in 0..self.rows {
            copy[r * full..r * full + width].copy_from_slice(&out[r * ldc..r * ldc + width]);
        }
        self.kernel(isa, &mut copy, full, width.div_ceil(PANEL) * PANEL);
        for r in 0..self.rows {
            out[r * ldc..r * ldc + width].copy_from_slice(&copy[r * full..r * full + width]);
        }
    }

    /// `c` holds the tile's `rows` rows, `ldc` apart, each `width` (a
    /// multiple of [`PANEL`]) outputs wide.
    fn kernel(&self, isa: Isa, c: &mut [f32], ldc: usize, width: usize) {
        let last_a = (self.rows - 1) * self.lda + self.depth;
        let last_line = (width / PANEL - 1) * self.panel_stride + self.depth;
        assert!(
            self.a.len() >= last_a
                && self.panels.len() >= last_line
                && c.len() >= (self.rows - 1) * ldc + width,
            "tile bounds"
        );
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512 (`isa` is one it has); the
            // assertion above keeps every access inside the slices.
            Isa::Avx512Vnni => unsafe { x86::tile_avx512(self, c, ldc, width) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA; bounds as above.
            Isa::Avx2 => unsafe { x86::tile_avx2(self, c, ldc) },
            _ => self.portable(c, ldc, width),
        }
    }

    /// Portable code: a panel's outputs as independent lanes (vector code
    /// where the target has fused multiply-adds, NEON included).
    fn portable(&self, c: &mut [f32], ldc: usize, width: usize) {
        for r in 0..self.rows {
            let a = &self.a[r * self.lda..r * self.lda + self.depth];
            for p in 0..width / PANEL {
                let panel = &self.panels[p * self.panel_stride..][..self.depth];
                let out = &mut c[r * ldc + p * PANEL..][..PANEL];
                let mut acc = [0f32; PANEL];
                acc.copy_from_slice(out);
                for (&x, line) in a.iter().zip(panel) {
                    for (acc, &w) in acc.iter_mut().zip(&line.0) {
                        *acc = x.mul_add(w, *acc);
                    }
                }
                out.copy_from_slice(&acc);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // The parent by its full path: `tests/layers.rs` reads `super` in an
    // inline module as the file's parent, `nn`.
    use crate::nn::packed::{Tile, PANEL, TILE_ROWS};

    /// Dispatches on the tile's rows, so each count's loops unroll.
    macro_rules! by_rows {
        ($rows:expr, $f:ident $(::<$p:literal>)?, $($arg:expr),*) => {
            match $rows {
                6 => $f::<$($p,)? 6>($($arg),*),
                5 => $f::<$($p,)? 5>($($arg),*),
                4 => $f::<$($p,)? 4>($($arg),*),
                3 => $f::<$($p,)? 3>($($arg),*),
                2 => $f::<$($p,)? 2>($($arg),*),
                _ => $f::<$($p,)? 1>($($arg),*),
            }
        };
    }

    /// AVX2: one panel, as two registers per row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(t: &Tile<'_>, c: &mut [f32], ldc: usize) {
        debug_assert!(t.rows <= TILE_ROWS);
        by_rows!(t.rows, avx2_rows, t, c.as_mut_ptr(), ldc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(t: &Tile<'_>, c: *mut f32, ldc: usize) {
        let (a, b) = (t.a.as_ptr(), t.panels.as_ptr() as *const f32);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm256_loadu_ps(c.add(r * ldc));
            acc[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
        }
        for i in 0..t.depth {
            let line = b.add(i * PANEL);
            let (w0, w1) = (_mm256_load_ps(line), _mm256_load_ps(line.add(8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * t.lda + i));
                acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(r * ldc), acc[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), acc[1]);
        }
    }

    /// AVX-512: up to four panels, a register each per row.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(t: &Tile<'_>, c: &mut [f32], ldc: usize, width: usize) {
        debug_assert!(t.rows <= TILE_ROWS);
        match width / PANEL {
            4 => by_rows!(t.rows, avx512_rows::<4>, t, c.as_mut_ptr(), ldc),
            3 => by_rows!(t.rows, avx512_rows::<3>, t, c.as_mut_ptr(), ldc),
            2 => by_rows!(t.rows, avx512_rows::<2>, t, c.as_mut_ptr(), ldc),
            _ => by_rows!(t.rows, avx512_rows::<1>, t, c.as_mut_ptr(), ldc),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_rows<const P: usize, const R: usize>(t: &Tile<'_>, c: *mut f32, ldc: usize) {
        let a = t.a.as_ptr();
        let b = t.panels.as_ptr() as *const f32;
        let stride = t.panel_stride * PANEL;
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (p, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_loadu_ps(c.add(r * ldc + p * PANEL));
            }
        }
        for i in 0..t.depth {
            let mut w = [_mm512_setzero_ps(); P];
            for (p, w) in w.iter_mut().enumerate() {
                *w = _mm512_load_ps(b.add(p * stride + i * PANEL));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * t.lda + i));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(x, *w, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (p, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc + p * PANEL), *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: f32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i as f32 + seed) * 0.7311).sin())
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// `dst + a · wᵀ` in f64, `w` as `[outputs, inputs]`.
    fn reference(dst: &[f32], a: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f64> {
        let m = a.len() / k.max(1);
        let mut out: Vec<f64> = dst.iter().map(|&v| v as f64).collect();
        for r in 0..m {
            for o in 0..n {
                for i in 0..k {
                    out[r * n + o] += a[r * k + i] as f64 * w[o * k + i] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn every_path_gives_the_product_and_the_same_bits() {
        // Odd shapes: partial tiles, partial panels, the last of AVX-512's
        // groups of four panels one to three wide, several input blocks.
        for (m, k, n) in [
            (1, 1, 1),
            (3, 17, 3),
            (7, 255, 17),
            (13, 257, 40),
            (6, 600, 48),
            (17, 384, 1152),
        ] {
            let (a, w, start) = (matrix(m, k, 1.0), matrix(n, k, 2.0), matrix(m, n, 3.0));
            let want = reference(&start, &a, &w, k, n);
            let packed = Packed::from_out_in(&w, n, k);
            let mut first: Option<Vec<f32>> = None;
            for isa in Isa::available() {
                let mut got = start.clone();
                packed.add_product_on(isa, &mut got, &a);
                for (g, w) in got.iter().zip(&want) {
                    let tol = 1e-5 * (1.0 + w.abs()) * (k as f64).sqrt();
                    assert!((*g as f64 - w).abs() < tol, "{isa:?} {m}x{k}x{n}: {g} {w}");
                }
                match &first {
                    None => first = Some(got),
                    Some(f) => assert_eq!(bits(f), bits(&got), "{isa:?} {m}x{k}x{n}"),
                }
            }
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_rows_around_it() {
        let (k, n) = (300, 40);
        let w = matrix(n, k, 5.0);
        let packed = Packed::from_out_in(&w, n, k);
        let a = matrix(13, k, 6.0);
        let mut all = vec![0.5f32; 13 * n];
        packed.add_product_on(Isa::detected(), &mut all, &a);
        for r in [0, 5, 6, 12] {
            let mut alone = vec![0.5f32; n];
            packed.add_product_on(Isa::detected(), &mut alone, &a[r * k..(r + 1) * k]);
            assert_eq!(bits(&alone), bits(&all[r * n..(r + 1) * n]));
        }
    }
}
