"""Running Debian's sysdig (0.29.3, the real 2022 libsinsp): compile a filter, check an output format,
read a capture as JSON lines.

`sysdig -r /dev/null FILTER` exits 1 whether or not the filter compiles: stderr tells them apart
("Could not initialize reader" = compiled; "filter error at position N: ..." = rejected).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from responder.errors import UserError

REQUIRE_ENV = "SERVING_GUARD_REQUIRE_SYSDIG"
_COMPILED = "Could not initialize reader"
_FILTER_ERROR = re.compile(r"filter error at position (\d+): (.*)", re.DOTALL)
_FORMAT_ERROR = re.compile(r"invalid formatting token (\S+)")
_TIMEOUT_SECONDS = 60.0


class SysdigError(UserError):
    """sysdig could not be run, or it crashed, or it answered something we do not understand."""


_REQUIRED = ("1", "true", "yes")
_NOT_REQUIRED = ("", "0", "false", "no")


def sysdig_required() -> bool:
    """Whether $SERVING_GUARD_REQUIRE_SYSDIG makes a missing sysdig an error (tool_required)."""
    return tool_required(REQUIRE_ENV, "sysdig")


def tool_required(variable: str, tool: str) -> bool:
    """Whether the environment ``variable`` makes a missing ``tool`` an error: 1, true or yes (any
    case) do; unset, 0, false or no do not; anything else is a UserError, not a silent "no" (CI
    setting it to `on` would otherwise skip the checks it means to require)."""
    value = os.environ.get(variable, "")
    if value.strip().lower() in _REQUIRED:
        return True
    if value.strip().lower() in _NOT_REQUIRED:
        return False
    raise UserError(
        f"{variable}={value!r}: set it to 1, true or yes to require {tool}"
        " (0, false, no or unset: not required)"
    )


@dataclass(frozen=True)
class Sysdig:
    path: str
    version: str

    @classmethod
    def find(cls) -> Sysdig | None:
        path = shutil.which("sysdig")
        if path is None:
            return None
        try:
            result = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False
            )
        except OSError as exc:
            raise SysdigError(f"cannot run {path}: {exc}") from None
        version = result.stdout.strip().removeprefix("sysdig version ").strip() or "unknown"
        return cls(path, version)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.path, *args], capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise SysdigError(
                f"sysdig did not finish within {_TIMEOUT_SECONDS:g}s: {' '.join(args[:3])} ..."
            ) from None
        except OSError as exc:
            raise SysdigError(f"cannot run {self.path}: {exc}") from None

    def compile_filter(self, condition: str) -> CompileResult:
        result = self._run(["-r", "/dev/null", condition])
        stderr = result.stderr.strip()
        if _COMPILED in stderr:
            return CompileResult(True, "", None)
        match = _FILTER_ERROR.search(stderr)
        if match:
            return CompileResult(False, match.group(2).strip(), int(match.group(1)))
        raise SysdigError(
            f"unexpected answer from sysdig (exit {result.returncode}): {stderr or result.stdout}"
        )

    def check_format(self, output_format: str) -> CompileResult:
        result = self._run(["-r", "/dev/null", "-p", output_format, "evt.num = 0"])
        stderr = (result.stderr + result.stdout).strip()
        if _COMPILED in stderr:
            return CompileResult(True, "", None)
        match = _FORMAT_ERROR.search(stderr)
        if match:
            return CompileResult(False, f"invalid output field {match.group(1)}", None, match.group(1))
        raise SysdigError(f"unexpected answer from sysdig (exit {result.returncode}): {stderr}")

    def count_events(self, capture: str) -> int:
        """How many events sysdig reads from ``capture``: 0 for a truncated one (sysdig stops at the
        first broken block and exits 0, as if the capture were complete)."""
        result = self._run(["-r", capture, "-p", "%evt.num"])
        if result.returncode < 0:
            name = signal.Signals(-result.returncode).name
            raise SysdigError(f"sysdig crashed ({name}) reading {capture}")
        if result.returncode != 0:
            raise SysdigError(
                f"sysdig could not read {capture}: {result.stderr.strip() or result.stdout.strip()}"
            )
        return sum(1 for line in result.stdout.splitlines() if line.strip())

    def read_capture(self, capture: str, condition: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every event of ``capture`` that matches ``condition``, as a dict of the requested fields."""
        output_format = "*" + " ".join(f"%{name}" for name in fields)
        result = self._run(["-r", capture, "-j", "-p", output_format, condition])
        if result.returncode < 0:
            name = signal.Signals(-result.returncode).name
            raise SysdigError(
                f"sysdig crashed ({name}) reading {capture}; sysdig 0.29 crashes on generic events of "
                "syscalls newer than its table when a filter tests evt.type: record without them"
            )
        if result.returncode != 0:
            raise SysdigError(
                f"sysdig could not read {capture}: {result.stderr.strip() or result.stdout.strip()}"
            )
        events = []
        for raw in result.stdout.splitlines():
            line = raw.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise SysdigError(
                    f"sysdig printed a line that is not JSON while reading {capture}: {line[:200]}"
                ) from None
            if isinstance(event, dict):
                events.append(event)
        return events


@dataclass(frozen=True)
class CompileResult:
    ok: bool
    message: str
    position: int | None
    token: str | None = None
