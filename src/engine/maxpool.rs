//! A separable f32 max pool for NCHW tract plans, split over channels.
//!
//! tract 0.23.9's `OptMaxPool` folds every kernel tap into every output row: a k x k pool costs
//! k² passes over the output (YOLOX-Nano's SPP pools 5, 9 and 13: 275 passes), and a strided one
//! reads its input with `step_by`, one element at a time, all on the calling thread.
//!
//! A max over a rectangle is a max over its columns of a max over its rows, so [`SeparableMaxPool`]
//! takes each input row's horizontal max once (kw taps, into a row of the output's width) and then
//! the vertical max of kh such rows: kw + kh passes instead of kw · kh. A strided row is first
//! split into its `stride` phases (`x[j·s + p]` as row `p`), so every pass is a contiguous,
//! vectorisable loop. Planes (batch × channel) split over tract's thread pool. Small planes
//! ([`SMALL_PLANE`]) are interleaved 16 at a time and pooled channels-last, every tap a run of 16.
//!
//! It takes the maximum with tract's comparison (`if acc < v { v } else { acc }`), so outputs are
//! bit-identical to tract's, NaN handling included; padded taps are skipped as tract skips them.
//! The pass takes only the pools where it measured faster ([`worth_it`]).

use tract_core::internal::*;
use tract_core::ops::cnn::{MaxPool, OptMaxPool};
use tract_core::ops::nn::DataFormat;

use super::chfirst::{TO_NCHW, TO_NHWC};
use super::pass::{swap_ops, GraphPass, Stage};

/// The geometry of one 2-D pool over NCHW planes.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PoolGeo {
    pub in_hw: (usize, usize),
    pub out_hw: (usize, usize),
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// Padding before the first row and column (what after-padding there is follows from the
    /// output size: taps past the input are skipped).
    pub pad: (usize, usize),
    /// `None` for NCHW planes; `Some(c)` for NHWC with `c` channels, each tap a run of `c`
    /// contiguous floats.
    pub channels_last: Option<usize>,
}

/// Output rows a channels-last pool takes at a time.
const NHWC_BLOCK: usize = 8;

/// NCHW planes of at most this many values are pooled channels-last, [`GROUP`] planes at a time:
/// their rows are too short for the row loops. YOLOX-Nano's SPP (5x5, 9x9 and 13x13 pools over
/// 13x13 planes): 0.47 ms row by row, 0.29 ms so (Zen 5 VM, 1 thread, `lookout bench --profile`).
const SMALL_PLANE: usize = 1024;

/// Planes interleaved at a time for a small-plane pool (64 measured the same as 16).
const GROUP: usize = 16;

/// Largest horizontal stride taken (a row splits into at most this many phases).
const MAX_STRIDE: usize = 8;

/// Max pool over the two spatial axes of a contiguous NCHW (or NHWC) f32 tensor, dilation 1, no
/// index output.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct SeparableMaxPool {
    pub geo: PoolGeo,
}

impl Op for SeparableMaxPool {
    fn name(&self) -> StaticName {
        "SeparableMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geo)])
    }

    op_as_typed_op!();
}

/// tract's max step (`OptMaxPool`'s `fold_max`): keeps `acc` unless `v` compares greater.
#[inline(always)]
fn max_step(acc: f32, v: f32) -> f32 {
    if acc < v {
        v
    } else {
        acc
    }
}

/// `out[o] = max(out[o], x[o·s + d])` over the `o` for which the tap is inside `x`, with the row
/// split into its `s` phases (`phases[p][j] = x[j·s + p]`).
#[inline(always)]
fn fold_tap(out: &mut [f32], phases: &[&[f32]], d: isize) {
    let s = phases.len() as isize;
    let (p, q) = (d.rem_euclid(s) as usize, d.div_euclid(s));
    let phase = phases[p];
    // o + q must index the phase: o in [max(0, −q), min(out.len(), phase.len() − q)).
    let lo = (-q).max(0) as usize;
    let hi = (phase.len() as isize - q).clamp(0, out.len() as isize) as usize;
    if lo >= hi {
        return;
    }
    fold_max(
        &mut out[lo..hi],
        &phase[(lo as isize + q) as usize..][..hi - lo],
    );
}

