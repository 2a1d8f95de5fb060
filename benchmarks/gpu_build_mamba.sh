#!/usr/bin/env bash
# Build mamba-ssm's and causal-conv1d's CUDA extensions for a Hopper GPU (sm_90 only) and install them, or
# install wheels built before. Run on the GPU machine from the repository root:
#
#     bash benchmarks/gpu_build_mamba.sh                  # installs both into the running python3
#     EXPORT_WHEEL=1 bash benchmarks/gpu_build_mamba.sh   # also splits each wheel into $OUT/<wheel>.partNN
#     WHEEL_DIR=../.whl bash benchmarks/gpu_build_mamba.sh   # look for earlier wheels there too
#
# Inputs (ignored by git, carried to the machine): the PyPI sdists in .mamba/, fetched once with
#     pip download --no-deps --no-binary :all: --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0 -d .mamba
# and, when present, wheels built earlier: whole (<name>.whl) or split (<name>.whl.part00, .part01, ...),
# in .mamba/, .whl/ or $WHEEL_DIR. A package with a wheel is installed from it and not rebuilt.
# A fresh build keeps only the compute_90 gencode (a patched temporary copy of each setup.py; no
# -lineinfo, no ptxas report), the two packages compile side by side: mamba-ssm's nine .cu files
# ~160-200 s with 16 cores, causal-conv1d's three within that time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=/tmp/mamba_wheels
mkdir -p "$WHEELS"
SEARCH=("$ROOT/.mamba" "$ROOT/.whl")
[ -n "${WHEEL_DIR:-}" ] && SEARCH+=("$WHEEL_DIR")

# gather wheels built before: whole ones, and split ones reassembled from their parts
gather() {  # $1: wheel name prefix (mamba_ssm / causal_conv1d)
    local d f name
    for d in "${SEARCH[@]}"; do
        [ -d "$d" ] || continue
        for f in "$d"/"$1"-*.whl; do [ -f "$f" ] && cp "$f" "$WHEELS"/; done
        for f in "$d"/"$1"-*.whl.part00; do
            [ -f "$f" ] || continue
            name=$(basename "${f%.part00}")
            [ -f "$WHEELS/$name" ] || { cat "${f%.part00}".part* > "$WHEELS/$name"; echo "reassembled $name"; }
        done
    done
    return 0
}

build() {  # $1: wheel prefix, $2: sdist prefix, $3: FORCE_BUILD variable, $4: MAX_JOBS
    local sdist src pkg t0
    sdist=$(ls "$ROOT"/.mamba/"$2"-*.tar.gz 2>/dev/null | head -1 || true)
    [ -n "$sdist" ] || { echo "gpu_build_mamba.sh: no $2 sdist under $ROOT/.mamba (see the header)" >&2; return 2; }
    src=/tmp/build_$1
    rm -rf "$src" && mkdir -p "$src" && tar xzf "$sdist" -C "$src"
    pkg=$(ls -d "$src"/"$2"-*)
    # keep only the Hopper gencode: an override just before the ABI switch that follows the flags
    $PY - "$pkg/setup.py" <<'PYEOF'
import sys, pathlib
p = pathlib.Path(sys.argv[1]); s = p.read_text()
anchor = "    if FORCE_CXX11_ABI:"
assert anchor in s, f"{p}: layout changed, cannot find the FORCE_CXX11_ABI switch"
s = s.replace(anchor, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n' + anchor, 1)
s = s.replace('"--ptxas-options=-v",', "").replace('"-lineinfo",', "")
p.write_text(s)
PYEOF
    t0=$(date +%s)
    (cd "$pkg" && env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$4" "$3"=TRUE \
        $PY -m pip wheel --no-deps --no-build-isolation --no-index -w "$WHEELS" . ) > "/tmp/build_$1.log" 2>&1 \
        || { tail -40 "/tmp/build_$1.log"; return 1; }
    echo "built $(cd "$WHEELS" && ls "$1"-*.whl) in $(( $(date +%s) - t0 )) s"
}

export_wheels() {
    [ "${EXPORT_WHEEL:-0}" = 1 ] && [ -n "${OUT:-}" ] || return 0
    local whl
    for whl in "$WHEELS"/*.whl; do
        split -b 15m -d -a 2 "$whl" "$OUT/$(basename "$whl").part"
    done
    ls -la "$OUT"
}

gather mamba_ssm
gather causal_conv1d
pids=()
# SKIP_CC=1: mamba-ssm alone (Mamba-2 then runs its unfused path: the Triton SSD scan, PyTorch's conv)
if [ "${SKIP_CC:-0}" != 1 ] && ! ls "$WHEELS"/causal_conv1d-*.whl >/dev/null 2>&1; then
    build causal_conv1d causal_conv1d CAUSAL_CONV1D_FORCE_BUILD "${CC_JOBS:-4}" & pids+=($!)
fi
if ! ls "$WHEELS"/mamba_ssm-*.whl >/dev/null 2>&1; then
    build mamba_ssm mamba_ssm MAMBA_FORCE_BUILD "${MAX_JOBS:-12}" & pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
$PY -m pip install -q --no-deps --no-index --no-compile $(ls "$WHEELS"/causal_conv1d-*.whl 2>/dev/null) "$WHEELS"/mamba_ssm-*.whl
$PY -c "import torch, selective_scan_cuda, mamba_ssm
try:
    import causal_conv1d, causal_conv1d_cuda
    cc = causal_conv1d.__version__
except ImportError:
    cc = None
print('mamba-ssm', mamba_ssm.__version__, '+ causal-conv1d', cc, 'installed')"
export_wheels
