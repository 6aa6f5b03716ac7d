//! The phase planes and the grid of positions that lookout's direct convolutions read on AVX-512
//! (the int8 kernels of [`super::qdirect`] and the f32 kernels of [`super::fdirect`]).
//!
//! A conv's input is copied once into padded planes, split by row and column phase where the
//! stride is above one (phase `(p, q)` of a channel holds its padded rows `p, p + sh, …` and
//! columns `q, q + sw, …`). Then for every tap, output `(y, x)` reads its plane at `y·wq + x` plus
//! the tap's offset: one grid for every stride, whose positions `f = y·wq + x` a 16-lane vector
//! takes 16 at a time, across output rows. A grid row is the padded width (`wq`) and its outputs
//! are its first `out_w` positions: the lanes past them compute values nobody reads, dropped at
//! the store ([`Grid::lanes`]). A 52-column map uses 52 of every 54 lanes, where vectors per
//! output row computed 64 lanes for 52 outputs.

// Off x86 no kernel reads the grid ([`Grid::lanes`] is the kernels').
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::im2col::Geometry;

/// Grid positions per unit of work: a unit's channel tile runs them in steps of 64.
pub(super) const BLOCK: usize = 256;

/// Lanes per vector.
const L: usize = 16;

/// Where the kernels read: the phase planes' sizes and every tap's offset, in elements.
pub(super) struct Layout {
    /// Rows and elements per row of a phase plane.
    pub hq: usize,
    pub wq: usize,
    /// Phases along rows and columns (the strides).
    pub sh: usize,
    pub sw: usize,
    /// Per tap `(channel, ky, kx)`: its offset from an output's grid position.
    pub taps: Vec<usize>,
    /// Elements of planes, with slack for the last vector's reads past the grid's end.
    pub len: usize,
}

impl Layout {
    /// The planes of `channels` channels (elements) for the taps of `g`.
    pub(super) fn of(g: &Geometry, channels: usize) -> Layout {
        let (hp, wp) = g.padded_hw();
        let (sh, sw) = (g.stride.0.max(1), g.stride.1.max(1));
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let taps: Vec<usize> = (0..channels * g.kh * g.kw)
            .map(|tap| {
                let (c, yx) = (tap / (g.kh * g.kw), tap % (g.kh * g.kw));
                let (row, col) = ((yx / g.kw) * g.dilation.0, (yx % g.kw) * g.dilation.1);
                (((c * sh + row % sh) * sw + col % sw) * hq + row / sh) * wq + col / sw
            })
            .collect();
        let planes = channels * sh * sw * hq * wq;
        let lay = Layout {
            hq,
            wq,
            sh,
            sw,
            len: planes + L,
            taps,
        };
        // Every output's reads lie in its planes (its padded rows and columns), so only the
        // lanes past the last output read further: up to one vector past the grid's end.
        let far = lay.end(g) + L - 1 + lay.taps.iter().max().copied().unwrap_or(0);
        assert!(far <= lay.len && g.out_w <= wq);
        lay
    }

    /// The grid position after the last output.
    pub(super) fn end(&self, g: &Geometry) -> usize {
        (g.out_h.max(1) - 1) * self.wq + g.out_w
    }

    /// Elements of one channel's planes (all its phases).
    pub(super) fn channel(&self) -> usize {
        self.sh * self.sw * self.hq * self.wq
    }

    /// Where padded row `r` of a channel's phase `phx` column planes starts in its planes.
    pub(super) fn row(&self, r: usize, phx: usize) -> usize {
        (((r % self.sh) * self.sw + phx) * self.hq + r / self.sh) * self.wq
    }
}

/// Column phase `phase` of an input row `line` (its columns `phase, phase + sw, …` of the padded
/// row, `pw` pad columns first) into `row`, `pad` where the padding is.
pub(super) fn place<T: Copy>(
    (line, row): (&[T], &mut [T]),
    (pw, phase, sw): (usize, usize, usize),
    pad: T,
) {
    let (lo, hi) = interior((line, row), (pw, phase, sw));
    row[..lo].fill(pad);
    row[hi..].fill(pad);
}