/// `acc[i] = max(acc[i], v[i])`, as a plain indexed loop: it vectorises in release builds and
/// stays call-free in the dev profile's opt-level 1, where iterator adaptors are not all inlined.
/// Always inlined, so that it is compiled for AVX-512 inside [`SeparableMaxPool::plane_avx512`]:
/// `if acc < v { v } else { acc }` is then one `vmaxps` (its NaN and signed-zero rule is the same).
#[inline(always)]
fn fold_max(acc: &mut [f32], v: &[f32]) {
    let n = acc.len().min(v.len());
    let (acc, v) = (&mut acc[..n], &v[..n]);
    #[cfg(target_arch = "x86_64")]
    if super::vmath::avx512f() {
        // SAFETY: AVX-512F checked; both slices hold `n` floats.
        return unsafe { fold_max_avx512(acc, v) };
    }
    for i in 0..n {
        acc[i] = max_step(acc[i], v[i]);
    }
}

/// `even[j] = x[2j]`, `odd[j] = x[2j + 1]` (`even` holds `x.len().div_ceil(2)`, `odd` the rest):
/// a stride-2 row's two phases. The element-wise loop does not vectorise (its loads are strided);
/// a plane of nanodet-g's 3x3/2 stem pool spent most of its time here.
#[inline(always)]
fn deinterleave2(x: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == x.len().div_ceil(2) && odd.len() == x.len() / 2);
    let pairs = x.len() / 2;
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        if super::vmath::avx512f() {
            // SAFETY: AVX-512F checked; j + 16 <= pairs keeps every load and store in bounds.
            unsafe { j = deinterleave2_avx512(x, even, odd) };
        }
        // SSE is part of x86_64; j + 4 <= pairs keeps every load and store in bounds.
        unsafe {
            while j + 4 <= pairs {
                let a = _mm_loadu_ps(x.as_ptr().add(2 * j));
                let b = _mm_loadu_ps(x.as_ptr().add(2 * j + 4));
                _mm_storeu_ps(
                    even.as_mut_ptr().add(j),
                    _mm_shuffle_ps(a, b, 0b10_00_10_00),
                );
                _mm_storeu_ps(odd.as_mut_ptr().add(j), _mm_shuffle_ps(a, b, 0b11_01_11_01));
                j += 4;
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // NEON is part of aarch64; LD2 splits even and odd lanes; j + 4 <= pairs keeps every
        // load and store in bounds.
        unsafe {
            while j + 4 <= pairs {
                let v = vld2q_f32(x.as_ptr().add(2 * j));
                vst1q_f32(even.as_mut_ptr().add(j), v.0);
                vst1q_f32(odd.as_mut_ptr().add(j), v.1);
                j += 4;
            }
        }
    }
    for j in j..pairs {
        even[j] = x[2 * j];
        odd[j] = x[2 * j + 1];
    }
    if x.len() % 2 == 1 {
        even[pairs] = x[2 * pairs];
    }
}

/// Asks for every cache line of `row` (a plane's row two ahead of the one being pooled): on the
/// Zen 5 VM the hardware prefetcher left nanodet-g's 3x3/2 stem pool (32 planes of 208x208, read
/// from the third-level cache) waiting on its loads.
#[inline(always)]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a hint at an address inside `row`; SSE is part of x86-64.
        unsafe {
            use std::arch::x86_64::*;
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// [`fold_max`] 16 floats a step, the last under a mask. `vmaxps(v, acc)` is `v > acc ? v : acc`,
/// tract's step: `acc` kept on a tie (signed zeros) and where either is NaN. LLVM's own AVX-512
/// build of the loop left rows of 88 with a 24-float scalar tail (FastestDet's stem pool 0.26 →
/// 0.34 ms).
///
/// # Safety
/// AVX-512F; `acc` and `v` of the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fold_max_avx512(acc: &mut [f32], v: &[f32]) {
    use std::arch::x86_64::*;
    let n = acc.len();
    assert!(v.len() == n);
    let (a, b) = (acc.as_mut_ptr(), v.as_ptr());
    let mut i = 0;
    while i + 16 <= n {
        let m = _mm512_max_ps(_mm512_loadu_ps(b.add(i)), _mm512_loadu_ps(a.add(i)));
        _mm512_storeu_ps(a.add(i), m);
        i += 16;
    }
    if i < n {
        let k: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
        let m = _mm512_max_ps(
            _mm512_maskz_loadu_ps(k, b.add(i)),
            _mm512_maskz_loadu_ps(k, a.add(i)),
        );
        _mm512_mask_storeu_ps(a.add(i), k, m);
    }
}

