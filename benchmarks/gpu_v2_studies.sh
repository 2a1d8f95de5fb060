#!/usr/bin/env bash
# Run the v2 studies (five-way comparison, compression layer, secondary sampling) on one GPU machine with
# the local executor, then pack the results store and reports into $OUT/v2_studies.tar.gz. From the
# repository root of a fresh machine (PyAV, submitit and mamba-ssm from the carried .wheels/ and .mamba/;
# reports are built back here, where matplotlib is):
#
#     bash benchmarks/gpu_v2_studies.sh [SECONDS] [--set KEY=VALUE ...]   # sweeps stop after SECONDS (380)
#     bash benchmarks/gpu_v2_studies.sh 460 --set model.compressor.ssm.backend=torch   # what was run
#     STUDIES=five_way_clean PARALLEL=15 bash benchmarks/gpu_v2_studies.sh 440 --set grid.data.n_frames=[8] \
#         --set model.compressor.ssm.backend=torch     # another study list (each sweep prepares its own suite)
#
# With ``ssm.backend=torch`` mamba-ssm is not needed (not built): its Triton SSD kernels autotune in every
# new process, which with 18 concurrent jobs took minutes per run, while the PyTorch chunked scan needs
# no compilation.
#
# The three sweeps run at once (6 jobs each, profile localgpu: all on the one GPU). Compressor latency and time to first token are measured
# inside each job while other jobs share the GPU, so they rank the variants but are not clean timings
# (benchmarks/gpu_compressor_scaling.py and gpu_e2e_prefill.py are). Unpack the tarball at the
# repository root and `python -m harness.report ablations/<study>.yaml` rebuilds the reports from the store.
set -uo pipefail
budget=${1:-380}
shift || true
sets=("$@")
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
out=${OUT:-/tmp/v2_out}
mkdir -p "$out"
python3 -c "import av, submitit" 2>/dev/null || python3 -m pip install -q --no-deps .wheels/*.whl  # av, submitit, cloudpickle
python3 -c "import pandas, yaml, tqdm" || echo "missing: the sweep's store needs pandas"
case " ${sets[*]:-} " in
  *ssm.backend=torch*) ;;
  *) (python3 -c "import mamba_ssm" 2>/dev/null || bash benchmarks/gpu_build_mamba.sh > /tmp/mb.log 2>&1; tail -1 /tmp/mb.log) & ;;
esac
studies=(${STUDIES:-five_way v2_compression_layer v2_secondary_sampling})
if [ -z "${STUDIES:-}" ]; then  # the three share the default suite: made once here, not raced by three sweeps
  S=results/data/mia_synthetic
  [ -f $S/meta.json ] || python3 -m harness.data make-synthetic --out $S --quiet
  for n in 8 16 32; do python3 -m harness.data features --suite $S --n-frames $n --quiet > /tmp/feat$n.log & done
fi
wait
t0=$(date +%s)
for s in "${studies[@]}"; do
  timeout "$budget" python3 -m harness.sweep ablations/$s.yaml --profile localgpu --max-parallel "${PARALLEL:-6}" --no-progress --no-report "${sets[@]}" > "$out/$s.log" 2>&1 &
done
wait
echo "sweeps: $(( $(date +%s) - t0 )) s"
for s in "${studies[@]}"; do tail -3 "$out/$s.log"; done
tar czf "$out/v2_studies.tar.gz" results/store results/reports 2>/dev/null
ls -la "$out"
