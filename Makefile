# Two commands for a newcomer: `make demo` and `make test`.
# Each creates .venv when missing and installs the package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build in .venv. The default is PyPI's, which on Linux is the CUDA
# build (about 5 GB in .venv). Another one, e.g. an older torch:
#   make test TORCH_SPEC="torch==2.13.0"
# A new TORCH_SPEC is installed into the existing .venv; the torch it leaves
# is then pinned (a pip constraint) while the package and its other
# dependencies go in, so that pip never swaps it for another.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)
DEMO_OUT ?= demo_out

.PHONY: install test demo bench clean end2you-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# Named after TORCH_SPEC: another spec makes .installed out of date.
$(TORCH_STAMP): | $(BIN)/python
	rm -f $(VENV)/.torch-*
	touch $@

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(VENV)/torch-constraint.txt
	$(BIN)/pip install --quiet -c $(VENV)/torch-constraint.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

# mypy (settings in setup.cfg: every function annotated, but in the modules listed
# there as not yet annotated), then the tests.
test: install
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/e2y-visual generate tests/data/demo.csv --out $(DEMO_OUT)/hdf5 --preview
	$(BIN)/e2y-visual predict tests/data/single_face.mp4 tests/data/face_noface.mov \
		--model resnet18-small-fer2013-cpu --out $(DEMO_OUT)/predict --overwrite
	@echo "Wrote $(DEMO_OUT)/hdf5 (face crops, previews/*.png, manifest.json) and"
	@echo "$(DEMO_OUT)/predict (per-frame emotion CSVs and plots)"

# CPU by default (small model sizes); on a GPU: make bench BENCH_ARGS="--device cuda --batch 64"
BENCH_ARGS ?= --device cpu --small
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# A separate venv with End2You's own generator, for `python -m bench.end2you`.
# End2You is never installed into .venv nor copied here: give its source with
# END2YOU_SRC=/path/to/end2you (a checkout of github.com/end2you/end2you), or
# pass --end2you-src to the bench instead. torch and torchvision are the
# local build ($(TORCH_SPEC), with the CUDA libraries it links against: without
# them `import torch` fails on libcudnn.so.9); facenet-pytorch goes in with
# --no-deps so that pip never resolves torch for it. End2You's generator
# needs moviepy 1.x (`moviepy.editor`, gone in 2.x); `import end2you` also
# imports sklearn and tensorboard. Its generator ran with NumPy 1.26 and 2.4.
E2Y_VENV ?= .venv-end2you
END2YOU_SRC ?=
E2Y_DEPS ?= numpy moviepy==1.0.3 decorator imageio imageio-ffmpeg proglog tqdm \
	requests pillow h5py scikit-learn tensorboard

end2you-venv:
	test -x $(E2Y_VENV)/bin/python || $(PYTHON) -m venv $(E2Y_VENV)
	$(E2Y_VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(E2Y_VENV)/bin/pip install --quiet $(TORCH_SPEC) $(E2Y_DEPS)
	$(E2Y_VENV)/bin/pip install --quiet --no-deps facenet-pytorch==2.5.3
	test -z "$(END2YOU_SRC)" || $(E2Y_VENV)/bin/pip install --quiet --no-deps "$(END2YOU_SRC)"
	$(E2Y_VENV)/bin/python -c "import torch, facenet_pytorch, moviepy.editor; print('torch', torch.__version__)"

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
