# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

DEMO_OUT ?= demo-out

# Debian packages the tests call (`make setup` installs the missing ones with apt; the demo needs none):
#   espeak-ng  speech for test audio      chromium  renders the HTML report     procps  `ps` in the fault tests
#   mount, e2fsprogs  a full or read-only disk and an immutable directory for the CLI error tests (mount, chattr)
# tests/test_setup.py fails when a test calls a program that no package here (or the venv) provides.
SYSTEM_PACKAGES := espeak-ng chromium procps mount e2fsprogs

# [diarize] (segment.pyannote) lives in its own venv: see diarize-env below.
DIARIZE_VENV  ?= .venv-diarize
DIARIZE_PY    := $(DIARIZE_VENV)/bin/python
DIARIZE_STAMP := $(DIARIZE_VENV)/.installed

CORE_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint setup venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# the demo: `pip install .` and nothing else (the CPU curation tool with its embedded models)
$(CORE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	@touch $@

# the tests: every extra that runs on this CPU ([diarize] has its own venv; [gpu] needs a GPU image)
$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev,train,beam,llm]'
	@touch $@ $(CORE_STAMP)

venv: $(CORE_STAMP)

## demo: run the demo pipeline on the bundled audio, cut a release and print the report
demo: $(CORE_STAMP)
	$(VENV)/bin/granary run demo --out $(DEMO_OUT)/run
	$(VENV)/bin/granary release $(DEMO_OUT)/run --out $(DEMO_OUT)/release --shard-rows 8 --overwrite
	$(VENV)/bin/granary report $(DEMO_OUT)/run --html $(DEMO_OUT)/report.html > /dev/null
	$(VENV)/bin/granary report $(DEMO_OUT)/release
	@echo "run: $(DEMO_OUT)/run  release: $(DEMO_OUT)/release  report: $(DEMO_OUT)/report.html"

## setup: the Debian packages in SYSTEM_PACKAGES, installed with apt when missing (sudo unless root)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
setup:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## lint: ruff and mypy over granary_pipe/ (rule set and settings in pyproject.toml); part of `make test`
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check granary_pipe
	$(VENV)/bin/mypy

## test: lint, then the whole test suite (main env, then segment.pyannote in its own [diarize] env)
test: setup $(TEST_STAMP) $(DIARIZE_STAMP) lint
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
test-diarize: setup $(DIARIZE_STAMP)
	$(DIARIZE_PY) -m pytest -q tests/diarize

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
