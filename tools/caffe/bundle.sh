#!/usr/bin/env bash
# Pack the CUDA build of Caffe into a relocatable bundle for a GPU machine that
# has an NVIDIA driver but none of this machine's libraries, no Python of ours
# and no network:
#
#   tools/caffe/bundle.sh [build.sh options: --cuda-arch "80 90" --cudnn --jobs N]
#                         [--with-cuda-libs] [--out FILE] [--dir CACHE_DIR]
#
# Builds (or finds in the cache) the `build.sh --cuda` build with the same
# options, builds Caffe's unit-test binary (make test.testbin) there, and writes
# ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe/cuda-<key>/bundle.tar.gz (and a copy at
# FILE with --out), which unpacks to fcn-caffe-gpu/. --dir bundles the given
# cache folder (cuda-<key>) as it is, without asking build.sh for the key.
# The bundle unpacks to fcn-caffe-gpu/:
#   bin/caffe, bin/test.testbin    rpath $ORIGIN/../lib
#   lib/                           libcaffe and every shared library they need
#                                  but glibc, libstdc++, libgcc_s and the driver
#                                  (cuBLAS, cuRAND, NCCL, cuDNN only with
#                                  --with-cuda-libs: hundreds of MB; else
#                                  host-libs.txt names them and
#                                  run-gpu-checks.sh finds them on the machine)
#   src/caffe/test/test_data/      read by the unit tests, relative to fcn-caffe-gpu/
#   nets/voc-fcn{32,16,8}s/        deploy.prototxt, and train-input.prototxt: the
#                                  train net with Input blobs for its Python data
#                                  layer (tools/caffe/gpu_nets.py)
#   train/                         a small FCN with its data in LMDB, its start
#                                  weights and solver (tools/caffe/lmdb_recipe.py)
#   run-gpu-checks.sh              device query, caffe time, a training run
#   train-check.sh                 (train-check.sh on train/), unit tests on GPU and CPU
#   BUILD-INFO.txt, build-info.json
# There: tar -xzf bundle.tar.gz && bash fcn-caffe-gpu/run-gpu-checks.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_ARGS=(); OUTFILE=""; WITH_CUDA_LIBS=0; JOBS="$(nproc)"; KEYDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTFILE="$2"; shift ;;
    --dir) KEYDIR="$(cd "$2" && pwd)"; shift ;;
    --with-cuda-libs) WITH_CUDA_LIBS=1 ;;
    --jobs) JOBS="$2"; BUILD_ARGS+=(--jobs "$2"); shift ;;
    --cuda-arch|--venv) BUILD_ARGS+=("$1" "$2"); shift ;;
    --cuda) ;;
    --cudnn|--force) BUILD_ARGS+=("$1") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bundle.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
step() { echo "==> [bundle] $*"; }
command -v patchelf >/dev/null || {
  echo "bundle.sh: needs patchelf (apt-get install patchelf)" >&2; exit 1; }

[ -n "$KEYDIR" ] || KEYDIR="$(bash "$HERE/build.sh" --cuda --print-dir ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"})"
DIST="$KEYDIR/dist"
[ -f "$DIST/.complete" ] || { echo "bundle.sh: no complete build in $KEYDIR" >&2; exit 1; }
grep -q '"variant": "cuda"' "$DIST/build-info.json" || { echo "bundle.sh: $KEYDIR is not a CUDA build" >&2; exit 1; }
PY="$(sed -n 's/.*"-DPYTHON_EXECUTABLE=\(.*\)",*$/\1/p' "$DIST/build-info.json" | head -n1)"
[ -x "$PY" ] || PY="$REPO/.venv/bin/python"

TESTBIN="$KEYDIR/build/test/test.testbin"
if ! make -C "$KEYDIR/build" -q test.testbin >/dev/null 2>&1; then
  step "building Caffe's unit tests (make test.testbin, $JOBS jobs; log: $KEYDIR/test-build.log)"
  t0=$(date +%s)
  if ! make -C "$KEYDIR/build" -j"$JOBS" test.testbin > "$KEYDIR/test-build.log" 2>&1; then
    echo "bundle.sh: make test.testbin failed; first error:" >&2
    grep -m1 -B2 -A6 -E 'error:|Error [0-9]+|undefined reference' "$KEYDIR/test-build.log" >&2 || tail -n 30 "$KEYDIR/test-build.log" >&2
    exit 1
  fi
  step "test.testbin built in $(( $(date +%s) - t0 )) s"
fi

STAGE="$KEYDIR/bundle"
B="$STAGE/fcn-caffe-gpu"
rm -rf "$STAGE" && mkdir -p "$B/bin" "$B/lib" "$B/nets" "$B/src/caffe/test"
step "staging $B"
cp -L "$DIST/bin/caffe" "$TESTBIN" "$B/bin/"
cp -L "$DIST"/lib/libcaffe.so.* "$B/lib/"
cp -r "$KEYDIR/src/src/caffe/test/test_data" "$B/src/caffe/test/"
cp "$HERE/run-gpu-checks.sh" "$HERE/train-check.sh" "$B/" && chmod +x "$B/run-gpu-checks.sh" "$B/train-check.sh"
cp "$DIST/build-info.json" "$B/"
"$PY" "$HERE/gpu_nets.py" "$DIST/python/caffe/proto/caffe_pb2.py" "$B/nets" >/dev/null
# The training run's nets, LMDBs and start weights, made with the venv's pycaffe
# (CPU or GPU build alike: both read and write the same files).
"$PY" "$HERE/lmdb_recipe.py" "$B/train" >/dev/null || {
  echo "bundle.sh: tools/caffe/lmdb_recipe.py failed (it needs the project's venv with pycaffe: make caffe)" >&2; exit 1; }

