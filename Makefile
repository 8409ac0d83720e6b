# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv when missing.
PY := .venv/bin/python
FAISS ?= cpu

.venv/.installed: pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(FAISS),test]'
	touch $@

demo: .venv/.installed
	.venv/bin/amgan-search demo

# What CI runs: every test, the 25 slowest named at the end.
test: lint
	$(PY) -m pytest -q --durations=25

# While working: the tests not marked slow (see pytest's markers in pyproject.toml); lint apart.
test-fast: .venv/.installed
	$(PY) -m pytest -q -m "not slow"

# ruff (its rules in pyproject.toml), then the layering of DESIGN.md (import-linter contracts in
# pyproject.toml). index/ and cli/ become amgan_search.index and amgan_search.cli only when
# installed, so the contracts are checked on an installed copy of the package under build/lint.
lint: .venv/.installed
	.venv/bin/ruff check .
	rm -rf build/lint
	$(PY) -m pip install -q --no-deps --no-build-isolation --target build/lint . 2>/dev/null
	cd build/lint && PYTHONPATH=. ../../.venv/bin/lint-imports --no-cache --no-logo ../../pyproject.toml

bench: .venv/.installed
	$(PY) -m perf.run

.PHONY: demo test test-fast lint bench