/// [`place`] without the padding, for a row whose pad columns already hold the pad value (a
/// scratch zeroed once and then refilled channel after channel: writing a depthwise conv's one or
/// two pad columns per row took a `memset` call each, a third of FastestDet's plane fills). Returns
/// the columns `lo .. hi` of `row` it wrote.
pub(super) fn interior<T: Copy>(
    (line, row): (&[T], &mut [T]),
    (pw, phase, sw): (usize, usize, usize),
) -> (usize, usize) {
    // Column j of this phase is input column j·sw + phase − pw: those in the input are lo .. hi.
    let lo = pw.saturating_sub(phase).div_ceil(sw).min(row.len());
    let hi = (line.len() + pw)
        .saturating_sub(phase)
        .div_ceil(sw)
        .clamp(lo, row.len());
    if hi > lo {
        let first = lo * sw + phase - pw;
        match sw {
            1 => row[lo..hi].copy_from_slice(&line[first..first + hi - lo]),
            2 => every_other(&line[first..], &mut row[lo..hi]),
            _ => {
                for (o, x) in row[lo..hi].iter_mut().zip(line[first..].iter().step_by(sw)) {
                    *o = *x;
                }
            }
        }
    }
    (lo, hi)
}

/// [`place`] (with `pad`) or [`interior`] (without) for `rows` input rows, row `y` at
/// `src[y·src_rs ..][..in_w]`, into rows `wq` apart of `dst`: one phase plane of a channel. Its
/// columns `lo .. hi` are the same for every row, so on AVX-512F they are worked out once and a
/// row is a few masked vector moves, with the input two rows ahead prefetched. A depthwise conv's
/// rows are short (FastestDet's 11 to 88 columns, ~60 000 rows per image): one `interior` call
/// per row cost more than its moves. And a channel's plane is read from memory where the model's
/// maps outgrow the caches: without the prefetch CenterNet's depthwise convs took 8.3 ms, with it
/// 6.8 (1 thread, Zen 5).
pub(super) fn place_rows<T: Copy>(
    (src, in_w, src_rs): (&[T], usize, usize),
    (dst, wq): (&mut [T], usize),
    rows: usize,
    (pw, phase, sw): (usize, usize, usize),
    pad: Option<T>,
) {
    if rows == 0 || wq == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<T>() == 4 && (sw == 1 || sw == 2) && super::vmath::avx512f() {
        let lo = pw.saturating_sub(phase).div_ceil(sw).min(wq);
        let hi = (in_w + pw).saturating_sub(phase).div_ceil(sw).clamp(lo, wq);
        let first = (lo * sw + phase).saturating_sub(pw);
        // Each row reads its elements `first .. first + sw·(hi − lo − 1) + 1` (within the row:
        // `hi` stops at its end) and writes `lo .. hi` of its plane row, or all of it with a pad.
        assert!(
            (hi == lo || first + sw * (hi - lo - 1) < in_w)
                && (rows - 1) * src_rs + in_w <= src.len()
                && (rows - 1) * wq + if pad.is_some() { wq } else { hi } <= dst.len()
        );
        // The pad's bits (four-byte elements: f32 or u32).
        let pad = pad.map(|p| {
            let mut bits = 0u32;
            // SAFETY: T is four bytes (checked above), copied byte for byte.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    &p as *const T as *const u8,
                    &mut bits as *mut u32 as *mut u8,
                    4,
                )
            };
            bits
        });
        // SAFETY: AVX-512F checked; four-byte elements moved as u32 words; reads and writes
        // within the rows asserted above (masked lanes are neither read nor written).
        unsafe {
            place_rows_avx512(
                (src.as_ptr() as *const u32, src_rs, first),
                (dst.as_mut_ptr() as *mut u32, wq, lo, hi),
                (rows, sw, pad),
            )
        };
        return;
    }
    for y in 0..rows {
        let (line, row) = (&src[y * src_rs..][..in_w], &mut dst[y * wq..][..wq]);
        match pad {
            Some(pad) => place((line, row), (pw, phase, sw), pad),
            None => {
                interior((line, row), (pw, phase, sw));
            }
        }
    }
}

/// How many rows ahead [`place_rows_avx512`] prefetches its input (2 and 4 ran CenterNet's
/// depthwise convs alike).
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS: usize = 2;

