"""llama.cpp's own Hugging Face -> GGUF converters, vendored (MIT, see LICENSE beside this file).

Source: ``convert_hf_to_gguf.py`` and ``convert_lora_to_gguf.py`` from the `llama-cpp-python` 0.3.23 sdist on PyPI
(``vendor/llama.cpp`` at llama.cpp commit 7d442abf5c6244117fd5a1dc51a5d19f00792491, May 2026). That llama.cpp's
gguf-py is 0.19.0, the `gguf` release openft installs from PyPI (newer llama.cpp converters need an unreleased
gguf-py). No PyPI package ships these scripts without also replacing the `gguf` package, hence the copy.

The only changes (each marked ``# openft:``): gguf-py is not put on ``sys.path`` (the PyPI ``gguf`` is used);
the LoRA script imports the HF converter relatively, and its ``__main__`` block is the function
``convert_lora()`` (no argparse or hub download; errors raise instead of ``sys.exit``; ``lora_alpha`` can be
overridden). To update: copy both files from a llama.cpp whose gguf-py matches the installed `gguf`, and redo
the marked changes. openft's entry point is ``openft.models.gguf_export``.
"""
