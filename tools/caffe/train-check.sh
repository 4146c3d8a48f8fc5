#!/usr/bin/env bash
# Train and score the LMDB recipe (tools/caffe/lmdb_recipe.py) with the caffe
# tool alone; no Python, so it runs from the GPU bundle as well:
#
#   train-check.sh RECIPE_DIR LOG_DIR CAFFE [-gpu N]
#
# 1. `caffe train` from RECIPE_DIR/start.caffemodel with its solver.prototxt
#    (the CPU without -gpu), in a scratch folder of links to RECIPE_DIR;
# 2. `caffe test` on val with the final snapshot: the mean over val images
#    of the Accuracy layer's pixel accuracy (void ignored).
# It passes when the training loss falls (Caffe's smoothed loss at the last
# display below the loss at iteration 0, by LOSS_FALL at least) and the val
# pixel accuracy beats predicting background everywhere (recipe.txt's
# background_share, averaged over the same images). Writes LOG_DIR/train.log,
# LOG_DIR/test.log and LOG_DIR/training.json (the figures); prints a summary.
# Exit status: 0 passed, 1 failed, 2 bad arguments or recipe.
set -uo pipefail

LOSS_FALL=0.2  # the least relative fall of the loss that counts as learning

[ $# -ge 3 ] || { echo "usage: train-check.sh RECIPE_DIR LOG_DIR CAFFE [-gpu N]" >&2; exit 2; }
RECIPE="$(cd "$1" 2>/dev/null && pwd)" || { echo "train-check.sh: no folder $1" >&2; exit 2; }
LOGS="$2"; CAFFE="$3"; shift 3
DEVICE_ARGS=("$@")
DEVICE="$([ "${1:-}" = -gpu ] && echo "gpu ${2:-0}" || echo cpu)"
for f in solver.prototxt train.prototxt val.prototxt start.caffemodel recipe.txt; do
  [ -f "$RECIPE/$f" ] || { echo "train-check.sh: $RECIPE has no $f (write it with tools/caffe/lmdb_recipe.py)" >&2; exit 2; }
done
CAFFE_ABS="$(command -v "$CAFFE" 2>/dev/null)" && CAFFE_ABS="$(readlink -f "$CAFFE_ABS")" && [ -x "$CAFFE_ABS" ] ||
  { echo "train-check.sh: $CAFFE is not an executable caffe tool" >&2; exit 2; }
CAFFE="$CAFFE_ABS"  # it runs from the scratch folder
recipe() { awk -v k="$1" '$1 == k {print $2}' "$RECIPE/recipe.txt"; }
ITER="$(recipe iterations)"; VAL="$(recipe val_images)"; SHARE="$(recipe background_share)"
[ -n "$ITER" ] && [ -n "$VAL" ] && [ -n "$SHARE" ] || {
  echo "train-check.sh: $RECIPE/recipe.txt lacks iterations, val_images or background_share" >&2; exit 2; }
mkdir -p "$LOGS"
LOGS="$(cd "$LOGS" && pwd)"

# Caffe writes its snapshots under the folder it runs in: a scratch folder
# keeps the recipe folder untouched (and the log folder small).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/train-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 143' TERM INT  # stopped (a time limit): still clean up
for f in "$RECIPE"/*; do ln -s "$f" "$WORK/"; done
mkdir "$WORK/snapshot"
# The net is small: BLAS threads would only wait on each other.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" GLOG_logtostderr=1 GLOG_minloglevel=0

echo "==> [train-check] caffe train ($DEVICE, $ITER iterations; log: $LOGS/train.log)"
t0=$(date +%s.%N)
(cd "$WORK" && "$CAFFE" train -solver solver.prototxt -weights start.caffemodel ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"}) \
  > "$LOGS/train.log" 2>&1
rc=$?
t1=$(date +%s.%N)
WEIGHTS="$WORK/snapshot/train_iter_$ITER.caffemodel"
if [ "$rc" != 0 ] || [ ! -f "$WEIGHTS" ]; then
  echo "==> [train-check] caffe train FAILED (exit $rc); last lines of $LOGS/train.log:"; tail -n 8 "$LOGS/train.log"
  exit 1
fi
# "Iteration N (speed), loss = X" at each display and "Iteration N, loss = X"
# at the end: Caffe's loss averaged over the last average_loss iterations.
LOSSES="$(sed -n 's/.*\] Iteration \([0-9]*\)\( (.*)\)\{0,1\}, loss = \([-0-9.e+]*\)$/\1 \3/p' "$LOGS/train.log")"
LOSS_START="$(echo "$LOSSES" | awk 'NR == 1 {print $2}')"
LOSS_END="$(echo "$LOSSES" | awk 'END {print $2}')"
LOSS_END_ITER="$(echo "$LOSSES" | awk 'END {print $1}')"

echo "==> [train-check] caffe test on $VAL val images (log: $LOGS/test.log)"
(cd "$WORK" && "$CAFFE" test -model val.prototxt -weights "$WEIGHTS" -iterations "$VAL" \
   ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"}) > "$LOGS/test.log" 2>&1
rc=$?
ACC="$(sed -n 's/.*\] accuracy = \([-0-9.e+]*\)$/\1/p' "$LOGS/test.log" | tail -n1)"
if [ "$rc" != 0 ] || [ -z "$ACC" ]; then
  echo "==> [train-check] caffe test FAILED (exit $rc); last lines of $LOGS/test.log:"; tail -n 8 "$LOGS/test.log"
  exit 1
fi

VERDICT="$(awk -v s="$LOSS_START" -v e="$LOSS_END" -v a="$ACC" -v b="$SHARE" -v f="$LOSS_FALL" 'BEGIN {
  loss = (s != "" && e != "" && e <= s * (1 - f)); acc = (a > b)
  print (loss ? "true" : "false"), (acc ? "true" : "false"), ((loss && acc) ? "true" : "false") }')"
read -r LOSS_OK ACC_OK PASSED <<< "$VERDICT"
SECONDS_TRAIN="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')"
num() { [ -n "$1" ] && echo "$1" || echo null; }
cat > "$LOGS/training.json" <<EOF
{"device": "$DEVICE", "iterations": $ITER, "train_seconds": $SECONDS_TRAIN,
 "loss_start": $(num "$LOSS_START"), "loss_end": $(num "$LOSS_END"), "loss_end_iteration": $(num "$LOSS_END_ITER"),
 "loss_fell": $LOSS_OK, "least_loss_fall": $LOSS_FALL,
 "val_images": $VAL, "val_pixel_accuracy": $ACC, "background_share": $SHARE, "beats_background": $ACC_OK,
 "passed": $PASSED}
EOF
printf '==> [train-check] loss %s -> %s (iteration %s, %s s); val pixel accuracy %s vs all-background %s: %s\n' \
  "$LOSS_START" "$LOSS_END" "$LOSS_END_ITER" "$SECONDS_TRAIN" "$ACC" "$SHARE" \
  "$([ "$PASSED" = true ] && echo passed || echo FAILED)"
[ "$PASSED" = true ]
