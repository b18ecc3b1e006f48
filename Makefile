# Quick start:  make findings   (set everything up, run the article's findings on a local cluster)
#               make test       (the project's own test suite, as CI runs it)
#               make dist       (sdist + wheel into dist/, as docs/install.md describes)
.PHONY: setup findings test test-kind lint bench dist clean

setup:
	bash scripts/setup.sh

findings: setup
	.venv/bin/pytest tests/findings --k8sstate-provider local -p no:cacheprovider

test: setup lint
	.venv/bin/pytest -p no:cacheprovider

# kind end to end: the project's Docker engine, the offline node image, contract tests + findings on kind
test-kind: setup
	bash scripts/kind-e2e.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

dist: setup
	.venv/bin/python -m build --outdir dist .

bench: setup
	for b in bench/bench_*.py; do .venv/bin/python $$b || exit 1; done

clean:
	-.venv/bin/k8sstate cluster list
	rm -rf .venv .k8sstate .mypy_cache .ruff_cache build dist
