#!/usr/bin/env bash
# Regenerates src/bindings/<arch>.rs from <linux/videodev2.h> with bindgen 0.65.1 (the version
# upstream v4l2-sys-mit 0.3.0 builds with). Only this script needs libclang; building lookout does
# not. Needs: the kernel headers of each target (Debian: linux-libc-dev, libc6-dev-arm64-cross,
# libc6-dev-armhf-cross) and a libclang. Without a system libclang it takes the one in PyPI's
# `libclang` wheel, in a throw-away venv.
set -euo pipefail
cd "$(dirname "$0")"
work=${TMPDIR:-/tmp}/v4l2-bindgen
mkdir -p "$work"
if [ ! -x "$work/bin/bindgen" ]; then
  cargo install --locked --quiet --root "$work" bindgen-cli@0.65.1
fi
if [ -z "${LIBCLANG_PATH:-}" ] && ! ldconfig -p | grep -q 'libclang\.so'; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q libclang
  LIBCLANG_PATH=$(dirname "$(find "$work/venv" -name 'libclang.so' | head -1)")
  export LIBCLANG_PATH
fi
# clang's own stddef.h and friends: gcc's copies serve, the kernel headers need only a few.
gccinc=$(dirname "$(gcc -print-file-name=include/stddef.h)")
gen() { # arch triple sysroot
  local arch=$1 triple=$2 sysroot=$3
  "$work/bin/bindgen" wrapper.h -o "src/bindings/$arch.rs" -- \
    "--target=$triple" "--sysroot=$sysroot" -isystem "$sysroot/include" \
    -isystem "/usr/include/$triple" -isystem "$gccinc"
  echo "src/bindings/$arch.rs: $(wc -l < "src/bindings/$arch.rs") lines"
}
gen x86_64 x86_64-linux-gnu /usr
gen aarch64 aarch64-linux-gnu /usr/aarch64-linux-gnu
gen arm arm-linux-gnueabihf /usr/arm-linux-gnueabihf
