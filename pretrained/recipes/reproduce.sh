#!/usr/bin/env bash
# Reproduce a FER2013 zoo model with the toolkit's own commands, timed:
#   1. pack      e2y-visual generate   (the class folders -> HDF5 shards)
#   2. train     e2y-visual train      (this folder's recipe, seed fixed)
#   3. export    e2y-visual zoo export (int8 weights + registry entry)
#   4. score     python -m bench.zoo_accuracy (per-class accuracy on the
#                held-out 10 %, before and after int8 storage)
#
#   bash pretrained/recipes/reproduce.sh IMAGES WORK [extra train options...]
#
# IMAGES: the FER2013 training split, one folder per class
#         (e.g. tar xzf fer2013_train.tar.gz -> .../train/angry/*.png ...).
# WORK:   a new folder for the shards, the run and the reports.
# Settings (environment variables, defaults for the ResNet-50 on one GPU):
#   RECIPE=resnet50_fer2013  NAME=resnet50-fer2013  SIZE=150  DEVICE=cuda
#   WORKERS=<CPU count>  PYTHON=python (the environment's with the toolkit)
# CPU proof: RECIPE=resnet18_fer2013_cpu NAME=resnet18-fer2013-cpu SIZE=48 DEVICE=cpu
# The export goes to the pretrained folder ($E2Y_VISUAL_PRETRAINED, else this
# repository's pretrained/) and replaces an entry of the same name.
# Timings (seconds per step) are written to WORK/timings.tsv.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
IMAGES=$(realpath "$1")
WORK=$(realpath -m "$2")
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# `zoo export` writes to $E2Y_VISUAL_PRETRAINED when set (else to $E2Y_VISUAL_HOME).
export E2Y_VISUAL_PRETRAINED=${E2Y_VISUAL_PRETRAINED:-$REPO/pretrained}
RECIPE=${RECIPE:-resnet50_fer2013}
NAME=${NAME:-resnet50-fer2013}
SIZE=${SIZE:-150}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(nproc)}
PYTHON=${PYTHON:-python}

[ -d "$IMAGES" ] || { echo "reproduce.sh: $IMAGES: no such folder" >&2; exit 2; }
[ -f "$HERE/$RECIPE.toml" ] || { echo "reproduce.sh: no recipe $HERE/$RECIPE.toml" >&2; exit 2; }
mkdir -p "$WORK"
printf 'step\tseconds\n' > "$WORK/timings.tsv"

step() {  # step NAME COMMAND...: run it, append its wall time
    local name=$1 start end
    shift
    echo "== $name: $*" >&2
    start=$(date +%s%N)
    "$@"
    end=$(date +%s%N)
    awk -v n="$name" -v ns=$((end - start)) 'BEGIN { printf "%s\t%.1f\n", n, ns / 1e9 }' \
        >> "$WORK/timings.tsv"
}

step pack e2y-visual generate "$IMAGES" --out "$WORK/h5" --layout image_classes \
    --skip-detection --size "$SIZE" --shard-size 2000 --workers "$WORKERS"
step train e2y-visual train "$WORK/h5" --config "$HERE/$RECIPE.toml" --out "$WORK/run" \
    --device "$DEVICE" "$@"
step export e2y-visual zoo export "$WORK/run/best.pt" "$NAME" --replace \
    --recipe "recipes/$RECIPE.toml" \
    --training-data "FER2013 training split (28,709 grey 48x48 images, 7 emotions); 10% held out for validation" \
    --licence "weights: research use only (FER2013's licence is unclear); code BSD-3-Clause"
score_model() {
    (cd "$REPO" && "$PYTHON" -m bench.zoo_accuracy "$WORK/h5" --model "$WORK/run/best.pt" \
        --compact > "$WORK/accuracy.json")
}
step score score_model
awk -F'\t' 'NR > 1 { total += $2; print } END { printf "total\t%.1f\n", total }' \
    "$WORK/timings.tsv" >&2
echo "accuracy report: $WORK/accuracy.json" >&2
