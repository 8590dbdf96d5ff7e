"""The distillation's results: the training file (written, validated like an upload, refused lines dropped and the
file written again) and the report of what was kept, dropped and failed, by line of the prompt file."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from openft.evals.distill.filters import Verdict
from openft.evals.distill.prompts import Prompt
from openft.evals.distill.teacher import TeacherReply
from openft.store.blobs import open_private, storage_errors

MAX_LISTED = 10_000  # dropped / failed lines listed in the report (all are counted)


def training_line(prompt: Prompt, reply: TeacherReply) -> dict[str, Any]:
    message = {k: v for k, v in reply.message.items() if v is not None}
    return {"messages": [*prompt.messages, message], **prompt.context}


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    with storage_errors("write the distilled training file"), os.fdopen(open_private(path), "wb") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")


def validated_output(partial: Path, kept: list[tuple[Prompt, TeacherReply]], model: str,
                     dropped: dict[int, Verdict]):  # fmt: skip
    """Write and validate the training file; lines the validator refuses are dropped (with its reason) and the
    file written again. Returns (kept pairs, validation outcome)."""
    from openft.data.validation_service import validate_training_file

    for _ in range(3):
        write_jsonl(partial, [training_line(p, r) for p, r in kept])
        outcome = validate_training_file(partial, model)
        refused: dict[int, str] = {}
        for error in outcome.report.get("errors") or []:
            if error.get("line") is not None and 1 <= error["line"] <= len(kept):
                refused.setdefault(error["line"], f"{error.get('field') or ''} {error['message']}".strip())
        if outcome.status == "processed" or not refused:
            return kept, outcome
        for index, reason in refused.items():
            prompt = kept[index - 1][0]
            dropped[prompt.line] = Verdict(False, "invalid_training_example", reason)
        kept = [pair for index, pair in enumerate(kept, start=1) if index not in refused]
        if not kept:
            return kept, outcome
    return kept, outcome


def build_report(prompts: list[Prompt], kept: list[tuple[Prompt, TeacherReply]], dropped: dict[int, Verdict],
                 failed: dict[int, str], filter_spec: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    dropped_lines = [{"line": line, "rule": v.rule, "reason": v.reason, "score": v.score}
                     for line, v in sorted(dropped.items())]  # fmt: skip
    return {
        "prompts": len(prompts), "kept": len(kept), "dropped": len(dropped), "failed": len(failed),
        "dropped_by_reason": dict(Counter(v.rule for v in dropped.values())),
        "kept_lines": [p.line for p, _ in kept],  # output line i came from prompt line kept_lines[i - 1]
        "dropped_lines": dropped_lines[:MAX_LISTED],
        "failed_lines": [{"line": line, "error": error} for line, error in sorted(failed.items())][:MAX_LISTED],
        "filter": filter_spec,
    }  # fmt: skip
