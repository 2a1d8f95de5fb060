#!/usr/bin/env bash
# The three rounds of benchmarks/gpu_signal_grid.py behind docs/lmm.md's "Signal" section, on one GPU
# machine (a fresh one: PyAV and mamba-ssm are installed from git-ignored folders carried with the tree,
# .wheels/av-*.whl and .mamba/, see benchmarks/gpu_build_mamba.sh). From the repository root:
#
#     bash benchmarks/gpu_signal_grid.sh r1    # 8 settings, 1000 steps of 16, no curriculum
#     bash benchmarks/gpu_signal_grid.sh r2    # curriculum, pooling, period, depth, batch, 2500 steps
#     bash benchmarks/gpu_signal_grid.sh r3    # the CPU-sized curriculum (100 + 100..500 steps) per block
#     bash benchmarks/gpu_signal_grid.sh r4    # the binding families: 6x the training items, 1500 steps,
#                                              # ladders, single-family runs, no compression, a wider LLM
#     bash benchmarks/gpu_signal_grid.sh r5    # r4's single-family runs on a clean suite (no clutter, no noise)
#     bash benchmarks/gpu_signal_grid.sh r6    # clean suite: the learnable families through each compressor block
#     bash benchmarks/gpu_signal_grid.sh r7    # clean suite, needle_when only: 4 blocks x 3 seeds
#     bash benchmarks/gpu_signal_grid.sh r8    # r7's Transformer with sin-cos positions (pos_embed), 3 seeds
#     bash benchmarks/gpu_signal_grid.sh r9    # the Transformer compressor with a plain residual (gated: false)
#     bash benchmarks/gpu_signal_grid.sh r10   # clean suite, period 8: which pooling learns colour / needle_when
#
# Each writes results/benchmarks/gpu_signal_grid_<round>.json (or $OUT/ when set).
set -euo pipefail
round=${1:?usage: gpu_signal_grid.sh r1|r2|r3|r4|r5|r6|r7|r8|r9|r10}
export OMP_NUM_THREADS=2 PYTHONPATH=$PWD
out=${OUT:-results/benchmarks}
python3 -c "import av" 2>/dev/null || python3 -m pip install -q --no-deps .wheels/av-*.whl
(python3 -c "import mamba_ssm" 2>/dev/null || bash benchmarks/gpu_build_mamba.sh > /tmp/mb.log 2>&1; tail -1 /tmp/mb.log) &
W=/tmp/gpu_signal_grid
mkdir -p $W
suite=$W/suite suite_args=() frames=(16 8)
case $round in
r4) suite=$W/suite_big suite_args=(--n-train 12000 --workers 16) frames=(8) ;;
r5|r6|r7|r8|r9|r10) suite=$W/suite_clean suite_args=(--n-train 12000 --clutter 0 --noise 0 --workers 16) frames=(8) ;;
esac
[ -f $suite/meta.json ] || python3 -m harness.data make-synthetic --out $suite "${suite_args[@]}" --quiet > $W/make.log 2>&1
for n in "${frames[@]}"; do python3 -m harness.data features --suite $suite --n-frames $n --cache-dir $W/cache --quiet; done
wait
[ -z "${PREP_ONLY:-}" ] || exit 0  # PREP_ONLY=1: stop after the suite, features and mamba-ssm build
M="train_modules: [compressor, projector, llm]"
cur() { echo "'train.stages=[{start_step: 0, families: [colour], $M}, {start_step: $1, $M}]'"; }
only() { echo "'train.stages=[{start_step: 0, families: [$1], $M}]'"; }
# colour, then colour + direction + needle_when from step 100, then all families from step 700
L="'train.stages=[{start_step: 0, families: [colour], $M}, {start_step: 100, families: [colour, direction, needle_when], $M}, {start_step: 700, $M}]'"
grid=(python3 benchmarks/gpu_signal_grid.py --parallel 8 --out "$out" --tag "_$round" --suite "$suite")
case $round in
r1) "${grid[@]}" --steps 1000 --timeout 330 ;;
r2) "${grid[@]}" --steps 1000 --timeout 430 --only cur100 \
      --point "cur300:$(cur 300)" \
      --point "cur100_transformer:$(cur 100) model.compressor.block=transformer" \
      --point "base2500:train.steps=2500" \
      --point "pool_max:model.compressor.pooling=max" \
      --point "period8:model.compressor.spatial.period=8" \
      --point "llm_l4:model.llm.n_layers=4" \
      --point "bs64:train.batch_size=64 train.lr=2e-3" ;;
r3) "${grid[@]}" --steps 300 --timeout 400 --only-extra --common "$(cur 100)" \
      --point "f16:" --point "f8:data.n_frames=8" --point "f16_s200:train.steps=200" \
      --point "f8_s200:data.n_frames=8 train.steps=200" \
      --point "f16_mamba2:model.compressor.ssm.version=2" \
      --point "f16_transformer:model.compressor.block=transformer" \
      --point "f8_bs8_s400:data.n_frames=8 train.batch_size=8 train.steps=400" \
      --point "f16_s600:train.steps=600" ;;
