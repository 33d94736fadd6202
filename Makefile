# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench gpu-check gpu-check-cpu clean

install: $(STAMP)

# Re-install only when the project metadata changes; otherwise `make install` is instant.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/ganforge train --preset demo

test: install
	$(BIN)/python -m pytest -q

# The inner loop: everything but the tests marked slow (torchrun, SIGKILL resumes, the docs' blocks).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and pyright (basic) over the tree.
lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pyright src

bench: install
	$(BIN)/python -m benchmarks.train_speed

# The GPU acceptance check (README, "GPUs"): DATA_DIR holds cifar10-jpg/ and mnist/.
DATA_DIR ?= /tmp/gf-data
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check --data-dir $(DATA_DIR)

gpu-check-cpu: install
	$(BIN)/python -m benchmarks.gpu_check --cpu

clean:
	rm -rf runs .pytest_cache
