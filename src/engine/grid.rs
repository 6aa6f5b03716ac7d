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
/// row, `pw` pad columns first) into `row`, `pad` where the padding is; `every_other` takes a
/// stride-2 phase (`dst[j] = src[2j]`).
pub(super) fn place<T: Copy>(
    (line, row): (&[T], &mut [T]),
    (pw, phase, sw): (usize, usize, usize),
    pad: T,
    every_other: impl Fn(&[T], &mut [T]),
) {
    // Column j of this phase is input column j·sw + phase − pw: those in the input are lo .. hi.
    let lo = pw.saturating_sub(phase).div_ceil(sw).min(row.len());
    let hi = (line.len() + pw)
        .saturating_sub(phase)
        .div_ceil(sw)
        .clamp(lo, row.len());
    row[..lo].fill(pad);
    row[hi..].fill(pad);
    if hi == lo {
        return;
    }
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
