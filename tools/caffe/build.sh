#!/usr/bin/env bash
# Build Caffe (pycaffe + the caffe tool) from its official source and install
# it into the project's virtual environment.
#
#   tools/caffe/build.sh [--cuda] [--cuda-arch "90"] [--cudnn] [--no-nccl] [--venv DIR]
#                        [--jobs N] [--force] [--no-install] [--print-dir] [--info]
#
# Source: Debian's `caffe` source package 1.0.0+git20180821.99bd997-8 (its orig
# tarball is byte-for-byte BVLC/caffe at commit 99bd997, checked by sha256), or
# the user's own BVLC/caffe checkout given as CAFFE_SRC=/path. Debian's patch
# series and the project's patches (tools/caffe/patches/series) are applied to
# a private copy; the user's checkout is never modified.
#
# Result: cached under ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe/<key>/, where the
# key hashes the source identity, every patch, the build options, the recipe
# version and the Python/numpy that _caffe.so is compiled against. A second run with
# the same key only (re)installs into the venv: seconds.
#
# Options:
#   --cuda            GPU build (CPU_ONLY=OFF). Needs nvcc (CUDA_TOOLKIT_ROOT_DIR,
#                     default /usr/local/cuda); the CUDA-13 source patches are
#                     listed in patches/series.cuda. When the toolkit
#                     lacks cuBLAS / cuRAND (/ cuDNN), the pinned NVIDIA wheels
#                     below are installed under the cache and combined with it
#                     into one toolkit root (symbolic links), used for the build.
#   --cuda-arch LIST  space-separated compute capabilities, e.g. "75 80 86 89 90"
#                     (default: $CUDA_ARCH or "90"; the highest also gets PTX).
#   --cudnn           build with cuDNN (only with --cuda; CUDNN_ROOT=DIR for one
#                     outside the toolkit); cuDNN-9 patches: patches/series.cudnn.
#   --no-nccl         a --cuda build without NCCL (Caffe's multi-GPU training
#                     needs it; it is on by default, from the toolkit or the
#                     pinned wheel below).
#   --no-install      build (or find) the cached build, leave the venv as it is.
#   --print-dir       as --no-install, then print only the build's cache folder
#                     on stdout (progress goes to stderr); for scripts.
#   --venv DIR        virtual environment to install into (default: <repo>/.venv).
#   --jobs N          parallel compile jobs (default: number of cores).
#   --force           rebuild even when the cache holds this key.
#   --info            print what is installed in the venv and exit.
#   --without PATCH   leave the project patch PATCH (a name in patches/series)
#                     out, e.g. to build stock Caffe's convolution for
#                     tools/benchmark.py's comparison (with --no-install).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

DEB_VERSION="1.0.0+git20180821.99bd997-8"
DEB_SUITE="bullseye"
ORIG_TARBALL="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
# Bump when a change to this recipe changes what gets built (part of the key).
RECIPE_VERSION=1
# CUDA builds only: their own recipe version and the NVIDIA wheels (cuBLAS,
# cuRAND, cuDNN, NCCL) used when the CUDA toolkit lacks those libraries.
CUDA_RECIPE_VERSION=1
CUDA_WHEEL_CUBLAS="nvidia-cublas==13.0.2.14"
CUDA_WHEEL_CURAND="nvidia-curand==10.4.0.35"
CUDA_WHEEL_CUDNN="nvidia-cudnn-cu13==9.28.0.42"
CUDA_WHEEL_NCCL="nvidia-nccl-cu13==2.32.3"

CUDA=0; CUDNN=0; NCCL=1; CUDA_ARCH_LIST="${CUDA_ARCH:-90}"
VENV="$REPO/.venv"; JOBS="$(nproc)"; FORCE=0; INFO=0; INSTALL=1; PRINT_DIR=0; WITHOUT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) CUDA=1 ;;
    --cudnn) CUDNN=1 ;;
    --no-nccl) NCCL=0 ;;
    --cuda-arch) CUDA_ARCH_LIST="$2"; shift ;;
    --venv) VENV="$(cd "$2" && pwd)"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --force) FORCE=1 ;;
    --no-install) INSTALL=0 ;;
    --print-dir) INSTALL=0; PRINT_DIR=1 ;;
    --info) INFO=1 ;;
    --without) WITHOUT+=("$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$CUDNN" = 1 ] && [ "$CUDA" = 0 ] && { echo "build.sh: --cudnn needs --cuda" >&2; exit 2; }
