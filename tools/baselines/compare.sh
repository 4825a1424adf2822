#!/usr/bin/env bash
# strek, OpenCV SIFT and OpenCV ORB through the same evaluation code, side by side:
#   bash tools/baselines/compare.sh OUT ROOT... [-- more strek eval flags, e.g. --device cpu --k 1000]
# Writes OUT/images (the exact images evaluated), OUT/sift and OUT/orb (npz features), OUT/eval.json and
# OUT/eval.txt (the tables). Needs opencv-python and numpy; the rotation sweep is 30,45,90,135,180 unless ROTATE
# says otherwise (ROTATE= for none).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n 2,6p "$0"; exit 1; }
out="$1"; shift
roots=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do roots+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
rotate="${ROTATE-30,45,90,135,180}"
sweep=()
[ -n "$rotate" ] && sweep=(--rotate "$rotate")
strek="${STREK:-target/release/strek}"
[ -x "$strek" ] || cargo build --release --quiet
mkdir -p "$out"
"$strek" eval "${roots[@]}" "${sweep[@]}" "$@" --export-images "$out/images" --export-only
for method in sift orb; do
    python3 tools/baselines/opencv_features.py "$out/images" "$out/$method" --method "$method" >/dev/null
done
"$strek" eval "${roots[@]}" "${sweep[@]}" "$@" --engine --features "sift=$out/sift" --features "orb=$out/orb" \
    --json "$out/eval.json" | tee "$out/eval.txt"
