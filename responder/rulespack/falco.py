"""`falco -V` on the rules files when a Falco binary is on PATH: the real engine's verdict.

Files are validated in one engine, in order, exactly as Falco loads them. With json_output the
result is a `falco_load_results` array (name, successful, errors, warnings); older or unexpected
output is reported verbatim with the exit status.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class FalcoVerdict:
    binary: str
    ok: bool
    lines: list[str] = field(default_factory=list)  # one line per file verdict, error or warning


def find_falco() -> str | None:
    return shutil.which("falco")


def validate(binary: str, files: list[str]) -> FalcoVerdict:
    command = [binary, "-o", "json_output=true"]
    for path in files:
        command += ["-V", path]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return FalcoVerdict(binary, False, [f"falco -V did not finish within {_TIMEOUT_SECONDS:g}s"])
    except OSError as exc:
        return FalcoVerdict(binary, False, [f"cannot run {binary}: {exc}"])
    lines = _json_verdict(result.stdout)
    if lines is None:
        text = (result.stdout + result.stderr).strip()
        lines = text.splitlines() or [f"exit status {result.returncode}"]
    return FalcoVerdict(binary, result.returncode == 0, lines)


def _json_verdict(stdout: str) -> list[str] | None:
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        document = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return None
    results = document.get("falco_load_results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        return None
    lines = []
    for entry in results:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name", "?")
        lines.append(f"{name}: {'Ok' if entry.get('successful') else 'Invalid'}")
        for kind in ("errors", "warnings"):
            for finding in entry.get(kind) or []:
                lines.append(f"  {kind[:-1]}: {_finding(finding)}")
    return lines


def _finding(finding: Any) -> str:
    if not isinstance(finding, dict):
        return str(finding)
    code = finding.get("code", "")
    message = finding.get("message", "")
    context = finding.get("context")
    where = ""
    if isinstance(context, dict):
        locations = context.get("locations")
        if isinstance(locations, list) and locations and isinstance(locations[-1], dict):
            loc = locations[-1]
            where = f" ({loc.get('name', '')}:{loc.get('line', '')})"
    return f"{code} {message}{where}".strip()