[ "$NCCL" = 0 ] && [ "$CUDA" = 0 ] && { echo "build.sh: --no-nccl goes with --cuda (CPU builds have no NCCL)" >&2; exit 2; }
if [ "$PRINT_DIR" = 1 ]; then exec 3>&1 1>&2; fi   # stdout: the folder alone

PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "build.sh: no virtual environment at $VENV (run 'make venv' first)" >&2; exit 2; }
if [ "$INFO" = 1 ]; then exec "$PY" "$HERE/info.py"; fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe"
mkdir -p "$CACHE_ROOT"
step() { echo "==> [caffe] $*"; }

# ---------------------------------------------------------------- build deps
APT_PACKAGES="cmake make g++ patch pkg-config libboost-filesystem-dev libboost-system-dev
 libboost-thread-dev libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev
 libleveldb-dev liblmdb-dev libopenblas-dev libprotobuf-dev protobuf-compiler libsnappy-dev"
step "checking build dependencies"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing with apt-get:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "build.sh: missing build dependencies. Install them as root with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends$missing" >&2
    exit 1
  fi
fi

# ------------------------------------------------------------ source identity
PATCH_FILES=()
debian_series() { # the Debian series file lists each patch once, in order
  grep -v '^\s*#' "$1/debian/patches/series" | sed '/^\s*$/d' | awk '!seen[$0]++'
}
project_series() {
  local f="$HERE/patches/series"
  [ "$CUDA" = 1 ] && f="$f $HERE/patches/series.cuda"
  [ "$CUDNN" = 1 ] && f="$f $HERE/patches/series.cudnn"
  local p
  for p in $(cat $f 2>/dev/null | grep -v '^\s*#' | sed '/^\s*$/d'); do
    [[ " ${WITHOUT[*]} " == *" $p "* ]] || echo "$p"
  done
}

DL="$CACHE_ROOT/downloads"
mkdir -p "$DL"
NEED=("caffe_$DEB_VERSION.debian.tar.xz")             # Debian's patch series, used for every source
[ -z "${CAFFE_SRC:-}" ] && NEED+=("$ORIG_TARBALL")
for f in "${NEED[@]}"; do
  [ -f "$DL/$f" ] && continue
  step "downloading Debian source package caffe=$DEB_VERSION ($DEB_SUITE)"
  # A temporary deb-src list for the suite, on the Debian mirror this machine's
  # apt already uses (read from its configuration, never written here).
  MIRROR="$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -m1 -E '/debian/?$' || true)"
  [ -n "$MIRROR" ] || MIRROR="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)"
  [ -n "$MIRROR" ] || MIRROR="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)"
  [ -n "$MIRROR" ] || { echo "build.sh: no Debian mirror found in this machine's apt configuration" >&2; exit 1; }
  APT_TMP="$(mktemp -d)"
  mkdir -p "$APT_TMP/lists/partial"
  printf 'deb-src %s %s main\n' "$MIRROR" "$DEB_SUITE" > "$APT_TMP/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$APT_TMP/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$APT_TMP/lists" -o "APT::Sandbox::User=root")
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$APT_TMP" && apt-get "${APT_OPTS[@]}" source --download-only -qq "caffe=$DEB_VERSION" >/dev/null)
  for g in "$ORIG_TARBALL" "caffe_$DEB_VERSION.debian.tar.xz"; do mv "$APT_TMP/$g" "$DL/$g.part" && mv "$DL/$g.part" "$DL/$g"; done
  rm -rf "$APT_TMP"
  break
done
DEBIAN_ID="debian:$DEB_VERSION:$(sha256sum "$DL/caffe_$DEB_VERSION.debian.tar.xz" | cut -c1-16)"

