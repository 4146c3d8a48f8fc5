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
#   --cpu-time       also time the nets on the CPU (1 iteration; slow)
#   --logs DIR       where logs go (default $OUT if set, else ./gpu-check-logs)
#
# 1. `caffe device_query` on the GPU.
# 2. Caffe's own unit tests (test.testbin) for every layer FCN uses, on GPU
#    and CPU (the typed tests run for CPUDevice and GPUDevice, float and double).
# 3. `caffe time` on voc-fcn32s, voc-fcn16s and voc-fcn8s at 500x500: the deploy
#    net (TEST phase) and the train net with Input blobs for its Python data
#    layer (TRAIN phase; data 1x3x500x500, label 1x1x500x500): forward and
#    forward+backward milliseconds.
#
# cuBLAS, cuRAND (and cuDNN for a --cudnn build) are not in the bundle (they
# are hundreds of MB): they are taken from the machine. Each library listed in
# host-libs.txt is looked for in $CUDA_LIBS (colon-separated folders), the
# bundle's lib/, ldconfig's cache, /usr/local/cuda*, and NVIDIA's pip wheels
# (nvidia/cu13/lib, nvidia/cudnn/lib) of any Python environment on the machine.
# Exit status: 0 when every step ran and every unit test passed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GPU=0; ITER=20; DO_TESTS=1; DO_TIME=1; CPU_TIME=0; LOGS="${OUT:-$PWD/gpu-check-logs}"
FILTER='*Convolution*:*Deconvolution*:*Crop*:*Pooling*:*ReLU*:*Dropout*:*Eltwise*:*Scale*:*Concat*:*SoftmaxWithLoss*:*Net*:*SGDSolver*'
MODELS="voc-fcn32s voc-fcn16s voc-fcn8s"
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU="$2"; shift ;;
    --iterations) ITER="$2"; shift ;;
    --filter) FILTER="$2"; shift ;;
    --skip-tests) DO_TESTS=0 ;;
    --skip-time) DO_TIME=0 ;;
    --cpu-time) CPU_TIME=1 ;;
    --logs) LOGS="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-gpu-checks.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$LOGS"
say() { echo "==> [gpu-checks] $*"; }
STATUS=0

# ------------------------------------------------------- host CUDA libraries
find_host_lib() { # $1: soname; prints the folder that holds it
  local n="$1" d p
  local cl="${CUDA_LIBS:-}"
  for d in ${cl//:/ } "$ROOT/lib"; do [ -e "$d/$n" ] && { echo "$d"; return 0; }; done
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
LIBPATH="$ROOT/lib"
if [ -f "$ROOT/host-libs.txt" ]; then
  for n in $(grep -v '^#' "$ROOT/host-libs.txt"); do
    if d="$(find_host_lib "$n")"; then
      say "$n: $d"
      case ":$LIBPATH:" in *":$d:"*) ;; *) LIBPATH="$LIBPATH:$d" ;; esac
    else
      say "MISSING $n: install it (e.g. the NVIDIA pip wheel) or set CUDA_LIBS=/folder/with/it"; STATUS=1
    fi
  done
fi
export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$LOGS/env.txt"
if ! ldd "$ROOT/bin/caffe" > "$LOGS/ldd-caffe.txt" 2>&1 || grep -q 'not found' "$LOGS/ldd-caffe.txt"; then
  say "unresolved libraries:"; grep 'not found' "$LOGS/ldd-caffe.txt"; exit 1
fi
[ -f "$ROOT/BUILD-INFO.txt" ] && cat "$ROOT/BUILD-INFO.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# ------------------------------------------------------------ device query
say "caffe device_query -gpu $GPU"
if GLOG_logtostderr=1 "$ROOT/bin/caffe" device_query -gpu "$GPU" > "$LOGS/device-query.log" 2>&1; then
  sed -n 's/.*\] \(Device id\|Major\|Minor\|Name\|Total global\|Clock rate\|Concurrent\|Number of multi\|Kernel exec\)/\1/p' \
    "$LOGS/device-query.log"
