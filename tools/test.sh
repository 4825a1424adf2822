#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what is missing (Mesa's software Vulkan driver when
# the machine has no Vulkan driver, the Python packages of the training tools), then the Rust and Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh

echo "== adapter"
cargo run --release --quiet -- info

echo "== rust tests"
cargo test --release -- --test-threads 2

echo "== benchmarks, CI-sized (software adapter and CPU: not GPU times)"
cargo run --release --quiet -- bench --device gpu --sizes 96x72 --batch 1,2 --warmup 1 --reps 2
cargo run --release --quiet -- bench --device cpu --sizes 160x120 --batch 1 --warmup 1 --reps 3

echo "== embedding example, on the lean library (renders with wgpu, extracts from the texture on the same device)"
if cargo tree --no-default-features -e normal | grep -E "^.* (clap|indicatif|rusqlite) v"; then
    echo "the library without default features must not depend on clap, indicatif or rusqlite" >&2
    exit 1
fi
cargo run --release --quiet --no-default-features --example embed

echo "== python tests (training tools)"
python3 -m pip install --quiet -r tools/train/requirements.txt
python3 -m pytest -q tools/train/tests

echo "== python package (python/: the PyO3 module, kornia, hloc's features.h5, pycolmap, Ray)"
venv=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet ./python   # a fresh virtualenv gets `import strek` from the repository alone
(cd / && "$venv/bin/python" -c "import numpy, strek; f = strek.Session('cpu').extract(numpy.random.default_rng(0).integers(0, 256, (96, 128), numpy.uint8)); print('fresh virtualenv: strek', strek.__version__, len(f), 'keypoints from a numpy array')")
rm -rf "$venv"
python3 -m pip install --quiet ./python -r python/tests/requirements.txt
python3 -m pytest -q -p no:cacheprovider python/tests

echo "== COLMAP (pycolmap's incremental mapper on a strek database of the TUM frames)"
bash tools/colmap/ci.sh
