#!/usr/bin/env bash
# Check the Caffe CUDA build on a machine with an NVIDIA GPU. Runs from the
# unpacked bundle that tools/caffe/bundle.sh makes; needs no Python, no network:
#
#   tar -xzf bundle.tar.gz && bash fcn-caffe-gpu/run-gpu-checks.sh [options]
#
#   --gpu N          GPU to use (default 0)
#   --iterations N   caffe time iterations (default 20)
#   --filter F       gtest filter (default: every layer FCN uses, below)
#   --skip-tests     skip Caffe's unit tests
#   --skip-time      skip caffe time
#   --skip-train     skip the training run
#   --cpu-time       also time the deploy nets on the CPU (1 iteration; slow)
#   --logs DIR       the output folder (default $OUT if set, else ./gpu-check-logs)
#   --budget S       seconds for everything (default 450): each step gets what is left
#
# 1. The libraries the bundle takes from the machine (host-libs.txt) and the
#    NVIDIA driver: when one is missing it stops there, saying which.
# 2. `caffe device_query` on the GPU.
# 3. `caffe time` on voc-fcn32s, voc-fcn16s and voc-fcn8s at 500x500: the deploy
#    net (TEST phase) and the train net with Input blobs for its Python data
#    layer (TRAIN phase; data 1x3x500x500, label 1x1x500x500): forward and
#    forward+backward milliseconds.
# 4. A training run (train-check.sh on train/, tools/caffe/lmdb_recipe.py's
#    narrow FCN-8s with its data in LMDB): `caffe train -gpu N` from its start
#    weights, then `caffe test` on val; it passes when the loss falls and the
#    val pixel accuracy beats predicting background everywhere.
# 5. Caffe's own unit tests (test.testbin) for every layer FCN uses, on GPU
#    and CPU (the typed tests run for CPUDevice and GPUDevice, float and double).
# Output, in the output folder: run.log (everything printed), figures.json
# (the figures of every step) and logs.tar.gz (each step's own log). Each step
# has a time limit, and all of them together the budget (--budget).
#
# cuBLAS, cuRAND and NCCL (and cuDNN for a --cudnn build) are not in the bundle
# (they are hundreds of MB): they are taken from the machine. Each library
# listed in host-libs.txt is looked for in $CUDA_LIBS (colon-separated
# folders), the bundle's lib/, $LD_LIBRARY_PATH, ldconfig's cache, /usr/local/cuda*, and
# NVIDIA's pip wheels (nvidia/cu13/lib, nvidia/nccl/lib, nvidia/cudnn/lib) of
# any Python environment on the machine.
# Exit status: 0 when every step ran and passed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
START=$(date +%s)
GPU=0; ITER=20; DO_TESTS=1; DO_TIME=1; DO_TRAIN=1; CPU_TIME=0; LOGS="${OUT:-$PWD/gpu-check-logs}"
FILTER='*Convolution*:*Deconvolution*:*Crop*:*Pooling*:*ReLU*:*Dropout*:*Eltwise*:*Scale*:*Concat*:*SoftmaxWithLoss*:*Net*:*SGDSolver*'
MODELS="voc-fcn32s voc-fcn16s voc-fcn8s"
# Time limits (seconds): of the steps, and of everything (--budget).
LIMIT_TESTS=300; LIMIT_TIME=90; LIMIT_TRAIN=180; BUDGET=450
# FCN-8s inference as the paper gives it (K40c), and the speed an H200 should reach.
PAPER_FCN8S_MS=175; H200_TARGET_FCN8S_MS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU="$2"; shift ;;
    --iterations) ITER="$2"; shift ;;
    --filter) FILTER="$2"; shift ;;
    --skip-tests) DO_TESTS=0 ;;
    --skip-time) DO_TIME=0 ;;
    --skip-train) DO_TRAIN=0 ;;
    --cpu-time) CPU_TIME=1 ;;
    --logs) LOGS="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-gpu-checks.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$LOGS" && LOGS="$(cd "$LOGS" && pwd)" || { echo "run-gpu-checks.sh: cannot write to $LOGS" >&2; exit 2; }
