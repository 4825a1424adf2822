# Sourced by the scripts in tools/: makes sure wgpu finds an adapter on a machine without a GPU.
if ! compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null && ! compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "no Vulkan driver: installing Mesa's software driver (lavapipe)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
    else
        echo "no Vulkan driver found; install one (Linux without a GPU: apt-get install mesa-vulkan-drivers)" >&2
    fi
fi
# Mesa warns without it; harmless but noisy.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/strek-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