/// One plane of a 3x3 pool at stride 2 (pad at most 1), 16 outputs of a row per step, every tap
/// folded in tract's order (row by row, left to right: the same bits, ties between +0 and -0
/// and NaN included). A tap's 16 inputs are the even or odd elements of two loads (a permute);
/// taps past the row's ends load as −inf, which the fold never keeps, as tract skips them; rows
/// past the plane's are skipped. The separable plane pass wrote every input row's horizontal
/// maxima out and read them back: nanodet-g's stem pool (32 planes of 208x208) took 0.43 ms so.
///
/// # Safety
/// AVX-512F; `x` holds the plane (`in_h × in_w`), `y` the output (`out_h × out_w`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_3x3s2_avx512(g: &PoolGeo, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let ((ih, iw), (oh, ow)) = (g.in_hw, g.out_hw);
    let (ph, pw) = (g.pad.0 as isize, g.pad.1 as isize);
    assert!(x.len() >= ih * iw && y.len() >= oh * ow);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    // The lanes of a 16-float load at column `c` (maybe negative) that lie in the row.
    let lanes = |c: isize| -> __mmask16 {
        let lo = (-c).clamp(0, 16) as u32;
        let hi = (iw as isize - c).clamp(0, 16) as u32;
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    };
    for oy in 0..oh {
        // The two input rows the output row after next adds (the plane comes from the third-level
        // cache, and the hardware prefetcher alone left the loads waiting).
        for r in [2 * oy + 4, 2 * oy + 5] {
            if let Some(ahead) = (r as isize - ph)
                .try_into()
                .ok()
                .and_then(|r: usize| x.get(r * iw..(r + 1) * iw))
            {
                prefetch(ahead);
            }
        }
        for ox0 in (0..ow).step_by(16) {
            let c0 = 2 * ox0 as isize - pw;
            let mut acc = _mm512_set1_ps(f32::MIN);
            for ky in 0..3isize {
                let iy = 2 * oy as isize - ph + ky;
                if iy < 0 || iy >= ih as isize {
                    continue;
                }
                let row = x.as_ptr().add(iy as usize * iw);
                let load = |c: isize| _mm512_mask_loadu_ps(ninf, lanes(c), row.wrapping_offset(c));
                let (a, b) = (load(c0), load(c0 + 16));
                let (a2, b2) = (load(c0 + 2), load(c0 + 18));
                for tap in [
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                    _mm512_permutex2var_ps(a2, even, b2),
                ] {
                    // vmaxps(v, acc): v > acc ? v : acc, tract's step.
                    acc = _mm512_max_ps(tap, acc);
                }
            }
            let n = (ow - ox0).min(16);
            let m = ((1u32 << n) - 1) as __mmask16;
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(oy * ow + ox0), m, acc);
        }
    }
}

