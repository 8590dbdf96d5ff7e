"""Imported once by the worker's forkserver (openft.jobs.spawner), so each task's child starts with it loaded.

Only imports: nothing here may start a thread, open a connection or touch a GPU before the fork.
"""

import openft.models.registry  # noqa: F401  torch, transformers
import openft.training.trainer  # noqa: F401  TRL, PEFT, datasets, accelerate
