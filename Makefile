# The two quick-start commands: `make demo` (the main job) and `make test`
# (the whole suite).  Both install what they need first (scripts/bootstrap.sh).
PY := .venv/bin/python

.PHONY: demo test lint bootstrap bench

bootstrap:
	@sh scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m embassy_cleanup demo

test: lint
	$(PY) -m pytest -ra

bench: bootstrap
	$(PY) bench/run.py

lint: bootstrap
	$(PY) -m ruff check embassy_cleanup tests bench
	$(PY) -m mypy --ignore-missing-imports embassy_cleanup
	shellcheck cleanup_chrome.sh scripts/bootstrap.sh .ci/run
