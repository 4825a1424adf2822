#!/usr/bin/env bash
# The demo from a fresh clone: a generated scene and its rotated copy, matched; writes strek-demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
cargo run --release --quiet -- demo "$@"