/// [`deinterleave2`]'s 16-pair steps while they fit; returns the pairs done.
///
/// # Safety
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave2_avx512(x: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let pairs = x.len() / 2;
    assert!(even.len() >= pairs && odd.len() >= pairs);
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut j = 0;
    while j + 16 <= pairs {
        let a = _mm512_loadu_ps(x.as_ptr().add(2 * j));
        let b = _mm512_loadu_ps(x.as_ptr().add(2 * j + 16));
        _mm512_storeu_ps(even.as_mut_ptr().add(j), _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(odd.as_mut_ptr().add(j), _mm512_permutex2var_ps(a, io, b));
        j += 16;
    }
    j
}

impl SeparableMaxPool {
    /// [`Self::plane`], compiled for AVX-512F where the CPU has it ([`fold_max`] then runs
    /// [`fold_max_avx512`]). The crate is built for plain x86-64, whose vectors are SSE's four
    /// floats: so built, FastestDet's 3x3/2 stem pool took 0.26 ms, now 0.19, and CenterNet's
    /// channels-last 3x3 pool over 128x128x80 1.78 ms, now 0.55 (Zen 5, 1 thread).
    fn plane_fast(&self, x: &[f32], y: &mut [f32], rows: &mut [f32], scratch: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::vmath::avx512f() {
            let g = &self.geo;
            if g.kernel == (3, 3) && g.stride == (2, 2) && g.pad.0 <= 1 && g.pad.1 <= 1 {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { pool_3x3s2_avx512(g, x, y) };
            }
            // SAFETY: the CPU has AVX-512F.
            return unsafe { self.plane_avx512(x, y, rows, scratch) };
        }
        self.plane(x, y, rows, scratch)
    }

    /// # Safety
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn plane_avx512(&self, x: &[f32], y: &mut [f32], rows: &mut [f32], scratch: &mut [f32]) {
        self.plane(x, y, rows, scratch)
    }

    /// [`Self::rows_nhwc`], compiled for AVX-512F where the CPU has it (see [`Self::plane_fast`]).
    fn rows_nhwc_fast(
        &self,
        c: usize,
        x: &[f32],
        first: usize,
        y: &mut [f32],
        hrows: &mut Vec<f32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::vmath::avx512f() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { self.rows_nhwc_avx512(c, x, first, y, hrows) };
        }
        self.rows_nhwc(c, x, first, y, hrows)
    }

    /// # Safety
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_nhwc_avx512(
        &self,
        c: usize,
        x: &[f32],
        first: usize,
        y: &mut [f32],
        hrows: &mut Vec<f32>,
    ) {
        self.rows_nhwc(c, x, first, y, hrows)
    }

    /// One plane: `x` is `in_h × in_w`, `y` is `out_h × out_w`; `rows` (in_h × out_w) and
    /// `scratch` (in_w) are scratch.
    #[inline(always)]
    fn plane(&self, x: &[f32], y: &mut [f32], rows: &mut [f32], scratch: &mut [f32]) {
        let g = &self.geo;
        let ((ih, iw), (oh, ow)) = (g.in_hw, g.out_hw);
        let (kh, kw) = g.kernel;
        let (sh, sw) = g.stride;
        let (ph, pw) = (g.pad.0 as isize, g.pad.1 as isize);
        // Horizontal: every input row's max over its kw taps at each output column. A strided row
        // is first split into its phases, one contiguous run each (`scratch`, `iw` floats).
        for (iy, hrow) in rows.chunks_exact_mut(ow).enumerate().take(ih) {
            let xrow = &x[iy * iw..][..iw];
            if let Some(ahead) = x.get((iy + 2) * iw..(iy + 3) * iw) {
                prefetch(ahead);
            }
            hrow.fill(f32::MIN);
            if sw == 1 {
                for kx in 0..kw {
                    fold_tap(hrow, &[xrow], kx as isize - pw);
                }
                continue;
            }
            if sw == 2 {
                let (even, odd) = scratch[..iw].split_at_mut(iw.div_ceil(2));
                deinterleave2(xrow, even, odd);
            } else {
                let mut at = 0;
                for p in 0..sw {
                    let len = (iw + sw - 1 - p) / sw;
                    for j in 0..len {
                        scratch[at + j] = xrow[j * sw + p];
                    }
                    at += len;
                }
            }
            let mut split: [&[f32]; MAX_STRIDE] = [&[]; MAX_STRIDE];
            let mut rest = &scratch[..iw];
            for (p, phase) in split.iter_mut().enumerate().take(sw) {
                let (now, later) = rest.split_at((iw + sw - 1 - p) / sw);
                *phase = now;
                rest = later;
            }
            for kx in 0..kw {
                fold_tap(hrow, &split[..sw], kx as isize - pw);
            }
        }
        // Vertical: each output row is the max of kh horizontal rows.
        for (oy, yrow) in y.chunks_exact_mut(ow).enumerate().take(oh) {
            yrow.fill(f32::MIN);
            for ky in 0..kh {
                let iy = (oy * sh + ky) as isize - ph;
                if iy < 0 || iy >= ih as isize {
                    continue;
                }
                let hrow = &rows[iy as usize * ow..][..ow];
                fold_max(yrow, hrow);
            }
        }
    }
}