/// [`place_rows`]' moves: `rows` rows, columns `lo .. hi` of each read `sw` apart (1 or 2) from
/// `first` on, and with a pad the rest of each row's `wq` columns set to it.
///
/// # Safety
/// AVX-512F; for every row `y < rows`, `src + y·src_rs + first + sw·j` readable for
/// `j < hi − lo` and `dst + y·wq + i` writable for `i < wq` (`lo ≤ i < hi` without a pad).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn place_rows_avx512(
    (src, src_rs, first): (*const u32, usize, usize),
    (dst, wq, lo, hi): (*mut u32, usize, usize, usize),
    (rows, sw, pad): (usize, usize, Option<u32>),
) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mask = |n: usize| -> __mmask16 { (((1u32 << n.min(L)) - 1) & 0xffff) as __mmask16 };
    let count = hi - lo;
    for y in 0..rows {
        let (s, row) = (src.add(y * src_rs + first), dst.add(y * wq));
        if let Some(pad) = pad {
            let pad = _mm512_set1_epi32(pad as i32);
            for (from, to) in [(0, lo), (hi, wq)] {
                let mut i = from;
                while i < to {
                    _mm512_mask_storeu_epi32(row.add(i) as *mut _, mask(to - i), pad);
                    i += L;
                }
            }
        }
        let d = row.add(lo);
        let mut j = 0;
        while j < count {
            let m = count - j;
            if y + PREFETCH_ROWS < rows {
                // Wrapping: the second line may lie past the input's end (a hint reads nothing).
                let ahead = s.add(PREFETCH_ROWS * src_rs + sw * j) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                if sw == 2 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                }
            }
            let v = if sw == 1 {
                _mm512_maskz_loadu_epi32(mask(m), s.add(j) as *const _)
            } else {
                // Elements 2j .. 2j + 2·min(m, 16) − 1 of the row: two masked loads.
                let need = 2 * m.min(L) - 1;
                let a = _mm512_maskz_loadu_epi32(mask(need), s.add(2 * j) as *const _);
                // Its lanes may all be masked off, past the row's end: a wrapping address.
                let b = _mm512_maskz_loadu_epi32(
                    mask(need.saturating_sub(L)),
                    s.wrapping_add(2 * j + L) as *const _,
                );
                _mm512_permutex2var_epi32(a, even, b)
            };
            _mm512_mask_storeu_epi32(d.add(j) as *mut _, mask(m), v);
            j += L;
        }
    }
}

/// `dst[j] = src[2j]` for every `j` of `dst` (`src` holds at least `2·dst.len() − 1` elements of
/// four bytes: f32 planes and the int8 kernels' u32 words): a stride-2 plane's phase, 16 elements
/// per step on AVX-512F. The strided scalar loop did not vectorise (it was the hottest loop of
/// CenterNet's plane fills), and a 4-wide SSE shuffle still took 4 % of FastestDet's time.
pub(super) fn every_other<T: Copy>(src: &[T], dst: &mut [T]) {
    assert!(std::mem::size_of::<T>() == 4 && src.len() + 1 >= 2 * dst.len());
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    if super::vmath::avx512f() {
        // SAFETY: AVX-512F checked; four-byte elements (asserted) moved as u32 words; the loop
        // stops where a step would read past `src` or write past `dst`.
        unsafe {
            j = every_other_avx512(
                src.as_ptr() as *const u32,
                src.len(),
                dst.as_mut_ptr() as *mut u32,
                dst.len(),
            )
        };
    }
    for (d, s) in dst[j..].iter_mut().zip(src[2 * j..].iter().step_by(2)) {
        *d = *s;
    }
}

/// [`every_other`]'s 16-word steps while they fit; returns how many words of `dst` it wrote.
///
/// # Safety
/// AVX-512F; `src` readable for `n_src` words, `dst` writable for `n_dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn every_other_avx512(src: *const u32, n_src: usize, dst: *mut u32, n_dst: usize) -> usize {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut j = 0;
    while j + L <= n_dst && 2 * j + 2 * L <= n_src {
        let a = _mm512_loadu_si512(src.add(2 * j) as *const _);
        let b = _mm512_loadu_si512(src.add(2 * j + L) as *const _);
        _mm512_storeu_si512(dst.add(j) as *mut _, _mm512_permutex2var_epi32(a, even, b));
        j += L;
    }
    j
}

