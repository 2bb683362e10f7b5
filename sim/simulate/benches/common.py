"""The JSON exchange between a bench and :func:`l1bn.sim.simulate.runner.run_bench`: the design's config,
the bench's inputs and its measurements. The bench kit itself is :mod:`l1bn.sim.simulate.benches.kit`."""

from __future__ import annotations

import json
import os

from l1bn.spec.config import config_from_json

__all__ = ["load_config", "load_data", "write_result"]


def load_config():
    """The design's config object, sent by :func:`l1bn.sim.simulate.runner.run_cocotb`."""
    text = os.environ.get("L1BN_CONFIG")
    if not text:
        raise RuntimeError("L1BN_CONFIG is not set: run benches through l1bn.sim.simulate.runner.run_cocotb")
    return config_from_json(text)


def load_data(name: str):
    """The inputs :func:`l1bn.sim.simulate.runner.run_bench` wrote for this bench (``L1BN_<NAME>_DATA``)."""
    with open(os.environ[f"L1BN_{name.upper()}_DATA"]) as f:
        return json.load(f)


def write_result(name: str, result: dict) -> None:
    """Hand the bench's measurements back to :func:`l1bn.sim.simulate.runner.run_bench`, when it asked."""
    path = os.environ.get(f"L1BN_{name.upper()}_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f)