impl SeparableMaxPool {
    /// Output rows `first ..` (counted over every image, `out_h` per image) of a channels-last
    /// pool of `c` channels into `y` (whole rows of `out_w · c`): for each run of rows of one
    /// image, the horizontal maxima of the input rows it reads (`hrows`, scratch), then each
    /// output row as the max of its kh of them. Every tap is a run of `c` floats, contiguous in
    /// input and output, so no phase split is needed at any stride.
    #[inline(always)]
    fn rows_nhwc(&self, c: usize, x: &[f32], first: usize, y: &mut [f32], hrows: &mut Vec<f32>) {
        let g = &self.geo;
        let ((ih, iw), (oh, ow)) = (g.in_hw, g.out_hw);
        let (kh, kw) = g.kernel;
        let (sh, sw) = g.stride;
        let (ph, pw) = (g.pad.0 as isize, g.pad.1 as isize);
        let row = ow * c;
        let total = y.len() / row;
        let mut done = 0;
        while done < total {
            let r = first + done;
            let (image, oy0) = (r / oh, r % oh);
            // At most NHWC_BLOCK output rows at a time, so that their horizontal maxima stay in
            // the second-level cache for the vertical pass (CenterNet's 128x128x80, Zen 5, 1
            // thread: 2.0–2.2 ms with the whole image's 5 MB at once, 1.8–1.9 in blocks).
            let count = (oh - oy0).min(total - done).min(NHWC_BLOCK);
            // The input rows this run reads, clipped to the image.
            let lo = ((oy0 * sh) as isize - ph).clamp(0, ih as isize) as usize;
            let hi = (((oy0 + count - 1) * sh + kh) as isize - ph).clamp(lo as isize, ih as isize)
                as usize;
            hrows.resize((hi - lo) * row, 0.0);
            let xi = &x[image * ih * iw * c..][..ih * iw * c];
            for (k, h) in hrows.chunks_exact_mut(row).enumerate() {
                let line = &xi[(lo + k) * iw * c..][..iw * c];
                h.fill(f32::MIN);
                for (ox, dst) in h.chunks_exact_mut(c).enumerate() {
                    for kx in 0..kw {
                        let ix = (ox * sw + kx) as isize - pw;
                        if ix >= 0 && ix < iw as isize {
                            fold_max(dst, &line[ix as usize * c..][..c]);
                        }
                    }
                }
            }
            for (j, yrow) in y[done * row..][..count * row]
                .chunks_exact_mut(row)
                .enumerate()
            {
                yrow.fill(f32::MIN);
                for ky in 0..kh {
                    let iy = ((oy0 + j) * sh + ky) as isize - ph;
                    if iy >= lo as isize && iy < hi as isize {
                        fold_max(yrow, &hrows[(iy as usize - lo) * row..][..row]);
                    }
                }
            }
            done += count;
        }
    }
}

impl EvalOp for SeparableMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geo;
        let shape = input.shape();
        let spatial = match g.channels_last {
            None => shape.get(2..4),
            Some(c) => shape.get(1..3).filter(|_| shape.get(3) == Some(&c)),
        };
        ensure!(
            input.datum_type() == f32::datum_type()
                && shape.len() == 4
                && spatial == Some(&[g.in_hw.0, g.in_hw.1][..]),
            "SeparableMaxPool: input {:?} {shape:?}, planned for f32 {} of {}x{}",
            input.datum_type(),
            if g.channels_last.is_some() {
                "NHWC"
            } else {
                "NCHW"
            },
            g.in_hw.0,
            g.in_hw.1
        );
        let (ih, iw) = g.in_hw;
        let (oh, ow) = g.out_hw;
        let out_shape = match g.channels_last {
            None => [shape[0], shape[1], oh, ow],
            Some(c) => [shape[0], oh, ow, c],
        };
        // Every element is written (each output row starts from a fill).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut y = output.try_as_plain_ram_mut()?;
        let y = y.as_slice_mut::<f32>()?;
        let total = x.len();
        if let Some(c) = g.channels_last {
            // Split by output rows (an image has one plane of all its channels).
            tract_linalg::multithread::par_chunks_mut(y, ow * c, total, |first, rows| {
                self.rows_nhwc_fast(c, x, first, rows, &mut vec![]);
                Ok(())
            })?;
            return Ok(tvec!(output.into_tvalue()));
        }
        let (ip, op) = (ih * iw, oh * ow);
        if ip <= SMALL_PLANE {
            // Groups of up to GROUP planes interleaved into one channels-last image, pooled as
            // such, then split back: the same taps in the same order, so the same bits.
            tract_linalg::multithread::par_chunks_mut(y, op, total, |first, planes| {
                let (mut xin, mut yout) = (vec![0f32; ip * GROUP], vec![0f32; op * GROUP]);
                let mut hrows = vec![];
                for (gi, yg) in planes.chunks_mut(op * GROUP).enumerate() {
                    let c = yg.len() / op;
                    let p0 = first + gi * GROUP;
                    for (q, xp) in x[p0 * ip..][..c * ip].chunks_exact(ip).enumerate() {
                        for (s, &v) in xp.iter().enumerate() {
                            xin[s * c + q] = v;
                        }
                    }
                    self.rows_nhwc_fast(c, &xin[..ip * c], 0, &mut yout[..op * c], &mut hrows);
                    for (q, yp) in yg.chunks_exact_mut(op).enumerate() {
                        for (s, v) in yp.iter_mut().enumerate() {
                            *v = yout[s * c + q];
                        }
                    }
                }
                Ok(())
            })?;
            return Ok(tvec!(output.into_tvalue()));
        }
        tract_linalg::multithread::par_chunks_mut(y, op, total, |first, planes| {
            let mut rows = vec![0f32; ih * ow];
            let mut scratch = vec![0f32; iw];
            for (i, yp) in planes.chunks_exact_mut(oh * ow).enumerate() {
                let xp = &x[(first + i) * ih * iw..][..ih * iw];
                self.plane_fast(xp, yp, &mut rows, &mut scratch);
            }
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for SeparableMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        ensure!(
            shape.rank() == 4,
            "SeparableMaxPool: rank-{} input",
            shape.rank()
        );
        let (oh, ow) = (self.geo.out_hw.0.to_dim(), self.geo.out_hw.1.to_dim());
        Ok(tvec!(f32::fact(match self.geo.channels_last {
            None => [shape[0].clone(), shape[1].clone(), oh, ow],
            Some(_) => [shape[0].clone(), oh, ow, shape[3].clone()],
        })))
    }

    as_op!();
}

