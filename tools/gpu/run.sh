#!/usr/bin/env bash
# The GPU comparison, prepared for a lent GPU machine: strek bench on the GPU through Vulkan (f32, and f16 storage
# where the adapter has SHADER_F16), the same model in
# PyTorch on CUDA (eager and torch.compile) on the same images and sizes, and one table with the ratio.
#
# On the lent machine (no network, no Rust; PyTorch is there), from the repository root:
#   bash tools/gpu/run.sh [OUT]           # OUT defaults to $OUT, else gpu-bench/
# It needs the strek binary built beforehand (STREK=path, default target/release/strek) and, where the machine has
# no Vulkan loader, the loader packages unpacked from .gl/*.deb (see /work/.library/device/README.md: carry
# target/release/strek and .gl). Knobs (environment): SIZES, BATCH, WARMUP, REPS, MODES (eager,compile),
# COMPILE_MODE, PEAK_GFLOPS (FP32 peak of the card, for the achieved share per stage), WEIGHTS.
#
# A software adapter (lavapipe, llvmpipe) is refused: its times are not GPU times.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${1:-${OUT:-gpu-bench}}"
mkdir -p "$OUT_DIR"
STREK="${STREK:-target/release/strek}"
WEIGHTS="${WEIGHTS:-weights/strek.safetensors}"
SIZES="${SIZES:-640x480,1280x720,1920x1080,3840x2160}"
BATCH="${BATCH:-1,8}"
WARMUP="${WARMUP:-3}"
REPS="${REPS:-20}"
MODES="${MODES:-eager,compile}"
COMPILE_MODE="${COMPILE_MODE:-default}"
WORK="$(mktemp -d)"
export PYTHONUNBUFFERED=1

if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export VK_ICD_FILENAMES="$VK_DRIVER_FILES"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
if [ ! -x "$STREK" ]; then
    if command -v cargo >/dev/null; then
        cargo build --release --quiet
    else
        echo "no strek binary at $STREK and no cargo: build it elsewhere and carry it" >&2
        exit 1
    fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT_DIR/nvidia-smi.csv"

echo "== adapters"
"$STREK" --backend vulkan info | tee "$OUT_DIR/strek-info.txt"
if ! grep -q '^chosen: .*(Vulkan, \(DiscreteGpu\|IntegratedGpu\|VirtualGpu\|Other\)' "$OUT_DIR/strek-info.txt"; then
    echo "no hardware Vulkan adapter: refusing to time a software adapter as a GPU (see the output above)" >&2
    exit 2
fi

echo "== strek bench (Vulkan)"
peak=()
[ -n "${PEAK_GFLOPS:-}" ] && peak=(--peak-gflops "$PEAK_GFLOPS")
"$STREK" --device gpu --backend vulkan --weights "$WEIGHTS" bench --sizes "$SIZES" --batch "$BATCH" \
    --warmup "$WARMUP" --reps "$REPS" "${peak[@]}" --json "$OUT_DIR/strek.json" --save-images "$WORK/images" \
    | tee "$OUT_DIR/strek.txt"

f16=()
if grep -q SHADER_F16 "$OUT_DIR/strek-info.txt"; then
    echo "== strek bench (Vulkan, f16 storage)"
    "$STREK" --device gpu --backend vulkan --f16 --weights "$WEIGHTS" bench --sizes "$SIZES" --batch "$BATCH" \
        --warmup "$WARMUP" --reps "$REPS" "${peak[@]}" --json "$OUT_DIR/strek-f16.json" | tee "$OUT_DIR/strek-f16.txt"
    f16=(--f16 "$OUT_DIR/strek-f16.json")
fi

echo "== PyTorch (CUDA): $MODES"
python3 tools/gpu/strek_torch.py bench --weights "$WEIGHTS" --images "$WORK/images" --sizes "$SIZES" \
    --batch "$BATCH" --modes "$MODES" --compile-mode "$COMPILE_MODE" --warmup "$WARMUP" --reps "$REPS" \
    --device cuda --json "$OUT_DIR/torch.json"

echo "== comparison"
python3 tools/gpu/compare.py "$OUT_DIR/strek.json" "$OUT_DIR/torch.json" "${f16[@]}" -o "$OUT_DIR/table.md"
rm -rf "$WORK"
