# A CUDA toolkit for `--features cuda`, without a GPU or a system install:
# NVIDIA's own CUDA 13.0 packages from the Python registry, unpacked once
# into the kiln cache. Source it; it exports what candle's build reads.
#
#   source scripts/cuda-toolkit.sh          nvcc, headers: enough to compile
#                                           candle's kernels and type-check
#   KILN_CUDA_LINK=1 source scripts/...     also the libraries a binary links
#                                           (cuBLAS, cuRAND, NVRTC, runtime)
#
# A toolkit already on the machine wins: set CUDA_ROOT to it, or have nvcc
# on PATH. Pinned to CUDA 13.0, the version checked here: candle 0.11's
# cudarc (0.19) knows 13.0 to 13.4, not the registry's newest (13.5), and
# the CUDA 12 packages hold no nvcc (only ptxas).
#
# Exports PATH (nvcc), CUDA_ROOT/CUDA_PATH/CUDA_HOME (headers, for candle's
# kernels and cudarc's version probe), and with KILN_CUDA_LINK=1 also
# LIBRARY_PATH and LD_LIBRARY_PATH (a folder of unversioned names for the
# linker, the driver's libcuda from the machine).

kiln_cuda_packages=(
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*"
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*"
)
kiln_cuda_link_packages=(
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*"
)

kiln_cuda_setup() {
    local root
    if [[ -n "${CUDA_ROOT:-}" && -x "$CUDA_ROOT/bin/nvcc" ]]; then
        root="$CUDA_ROOT"
    elif command -v nvcc >/dev/null 2>&1; then
        root="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
    else
        local cache="${KILN_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln/cuda-13.0}"
        local want=("${kiln_cuda_packages[@]}")
        local stamp="$cache/.compile"
        if [[ -n "${KILN_CUDA_LINK:-}" ]]; then
            want+=("${kiln_cuda_link_packages[@]}")
            stamp="$cache/.link"
        fi
        if [[ ! -e "$stamp" ]]; then
            echo "cuda-toolkit: installing CUDA 13.0 from the Python registry into $cache" >&2
            rm -rf "$cache"
            python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
                --target "$cache" "${want[@]}" >&2 || return 1
            chmod +x "$cache"/nvidia/cu13/bin/* "$cache"/nvidia/cu13/nvvm/bin/* || return 1
            touch "$stamp" "$cache/.compile"
        fi
        root="$cache/nvidia/cu13"
    fi
    export PATH="$root/bin:$PATH" CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
    if [[ -n "${KILN_CUDA_LINK:-}" ]]; then
        # The packages ship versioned names only (libcublas.so.13); the
        # linker looks for libcublas.so. libcuda comes with the driver.
        local names="$root/../link-names"
        mkdir -p "$names"
        local lib
        for lib in "$root"/lib/lib*.so.* "$root"/lib64/lib*.so.*; do
            [[ -e "$lib" ]] && ln -sf "$lib" "$names/$(basename "$lib" | sed 's/\.so\..*/.so/')"
        done
        local driver
        driver="$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ { print $NF; exit }')"
        [[ -n "$driver" ]] && ln -sf "$driver" "$names/libcuda.so"
        export LIBRARY_PATH="$names${LIBRARY_PATH:+:$LIBRARY_PATH}"
        export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    echo "cuda-toolkit: $("$root/bin/nvcc" --version | tail -1) at $root" >&2
}

kiln_cuda_setup
