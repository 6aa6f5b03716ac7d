//! Sharing a loop over tract's thread pool: lookout's own ops (`QConv`, `FastQuantize`) split their
//! work the way tract's kernels do, on the executor tract installs around every run of a plan
//! built with `threads > 1`, and run in order on the calling thread otherwise.

use tract_linalg::multithread::{current_tract_executor, Executor};

/// Threads of the executor the current run has (1 when it runs on the calling thread only).
pub(super) fn threads() -> usize {
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads().max(1),
        _ => 1,
    }
}

/// How many of `count` independent items one task takes when they are shared out over the pool:
/// a few tasks per thread (so that one slow task does not hold the others up), and all of them
/// in one task when the run has one thread. At least 1.
pub(super) fn per_task(count: usize) -> usize {
    let tasks = if threads() > 1 { threads() * 4 } else { 1 };
    count.div_ceil(tasks).max(1)
}

/// Calls `f(i, chunk, scratch)` for every `n`-long chunk `i` of `out` (the last may be shorter): on
/// tract's thread pool when the plan runs with one (`threads > 1`: tract sets it around every
/// run), else in order on this thread. Each worker gets its own scratch from `init`.
pub(super) fn for_each_chunk<T: Send, S>(
    out: &mut [T],
    n: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) {
    use rayon::prelude::*;
    let n = n.max(1);
    if let Executor::MultiThread(pool) = current_tract_executor() {
        if pool.current_num_threads() > 1 && out.len() > n {
            pool.install(|| {
                out.par_chunks_mut(n)
                    .enumerate()
                    .for_each_init(&init, |s, (i, chunk)| f(i, chunk, s))
            });
            return;
        }
    }
    let mut s = init();
    for (i, chunk) in out.chunks_mut(n).enumerate() {
        f(i, chunk, &mut s);
    }
}

/// Calls `f(range, scratch)` for runs of `0 .. count` ([`per_task`] items each) that together
/// cover it once: on tract's thread pool like [`for_each_chunk`], for work whose outputs are not
/// one slice cut in order (a convolution writing a few columns of every channel).
pub(super) fn for_each_range<S>(
    count: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(std::ops::Range<usize>, &mut S) + Sync + Send,
) {
    use rayon::prelude::*;
    let per = per_task(count);
    let runs = count.div_ceil(per);
    let run = |i: usize| i * per..((i + 1) * per).min(count);
    if let Executor::MultiThread(pool) = current_tract_executor() {
        if pool.current_num_threads() > 1 && runs > 1 {
            pool.install(|| {
                (0..runs)
                    .into_par_iter()
                    .for_each_init(&init, |s, i| f(run(i), s))
            });
            return;
        }
    }
    let mut s = init();
    for i in 0..runs {
        f(run(i), &mut s);
    }
}

/// A buffer that the tasks of one [`for_each_range`] or [`for_each_chunk`] call write at once, each
/// only its own elements (a conv's channel tiles and rows, a product's columns): its pointer,
/// shareable over the pool.
pub(super) struct SharedOut<T>(*mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}
// SAFETY: the callers' tasks write disjoint elements (each says which where it writes).
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub(super) fn new(out: &mut [T]) -> SharedOut<T> {
        SharedOut(out.as_mut_ptr())
    }

    /// The buffer from element `off` on (a method, so that closures capture the whole value).
    pub(super) fn at(self, off: usize) -> *mut T {
        self.0.wrapping_add(off)
    }
}
