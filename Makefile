# `make demo`: set up .venv and run the chapter's experiment (writes docs/loss.png, the README's figure).
# `make test`: the same set-up, then the whole test suite (it also executes every notebook).
# `make mutants`: mutation testing of the optimizer library with mutmut (slow; see below).
# `make notebooks`: re-execute notebooks/*.ipynb in place, so the committed copies show current outputs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test notebooks clean mutants

demo: $(STAMP)
	$(BIN)/python -m adam_plugin linreg --plot docs/loss.png

test: $(STAMP)
	$(BIN)/python -m pytest

notebooks: $(STAMP)
	$(BIN)/jupyter-execute --inplace notebooks/*.ipynb

$(STAMP): setup.py requirements.txt adam_plugin/_kernel.cpp
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] > (3, 11))' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); mxnet 1.9.1 needs numpy<1.24, which has no wheels past Python 3.11." >&2; \
	  echo "       Run with a Python 3.11 or older: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) *.egg-info build adam_plugin/_kernel*.so

# `make mutants`: mutation testing with mutmut (not part of `make test`; its settings and
# test selection are in setup.cfg). Prints the score; `mutmut results` lists survivors,
# `mutmut show NAME` shows one. Slow: each mutant re-runs the tests that reach its function.
MUTMUT := mutmut==3.8.1

mutants: $(STAMP)
	$(BIN)/python -m pip install --quiet $(MUTMUT)
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
