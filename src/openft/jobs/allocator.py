"""The memory allocator a task's child process runs with: ``OPENFT_TASK_ALLOCATOR``.

Training on a CPU allocates and frees hundreds of MB of activations and logits every step. glibc's malloc
gives large blocks back to the kernel and maps fresh ones, so every step takes page faults on memory it
had a moment ago: 1.3 million minor faults in 12 s of training on the bundled model, with every matrix
product and element-wise op of a step paying for the pages its output lands on (glibc's
``mmap_threshold`` and ``trim_threshold`` tunables did not change the count here). tcmalloc keeps freed
memory for reuse: the same training ran 18% faster (docs/performance.md). PyTorch's own CPU launcher does the
same (``python -m torch.backends.xeon.run_cpu --enable_tcmalloc``), by ``LD_PRELOAD``, the only way to give a
Python process another malloc: it must be in the environment when the process starts, so the worker puts it
into its task children's environment and into the forkserver's as it starts (jobs/spawner.py).

``auto`` (default): tcmalloc where its library is installed (Debian/Ubuntu ``libtcmalloc-minimal4``; the
full ``libtcmalloc`` too), else the system's malloc. ``system``: never preload anything.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

SETTING = "OPENFT_TASK_ALLOCATOR"
ALLOCATORS = ("auto", "system")
# tcmalloc reports every allocation over 1 GiB on stderr; a logits tensor of a long batch is one.
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
PRELOAD_KEYS = ("LD_PRELOAD", *_QUIET)


def allocator_setting(env: Mapping[str, str]) -> str:
    raw = (env.get(SETTING) or "auto").strip().lower()
    if raw not in ALLOCATORS:
        raise ValueError(f"{SETTING} must be one of {', '.join(ALLOCATORS)}, got {raw!r}")
    return raw


@functools.cache
def tcmalloc_library() -> str | None:
    """tcmalloc's shared library as the dynamic loader finds it (a bare soname), or None when not installed."""
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def task_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus what a task child's allocator needs: tcmalloc ahead of any ``LD_PRELOAD`` already there."""
    env = dict(env)
    library = tcmalloc_library() if allocator_setting(env) == "auto" else None
    if library is None:
        return env
    preloaded = env.get("LD_PRELOAD", "").split()
    if not any("tcmalloc" in Path(entry).name for entry in preloaded):
        env["LD_PRELOAD"] = " ".join([library, *preloaded])
    return {**_QUIET, **env}


@contextlib.contextmanager
def starting_with(env: Mapping[str, str]) -> Iterator[None]:
    """For starting a process that inherits this one's environment (multiprocessing's forkserver and spawn
    contexts take no ``env``): this process's ``LD_PRELOAD`` and tcmalloc settings are ``env``'s meanwhile.
    The caller holds a lock: os.environ is the process's own."""
    saved = {key: os.environ.get(key) for key in PRELOAD_KEYS}
    try:
        for key in PRELOAD_KEYS:
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def running_allocator() -> str:
    """``tcmalloc`` when this process has it loaded, else ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "tcmalloc" if "libtcmalloc" in maps else "system"
