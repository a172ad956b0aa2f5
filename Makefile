# Two commands for a newcomer: `make demo` and `make test`. Everything else is here for them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run on three pytest-xdist workers (most wait on processes, brokers and sockets, not on
# the CPU). Each file stays on one worker, longest files first, and the tests of the longest
# file spread over all three (tests/conftest.py: SPREAD, LONGEST_FIRST). Every test waits on
# conditions, never on a race with the clock, so it may run beside any other file.
# `make test PYTEST_WORKERS=` runs them in one process (15 min on CI, up to 30 here).
PYTEST_WORKERS ?= -n 3 --dist loadgroup

.PHONY: demo test install system-deps lint typecheck bench faults clean deploy-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Chromium for browser tests, SpamAssassin for preflight, nginx
# for the public proxy's config (tests/integration/test_public_proxy.py).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v spamassassin >/dev/null 2>&1 || missing="$$missing spamassassin"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/newsletter demo

test: $(STAMP) system-deps
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services newsletter_cli benchmarks

bench: $(STAMP)
	$(BIN)/newsletter bench render
	$(BIN)/newsletter bench dispatch --recipients 50000
	$(BIN)/newsletter bench dispatch --recipients 50000 --dkim
	$(BIN)/newsletter bench feedback --count 5000

# The image and the compose stack built and run for real with podman (images from Debian, no
# registry needed), one reader walked through it, then torn down: deploy/ci/deploy_check.py.
# DEPLOY_CHECK_ARGS: e.g. --keep (leave the stack up), --budget SECONDS, --down (remove it).
DEPLOY_CHECK_ARGS ?=
deploy-check: $(STAMP)
	sh deploy/ci/install-tools.sh
	$(BIN)/python deploy/ci/deploy_check.py $(DEPLOY_CHECK_ARGS)

# Issue 12's fault table: every scenario on its own RabbitMQ nodes and PostgreSQL database
# (about 20-40 minutes at the default 20,000 recipients); not part of `make test`.
FAULTS_ARGS ?=
faults: $(STAMP)
	$(BIN)/newsletter bench faults $(FAULTS_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
