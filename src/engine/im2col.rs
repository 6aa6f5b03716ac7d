//! A convolution's input as tract's matrix kernels take it: the geometry of one conv, the input
//! copied once into padded planes (so that every tap of every output position is a plain offset),
//! and im2col written from there straight into tract's packed int8 layout (`PackedI8K4`) for
//! [`super::qconv`]. [`super::fconv`] uses the same geometry and padded planes for f32.

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_core::ops::nn::DataFormat;
use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact};
use tract_linalg::pack::PackedI8K4;

use super::par::{for_each_chunk, for_each_range, per_task};

/// Convolution geometry, all concrete (the rewrite only takes pinned shapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Geometry {
    pub c_in: usize,
    pub c_out: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// Padding before (top, left).
    pub pad: (usize, usize),
    /// The conv's tensors carry a batch axis of 1 (`[1, C, H, W]`, ONNX's NCHW), or none
    /// (`[C, H, W]`: tract's CHW, which its plan picks when a reshape dropped the batch axis, as in
    /// FastestDet's channel shuffles). The memory is the same.
    pub batched: bool,
}

impl Geometry {
    /// The geometry of `conv` on a `[1, C, H, W]` (NCHW) or `[C, H, W]` (CHW) input of `shape`,
    /// checked against the output shape the plan gives it; or why it is not one (another layout,
    /// batch, rank).
    pub(super) fn of(
        conv: &Conv,
        shape: &[usize],
        out_shape: &[usize],
    ) -> Result<Geometry, String> {
        if conv.kernel_fmt != KernelFormat::OIHW {
            return Err(format!("kernel format {:?}", conv.kernel_fmt));
        }
        let ps = &conv.pool_spec;
        let batched = match ps.data_format {
            DataFormat::NCHW => true,
            DataFormat::CHW => false,
            _ => return Err(format!("data format {:?}", ps.data_format)),
        };
        if ps.kernel_shape.len() != 2 {
            return Err(format!("{}-d kernel", ps.kernel_shape.len()));
        }
        let shape = match (batched, shape) {
            (true, [1, chw @ ..]) | (false, chw) if chw.len() == 3 => chw,
            _ => {
                return Err(format!(
                    "input shape {shape:?} (want [1, C, H, W] or [C, H, W])"
                ))
            }
        };
        let computed = ps.computed_padding(&shape[1..]);
        let strides = ps.strides();
        let dilations = ps.dilations();
        let geo = Geometry {
            c_in: shape[0],
            c_out: ps.output_channels,
            in_h: shape[1],
            in_w: shape[2],
            out_h: computed[0].convoluted,
            out_w: computed[1].convoluted,
            kh: ps.kernel_shape[0],
            kw: ps.kernel_shape[1],
            stride: (strides[0], strides[1]),
            dilation: (dilations[0], dilations[1]),
            pad: (computed[0].pad_before, computed[1].pad_before),
            batched,
        };
        if out_shape != geo.out_shape().as_slice() {
            return Err(format!(
                "output shape {out_shape:?} disagrees with the geometry {geo:?}"
            ));
        }
        Ok(geo)
    }

