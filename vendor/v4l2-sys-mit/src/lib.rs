//! Raw V4L2 bindings, as upstream v4l2-sys-mit 0.3.0 generates them with bindgen 0.65.1 from
//! `<linux/videodev2.h>`, but generated once per target architecture and committed (see
//! `regenerate.sh`), so no build step needs libclang.
#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
include!("bindings/x86_64.rs");

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
include!("bindings/aarch64.rs");

#[cfg(all(target_os = "linux", target_arch = "arm"))]
include!("bindings/arm.rs");

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")
)))]
compile_error!(
    "v4l2-sys-mit (lookout's vendored copy) has bindings for Linux x86_64, aarch64 and arm only: \
     add this target to vendor/v4l2-sys-mit/regenerate.sh and run it"
);
