# Two commands do all the set-up on a fresh machine:
#   make run   - install, build the demo home if missing, serve it on embedded defaults
#   make test  - install, start Redis/PostgreSQL if needed, run the tests
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= $(CURDIR)/.home
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run demo test lint bench clean

$(BIN)/lora-router: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel first: a plain torch requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/lora-router

$(HOME_DIR)/base.lock.json: | install
	HF_HUB_OFFLINE=1 $(BIN)/lora-router demo build --home $(HOME_DIR)

demo: $(HOME_DIR)/base.lock.json

run: install demo
	HF_HUB_OFFLINE=1 $(BIN)/lora-router serve --home $(HOME_DIR) --host $(HOST) --port $(PORT)

test: install
	./scripts/services.sh
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check router adapters registry tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(HOME_DIR)
