#!/bin/sh
# The event store at scale (benches/STORE.md): 100 000 items, search latency and store size.
# Debug build on purpose on the shared dev box (no release builds there); on a board, build the
# example with --release and say so next to the figures.
set -eu
cd "$(dirname "$0")/.."
ITEMS="${1:-100000}"
DIR="$(mktemp -d)/store"
cargo run --quiet --example store_bench -- "$ITEMS" "$DIR"
du -sh "$DIR"
echo "CLI end to end (process start + MiniLM load + search):"
for i in 1 2 3; do
  /usr/bin/time -f "%e s, %M KB peak" cargo run --quiet -- search "red car at the gate" --store "$DIR" --limit 3 >/dev/null
done
rm -rf "$(dirname "$DIR")"
