//! [`super::fconv::PanelConv`]'s product on x86 CPUs with AVX2 and FMA, or AVX-512: a direct f32
//! convolution, with the bias and a LeakyRelu, Relu or (AVX-512: [`Act::Silu`]) Silu in the same
//! pass. This file lays out the input and shares out the work; `avx2.rs` and `avx512.rs` hold the
//! kernels ([`Isa`]), which sum in the same order and so give the same bits.
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
//! The AVX-512 kernels take 16-float vectors and four of them per step (six channels × 64 columns
//! of accumulators in its 32 registers): on a Zen 5 with AVX-512 onnxruntime's convs ran about
//! twice as fast as the AVX2 kernels (`avx512.rs`). Their convs read the row- and column-phase
//! planes of [`super::grid`] instead, whose vectors run across output rows (a 52-column map
//! computes 54 lanes per row, not 64: nanodet-g's 128→128 conv at 52x52, 3.8 → 3.3 ms); 1x1 and
//! depthwise convs keep the layout below.
//!
//! Sums run in tap order per output, so results differ from tract's kernels (which sum in their
//! own order) by rounding only: `fconv`'s test holds them to 1e-5 of tract's plan, and the two
//! instruction sets' kernels to the same bits.

// Off x86 the kernel is never planned ([`available`] is false): its types are built but not read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use super::grid::{place_rows, Grid, Layout as GridLayout, BLOCK};
use super::im2col::Geometry;
use super::par::{for_each_chunk, for_each_range, SharedOut};
use super::scratch::Scratch;

/// Which f32 kernel [`super::fconv::PanelConv`] runs: `tract` (tract's matrix product, and convs
/// tract's direct spatial kernel suits stay with it), `avx2` (this module's AVX2 kernels even where
/// the CPU has AVX-512) or, unset or `direct`, this module's widest kernels the CPU runs (AVX-512,
/// else AVX2 and FMA). For A/B runs and tests; read when a plan is made.
pub const F32_KERNEL_ENV: &str = "LOOKOUT_F32_KERNEL";

/// Output channels per tile: six (12 accumulators, two loads and a broadcast fill 15 of the 16
/// ymm registers; four channels ran nanodet-g-int8-qdq's float convs 13 % slower), and a tile or
/// two of four where the count is not a multiple of six.
pub(super) const CT: usize = 6;
pub(super) const CT4: usize = 4;
/// Output columns per kernel step (two 8-float vectors).
const COLS: usize = 16;

/// The activation a kernel applies in its store, after the bias, while the sums are in registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Act {
    /// None.
    Linear,
    /// tract's LeakyRelu of this slope (a Relu, tract's `max(x, 0)`, at slope 0).
    Leaky(f32),
    /// `x·sigmoid(x)`, tract's `Silu` (its declutter makes it of `x * Sigmoid(x)`): YOLOX-Nano
    /// follows 104 of its convs with one. On AVX-512 `x / (1 + e^−x)` with [`super::vmath::exp512`];
    /// the AVX2 kernels (never planned with it: [`Act::fuses`]) take it element by element.
    Silu,
}

impl Act {
    /// Whether kernels on `isa` fuse this activation.
    pub(super) fn fuses(self, isa: Isa) -> bool {
        !matches!(self, Act::Silu) || isa == Isa::Avx512
    }
}

/// Which instruction set the kernels run on, chosen when a plan is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX2 and FMA: 8-float vectors (`avx2.rs`).
    Avx2,
    /// AVX-512F: 16-float vectors, 32 registers (`avx512.rs`); the same sums in the same order,
    /// so the same bits as [`Isa::Avx2`].
    Avx512,
}

impl Isa {
    /// The kernels this CPU runs (none off x86-64), narrowest first.
    pub(super) fn all() -> Vec<Isa> {
        [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.runs())
            .collect()
    }