# Each step's own log goes to a scratch folder, packed into logs.tar.gz at the
# end: the output folder keeps three files.
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu-checks.XXXXXX")"
D="$SCRATCH/logs"; mkdir -p "$D"
say() { echo "==> [gpu-checks] $*"; }
FAILED=()
fail() { FAILED+=("$1"); }

# --------------------------------------------------------------- figures.json
J_GPU=null; J_NCCL=null; J_QUERY=null; J_TESTS=null; J_TIME=""; J_TRAIN=null; J_ERROR=null
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n')"; }
json_num() { [ -n "$1" ] && echo "$1" || echo null; }
finish() { # $1: exit status. Writes figures.json and logs.tar.gz, then exits.
  local failed=() f
  for f in ${FAILED[@]+"${FAILED[@]}"}; do failed+=("$(json_str "$f")"); done
  {
    echo "{\"bundle\": $(json_str "$(head -n1 "$ROOT/BUILD-INFO.txt" 2>/dev/null)"),"
    echo " \"gpu\": $J_GPU,"
    echo " \"nccl_linked\": $J_NCCL,"
    echo " \"device_query_ok\": $J_QUERY,"
    echo " \"unit_tests\": $J_TESTS,"
    echo " \"caffe_time_ms\": [${J_TIME}],"
    echo " \"reference_ms\": {\"paper_fcn8s_k40c\": $PAPER_FCN8S_MS, \"target_fcn8s_forward_h200\": $H200_TARGET_FCN8S_MS},"
    echo " \"training\": $J_TRAIN,"
    echo " \"error\": $J_ERROR,"
    echo " \"failed_steps\": [$(IFS=,; echo "${failed[*]-}")],"
    echo " \"passed\": $([ "$1" = 0 ] && echo true || echo false)}"
  } > "$LOGS/figures.json"
  tar -czf "$LOGS/logs.tar.gz" -C "$SCRATCH" logs 2>/dev/null
  rm -rf "$SCRATCH"
  say "figures: $LOGS/figures.json; step logs: $LOGS/logs.tar.gz"
  exit "$1"
}
stop() { # a missing prerequisite: say what and how to fix it, then stop
  say "STOPPED: $1"; J_ERROR="$(json_str "$1")"; fail prerequisites; finish 1
}

main() {
# ------------------------------------------------- libraries from the machine
find_host_lib() { # $1: soname; prints the folder that holds it
  local n="$1" d p
  local cl="${CUDA_LIBS:-}" ll="${LD_LIBRARY_PATH:-}"
  for d in ${cl//:/ } "$ROOT/lib" ${ll//:/ }; do [ -e "$d/$n" ] && { echo "$d"; return 0; }; done
  p="$(ldconfig -p 2>/dev/null | awk -v n="$n" '$1 == n {print $NF; exit}')"
  [ -n "$p" ] && [ -e "$p" ] && { dirname "$p"; return 0; }
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
           /usr/local/cuda-*/targets/x86_64-linux/lib; do
    [ -e "$d/$n" ] && { echo "$d"; return 0; }
  done
  p="$(find /opt /usr/local /usr/lib /usr/lib64 /root /home -maxdepth 9 -name "$n" \( -type f -o -type l \) \
        -path '*nvidia*' 2>/dev/null | sort | head -n1)"
  [ -z "$p" ] && p="$(find /opt /usr /root /home -maxdepth 10 -name "$n" \( -type f -o -type l \) 2>/dev/null | sort | head -n1)"
  [ -n "$p" ] && { dirname "$p"; return 0; }
  return 1
}
LIBPATH="$ROOT/lib"; MISSING=""
if [ -f "$ROOT/host-libs.txt" ]; then
  for n in $(grep -v '^#' "$ROOT/host-libs.txt"); do
    if d="$(find_host_lib "$n")"; then
      say "$n: $d"
      case ":$LIBPATH:" in *":$d:"*) ;; *) LIBPATH="$LIBPATH:$d" ;; esac
    else
      MISSING="$MISSING $n"
    fi
  done
