"""DDP for real: two processes on the CPU (gloo, started by torchrun) against one process, same global batch.

Same seed, data and global batch size: each rank takes half of every batch, DDP averages the gradients and
the loss is normalised by the tokens of the whole global batch (transformers' average_tokens_across_devices),
so every optimizer step sees the same examples and the same gradient up to float summation order. The loss
curves must agree within LOSS_TOLERANCE at every step.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from openft.config import reset_settings
from openft.training.distributed import LaunchConfig, launch_command, run_training_launched
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.trainer_config import TrainerRunConfig

# fp32 on CPU; the two runs differ only in reduction order (gloo all-reduce, split batches). Measured
# differences are around 1e-6; 1e-3 leaves room for other CPUs while catching any change of data or scaling
# (a half-size batch or an unaveraged gradient moves the curve by 1e-2 or more after a few steps).
LOSS_TOLERANCE = 1e-3


class Recorder:
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict]] = []
        self.checkpoints: list[int] = []
        self.started: list[int] = []

    def on_start(self, total_steps, resolved_hparams):
        self.started.append(total_steps)

    def on_metrics(self, step, total_steps, metrics):
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step, path, metrics):
        self.checkpoints.append(step)

    def should_stop(self):
        return None

    def losses(self) -> list[float]:
        return [m["train_loss"] for _, m in self.metrics]


def _config(tmp_path: Path, model_dir: Path, output: str) -> TrainerRunConfig:
    rows = [
        {"messages": [{"role": "user", "content": f"Code {i}?"},
                      {"role": "assistant", "content": f"The code is {i % 3} and {i * 7 % 5}."}]}
        for i in range(16)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    given = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, "lora_dropout": 0.0}
    return TrainerRunConfig(
        base_model=str(model_dir),
        training_file=str(train),
        output_dir=str(tmp_path / output),
        hyperparameters=resolve_hyperparameters("supervised", given, n_train_examples=16, context_length=256),
        seed=11,
        report_to=[],
    )


@pytest.fixture
def fp32(monkeypatch):
    monkeypatch.setenv("OPENFT_TRAINING_PRECISION", "fp32")  # bf16 autocast would differ between CPUs
    reset_settings()
    yield
    reset_settings()


@pytest.mark.slow  # ~90 s on 2 cores, mostly the two ranks importing torch/transformers; CI runs it
def test_two_gloo_processes_give_the_single_process_loss_curve(tmp_path, tiny_model_dir, fp32):
    single, ddp = Recorder(), Recorder()
    one = run_training_launched(_config(tmp_path, tiny_model_dir, "single"), single, LaunchConfig())
    two = run_training_launched(
        _config(tmp_path, tiny_model_dir, "ddp"), ddp, LaunchConfig(launcher="torchrun", nproc=2),
        env={"OMP_NUM_THREADS": "1", "OPENFT_TRAINING_PRECISION": "fp32"},
    )

    assert one.status == two.status == "succeeded"
    assert (one.steps, two.steps) == (8, 8) and ddp.started == [8]
    assert [s for s, _ in ddp.metrics] == list(range(1, 9))
    differences = [abs(a - b) for a, b in zip(single.losses(), ddp.losses(), strict=True)]
    print("single:", single.losses(), "\nddp:   ", ddp.losses(), "\nmax |difference|:", max(differences))
    assert max(differences) < LOSS_TOLERANCE
    assert single.losses()[-1] < single.losses()[0]  # it learned: the comparison is not between two flat lines
    assert ddp.checkpoints == single.checkpoints == [4, 8]
    assert one.trained_tokens == two.trained_tokens

    # rank 0 wrote one loadable adapter; both runs end with the same weights
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    weights = []
    for result in (one, two):
        model = PeftModel.from_pretrained(base, result.final_path)
        weights.append({k: v.clone() for k, v in model.state_dict().items() if "lora_B" in k})
        base = model.unload()
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0]) < 1e-3


def test_a_batch_that_cannot_be_split_over_the_ranks_fails_with_the_reason(tmp_path, tiny_model_dir, fp32):
    config = _config(tmp_path, tiny_model_dir, "odd")
    config.hyperparameters = replace(config.hyperparameters, batch_size=3)
    with pytest.raises(ValueError, match="batch_size 3 cannot be split evenly over 2 training processes"):
        run_training_launched(config, Recorder(), LaunchConfig(launcher="torchrun", nproc=2))
    assert not (tmp_path / "odd").exists()  # refused before any process started


def test_launch_commands_for_torchrun_and_accelerate_configs(tmp_path):
    torchrun = launch_command(LaunchConfig(launcher="torchrun", nproc=4, nnodes=2, node_rank=1,
                                           master_addr="10.0.0.1", master_port=29500), tmp_path)
    assert torchrun[1:3] == ["-m", "torch.distributed.run"]
    assert torchrun[3:13] == ["--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1",
                              "--master-addr", "10.0.0.1", "--master-port", "29500"]
    assert torchrun[-3:] == ["-m", "openft.training.distributed", str(tmp_path)]
    for shipped in ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"):
        command = launch_command(LaunchConfig(launcher="accelerate", nproc=8, accelerate_config=shipped), tmp_path)
        config_file = Path(command[command.index("--config_file") + 1])
        assert config_file.is_file() and config_file.stem == shipped
        assert command[command.index("--num_processes") + 1] == "8"
    with pytest.raises(ValueError, match="neither a file nor a shipped config"):
        launch_command(LaunchConfig(launcher="accelerate", nproc=2, accelerate_config="fsdp3"), tmp_path)
