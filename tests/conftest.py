"""Shared fixtures: tiny random model folders built once per session (offline, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # Every model in the suite is tiny: one intra-op thread is as fast, and it avoids oversubscribing the two
    # CI cores when tests start worker processes (data-pipeline pools, Ray, 2-process gloo training).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def make_tiny_folder(root: Path, preset: str, seed: int = 0, defaults: dict | None = None) -> Path:
    """Build a tiny random cinegen model folder for `preset` (e.g. "tiny-cogvideox-2b") under `root`."""
    from cinegen.models.io import save_model_folder
    from cinegen.models.presets import build_bundle

    folder = root / preset
    if not (folder / "model_index.json").is_file():
        save_model_folder(build_bundle(preset, seed=seed), folder, defaults=defaults)
    return folder


TINY_DEFAULTS = {"num_frames": 9, "height": 32, "width": 48, "steps": 2, "guidance": 3.0, "fps": 8}


@pytest.fixture(scope="session")
def tiny_2b_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_folder(tmp_path_factory.mktemp("models"), "tiny-cogvideox-2b", defaults=TINY_DEFAULTS)
