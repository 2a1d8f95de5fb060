#!/usr/bin/env bash
# Build mamba-ssm's CUDA extension for a Hopper GPU (compute_90 only) and install it, or install a wheel
# built before. Run on the GPU machine from the repository root:
#
#     bash benchmarks/gpu_build_mamba.sh            # installs into the running python3
#     EXPORT_WHEEL=1 bash benchmarks/gpu_build_mamba.sh   # also splits the wheel into $OUT/mamba_whl.part.*
#
# Inputs (ignored by git, carried to the machine): .mamba/mamba_ssm-2.3.2.post1.tar.gz (the PyPI sdist,
# fetched with `pip download --no-deps --no-binary :all: --no-build-isolation mamba-ssm==2.3.2.post1 -d .mamba`)
# and, when present, a wheel built earlier (.mamba/mamba_ssm-*.whl, or its parts .mamba/mamba_whl.part.*).
# A fresh build compiles nine .cu files for sm_90 only: ~160 s with 16 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
SDIST=$(ls "$ROOT"/.mamba/mamba_ssm-*.tar.gz 2>/dev/null | head -1 || true)
WHEELS=/tmp/mamba_wheels
mkdir -p "$WHEELS"

export_wheel() {
    if [ "${EXPORT_WHEEL:-0}" = 1 ] && [ -n "${OUT:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        whl=$(ls "$WHEELS"/*.whl | head -1)
        basename "$whl" > "$OUT/mamba_whl.name"
        split -b 15m -d "$whl" "$OUT/mamba_whl.part."
        ls -la "$OUT"
    fi
}
if $PY -c "import torch, selective_scan_cuda, mamba_ssm" 2>/dev/null; then
    echo "mamba-ssm already importable: $($PY -c 'import mamba_ssm; print(mamba_ssm.__version__)')"
    export_wheel
    exit 0
fi
if ls "$ROOT"/.mamba/mamba_whl.part.* >/dev/null 2>&1 && ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    name=$(cat "$ROOT"/.mamba/mamba_whl.name)
    cat "$ROOT"/.mamba/mamba_whl.part.* > "$WHEELS/$name"
    echo "reassembled $name from its parts"
fi
if ls "$ROOT"/.mamba/mamba_ssm-*.whl >/dev/null 2>&1; then
    cp "$ROOT"/.mamba/mamba_ssm-*.whl "$WHEELS"/
fi
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    [ -n "$SDIST" ] || { echo "gpu_build_mamba.sh: no sdist under $ROOT/.mamba (see the header)" >&2; exit 2; }
    src=/tmp/mamba_build
    rm -rf "$src" && mkdir -p "$src" && tar xzf "$SDIST" -C "$src"
    pkg=$(ls -d "$src"/mamba_ssm-*)
    # keep only the Hopper gencode: insert an override just before the ABI switch that follows the flags
    $PY - "$pkg/setup.py" <<'PYEOF'
import sys, pathlib
p = pathlib.Path(sys.argv[1]); s = p.read_text()
anchor = "    if FORCE_CXX11_ABI:"
assert anchor in s, "setup.py layout changed: cannot find the FORCE_CXX11_ABI switch"
s = s.replace(anchor, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n' + anchor, 1)
s = s.replace('"--ptxas-options=-v",', "")
p.write_text(s)
PYEOF
    t0=$(date +%s)
    (cd "$pkg" && TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} MAMBA_FORCE_BUILD=TRUE \
        $PY -m pip wheel --no-deps --no-build-isolation --no-index -w "$WHEELS" . ) > /tmp/mamba_build.log 2>&1 \
        || { tail -40 /tmp/mamba_build.log; exit 1; }
    echo "built $(ls "$WHEELS") in $(( $(date +%s) - t0 )) s"
fi
whl=$(ls "$WHEELS"/*.whl | head -1)
$PY -m pip install -q --no-deps --no-index --no-compile "$whl"
$PY -c "import torch, selective_scan_cuda, mamba_ssm; print('mamba-ssm', mamba_ssm.__version__, 'installed')"
export_wheel
