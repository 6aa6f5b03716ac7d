//! [`super::fconv::PanelConv`]'s product on x86 CPUs with AVX2 and FMA: a direct f32
//! convolution, with the bias and a LeakyRelu (or Relu) in the same pass.
//!
//! Why not tract's matrix product there: measured on a 2-core AMD EPYC (Zen 3, 2026-12-06),
//! nanodet-g-int8-qdq's three float convs (its stem 3→32 at stride 2, then 32→32 and 32→16 at
//! 104x104) took 11.9 ms of its 49 ms per image, in tract's direct spatial conv and in PanelConv
//! on tract's `fma_mmm_f32_16x6`, against 5.4 ms in onnxruntime's NCHWc convs: the products ran at
//! about half the FMA units' rate, the rest went to packing six-column panels (a 24-byte copy per
//! tap and panel) and to tract's per-panel calls.
//!
//! Here no im2col is made. The input is copied once into padded planes, split by column phase
//! when the stride along a row is above one (phase `p` of a row holds its padded columns
//! `p, p + s, p + 2s, …`), so that for every tap the 16 inputs of 16 neighbouring outputs of a row
//! are 16 contiguous floats: two unaligned loads. Per tap, six output channels' weights (four in a
//! last tile or two) are broadcast and multiplied into 12 (8) accumulators, 16 columns × 6 (4)
//! channels: at least 8 independent FMA chains, which cover the FMA latency of two units. Bias,
//! LeakyRelu and the store follow while the accumulators are in registers. Work is shared out by
//! (output row, channel tile).
//!
//! 1x1 convs at stride 1 ([`pointwise`]) need no planes: the same kernels read the input in place,
//! one tap per input channel, on blocks of positions. tract makes them matrix products whose
//! packing copies the whole input first.
//!
//! Depthwise convs (group = channels, [`depthwise`]) take the same planes one channel at a time:
//! a task copies a channel's padded planes into a scratch that stays in the second-level cache and
//! runs every output row of it, 64 columns (eight accumulators) per step. tract's `DepthWiseConv`
//! ran CenterNet-MBv3's 24 NCHW depthwise convs in about 37 ms at 1 thread there, this in 15.
//!
//! Sums run in tap order per output, so results differ from tract's kernels (which sum in their
//! own order) by rounding only: `fconv`'s test holds them to 1e-5 of tract's plan.

// Off x86 the kernel is never planned ([`available`] is false): its types are built but not read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::im2col::Geometry;
use super::par::{for_each_chunk, for_each_range};
use super::scratch::Scratch;

/// Which f32 kernel [`super::fconv::PanelConv`] runs: `tract` (tract's matrix product, and convs
/// tract's direct spatial kernel suits stay with it) or, unset or `direct`, this module's wherever
/// the CPU has AVX2 and FMA. For A/B runs and tests; read when a plan is made.
pub const F32_KERNEL_ENV: &str = "LOOKOUT_F32_KERNEL";

/// Output channels per tile: six (12 accumulators, two loads and a broadcast fill 15 of the 16
/// ymm registers; four channels ran nanodet-g-int8-qdq's float convs 13 % slower), and a tile or
/// two of four where the count is not a multiple of six.
const CT: usize = 6;
const CT4: usize = 4;
/// Output columns per kernel step (two 8-float vectors).
const COLS: usize = 16;

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether plans made now use the kernel ([`available`] and not turned off by [`F32_KERNEL_ENV`]).
pub(super) fn chosen() -> bool {
    available() && std::env::var(F32_KERNEL_ENV).as_deref() != Ok("tract")
}

