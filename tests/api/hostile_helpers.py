"""Shared pieces of the hostile-input tests: a live server with the tiny model, raw HTTP, /health timing."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.fixtures.server import LiveServer, register_model, start_server

HEALTH_BUDGET_S = 0.1  # the bound for /health while heavy work runs
# On a machine busy with other work even an idle /health can take longer; the bound then scales with the
# latency measured before the heavy request (an event-loop stall is seconds, far beyond either).
BUSY_MACHINE_FACTOR = 3


def idle_health_p95(url: str, probes: int = 20) -> float:
    latencies = []
    with httpx.Client(timeout=5) as client:
        for _ in range(probes):
            started = time.perf_counter()
            client.get(url + "/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    return sorted(latencies)[int(probes * 0.95) - 1]


def health_budget(idle_p95: float) -> float:
    return max(HEALTH_BUDGET_S, BUSY_MACHINE_FACTOR * idle_p95)


def start_hostile_server(
    home, tiny_model_dir, extra_env: dict[str, str] | None = None, log_level: str = "warning"
) -> LiveServer:
    register_model(home, "tiny-llama", tiny_model_dir)
    return start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama", **(extra_env or {})}, log_level=log_level)


def root_url(server: LiveServer) -> str:
    return server.base_url.removesuffix("/v1")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@dataclass
class HealthProbe:
    """Times GET /health every `interval` seconds on a thread until stopped."""

    url: str
    interval: float = 0.05
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        def run() -> None:
            with httpx.Client(timeout=5) as client:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    try:
                        ok = client.get(self.url + "/health").status_code == 200
                    except httpx.HTTPError as exc:
                        self.failures.append(repr(exc))
                        ok = True
                    self.latencies.append(time.perf_counter() - started)
                    if not ok:
                        self.failures.append("status")
                    self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        lat = sorted(self.latencies)
        p95 = lat[int(len(lat) * 0.95) - 1] if len(lat) >= 20 else (lat[-1] if lat else float("nan"))
        return (f"{len(lat)} probes, median {statistics.median(lat) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
                f"max {lat[-1] * 1000:.1f} ms")

    def p95(self) -> float:
        lat = sorted(self.latencies)
        return lat[max(0, int(len(lat) * 0.95) - 1)]
