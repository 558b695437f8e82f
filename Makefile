# wattserve: every target installs what it needs into a project-local virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_VERSION := 2.13.0

.PHONY: install test lint run bench-metering bench-serving gpu-check clean campaign-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build lies on this disk; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check service tests bench scripts loadtest grafana

bench-metering: install
	$(PY) bench/bench_metering.py

gpu-check: install
	$(PY) scripts/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

run: install
	$(VENV)/bin/wattserve serve --host 127.0.0.1 --port 8000

bench-serving: install
	$(PY) bench/bench_serving.py

.PHONY: dashboards
dashboards: install  # Grafana JSON from grafana/dashboards_src/ (never edit grafana/dashboards/ by hand)
	$(PY) grafana/dashboards_src/generate.py

# every text task against the embedded default (1,000 samples each, 1 repetition), then the report
DEMO_OUT ?= results/demo
campaign-demo: install
	$(VENV)/bin/wattserve campaign run demo --out $(DEMO_OUT) --report
	@echo "results and report: $(DEMO_OUT) ($(DEMO_OUT)/report/report.md)"

# build the Dockerfile with podman (offline: a bootstrapped Debian base and a wheelhouse, both cached), run it,
# check one request's energy headers and /metrics; installs podman and friends with apt-get when missing
.PHONY: test-container
test-container:
	PYTHON=$(PYTHON) bash scripts/container_test.sh
