#!/usr/bin/env bash
# The structure-from-motion front end side by side, in one run on one machine: `strek colmap` (CPU path) and
# COLMAP's own SIFT through pycolmap on the TUM frames (exhaustive pairs, known pinhole camera), each database then
# mapped by pycolmap's incremental mapper. Prints each tool's seconds per stage and its reconstruction.
#   bash tools/colmap/frontend.sh [FRAMES]          (about two minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
frames=${1:-../shared/data/eval/sequences/tum-fr3-office}
camera=535.4,539.2,320.1,247.6
python3 -m pip install --quiet -r tools/colmap/requirements.txt
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== strek (CPU path)"
target/release/strek --device cpu colmap "$frames" -o "$work/strek.db" --camera "pinhole:$camera"
python3 tools/colmap/reconstruct.py "$work/strek.db" "$frames" --label strek
echo "== COLMAP SIFT (pycolmap, CPU)"
python3 tools/colmap/sift.py "$frames" --camera "pinhole:$camera" --out "$work/sift"