    /// Whether this CPU runs the kernels.
    pub(super) fn runs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            match self {
                Isa::Avx2 => avx2,
                Isa::Avx512 => avx2 && has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether the direct kernel takes a conv of `k` taps at `stride` (else tract's product).
    /// The kernel reads every tap of an output row per channel tile. On AVX2, past 288 taps
    /// (576 at stride 1) tract's AVX2 product was faster (Zen 3, nanodet-g: 128→128 at 52x52,
    /// 1152 taps, 14.5 ms direct, 11.8 ms tract's; 64→64 at stride 2, 576 taps, 5.8 vs 5.0). On
    /// AVX-512 it beat tract's AVX-512 product on every conv of nanodet-g (Zen 5, 2026-12-07, per
    /// node at 1 thread: 64→64 at stride 2, 1.62 vs 2.76 ms; 128→128 at 52x52, 4.04 vs 4.39;
    /// 256→256 at 13x13, 1.19 vs 1.26).
    pub(super) fn suits(self, k: usize, stride: (usize, usize)) -> bool {
        match self {
            Isa::Avx2 => k <= 288 || (k <= 576 && stride == (1, 1)),
            Isa::Avx512 => true,
        }
    }

    /// Columns of the kernels' widest step for a six-channel tile: a [`pointwise`] block is no
    /// narrower, even where it then spills from the first-level cache. With 16-column blocks
    /// (528 input channels) the AVX-512 kernel ran one vector per step, 6 FMA chains:
    /// CenterNet's 528→88 1x1 conv (32x32) took 0.97 ms, 0.42 with 64 (Zen 5, 1 thread).
    fn widest_step(self) -> usize {
        match self {
            Isa::Avx2 => COLS,
            Isa::Avx512 => 4 * COLS,
        }
    }

    /// How many output rows of `out_w` columns of a tile of `width` channels the kernels take in
    /// one step (AVX-512 takes several short rows at once: `avx512.rs`).
    fn rows_per_step(self, out_w: usize, width: usize) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::rows_per_step(out_w, width),
            _ => {
                // Off x86 no kernel runs (`Isa::all` is empty): the sizes are not read.
                let _ = (out_w, width);
                1
            }
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The kernels plans made now use: the widest this CPU runs, unless [`F32_KERNEL_ENV`] says
/// `tract` (none) or `avx2`; `None` off x86-64.
pub(super) fn chosen() -> Option<Isa> {
    let all = Isa::all();
    match std::env::var(F32_KERNEL_ENV).as_deref() {
        Ok("tract") => None,
        Ok("avx2") => all.first().copied(),
        _ => all.last().copied(),
    }
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
    isa: Isa,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Tile {
    /// First channel.
    pub c0: usize,
    /// Channels the kernel computes (six or four).
    pub width: usize,
    /// Where its weights start in the packed weights (and its biases, divided by `k`).
    pub at: usize,
}

/// `c_out` channels in tiles of six, then of four for the rest (no channel computed in vain
/// when `c_out` is even), `k` weights per channel; and the packed weights' length.
pub(super) fn tiles(c_out: usize, k: usize) -> (Vec<Tile>, usize) {
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
    (tiles, at)
}

impl Weights {
    /// From `kernel` as `[c_out][k]` (OIHW flattened) and one bias per channel, for `isa`'s
    /// kernels.
    pub(super) fn pack(kernel: &[f32], bias: &[f32], c_out: usize, k: usize, isa: Isa) -> Weights {
        let (tiles, at) = tiles(c_out, k);
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
            isa,
        }
    }
}

impl Weights {
    /// The instruction set the weights were packed for.
    pub(super) fn isa(&self) -> Isa {
        self.isa
    }

    /// `out_w` outputs of tile `t`'s channels (of those below `c_out`) in each of `rows`
    /// consecutive output rows, from `x` (the first row's reads; the next rows' `rs` floats
    /// further each), one tap per offset of `taps`: the step [`conv`] and [`pointwise`] share, on
    /// the kernel for six-channel tiles or the one for four, of the weights' instruction set.
    /// `rows` is at most [`Isa::rows_per_step`]. Output channels are `n` floats apart and
    /// columns `ps` apart: `ps` is 1 but for a 1x1 conv writing channels last (AVX-512 only).
    ///
    /// # Safety
    /// The CPU runs the weights' [`Isa`]; `x + r·rs + tap + 16·⌈out_w / 16⌉` readable for every
    /// row and tap; `out + j·n + (r·out_w + i)·ps` writable for each of the tile's channels `j`
    /// and `i < out_w`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows(
        &self,
        t: Tile,
        (x, rs, rows): (*const f32, usize, usize),
        taps: &[usize],
        act: Act,
        out_w: usize,
        out: *mut f32,
        (n, ps): (usize, usize),
    ) {
        let channels = t.width.min(self.c_out - t.c0);
        let (wt, bias) = (
            &self.w[t.at..][..t.width * self.k],
            &self.bias[t.at / self.k..][..t.width],
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise; the weights and biases are the tile's.
        unsafe {
            match (self.isa, t.width == CT) {
                (Isa::Avx2, six) => {
                    assert_eq!(ps, 1, "the AVX2 kernels write channels first");
                    for r in 0..rows {
                        let (x, out) = (x.add(r * rs), out.add(r * out_w));
                        if six {
                            avx2::row6(x, taps, wt, bias, act, out_w, out, n, channels)
                        } else {
                            avx2::row4(x, taps, wt, bias, act, out_w, out, n, channels)
                        }
                    }
                }
                (Isa::Avx512, true) => avx512::rows::<CT>(
                    x,
                    rs,
                    rows,
                    taps,
                    wt,
                    bias,
                    act,
                    out_w,
                    out,
                    (n, ps),
                    channels,
                ),
                (Isa::Avx512, false) => avx512::rows::<CT4>(
                    x,
                    rs,
                    rows,
                    taps,
                    wt,
                    bias,
                    act,
                    out_w,
                    out,
                    (n, ps),
                    channels,
                ),
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (
            x, rs, rows, taps, wt, bias, act, out_w, out, n, ps, channels,
        );
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
                false,
            )
        },
    );
}

/// Phase `phase` of one channel `src` (`[in_h, in_w]`) into `dst` (`hp × wq`): the input's rows
/// and, unless `dst`'s padding is already zero (`zeroed`: a scratch refilled channel after
/// channel, whose input places are the same each time), the pad rows and columns.
fn fill_plane(
    g: &Geometry,
    lay: &Layout,
    src: &[f32],
    phase: usize,
    dst: &mut [f32],
    zeroed: bool,
) {
    let top = g.pad.0.min(lay.hp);
    let rows = g.in_h.min(lay.hp - top);
    if !zeroed {
        dst[..top * lay.wq].fill(0.0);
        dst[(top + rows) * lay.wq..].fill(0.0);
    }
    place_rows(
        (src, g.in_w, g.in_w),
        (&mut dst[top * lay.wq..], lay.wq),
        rows,
        (g.pad.1, phase, lay.sw),
        (!zeroed).then_some(0.0),
    );
}

/// The conv of `x` (`[1, c_in, in_h, in_w]`, flattened) into `out` (`[c_out][out_h·out_w]`, every
/// element written), plus the bias, through the activation `act`.
pub(super) fn conv(g: &Geometry, w: &Weights, act: Act, x: &[f32], out: &mut [f32]) {
    let n = g.n();
    assert!(
        w.isa.runs()
            && w.k == g.k()
            && w.c_out == g.c_out
            && x.len() >= g.c_in * g.in_h * g.in_w
            && out.len() == g.c_out * n
    );
    if w.isa == Isa::Avx512 {
        return conv_grid(g, w, act, x, out);
    }
    let lay = Layout::of(g);
    let mut planes = Scratch::<f32>::stale(lay.len(g));
    fill(g, &lay, x, &mut planes);
    lay.assert_reads_within(g, planes.len());
    let tiles = w.tiles.len();
    // A unit of work is one output row of one tile (the AVX2 kernels take a row per step).
    let dst = SharedOut::new(out);
    for_each_range(
        g.out_h * tiles,
        || (),
        |units, _| {
            for u in units {
                let (oy, t) = (u / tiles, w.tiles[u % tiles]);
                let x = planes[lay.row(g, oy)..].as_ptr();
                let out = dst.at(t.c0 * n + oy * g.out_w);
                // SAFETY: the CPU runs the kernel (asserted); reads within `planes` (asserted
                // above); writes the tile's channels of row `oy`, which no other unit writes.
                unsafe { w.rows(t, (x, 0, 1), &lay.taps, act, g.out_w, out, (n, 1)) };
            }
        },
    );
}

/// [`conv`] on AVX-512, over the grid of [`super::grid`]: vectors of 16 consecutive positions
/// across output rows (a 52-column map computes 54 lanes per row, not 64), at every stride from
/// row- and column-phase planes. Work is shared out by (grid block, channel tile).
fn conv_grid(g: &Geometry, w: &Weights, act: Act, x: &[f32], out: &mut [f32]) {
    let n = g.n();
    let lay = GridLayout::of(g, g.c_in);
    let mut planes = Scratch::<f32>::stale(lay.len);
    fill_grid(g, &lay, x, &mut planes);
    let end = lay.end(g);
    let dst = SharedOut::new(out);
    let tiles = w.tiles.len();
    for_each_range(
        end.div_ceil(BLOCK) * tiles,
        || (),
        |units, _| {
            for u in units {
                let (f0, t) = (u / tiles * BLOCK, w.tiles[u % tiles]);
                let channels = t.width.min(w.c_out - t.c0);
                let wb = (
                    &w.w[t.at..][..t.width * w.k],
                    &w.bias[t.at / w.k.max(1)..][..t.width],
                    act,
                );
                let grid = Grid {
                    wq: lay.wq,
                    out_w: g.out_w,
                    end: end.min(f0 + BLOCK),
                };
                let (x, out) = (planes.as_ptr(), (dst.at(t.c0 * n), n));
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU runs AVX-512 (the weights' Isa, asserted by `conv`); reads
                // within `planes` (`GridLayout::of` asserts it); writes the tile's channels of
                // the outputs of grid positions `f0 .. f0 + BLOCK`, which no other unit writes.
                unsafe {
                    if t.width == CT {
                        avx512::grid_run::<CT>(x, (f0, grid), &lay.taps, wb, out, channels)
                    } else {
                        avx512::grid_run::<CT4>(x, (f0, grid), &lay.taps, wb, out, channels)
                    }
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (x, out, wb, channels, grid);
            }
        },
    );
}

/// `x` (`[c_in, in_h, in_w]`) into the planes of `lay`, a channel (all its phases) per task:
/// zero where the padding is.
fn fill_grid(g: &Geometry, lay: &GridLayout, x: &[f32], planes: &mut [f32]) {
    let hw = g.in_h * g.in_w;
    let (planes, slack) = planes.split_at_mut(g.c_in * lay.channel());
    slack.fill(0.0);
    for_each_chunk(
        planes,
        lay.channel(),
        || (),
        |c, dst, _| {
            for p in 0..lay.sh {
                // Plane rows `i` of row phase `p` hold padded rows `i·sh + p`: input rows
                // `y0, y0 + sh, …` from plane row `i0` on, `rows` of them; the rest is padding.
                let i0 = g.pad.0.saturating_sub(p).div_ceil(lay.sh).min(lay.hq);
                let y0 = i0 * lay.sh + p - g.pad.0.min(i0 * lay.sh + p);
                let rows = g.in_h.saturating_sub(y0).div_ceil(lay.sh).min(lay.hq - i0);
                for phx in 0..lay.sw {
                    let plane = &mut dst[lay.row(p, phx)..][..lay.hq * lay.wq];
                    plane[..i0 * lay.wq].fill(0.0);
                    plane[(i0 + rows) * lay.wq..].fill(0.0);
                    place_rows(
                        (
                            &x[(c * hw + y0 * g.in_w).min((c + 1) * hw)..(c + 1) * hw],
                            g.in_w,
                            lay.sh * g.in_w,
                        ),
                        (&mut plane[i0 * lay.wq..], lay.wq),
                        rows,
                        (g.pad.1, phx, lay.sw),
                        Some(0.0),
                    );
                }
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
///
/// With `channels_last` the output is `[n][c_out]` instead (a 1x1 conv whose output a model keeps
/// channels-last: CenterNet's heads); AVX-512 only, where a column's values are stored one by one.
pub(super) fn pointwise(
    g: &Geometry,
    w: &Weights,
    act: Act,
    x: &[f32],
    out: &mut [f32],
    channels_last: bool,
) {
    let (n, k) = (g.n(), g.c_in);
    assert!(
        w.isa.runs()
            && (!channels_last || w.isa == Isa::Avx512)
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
    let block =
        (POINTWISE_BLOCK_BYTES / (4 * k.max(1))).clamp(w.isa.widest_step(), 256) / COLS * COLS;
    let main = n16.div_ceil(block);
    let blocks = main + usize::from(n16 < n);
    let taps: Vec<usize> = (0..k).map(|c| c * n).collect();
    let tail_taps: Vec<usize> = (0..k).map(|c| c * COLS).collect();
    let tiles = w.tiles.len();
    let dst = SharedOut::new(out);
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
                let (out, strides) = if channels_last {
                    (dst.at(p0 * g.c_out + t.c0), (1, g.c_out))
                } else {
                    (dst.at(t.c0 * n + p0), (n, 1))
                };
                // SAFETY: the CPU runs the kernel (asserted). In place, a block's 16-column steps
                // end at `n16`, so channel c's reads end before `c·n + n16 ≤ k·n`; the tail's patch
                // holds 16 floats per channel. Writes the tile's channels of positions
                // `p0 .. p0 + cols`, which no other unit writes.
                unsafe { w.rows(t, (xp, 0, 1), taps, act, cols, out, strides) };
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
    isa: Isa,
}

impl DwWeights {
    /// From `kernel` as `[c][1][kh][kw]` flattened and one bias per channel, for `isa`'s kernel.
    pub(super) fn new(kernel: &[f32], bias: &[f32], c: usize, taps: usize, isa: Isa) -> DwWeights {
        DwWeights {
            w: kernel[..c * taps].to_vec(),
            bias: bias[..c].to_vec(),
            c,
            taps,
            isa,
        }
    }

    /// The instruction set its kernel runs on.
    pub(super) fn isa(&self) -> Isa {
        self.isa
    }
}

/// The depthwise conv of `x` (`[1, c, in_h, in_w]`, flattened; group = c) into `out`
/// (`[c][out_h·out_w]`, every element written), plus the bias, through the activation
/// `act`. Each task takes whole channels: it copies one channel's padded (phase-split) planes
/// into a scratch of its own, which stays in the second-level cache while every output row of
/// that channel reads it, so the input is read from memory once.
pub(super) fn depthwise(g: &Geometry, w: &DwWeights, act: Act, x: &[f32], out: &mut [f32]) {
    let n = g.n();
    assert!(
        w.isa.runs()
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
    // A task's scratch is zeroed once; each channel then writes only the input's places in it,
    // the same for every channel, so the padding stays zero.
    let zeroed = || {
        let mut planes = Scratch::<f32>::stale(lay.len(&g1));
        planes.fill(0.0);
        planes
    };
    for_each_chunk(out, n, zeroed, |c, out, planes| {
        let src = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for (phase, dst) in planes.chunks_exact_mut(lay.hp * lay.wq).enumerate() {
            fill_plane(&g1, &lay, src, phase, dst, true);
        }
        let (wc, bias) = (&w.w[c * w.taps..][..w.taps], [w.bias[c]]);
        let per = w.isa.rows_per_step(g.out_w, 1);
        for (i, rows) in out.chunks_mut(per * g.out_w).enumerate() {
            let oy = i * per;
            let x = planes[lay.row(&g1, oy)..].as_ptr();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU runs the weights' kernel (asserted); reads within `planes`
            // (asserted above), writes `rows` (whole output rows).
            unsafe {
                match w.isa {
                    Isa::Avx2 => avx2::dw_row(x, &lay.taps, wc, bias[0], act, rows),
                    Isa::Avx512 => avx512::rows::<1>(
                        x,
                        lay.row(&g1, 1),
                        rows.len() / g.out_w,
                        &lay.taps,
                        wc,
                        &bias,
                        act,
                        g.out_w,
                        rows.as_mut_ptr(),
                        (0, 1),
                        1,
                    ),
                }
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (x, rows, act, wc, bias);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testvals::values;

    /// A 3x3 conv (stride `s`, pad 1) of `c_in → c_out` channels on an `h × w` input.
    fn geometry(c_in: usize, c_out: usize, (h, w): (usize, usize), k: usize, s: usize) -> Geometry {
        let pad = k / 2;
        Geometry {
            c_in,
            c_out,
            in_h: h,
            in_w: w,
            out_h: (h + 2 * pad - k) / s + 1,
            out_w: (w + 2 * pad - k) / s + 1,
            kh: k,
            kw: k,
            stride: (s, s),
            dilation: (1, 1),
            pad: (pad, pad),
            batched: true,
        }
    }

    /// Every instruction set's kernels give the same bits (the same sums in the same order) on
    /// every row width from 1 to 140 columns and 9 or 5 output rows: each tail step, every main
    /// step, short rows taken several at a time (and a last group of fewer), channel tiles of six
    /// and four, depthwise, with and without a LeakyRelu or Relu (and a Silu, to a few ulps). The
    /// products against tract's
    /// plan: `fconv`'s tests.
    #[test]
    fn instruction_sets_agree() {
        let isas = Isa::all();
        if isas.len() < 2 {
            eprintln!("SKIP: this CPU runs {isas:?}: nothing to compare");
            return;
        }
        for w in 1..=140 {
            for (c_in, c_out, k, s) in [(3, 10, 3, 1), (4, 6, 3, 2), (5, 16, 1, 1)] {
                let g = geometry(c_in, c_out, (9, w), k, s);
                let x = values(c_in * g.in_h * g.in_w, w as u64);
                let wt = values(c_out * g.k(), 7);
                let bias = values(c_out, 9);
                for act in [Act::Linear, Act::Leaky(0.0), Act::Leaky(0.1), Act::Silu] {
                    let outs: Vec<(Vec<f32>, Vec<f32>)> = isas
                        .iter()
                        .map(|&isa| {
                            let mut y = vec![f32::NAN; c_out * g.n()];
                            let ws = Weights::pack(&wt, &bias, c_out, g.k(), isa);
                            if k == 1 {
                                pointwise(&g, &ws, act, &x, &mut y, false);
                            } else {
                                conv(&g, &ws, act, &x, &mut y);
                            }
                            let gd = Geometry {
                                c_out: c_in,
                                ..g.clone()
                            };
                            let mut d = vec![f32::NAN; c_in * gd.n()];
                            let dw = DwWeights::new(&wt, &bias, c_in, k * k, isa);
                            depthwise(&gd, &dw, act, &x, &mut d);
                            (y, d)
                        })
                        .collect();
                    // The same bits, but for a Silu: the AVX2 kernels' element-wise `exp`
                    // and AVX-512's `exp512` round differently (a few ulps).
                    let same = |a: &[f32], b: &[f32]| {
                        a.len() == b.len()
                            && a.iter().zip(b).all(|(a, b)| match act {
                                Act::Silu => (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                                _ => a.to_bits() == b.to_bits(),
                            })
                    };
                    for (isa, got) in isas.iter().zip(&outs).skip(1) {
                        assert!(
                            same(&got.0, &outs[0].0),
                            "{isa:?} {c_in}→{c_out} k {k} s {s} width {w} {act:?}"
                        );
                        assert!(
                            same(&got.1, &outs[0].1),
                            "{isa:?} depthwise {c_in} k {k} s {s} width {w} {act:?}"
                        );
                    }
                }
            }
        }
    }
}
