# Entry point. The README's two commands are `make demo` and `make test`;
# each first builds whatever is missing (venv, Python packages, Caffe).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CAFFE_BUILD_FLAGS ?=

.PHONY: all venv caffe caffe-info demo test caffe-unit-tests clean-venv
all: caffe

# The venv is rebuilt when requirements.txt changes.
$(VENV)/.requirements: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	cp requirements.txt $@

# The project's modules (layers, score, surgery, nets, ...) import from any
# folder, and Caffe's Python layers find `layers` (as `pip install -e` would),
# and under the reference release's module names (voc_layers, ...) the
# aliases in layers_aliases/. Rewritten when this Makefile changes.
$(VENV)/.paths: $(VENV)/.requirements Makefile
	printf '%s\n' "$(CURDIR)" "$(CURDIR)/layers_aliases" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fcn-project.pth"
	touch $@
venv: $(VENV)/.requirements $(VENV)/.paths

# Always runs the recipe: on a cache hit it takes seconds.
caffe: venv
	bash tools/caffe/build.sh $(CAFFE_BUILD_FLAGS)

caffe-info: caffe
	$(PY) tools/caffe/info.py

demo: caffe
	$(PY) demo.py

test: caffe
	$(PY) -m pytest -q tests

# Caffe's own unit tests for every layer FCN uses, on the cached Caffe build
# (CPU; CAFFE_BUILD_FLAGS="--cuda" for the GPU build, on a machine with a GPU):
# builds Caffe's test.testbin in the build's cache folder (about 7 minutes the
# first time on 2 cores) and runs it from the source root, where the tests find
# src/caffe/test/test_data/. Not part of `make test` or CI.
CAFFE_TEST_FILTER ?= *Convolution*:*Deconvolution*:*Crop*:*Pooling*:*ReLU*:*Dropout*:*Eltwise*:*Scale*:*Concat*:*SoftmaxWithLoss*:*Net*:*SGDSolver*
caffe-unit-tests: venv
	@set -e; dir="$$(bash tools/caffe/build.sh --print-dir $(CAFFE_BUILD_FLAGS))"; \
	echo "==> [caffe-unit-tests] make test.testbin in $$dir/build (log: $$dir/test-build.log)"; \
	if ! make --no-print-directory -C "$$dir/build" -j"$$(nproc)" test.testbin > "$$dir/test-build.log" 2>&1; then \
	  tail -n 30 "$$dir/test-build.log"; exit 1; fi; \
	echo "==> [caffe-unit-tests] test.testbin --gtest_filter='$(CAFFE_TEST_FILTER)' (in $$dir/src)"; \
	cd "$$dir/src" && "$$dir/build/test/test.testbin" --gtest_filter='$(CAFFE_TEST_FILTER)'

clean-venv:
	rm -rf $(VENV)
