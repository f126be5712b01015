"""deploy/Dockerfile, read as the build would (no Docker engine runs here): pinned bases, a final stage
with no package manager and no build step, a numeric non-root user matching the chart, a healthcheck,
and the command the chart relies on."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from tests.deploy.deploy_support import DEPLOY, REPO, Rendered

DOCKERFILE = DEPLOY / "Dockerfile"
DIGEST_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def _instructions() -> list[Instruction]:
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [Instruction(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in _instructions():
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def _exec_form(arguments: str) -> list[str]:
    parsed: Any = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
    return list(parsed)


def test_multi_stage_with_every_base_pinned_by_digest() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0].arguments.split()[0]
        assert DIGEST_PINNED.match(image), f"base image not pinned by digest: {image}"
    assert stages[0][0].arguments.split()[-1] == "build"


def test_final_stage_has_no_build_step_or_package_manager() -> None:
    final = _stages()[-1]
    keywords = [i.keyword for i in final]
    # No RUN at all: nothing installs, compiles or downloads in the image that ships.
    assert "RUN" not in keywords and "ADD" not in keywords
    for instruction in final:
        if instruction.keyword == "COPY":
            assert "--from=build" in instruction.arguments, "the final stage copies only the built venv"
    # The runtime base is distroless: no shell, apt, dpkg or pip to remove afterwards.
    assert "distroless" in final[0].arguments
    build = " ".join(i.arguments for i in _stages()[0] if i.keyword == "RUN")
    assert "pip uninstall --yes pip" in build, "pip must not travel into the final stage inside the venv"


def test_runs_as_the_numeric_user_the_chart_sets(renders: dict[str, Rendered]) -> None:
    users = [i.arguments for i in _stages()[-1] if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    pod = renders["defaults"].one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_healthcheck_probes_the_liveness_endpoint(renders: dict[str, Rendered]) -> None:
    (check,) = [i.arguments for i in _stages()[-1] if i.keyword == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = _exec_form(command)
    assert argv[0].startswith("/opt/serving-guard/bin/python")
    container = renders["defaults"].one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = container["livenessProbe"]["httpGet"]
    assert f"http://127.0.0.1:{ports[liveness['port']]}{liveness['path']}" in argv[-1]


def test_entrypoint_and_command_match_the_chart(renders: dict[str, Rendered]) -> None:
    final = _stages()[-1]
    (entrypoint,) = [_exec_form(i.arguments) for i in final if i.keyword == "ENTRYPOINT"]
    (command,) = [_exec_form(i.arguments) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["/opt/serving-guard/bin/serving-guard"]
    container = renders["defaults"].one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert command == container["args"]
    (expose,) = [i.arguments.split() for i in final if i.keyword == "EXPOSE"]
    assert sorted(int(p) for p in expose) == sorted(p["containerPort"] for p in container["ports"])
    (volume,) = [_exec_form(i.arguments) for i in final if i.keyword == "VOLUME"]
    journal = next(m for m in container["volumeMounts"] if m["name"] == "journal")
    assert volume == [journal["mountPath"]]


def test_build_context_is_the_repository_root() -> None:
    sources = []
    for instruction in _stages()[0]:
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            *copied, _destination = shlex.split(instruction.arguments)
            sources += copied
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository root"
    # Everything the package build reads is copied: pyproject, its readme, every package.
    assert {"pyproject.toml", "README.md", "responder", "simulators"} <= set(sources)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, (
            f"{source} is excluded from the build context"
        )