    /// The output's shape: `[1, c_out, out_h, out_w]`, or without the batch axis.
    pub(super) fn out_shape(&self) -> TVec<usize> {
        let chw = [self.c_out, self.out_h, self.out_w];
        if self.batched {
            tvec![1, chw[0], chw[1], chw[2]]
        } else {
            chw.into_iter().collect()
        }
    }
    pub(super) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    pub(super) fn n(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Height and width of the padded planes of [`fill_padded`]: far enough for the last
    /// output's last tap, and for every input row and column.
    pub(super) fn padded_hw(&self) -> (usize, usize) {
        let (sh, sw) = self.stride;
        let (dh, dw) = self.dilation;
        let hp = ((self.out_h - 1) * sh + (self.kh - 1) * dh + 1).max(self.pad.0 + self.in_h);
        let wp = ((self.out_w - 1) * sw + (self.kw - 1) * dw + 1).max(self.pad.1 + self.in_w);
        (hp, wp)
    }
    /// Where output position `pos` starts in a padded plane `wp` wide.
    pub(super) fn base(&self, wp: usize, pos: usize) -> usize {
        (pos / self.out_w) * self.stride.0 * wp + (pos % self.out_w) * self.stride.1
    }
    /// Per im2col row `kk = (c, ky, kx)`: the offset its tap adds in padded planes `hp × wp`.
    pub(super) fn taps(&self, hp: usize, wp: usize) -> Vec<usize> {
        (0..self.k())
            .map(|kk| {
                let (c, tap) = (kk / (self.kh * self.kw), kk % (self.kh * self.kw));
                c * hp * wp
                    + (tap / self.kw) * self.dilation.0 * wp
                    + (tap % self.kw) * self.dilation.1
            })
            .collect()
    }
    /// Output positions `[lo, hi)` along one axis whose input coordinate `o·s − p + t·d` is inside
    /// `[0, len)`.
    pub(super) fn valid_range(
        out: usize,
        len: usize,
        s: usize,
        p: usize,
        t: usize,
        d: usize,
    ) -> (usize, usize) {
        let off = t * d; // input = o*s + off - p
        let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
        // o*s + off - p <= len - 1  <=>  o <= (len - 1 + p - off) / s
        let hi = if len + p <= off {
            0
        } else {
            ((len - 1 + p - off) / s + 1).min(out)
        };
        (lo.min(hi), hi)
    }
}

/// Input byte as the i8 the kernel multiplies: u8 values are shifted by −128 (a bit flip).
#[inline(always)]
fn to_i8(b: u8, signed: bool) -> i8 {
    if signed {
        b as i8
    } else {
        (b ^ 0x80) as i8
    }
}

/// The i8 value that stands for the input zero point (an out-of-image tap).
fn pad_value(signed: bool, x0: i32) -> i8 {
    if signed {
        x0 as i8
    } else {
        (x0 - 128) as i8
    }
}

/// One im2col row, `(c, ky, kx)` = `kk`, for the output positions `p0 .. p0 + row.len()` (row-major
/// `(oy, ox)`): the input value each sees through that tap, or the zero point where it falls
/// outside the image.
fn im2col_row(g: &Geometry, x: &[u8], signed: bool, pad: i8, kk: usize, row: &mut [i8], p0: usize) {
    let (c, tap) = (kk / (g.kh * g.kw), kk % (g.kh * g.kw));
    let (ky, kx) = (tap / g.kw, tap % g.kw);
    let plane = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
    let (sh, sw) = g.stride;
    let (oy_lo, oy_hi) = Geometry::valid_range(g.out_h, g.in_h, sh, g.pad.0, ky, g.dilation.0);
    let (ox_lo, ox_hi) = Geometry::valid_range(g.out_w, g.in_w, sw, g.pad.1, kx, g.dilation.1);
    if oy_lo > 0 || oy_hi < g.out_h || ox_lo > 0 || ox_hi < g.out_w {
        row.fill(pad);
    }
    let p1 = p0 + row.len();
    if ox_lo >= ox_hi || row.is_empty() {
        return;
    }
    for oy in oy_lo.max(p0 / g.out_w)..oy_hi.min((p1 - 1) / g.out_w + 1) {
        let line = oy * g.out_w;
        let (a, b) = ((line + ox_lo).max(p0), (line + ox_hi).min(p1));
        if a >= b {
            continue;
        }
        let ix0 = (a - line) * sw + kx * g.dilation.1 - g.pad.1;
        let iy = oy * sh + ky * g.dilation.0 - g.pad.0;
        let src = &plane[iy * g.in_w..][..g.in_w];
        let dst = &mut row[a - p0..b - p0];
        if sw == 1 {
            for (d, s) in dst.iter_mut().zip(&src[ix0..]) {
                *d = to_i8(*s, signed);
            }
        } else {
            for (d, s) in dst.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                *d = to_i8(*s, signed);
            }
        }
    }
}

/// `[K, N]` i8 matrix, row `(c, ky, kx)`, column `(oy, ox)`, for kernels whose packing has no
/// direct writer here (tract packs it).
pub(super) fn im2col(g: &Geometry, x: &[u8], signed: bool, x0: i32) -> TractResult<Tensor> {
    let (n, k) = (g.n(), g.k());
    let pad = pad_value(signed, x0);
    let mut b = vec![0i8; k * n];
    for (kk, row) in b.chunks_exact_mut(n).enumerate() {
        im2col_row(g, x, signed, pad, kk, row, 0);
    }
    Ok(tract_ndarray::Array2::from_shape_vec((k, n), b)?.into_tensor())
}

