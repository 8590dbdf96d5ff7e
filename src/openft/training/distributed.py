"""Multi-process training through torchrun or ``accelerate launch``: DDP, FSDP or DeepSpeed.

The worker's configuration chooses the launcher (docs/distributed.md):
``OPENFT_TRAINING_LAUNCHER`` = ``none`` (default: one process, as before) | ``torchrun`` | ``accelerate``,
``OPENFT_TRAINING_NPROC`` processes per node (a number, or ``gpu`` for one per visible GPU),
``OPENFT_TRAINING_NNODES`` / ``OPENFT_TRAINING_NODE_RANK`` / ``OPENFT_TRAINING_MASTER_ADDR`` /
``OPENFT_TRAINING_MASTER_PORT`` for several machines, and ``OPENFT_ACCELERATE_CONFIG`` (a path, or one of the
configs shipped in ``training/launch_configs/``: ``ddp``, ``fsdp``, ``deepspeed-zero2``, ``deepspeed-zero3``).

``run_training_launched`` keeps `run_training`'s contract (a config and a ``Reporter`` in, a ``TrainingResult``
out) so the job runner does not change: it writes the config to a run folder, starts the ranks
(``python -m openft.training.distributed RUN_DIR`` under the launcher), and relays what rank 0 reports
(events in ``events.jsonl``) to the caller's reporter, and the caller's stop requests (a ``stop`` file) back.
Every rank sees the same stop answer after every step (rank 0 broadcasts it), so a cancel or pause stops all
ranks at the same step and none is left waiting in a collective.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openft.training.callbacks import Reporter, StopRequest
from openft.training.hyperparameters import ResolvedHyperparameters
from openft.training.trainer_config import TrainerRunConfig

LAUNCHERS = ("none", "torchrun", "accelerate")
SHIPPED_CONFIGS = Path(__file__).parent / "launch_configs"
POLL_SECONDS = 0.5


class LaunchError(RuntimeError):
    """The distributed run could not start or a rank failed; the message carries the end of its log."""


@dataclass(frozen=True)
class LaunchConfig:
    launcher: str = "none"
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0  # 0: a free port (single node)
    accelerate_config: str | None = None

    @classmethod
    def from_env(cls) -> LaunchConfig:
        launcher = (os.environ.get("OPENFT_TRAINING_LAUNCHER") or "none").strip().lower()
        if launcher not in LAUNCHERS:
            raise ValueError(f"OPENFT_TRAINING_LAUNCHER must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
        raw_nproc = (os.environ.get("OPENFT_TRAINING_NPROC") or "1").strip().lower()
        if raw_nproc == "gpu":
            import torch

            nproc = max(torch.cuda.device_count(), 1)
        else:
            nproc = _positive("OPENFT_TRAINING_NPROC", raw_nproc)
        return cls(
            launcher=launcher,
            nproc=nproc,
            nnodes=_positive("OPENFT_TRAINING_NNODES", os.environ.get("OPENFT_TRAINING_NNODES") or "1"),
            node_rank=int(os.environ.get("OPENFT_TRAINING_NODE_RANK") or 0),
            master_addr=os.environ.get("OPENFT_TRAINING_MASTER_ADDR") or "127.0.0.1",
            master_port=int(os.environ.get("OPENFT_TRAINING_MASTER_PORT") or 0),
            accelerate_config=os.environ.get("OPENFT_ACCELERATE_CONFIG") or None,
        )

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def launched(self) -> bool:
        return self.launcher != "none" and (self.world_size > 1 or self.accelerate_config is not None)


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer (or 'gpu' for NPROC), got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def world_size() -> int:
    """Processes taking part in this run (torchrun and accelerate set WORLD_SIZE in every rank)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def rank() -> int:
    return int(os.environ.get("RANK") or 0)


def per_device_batch_size(batch_size: int, world: int | None = None) -> int:
    """Each rank's share of the global batch: the same examples per optimizer step as one process would take."""
    world = world or world_size()
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} cannot be split evenly over {world} training processes; choose a multiple "
            f"of {world} (or change OPENFT_TRAINING_NPROC)"
        )
    return batch_size // world


def accelerate_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise ValueError(f"OPENFT_ACCELERATE_CONFIG {name_or_path!r} is neither a file nor a shipped config ({names})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(launch: LaunchConfig, run_dir: Path) -> list[str]:
    """The command that starts every rank of this node."""
    port = launch.master_port or _free_port()
    entry = ["-m", "openft.training.distributed", str(run_dir)]
    if launch.launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if launch.accelerate_config:
            command += ["--config_file", str(accelerate_config_path(launch.accelerate_config))]
        command += [
            "--num_processes", str(launch.world_size), "--num_machines", str(launch.nnodes),
            "--machine_rank", str(launch.node_rank), "--main_process_ip", launch.master_addr,
            "--main_process_port", str(port),
        ]
        return command + entry
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(launch.nproc), "--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank),
        "--master-addr", launch.master_addr, "--master-port", str(port),
        *entry,
    ]


