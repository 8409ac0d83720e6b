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

test: .venv/.installed
	$(PY) -m pytest -q

bench: .venv/.installed
	$(PY) -m benchmarks.run

.PHONY: demo test bench
