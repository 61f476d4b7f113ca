# Two commands do all the set-up on a fresh machine:
#   make run   - install, build the demo home if missing, serve it on embedded defaults
#   make test  - install, start Redis/PostgreSQL if needed, run the tests
# Variables (on the command line or in the environment):
#   PORT=8001           the port `make run` serves on (HOST: the bind address)
#   LORA_ROUTER_HOME    the home `make run` builds and serves (default ./.home, the CLI's
#                       default too when run from this directory)
#   TORCH=cpu|cu126|... the torch build, from download.pytorch.org/whl/$(TORCH); unset: the
#                       one pip's configured index gives (PyPI: CUDA on Linux x86_64)
#   TORCH_INDEX=URL     any other index for torch; TORCH_SPEC: the requirement (torch==2.13.0)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= $(or $(LORA_ROUTER_HOME),$(CURDIR)/.home)
HOST ?= 127.0.0.1
PORT ?= 8000
TORCH ?=
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= $(if $(TORCH),https://download.pytorch.org/whl/$(TORCH))
# the torch build a venv was made with (the choice applies when .venv is created)
TORCH_STAMP := $(VENV)/torch-build
torch_build := $(strip $(TORCH_SPEC) $(TORCH_INDEX))
ifneq ($(wildcard $(TORCH_STAMP)),)
ifneq ($(filter command line environment,$(origin TORCH) $(origin TORCH_INDEX)),)
torch_had := $(shell cat $(TORCH_STAMP))
ifneq ($(torch_had),$(torch_build))
$(warning $(VENV) has torch from "$(torch_had)", not "$(torch_build)": rm -rf $(VENV) first to switch torch builds)
endif
endif
endif

.PHONY: install run demo test lint bench clean

$(BIN)/lora-router: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, the build chosen above: the project's torch range is then already met
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH_SPEC)'
	echo '$(torch_build)' > $(TORCH_STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/lora-router

$(HOME_DIR)/base.lock.json: | install
	HF_HUB_OFFLINE=1 $(BIN)/lora-router demo build --home $(HOME_DIR)

demo: $(HOME_DIR)/base.lock.json

# exec: the server replaces the recipe's shell, so Ctrl-C / SIGTERM reach it directly; it
# shuts down cleanly and exits 0 (no "make: *** Error 143")
run: install demo
	exec env HF_HUB_OFFLINE=1 $(BIN)/lora-router serve --home $(HOME_DIR) --host $(HOST) --port $(PORT)

test: install
	./scripts/services.sh
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check ground registry adapters training router demo tests bench scripts
	$(BIN)/python scripts/typecheck.py
	$(BIN)/lint-imports

# the venv and this checkout's demo home; never a home named by LORA_ROUTER_HOME
clean:
	rm -rf $(VENV) $(CURDIR)/.home
