//! The sums of [`super::QMatMul`]'s formula (see its module doc) that every kernel shares: the
//! zero-point compensation of a kernel's `Σ xu·wt`, per column or split once per call for the
//! several-row kernels, and the activation row's own sum.

use super::Packed;

/// Σ (x − x0)·(W − w0) for column `j` from `dot` = Σ xu·wt (see the module doc), in wrapping i32
/// like tract's (never wrapping for the sizes this op takes).
#[inline(always)]
pub(super) fn compensate(p: &Packed, j: usize, dot: i32, xoff: i32, sx: i32, x0: i32) -> i32 {
    let xw = dot
        .wrapping_sub(xoff * p.wt_sum[j])
        .wrapping_add(p.shift.wrapping_mul(sx));
    xw.wrapping_sub(p.w0[j].wrapping_mul(sx))
        .wrapping_sub(x0.wrapping_mul(p.colsum[j]))
        .wrapping_add((p.k as i32 * x0).wrapping_mul(p.w0[j]))
}

/// Σ x over one activation row, its bytes read as i8 or u8.
pub(super) fn row_sum(row: &[u8], signed: bool) -> i32 {
    if signed {
        row.iter().map(|&b| b as i8 as i32).sum()
    } else {
        row.iter().map(|&b| b as i32).sum()
    }
}

/// [`compensate`] split for the several-row kernels, once per call: `y = s + c[j] + d[j]·sx`
/// (wrapping, so the same bits in any order), `s` the kernel's sum and `dot0(j)` what it adds to
/// `Σ xu·wt` in column `j`. `c` and `d` are zero from `n` to `cols`.
pub(super) fn column_terms(
    p: &Packed,
    cols: usize,
    dot0: impl Fn(usize) -> i32,
    xoff: i32,
    x0: i32,
) -> (Vec<i32>, Vec<i32>) {
    let (mut c, mut d) = (vec![0; cols.max(p.n)], vec![0; cols.max(p.n)]);
    for j in 0..p.n {
        c[j] = compensate(p, j, dot0(j), xoff, 0, x0);
        d[j] = p.shift.wrapping_sub(p.w0[j]);
    }
    (c, d)
}
