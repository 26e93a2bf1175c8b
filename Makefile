# The two commands of the README: `make predict PREGUNTA="..."` and `make test`.
# The Python of the image (cog.yaml); plain python3 where no python3.11 is on PATH.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PREGUNTA ?= ¿Cuál es la capital de Francia?

.PHONY: help setup weights predict serve test lint schema clean

help:
	@echo "make predict PREGUNTA='...'  set up, fetch the weights once, answer with the default model"
	@echo "make test                    set up and run the tests (no downloads, CPU only)"
	@echo "make serve                   run the Cog HTTP server on 127.0.0.1:5000"
	@echo "make weights                 fetch MODEL_ID at MODEL_REVISION into weights/"
	@echo "make schema                  regenerate .cog/openapi_schema.json from predict.py"

# The virtual environment is rebuilt whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

weights: setup
	scripts/download_weights

predict: weights
	scripts/predict "$(PREGUNTA)"

serve: setup
	scripts/serve

schema: setup
	scripts/openapi_schema

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