/// Writes `x` (`[C, H, W]`) into `dst` as `C` planes of [`Geometry::padded_hw`], each row through
/// `copy` and every other element `pad`: every element of `dst` once. With threads, a few planes
/// per task (the copy ran on one thread between parallel sections, and the others idled).
pub(super) fn fill_padded<T: Copy + Send + Sync>(
    g: &Geometry,
    x: &[T],
    pad: T,
    dst: &mut [T],
    copy: impl Fn(&mut [T], &[T]) + Sync + Send,
) {
    let (hp, wp) = g.padded_hw();
    let (ph, pw) = g.pad;
    let plane = hp * wp;
    let per = per_task(g.c_in);
    for_each_chunk(
        &mut dst[..g.c_in * plane],
        per * plane,
        || (),
        |i, planes, _| {
            for (j, dst) in planes.chunks_exact_mut(plane).enumerate() {
                let c = i * per + j;
                let src = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
                dst[..ph * wp].fill(pad);
                for (line, row) in dst[ph * wp..].chunks_exact_mut(wp).enumerate() {
                    let Some(s) = src.get(line * g.in_w..(line + 1) * g.in_w) else {
                        row.fill(pad);
                        continue;
                    };
                    row[..pw].fill(pad);
                    copy(&mut row[pw..pw + g.in_w], s);
                    row[pw + g.in_w..].fill(pad);
                }
            }
        },
    );
}

/// The input as the kernel multiplies it (u8 flipped to i8), each channel plane surrounded by its
/// padding (the zero-point value), so that every tap of every output position is a plain offset:
/// position `(oy, ox)` starts at `oy·sh·wp + ox·sw`, tap `(c, ky, kx)` adds
/// `c·hp·wp + ky·dh·wp + kx·dw`. 32 bytes of slack at the end let a 16-lane stride-2 load read
/// its 32 bytes from any position's last tap.
struct PaddedInput {
    data: Blob,
    wp: usize,
    /// Per im2col row `kk = (c, ky, kx)`: the offset its tap adds.
    taps: Vec<usize>,
    /// The largest of `taps`, for the bound a panel's SIMD loads are checked against (once per
    /// run here, not once per panel).
    max_tap: usize,
}

impl PaddedInput {
    fn new(g: &Geometry, x: &[u8], signed: bool, pad: i8) -> PaddedInput {
        let (hp, wp) = g.padded_hw();
        // Every byte of the planes is written by `fill_padded`, each once (the slack's value is
        // never used: its bytes only fill lanes that are masked or dropped).
        let mut data = unsafe { Blob::new_for_size_and_align(g.c_in * hp * wp + 32, 16) };
        fill_padded(
            g,
            x,
            pad as u8,
            &mut data.as_bytes_mut()[..g.c_in * hp * wp],
            |d, s| {
                // What `to_i8` does, one loop per case so that each vectorises.
                if signed {
                    d.copy_from_slice(s);
                } else {
                    for (d, s) in d.iter_mut().zip(s) {
                        *d = s ^ 0x80;
                    }
                }
            },
        );
        let taps = g.taps(hp, wp);
        PaddedInput {
            data,
            wp,
            max_tap: taps.iter().copied().max().unwrap_or(0),
            taps,
        }
    }

    /// Where output position `pos` starts.
    fn base(&self, g: &Geometry, pos: usize) -> usize {
        g.base(self.wp, pos)
    }
}

