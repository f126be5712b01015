"""The in-cluster manifests: valid Kubernetes (strict schema), Pod Security "restricted", watched by
the rules pack, and running only scenarios that exist, with options `simulate` accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from simulators import simulate_command
from simulators.scenario import load_scenarios
from tests.pss import restricted_violations

K8S = Path(simulate_command.__file__).parent / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "Job":
        return dict(doc["spec"]["template"]["spec"])
    return None


def _pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    meta = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]
    return dict(meta.get("labels", {}))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_manifests_are_valid_kubernetes(path: Path, version: str) -> None:
    for doc in _documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_are_restricted_and_in_the_packs_scope(path: Path) -> None:
    pods = [doc for doc in _documents(path) if _pod_spec(doc) is not None]
    assert pods
    for doc in pods:
        spec = _pod_spec(doc)
        assert spec is not None
        assert restricted_violations(spec) == []
        assert spec.get("automountServiceAccountToken") is False  # no real token to read
        assert _pod_labels(doc)["serving-guard.io/serving"] == "true"


def test_job_runs_every_scenario_but_egress_with_valid_options() -> None:
    job = next(doc for doc in _documents(K8S / "simulate-job.yaml") if doc["kind"] == "Job")
    spec = job["spec"]["template"]["spec"]
    known = set(load_scenarios().names())
    # The Job runs simulate, which would skip a replay-only scenario (no live actions): none is named.
    live = {s.name for s in load_scenarios().by_name.values() if not s.replay_only}
    ran: set[str] = set()
    for container in spec["containers"]:
        assert container["command"] == ["python3", "-m", "responder"]
        args = container["args"]
        assert args[0] == "simulate"
        parser = argparse.ArgumentParser()
        simulate_command.configure(parser)
        options = parser.parse_args(args[1:])
        assert set(options.scenarios) <= known
        ran |= set(options.scenarios)
        assert options.run_id == "$(SG_RUN_ID)"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert options.model_dir in mounts and options.workdir in mounts
    assert ran == live - {"anomalous-egress"}
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["SG_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"


def _kind_image() -> str:
    """The image deploy/README.md "On kind" builds and loads into the cluster."""
    readme = (K8S.parents[1] / "deploy" / "README.md").read_text(encoding="utf-8")
    section = readme.split("### On kind", 1)[1].split("\n#", 1)[0]
    built = re.search(r"docker build -f deploy/Dockerfile -t (\S+) ", section)
    loaded = re.search(r"kind load docker-image (\S+) ", section)
    assert built and loaded and built.group(1) == loaded.group(1)
    return built.group(1)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_serving_guard_image_is_the_one_the_kind_steps_build(path: Path) -> None:
    """Applied after deploy/README.md "On kind", the init container finds its image (it named a
    tag nothing built); the README says to change it for a registry's image."""
    images = [
        container["image"]
        for doc in _documents(path)
        if (spec := _pod_spec(doc)) is not None
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        if "serving-guard" in container["image"]
    ]
    assert images == [_kind_image()]
    readme = " ".join((K8S / "README.md").read_text(encoding="utf-8").split())
    assert f'That image is `{_kind_image()}`, as deploy/README.md "On kind" builds and loads it' in readme
    assert "change the `copy-serving-guard` init container's `image:`" in readme
