#!/usr/bin/env bash
# Issue 30 on one GPU machine, from the repository root (carried: the PyAV wheel in .whl/, the mamba-ssm /
# causal-conv1d sdists or wheels in .mamba/):
#
#     bash benchmarks/gpu_issue30.sh sweep    # builds mamba-ssm + causal-conv1d (niced, wheels split into
#                                             # $OUT) while the GPU times the vanilla arm; the proposed arm
#                                             # once the build is installed; one process, one JSON
#     RUNS="..." bash benchmarks/gpu_issue30.sh measure   # wheels from .mamba/.whl, the RUNS in one process
#     bash benchmarks/gpu_issue30.sh layer    # wheels from .mamba/: parity of the stacked bi-SSD launch, the
#                                             # layer against the fair Transformer, the reducers' GPU cost
#     bash benchmarks/gpu_issue30.sh all      # sweep, then layer, in one call (DEADLINE_S bounds the sweep)
#
# Everything but the wheels lands in $OUT/res.tgz (the device returns 8 files at most); the JSONs also in $OUT.
set -uo pipefail
stage=${1:?sweep, measure, layer or all}
tag=${TAG:-gpu_paper_ratio}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/av-*.whl || exit 3
export PYTHONPATH=$PWD:/tmp/site
R=$OUT/res
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv | tee "$R/nvidia_smi.csv"
python3 -c "import torch, transformers, harness.train, av, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 | tail -2
nproc; free -g | head -2
marker=/tmp/mamba_ready

paper_step() {  # $1: sweep (build in the background while the vanilla arm runs) or measure (install first)
    local wait_arg=""
    if [ "$1" = sweep ]; then
        (EXPORT_WHEEL=1 MAX_JOBS=${MAX_JOBS:-10} CC_JOBS=${CC_JOBS:-6} nice -n 19 bash benchmarks/gpu_build_mamba.sh \
            > "$R/build.log" 2>&1; echo "build rc $?" >> "$R/build.log"; touch $marker) &
        wait_arg="--wait-for-mamba $marker"
    else
        bash benchmarks/gpu_build_mamba.sh > "$R/build.log" 2>&1; echo "install rc $?"; tail -1 "$R/build.log"
    fi
    timeout "${LIMIT_S:-540}" python3 benchmarks/gpu_paper_step.py $wait_arg --deadline "${DEADLINE_S:-470}" \
        --workers "${WORKERS:-6}" --out "$R/$tag.json" --runs $RUNS ${EXTRA:-} > "$R/$tag.log" 2>&1
    echo "paper_step rc $?"
    tail -30 "$R/$tag.log"
    wait
    tail -3 "$R/build.log"
}

layer() {  # the compressor layer (item 3) and the reducers' GPU cost, on the installed mamba-ssm
    [ -f $marker ] || { bash benchmarks/gpu_build_mamba.sh > "$R/install.log" 2>&1; echo "install rc $?"; }
    local FB="python3 benchmarks/gpu_fair_baseline.py --out $R"
    TRITON_F32_DEFAULT=ieee timeout "${PARITY_S:-150}" $FB --parity-stacked --tag parity_stacked --variants \
        > "$R/parity_stacked.log" 2>&1; echo "parity rc $?"; grep -c PASS "$R/parity_stacked.log"; grep FAIL "$R/parity_stacked.log"
    timeout "${LAYER_S:-330}" $FB --backends 9x128=cudnn --tag layer30 --variants ${VARIANTS:-transformer_9x128 \
        bi_ssm_v2_fused bi_ssm_v2_fused_stacked bi_ssm_v2_fused_c256 bi_ssm_v2_fused_stacked_c256 identity \
        bi_ssm_v2_unfused bi_ssm_v2_unfused_stacked transformer_9x128_compiled bi_ssm_v2_fused_compiled \
        bi_ssm_v2_fused_stacked_compiled} --profile ${PROFILE:-bi_ssm_v2_fused bi_ssm_v2_fused_stacked} \
        > "$R/layer30.log" 2>&1; echo "layer rc $?"
    tail -45 "$R/layer30.log"
    timeout "${COST_S:-100}" python3 benchmarks/reducers_cost.py --gpu --out "$R" > "$R/reducers_cost.log" 2>&1
    echo "cost rc $?"; tail -22 "$R/reducers_cost.log"
}

case "$stage" in
    sweep|measure) paper_step "$stage" ;;
    layer) layer ;;
    all) paper_step sweep; layer ;;
    *) echo "gpu_issue30.sh: unknown stage $stage (sweep, measure, layer, all)" >&2; exit 2 ;;
esac
tar czf "$OUT/res.tgz" -C "$OUT" res && rm -rf "$R"
ls -la "$OUT"
