"""SVG plots of the scaling curves that train_throughput.py --curves and serve_curves.py write as JSON.

    python bench/plot_curves.py --train train-curves.json --serve serve-curves.json --out docs/perf

Writes train_by_seq_len.svg, train_by_batch.svg, serve_by_concurrency.svg, serve_ttft.svg and
serve_by_adapters.svg (those whose JSON was given), with openft's own chart code (evals/plots.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openft.evals.plots import bar_chart

# evals/plots.py styles its charts from the HTML report's stylesheet; a standalone file carries its own.
STYLE = (
    "<style>text{font:12px sans-serif;fill:#222}.title{font-weight:bold}.axis{stroke:#444}"
    ".grid{stroke:#ddd}.tick{font-size:11px}</style>"
)


def standalone(svg: str) -> str:
    head, _, rest = svg.partition(">")
    return f"{head}>{STYLE}{rest}\n"


def _subtitle(report: dict) -> str:
    return f"{report['model']}, {report['device']}" + (", --quick" if report.get("quick") else "")


def train_plots(report: dict) -> dict[str, str]:
    # A point whose run was killed (out of memory) has no figure; it is listed in the JSON with its error.
    by_len = [p for p in report["by_sequence_length"] if "error" not in p]
    by_batch = [p for p in report["by_batch_size"] if "error" not in p]
    batch = by_len[0]["batch_size"] if by_len else "?"
    return {
        "train_by_seq_len.svg": bar_chart(
            "train-seq", f"Training tokens/s by sequence length, batch {batch} ({_subtitle(report)})", "tokens/s",
            [str(p["sequence_length"]) for p in by_len], {"openft": [p["tokens_per_second"] for p in by_len]},
        ),
        "train_by_batch.svg": bar_chart(
            "train-batch", f"Training tokens/s by batch size, 512 tokens ({_subtitle(report)})", "tokens/s",
            [str(p["batch_size"]) for p in by_batch], {"openft": [p["tokens_per_second"] for p in by_batch]},
        ),
    }  # fmt: skip


def serve_plots(report: dict) -> dict[str, str]:
    by_c, by_a = report["by_concurrency"], report["by_distinct_adapters"]
    base = report["base_at_max_concurrency"]["tokens_per_s"]
    return {
        "serve_by_concurrency.svg": bar_chart(
            "serve-c", f"Serving output tokens/s by concurrency ({_subtitle(report)})", "tokens/s",
            [str(p["concurrency"]) for p in by_c], {"base model": [p["tokens_per_s"] for p in by_c]},
        ),
        "serve_ttft.svg": bar_chart(
            "serve-ttft", f"Time to first token by concurrency ({_subtitle(report)})", "ms",
            [str(p["concurrency"]) for p in by_c],
            {"p50": [p["ttft_p50_ms"] for p in by_c], "p95": [p["ttft_p95_ms"] for p in by_c]},
        ),
        "serve_by_adapters.svg": bar_chart(
            "serve-a", f"Tokens/s with N distinct adapters in the batch ({_subtitle(report)})", "tokens/s",
            [str(p["distinct_adapters"]) for p in by_a],
            {"adapters": [p["tokens_per_s"] for p in by_a], "base model": [base for _ in by_a]},
        ),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", help="JSON from train_throughput.py --curves")
    parser.add_argument("--serve", help="JSON from serve_curves.py")
    parser.add_argument("--out", required=True, help="folder for the SVG files")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    if options.train:
        plots |= train_plots(json.loads(Path(options.train).read_text()))
    if options.serve:
        plots |= serve_plots(json.loads(Path(options.serve).read_text()))
    for name, svg in plots.items():
        (out / name).write_text(standalone(svg))
        print(out / name)


if __name__ == "__main__":
    main()