/// im2col written straight into tract's `PackedI8K4` layout (panels of `r` columns; in a panel,
/// element `(k, lane)` at `(k/4)·r·4 + lane·4 + k%4`), from a padded copy of the input
/// ([`PaddedInput`]), panel by panel. Where a 16-column panel lies in one output row at stride
/// 1 or 2 (most panels), each of its rows is one 16-byte load (two for stride 2) and four rows are
/// interleaved in registers; other panels gather byte by byte. Writing plain im2col rows and then
/// interleaving them (the first version) spent more time on im2col than the AMX kernel spent on the
/// product: nanodet-g-int8-qdq's 31 QConv nodes went 16.6 → 11.8 ms at 1 thread, 13.7 → 9.4 ms at 2
/// (release, `lookout bench --profile`, Xeon, 2026-12-06).
pub(super) fn im2col_packed_k4(
    g: &Geometry,
    x: &[u8],
    signed: bool,
    x0: i32,
    format: &PackedI8K4,
) -> Box<dyn MMMInputValue> {
    let (k, n, r) = (g.k(), g.n(), format.r);
    let kp = k.div_ceil(4) * 4;
    let panel_len = kp * r;
    let panels = n.div_ceil(r);
    // tract's AMX kernels load the packed columns in tiles of 64 k (16 rows of r · 4 bytes), past
    // the end of a panel whose k is not a multiple of 64: the last panel's tile can reach past
    // the blob, and that read faulted (SIGSEGV in `avx512amx_mmm_i32_16x16`, nanodet-g-int8 on
    // an AMX Xeon). The rows read there meet the zero k-padding of the weights, so their values do
    // not count; they only have to be readable. tract's own `PackedI8K4::pack_view` allocates no
    // such slack either (an upstream bug, for the products tract packs itself);
    // `TRACT_CPU_ISA=-amx-int8` takes the AMX kernels out of tract's choice.
    let slack = (k.div_ceil(64) * 64 - kp) * r;
    let mut blob =
        unsafe { Blob::new_for_size_and_align(panels * panel_len + slack, format.align) };
    let packed = blob.as_bytes_mut();
    packed[panels * panel_len..].fill(0);
    let xp = PaddedInput::new(g, x, signed, pad_value(signed, x0));
    // Runs of whole panels are independent (each a contiguous part of the blob).
    let per_run = per_task(panels);
    for_each_chunk(
        &mut packed[..panels * panel_len],
        per_run * panel_len,
        || (),
        |i, part: &mut [u8], _| {
            for (j, dst) in part.chunks_exact_mut(panel_len).enumerate() {
                let col0 = (i * per_run + j) * r;
                pack_panel(g, &xp, k, r, col0, (n - col0).min(r), dst);
            }
        },
    );
    Box::new(EagerPackedInput {
        fact: PackedExoticFact {
            format: Box::new(format.clone()),
            mn: n.to_dim(),
            k,
        },
        packed: Arc::new(blob),
        panel_bytes: panel_len,
        mn: n,
    })
}

/// Columns per panel of [`for_each_panel16`].
pub(super) const PANEL: usize = 16;

/// The packed im2col of [`im2col_packed_k4`] with `r` = [`PANEL`], a panel at a time and never
/// whole: `f(col0, lanes, panel)` for every panel (output positions `col0 .. col0 +
/// lanes`; `panel` is k rounded up to 4, times 16 bytes), panels shared out over the pool, each
/// worker packing into its own buffer, which is still in the first-level cache when `f` multiplies
/// it ([`super::i8gemm`]).
pub(super) fn for_each_panel16(
    g: &Geometry,
    x: &[u8],
    signed: bool,
    x0: i32,
    f: impl Fn(usize, usize, &[u8]) + Sync + Send,
) {
    let (k, n) = (g.k(), g.n());
    let panel_len = k.div_ceil(4) * 4 * PANEL;
    let xp = PaddedInput::new(g, x, signed, pad_value(signed, x0));
    for_each_range(
        n.div_ceil(PANEL),
        || vec![0u8; panel_len],
        |panels, buf| {
            for p in panels {
                let col0 = p * PANEL;
                let lanes = (n - col0).min(PANEL);
                pack_panel(g, &xp, k, PANEL, col0, lanes, buf);
                f(col0, lanes, buf);
            }
        },
    );
}

