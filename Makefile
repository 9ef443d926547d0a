# ENS paper companion. `make reproduce` runs the main job, `make test` passes the tests; both
# create the virtual environment first when it is missing or older than pyproject.toml.
PYTHON      ?= python3
VENV        ?= .venv
# The CPU build of torch (a local wheel on the project's machines). On a GPU machine, e.g.
#   make setup TORCH_SPEC=torch    (or any pip requirement for the CUDA build you want)
TORCH_SPEC  ?= torch==2.13.0
PROFILE     ?= default
RESULTS     ?= results
# RERUN=False: notebooks with a `rerun` parameter reuse the per-setting tables already under
# $(RESULTS)/ (resume an interrupted `make reproduce`)
RERUN       ?= True

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.ens-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
export MPLBACKEND := agg
export PYTHONHASHSEED := 0

.PHONY: setup test reproduce data notebooks sync lab clean help

help:
	@echo "make setup      create $(VENV) (CPU torch, the package, the notebook/test stack, kernel python3)"
	@echo "make test       run the test suite, papermill on every notebook and nbval on the committed ones"
	@echo "make reproduce  execute every notebook with PROFILE=$(PROFILE) into $(RESULTS)/ (figures in $(RESULTS)/figures);"
	@echo "                RERUN=False resumes from the evaluation tables already there"
	@echo "make data       generate and verify every dataset of PROFILE=$(PROFILE) under data/$(PROFILE)/"
	@echo "make notebooks  re-execute the committed notebooks in place (their default parameters: profile ci)"
	@echo "make sync       sync the jupytext pairs (notebooks/*.py <-> *.ipynb)"
	@echo "make lab        start JupyterLab"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet "$(TORCH_SPEC)"
	$(VPY) -m pip install --quiet -e ".[dev]"
	$(VPY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ens)" > /dev/null
	touch $@

test: setup
	$(VPY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg -q

reproduce: setup
	mkdir -p $(RESULTS)/figures
	@for nb in $(NOTEBOOKS:.py=.ipynb); do \
	  echo "== $$nb (profile $(PROFILE))"; start=$$(date +%s); \
	  rerun=$$(grep -q '^rerun = ' "$${nb%.ipynb}.py" && echo "-p rerun $(RERUN)"); \
	  $(VPY) -m papermill "$$nb" "$(RESULTS)/$$(basename $$nb)" --cwd notebooks \
	    -p profile $(PROFILE) -p results_dir "$(CURDIR)/$(RESULTS)" $$rerun --progress-bar || exit 1; \
	  echo "== $$nb: $$(( $$(date +%s) - start )) s"; \
	done
	@echo "figures and executed notebooks are in $(RESULTS)/"

data: setup
	$(VPY) -m ens data generate --profile $(PROFILE)
	$(VPY) -m ens data verify --profile $(PROFILE)

notebooks: setup
	@for nb in $(NOTEBOOKS:.py=.ipynb); do \
	  echo "== $$nb"; \
	  $(VPY) -m jupytext --sync "$${nb%.ipynb}.py" > /dev/null && \
	  $(VPY) -m papermill "$$nb" "$$nb" --cwd notebooks || exit 1; \
	done

sync: setup
	$(VPY) -m jupytext --sync $(NOTEBOOKS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(RESULTS) .pytest_cache
