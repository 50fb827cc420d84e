# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DEMO_OUT ?= demo-out

# [diarize] (segment.pyannote) lives in its own venv: see diarize-env below.
DIARIZE_VENV  ?= .venv-diarize
DIARIZE_PY    := $(DIARIZE_VENV)/bin/python
DIARIZE_STAMP := $(DIARIZE_VENV)/.installed

.PHONY: demo test venv clean test-setup

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train]'
	@touch $(STAMP)

venv: $(STAMP)

## demo: run the demo pipeline on the bundled audio, cut a release and print the report
demo: $(STAMP)
	$(VENV)/bin/granary run pipelines/demo.yaml --source manifests/demo/demo.yaml --out $(DEMO_OUT)/run
	$(VENV)/bin/granary release $(DEMO_OUT)/run --out $(DEMO_OUT)/release --shard-rows 8 --overwrite
	$(VENV)/bin/granary report $(DEMO_OUT)/run --html $(DEMO_OUT)/report.html > /dev/null
	$(VENV)/bin/granary report $(DEMO_OUT)/release
	@echo "run: $(DEMO_OUT)/run  release: $(DEMO_OUT)/release  report: $(DEMO_OUT)/report.html"

## test-setup: system packages the tests need: Debian's Chromium (the HTML report is rendered in it)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-setup:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## test: the whole test suite (main env, then segment.pyannote in its own [diarize] env)
test: test-setup $(STAMP) $(DIARIZE_STAMP)
	$(PY) -m pytest -q
	$(DIARIZE_PY) -m pytest -q tests/diarize

# ---- [diarize]: segment.pyannote runs in its own venv (torch 2.9 + pyannote.audio 4): pyannote's
# torchaudio cannot import beside the main env's torch. PyPI CUDA wheels (~7 GB); they run on CPU.

.PHONY: diarize-env test-diarize

$(DIARIZE_STAMP): pyproject.toml
	@test -x $(DIARIZE_PY) || $(PYTHON) -m venv $(DIARIZE_VENV)
	$(DIARIZE_PY) -m pip install --quiet --upgrade pip
	$(DIARIZE_PY) -m pip install --quiet -e '.[diarize]' 'pytest>=8' 'pytest-timeout>=2.3'
	@touch $(DIARIZE_STAMP)

## diarize-env: the [diarize] environment (.venv-diarize) that segment.pyannote runs in
diarize-env: $(DIARIZE_STAMP)

## test-diarize: segment.pyannote on tiny random pyannote models, in .venv-diarize
test-diarize: $(DIARIZE_STAMP)
	$(DIARIZE_PY) -m pytest -q tests/diarize

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
