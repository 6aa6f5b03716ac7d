//! Names the cargo profile a binary was built with (`debug` or `release`, cargo's `PROFILE`) for the
//! bench reports that print it: `cfg!(debug_assertions)` no longer tells them apart, since the dev
//! profile turns debug assertions off (Cargo.toml says why).
fn main() {
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=LOOKOUT_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-changed=build.rs");
}