/// The geometry of `op` on `input`, when [`SeparableMaxPool`] computes the same thing: f32 NCHW
/// or NHWC with a concrete shape, two spatial axes, dilation 1, no index output.
fn geometry(op: &OptMaxPool, input: &TypedFact) -> Option<PoolGeo> {
    let spec = &op.pool_spec;
    let channels_last = match spec.data_format {
        DataFormat::NCHW => false,
        DataFormat::NHWC => true,
        _ => return None,
    };
    if op.with_index_outputs.is_some()
        || input.datum_type != f32::datum_type()
        || spec.kernel_shape.len() != 2
        || spec.dilations().iter().any(|d| *d != 1)
    {
        return None;
    }
    let shape = input.shape.as_concrete()?;
    if shape.len() != 4 {
        return None;
    }
    let geo = op.geometry.to_concrete(shape).ok()?;
    let patch = &geo.patch;
    let (k, s) = (&patch.spec.kernel_shape, &patch.spec.strides);
    if patch.output_shape.len() != 2 || s.iter().any(|s| *s == 0 || *s > MAX_STRIDE) {
        return None;
    }
    Some(PoolGeo {
        in_hw: if channels_last {
            (shape[1], shape[2])
        } else {
            (shape[2], shape[3])
        },
        out_hw: (patch.output_shape[0], patch.output_shape[1]),
        kernel: (k[0], k[1]),
        stride: (s[0], s[1]),
        pad: (patch.pad_before[0], patch.pad_before[1]),
        channels_last: channels_last.then_some(shape[3]),
    })
}

/// Whether tract's pool is measurably the slower one:
/// - kernels of 25 taps or more (YOLOX's SPP pools 5, 9, 13: kw + kh passes instead of kw · kh;
///   2.2 vs 4.1–4.5 ms for the three in the interleaved dev-build A/B of `benches/GRAPH_REWRITES.md`
///   section 7);
/// - rows at stride 2 (FastestDet's and NanoDet-g's 3x3/2 stem pools, which tract reads with
///   `step_by` on one thread), since their phases are split with SIMD ([`deinterleave2`]): release
///   build, nanodet-g-int8-qdq, 2 rounds of `lookout bench --profile` (2026-12-06, Xeon): 2.04–2.07
///   → 0.79–0.85 ms at 1 thread, 2.07–2.10 → 0.61–0.70 ms at 2. With the split as a scalar loop it
///   was 1.40 ms at 1 thread, inside the spread of the whole model, and stayed tract's.
///
/// A 3x3 pool at stride 1 (CenterNet) measured slower here (57 vs 15 ms in the dev profile; 2.87 /
/// 1.65 vs 2.19 / 2.27 ms in a release build): it stays tract's, as do other strides.
///
/// A channels-last pool is always taken: tract's `OptMaxPool` visits the taps of every output
/// position one at a time, where here every tap is a vector run over the channels. CenterNet's
/// 3x3/1 pool on 128x128x80 after [`PoolChannelsLastPass`] took 1.75–1.89 ms (Zen 5, 1 thread,
/// `lookout bench --profile`), against 2.0 ms for tract's NCHW pool plus 1.9 ms for the two
/// transposes around it.
fn worth_it(geo: &PoolGeo) -> bool {
    let (kernel, stride) = (geo.kernel, geo.stride);
    geo.channels_last.is_some() || kernel.0 * kernel.1 >= 25 || stride.1 == 2
}

/// Swaps tract's `OptMaxPool` for [`SeparableMaxPool`] where [`geometry`] and [`worth_it`] allow.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeparableMaxPoolPass;

