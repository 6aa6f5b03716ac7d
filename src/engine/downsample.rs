//! `StridedCopy`: tract's `Downsample` (every `stride`-th element along one axis, from `modulo`)
//! for 4-byte elements, as runs of contiguous copies.
//!
//! Why: tract 0.23.9 evaluates a `Downsample` as an ndarray strided view made owned, one element
//! at a time. YOLOX-Nano's Focus stem (`x[..., ::2, ::2]` and its three siblings: two row and four
//! column downsamples of the 416x416 image) took 0.59 ms of its 8.2 ms per image in them at 1
//! thread (Zen 5, 2026-12-07, `lookout bench --profile`); onnxruntime's SpaceToDepth and Gather
//! for the same took ~0.5. Here a downsample along any axis but the last copies whole inner runs
//! (`copy_from_slice`), and one along the last axis at stride 2 is [`super::grid::every_other`]
//! (16 elements per AVX-512 permute). The values are copied, not computed: the output is the
//! same bytes as tract's. Skipped under `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_STRIDED_COPY=1`.

use tract_core::internal::*;
use tract_core::ops::Downsample;

use super::grid::every_other;
use super::par::for_each_chunk;
use super::pass::{env_off, swap_ops, GraphPass};

/// Set to `1` to leave downsamples to tract.
pub const NO_STRIDED_COPY_ENV: &str = "LOOKOUT_NO_STRIDED_COPY";

/// Output elements per task when a copy is split over the pool (a few in the tests, so that
/// their small tensors are split too).
const CHUNK: usize = if cfg!(test) { 24 } else { 1 << 16 };

/// `y[o, i, r] = x[o, modulo + i·stride, r]` over `axis` (`o` the axes before it, `r` those after),
/// for a tensor of 4-byte elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StridedCopy {
    axis: usize,
    stride: usize,
    modulo: usize,
}

impl Op for StridedCopy {
    fn name(&self) -> StaticName {
        "StridedCopy".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {} every {} from {}",
            self.axis, self.stride, self.modulo
        )])
    }

    op_as_typed_op!();
}

impl StridedCopy {
    /// Elements kept along an axis of `len`.
    fn kept(&self, len: usize) -> usize {
        len.saturating_sub(self.modulo).div_ceil(self.stride)
    }

    /// The copy of `x` (shape `shape`) into `y`, elements as `u32` words.
    fn copy(&self, shape: &[usize], x: &[u32], y: &mut [u32]) {
        let len = shape[self.axis];
        let inner: usize = shape[self.axis + 1..].iter().product();
        let kept = self.kept(len);
        let (x_block, y_block) = (len * inner, kept * inner);
        if y_block == 0 {
            return;
        }
        if inner == 1 {
            // Along the last axis: a strided gather per row of the input.
            for_each_chunk(
                y,
                rows_per(y_block) * y_block,
                || (),
                |i, out, _| {
                    let first = i * rows_per(y_block);
                    for (r, row) in out.chunks_exact_mut(y_block).enumerate() {
                        let src =
                            &x[(first + r) * x_block + self.modulo..(first + r + 1) * x_block];
                        if self.stride == 2 {
                            every_other(src, row);
                        } else {
                            for (o, v) in row.iter_mut().zip(src.iter().step_by(self.stride)) {
                                *o = *v;
                            }
                        }
                    }
                },
            );
            return;
        }
        // Along an outer axis: whole runs of `inner` elements.
        for_each_chunk(
            y,
            rows_per(inner) * inner,
            || (),
            |i, out, _| {
                let first = i * rows_per(inner);
                for (r, run) in out.chunks_exact_mut(inner).enumerate() {
                    let (o, k) = ((first + r) / kept, (first + r) % kept);
                    let from = o * x_block + (self.modulo + k * self.stride) * inner;
                    run.copy_from_slice(&x[from..from + inner]);
                }
            },
        );
    }
}

/// Runs of `len` output elements a task takes: about [`CHUNK`] elements, at least one run.
fn rows_per(len: usize) -> usize {
    (CHUNK / len.max(1)).max(1)
}

