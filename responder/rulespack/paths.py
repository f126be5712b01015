"""Where the project keeps the pack, its examples and the recorded captures (paths from the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_pack() -> Path:
    return PROJECT_ROOT / "rules" / "serving_guard_rules.yaml"


def default_examples() -> Path:
    return PROJECT_ROOT / "rules" / "examples.yaml"


def default_captures() -> Path:
    return PROJECT_ROOT / "tests" / "fixtures" / "captures"


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative
