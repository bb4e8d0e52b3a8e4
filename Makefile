# Two commands: `make demo` and `make test`. Each does the whole set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is pinned so no resolver ever pulls several GB of CUDA wheels.
# Override on a GPU machine, e.g. `make test TORCH_SPEC="torch==2.5.1 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
# The stamp is keyed on pyproject.toml's hash and TORCH_SPEC: a second run skips installation.
HASH := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(HASH)
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test setup bench clean-venv protocol-docs

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e ".[dev]"
	@# Reference libraries: --no-deps so they cannot replace the pinned torch (see README).
	$(PIP) --no-deps captum==0.9.0 zennit==0.5.1 quantus==0.6.0
	$(PIP) packaging tqdm click pillow cachetools scikit-image opencv-python-headless
	@rm -f $(VENV)/.installed-*
	@touch $@

# Pinning oneDNN/MKL to AVX2 code paths makes training bit-identical on AVX2 and AVX-512 x86 CPUs
# (docs/reproducibility.md); override with `make demo CPU_PIN=` to use the CPU's own paths.
CPU_PIN ?= ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2

# The demo validates the methods (reports/demo), exports the maps and masks as a prior study would
# have saved them (reports/demo-study, BIDS derivatives), and audits those files with no model
# (reports/demo-audit-*). A FAIL or INCONCLUSIVE verdict is a finding, not an error: exits 1 and 3
# are accepted, 2 (an error) is not.
STUDY := reports/demo-study/derivatives
demo: $(STAMP)
	$(CPU_PIN) $(VENV)/bin/neuroxai demo --export reports/demo-study
	for t in positivecontrol hippocampusvolume; do \
	  $(VENV)/bin/neuroxai audit --maps $(STUDY)/xai-$$t --masks $(STUDY)/groundtruth-$$t \
	    --brain-mask $(STUDY)/brain --out reports/demo-audit-$$t; code=$$?; \
	  test $$code -le 1 -o $$code -eq 3 || exit $$code; \
	done

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_attribution.py --quick
	$(PY) benchmarks/bench_scoring.py --quick

# The protocol reference is generated from the schema (a test fails when docs/protocol.md is stale).
protocol-docs: $(STAMP)
	$(PY) -m neuroxai.protocol.reference > docs/protocol.md

clean-venv:
	rm -rf $(VENV)