# Shared libraries: everything ldd resolves, but what any Linux with an NVIDIA
# driver has (glibc, libstdc++, libgcc_s, the driver) and, unless asked, the
# big CUDA math libraries, which the GPU machine provides.
is_system() {
  case "$1" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*) return 0 ;;
    libstdc++.so*|libgcc_s.so*|libcuda.so*|libnvidia-*) return 0 ;;
  esac
  return 1
}
is_cuda_big() {
  case "$1" in libcublas.so*|libcublasLt.so*|libcurand.so*|libcudnn*.so*|libnvblas.so*|libnccl.so*) return 0 ;; esac
  return 1
}
: > "$STAGE/host-libs.txt"
ldd "$B/bin/caffe" "$B/bin/test.testbin" "$B"/lib/libcaffe.so.* | awk '$2 == "=>" {print $1, $3}' | sort -u |
while read -r name path; do
  is_system "$name" && continue
  [ "$path" = "not" ] && { echo "bundle.sh: $name is not found by ldd" >&2; exit 1; }
  case "$name" in libcaffe.so*) continue ;; esac
  if is_cuda_big "$name" && [ "$WITH_CUDA_LIBS" = 0 ]; then echo "$name" >> "$STAGE/host-libs.txt"; continue; fi
  [ -e "$B/lib/$name" ] || cp -L "$path" "$B/lib/$name"
done
CUDNN_SO="$(ldd "$B"/lib/libcaffe.so.* | awk '$1 ~ /^libcudnn\.so/ {print $3; exit}')"
if [ "$WITH_CUDA_LIBS" = 1 ] && [ -n "$CUDNN_SO" ]; then # cuDNN 9 loads its engines at run time
  cp -L "$(dirname "$(readlink -f "$CUDNN_SO")")"/libcudnn_*.so.* "$B/lib/"
fi
{ echo "# Libraries the bundle needs from the GPU machine (run-gpu-checks.sh looks for them)"
  sort -u "$STAGE/host-libs.txt"; } > "$B/host-libs.txt"
rm -f "$STAGE/host-libs.txt"

step "setting \$ORIGIN rpaths with patchelf"
for f in "$B"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib' "$f"; done
for f in "$B"/lib/*.so*; do chmod u+w "$f"; patchelf --set-rpath '$ORIGIN' "$f"; done

GLIBC_MAX="$(for f in "$B"/bin/* "$B"/lib/*; do objdump -T "$f" 2>/dev/null; done |
             grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -n1)"
{
  echo "fcn-caffe-gpu bundle of $(basename "$KEYDIR") ($(date -u +%Y-%m-%dT%H:%MZ))"
  sed -n 's/.*"-DCUDA_ARCH_BIN=\(.*\)",*$/  CUDA arch (SASS): \1/p; s/.*"-DCUDA_ARCH_PTX=\(.*\)",*$/  CUDA arch (PTX):  \1/p; s/.*"-DUSE_CUDNN=\(.*\)",*$/  cuDNN:            \1/p' \
    "$DIST/build-info.json"
  sed -n 's/^CUDA_VERSION:[A-Z]*=\(.*\)/  CUDA:             \1/p' "$KEYDIR/build/CMakeCache.txt"
  echo "  needs:            glibc >= ${GLIBC_MAX#GLIBC_}, libstdc++ from gcc >= 12, an NVIDIA driver for CUDA 13"
  echo "  from the machine: $(grep -v '^#' "$B/host-libs.txt" | tr '\n' ' ')"
} > "$B/BUILD-INFO.txt"

step "packing"
rm -f "$KEYDIR/bundle.tar.gz"
tar -C "$STAGE" -cf - fcn-caffe-gpu | gzip -9 > "$KEYDIR/bundle.tar.gz.part"
mv "$KEYDIR/bundle.tar.gz.part" "$KEYDIR/bundle.tar.gz"
SIZE=$(stat -c %s "$KEYDIR/bundle.tar.gz")
step "$KEYDIR/bundle.tar.gz: $((SIZE / 1048576)) MiB ($(du -sm "$B" | cut -f1) MiB unpacked)"
cat "$B/BUILD-INFO.txt"
[ "$SIZE" -le $((60 * 1048576)) ] || step "WARNING: over 60 MiB (too big to carry to the device machine)"
if [ -n "$OUTFILE" ]; then
  mkdir -p "$(dirname "$OUTFILE")" && cp "$KEYDIR/bundle.tar.gz" "$OUTFILE"
  step "copied to $OUTFILE"
fi