if [ -n "${CAFFE_SRC:-}" ]; then
  [ -f "$CAFFE_SRC/CMakeLists.txt" ] && [ -f "$CAFFE_SRC/src/caffe/net.cpp" ] || {
    echo "build.sh: CAFFE_SRC=$CAFFE_SRC is not a BVLC/caffe source tree (no CMakeLists.txt / src/caffe/net.cpp)" >&2; exit 2; }
  if git -C "$CAFFE_SRC" rev-parse HEAD >/dev/null 2>&1; then
    SRC_ID="git:$(git -C "$CAFFE_SRC" rev-parse HEAD)+$(git -C "$CAFFE_SRC" diff HEAD | sha256sum | cut -c1-16)"
  else
    SRC_ID="tree:$(cd "$CAFFE_SRC" && find CMakeLists.txt cmake include src python tools -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  fi
  SRC_DESC="CAFFE_SRC=$CAFFE_SRC ($SRC_ID)"
else
  step "verifying $ORIG_TARBALL sha256"
  echo "$ORIG_SHA256  $DL/$ORIG_TARBALL" | sha256sum -c --quiet - || {
    echo "build.sh: sha256 of $DL/$ORIG_TARBALL is not $ORIG_SHA256; delete it and retry" >&2; exit 1; }
  SRC_ID="orig:$ORIG_SHA256"
  SRC_DESC="Debian caffe $DEB_VERSION orig tarball, sha256 $ORIG_SHA256 (BVLC/caffe 99bd997)"
fi
SRC_ID="$SRC_ID $DEBIAN_ID"

PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
NUMPY_VER="$("$PY" -c 'import numpy; print(numpy.__version__)')"
CMAKE_OPTS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_python=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF -DBUILD_python_layer=ON
  -Dpython_version="$PYVER" -DPYTHON_EXECUTABLE="$PY"
  -DBLAS=Open -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DUSE_OPENCV=OFF
  # libcaffe is installed next to _caffe.so and the caffe tool: find it there.
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN:$ORIGIN/../lib'
)
CUDA_KEY_INFO=""
if [ "$CUDA" = 1 ]; then
  # ---- the CUDA toolkit: nvcc + runtime from CUDA_TOOLKIT_ROOT_DIR, plus the
  # pinned NVIDIA wheels for whatever of cuBLAS / cuRAND / cuDNN / NCCL it lacks.
  CUDA_BASE="$(readlink -f "${CUDA_TOOLKIT_ROOT_DIR:-/usr/local/cuda}")"
  [ -x "$CUDA_BASE/bin/nvcc" ] || {
    echo "build.sh: no nvcc in $CUDA_BASE/bin: install the CUDA toolkit or set CUDA_TOOLKIT_ROOT_DIR" >&2; exit 2; }
  NVCC_VERSION="$("$CUDA_BASE/bin/nvcc" --version | grep -o 'V[0-9][0-9.]*' | tail -n1)"
  tk_has() { # $1 header, $2 library name: both in the toolkit?
    { [ -e "$CUDA_BASE/include/$1" ] || [ -e "$CUDA_BASE/targets/x86_64-linux/include/$1" ]; } &&
      ls "$CUDA_BASE"/lib64/lib"$2".so* "$CUDA_BASE"/targets/x86_64-linux/lib/lib"$2".so* >/dev/null 2>&1
  }
  WHEELS=()
  tk_has cublas_v2.h cublas || WHEELS+=("$CUDA_WHEEL_CUBLAS")
  tk_has curand.h curand || WHEELS+=("$CUDA_WHEEL_CURAND")
  if [ "$CUDNN" = 1 ] && [ -z "${CUDNN_ROOT:-}" ]; then tk_has cudnn.h cudnn || WHEELS+=("$CUDA_WHEEL_CUDNN"); fi
  if [ "$NCCL" = 1 ]; then tk_has nccl.h nccl || WHEELS+=("$CUDA_WHEEL_NCCL"); fi
  CUDA_ROOT="$CUDA_BASE"
  if [ "${#WHEELS[@]}" -gt 0 ]; then
    TK_ID="$(echo "$CUDA_BASE $NVCC_VERSION ${WHEELS[*]} $CUDA_RECIPE_VERSION" | sha256sum | cut -c1-12)"
    TK="$CACHE_ROOT/toolkit/$TK_ID"
    CUDA_ROOT="$TK/root"
    if [ ! -f "$TK/.complete" ]; then
      step "assembling a CUDA toolkit root in $TK: $CUDA_BASE ($NVCC_VERSION) + ${WHEELS[*]}"
      rm -rf "$TK" && mkdir -p "$TK/root/include" "$TK/root/lib" "$TK/root/targets/x86_64-linux"
      WHEEL_DIRS=()
      for w in "${WHEELS[@]}"; do # each pinned wheel installed once, shared by the toolkit roots
        wd="$CACHE_ROOT/toolkit/wheels/$w"
        if [ ! -f "$wd/.complete" ]; then
          rm -rf "$wd"
          "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --target "$wd" "$w"
          touch "$wd/.complete"
        fi
        WHEEL_DIRS+=("$wd")
      done
      for e in "$CUDA_BASE"/*; do # everything but include/ and lib*/ is the toolkit's own
        case "$(basename "$e")" in include|lib|lib64|targets) ;; *) ln -s "$e" "$TK/root/" ;; esac
      done
      INC_DIRS=("$CUDA_BASE/include"); LIB_DIRS=("$CUDA_BASE/lib64")
      for wd in "${WHEEL_DIRS[@]}"; do INC_DIRS+=("$wd"/nvidia/*/include); LIB_DIRS+=("$wd"/nvidia/*/lib); done
      for d in "${INC_DIRS[@]}"; do
        if [ -d "$d" ]; then for f in "$d"/*; do ln -sfn "$f" "$TK/root/include/"; done; fi
      done
      for d in "${LIB_DIRS[@]}"; do
        if [ -d "$d" ]; then for f in "$d"/*; do ln -sfn "$f" "$TK/root/lib/"; done; fi
      done
      # the wheels ship only versioned libraries (libcublas.so.13): add the names the linker looks for
      for f in "$TK"/root/lib/lib*.so.[0-9]*; do
        n="${f%%.so.*}.so"; [ -e "$n" ] || ln -s "$(basename "$f")" "$n"
      done
      ln -s lib "$TK/root/lib64"
      ln -s ../../include "$TK/root/targets/x86_64-linux/include"
      ln -s ../../lib "$TK/root/targets/x86_64-linux/lib"
      touch "$TK/.complete"
    fi
  fi
  CUDA_KEY_INFO="cuda $CUDA_BASE $NVCC_VERSION ${WHEELS[*]} recipe $CUDA_RECIPE_VERSION"
  ARCHS=($CUDA_ARCH_LIST)
  for i in "${!CMAKE_OPTS[@]}"; do # the caffe tool and _caffe.so also find cuBLAS & co. in the toolkit root
    case "${CMAKE_OPTS[$i]}" in -DCMAKE_INSTALL_RPATH=*) CMAKE_OPTS[$i]="${CMAKE_OPTS[$i]}:$CUDA_ROOT/lib" ;; esac
  done
  CMAKE_OPTS+=(-DCPU_ONLY=OFF -DCUDA_ARCH_NAME=Manual "-DCUDA_ARCH_BIN=${CUDA_ARCH_LIST}"
               "-DCUDA_ARCH_PTX=${ARCHS[${#ARCHS[@]}-1]}" -DUSE_CUDNN=$([ "$CUDNN" = 1 ] && echo ON || echo OFF)
               "-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_ROOT"
               # CUDA 13's thrust/cub (CCCL) need C++17: say so for g++ and nvcc alike
               -DCMAKE_CXX_STANDARD=17 -DCMAKE_CXX_STANDARD_REQUIRED=ON -DCUDA_NVCC_FLAGS=-std=c++17)
  [ -n "${CUDNN_ROOT:-}" ] && CMAKE_OPTS+=("-DCUDNN_ROOT=$CUDNN_ROOT")
  if [ "$NCCL" = 1 ]; then
    # NCCL from the toolkit root named outright: Caffe's FindNCCL would take a
    # system copy first, whatever its version.
    NCCL_H="$(ls -d "$CUDA_ROOT"/include/nccl.h "$CUDA_ROOT"/targets/x86_64-linux/include/nccl.h 2>/dev/null | head -n1)"
    NCCL_SO="$(ls -d "$CUDA_ROOT"/lib/libnccl.so* "$CUDA_ROOT"/lib64/libnccl.so* \
                     "$CUDA_ROOT"/targets/x86_64-linux/lib/libnccl.so* 2>/dev/null | head -n1)"
    [ -n "$NCCL_H" ] && [ -n "$NCCL_SO" ] || {
      echo "build.sh: no NCCL (nccl.h, libnccl.so) in $CUDA_ROOT; build with --no-nccl to go without" >&2; exit 1; }
    CMAKE_OPTS+=(-DUSE_NCCL=ON "-DNCCL_INCLUDE_DIR=$(dirname "$NCCL_H")" "-DNCCL_LIBRARIES=$NCCL_SO")
  else
    CMAKE_OPTS+=(-DUSE_NCCL=OFF)
  fi
else
  CMAKE_OPTS+=(-DCPU_ONLY=ON -DUSE_CUDNN=OFF)
fi

for p in "${WITHOUT[@]}"; do
  grep -qx "$p" "$HERE/patches/series" || { echo "build.sh: --without $p: no such patch in patches/series" >&2; exit 2; }
done
PROJECT_PATCHES="$(project_series)"
KEY="$( {
  # The venv's path is left out: any clone's venv with the same Python and
  # numpy versions shares the build.
  echo "$SRC_ID"; echo "python $PYVER numpy $NUMPY_VER"; printf '%s\n' "${CMAKE_OPTS[@]}" | grep -v '^-DPYTHON_EXECUTABLE='
  for p in $PROJECT_PATCHES; do echo "$p"; cat "$HERE/patches/$p"; done
  echo "recipe $RECIPE_VERSION"
  if [ -n "$CUDA_KEY_INFO" ]; then echo "$CUDA_KEY_INFO"; fi   # CUDA builds only
} | sha256sum | cut -c1-16)"
VARIANT="$([ "$CUDA" = 1 ] && echo cuda || echo cpu)"
KEYDIR="$CACHE_ROOT/$VARIANT-$KEY"
DIST="$KEYDIR/dist"
LOG="$KEYDIR/build.log"

# ------------------------------------------------------------------ build
# One run per cache key at a time: a second one waits, then finds the build.
exec 9>"$CACHE_ROOT/.$VARIANT-$KEY.lock"
if ! flock -n 9; then step "another run is building $KEYDIR: waiting for it"; flock 9; fi
if [ "$FORCE" = 1 ] || [ ! -f "$DIST/.complete" ]; then
  rm -rf "$KEYDIR/src" "$DIST"
  mkdir -p "$KEYDIR/src" "$KEYDIR/build"
  : > "$LOG"
  echo "==> [caffe] cache key $KEY: building in $KEYDIR (log: $LOG)"
  step "unpacking source: $SRC_DESC"
  if [ -n "${CAFFE_SRC:-}" ]; then
    (cd "$CAFFE_SRC" && tar --exclude=.git --exclude=./build --exclude=./debian -cf - .) | tar -xf - -C "$KEYDIR/src"
  else
    tar -xzf "$DL/$ORIG_TARBALL" -C "$KEYDIR/src"
  fi
  tar -xJf "$DL/caffe_$DEB_VERSION.debian.tar.xz" -C "$KEYDIR/src"
  applied=()
  apply_patch() { # $1 label, $2 file
    if ! patch -d "$KEYDIR/src" -p1 --forward --batch -s < "$2" >>"$LOG" 2>&1; then
      echo "build.sh: patch $1 does not apply to the source (see $LOG)" >&2; exit 1
    fi
    applied+=("$1")
  }
  step "applying Debian patch series"
  for p in $(debian_series "$KEYDIR/src"); do apply_patch "debian/$p" "$KEYDIR/src/debian/patches/$p"; done
  step "applying project patches"
  for p in $PROJECT_PATCHES; do apply_patch "project/$p" "$HERE/patches/$p"; done

  step "configuring with CMake ($VARIANT; log: $LOG)"
  if ! cmake -S "$KEYDIR/src" -B "$KEYDIR/build" "${CMAKE_OPTS[@]}" >>"$LOG" 2>&1; then
    echo "build.sh: CMake configuration failed; last lines of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1
  fi
  step "compiling caffe, pycaffe and the caffe tool with $JOBS jobs (about 10 minutes on 2 cores; log: $LOG)"
  # One goal per make call: CMake's top-level Makefile races when several
  # goals that share libcaffe are built in parallel.
  if ! { make -C "$KEYDIR/build" -j"$JOBS" caffe && make -C "$KEYDIR/build" -j"$JOBS" pycaffe &&
         make -C "$KEYDIR/build" -j"$JOBS" caffe.bin; } >>"$LOG" 2>&1; then
    echo "build.sh: compilation failed. First error:" >&2
    grep -m1 -B2 -A6 -E 'error:|Error [0-9]+|undefined reference' "$LOG" >&2 || tail -n 30 "$LOG" >&2
    echo "build.sh: full log: $LOG" >&2
    exit 1
  fi

  step "assembling $DIST"
  mkdir -p "$DIST/lib" "$DIST/bin" "$DIST/python"
  cp -L "$KEYDIR"/build/lib/libcaffe.so.* "$DIST/lib/"
  cp -L "$KEYDIR/build/tools/caffe" "$DIST/bin/caffe"
  cp -rL "$KEYDIR/src/python/caffe" "$DIST/python/caffe"
  rm -rf "$DIST/python/caffe/test" "$DIST/python/caffe/imagenet"
  find "$DIST/python" -name '__pycache__' -prune -exec rm -rf {} +
  "$PY" - "$DIST/build-info.json" "$KEY" "$SRC_DESC" "$VARIANT" "$PYVER" "$NUMPY_VER" "${applied[@]}" -- "${CMAKE_OPTS[@]}" <<'PYEOF'
import json, sys, re
out, key, src, variant, pyver, npver, *rest = sys.argv[1:]
sep = rest.index('--')
info = dict(key=key, source=src, variant=variant, python=pyver, numpy=npver,
            patches=rest[:sep], cmake_options=rest[sep + 1:], blas='OpenBLAS')
json.dump(info, open(out, 'w'), indent=1)
PYEOF
  touch "$DIST/.complete"
  step "build done"
else
  step "cache hit: $KEYDIR (key $KEY)"
fi

# ------------------------------------------------------- install into venv
if [ "$INSTALL" = 0 ]; then
  step "built, not installed (--no-install): $KEYDIR"
  if [ "$PRINT_DIR" = 1 ]; then echo "$KEYDIR" >&3; fi
  exit 0
fi
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
INSTALLED_KEY="$(cat "$SITE/caffe/.build-key" 2>/dev/null || true)"
if [ "$INSTALLED_KEY" != "$VARIANT-$KEY" ] || [ "$FORCE" = 1 ]; then
  step "installing pycaffe into $SITE and the caffe tool into $VENV/bin"
  rm -rf "$SITE/caffe.tmp" && cp -r "$DIST/python/caffe" "$SITE/caffe.tmp"
  cp -L "$DIST"/lib/libcaffe.so.* "$SITE/caffe.tmp/"      # found through _caffe.so's $ORIGIN rpath
  cp "$DIST/build-info.json" "$SITE/caffe.tmp/build-info.json"
  echo "$KEYDIR" > "$SITE/caffe.tmp/.build-cache"
  echo "$VARIANT-$KEY" > "$SITE/caffe.tmp/.build-key"
  rm -rf "$SITE/caffe" && mv "$SITE/caffe.tmp" "$SITE/caffe"
  mkdir -p "$VENV/lib"
  cp -L "$DIST"/lib/libcaffe.so.* "$VENV/lib/"              # for bin/caffe's $ORIGIN/../lib rpath
  cp "$DIST/bin/caffe" "$VENV/bin/caffe"
fi
"$PY" -c 'import caffe' || { echo "build.sh: 'import caffe' fails in $VENV" >&2; exit 1; }
step "pycaffe ready in $VENV ($VARIANT, key $KEY)"
