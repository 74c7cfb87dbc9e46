# cinegen: two commands do all the set-up.
#   make demo   create .venv, install, generate a video from a prompt with the shipped default model
#   make test   create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU build of torch that lies on disk here; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
EXTRAS ?= test,data,train,ray,app
comma  := ,
STAMP   = $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv test demo lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/cinegen generate "a red circle moves from left to right on a navy background" -o outputs/demo.mp4

lint: venv
	$(BIN)/ruff check cinegen tests scripts
	$(BIN)/ruff format --check cinegen tests scripts

format: venv
	$(BIN)/ruff format cinegen tests scripts
	$(BIN)/ruff check --fix cinegen tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache
