# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-packages demo test test-fast lint bench-input clean

# Idempotent: re-runs pip only when pyproject.toml changed since the last install.
install: $(STAMP) system-packages

# The station's tests run a real MQTT broker (mosquitto) and the dashboard's a real browser
# (Debian's chromium + chromium-driver), the fleet's a real PostgreSQL server (initdb, pg_ctl).
# Installed when missing and we are root; otherwise say how.
SYSTEM_PACKAGES := mosquitto chromium chromium-driver postgresql
system-packages:
	@if command -v mosquitto >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	else echo "note: install $(SYSTEM_PACKAGES) (e.g. sudo apt-get install $(SYSTEM_PACKAGES)) for the station and dashboard tests"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[full,test,openvino,station,fleet,ray]"
	$(BIN)/python -c "import torch, torchvision, torch_pruning, onnxruntime, openvino; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| torch-pruning', torch_pruning.__version__, '| onnxruntime', onnxruntime.__version__, '| openvino', openvino.__version__)"
	touch $(STAMP)

demo: install
	$(BIN)/edgeprune demo

# Two parts: most tests in TEST_WORKERS processes (pytest-xdist; a file's tests stay together, so
# its module fixtures are built once, and conftest builds the shared models once per run), then
# the tests marked serial, alone, because they assert on real timings that sharing the CPU would
# make a matter of luck. The torch tests use one thread each, so workers fill the cores; many
# tests mostly wait on servers, browsers and subprocesses, hence more workers than cores.
TEST_WORKERS ?= 3
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# The quick loop while editing: everything but the tests marked slow, in parallel.
test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not serial"
	$(BIN)/python -m pytest -q -m "serial and not slow"

# Files kept in ruff's format; a file joins the list once `ruff format FILE` has been run on it
# (the rest of the code base is not mass-reformatted while several people edit it).
RUFF_FORMATTED := tests/test_readme.py benchmarks/common.py src/edgeprune/__main__.py src/edgeprune/errors.py \
	src/edgeprune/hardware.py src/edgeprune/data/bundle.py src/edgeprune/data/check.py \
	src/edgeprune/data/dedup.py src/edgeprune/data/splits.py src/edgeprune/export/onnx.py \
	src/edgeprune/metrics/accuracy.py src/edgeprune/metrics/chance.py src/edgeprune/metrics/macs.py \
	src/edgeprune/metrics/memory.py src/edgeprune/metrics/params.py src/edgeprune/metrics/size.py \
	src/edgeprune/pruning/report.py src/edgeprune/runtime/energy.py src/edgeprune/station/page.py

# ruff (rules in pyproject.toml), the format of the files above, and the layers
# (docs/ARCHITECTURE.md): no import against the layer order, no cycle.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check $(RUFF_FORMATTED)
	$(BIN)/python -m pytest -q tests/test_layers.py

bench-input: install
	$(BIN)/python benchmarks/input_pipeline.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