/// One packed panel: output positions `col0 .. col0 + lanes` (`lanes <= r`; the lanes past them
/// are zero, as are the rows past `k`).
fn pack_panel(
    g: &Geometry,
    xp: &PaddedInput,
    k: usize,
    r: usize,
    col0: usize,
    lanes: usize,
    dst: &mut [u8],
) {
    if r == 16 && simd::AVAILABLE {
        if let Some(segs) = Segments::of(g, xp, col0, lanes) {
            let (data, segs, sw) = (xp.data.as_bytes(), &segs.0[..segs.1], g.stride.1);
            // What `gather_interleave16` reads: from each run's offset plus any tap, 16 bytes
            // (32 at stride 2); what it writes: 64 bytes per four taps.
            assert!(
                (sw == 1 || sw == 2)
                    && dst.len() >= xp.taps.len().div_ceil(4) * 64
                    && segs
                        .iter()
                        .all(|(off, _)| off + xp.max_tap + 32 <= data.len())
            );
            // SAFETY: the bounds are checked just above (`max_tap` is the largest of `taps`).
            unsafe { simd::gather_interleave16(data, segs, &xp.taps, sw, dst) };
            return;
        }
    }
    let bases: Vec<usize> = (col0..col0 + lanes).map(|p| xp.base(g, p)).collect();
    for (kb, out) in dst.chunks_exact_mut(4 * r).enumerate() {
        for (lane, o) in out.chunks_exact_mut(4).enumerate() {
            for (j, o) in o.iter_mut().enumerate() {
                let kk = 4 * kb + j;
                *o = match bases.get(lane) {
                    Some(b) if kk < k => xp.data.as_bytes()[b + xp.taps[kk]],
                    _ => 0,
                };
            }
        }
    }
}

/// A 16-lane panel as at most 4 runs of lanes that each lie in one output row, at column stride 1
/// or 2: run `(off, mask)` gives the lanes `mask` selects (0xff bytes) the bytes at
/// `off + tap + lane·stride`. Lanes past `lanes` are in no run, so they stay zero.
struct Segments([(usize, [u8; 16]); 4], usize);

impl Segments {
    fn of(g: &Geometry, xp: &PaddedInput, col0: usize, lanes: usize) -> Option<Segments> {
        let sw = g.stride.1;
        if sw != 1 && sw != 2 {
            return None;
        }
        let mut segs = Segments([(0, [0; 16]); 4], 0);
        let mut l0 = 0;
        while l0 < lanes {
            let ox = (col0 + l0) % g.out_w;
            let len = (g.out_w - ox).min(lanes - l0);
            if segs.1 == segs.0.len() {
                return None;
            }
            // Lane l of the run reads `base + (l - l0)·sw`: the load starts l0·sw earlier (a
            // run that is not the first starts a row, at least one padded row in).
            let off = xp.base(g, col0 + l0).checked_sub(l0 * sw)?;
            let mask = std::array::from_fn(|l| if (l0..l0 + len).contains(&l) { 0xff } else { 0 });
            segs.0[segs.1] = (off, mask);
            segs.1 += 1;
            l0 += len;
        }
        Some(segs)
    }
}

mod simd {
    /// Whether this architecture has [`gather_interleave16`].
    pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