impl GraphPass for SeparableMaxPoolPass {
    fn name(&self) -> &'static str {
        "SeparableMaxPool"
    }
    fn replaces(&self) -> &'static str {
        "MaxPool"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if !super::fpdet_enabled() {
            return Ok(0);
        }
        Ok(swap_ops(model, |model, node| {
            let op = node.op_as::<OptMaxPool>()?;
            let input = model.outlet_fact(*node.inputs.first()?).ok()?;
            let geo = geometry(op, input).filter(worth_it)?;
            // The plan's output fact must be what this op declares.
            let out = node.outputs.first()?.fact.shape.as_concrete()?;
            let out_hw = match geo.channels_last {
                None => out.get(2..4),
                Some(_) => out.get(1..3),
            };
            if out.len() != 4 || out_hw != Some(&[geo.out_hw.0, geo.out_hw.1][..]) {
                return None;
            }
            Some(Box::new(SeparableMaxPool { geo }) as Box<dyn TypedOp>)
        }))
    }
}

/// A max pool between a transpose to NCHW and one back (a TensorFlow export's NHWC pool, which
/// tract's decluttering left in place: CenterNet's peak pool on its 128x128x80 heat map) made one
/// channels-last pool: the two transposes go, and [`SeparableMaxPoolPass`] then takes the pool.
/// Runs on the decluttered model. The same maxima of the same values: bit-identical.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolChannelsLastPass;

