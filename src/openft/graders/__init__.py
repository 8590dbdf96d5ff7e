"""OpenAI's graders, one engine for the graders API, the Evals API and reinforcement fine-tuning.

`check_grader(spec)` validates grader JSON (GraderSpecError names the field); `grade(spec, sample, item, ...)`
scores one model sample against one dataset item and reports failures in OpenAI's `metadata.errors` shape.
"""

from openft.graders.engine import GradeResult, Judge, JudgeReply, grade
from openft.graders.spec import GRADER_TYPES, GraderSpecError, check_grader

__all__ = ["GRADER_TYPES", "GradeResult", "GraderSpecError", "Judge", "JudgeReply", "check_grader", "grade"]
