#!/usr/bin/env bash
# Issue 21's GPU measurements in two calls of the device tool, from the repository root of a fresh GPU
# machine (this tree copied to .gpuwt/ of the lead's checkout; sdists in .mamba/, earlier wheels in ../.whl/):
#
#     bash benchmarks/gpu_issue21.sh build    # build mamba-ssm + causal-conv1d (wheels split into $OUT) while
#                                             # the GPU times SDPA and the Transformer layouts (tag a); then
#                                             # parity and the SSM variants (tag a2)
#     bash benchmarks/gpu_issue21.sh measure  # wheels from .whl or ../.whl; PARITY=mamba2 runs those parity
#                                             # checks first; then the headline run in one process (tag b):
#                                             # fair Transformer vs fused bi-SSM at 64/128/256, compiled at 128,
#                                             # kernel breakdown; then the GPU tests
#
# Everything it writes lands in $OUT/res and comes back as $OUT/res.tgz (the device returns 8 files at most).
set -uo pipefail
stage=${1:?build or measure}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/res
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv | tee "$R/nvidia_smi.csv"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
FB="python3 benchmarks/gpu_fair_baseline.py --out $R"
if [ "$stage" = build ]; then
    (EXPORT_WHEEL=1 WHEEL_DIR=../.whl bash benchmarks/gpu_build_mamba.sh > "$R/build.log" 2>&1; echo "build rc $?" >> "$R/build.log") &
    build=$!
    # while the CPUs compile, the GPU times the Transformer side (needs no mamba-ssm); noted in the JSON tag
    timeout 260 $FB --sdpa --tag a --variants transformer_16x72 transformer_9x128 transformer_18x64 > "$R/fair_a.log" 2>&1
    echo "fair_a rc $?"; tail -30 "$R/fair_a.log"
    wait $build; tail -3 "$R/build.log"
    timeout 160 python3 benchmarks/gpu_parity.py --out "$R" > "$R/parity.log" 2>&1
    echo "parity rc $?"; grep -E "FAIL|ERROR|ALL PASS|SOME" "$R/parity.log" | head -20
    timeout 80 $FB --tag a2 --variants bi_ssm_v1_unfused bi_ssm_v1_fused bi_ssm_v2_unfused bi_ssm_v2_fused identity \
        > "$R/fair_a2.log" 2>&1
    echo "fair_a2 rc $?"; grep -E "T= *(128|256)" "$R/fair_a2.log"
else
    WHEEL_DIR=../.whl bash benchmarks/gpu_build_mamba.sh 2>&1 | tail -3
    if [ -n "${PARITY:-}" ]; then  # PARITY=mamba1|mamba2|all: the parity checks first (gpu_parity.py --only)
        timeout "${PARITY_S:-200}" python3 benchmarks/gpu_parity.py --only "$PARITY" --out "$R" > "$R/parity.log" 2>&1
        echo "parity rc $?"; grep -E "FAIL|ERROR|ALL PASS|SOME" "$R/parity.log" | head -20
    fi
    timeout ${MEASURE_S:-420} $FB ${SDPA:---sdpa} --tag b --variants ${VARIANTS:-transformer_16x72 transformer_9x128 transformer_18x64 \
        bi_ssm_v1_unfused bi_ssm_v1_fused bi_ssm_v2_fused identity} ${EXTRA_VARIANTS:-} \
        --profile bi_ssm_v1_fused bi_ssm_v2_fused ${PROFILE_T:-transformer_9x128} > "$R/fair_b.log" 2>&1
    echo "fair_b rc $?"; tail -45 "$R/fair_b.log"
    [ -n "${TESTS_S:-}" ] && timeout "$TESTS_S" python3 -m pytest -q -x tests/test_gpu_parity.py > "$R/pytest.log" 2>&1
    [ -n "${TESTS_S:-}" ] && tail -3 "$R/pytest.log"
fi
tar czf "$OUT/res.tgz" -C "$OUT" res && rm -rf "$R"
ls -la "$OUT"