impl GraphPass for PoolChannelsLastPass {
    fn name(&self) -> &'static str {
        "PoolChannelsLast"
    }
    fn replaces(&self) -> &'static str {
        "MaxPool between transposes"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if !super::fpdet_enabled() {
            return Ok(0);
        }
        // (transpose in, pool, transpose out)
        let mut found = vec![];
        for node in model.nodes() {
            let Some(pool) = node.op_as::<MaxPool>() else {
                continue;
            };
            let before = model.node(node.inputs[0].node);
            let after = match model.outlet_successors(node.id.into()) {
                [only] if !model.outputs.contains(&node.id.into()) => model.node(only.node),
                _ => continue,
            };
            if pool.pool_spec.data_format == DataFormat::NCHW
                && pool.with_index_outputs.is_none()
                && before.op_as::<AxisOp>() == Some(&TO_NCHW)
                && model.outlet_successors(before.id.into()).len() == 1
                && after.op_as::<AxisOp>() == Some(&TO_NHWC)
            {
                found.push((before.inputs[0], node.id, after.id));
            }
        }
        for &(input, pool, after) in &found {
            let node = model.node(pool);
            let mut op = node.op_as::<MaxPool>().context("a pool")?.clone();
            op.pool_spec.data_format = DataFormat::NHWC;
            let mut patch = TypedModelPatch::new(format!("{} channels last", node.name));
            let x = patch.tap_model(model, input)?;
            let y = patch.wire_node(&node.name, op, &[x])?[0];
            patch.shunt_outside(model, after.into(), y)?;
            patch.apply(model)?;
        }
        if !found.is_empty() {
            model.compact()?;
        }
        Ok(found.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};

    type Pair = (usize, usize);

    /// tract's own max pool (the op `OptMaxPool` comes from) on `x`.
    fn tract_pool(
        x: &Tensor,
        k: (usize, usize),
        s: (usize, usize),
        pads: ([usize; 2], [usize; 2]),
        ceil: bool,
        data_format: DataFormat,
    ) -> (Tensor, Option<PoolGeo>) {
        let c = x.shape()[if data_format == DataFormat::NHWC {
            3
        } else {
            1
        }];
        let spec = PoolSpec {
            data_format,
            kernel_shape: tvec![k.0, k.1],
            padding: PaddingSpec::ExplicitOnnxPool(
                pads.0.iter().copied().collect(),
                pads.1.iter().copied().collect(),
                ceil,
            ),
            dilations: None,
            strides: Some(tvec![s.0, s.1]),
            input_channels: c,
            output_channels: c,
        };
        let shape: TVec<TDim> = x.shape().iter().map(|d| d.to_dim()).collect();
        let op = MaxPool::new(spec.clone(), None);
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(x.clone().into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor();
        let opt = OptMaxPool {
            pool_spec: spec.clone(),
            with_index_outputs: None,
            geometry: spec.compute_geo(&shape).unwrap(),
        };
        (out, geometry(&opt, &f32::fact(x.shape())))
    }

    #[test]
    fn bit_identical_to_tract() {
        // (kernel, strides, (pads before, pads after), ceil mode, input shape)
        type Case = (Pair, Pair, ([usize; 2], [usize; 2]), bool, [usize; 4]);
        let cases: &[Case] = &[
            ((3, 3), (2, 2), ([1, 1], [1, 1]), false, [1, 3, 17, 20]),
            ((5, 5), (1, 1), ([2, 2], [2, 2]), false, [1, 2, 9, 13]),
            ((13, 13), (1, 1), ([6, 6], [6, 6]), false, [1, 2, 13, 13]),
            ((2, 2), (2, 2), ([0, 0], [0, 0]), false, [2, 2, 7, 9]),
            ((3, 2), (3, 2), ([1, 0], [0, 1]), true, [1, 2, 11, 10]),
            ((3, 3), (2, 2), ([0, 0], [0, 0]), true, [1, 1, 8, 8]),
            // Small planes in groups of 16 and a last group of 4 (NCHW), and planes over
            // SMALL_PLANE pooled row by row.
            ((5, 5), (1, 1), ([2, 2], [2, 2]), false, [1, 20, 13, 13]),
            ((3, 3), (2, 2), ([1, 1], [1, 1]), false, [1, 3, 41, 40]),
            // 3x3/2 planes over SMALL_PLANE (pool_3x3s2_avx512): no pad with the last window
            // past the input (ceil mode), and a pad on one side only.
            ((3, 3), (2, 2), ([0, 0], [0, 0]), true, [1, 2, 33, 47]),
            ((3, 3), (2, 2), ([0, 1], [1, 0]), false, [1, 2, 35, 36]),
            ((9, 9), (1, 1), ([4, 4], [4, 4]), false, [1, 2, 36, 33]),
        ];
        // Spread values with a NaN, and on x86-64 maxima that tie between +0 and -0 (which one
        // a pool keeps depends on its order of taps and on the max instruction). On aarch64
        // tract's own pool keeps +0 on such ties whatever the order (seen under qemu: its
        // `fmax`-like step), so there the ties are not tract's sequential fold to compare with.
        let spread = |i: usize| ((i * 7919 % 1009) as f32 - 500.0) / 13.0;
        let zeros = |i: usize| [0.0, -0.0, -1.0, -0.0, 0.0][i * 7 % 5];
        let patterns: Vec<&dyn Fn(usize) -> f32> = if cfg!(target_arch = "x86_64") {
            vec![&spread, &zeros]
        } else {
            vec![&spread]
        };
        for (&(k, s, pads, ceil, shape), values) in cases
            .iter()
            .flat_map(|case| patterns.iter().map(move |p| (case, *p)))
        {
            let len: usize = shape.iter().product();
            let mut v: Vec<f32> = (0..len).map(values).collect();
            v[len / 3] = f32::NAN;
            let nchw = Tensor::from_shape(&shape, &v).unwrap();
            // The same values channels-last, pooled NHWC.
            let nhwc = nchw.clone().permute_axes(&[0, 2, 3, 1]).unwrap();
            for (x, fmt) in [(nchw, DataFormat::NCHW), (nhwc, DataFormat::NHWC)] {
                let (want, geo) = tract_pool(&x, k, s, pads, ceil, fmt);
                let geo = geo.expect("a geometry SeparableMaxPool takes");
                let got = SeparableMaxPool { geo }
                    .eval(&EvalContext::out_of_plan(), tvec!(x.into_tvalue()))
                    .unwrap()
                    .remove(0)
                    .into_tensor();
                assert_eq!(want.shape(), got.shape(), "{k:?} {s:?} {pads:?} {fmt:?}");
                let a = want.try_as_plain_ram().unwrap();
                let b = got.try_as_plain_ram().unwrap();
                let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits(),
                        "{k:?} {s:?} {pads:?} ceil {ceil} {fmt:?}: element {i}: tract {a} ours {b}"
                    );
                }
            }
        }
    }

    /// Split over three threads: the same bytes as on one.
    #[test]
    fn threads_give_the_same_values() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let shape = [2usize, 9, 40, 50];
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|i| ((i * 31 % 977) as f32) / 50.0).collect();
        let x = Tensor::from_shape(&shape, &v).unwrap();
        let nhwc = x.clone().permute_axes(&[0, 2, 3, 1]).unwrap();
        for (x, fmt) in [(x, DataFormat::NCHW), (nhwc, DataFormat::NHWC)] {
            let (want, geo) = tract_pool(&x, (3, 3), (2, 2), ([1, 1], [1, 1]), false, fmt);
            let op = SeparableMaxPool { geo: geo.unwrap() };
            let got = multithread_tract_scope(Executor::multithread(3), || {
                op.eval(&EvalContext::out_of_plan(), tvec!(x.into_tvalue()))
                    .unwrap()
                    .remove(0)
                    .into_tensor()
            });
            assert_eq!(want, got, "{fmt:?}");
        }
    }
}
