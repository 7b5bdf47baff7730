#!/usr/bin/env bash
# Segmentation fine-tuning on GPUS processes through torchrun, as mmsegmentation's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py arguments, e.g. --work-dir DIR --cfg-options ...]
# Several machines: NNODES, NODE_RANK, MASTER_ADDR and PORT as for torchrun. Without GPUs the
# processes train on CPU with gloo (a smoke test; see tests/test_tools.py).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG GPUS [tools/train.py arguments]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" exec python -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    --nproc_per_node="$GPUS" "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
