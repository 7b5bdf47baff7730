#!/usr/bin/env bash
# The GPU check in one command (under 8 minutes on one GPU): device and versions; the tests marked
# cuda; bench decor at the ViT-B shapes (bf16); bench pretrain on ViT-B/16 at 224 px, bf16, batch
# 256, BP vs DBP, eager and compiled (graph breaks, recompiles, peak GPU memory); 100 optimizer steps
# of the ViT-B recipe on generated 2-channel 16-bit images, its run directory checked and exported.
# One table at the end (OUT/table.md); every piece's output is in OUT/.
#
#   tools/gpu_check.sh [OUT]                 # default OUT: gpu_check
#   GPU_CHECK_SMOKE=1 tools/gpu_check.sh     # the same pieces at tiny sizes, on any device (a CPU too)
#
# Run from the repository root (or with mae_dbp installed); PYTHON picks the interpreter.
set -uo pipefail
OUT=${1:-gpu_check}
PY=${PYTHON:-python}
MAE="$PY -m mae_dbp"
mkdir -p "$OUT"
: > "$OUT/status.txt"
: > "$OUT/seconds.txt"

if [[ "${GPU_CHECK_SMOKE:-0}" == 1 ]]; then  # tiny sizes: proves every piece runs, measures nothing
    DECOR=(--shapes mlp_1000 --repeats 1)
    STEP_CONFIG=configs/pretrain/tiny_cpu_dbp.yaml
    STEP=(--batch-size 4 --steps 2 model.img_size=32 model.encoder_args.depth=1 model.decoder.depth=1)
    DATA=(--num 40 --size 64)
    RUN_CONFIG=configs/pretrain/tiny_cpu_dbp.yaml
    RUN=(data.crops_per_image=2 train.batch_size=8 train.effective_batch=8 train.epochs=2 data.num_workers=0)
    MIN_STEPS=10
else
    DECOR=(--shapes vitb_qkv vitb_fc1 patch_embed --repeats 5)
    STEP_CONFIG=configs/pretrain/mae_vit_base_dbp.yaml
    STEP=(--batch-size 256 --steps 10)
    DATA=(--num 320 --size 224)  # 288 train images x 9 crops: 10 steps of 256 per epoch
    RUN_CONFIG=configs/pretrain/mae_vit_base_dbp.yaml
    RUN=(model.in_chans=2 "data.mean=[32768,32768]" "data.std=[16384,16384]" data.crops_per_image=9
         data.num_workers=8 train.batch_size=256 train.effective_batch=256 train.epochs=10)
    MIN_STEPS=100
fi

piece() {  # piece NAME COMMAND...: run it, keep its output, status and seconds
    local name=$1; shift
    local start=$SECONDS
    echo "== gpu_check: $name: $*" | tee -a "$OUT/log.txt"
    "$@" > >(tee "$OUT/$name.out") 2> "$OUT/$name.err"
    local rc=$?
    echo "$name $([[ $rc == 0 ]] && echo ok || echo "failed(rc=$rc)")" >> "$OUT/status.txt"
    echo "$name $((SECONDS - start))" >> "$OUT/seconds.txt"
    [[ $rc == 0 ]] || tail -n 20 "$OUT/$name.err"
}

piece versions $PY tools/gpu_check_table.py versions "$OUT"
piece tests $PY -m pytest -q -m cuda tests -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml"
piece decor $MAE bench decor "${DECOR[@]}" --dtype bf16 --json "$OUT/decor.json"
piece pretrain $MAE bench pretrain --config "$STEP_CONFIG" --dtype bf16 --compile --json "$OUT/pretrain.json" "${STEP[@]}"
rm -rf "$OUT/data" "$OUT/run" "$OUT/export"
piece data $MAE data synthetic --out "$OUT/data" "${DATA[@]}" --no-progress
piece run $MAE pretrain --config "$RUN_CONFIG" --out "$OUT/run" "data.root=$OUT/data" data.val_root=null \
    data.val_fraction=0.1 train.warmup_epochs=1 log.emissions=false "${RUN[@]}"
piece check $PY tools/gpu_check_table.py check-run "$OUT/run" "$MIN_STEPS"
piece export $MAE export "$OUT/run" --out "$OUT/export"
$PY tools/gpu_check_table.py table "$OUT"
grep -qv " ok$" "$OUT/status.txt" && exit 1 || exit 0
