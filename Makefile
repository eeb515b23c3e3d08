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

test: install
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# Layers point one way (docs/ARCHITECTURE.md): no import against the layer order, no cycle.
lint: install
	$(BIN)/python -m pytest -q tests/test_layers.py

bench-input: install
	$(BIN)/python benchmarks/input_pipeline.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