fi
[ -z "$MISSING" ] || stop "this machine lacks${MISSING}: install NVIDIA's pip wheels (nvidia-cublas, nvidia-curand, nvidia-nccl-cu13, nvidia-cudnn-cu13) or a CUDA toolkit, or set CUDA_LIBS=/folder/with/them"
export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$D/env.txt"
ldd "$ROOT/bin/caffe" > "$D/ldd-caffe.txt" 2>&1 || stop "ldd cannot read bin/caffe: $(head -n1 "$D/ldd-caffe.txt")"
if grep -q 'not found' "$D/ldd-caffe.txt"; then
  stop "unresolved libraries of bin/caffe: $(grep 'not found' "$D/ldd-caffe.txt" | awk '{print $1}' | tr '\n' ' ')"
fi
# Multi-GPU training needs NCCL (build.sh --cuda has it unless --no-nccl).
J_NCCL="$(grep -q 'libnccl\.so' "$D/ldd-caffe.txt" && echo true || echo false)"
find_host_lib libcuda.so.1 > /dev/null || stop "no NVIDIA driver here (libcuda.so.1 not found)"
[ -f "$ROOT/BUILD-INFO.txt" ] && cat "$ROOT/BUILD-INFO.txt"
if command -v nvidia-smi >/dev/null; then
  smi="$(nvidia-smi -i "$GPU" --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
  if [ -n "$smi" ]; then
    echo "$smi"
    IFS=, read -r g_name g_driver g_mem <<< "$smi"
    J_GPU="{\"name\": $(json_str "$(echo $g_name)"), \"driver\": $(json_str "$(echo $g_driver)"), \"memory\": $(json_str "$(echo $g_mem)")}"
  fi
fi

# ------------------------------------------------------------ device query
say "caffe device_query -gpu $GPU"
if GLOG_logtostderr=1 timeout 60 "$ROOT/bin/caffe" device_query -gpu "$GPU" > "$D/device-query.log" 2>&1; then
  J_QUERY=true
  sed -n 's/.*\] \(Device id\|Major\|Minor\|Name\|Total global\|Clock rate\|Concurrent\|Number of multi\|Kernel exec\)/\1/p' \
    "$D/device-query.log"
else
  J_QUERY=false
  say "device_query FAILED (see device-query.log):"; tail -n 5 "$D/device-query.log"
  stop "caffe device_query -gpu $GPU failed: no usable GPU $GPU"
fi