/// The grid a unit runs over: positions `f = y·wq + x` of the planes, of which those with
/// `x < out_w` are outputs (output `y·out_w + x`), and only those below `end` are the unit's.
#[derive(Clone, Copy)]
pub(super) struct Grid {
    pub wq: usize,
    pub out_w: usize,
    pub end: usize,
}

impl Grid {
    /// The lanes of the vector at `f0` that are this unit's outputs, and where the first of them
    /// goes in an output plane (0 with no lane). The outputs of those lanes are consecutive.
    #[inline(always)]
    pub(super) fn lanes(&self, f0: usize) -> (u16, usize) {
        let (y, mut x) = (f0 / self.wq, f0 % self.wq);
        if x + L <= self.out_w && f0 + L <= self.end {
            return (u16::MAX, y * self.out_w + x);
        }
        let (mut mask, mut first) = (0u16, None);
        for l in 0..L.min(self.end.saturating_sub(f0)) {
            if x < self.out_w {
                mask |= 1 << l;
                first.get_or_insert((f0 + l) / self.wq * self.out_w + x);
            }
            x += 1;
            if x == self.wq {
                x = 0;
            }
        }
        (mask, first.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_takes_even_elements() {
        for n in 0usize..70 {
            for extra in [0usize, 1] {
                let src: Vec<f32> = (0..(2 * n + extra).saturating_sub(1))
                    .map(|i| i as f32)
                    .collect();
                let mut dst = vec![-1.0; n];
                every_other(&src, &mut dst);
                let want: Vec<f32> = (0..n).map(|j| (2 * j) as f32).collect();
                assert_eq!(dst, want, "n {n} extra {extra}");
            }
        }
    }

    /// `interior` writes what `place` writes between the pad columns, and nothing else.
    #[test]
    fn interior_is_place_without_the_padding() {
        let line: Vec<f32> = (1..=23).map(|i| i as f32).collect();
        for (pw, sw) in [(0, 1), (1, 1), (2, 1), (1, 2), (2, 2), (3, 3)] {
            for phase in 0..sw {
                let len = (line.len() + 2 * pw).div_ceil(sw) + 5;
                let mut placed = vec![-1.0; len];
                place((&line, &mut placed), (pw, phase, sw), 0.0);
                let mut inner = vec![0.0; len];
                let (lo, hi) = interior((&line, &mut inner), (pw, phase, sw));
                assert_eq!(inner, placed, "pw {pw} sw {sw} phase {phase}");
                assert!(placed[..lo].iter().chain(&placed[hi..]).all(|v| *v == 0.0));
            }
        }
    }

    /// `place_rows` writes what `place` (with a pad) or `interior` (without) writes row by row,
    /// for every width (each tail of a 16-lane step), pad and phase, rows read a stride apart,
    /// and leaves the rest of the plane alone.
    #[test]
    fn place_rows_is_place_per_row() {
        for in_w in 1..=50 {
            for (pw, sw) in [
                (0usize, 1usize),
                (1, 1),
                (2, 1),
                (0, 2),
                (1, 2),
                (2, 2),
                (1, 3),
            ] {
                for phase in 0..sw {
                    for (pad, src_rs) in
                        [(None, in_w), (Some(0.5), in_w), (Some(0.0), 2 * in_w + 1)]
                    {
                        let rows = 3;
                        let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32).collect();
                        let wq = (in_w + 2 * pw).div_ceil(sw) + 3;
                        let mut want = vec![-1.0; rows * wq + 2];
                        let mut got = want.clone();
                        for y in 0..rows {
                            let (line, row) =
                                (&src[y * src_rs..][..in_w], &mut want[y * wq..][..wq]);
                            match pad {
                                Some(pad) => place((line, row), (pw, phase, sw), pad),
                                None => {
                                    interior((line, row), (pw, phase, sw));
                                }
                            }
                        }
                        place_rows(
                            (&src, in_w, src_rs),
                            (&mut got, wq),
                            rows,
                            (pw, phase, sw),
                            pad,
                        );
                        assert_eq!(
                            got, want,
                            "in_w {in_w} pw {pw} sw {sw} phase {phase} pad {pad:?}"
                        );
                    }
                }
            }
        }
    }
}
