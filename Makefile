# ENS paper companion. `make reproduce` runs the main job, `make test` passes the tests; both
# create the virtual environment first when it is missing or older than pyproject.toml.
PYTHON      ?= python3
VENV        ?= .venv
# The CPU build of torch (a local wheel on the project's machines). On a GPU machine, e.g.
#   make setup TORCH_SPEC=torch    (or any pip requirement for the CUDA build you want)
TORCH_SPEC  ?= torch==2.13.0
PROFILE     ?= default
RESULTS     ?= results
WHATIF_PORT ?= 8866

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.ens-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
# papermill parameters only where they differ from the notebooks' defaults (profile "default",
# results_dir "../results"), so that `make reproduce` at the defaults executes the notebooks exactly
# as committed and `make publish` can commit them as they are
NB_PARAMS := $(if $(filter-out default,$(PROFILE)),-p profile $(PROFILE)) \
             $(if $(filter-out results,$(RESULTS)),-p results_dir "$(abspath $(RESULTS))")
# No matplotlib backend is exported here (nor anywhere a kernel inherits it): a notebook kernel
# needs its inline backend to put figures into the notebook; ens.notebook.setup switches to it.
export PYTHONHASHSEED := 0

.PHONY: setup test reproduce publish references data sync lab whatif bench bench-whatif gpu-check clean help

help:
	@echo "make setup      create $(VENV) (CPU torch, the package, the notebook/test stack, kernel python3)"
	@echo "make test       ruff, the test suite, papermill on every notebook (ci) and nbval on the references tests/nbval/"
	@echo "make reproduce  execute every notebook with PROFILE=$(PROFILE) into $(RESULTS)/ (figures in $(RESULTS)/figures);"
	@echo "                an interrupted run resumes: finished method runs are cached in $(RESULTS)/cache"
	@echo "make publish    after \`make reproduce\` at the defaults: commit-ready notebooks/*.ipynb, reports/default/"
	@echo "                and the README's result tables, from the executed notebooks and their tables"
	@echo "make references re-execute the nbval references tests/nbval/*.ipynb (profile ci)"
	@echo "make data       generate and verify every dataset of PROFILE=$(PROFILE) under data/$(PROFILE)/"
	@echo "make sync       sync the jupytext pairs (notebooks/*.py <-> *.ipynb)"
	@echo "make lab        start JupyterLab"
	@echo "make bench      the kernels against references timed in the same run (ens bench): results/bench/"
	@echo "make gpu-check  on a CUDA machine: CUDA tests, CPU/GPU agreement, paper-profile step timing and memory, DDP smoke"
	@echo "                (GPU_PYTHON=python3 uses that interpreter's CUDA torch instead of $(VENV)); fails without CUDA"
	@echo "make whatif     serve notebook 05 (the what-if explorer) as a web app with Voila on port $(WHATIF_PORT)"

setup: $(STAMP)

# requirements.lock pins the whole environment the published numbers were computed with
$(STAMP): pyproject.toml requirements.lock
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet "$(TORCH_SPEC)"
	$(VPY) -m pip install --quiet -r requirements.lock -e ".[dev]"
	$(VPY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ens)" > /dev/null
	touch $@

test: setup
	$(VENV)/bin/ruff check ens tests notebooks/*.py
	$(VPY) -m pytest tests -rs --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval/sanitize.cfg -q

reproduce: setup
	mkdir -p $(RESULTS)/figures
	@rm -f $(RESULTS)/times.txt; all=$$(date +%s); \
	echo "== datasets: the validation and test sets the notebooks read (profile $(PROFILE))"; start=$$(date +%s); \
	$(VPY) -m ens data generate --profile $(PROFILE) --split val --split test || exit 1; \
	echo "datasets $$(( $$(date +%s) - start )) s" >> $(RESULTS)/times.txt; \
	for nb in $(NOTEBOOKS:.py=.ipynb); do \
	  echo "== $$nb (profile $(PROFILE))"; start=$$(date +%s); \
	  $(VPY) -m papermill "$$nb" "$(RESULTS)/$$(basename $$nb)" --cwd notebooks $(NB_PARAMS) --progress-bar || exit 1; \
	  echo "$$(basename $$nb .ipynb) $$(( $$(date +%s) - start )) s" >> $(RESULTS)/times.txt; \
	done; \
	echo "== wall time per step (profile $(PROFILE)):"; cat $(RESULTS)/times.txt; \
	echo "total $$(( $$(date +%s) - all )) s" | tee -a $(RESULTS)/times.txt
	@echo "figures and executed notebooks are in $(RESULTS)/"

publish: setup
	$(VPY) -m ens publish --results $(RESULTS)

references: setup
	@mkdir -p tests/nbval
	@for nb in $(NOTEBOOKS:.py=.ipynb); do \
	  echo "== tests/nbval/$$(basename $$nb) (profile ci)"; \
	  $(VPY) -m jupytext --sync "$${nb%.ipynb}.py" > /dev/null && \
	  $(VPY) -m papermill "$$nb" "tests/nbval/$$(basename $$nb)" --cwd tests/nbval \
	    -p profile ci -p results_dir ../../results/nbval || exit 1; \
	done

data: setup
	$(VPY) -m ens data generate --profile $(PROFILE)
	$(VPY) -m ens data verify --profile $(PROFILE)

sync: setup
	$(VPY) -m jupytext --sync $(NOTEBOOKS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(RESULTS) .pytest_cache

# the what-if app: Voila runs notebook 05 with ENS_WHATIF_APP=1 (the live panel only, no canned questions)
whatif: setup
	@echo "the what-if explorer: http://localhost:$(WHATIF_PORT) (Ctrl-C stops it)"
	ENS_WHATIF_APP=1 $(VENV)/bin/voila notebooks/05_what_if.ipynb --port=$(WHATIF_PORT) --no-browser

# the kernels against references timed in the same run (ens.bench): one table, results/bench/bench_full.csv;
# first the peers of the flow-solver rows (KolSol, jax-cfd: requirements-bench.txt, nothing else needs them)
bench: setup
	$(VPY) -m pip install --quiet -r requirements-bench.txt
	$(VPY) -m ens bench

# every check a GPU machine must pass before the paper profile runs there (ens.gpu_check); exits 1
# without CUDA. GPU_PYTHON: an interpreter whose torch is a CUDA build and that has the package's
# requirements (e.g. a GPU image's python3); default: the project's environment ($(VENV)), which
# on a GPU machine is set up with `make setup TORCH_SPEC=torch`
GPU_PYTHON ?=
gpu-check: $(if $(GPU_PYTHON),,setup)
	PYTHONPATH="$(CURDIR)" $(or $(GPU_PYTHON),$(VPY)) -m ens.gpu_check

# the what-if panel's measured redraw times per family and kind of change (PROFILE, default: default)
bench-whatif: setup
	$(VPY) -m ens.whatif_panel $(PROFILE)
