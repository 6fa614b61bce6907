# quantlab: every target creates or reuses .venv by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed
EXTRAS ?= dev,dask,ib,track,samples,backtrader
UV_VERSION := 0.13.9
comma := ,
PORT ?= 8899

.PHONY: help venv lock report report-data-quality test sync nbtest pytest lab bench docs clean

help:
	@echo "make report  run the main research report on bundled real data (HTML under reports/)"
	@echo "make test    sync check, nbdev_test, pytest"
	@echo "make lab     JupyterLab on 127.0.0.1 with a printed token"
	@echo "make bench   run the benchmarks in bench/"
	@echo "make docs    render every notebook into a static site in _docs/ (offline)"
	@echo "make lock    recompile requirements.lock from settings.ini (uv), then make test"

venv: $(STAMP)

# the environment comes from requirements.lock (every package pinned, with hashes); `make lock` refreshes it.
# --compile-bytecode: uv does not write .pyc files by default, and without them every process spends seconds importing pandas
$(STAMP): requirements.lock setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# compile requirements.lock from settings.ini (the runtime requirements and the extras in EXTRAS) with uv;
# --refresh-package: uv caches setup.py's metadata, and would otherwise miss a requirement just added to settings.ini
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	cp requirements.lock requirements.lock.tmp  # uv keeps the pins it finds there: only what changed moves
	$(BIN)/uv pip compile -q --refresh-package quantlab setup.py $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) --python-version 3.11 --generate-hashes \
	  --custom-compile-command "make lock" -o requirements.lock.tmp
	{ echo "# quantlab lock: extras $(EXTRAS); inputs sha256 $$(PYTHONPATH=. $(BIN)/python -c 'from quantlab.core import requirements_fingerprint as f; print(f("settings.ini", "$(EXTRAS)"))')"; \
	  cat requirements.lock.tmp; } > requirements.lock && rm requirements.lock.tmp

# the main job: the tear sheet of an example strategy on bundled real data (S&P 500, 1999-2018)
report: $(STAMP)
	$(BIN)/quantlab report backtest -p strategy sma_cross -p params '{"fast": 20, "slow": 100}' -p samples '["sp500"]'

report-data-quality: $(STAMP)
	$(BIN)/quantlab report data_quality

sync: $(STAMP)
	VENV_BIN=$(BIN) bash .ci/check_sync

nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

test: sync nbtest pytest

lab: $(STAMP)
	@token=$$($(BIN)/python -c "import secrets; print(secrets.token_hex(16))"); \
	echo "JupyterLab: http://127.0.0.1:$(PORT)/lab?token=$$token"; \
	$(BIN)/jupyter lab --no-browser --allow-root --ServerApp.ip=127.0.0.1 --port $(PORT) \
	  --IdentityProvider.token=$$token --notebook-dir=nbs

bench: $(STAMP)
	@$(BIN)/python -c "import vectorbt" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[bench]"
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

docs: $(STAMP)
	$(BIN)/python -m quantlab.docs --out _docs

clean:
	rm -rf $(VENV) _docs _proc .pytest_cache