    /// A 16-lane panel (`out`, column by column in groups of four rows): row `kk` is
    /// `taps[kk]`'s bytes of every run in `segs` (see `Segments`), zero past `taps` (k padding).
    ///
    /// # Safety
    /// `sw` is 1 or 2, `out` holds `taps.len().div_ceil(4) * 64` bytes, and every run's offset
    /// plus every tap plus 32 is within `data` (a stride-2 row reads 32 bytes).
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn gather_interleave16(
        data: &[u8],
        segs: &[(usize, [u8; 16])],
        taps: &[usize],
        sw: usize,
        out: &mut [u8],
    ) {
        use std::arch::x86_64::*;
        // SSE2 is part of x86_64; the bounds are the caller's (see Safety).
        unsafe {
            let even = _mm_set1_epi16(0x00ff);
            let load = |p: *const __m128i| -> __m128i {
                if sw == 1 {
                    _mm_loadu_si128(p)
                } else {
                    // The low byte of every 16-bit lane, packed (each 0..=255: no saturation).
                    _mm_packus_epi16(
                        _mm_and_si128(_mm_loadu_si128(p), even),
                        _mm_and_si128(_mm_loadu_si128(p.add(1)), even),
                    )
                }
            };
            let whole = segs.len() == 1 && segs[0].1 == [0xff; 16];
            let row = |kk: usize| -> __m128i {
                let Some(&tap) = taps.get(kk) else {
                    return _mm_setzero_si128();
                };
                if whole {
                    return load(data.as_ptr().add(segs[0].0 + tap) as *const __m128i);
                }
                let mut v = _mm_setzero_si128();
                for (off, mask) in segs {
                    let x = load(data.as_ptr().add(off + tap) as *const __m128i);
                    let m = _mm_loadu_si128(mask.as_ptr() as *const __m128i);
                    v = _mm_or_si128(v, _mm_and_si128(x, m));
                }
                v
            };
            for kb in 0..taps.len().div_ceil(4) {
                let kk = 4 * kb;
                let (a0, a1, a2, a3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
                let t0 = _mm_unpacklo_epi8(a0, a1);
                let t1 = _mm_unpackhi_epi8(a0, a1);
                let t2 = _mm_unpacklo_epi8(a2, a3);
                let t3 = _mm_unpackhi_epi8(a2, a3);
                let o = out.as_mut_ptr().add(64 * kb) as *mut __m128i;
                _mm_storeu_si128(o, _mm_unpacklo_epi16(t0, t2));
                _mm_storeu_si128(o.add(1), _mm_unpackhi_epi16(t0, t2));
                _mm_storeu_si128(o.add(2), _mm_unpacklo_epi16(t1, t3));
                _mm_storeu_si128(o.add(3), _mm_unpackhi_epi16(t1, t3));
            }
        }
    }

    /// See the x86-64 version.
    ///
    /// # Safety
    /// As there.
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn gather_interleave16(
        data: &[u8],
        segs: &[(usize, [u8; 16])],
        taps: &[usize],
        sw: usize,
        out: &mut [u8],
    ) {
        use std::arch::aarch64::*;
        // NEON is part of aarch64; the bounds are the caller's (see Safety); LD2 splits even
        // and odd bytes, ST4 stores four registers interleaved byte by byte.
        unsafe {
            let row = |kk: usize| -> uint8x16_t {
                let Some(&tap) = taps.get(kk) else {
                    return vdupq_n_u8(0);
                };
                let mut v = vdupq_n_u8(0);
                for (off, mask) in segs {
                    let p = data.as_ptr().add(off + tap);
                    let x = if sw == 1 { vld1q_u8(p) } else { vld2q_u8(p).0 };
                    v = vorrq_u8(v, vandq_u8(x, vld1q_u8(mask.as_ptr())));
                }
                v
            };
            for kb in 0..taps.len().div_ceil(4) {
                let kk = 4 * kb;
                let v = uint8x16x4_t(row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
                vst4q_u8(out.as_mut_ptr().add(64 * kb), v);
            }
        }
    }

    /// Never called ([`AVAILABLE`] is false here).
    ///
    /// # Safety
    /// None needed.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn gather_interleave16(
        _: &[u8],
        _: &[(usize, [u8; 16])],
        _: &[usize],
        _: usize,
        _: &mut [u8],
    ) {
        unreachable!("no SIMD panel gather on this architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::mmm::MMMInputFormat;

    /// The valid output range of one tap matches a brute-force scan, for every small case.
    #[test]
    fn valid_range_matches_brute_force() {
        for len in 1usize..9 {
            for s in 1..4 {
                for p in 0..4 {
                    for d in 1..3 {
                        for t in 0..4 {
                            let out = (len + 2 * p).saturating_sub(d * t) / s + 1;
                            let inside: Vec<usize> = (0..out)
                                .filter(|o| {
                                    let i = (o * s + t * d) as isize - p as isize;
                                    i >= 0 && (i as usize) < len
                                })
                                .collect();
                            let (lo, hi) = Geometry::valid_range(out, len, s, p, t, d);
                            let got: Vec<usize> = (lo..hi).collect();
                            assert_eq!(got, inside, "len {len} s {s} p {p} d {d} t {t}");
                        }
                    }
                }
            }
        }
    }

    /// A row written for a range of output positions (as each thread's run of panels does) is
    /// that range of the whole row, for every tap and every range boundary.
    #[test]
    fn im2col_row_range_is_a_slice_of_the_whole_row() {
        let geo = Geometry {
            c_in: 2,
            c_out: 1,
            in_h: 7,
            in_w: 9,
            out_h: 4,
            out_w: 9,
            kh: 3,
            kw: 3,
            stride: (2, 1),
            dilation: (1, 1),
            pad: (1, 1),
            batched: true,
        };
        let x: Vec<u8> = (0..2 * 7 * 9).map(|i| (i * 37 % 251) as u8).collect();
        let n = geo.n();
        for kk in 0..geo.k() {
            let mut whole = vec![0i8; n];
            im2col_row(&geo, &x, false, -3, kk, &mut whole, 0);
            for p0 in 0..n {
                for p1 in p0..=n {
                    let mut part = vec![0i8; p1 - p0];
                    im2col_row(&geo, &x, false, -3, kk, &mut part, p0);
                    assert_eq!(part, whole[p0..p1], "kk {kk} positions {p0}..{p1}");
                }
            }
        }
    }

    /// The direct PackedI8K4 writer produces the bytes tract's own packer does, for panel widths
    /// 8 and 16 (16: the SIMD rows of one output line at stride 1 and 2, and the byte gathers
    /// where a panel spans two lines), k not a multiple of 4, a partial last panel, dilation, an
    /// implicit padding after the image, 1x1, and lines shorter than a panel (4 runs of lanes, and
    /// 6: the byte gathers); and zeroed slack behind them for the AMX
    /// kernels' 64-k tiles (see `im2col_packed_k4`); at 1 and 3 threads.
    #[test]
    fn packed_im2col_equals_tract_packing() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        #[rustfmt::skip]
        let cases = [
            // c_in, in_h, in_w, out_h, out_w, kh, kw, stride, dilation, pad
            (3, 7, 9, 4, 9, 3, 1, (2, 1), (1, 1), (1, 0)),
            (3, 20, 37, 20, 37, 3, 3, (1, 1), (1, 1), (1, 1)),
            (2, 21, 40, 11, 20, 3, 3, (2, 2), (1, 1), (1, 1)),
            (5, 16, 32, 16, 32, 1, 1, (1, 1), (1, 1), (0, 0)),
            (2, 19, 35, 19, 35, 3, 3, (1, 1), (2, 2), (2, 2)),
            (3, 18, 34, 9, 17, 3, 3, (2, 2), (1, 1), (0, 0)),
            (2, 8, 8, 4, 4, 3, 3, (2, 2), (1, 1), (1, 1)),
            (2, 6, 6, 3, 3, 3, 3, (2, 2), (1, 1), (1, 1)),
        ];
        for (c_in, in_h, in_w, out_h, out_w, kh, kw, stride, dilation, pad) in cases {
            let geo = Geometry {
                c_in,
                c_out: 1,
                in_h,
                in_w,
                out_h,
                out_w,
                kh,
                kw,
                stride,
                dilation,
                pad,
                batched: true,
            };
            let x: Vec<u8> = (0..c_in * in_h * in_w)
                .map(|i| (i * 37 % 251) as u8)
                .collect();
            let (k, kp) = (geo.k(), geo.k().div_ceil(4) * 4);
            for signed in [false, true] {
                let plain = im2col(&geo, &x, signed, 17).unwrap();
                for r in [8, 16] {
                    let format = PackedI8K4::new(r);
                    let ours = im2col_packed_k4(&geo, &x, signed, 17, &format);
                    // Split over three threads (planes of the padded copy, runs of panels):
                    // the same bytes.
                    let split = multithread_tract_scope(Executor::multithread(3), || {
                        im2col_packed_k4(&geo, &x, signed, 17, &format)
                    });
                    let theirs = format.prepare_one(&plain, 0, 1).unwrap();
                    assert_eq!(
                        ours.downcast_ref::<EagerPackedInput>()
                            .unwrap()
                            .packed
                            .as_bytes(),
                        split
                            .downcast_ref::<EagerPackedInput>()
                            .unwrap()
                            .packed
                            .as_bytes(),
                        "{geo:?} r {r} signed {signed}: 1 vs 3 threads"
                    );
                    let (ours, theirs) = (
                        ours.downcast_ref::<EagerPackedInput>().unwrap(),
                        theirs.downcast_ref::<EagerPackedInput>().unwrap(),
                    );
                    assert_eq!(ours.panel_bytes, theirs.panel_bytes);
                    let (ours, theirs) = (ours.packed.as_bytes(), theirs.packed.as_bytes());
                    assert_eq!(
                        &ours[..theirs.len()],
                        theirs,
                        "{geo:?} r {r} signed {signed}"
                    );
                    // Then zeros, as far as an AMX tile of 64 k from the last panel reaches.
                    assert_eq!(ours.len() - theirs.len(), (k.div_ceil(64) * 64 - kp) * r);
                    assert!(ours[theirs.len()..].iter().all(|&b| b == 0));
                }
            }
        }
    }
}