else
  say "device_query FAILED (see $LOGS/device-query.log):"; tail -n 5 "$LOGS/device-query.log"; STATUS=1
fi

# ------------------------------------------------------------ unit tests
if [ "$DO_TESTS" = 1 ]; then
  say "Caffe unit tests, GPU and CPU: --gtest_filter='$FILTER' (log: $LOGS/unit-tests.log)"
  t0=$(date +%s)
  # Tests read src/caffe/test/test_data/ relative to the current folder.
  (cd "$ROOT" && GLOG_minloglevel=1 ./bin/test.testbin --gtest_filter="$FILTER" \
      --gtest_output="xml:$LOGS/unit-tests.xml") > "$LOGS/unit-tests.log" 2>&1
  rc=$?
  t1=$(date +%s)
  grep -E '^\[  (PASSED|FAILED) +\]|tests? ran|DISABLED' "$LOGS/unit-tests.log" | tail -n 40
  if [ -f "$LOGS/unit-tests.xml" ]; then
    # per device: typed tests carry CPUDevice / GPUDevice in their type_param
    awk '/<testcase /{ if ($0 ~ /status="notrun"/) { cur=""; next }
                       cur = ($0 ~ /GPUDevice/) ? "GPU" : (($0 ~ /CPUDevice/) ? "CPU" : "untyped(GPU-only cuDNN or device-free)");
                       n[cur]++; failed = 0; next }
         /<failure/ { if (cur != "" && !failed) { f[cur]++; failed = 1 } }
         END { for (k in n) printf "    %-40s %4d run, %4d passed, %3d failed\n", k, n[k], n[k]-f[k], f[k] }' \
      "$LOGS/unit-tests.xml" | sort
  fi
  say "unit tests: exit $rc, $((t1 - t0)) s"
  [ "$rc" = 0 ] || STATUS=1
fi

# ------------------------------------------------------------ caffe time
time_net() { # $1 model $2 net (deploy|train-input) $3 phase $4 device args...
  local m="$1" n="$2" ph="$3"; shift 3
  local tag; tag="$m-$n-$([ "$1" = -gpu ] && echo gpu || echo cpu)"
  if GLOG_logtostderr=1 "$ROOT/bin/caffe" time -model "$ROOT/nets/$m/$n.prototxt" -phase "$ph" "$@" \
       > "$LOGS/time-$tag.log" 2>&1; then
    local fwd fb
    fwd="$(sed -n 's/.*Average Forward pass: \([0-9.]*\) ms.*/\1/p' "$LOGS/time-$tag.log" | tail -n1)"
    fb="$(sed -n 's/.*Average Forward-Backward: \([0-9.]*\) ms.*/\1/p' "$LOGS/time-$tag.log" | tail -n1)"
    printf '%-11s %-12s %-5s %-4s %12s %20s\n' "$m" "$n" "$ph" "${tag##*-}" "$fwd" "$fb" | tee -a "$LOGS/time-summary.txt"
  else
    say "caffe time FAILED for $tag (see $LOGS/time-$tag.log):"; tail -n 5 "$LOGS/time-$tag.log"; STATUS=1
  fi
}
if [ "$DO_TIME" = 1 ]; then
  say "caffe time, 500x500, $ITER iterations (logs: $LOGS/time-*.log)"
  : > "$LOGS/time-summary.txt"
  printf '%-11s %-12s %-5s %-4s %12s %20s\n' model net phase dev "forward ms" "forward+backward ms" | tee -a "$LOGS/time-summary.txt"
  for m in $MODELS; do
    time_net "$m" deploy TEST -gpu "$GPU" -iterations "$ITER"
    time_net "$m" train-input TRAIN -gpu "$GPU" -iterations "$ITER"
  done
  if [ "$CPU_TIME" = 1 ]; then
    for m in $MODELS; do time_net "$m" deploy TEST -iterations 1; done
  fi
fi

say "done: $([ "$STATUS" = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED') (logs: $LOGS)"
exit "$STATUS"
