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
	@# The project's modules (layers, score, surgery, nets, ...) import from any
	@# folder, and Caffe's Python layers find `layers` (as `pip install -e` would).
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fcn-project.pth"
	cp requirements.txt $@
venv: $(VENV)/.requirements

# Always runs the recipe: on a cache hit it takes seconds.
caffe: venv
	bash tools/caffe/build.sh $(CAFFE_BUILD_FLAGS)

caffe-info: caffe
	$(PY) tools/caffe/info.py

demo: caffe
	$(PY) demo.py

test: caffe
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
