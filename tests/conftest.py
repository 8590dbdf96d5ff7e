"""Shared fixtures. Each area keeps its fixtures in tests/fixtures/<area>.py."""

import os

# Serving tests compare the engine's Python decode step with transformers bit for bit; the native single-row
# step (compiled on first use) is tested on its own in tests/serving/test_native_decode.py, which turns it on.
os.environ.setdefault("OPENFT_SERVING_NATIVE_DECODE", "off")

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.models",
    "tests.fixtures.server",
]

# The modules that take minutes (real-model training, whole job flows) run first: `make test` hands whole
# modules to two xdist workers in collection order, and one of these started last would run alone at the end.
SLOW_MODULES_FIRST = (
    "tests/training/test_real_model_learns.py",
    "tests/conformance/",
    "tests/web/test_dashboard.py",
    "tests/cli/test_jobs.py",
    "tests/jobs/test_fault_tolerance.py",
    "tests/api/test_fine_tuning.py",
    "tests/training/test_rft.py",
    "tests/distill/test_distillations.py",
    "tests/jobs/test_pause_phases.py",
    "tests/jobs/test_clock_skew.py",
    "tests/training/test_gguf_export.py",
    "tests/evals/test_rag_real_model.py",
    "tests/api/test_hostile_load.py",
    "tests/serving/test_grammar_real.py",
)


def _rank(item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, prefix in enumerate(SLOW_MODULES_FIRST) if path.startswith(prefix)), len(SLOW_MODULES_FIRST))


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_rank)  # stable: the order inside a module, and of all other modules, is kept
