# distillation-monitor: every command a developer or CI needs.
# The first run installs everything; later runs reuse .venv and the fetched broker.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KAFKA := $(PY) deploy/local/kafka.py
DEMO_DETECTOR ?= .local/demo-detector
DEMO_ARGS ?=
PYTEST_ARGS ?=
SOAK_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: help venv tools kafka-up kafka-down kafka-status kafka-logs lint test demo bench bench-quick soak clean image wheelhouse

help:
	@echo "make demo        end-to-end demo: broker, detector, worker, clean+corrupted traffic"
	@echo "                 (DEMO_ARGS=\"--duration 20 --rate 500\" to change it)"
	@echo "make test        the whole suite (sets up .venv, tools and the local broker)"
	@echo "make bench       benchmarks (make bench-quick for a short run)"
	@echo "make soak        10 minutes of mixed normal and hostile traffic through one worker"
	@echo "                 (SOAK_ARGS=\"--minutes 2\" for a short run)"
	@echo "make kafka-up | kafka-down | kafka-status | kafka-logs   the local broker"
	@echo "make lint        ruff + mypy"
	@echo "make image       the container image, built offline with podman (make wheelhouse: the wheels only)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,eval]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian tools used by the tests as independent checks: kcat (a second Kafka client)
# and promtool (Prometheus' own rule and metrics checker, plus the server itself).
tools:
	@command -v kcat >/dev/null && command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { echo "installing kcat and prometheus (Debian packages)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat prometheus >/dev/null; }
	@# The Debian package starts a system Prometheus on :9090; the tests run their own.
	@(systemctl stop prometheus 2>/dev/null; service prometheus stop 2>/dev/null; pkill -x prometheus 2>/dev/null) >/dev/null 2>&1 || true

# The image: podman, a debootstrap base and a wheelhouse, each made once (deploy/image/build.py).
image: venv
	$(PY) deploy/image/build.py

wheelhouse: venv
	$(PY) deploy/image/build.py wheelhouse

kafka-up: venv
	$(KAFKA) up

kafka-down: venv
	$(KAFKA) down

kafka-status: venv
	$(KAFKA) status

kafka-logs: venv
	$(KAFKA) logs

lint: venv
	$(VENV)/bin/ruff check monitor tests bench deploy
	$(VENV)/bin/ruff format --check monitor tests bench deploy
	$(VENV)/bin/mypy

test: venv tools kafka-up lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv kafka-up
	$(PY) -m monitor demo --detector $(DEMO_DETECTOR) $(DEMO_ARGS)

bench: venv kafka-up
	$(PY) bench/run.py

bench-quick: venv kafka-up
	$(PY) bench/run.py --quick

soak: venv kafka-up
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	-$(KAFKA) down --wipe
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