impl EvalOp for StridedCopy {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let dt = x.datum_type();
        ensure!(
            dt.size_of() == 4 && self.axis < x.rank(),
            "StridedCopy: input {dt:?} of rank {}, planned for 4-byte elements along axis {}",
            x.rank(),
            self.axis
        );
        let mut shape: TVec<usize> = x.shape().into();
        shape[self.axis] = self.kept(shape[self.axis]);
        // SAFETY: every element is written by `copy` (each output run or row once).
        let mut y = unsafe { Tensor::uninitialized_dt(dt, &shape)? };
        if y.len() > 0 {
            let xs = x.try_as_plain_ram()?;
            let mut ys = y.try_as_plain_ram_mut()?;
            let (xb, yb) = (xs.as_bytes(), ys.as_bytes_mut());
            ensure!(
                (xb.as_ptr() as usize).is_multiple_of(4)
                    && (yb.as_ptr() as usize).is_multiple_of(4),
                "StridedCopy: tensor storage not aligned to its 4-byte elements"
            );
            // SAFETY: 4-byte aligned (checked) byte buffers viewed as u32 words.
            let (xw, yw) = unsafe {
                (
                    std::slice::from_raw_parts(xb.as_ptr() as *const u32, xb.len() / 4),
                    std::slice::from_raw_parts_mut(yb.as_mut_ptr() as *mut u32, yb.len() / 4),
                )
            };
            self.copy(x.shape(), xw, yw);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for StridedCopy {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].without_value();
        let len = fact.shape[self.axis].to_usize()?;
        fact.shape.set(self.axis, self.kept(len).into());
        Ok(tvec!(fact))
    }

    as_op!();
}

/// Swaps tract's `Downsample` of a concrete-shaped, 4-byte tensor (positive stride) for
/// [`StridedCopy`].
pub struct StridedCopyPass;

impl GraphPass for StridedCopyPass {
    fn name(&self) -> &'static str {
        "StridedCopy"
    }
    fn replaces(&self) -> &'static str {
        "Downsample"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if !super::fpdet_enabled() || env_off(NO_STRIDED_COPY_ENV) {
            return Ok(0);
        }
        Ok(swap_ops(model, |model, node| {
            let op = node.op_as::<Downsample>()?;
            let fact = model.outlet_fact(*node.inputs.first()?).ok()?;
            let shape = fact.shape.as_concrete()?;
            let stride = usize::try_from(op.stride).ok().filter(|s| *s >= 1)?;
            if fact.datum_type.size_of() != 4
                || op.axis >= shape.len()
                || op.modulo > shape[op.axis]
            {
                return None;
            }
            let new = StridedCopy {
                axis: op.axis,
                stride,
                modulo: op.modulo,
            };
            // The plan's output fact must be what this op declares.
            let out = node.outputs.first()?.fact.shape.as_concrete()?;
            (out[op.axis] == new.kept(shape[op.axis])).then(|| Box::new(new) as Box<dyn TypedOp>)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's `Downsample` evaluated on the same tensor.
    fn tract(x: &Tensor, axis: usize, stride: isize, modulo: usize) -> Tensor {
        Downsample::new(axis, stride, modulo)
            .eval(&EvalContext::out_of_plan(), tvec!(x.clone().into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor()
    }

    /// The same bytes as tract's `Downsample` on every axis of a rank-4 f32 and an i32 tensor,
    /// strides 1 to 3, every modulo (one past the axis too), rows long and short for the
    /// 16-element steps, at 1 and 3 threads.
    #[test]
    fn same_bytes_as_tract() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        for shape in [[1usize, 3, 9, 37], [2, 2, 20, 16], [1, 1, 3, 1]] {
            let len: usize = shape.iter().product();
            let f = Tensor::from_shape(
                &shape,
                &(0..len).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>(),
            )
            .unwrap();
            let n = Tensor::from_shape(
                &shape,
                &(0..len).map(|i| i as i32 * 7 - 100).collect::<Vec<_>>(),
            )
            .unwrap();
            for x in [f, n] {
                for axis in 0..4 {
                    for stride in 1..=3usize {
                        for modulo in 0..=shape[axis] {
                            let want = tract(&x, axis, stride as isize, modulo);
                            let op = StridedCopy {
                                axis,
                                stride,
                                modulo,
                            };
                            for threads in [1, 3] {
                                let pool = Executor::multithread(threads);
                                let got = multithread_tract_scope(pool, || {
                                    op.eval(
                                        &EvalContext::out_of_plan(),
                                        tvec!(x.clone().into_tvalue()),
                                    )
                                })
                                .unwrap()
                                .remove(0)
                                .into_tensor();
                                assert_eq!(got, want, "{shape:?} axis {axis} stride {stride} modulo {modulo} threads {threads}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The pass takes a graph's downsample and the plan computes what tract's plan computes.
    #[test]
    fn pass_swaps_the_downsample() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 3, 8, 10])).unwrap();
        let y = model
            .wire_node("down", Downsample::new(3, 2, 1), &[x])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let input = Tensor::from_shape(
            &[1, 3, 8, 10],
            &(0..240).map(|i| i as f32).collect::<Vec<_>>(),
        )
        .unwrap();
        let want = model
            .clone()
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into_tvalue()))
            .unwrap();
        assert_eq!(StridedCopyPass.run(&mut model).unwrap(), 1);
        assert!(model.nodes().iter().any(|n| n.op_is::<StridedCopy>()));
        let got = model
            .into_runnable()
            .unwrap()
            .run(tvec!(input.into_tvalue()))
            .unwrap();
        assert_eq!(got[0], want[0]);
    }
}
