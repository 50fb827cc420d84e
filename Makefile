# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DEMO_OUT ?= demo-out

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## demo: run the demo pipeline on the bundled audio, cut a release and print the report
demo: $(STAMP)
	$(VENV)/bin/granary run pipelines/demo.yaml --source manifests/demo/demo.yaml --out $(DEMO_OUT)/run
	$(VENV)/bin/granary release $(DEMO_OUT)/run --out $(DEMO_OUT)/release --shard-rows 8 --overwrite
	$(VENV)/bin/granary report $(DEMO_OUT)/release
	@echo "run: $(DEMO_OUT)/run  release: $(DEMO_OUT)/release  (granary report $(DEMO_OUT)/run for the run's report)"

## test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
