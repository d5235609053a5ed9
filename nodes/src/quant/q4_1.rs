//! Q4_1 weights interleaved sixteen rows at a time, so that one integer
//! dot-product instruction advances sixteen output rows at once.
//!
//! ggml stores a Q4_1 block as `d`, `m` (value = d·q + m, f16) and 16 bytes
//! whose low nibbles are values 0..16 and high nibbles values 16..32. Here,
//! per group of sixteen rows and per block, the 256 bytes are laid out as
//! four 64-byte registers: register `j` holds each row's bytes `4j..4j+4`
//! (row after row), so its low nibbles are values `4j..4j+4` and its high
//! nibbles values `16+4j..16+4j+4` of all sixteen rows. Broadcasting four
//! activation bytes against a register then yields sixteen rows' partial
//! sums with no horizontal reduction, and the sixteen rows' `d` (then `m`)
//! are one f16 vector. Decoding a token reads every weight once, so this is
//! what makes a one-row product memory-bound rather than instruction-bound.
//! Rows past the matrix's end pad the last group with zeros.

pub use super::act::GROUP;
use super::act::{ActRow, BLOCK, TILE};
use super::isa::Isa;

/// Bytes of four-bit values per group and block.
const GROUP_BLOCK: usize = GROUP * 16;

/// A Q4_1 matrix's blocks, interleaved by groups of [`GROUP`] rows.
#[derive(Clone, Debug)]
pub struct Q4_1 {
    /// Blocks per row.
    nb: usize,
    /// Per group and block, four registers of 64 bytes (see the module).
    qs: Vec<u8>,
    /// Per group and block, the sixteen rows' `d` then their `m`, f16 bits.
    dm: Vec<u16>,
}

/// One file block: `d` and `m` as f16 bits, and its 16 bytes of nibbles.
pub type Block = ([u16; 2], [u8; 16]);

impl Q4_1 {
    /// `rows` rows of `nb` blocks each, block `(r, b)` given by `block`.
    pub fn from_blocks(rows: usize, nb: usize, block: impl Fn(usize, usize) -> Block) -> Q4_1 {
        let groups = rows.div_ceil(GROUP);
        let mut qs = vec![0u8; groups * nb * GROUP_BLOCK];
        let mut dm = vec![0u16; groups * nb * 2 * GROUP];
        for r in 0..rows {
            let (g, l) = (r / GROUP, r % GROUP);
            for b in 0..nb {
                let at = g * nb + b;
                let ([d, m], q) = block(r, b);
                dm[at * 2 * GROUP + l] = d;
                dm[at * 2 * GROUP + GROUP + l] = m;
                for j in 0..4 {
                    let to = at * GROUP_BLOCK + j * 64 + l * 4;
                    qs[to..to + 4].copy_from_slice(&q[4 * j..4 * j + 4]);
                }
            }
        }
        Q4_1 { nb, qs, dm }
    }

    /// Row `r`'s block `b`, as the file had it.
    pub fn block(&self, r: usize, b: usize) -> Block {
        let (g, l) = (r / GROUP, r % GROUP);
        let at = g * self.nb + b;
        let mut q = [0u8; 16];
        for j in 0..4 {
            let from = at * GROUP_BLOCK + j * 64 + l * 4;
            q[4 * j..4 * j + 4].copy_from_slice(&self.qs[from..from + 4]);
        }
        let dm = [
            self.dm[at * 2 * GROUP + l],
            self.dm[at * 2 * GROUP + GROUP + l],
        ];
        (dm, q)
    }

    /// Row `r`'s values.
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.nb * BLOCK);
        for b in 0..self.nb {
            let ([d, m], q) = self.block(r, b);
            let (d, m) = (f16(d), f16(m));
            out.extend(q.iter().map(|&v| (v & 0x0F) as f32 * d + m));
            out.extend(q.iter().map(|&v| (v >> 4) as f32 * d + m));
        }
        out
    }

    /// Bytes held (padding rows included).
    pub fn bytes(&self) -> usize {
        self.qs.len() + self.dm.len() * 2
    }

    /// Group `g`'s sixteen rows against the activation rows `acts` (at most
    /// [`TILE`]): `out[k][l]` is row `16g + l` times activation row `k`.
    pub fn group_dot(
        &self,
        isa: Isa,
        g: usize,
        acts: &[ActRow<'_>],
        out: &mut [[f32; GROUP]; TILE],
    ) {
        let qs = &self.qs[g * self.nb * GROUP_BLOCK..(g + 1) * self.nb * GROUP_BLOCK];
        let dm = &self.dm[g * self.nb * 2 * GROUP..(g + 1) * self.nb * 2 * GROUP];
        for a in acts {
            debug_assert_eq!(a.d.len(), self.nb);
        }
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the vector paths are only chosen where the CPU has
            // their features (`Isa::detected`); `qs` and `dm` hold `nb`
            // blocks of the group, each activation row `nb` blocks.
            Isa::Avx512Vnni => unsafe { super::x86::q4_1_group_vnni(qs, dm, acts, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::q4_1_group_avx2(qs, dm, acts, out) },
            _ => group_dot_portable(qs, dm, acts, out),
        }
    }
}

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Summed as the vector paths sum (ggml's order): per row, eight sums of
/// four products each over the blocks, then added pairwise.
fn group_dot_portable(qs: &[u8], dm: &[u16], acts: &[ActRow<'_>], out: &mut [[f32; GROUP]; TILE]) {
    let nb = dm.len() / (2 * GROUP);
    for (o, a) in out.iter_mut().zip(acts) {
        let mut acc = [[0f32; 8]; GROUP];
        let mut mins = [0f32; GROUP];
        for b in 0..nb {
            let (q, y) = (&qs[b * GROUP_BLOCK..], &a.qs[b * BLOCK..]);
            let scales = &dm[b * 2 * GROUP..];
            for l in 0..GROUP {
                let dd = f16(scales[l]) * a.d[b];
                for j in 0..8 {
                    let (shift, y) = if j < 4 {
                        (0, &y[4 * j..])
                    } else {
                        (4, &y[4 * j..])
                    };
                    let byte = |i: usize| ((q[(j % 4) * 64 + l * 4 + i] >> shift) & 0x0F) as i32;
                    let p: i32 = (0..4).map(|i| byte(i) * y[i] as i32).sum();
                    acc[l][j] = dd.mul_add(p as f32, acc[l][j]);
                }
                mins[l] = f16(scales[GROUP + l]).mul_add(a.s[b], mins[l]);
            }
        }
        for (o, (a, m)) in o.iter_mut().zip(acc.iter().zip(mins)) {
            *o = (((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))) + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_gives_back_every_block_and_pads_with_zeros() {
        let block = |r: usize, b: usize| -> Block {
            let q = std::array::from_fn(|k| (r * 31 + b * 7 + k) as u8);
            ([r as u16, (b + 100) as u16], q)
        };
        let w = Q4_1::from_blocks(19, 3, block);
        for r in 0..19 {
            for b in 0..3 {
                assert_eq!(w.block(r, b), block(r, b), "row {r} block {b}");
            }
        }
        assert_eq!(w.block(20, 1), ([0, 0], [0; 16]));
        assert_eq!(w.bytes(), 2 * 3 * (256 + 64));
    }
}
