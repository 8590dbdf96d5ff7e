"""The database side of a reinforcement fine-tuning job: its eval, and one eval run per validation step.

As OpenAI does, an RFT job with a validation file gets an eval (`eval_<job id>`, metadata
`fine_tuning_job_id`), and each validation step becomes a completed run of it named `step N`, whose output
items hold each validation row, the model's answer and the grader's result. The run is written directly,
not queued: the samples were already produced and graded by the training process.
"""

from __future__ import annotations

import time
from typing import Any

from openft.graders import GradeResult
from openft.jobs.lease import Lease
from openft.models.names import checkpoint_model_name
from openft.store import jobs as job_store
from openft.store.ids import new_id
from openft.store.openai_eval_tables import OpenAIEval, OpenAIEvalOutputItem, OpenAIEvalRun
from openft.store.pagination import new_seq
from openft.training.job_runner import DatabaseReporter
from openft.training.rft_request import judged_models


def job_eval_id(job_id: str) -> str:
    """The eval linked to a job: one per job, found again after a resume or a takeover."""
    return "eval_" + job_id.removeprefix("ftjob-")


def pass_threshold(grader: dict[str, Any]) -> float:
    """The score at which a validation answer passes: 1 for string_check, the middle of a score range, else 0.5."""
    if grader["type"] == "string_check":
        return 1.0
    if grader["type"] == "score_model":
        low, high = grader.get("range") or [0, 1]
        return (low + high) / 2
    return 0.5


def _result(grader: dict[str, Any], result: GradeResult) -> dict[str, Any]:
    passed = not result.errored and result.reward >= pass_threshold(grader)
    return {"name": grader["name"], "type": grader["type"], "score": result.reward, "passed": passed,
            "sample": None, "reason": result.reason, "errored": result.errored,
            "metadata": {"errors": result.errors, "execution_time": round(result.execution_time, 6),
                         "sub_rewards": result.sub_rewards}}  # fmt: skip


class RFTDatabaseReporter(DatabaseReporter):
    """DatabaseReporter that also records each validation step as a run of the job's eval."""

    def __init__(self, lease: Lease, ft_model_name: str, *, organization_id: str, grader: dict[str, Any],
                 validation_file: str | None) -> None:  # fmt: skip
        super().__init__(lease, ft_model_name)
        self.organization_id, self.grader, self.validation_file = organization_id, grader, validation_file

    def _ensure_eval(self, session) -> str:
        eval_id = job_eval_id(self.job_id)
        if session.get(OpenAIEval, eval_id) is None:
            now = int(time.time())
            item_schema = {"type": "object", "properties": {"messages": {"type": "array"}}, "required": ["messages"]}
            session.add(OpenAIEval(
                id=eval_id, seq=new_seq(), organization_id=self.organization_id, name=f"{self.job_id} validation",
                data_source_config={"type": "custom", "schema": {
                    "type": "object", "properties": {"item": item_schema, "sample": {"type": "object"}},
                    "required": ["item", "sample"]}},
                testing_criteria=[{**self.grader, "pass_threshold": pass_threshold(self.grader)}],
                eval_metadata={"fine_tuning_job_id": self.job_id}, created_at=now, updated_at=now,
            ))  # fmt: skip
            session.flush()
            job_store.add_event(session, self.job_id, f"Validation steps are recorded as runs of eval {eval_id}")
        return eval_id

    def on_validation(self, step: int, samples: list[dict[str, Any]]) -> None:
        now = int(time.time())
        counts = {"total": 0, "passed": 0, "failed": 0, "errored": 0}
        items = []
        for index, graded in enumerate(samples):
            result = _result(self.grader, graded["result"])
            status = "error" if result["errored"] else ("pass" if result["passed"] else "fail")
            counts["total"] += 1
            counts[{"pass": "passed", "fail": "failed", "error": "errored"}[status]] += 1
            sample = {"error": None, "finish_reason": "stop", "input": graded["input"], "max_completion_tokens": 0,
                      "model": checkpoint_model_name(self.ft_model_name, step),
                      "output": [{"role": "assistant", "content": graded["output_text"]}], "seed": 0,
                      "temperature": 0.0, "top_p": 1.0,
                      "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}}
            items.append((index, graded["item"], [result], sample, status))
        with self.lease.session() as session:
            eval_id = self._ensure_eval(session)
            run_id = new_id("evalrun_")
            session.add(OpenAIEvalRun(
                id=run_id, seq=new_seq(), eval_id=eval_id, organization_id=self.organization_id, name=f"step {step}",
                status="completed", model=checkpoint_model_name(self.ft_model_name, step),
                data_source={"type": "jsonl", "source": {"type": "file_id", "id": self.validation_file}},
                run_metadata={"fine_tuning_job_id": self.job_id, "step": str(step)}, result_counts=counts,
                per_testing_criteria_results=[{"testing_criteria": self.grader["name"], "passed": counts["passed"],
                                               "failed": counts["total"] - counts["passed"]}],
                per_model_usage=[], error=None, created_at=now, started_at=now, finished_at=now,
            ))  # fmt: skip
            session.flush()
            for index, item, results, sample, status in items:
                session.add(OpenAIEvalOutputItem(
                    id=new_id("outputitem_"), seq=new_seq(), run_id=run_id, eval_id=eval_id,
                    organization_id=self.organization_id, datasource_item_id=index, datasource_item=item,
                    results=results, sample=sample, status=status, created_at=now,
                ))  # fmt: skip
            job_store.add_event(session, self.job_id, f"Validation at step {step}: {counts['passed']}/"
                                f"{counts['total']} answers passed (eval {eval_id}, run {run_id})")  # fmt: skip


def train_reinforcement(lease: Lease, ft_model_name: str, config):
    """The job runner's entry for `method.type: reinforcement`: GRPO in this process, with the job's grader."""
    from openft.store.tables import FineTuningJob
    from openft.training.rft import run_rft_training

    with lease.session() as session:
        job = session.get(FineTuningJob, lease.subject_id)
        organization_id, validation_file = job.organization_id, job.validation_file
        grader = dict(job.method["reinforcement"]["grader"])
    reporter = RFTDatabaseReporter(lease, ft_model_name, organization_id=organization_id, grader=grader,
                                   validation_file=validation_file)  # fmt: skip
    if not judged_models(grader):
        return run_rft_training(config, reporter, grader)
    # The judge as eval runs have it: the organization's registered endpoint for the model, else the model on an
    # engine in this process, loaded at the first grading and closed when training ends.
    from openft.evals.judge_endpoints import organization_judge
    from openft.evals.local_engines import LocalEngines

    engines = LocalEngines(organization_id)
    try:
        return run_rft_training(config, reporter, grader, organization_judge(organization_id, engines.complete))
    finally:
        engines.close()
