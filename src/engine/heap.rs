//! The process's heap policy for inference: freed tensors stay in the heap for the next op to
//! reuse, instead of going back to the kernel and being faulted in again, page by page.
//!
//! Why: tract allocates every op's output afresh and frees it when the last reader is done. glibc
//! serves an allocation above its mmap threshold (128 KiB, raised as such blocks are freed, to at
//! most 32 MiB on 64-bit) with a fresh `mmap`, and unmaps it on free; below it, it trims the heap's
//! top whenever 128 KiB or more is free there. Either way the next op's output is new memory: every
//! 4 KiB page of it costs a page fault that zeroes it, and in a virtual machine that fault is a
//! trip through the hypervisor. A vision encoder's attention scores are 50 MB per layer (SmolVLM:
//! 12 heads × 1024 × 1024 f32), over the threshold at every size glibc allows. Measured on
//! SmolVLM's int8 vision encoder (AMD EPYC VM, AVX-512, 1 thread, 2026-12-07, `qmatmul_profile`
//! beside a build): 2651 ms per run with glibc's defaults, 1576 ms with mmap off and trimming off
//! (`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`); onnxruntime, whose
//! arena keeps its buffers, ran the same file in 837 ms. On a quiet machine, one generation per
//! fresh process (`benches/vlm_smolvlm.py`): 1698 / 1731 → 1193 / 1215 ms, peak RSS 620 → 618 MB
//! (benches/GRAPH_REWRITES.md §15). The process keeps what its largest step needed, as
//! onnxruntime's arena does: peak memory is the same, it is only not handed back between frames.
//!
//! One arena for every thread (`M_ARENA_MAX` 1): `lookout run` infers on a pipeline thread, and a
//! thread other than the main one gets an arena of its own, made of 64 MiB heaps that glibc unmaps
//! whenever one falls empty, whatever the trim threshold. CenterNet-int8 under `lookout run` (bundled
//! clip, 120 frames, Zen 5 VM, 2026-12-07) took 1.15 M page faults per run and 50–54 ms of inference
//! per frame, against 35 ms in `lookout bench` (which infers on the main thread); with one arena
//! (`GLIBC_TUNABLES=glibc.malloc.arena_max=1`) 23–25 K faults and 35–38 ms. Small allocations still
//! go through each thread's cache without a lock.
//!
//! Only the binary sets this ([`keep_freed_memory`] at the start of `main`): a library does not
//! change its host's allocator. On a libc other than glibc it does nothing.

/// Set to `1` to keep glibc's defaults (the A/B of this policy).
pub const DEFAULT_HEAP_ENV: &str = "LOOKOUT_DEFAULT_HEAP";

/// Heap kept above this much free memory at its top is still given back (glibc's trim threshold):
/// a process that once needed far more than it does now (a VLM loaded, then dropped) shrinks.
const KEEP_AT_MOST: usize = 1 << 30;

/// Sets the process's allocator to keep freed blocks for reuse (see the module doc). Call once,
/// first thing in `main`, before other threads start. Returns whether the allocator took it (not
/// under [`DEFAULT_HEAP_ENV`]).
pub fn keep_freed_memory() -> bool {
    if super::pass::env_off(DEFAULT_HEAP_ENV) {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets the allocator's parameters; called before other threads exist
        // (documented above), nothing allocates concurrently.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_AT_MOST as libc::c_int) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_policy() {
        // Unset here (the variable is for A/B runs of the binary): mallopt accepts both settings.
        if !super::super::pass::env_off(super::DEFAULT_HEAP_ENV) {
            assert!(super::keep_freed_memory());
        }
    }
}