r4) "${grid[@]}" --steps 1500 --timeout 480 --only-extra --common "data.n_frames=8" \
      --point "big_cur:$(cur 100)" \
      --point "big_cur_vanilla:$(cur 100) model.compressor.enabled=false" \
      --point "big_ladder:'train.stages=[{start_step: 0, families: [colour], $M}, {start_step: 100, families: [colour, location, direction], $M}, {start_step: 600, $M}]'" \
      --point "big_cur_llm128x4:$(cur 100) model.llm.hidden_size=128 model.llm.n_layers=4 model.llm.intermediate_size=256" \
      --point "big_location_only:$(only location)" \
      --point "big_location_only_vanilla:$(only location) model.compressor.enabled=false" \
      --point "big_when_only:$(only needle_when)" \
      --point "big_count_only_vanilla:$(only count) model.compressor.enabled=false" ;;
r5) "${grid[@]}" --steps 1500 --timeout 480 --only-extra --common "data.n_frames=8" \
      --point "clean_cur:$(cur 100)" \
      --point "clean_cur_vanilla:$(cur 100) model.compressor.enabled=false" \
      --point "clean_location_only:$(only location)" \
      --point "clean_location_only_vanilla:$(only location) model.compressor.enabled=false" \
      --point "clean_direction_only_vanilla:$(only direction) model.compressor.enabled=false" \
      --point "clean_when_only_vanilla:$(only needle_when) model.compressor.enabled=false" \
      --point "clean_count_only_vanilla:$(only count) model.compressor.enabled=false" \
      --point "clean_location_only_vanilla_llm128x4:$(only location) model.compressor.enabled=false model.llm.hidden_size=128 model.llm.n_layers=4 model.llm.intermediate_size=256" ;;
r6) B=model.compressor.block
    "${grid[@]}" --steps 1500 --timeout 480 --only-extra --common "data.n_frames=8" \
      --point "clean_direction_only:$(only direction)" \
      --point "clean_direction_only_transformer:$(only direction) $B=transformer" \
      --point "clean_direction_only_uni:$(only direction) $B=uni_ssm" \
      --point "clean_direction_only_identity:$(only direction) $B=identity" \
      --point "clean_when_only:$(only needle_when)" \
      --point "clean_when_only_transformer:$(only needle_when) $B=transformer" \
      --point "clean_ladder:$L" \
      --point "clean_ladder_vanilla:$L model.compressor.enabled=false" ;;
r7) pts=()
    for b in bi_ssm uni_ssm transformer identity; do for s in 0 1 2; do
      pts+=(--point "when_${b}_s$s:$(only needle_when) model.compressor.block=$b seed=$s"); done; done
    "${grid[@]}" --steps 1500 --timeout 560 --parallel 12 --only-extra --common "data.n_frames=8" "${pts[@]}" ;;
r8) B=model.compressor.block P=model.compressor.pos_embed pts=()
    for s in 0 1 2; do pts+=(--point "when_transformer_pos_s$s:$(only needle_when) $B=transformer $P=sincos seed=$s"); done
    pts+=(--point "when_transformer_nopos_s0:$(only needle_when) $B=transformer $P=none")
    pts+=(--point "when_bi_ssm_pos_s0:$(only needle_when) $P=sincos")
    pts+=(--point "clean_ladder_transformer_pos:$L $B=transformer $P=sincos")
    pts+=(--point "clean_ladder_transformer_nopos:$L $B=transformer $P=none")
    "${grid[@]}" --steps 1500 --timeout 560 --only-extra --common "data.n_frames=8" "${pts[@]}" ;;
r9) B=model.compressor.block G=model.compressor.gated pts=()
    for s in 0 1 2; do pts+=(--point "when_transformer_plain_s$s:$(only needle_when) $B=transformer $G=false seed=$s"); done
    pts+=(--point "when_bi_ssm_plain_s0:$(only needle_when) $G=false")
    pts+=(--point "colour_transformer_s0:$(only colour) $B=transformer")
    pts+=(--point "colour_transformer_plain_s0:$(only colour) $B=transformer $G=false")
    pts+=(--point "clean_ladder_transformer_plain:$L $B=transformer $G=false")
    pts+=(--point "clean_ladder_bi_ssm_plain:$L $G=false")
    "${grid[@]}" --steps 1500 --timeout 560 --only-extra --common "data.n_frames=8" "${pts[@]}" ;;
r10) C=model.compressor pts=()
    TAA="$C.taa.enabled=true $C.taa.n_layers=1 $C.taa.layout=slot $C.taa.sampling=delta $C.taa.relative=true $C.taa.keep_ratio=0.5"
    pts+=(--point "colour_gpa:$(only colour) $C.pooling=gpa")
    pts+=(--point "colour_gpa_taa:$(only colour) $C.pooling=gpa $TAA")
    pts+=(--point "colour_gpa_nogate:$(only colour) $C.pooling=gpa $C.gpa_gate=false")
    pts+=(--point "colour_bimba:$(only colour) $C.pooling=query $C.query_init=mean")
    pts+=(--point "colour_mean:$(only colour) $C.pooling=mean")
    pts+=(--point "colour_weighted:$(only colour) $C.pooling=weighted")
    pts+=(--point "when_gpa:$(only needle_when) $C.pooling=gpa")
    pts+=(--point "when_weighted:$(only needle_when) $C.pooling=weighted")
    "${grid[@]}" --steps 1500 --timeout 560 --only-extra \
      --common "data.n_frames=8 $C.spatial.period=8 $C.spatial.n_layers=1" "${pts[@]}" ;;
*) echo "unknown round $round" >&2; exit 2 ;;
esac
