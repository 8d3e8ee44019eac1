# `make demo`: set up .venv and run the chapter's experiment (writes docs/loss.png, the README's figure).
# `make test`: the same set-up plus Horovod, then the whole test suite (it also executes every notebook).
# `make notebooks`: re-execute notebooks/*.ipynb in place, so the committed copies show current outputs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOROVOD := $(VENV)/.horovod

.PHONY: demo test notebooks clean

demo: $(STAMP)
	$(BIN)/python -m adam_plugin linreg --plot docs/loss.png

test: $(STAMP) $(HOROVOD)
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

# Horovod for tests/test_horovod.py: built from source against the venv's MXNet, CPU over
# Gloo, no MPI. CMAKE_POLICY_VERSION_MINIMUM lets a cmake 4 configure Horovod's bundled gloo
# (older ones ignore it). --no-cache-dir: a wheel cached from a build with other HOROVOD_*
# flags would be reused otherwise; the last line checks what was built.
$(HOROVOD): $(STAMP) requirements-horovod-build.txt requirements-horovod.txt
	@for tool in cmake $(CXX); do command -v $$tool >/dev/null || { \
	  echo "error: building Horovod (for make test) needs $$tool on PATH; Debian and Ubuntu: apt install cmake g++" >&2; exit 1; }; done
	$(BIN)/python -m pip install --quiet -r requirements-horovod-build.txt
	@echo "building Horovod from source: a few minutes"
	HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_CPU_OPERATIONS=gloo CMAKE_POLICY_VERSION_MINIMUM=3.5 \
	  $(BIN)/python -m pip install --quiet --no-cache-dir --no-build-isolation -r requirements-horovod.txt
	$(BIN)/python -c 'import horovod.mxnet as hvd; assert hvd.gloo_built(), "Horovod was built without Gloo"'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info build adam_plugin/_kernel*.so