# --- the config as a file ------------------------------------------------------------------------------


def write_config(config: TrainerRunConfig, path: Path) -> None:
    path.write_text(json.dumps(asdict(config)))


def read_config(path: Path) -> TrainerRunConfig:
    data = json.loads(path.read_text())
    data["hyperparameters"] = ResolvedHyperparameters(**data["hyperparameters"])
    return TrainerRunConfig(**data)


# --- inside each rank ----------------------------------------------------------------------------------


class RankReporter:
    """Rank 0 appends the run's events to ``events.jsonl``; every rank gets rank 0's stop answer each step."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.is_main = rank() == 0
        self._events = open(run_dir / "events.jsonl", "a") if self.is_main else None  # noqa: SIM115

    def _emit(self, kind: str, **data: Any) -> None:
        if self._events is not None:
            self._events.write(json.dumps({"kind": kind, **data}) + "\n")
            self._events.flush()

    def on_start(self, total_steps: int, resolved_hparams: dict[str, Any]) -> None:
        self._emit("start", total_steps=total_steps, resolved_hparams=resolved_hparams)

    def on_metrics(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self._emit("metrics", step=step, total_steps=total_steps, metrics=metrics)

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, float]) -> None:
        self._emit("checkpoint", step=step, path=path, metrics=metrics)

    def should_stop(self) -> StopRequest | None:
        answer = None
        if self.is_main:
            stop_file = self.run_dir / "stop"
            answer = stop_file.read_text().strip() or None if stop_file.exists() else None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            box = [answer]
            dist.broadcast_object_list(box, src=0)
            answer = box[0]
        return answer  # type: ignore[return-value]


def rank_main(run_dir: Path) -> int:
    from openft.training.trainer import run_training

    config = read_config(run_dir / "config.json")
    result = run_training(config, RankReporter(run_dir))
    if rank() == 0:
        temp = run_dir / "result.json.tmp"
        temp.write_text(json.dumps(asdict(result)))
        os.replace(temp, run_dir / "result.json")
    return 0


# --- in the job's process --------------------------------------------------------------------------------


def _relay(events_path: Path, offset: int, reporter: Reporter) -> int:
    if not events_path.exists():
        return offset
    with open(events_path) as handle:
        handle.seek(offset)
        while True:
            line = handle.readline()
            if not line.endswith("\n"):
                return offset  # a partial line: read it whole next time
            offset += len(line.encode())
            event = json.loads(line)
            kind = event.pop("kind")
            if kind == "start":
                reporter.on_start(event["total_steps"], event["resolved_hparams"])
            elif kind == "metrics":
                reporter.on_metrics(event["step"], event["total_steps"], event["metrics"])
            elif kind == "checkpoint":
                reporter.on_checkpoint(event["step"], event["path"], event["metrics"])


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _root_cause(log_path: Path) -> str:
    """The first rank's exception line ("[rank0]: ValueError: ..."), else the log's last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for line in lines:
        body = line.split("]: ", 1)[-1] if line.startswith("[rank") else ""
        head = body.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return body
    return lines[-1] if lines else "no output"


def run_training_launched(config: TrainerRunConfig, reporter: Reporter, launch: LaunchConfig | None = None,
                          *, env: dict[str, str] | None = None):
    """`run_training`, on several processes when the worker is configured for it (else in this process)."""
    from openft.training.trainer import TrainingResult, run_training

    launch = launch or LaunchConfig.from_env()
    if not launch.launched:
        return run_training(config, reporter)
    per_device_batch_size(config.hyperparameters.batch_size, launch.world_size)  # fails before starting ranks
    run_dir = Path(config.output_dir) / ".launch"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    write_config(config, run_dir / "config.json")
    log_path = run_dir / "ranks.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            launch_command(launch, run_dir), stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent, start_new_session=True,
        )
    offset, stop_sent = 0, None
    try:
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            offset = _relay(run_dir / "events.jsonl", offset, reporter)
            request = reporter.should_stop()
            if request is not None and request != stop_sent:
                (run_dir / "stop.tmp").write_text(request)
                os.replace(run_dir / "stop.tmp", run_dir / "stop")
                stop_sent = request
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    _relay(run_dir / "events.jsonl", offset, reporter)
    result_path = run_dir / "result.json"
    if process.returncode != 0 or not result_path.exists():
        raise LaunchError(f"distributed training ({launch.launcher}, {launch.world_size} processes) exited with "
                          f"{process.returncode}: {_root_cause(log_path)} (full log: {log_path})")
    return TrainingResult(**json.loads(result_path.read_text()))


def main() -> None:
    sys.exit(rank_main(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