# ------------------------------------------------------------ the budget
# Each step runs under its own limit and what is left of BUDGET, so the whole
# check ends in time; a step with no time left is skipped (and counts as failed).
limit() { # $1: the step's own limit; prints the seconds it may take
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
out_of_time() { # $1: step; true (and says so) when no time is left for it
  [ "$(limit 1)" -ge 1 ] && return 1
  say "SKIPPED $1: the $BUDGET s budget is spent"; fail "$1 (no time left)"; return 0
}

# ------------------------------------------------------------ caffe time
time_net() { # $1 model $2 net (deploy|train-input) $3 phase $4 device args...
  local m="$1" n="$2" ph="$3"; shift 3
  local dev; dev="$([ "$1" = -gpu ] && echo gpu || echo cpu)"
  local log="$D/time-$m-$n-$dev.log"
  out_of_time "time-$m-$n-$dev" && return
  if GLOG_logtostderr=1 timeout "$(limit "$LIMIT_TIME")" "$ROOT/bin/caffe" time -model "$ROOT/nets/$m/$n.prototxt" \
       -phase "$ph" "$@" > "$log" 2>&1; then
    local fwd fb
    fwd="$(sed -n 's/.*Average Forward pass: \([0-9.]*\) ms.*/\1/p' "$log" | tail -n1)"
    fb="$(sed -n 's/.*Average Forward-Backward: \([0-9.]*\) ms.*/\1/p' "$log" | tail -n1)"
    printf '%-11s %-12s %-5s %-4s %12s %20s\n' "$m" "$n" "$ph" "$dev" "$fwd" "$fb"
    J_TIME="${J_TIME:+$J_TIME, }{\"model\": \"$m\", \"net\": \"$n\", \"phase\": \"$ph\", \"device\": \"$dev\", \"forward\": $(json_num "$fwd"), \"forward_backward\": $(json_num "$fb")}"
    [ "$m-$n-$dev" = voc-fcn8s-deploy-gpu ] && FCN8S_MS="$fwd"
  else
    say "caffe time FAILED for $m $n $dev (see $(basename "$log")):"; tail -n 5 "$log"; fail "time-$m-$n-$dev"
  fi
}
if [ "$DO_TIME" = 1 ]; then
  say "caffe time, 500x500, $ITER iterations"
  FCN8S_MS=""
  printf '%-11s %-12s %-5s %-4s %12s %20s\n' model net phase dev "forward ms" "forward+backward ms"
  for m in $MODELS; do
    time_net "$m" deploy TEST -gpu "$GPU" -iterations "$ITER"
    time_net "$m" train-input TRAIN -gpu "$GPU" -iterations "$ITER"
  done
  if [ "$CPU_TIME" = 1 ]; then
    for m in $MODELS; do time_net "$m" deploy TEST -iterations 1; done
  fi
  [ -n "$FCN8S_MS" ] && say "voc-fcn8s forward at 500x500: $FCN8S_MS ms (target <= $H200_TARGET_FCN8S_MS ms on an H200; the paper: ~$PAPER_FCN8S_MS ms on a K40c)"
fi

# ------------------------------------------------------------ training
if [ "$DO_TRAIN" = 1 ] && ! out_of_time training; then
  lim="$(limit "$LIMIT_TRAIN")"
  say "training run: train-check.sh on train/ with caffe train -gpu $GPU (at most $lim s)"
  timeout "$lim" bash "$ROOT/train-check.sh" "$ROOT/train" "$D/train" "$ROOT/bin/caffe" -gpu "$GPU"
  rc=$?
  [ -f "$D/train/training.json" ] && J_TRAIN="$(cat "$D/train/training.json")"
  [ "$rc" = 124 ] && say "training run stopped at its $lim s limit"
  [ "$rc" = 0 ] || fail training
fi

# ------------------------------------------------------------ unit tests
if [ "$DO_TESTS" = 1 ] && ! out_of_time unit-tests; then
  lim="$(limit "$LIMIT_TESTS")"
  say "Caffe unit tests, GPU and CPU: --gtest_filter='$FILTER' (at most $lim s)"
  t0=$(date +%s)
  # Tests read src/caffe/test/test_data/ relative to the current folder.
  (cd "$ROOT" && GLOG_minloglevel=1 timeout "$lim" ./bin/test.testbin --gtest_filter="$FILTER" \
      --gtest_output="xml:$D/unit-tests.xml") > "$D/unit-tests.log" 2>&1
  rc=$?
  t1=$(date +%s)
  grep -E '^\[  (PASSED|FAILED) +\]|tests? ran|DISABLED' "$D/unit-tests.log" | tail -n 40
  per_device=""
  if [ -f "$D/unit-tests.xml" ]; then
    # per device: typed tests carry CPUDevice / GPUDevice in their type_param
    per_device="$(awk '/<testcase /{ if ($0 ~ /status="notrun"/) { cur=""; next }
                       cur = ($0 ~ /GPUDevice/) ? "GPU" : (($0 ~ /CPUDevice/) ? "CPU" : "untyped");
                       n[cur]++; failed = 0; next }
         /<failure/ { if (cur != "" && !failed) { f[cur]++; failed = 1 } }
         END { for (k in n) printf "%s %d %d %d\n", k, n[k], n[k]-f[k], f[k] }' "$D/unit-tests.xml" | sort)"
    echo "$per_device" | awk 'NF {printf "    %-10s %4d run, %4d passed, %3d failed\n", $1, $2, $3, $4}'
  fi
  devices="$(echo "$per_device" | awk 'NF {printf "%s\"%s\": {\"run\": %d, \"passed\": %d, \"failed\": %d}", sep, $1, $2, $3, $4; sep=", "}')"
  J_TESTS="{\"exit\": $rc, \"seconds\": $((t1 - t0)), \"by_device\": {$devices}}"
  [ "$rc" = 124 ] && say "unit tests stopped at their $lim s limit"
  say "unit tests: exit $rc, $((t1 - t0)) s"
  [ "$rc" = 0 ] || fail unit-tests
fi

if [ "${#FAILED[@]}" = 0 ]; then say "done: all checks passed"; finish 0; fi
say "done: SOME CHECKS FAILED: ${FAILED[*]}"
finish 1
}

# Everything printed also goes to run.log.
main 2>&1 | tee "$LOGS/run.log"
exit "${PIPESTATUS[0]}"
