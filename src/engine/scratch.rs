//! Scratch buffers kept by each thread from one run of a plan to the next.
//!
//! lookout's kernels copy a conv's input into padded planes (megabytes for a stem conv) on every
//! run. Allocated afresh each time, those buffers had glibc give the top of its heap back to the
//! system and take it again a few times per image, and every page taken again is faulted in and
//! zeroed by the kernel: FastestDet (28 convs on lookout's kernels) made ~5.5 `brk` calls per
//! image and ran 2.6 ms slower per image (13.5 vs 10.9 ms) than with tract's kernels, though
//! `lookout bench --profile` timed its convs 1.4 ms faster. A [`Scratch`] takes this thread's
//! buffer of its element type and gives it back when dropped, so a steady run allocates nothing.
//! Memory: per thread and element type, the largest buffer the model's convs asked for.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// An element type with a per-thread pool.
pub(super) trait Elem: Copy + Default + 'static {
    fn pool() -> &'static LocalKey<Cell<Vec<Self>>>;
}

macro_rules! elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn pool() -> &'static LocalKey<Cell<Vec<Self>>> {
                thread_local! {
                    static POOL: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
                }
                &POOL
            }
        }
    )*};
}
elem!(f32, u32);

/// `len` elements of this thread's buffer (a fresh one when another [`Scratch`] of this thread
/// holds it), given back on drop.
pub(super) struct Scratch<T: Elem> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Elem> Scratch<T> {
    /// `len` elements holding whatever an earlier user left (zeros where the buffer grew): for
    /// callers that write every element before reading it.
    pub(super) fn stale(len: usize) -> Scratch<T> {
        let mut buf = T::pool().with(Cell::take);
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        Scratch { buf, len }
    }
}

impl<T: Elem> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Elem> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}

impl<T: Elem> Drop for Scratch<T> {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut self.buf);
        // Keep the larger of this buffer and whatever a nested user gave back meanwhile.
        T::pool().with(|pool| {
            let other = pool.take();
            pool.set(if other.len() > mine.len() {
                other
            } else {
                mine
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_nests() {
        let first = {
            let mut s = Scratch::<f32>::stale(1000);
            s.fill(1.5);
            s.as_ptr()
        };
        // Given back: the same memory, values left as they were.
        let s = Scratch::<f32>::stale(10);
        assert_eq!(s.as_ptr(), first);
        assert_eq!(&s[..], &[1.5; 10]);
        // While `s` holds it, another user gets a buffer of its own.
        let mut t = Scratch::<f32>::stale(2000);
        assert_ne!(t.as_ptr(), first);
        assert!(t.iter().all(|&v| v == 0.0));
        t[1999] = 2.0;
        drop(s);
        drop(t);
        // The larger one is kept.
        let u = Scratch::<f32>::stale(2000);
        assert_eq!(u[1999], 2.0);
        assert_eq!(u.len(), 2000);
    }
}