/// A conv's weights and bias as the kernel reads them, in tiles of six or four channels: a tile's
/// weights tap after tap, its channels' side by side (`(kk·width + j)`); channels past `c_out`
/// are zero.
#[derive(Debug, Clone)]
pub(super) struct Weights {
    w: Vec<f32>,
    bias: Vec<f32>,
    tiles: Vec<Tile>,
    c_out: usize,
    k: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tile {
    /// First channel.
    c0: usize,
    /// Channels the kernel computes (six or four).
    width: usize,
    /// Where its weights start in `w` (and its biases, divided by `k`).
    at: usize,
}

impl Weights {
    /// From `kernel` as `[c_out][k]` (OIHW flattened) and one bias per channel.
    pub(super) fn pack(kernel: &[f32], bias: &[f32], c_out: usize, k: usize) -> Weights {
        // Sixes, then fours for the rest: no channel computed in vain when c_out is even.
        let fours = match c_out % CT {
            0 => 0,
            2 if c_out >= CT4 * 2 => 2,
            5 => 0,
            r => r.div_ceil(CT4),
        };
        let sixes = c_out.saturating_sub(fours * CT4).div_ceil(CT);
        let mut tiles = vec![];
        let (mut c0, mut at) = (0, 0);
        for width in std::iter::repeat_n(CT, sixes).chain(std::iter::repeat_n(CT4, fours)) {
            if c0 >= c_out {
                break;
            }
            tiles.push(Tile { c0, width, at });
            c0 += width;
            at += width * k;
        }
        let mut w = vec![0f32; at];
        let mut b = vec![0f32; at / k.max(1)];
        for t in &tiles {
            for j in 0..t.width.min(c_out - t.c0) {
                let c = t.c0 + j;
                for kk in 0..k {
                    w[t.at + kk * t.width + j] = kernel[c * k + kk];
                }
                b[t.at / k.max(1) + j] = bias[c];
            }
        }
        Weights {
            w,
            bias: b,
            tiles,
            c_out,
            k,
        }
    }
}

impl Weights {
    /// `out_w` outputs of tile `t`'s channels (of those below `c_out`) from `x`, one tap per
    /// offset of `taps`: the step [`conv`] and [`pointwise`] share, on the kernel for six-channel
    /// tiles or the one for four.
    ///
    /// # Safety
    /// AVX2 and FMA; `x + tap + 16·⌈out_w / 16⌉` readable for every tap; `out + j·n + out_w`
    /// writable for each of the tile's channels `j`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn row(
        &self,
        t: Tile,
        x: *const f32,
        taps: &[usize],
        leaky: Option<f32>,
        out_w: usize,
        out: *mut f32,
        n: usize,
    ) {
        let channels = t.width.min(self.c_out - t.c0);
        let (wt, bias) = (
            &self.w[t.at..][..t.width * self.k],
            &self.bias[t.at / self.k..][..t.width],
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise; the weights and biases are the tile's.
        unsafe {
            if t.width == CT {
                x86::row6(x, taps, wt, bias, leaky, out_w, out, n, channels)
            } else {
                x86::row4(x, taps, wt, bias, leaky, out_w, out, n, channels)
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (x, taps, wt, bias, leaky, out_w, out, n, channels);
    }
}

/// Where the kernel reads: the padded, phase-split input planes' sizes and every tap's offset.
struct Layout {
    /// Padded rows per plane.
    hp: usize,
    /// Floats per plane row (one phase's columns, and slack for the last 16-column step).
    wq: usize,
    /// Phases per channel: the stride along a row.
    sw: usize,
    /// Per tap `(c, ky, kx)`: its offset from an output row's first read.
    taps: Vec<usize>,
}

impl Layout {
    fn of(g: &Geometry) -> Layout {
        let (hp, wp) = g.padded_hw();
        let sw = g.stride.1.max(1);
        let cols = g.out_w.next_multiple_of(COLS);
        let wq = wp.div_ceil(sw).max(cols + (g.kw - 1) * g.dilation.1 / sw);
        let taps = (0..g.k())
            .map(|kk| {
                let (c, tap) = (kk / (g.kh * g.kw), kk % (g.kh * g.kw));
                let (ky, kx) = (tap / g.kw, tap % g.kw);
                let col = kx * g.dilation.1;
                ((c * sw + col % sw) * hp + ky * g.dilation.0) * wq + col / sw
            })
            .collect();
        Layout { hp, wq, sw, taps }
    }

    fn len(&self, g: &Geometry) -> usize {
        g.c_in * self.sw * self.hp * self.wq
    }

    /// Offset of output row `oy`'s first read (before a tap's offset).
    fn row(&self, g: &Geometry, oy: usize) -> usize {
        oy * g.stride.0 * self.wq
    }

    /// Asserts that every read stays within `len` floats of planes: the last row's last 16-column
    /// step reads up to its end from the farthest tap, and no step runs past a plane row.
    fn assert_reads_within(&self, g: &Geometry, len: usize) {
        let cols = g.out_w.next_multiple_of(COLS);
        let far = self.row(g, g.out_h.saturating_sub(1))
            + self.taps.iter().max().copied().unwrap_or(0)
            + cols;
        assert!(far <= len && cols <= self.wq);
    }
}

/// `x` (`[c_in, in_h, in_w]`) into the planes of `lay`: zero where the padding is.
fn fill(g: &Geometry, lay: &Layout, x: &[f32], planes: &mut [f32]) {
    for_each_chunk(
        planes,
        lay.hp * lay.wq,
        || (),
        |i, dst, _| {
            let (c, phase) = (i / lay.sw, i % lay.sw);
            fill_plane(
                g,
                lay,
                &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w],
                phase,
                dst,
            )
        },
    );
}

/// Phase `phase` of one channel `src` (`[in_h, in_w]`) into `dst` (`hp × wq`).
fn fill_plane(g: &Geometry, lay: &Layout, src: &[f32], phase: usize, dst: &mut [f32]) {
    let (ph, pw) = (g.pad.0, g.pad.1);
    for (r, row) in dst.chunks_exact_mut(lay.wq).enumerate() {
        let Some(line) = r
            .checked_sub(ph)
            .and_then(|y| src.get(y * g.in_w..(y + 1) * g.in_w))
        else {
            row.fill(0.0);
            continue;
        };
        if lay.sw == 1 {
            let pw = pw.min(lay.wq);
            let n = g.in_w.min(lay.wq - pw);
            row[..pw].fill(0.0);
            row[pw..pw + n].copy_from_slice(&line[..n]);
            row[pw + n..].fill(0.0);
        } else {
            for (j, o) in row.iter_mut().enumerate() {
                *o = (j * lay.sw + phase)
                    .checked_sub(pw)
                    .and_then(|ic| line.get(ic))
                    .copied()
                    .unwrap_or(0.0);
            }
        }
    }
}

/// The output, `[c_out][out_h·out_w]`, written by several tasks at once: each writes only its own
/// rows of its own channels.
struct Output(*mut f32);
// SAFETY: tasks write disjoint (channel tile, output row) pieces (see `conv`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// The output from float `off` on (a method, so that closures capture the whole `Output`).
    fn at(&self, off: usize) -> *mut f32 {
        self.0.wrapping_add(off)
    }
}

/// The conv of `x` (`[1, c_in, in_h, in_w]`, flattened) into `out` (`[c_out][out_h·out_w]`, every
/// element written), plus the bias, through a LeakyRelu of slope `leaky` when given.
pub(super) fn conv(g: &Geometry, w: &Weights, leaky: Option<f32>, x: &[f32], out: &mut [f32]) {
    let n = g.n();
    assert!(
        available()
            && w.k == g.k()
            && w.c_out == g.c_out
            && x.len() >= g.c_in * g.in_h * g.in_w
            && out.len() == g.c_out * n
    );
    let lay = Layout::of(g);
    let mut planes = Scratch::<f32>::stale(lay.len(g));
    fill(g, &lay, x, &mut planes);
    lay.assert_reads_within(g, planes.len());
    let tiles = w.tiles.len();
    let dst = Output(out.as_mut_ptr());
    for_each_range(
        g.out_h * tiles,
        || (),
        |units, _| {
            for u in units {
                let (oy, t) = (u / tiles, w.tiles[u % tiles]);
                let x = planes[lay.row(g, oy)..].as_ptr();
                let out = dst.at(t.c0 * n + oy * g.out_w);
                // SAFETY: AVX2 and FMA (asserted); reads within `planes` (asserted above); writes
                // the tile's channels of row `oy`, which no other unit writes.
                unsafe { w.row(t, x, &lay.taps, leaky, g.out_w, out, n) };
            }
        },
    );
}

/// Floats of input a [`pointwise`] column block should span (all its channels), so that the block
/// stays in the first-level cache while every channel tile reads it.
const POINTWISE_BLOCK_BYTES: usize = 32 << 10;

/// A 1x1 conv at stride 1 without padding (`[c_out][c_in]` weights times the input's `[c_in][n]`
/// positions), read in place: the same kernels as [`conv`], one tap per input channel, on blocks
/// of positions laid end to end instead of output rows. tract runs these as matrix products whose
/// first step copies the whole input into packed panels (CenterNet-MBv3: 14 of its 120 ms per
/// image in those copies). Work is shared out by (column block, channel tile), block first, so
/// that a task's tiles read the same block. The last `n mod 16` positions come from a zero-padded
/// copy: 16 loads in place there would read past the input's end.
pub(super) fn pointwise(g: &Geometry, w: &Weights, leaky: Option<f32>, x: &[f32], out: &mut [f32]) {
    let (n, k) = (g.n(), g.c_in);
    assert!(
        available()
            && w.k == k
            && w.c_out == g.c_out
            && g.kh * g.kw == 1
            && g.stride == (1, 1)
            && g.pad == (0, 0)
            && g.in_h * g.in_w == n
            && x.len() >= k * n
            && out.len() == g.c_out * n
    );
    let n16 = n - n % COLS;
    let block = (POINTWISE_BLOCK_BYTES / (4 * k.max(1))).clamp(COLS, 256) / COLS * COLS;
    let main = n16.div_ceil(block);
    let blocks = main + usize::from(n16 < n);
    let taps: Vec<usize> = (0..k).map(|c| c * n).collect();
    let tail_taps: Vec<usize> = (0..k).map(|c| c * COLS).collect();
    let tiles = w.tiles.len();
    let dst = Output(out.as_mut_ptr());
    for_each_range(
        blocks * tiles,
        || None::<Scratch<f32>>,
        |units, tail| {
            for u in units {
                let (b, t) = (u / tiles, w.tiles[u % tiles]);
                let (p0, xp, taps, cols) = if b < main {
                    let p0 = b * block;
                    (p0, x[p0..].as_ptr(), &taps[..], block.min(n16 - p0))
                } else {
                    let patch = tail.get_or_insert_with(|| {
                        let mut s = Scratch::<f32>::stale(k * COLS);
                        for (c, row) in s.chunks_exact_mut(COLS).enumerate() {
                            let src = &x[c * n + n16..(c + 1) * n];
                            row[..src.len()].copy_from_slice(src);
                            row[src.len()..].fill(0.0);
                        }
                        s
                    });
                    (n16, patch.as_ptr(), &tail_taps[..], n - n16)
                };
                let out = dst.at(t.c0 * n + p0);
                // SAFETY: AVX2 and FMA (asserted). In place, a block's 16-column steps end at
                // `n16`, so channel c's reads end before `c·n + n16 ≤ k·n`; the tail's patch holds
                // 16 floats per channel. Writes the tile's channels of positions `p0 .. p0 + cols`,
                // which no other unit writes.
                unsafe { w.row(t, xp, taps, leaky, cols, out, n) };
            }
        },
    );
}

/// A depthwise conv's weights (`[c][kh·kw]`) and bias.
#[derive(Debug, Clone)]
pub(super) struct DwWeights {
    w: Vec<f32>,
    bias: Vec<f32>,
    c: usize,
    taps: usize,
}

impl DwWeights {
    /// From `kernel` as `[c][1][kh][kw]` flattened and one bias per channel.
    pub(super) fn new(kernel: &[f32], bias: &[f32], c: usize, taps: usize) -> DwWeights {
        DwWeights {
            w: kernel[..c * taps].to_vec(),
            bias: bias[..c].to_vec(),
            c,
            taps,
        }
    }
}

/// The depthwise conv of `x` (`[1, c, in_h, in_w]`, flattened; group = c) into `out`
/// (`[c][out_h·out_w]`, every element written), plus the bias, through a LeakyRelu of slope
/// `leaky`. Each task takes whole channels: it copies one channel's padded (phase-split) planes
/// into a scratch of its own, which stays in the second-level cache while every output row of
/// that channel reads it, so the input is read from memory once.
pub(super) fn depthwise(
    g: &Geometry,
    w: &DwWeights,
    leaky: Option<f32>,
    x: &[f32],
    out: &mut [f32],
) {
    let n = g.n();
    assert!(
        available()
            && g.c_in == w.c
            && g.c_out == w.c
            && w.taps == g.kh * g.kw
            && x.len() >= w.c * g.in_h * g.in_w
            && out.len() == w.c * n
    );
    // One channel's layout: the same planes, taps within the channel.
    let g1 = Geometry {
        c_in: 1,
        c_out: 1,
        ..g.clone()
    };
    let lay = Layout::of(&g1);
    lay.assert_reads_within(&g1, lay.len(&g1));
    for_each_chunk(
        out,
        n,
        || Scratch::<f32>::stale(lay.len(&g1)),
        |c, out, planes| {
            let src = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
            for (phase, dst) in planes.chunks_exact_mut(lay.hp * lay.wq).enumerate() {
                fill_plane(&g1, &lay, src, phase, dst);
            }
            for (oy, row) in out.chunks_exact_mut(g.out_w).enumerate() {
                let x = planes[lay.row(&g1, oy)..].as_ptr();
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA (asserted); reads within `planes` (asserted above), writes
                // `row` (out_w floats).
                unsafe {
                    x86::dw_row(
                        x,
                        &lay.taps,
                        &w.w[c * w.taps..][..w.taps],
                        w.bias[c],
                        leaky,
                        row,
                    )
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (x, row, leaky);
            }
        },
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::COLS;
    use std::arch::x86_64::*;

    /// `x > 0 ? x : alpha·x` (tract's LeakyRelu) on 8 lanes.
    #[inline(always)]
    unsafe fn leaky_relu(v: __m256, alpha: __m256) -> __m256 {
        _mm256_blendv_ps(
            _mm256_mul_ps(v, alpha),
            v,
            _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_setzero_ps()),
        )
    }

    /// Bias, LeakyRelu (a Relu at slope 0) and the store of one channel's 16 columns (`lanes` of
    /// them kept).
    #[inline(always)]
    unsafe fn finish(
        (lo, hi): (__m256, __m256),
        bias: f32,
        leaky: Option<f32>,
        dst: *mut f32,
        lanes: usize,
    ) {
        let b = _mm256_set1_ps(bias);
        let (mut lo, mut hi) = (_mm256_add_ps(lo, b), _mm256_add_ps(hi, b));
        match leaky {
            // Slope 0 is a Relu: tract's `max(x, 0)` gives +0 where x ≤ 0 (x·0 would give -0).
            Some(0.0) => {
                let z = _mm256_setzero_ps();
                (lo, hi) = (_mm256_max_ps(lo, z), _mm256_max_ps(hi, z));
            }
            Some(alpha) => {
                let a = _mm256_set1_ps(alpha);
                (lo, hi) = (leaky_relu(lo, a), leaky_relu(hi, a));
            }
            None => {}
        }
        if lanes == COLS {
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst.add(8), hi);
        } else {
            let mut tmp = [0f32; COLS];
            _mm256_storeu_ps(tmp.as_mut_ptr(), lo);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), hi);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, lanes);
        }
    }

    /// One output row of one channel tile of `$width` channels (accumulators `$lo`/`$hi` per
    /// channel: columns 0–7 and 8–15): `out_w` columns in steps of 16, each the sum over every
    /// tap of two 8-float loads at `x + tap + x0` times the tap's weight of each channel. Named
    /// accumulators, not an array, so that they stay in registers.
    ///
    /// # Safety
    /// AVX2 and FMA; `x + tap + x0 + 16` within the planes for every tap and step; `w` holds
    /// `taps.len()·$width` floats, `bias` `$width`; `out + j·n + out_w` writable for
    /// `j < channels`.
    macro_rules! row_kernel {
        ($name:ident, $width:expr, $(($j:expr, $lo:ident, $hi:ident)),+) => {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn $name(
                x: *const f32,
                taps: &[usize],
                w: &[f32],
                bias: &[f32],
                leaky: Option<f32>,
                out_w: usize,
                out: *mut f32,
                n: usize,
                channels: usize,
            ) {
                assert!(w.len() >= taps.len() * $width && bias.len() >= $width);
                let w = w.as_ptr();
                let mut x0 = 0;
                while x0 < out_w {
                    let p = x.add(x0);
                    $(let (mut $lo, mut $hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());)+
                    for (kk, &t) in taps.iter().enumerate() {
                        let a0 = _mm256_loadu_ps(p.add(t));
                        let a1 = _mm256_loadu_ps(p.add(t + 8));
                        let wk = w.add(kk * $width);
                        $(
                            let b = _mm256_broadcast_ss(&*wk.add($j));
                            $lo = _mm256_fmadd_ps(a0, b, $lo);
                            $hi = _mm256_fmadd_ps(a1, b, $hi);
                        )+
                    }
                    let lanes = COLS.min(out_w - x0);
                    $(
                        if $j < channels {
                            finish(($lo, $hi), bias[$j], leaky, out.add($j * n + x0), lanes);
                        }
                    )+
                    x0 += COLS;
                }
            }
        };
    }

    /// One output row of a depthwise conv: 64 columns per step (eight accumulators, so that the
    /// FMA units' latency is covered), then 16 at a time.
    ///
    /// # Safety
    /// AVX2 and FMA; `x + tap + x0 + 16` within the planes for every tap and every 16-column step
    /// up to `row.len()` rounded up to 16; `w` holds `taps.len()` floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dw_row(
        x: *const f32,
        taps: &[usize],
        w: &[f32],
        bias: f32,
        leaky: Option<f32>,
        row: &mut [f32],
    ) {
        assert!(w.len() >= taps.len());
        let out_w = row.len();
        let out = row.as_mut_ptr();
        let mut x0 = 0;
        while x0 + 4 * COLS <= out_w {
            let p = x.add(x0);
            let z = _mm256_setzero_ps();
            let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
            let (mut a4, mut a5, mut a6, mut a7) = (z, z, z, z);
            for (&t, wt) in taps.iter().zip(w) {
                let b = _mm256_broadcast_ss(wt);
                let q = p.add(t);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q), b, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(8)), b, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(16)), b, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(24)), b, a3);
                a4 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(32)), b, a4);
                a5 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(40)), b, a5);
                a6 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(48)), b, a6);
                a7 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(56)), b, a7);
            }
            let o = out.add(x0);
            finish((a0, a1), bias, leaky, o, COLS);
            finish((a2, a3), bias, leaky, o.add(16), COLS);
            finish((a4, a5), bias, leaky, o.add(32), COLS);
            finish((a6, a7), bias, leaky, o.add(48), COLS);
            x0 += 4 * COLS;
        }
        while x0 < out_w {
            let p = x.add(x0);
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for (&t, wt) in taps.iter().zip(w) {
                let b = _mm256_broadcast_ss(wt);
                lo = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(t)), b, lo);
                hi = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(t + 8)), b, hi);
            }
            finish((lo, hi), bias, leaky, out.add(x0), COLS.min(out_w - x0));
            x0 += COLS;
        }
    }

    row_kernel!(
        row6,
        6,
        (0, l0, h0),
        (1, l1, h1),
        (2, l2, h2),
        (3, l3, h3),
        (4, l4, h4),
        (5, l5, h5)
    );
    row_kernel!(row4, 4, (0, l0, h0), (1, l1, h1), (2, l2, h2), (3, l3, h3));
}
