"""User price overrides from $OPENFT_HOME/prices.toml (or prices.json). Format: docs/pricing.md."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from openft.config import get_settings
from openft.pricing.tables import DEFAULT_COMPUTE_PRICES, ComputePrices, TokenPrice

_SECTIONS = {"training", "inference", "compute"}
_COMPUTE_KEYS = {"cpu_hour", "gpu_hour"}


class PriceFileError(ValueError):
    """The user's price file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class PriceOverrides:
    training_per_1m: dict[str, Decimal] = field(default_factory=dict)
    inference_per_1m: dict[str, TokenPrice] = field(default_factory=dict)
    compute: ComputePrices = DEFAULT_COMPUTE_PRICES
    path: Path | None = None


def default_price_file() -> Path | None:
    """prices.toml under OPENFT_HOME, else prices.json, else None."""
    home = get_settings().home
    for name in ("prices.toml", "prices.json"):
        if (home / name).is_file():
            return home / name
    return None


_cache: dict[tuple[Path, int, int], PriceOverrides] = {}


def load_overrides(path: Path | None = None) -> PriceOverrides:
    """Parse a price file; with no path, the default one (none present -> no overrides).

    Re-read whenever the file changes, so an edit takes effect without a restart.
    """
    path = path if path is not None else default_price_file()
    if path is None:
        return PriceOverrides()
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _cache:
        _cache.clear()
        _cache[key] = _parse(path)
    return _cache[key]


def _parse(path: Path) -> PriceOverrides:
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PriceFileError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PriceFileError(f"{path}: expected a table at the top level")
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise PriceFileError(f"{path}: unknown section(s) {unknown}; expected some of {sorted(_SECTIONS)}")

    training = {
        name.lower(): _price(path, f"training.{name}", value) for name, value in _table(path, raw, "training").items()
    }
    inference = {}
    for name, value in _table(path, raw, "inference").items():
        if not isinstance(value, dict) or set(value) != {"input", "output"}:
            raise PriceFileError(f"{path}: inference.{name} must be {{ input = <USD/1M>, output = <USD/1M> }}")
        inference[name.lower()] = TokenPrice(
            _price(path, f"inference.{name}.input", value["input"]),
            _price(path, f"inference.{name}.output", value["output"]),
        )
    compute_raw = _table(path, raw, "compute")
    unknown = sorted(set(compute_raw) - _COMPUTE_KEYS)
    if unknown:
        raise PriceFileError(f"{path}: unknown key(s) {unknown} in compute; expected {sorted(_COMPUTE_KEYS)}")
    compute = replace(
        DEFAULT_COMPUTE_PRICES,
        **{key: _price(path, f"compute.{key}", value) for key, value in compute_raw.items()},
    )
    return PriceOverrides(training, inference, compute, path)


def _table(path: Path, raw: dict, section: str) -> dict:
    value = raw.get(section, {})
    if not isinstance(value, dict):
        raise PriceFileError(f"{path}: [{section}] must be a table")
    return value


def _price(path: Path, key: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PriceFileError(f"{path}: {key} must be a non-negative number of USD, got {value!r}")
    # str() keeps 0.008 as Decimal("0.008") rather than its binary float expansion.
    return Decimal(str(value))
