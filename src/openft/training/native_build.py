"""Builds and loads the training's small C kernels (``native/*.c``) with ctypes.

Each is compiled once a machine with ``cc`` (a fraction of a second) for this CPU into PyTorch's extension
cache, the folder the serving engine's native step uses, and named by a hash of the CPU's flags, the compiler
flags and the source, so a changed kernel or machine builds afresh. Where no compiler is, the callers keep
their PyTorch paths.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from openft.models.cpu import cpu_flags

log = logging.getLogger(__name__)

NATIVE_DIR = Path(__file__).parent / "native"
# -fopenmp-simd honours the kernels' `omp simd` loops without linking an OpenMP runtime.
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC"]


def build_native_library(name: str) -> ctypes.CDLL | None:
    """``native/<name>.c`` compiled for this CPU and loaded, or None where it cannot be (the log says why)."""
    source = NATIVE_DIR / f"{name}.c"
    identity = "\n".join([cpu_flags(), " ".join(CFLAGS), source.read_text()])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    built = extensions_dir() / f"openft_{name}_{digest}.so"
    try:
        if not built.is_file():
            compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            if compiler is None:
                raise RuntimeError("no C compiler (cc, gcc or $CC)")
            built.parent.mkdir(parents=True, exist_ok=True)
            # Built under a temporary name and renamed, so a concurrent job never loads a half-written file.
            with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
                partial = Path(scratch) / built.name
                subprocess.run([compiler, *CFLAGS, "-o", str(partial), str(source)],
                               check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
                os.replace(partial, built)
        return ctypes.CDLL(str(built))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        reason = (getattr(exc, "stderr", None) or str(exc)).strip()  # a failed compile: the compiler's own words
        log.info("native/%s.c could not be built; its PyTorch fallback serves (%s)", name, reason)
        return None


def extensions_dir() -> Path:
    """Where PyTorch's C++ extension loader keeps its builds on Linux (TORCH_EXTENSIONS_DIR, else the user's
    cache), as the serving engine's native step uses it; torch.utils.cpp_extension would tell, but importing it
    costs ~0.16 s, inside the first training step."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"


def declare(library: ctypes.CDLL, signatures: dict[str, list]) -> ctypes.CDLL:
    """Set each named function's argument types (all return void); returns the library."""
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = None
    return library
