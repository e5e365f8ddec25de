# pruning-generalization: `make figures` and `make test` set everything up on first use.
PYTHON  ?= python3
VENV    ?= .venv
# PARAMS: the parameter file, any path (a researcher's own); PROFILE=<name> is short for PARAMS=params/<name>.yaml.
PROFILE ?= small
PARAMS  ?= params/$(PROFILE).yaml
KERNEL  ?= pgcore
# The torch build to install; GPU users pick the wheel for their CUDA, e.g.
#   make setup TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128"
TORCH   ?= torch==2.14.1 torchvision==0.29.1

# SET: changes to the parameter file for the computation and the notebooks alike, e.g.
#   make figures PROFILE=paper-lenet SET="prune.levels=12 variants={} stretched_levels=0" FIGURES="fig1 fig2 fig3"
SET     ?=
# FIGURES: only these figures' runs and notebooks (fig1 .. fig7, explore, fig9); default every notebook.
FIGURES ?=

BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# NAME: what the figures, executed notebooks and checked parameters of PARAMS are filed under: its profile (after SET),
# else its file name; a profile of params/ belongs to that file, another file naming it is refused
# (pgcore.cli.figures_name). Worked out once, when `make figures` runs (after setup).
NAME       = $(eval NAME := $(shell $(BIN)/python -c 'from pgcore.cli import figures_name_for_make as f; f()' \
               $(PARAMS) $(foreach s,$(SET),'$(s)')))$(NAME)
EXECUTED   = build/executed/$(NAME)
CHECKED    = build/params/$(NAME).yaml
# Notebooks run headless (papermill, nbval) print plain progress lines, not widgets no one sees (pgcore/progress.py).
PLAIN     := PGCORE_PLAIN_PROGRESS=1
# STRICT=1: the portable CPU kernels (ATen's default, MKL's compatible branch, oneDNN at SSE4.1), meant to give
# the same bits on any x86 CPU; about 1.9x slower on LeNet. Its results go to their own store.
ifeq ($(STRICT),1)
export ATEN_CPU_CAPABILITY := default
export MKL_CBWR := COMPATIBLE,STRICT
export ONEDNN_MAX_CPU_ISA := SSE41
# Its own store beside the usual one (a run's directory does not depend on the kernels, so the native runs
# would otherwise be reused): $PGCORE_STORE-strict, or results-strict/.
override export PGCORE_STORE := $(if $(PGCORE_STORE),$(PGCORE_STORE)-strict,$(CURDIR)/results-strict)
endif

.PHONY: setup figures test unit lab notebooks clean-results help

help:
	@echo "make figures [PROFILE=small|mnist1d|smoke|paper|paper-vgg16|paper-lenet|paper-cifar100] [STRICT=1]"
	@echo "             [PARAMS=path/to/yours.yaml]   your parameter file: figures/<its profile>/, build/executed/<its profile>/"
	@echo "             [SET=\"prune.levels=12 ...\"] [FIGURES=\"fig1 fig2 fig3\"]   changes for compute and notebooks; a subset"
	@echo "                                           compute the study, run every notebook with papermill, write figures/<profile>/"
	@echo "make test                                  unit tests + nbval on the notebooks (smoke scale)"
	@echo "make lab                                   JupyterLab on the project"
	@echo "make notebooks                             re-execute notebooks/ in place at smoke scale (their committed outputs)"
	@echo "make setup                                 only create the environment ($(VENV))"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (pgcore)"
	-git rev-parse --git-dir >/dev/null 2>&1 && $(BIN)/nbdime config-git --enable
	touch $@

setup: $(STAMP)

figures: $(STAMP)
	@test -n "$(NAME)"
	@mkdir -p $(EXECUTED)
	$(BIN)/pgcore params $(PARAMS) $(foreach s,$(SET),--set '$(s)') --set 'profile="$(NAME)"' --out $(CHECKED)
	$(PLAIN) $(BIN)/pgcore compute $(CHECKED) $(if $(strip $(FIGURES)),--figures $(FIGURES)) \
	  --notebooks $(EXECUTED) --kernel $(KERNEL) $(COMPUTE_ARGS)
	$(if $(strip $(FIGURES)),,$(PLAIN) $(BIN)/papermill --log-level WARNING -k $(KERNEL) --cwd notebooks \
	  -p params $(CURDIR)/$(CHECKED) notebooks/00_quickstart.ipynb $(EXECUTED)/00_quickstart.ipynb)
	@$(BIN)/python -c 'import os, sys; from pgcore.config import load_yaml; from pgcore.plots import figures_dir; \
	  p = load_yaml(sys.argv[1]); out = figures_dir(p["profile"], p.get("figures_dir")); \
	  print(f"figures written to {os.path.relpath(out)}/ (executed notebooks in {sys.argv[2]}/)")' $(CHECKED) $(EXECUTED)

# Unit tests, then nbval on the committed notebooks (their parameter cells hold the smoke
# profile). Results and figures of the test run go to build/, never to results/ or figures/.
# Notebooks only read; PGCORE_NOTEBOOK_COMPUTE=1 asks them to train the smoke runs they read.
# Test files run side by side, one worker per core (at most 4): each file, and so each notebook's
# cells, on one worker; runs both workers reach are trained once (the store's run locks).
test: $(STAMP)
	rm -rf build/test-store
	$(PLAIN) PGCORE_NOTEBOOK_COMPUTE=1 PGCORE_STORE=$(CURDIR)/build/test-store $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  --numprocesses auto --maxprocesses 4 --dist loadfile --durations=10

unit: $(STAMP)
	$(BIN)/python -m pytest tests

# LAB_DIR: the folder Lab serves; LAB_ARGS: more options, e.g. LAB_ARGS="--port=8890 --no-browser"
# (tests/test_lab.py starts Lab this way, on copies of the notebooks).
LAB_DIR ?= .
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The parameter cells name the smoke profile, so no values are injected.
notebooks: $(STAMP)
	rm -rf build/smoke-store
	@for nb in $(NOTEBOOKS); do \
	  $(PLAIN) PGCORE_NOTEBOOK_COMPUTE=1 PGCORE_STORE=$(CURDIR)/build/smoke-store $(BIN)/papermill --log-level WARNING -k $(KERNEL) --cwd notebooks \
	    $$nb $$nb || exit 1; \
	done

clean-results:
	rm -rf results build
