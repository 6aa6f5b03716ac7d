//! [`super::QMatMul`]'s products of several activation rows on lookout's AVX2 kernel
//! ([`super::ManyRows::Avx2`]), with the zero-point compensation and the scale in the epilogue.

use super::super::par::SharedOut;
use super::formula::{column_terms, row_sum};
use super::{i8gemm, Packed};

/// `ys[r·n + j] = store(j, y)` for the activation rows `xs` on lookout's AVX2 kernel
/// ([`super::ManyRows::Avx2`]), `y` the i32 sum of [`super::gemv`]'s formula; 16 rows a panel,
/// panels shared over the pool.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<T: Copy + Default + Send>(
    p: &Packed,
    w16: &i8gemm::Weights,
    xs: &[u8],
    rows: usize,
    signed: bool,
    x0: i32,
    ys: &mut [T],
    store: impl Fn(usize, i32) -> T + Sync,
) {
    let (k, n) = (p.k, p.n);
    assert!(xs.len() >= rows * k && ys.len() >= rows * n);
    let out = SharedOut::new(ys);
    // The kernel multiplies i8: `xu − 128`, with xu the u8 `gemv` multiplies (x for u8
    // activations, x flipped for i8 ones), which is the raw byte of an i8 activation and a u8 one
    // flipped. Hence Σ xu·wt = dot + 128 · Σ wt.
    let flip = if signed { 0 } else { 0x80 };
    let xoff = if signed { 128 } else { 0 };
    let (c, d) = column_terms(p, n, |j| 128i32.wrapping_mul(p.wt_sum[j]), xoff, x0);
    super::super::par::for_each_range(
        rows.div_ceil(16),
        || (vec![0u8; w16.panel_len()], vec![[0i32; 16]; n]),
        |panels, (buf, sums)| {
            for panel in panels {
                let r0 = panel * 16;
                let lanes = (rows - r0).min(16);
                buf.fill(0);
                let mut sx = [0i32; 16];
                for (l, sx) in sx.iter_mut().enumerate().take(lanes) {
                    let row = &xs[(r0 + l) * k..][..k];
                    for (kk, &b) in row.iter().enumerate() {
                        buf[(kk / 4) * 64 + l * 4 + kk % 4] = b ^ flip;
                    }
                    *sx = row_sum(row, signed);
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `ManyRows::Avx2` is only planned where the CPU has AVX2.
                unsafe {
                    i8gemm::sums(buf, w16, sums)
                };
                // The kernel leaves column j's 16 rows together (`sums[j]`); the output wants
                // each row's columns together. Eight columns at a time through a small
                // transposed tile: reading `sums[j][l]` for one row across all columns touched
                // n cache lines per row (Florence-2's vision products spent ~8 ns per output
                // there, four times their multiply-adds).
                for j0 in (0..n).step_by(8) {
                    let width = (n - j0).min(8);
                    let mut tile = [[T::default(); 8]; 16];
                    for (jj, s) in sums[j0..j0 + width].iter().enumerate() {
                        let j = j0 + jj;
                        let (cj, dj) = (c[j], d[j]);
                        for ((row, &s), &sx) in tile.iter_mut().zip(s).zip(&sx) {
                            row[jj] =
                                store(j, s.wrapping_add(cj).wrapping_add(dj.wrapping_mul(sx)));
                        }
                    }
                    for (l, row) in tile.iter().enumerate().take(lanes) {
                        // SAFETY: panels write disjoint rows of `ys`;
                        // (r0 + l)·n + j0 + width ≤ rows·n.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                row.as_ptr(),
                                out.at((r0 + l) * n + j0),
                                width,
                            )
                        };
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_rows;
    use super::*;

    /// The several-row product on lookout's AVX2 kernel against the formula's definition
    /// (`check_rows`): rows that fill no panel, one, and a part of a second.
    #[test]
    fn avx2_rows_equal_definition() {
        if !i8gemm::available() {
            eprintln!("skipped: no AVX2");
            return;
        }
        let shapes = [(2, 1, 1), (16, 17, 5), (21, 48, 24), (35, 100, 9)];
        check_rows(&shapes, |p, w, w_signed, x, x_signed, rows, x0| {
            let w16 = i8gemm::Weights::pack_with(p.n, p.k, |j, kk| {
                let b = w[kk * p.n + j];
                (if w_signed { b as i8 } else { (b ^ 0x80) as i8 }) as i16
            });
            let mut ys = vec![0; rows * p.n];
            gemm(p, &w16, x, rows, x_signed, x0, &mut ys, |_, a| a);
            ys
        });
    }
}
