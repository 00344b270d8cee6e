# Set-up and entry points. `make test` / `make demo` create the virtualenv and
# install what they need. PADDLE=3 (default: the CPU wheel PyPI serves) or
# PADDLE=2.6 (paddlepaddle 2.6.2, the line paddlepaddle-gpu is on).
PADDLE ?= 3
PYTHON ?= $(shell command -v python3.11 || command -v python3)

ifeq ($(PADDLE),3)
VENV ?= .venv
else ifeq ($(PADDLE),2.6)
VENV ?= .venv26
else
$(error PADDLE must be 3 or 2.6, not '$(PADDLE)')
endif

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(PADDLE)
REQUIREMENTS := requirements/common.txt requirements/paddle-$(PADDLE).txt

.PHONY: venv test test-ranks test-slow lint demo bench clean help

help:
	@echo "make test [PADDLE=3|2.6]   create $(VENV)/ if needed, run the test suite"
	@echo "make test-ranks [PADDLE=..] the two-rank collective runs on CPU (minutes; .ci/run runs them)"
	@echo "make lint                  ruff: lint rules and import order (pyproject.toml)"
	@echo "make demo [PADDLE=3|2.6]   end-to-end demo on the embedded synthetic dataset"
	@echo "make bench                 benchmarks in bench/ (tables + JSON in bench/results/)"

venv: $(STAMP)

$(STAMP): $(REQUIREMENTS) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/common.txt -r requirements/paddle-$(PADDLE).txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import slim, paddle; print('paddle', paddle.__version__, 'ready in $(VENV)')"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests -m "not two_ranks and not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q tests -m slow

test-ranks: $(STAMP)
	$(PY) -m pytest -q tests/test_two_ranks.py -m two_ranks

$(VENV)/.installed-lint: requirements/lint.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements/lint.txt
	touch $@

lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(PY) -m slim demo

bench: $(STAMP)
	$(PY) bench/data_throughput.py
	$(PY) bench/prune_vs_paddleslim.py
	$(PY) bench/zoo.py

clean:
	rm -rf output dataset/demo .pytest_cache
