"""`serving-guard quarantine`: a person quarantines pods by hand, with the responder's own label,
policy and leak check, recorded who and why; the platform's guardrails still hold."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.helpers import SHELL_RULE

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
ACME = "acme.io/isolated"
QUARANTINE_LABELS = "serving-guard.io/quarantine-labels"
QUARANTINED_AT = "serving-guard.io/quarantined-at"
INCIDENT = "inc-0123456789abcdef0123"


def write_config(tmp_path: Path, kubeconfig: str) -> Path:
    data: dict[str, Any] = {
        "cluster": {"kubeconfig": kubeconfig},
        "journal": {"path": str(tmp_path / "journal.db")},
        "logging": {"level": "error"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def acme_config(tmp_path: Path, kubeconfig: str, journal: str = "journal.db") -> Path:
    """A config quarantining under the label acme.io/isolated (another config's, to the default);
    ``journal``: another name as another team's responder runs it, a journal of its own."""
    path = tmp_path / "custom.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cluster": {"kubeconfig": kubeconfig},
                "journal": {"path": str(tmp_path / journal)},
                "quarantine": {"label": ACME, "network_policy": "acme-isolate"},
            }
        )
    )
    return path


def edit_pod(running: RunningCluster, pod: SeededPod, change: Callable[[dict[str, Any]], object]) -> None:
    """The pod's metadata changed by hand (kubectl label/annotate)."""
    found = stored(running, pod)
    change(found["metadata"])
    running.call(running.emulator.put_object, "v1/pods", found)


def stored(running: RunningCluster, pod: SeededPod) -> dict[str, Any]:
    found: dict[str, Any] = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    return found


def journaled_incident(tmp_path: Path, config: Path, alert: dict[str, Any]) -> str:
    """The incident the responder journals for ``alert`` (fed through `serving-guard ingest`)."""
    (tmp_path / "alert.jsonl").write_text(falco_bytes(alert).decode() + "\n")
    assert (
        main(["ingest", str(tmp_path / "alert.jsonl"), "--config", str(config), "--settle-seconds", "0"]) == 0
    )
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        (incident,) = conn.execute("SELECT incident_id FROM incidents").fetchone()
    return str(incident)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["quarantine", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_pod_quarantined_by_hand_is_isolated_and_recorded(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    vllm = pods["vllm"]
    # The responder journaled an incident on the pod (the default policy only notifies).
    incident = journaled_incident(
        tmp_path, config, falco_alert(vllm, SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
    )
    capsys.readouterr()
    argv = ["-n", vllm.namespace, vllm.name, "--reason", "trial predicted it", "--by", "carol"]
    # An id the journal does not know (mistyped, or pruned) is refused before the cluster is touched.
    code, out, err = run([*argv, "--incident", INCIDENT, "--config", str(config)], capsys)
    assert code == 2 and out == ""
    assert f"--incident {INCIDENT}: not in the journal" in err and "nothing was done" in err
    assert LABEL not in stored(running, vllm)["metadata"].get("labels", {})
    code, out, err = run([*argv, "--incident", incident, "--config", str(config)], capsys)
    assert code == 0, err
    assert out.startswith(f"{vllm.namespace}/{vllm.name}: quarantined")
    metadata = stored(running, vllm)["metadata"]
    assert metadata["labels"][LABEL] == "true"
    assert metadata["annotations"]["serving-guard.io/rule"] == "quarantined by hand"
    assert metadata["annotations"]["serving-guard.io/reason"] == "by carol: trial predicted it"
    assert metadata["annotations"]["serving-guard.io/incident"] == incident
    events = running.call(running.emulator.list_objects, "v1/events", vllm.namespace)
    assert "Quarantined" in [e["reason"] for e in events]
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        rows = conn.execute("SELECT incident_id, action, status, actor FROM actions").fetchall()
    assert rows == [(incident, "quarantine", "quarantined", "carol")]
    # The audit trail shows it; release undoes it.
    assert (
        main(["release", "-n", vllm.namespace, vllm.name, "--reason", "clean", "--config", str(config)]) == 0
    )
    assert LABEL not in stored(running, vllm)["metadata"]["labels"]


def test_a_leaky_or_missing_pod_is_not_counted_isolated(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    argv = ["-n", triton.namespace, triton.name, "ghost", "--reason", "r", "--by", "carol"]
    code, out, err = run([*argv, "--kubeconfig", kubeconfig], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(
        f"{triton.namespace}/{triton.name}: LEAKY quarantine: still allowed by {LEAKY_POLICY}"
    )
    assert lines[1] == f"{triton.namespace}/ghost: not found"
    assert err == "2 of 2 pods not isolated\n"
    assert stored(running, triton)["metadata"]["labels"][LABEL] == "true"


def test_the_platforms_guardrails_still_hold(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    sandbox = pods["sandbox"]
    code, out, _ = run(
        ["-n", sandbox.namespace, sandbox.name, "--reason", "r", "--kubeconfig", kubeconfig], capsys
    )
    assert code == 1
    assert out == (
        f"{sandbox.namespace}/{sandbox.name}: not quarantined: namespace {sandbox.namespace} is not opted in"
        " (serving-guard.io/enforce=true)\n"
    )
    assert LABEL not in (stored(running, sandbox)["metadata"].get("labels") or {})
    code, _, err = run(["-n", "kube-system", "coredns", "--reason", "r", "--kubeconfig", kubeconfig], capsys)
    assert code == 2 and "--namespace kube-system: protected (guardrails.protected_namespaces)" in err
    code, _, err = run(["-n", "ml-serving", "x", "--reason", "r", "--incident", "inc-zz"], capsys)
    assert code == 2 and "--incident: 'inc-zz' is not an incident id" in err
    code, _, err = run(["-n", "ml-serving", "Bad_Name", "--reason", "r"], capsys)
    assert code == 2 and "pod: 'Bad_Name' is not a Kubernetes object name" in err


def test_a_namespace_whose_labels_cannot_be_read_is_not_taken_as_opted_in_or_out(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    running.call(running.emulator.inject, Fault(status=403, method="GET", plural="namespaces", times=10))
    code, out, _ = run(["-n", vllm.namespace, vllm.name, "--reason", "r", "--kubeconfig", kubeconfig], capsys)
    assert code == 1
    assert out.startswith(
        f"{vllm.namespace}/{vllm.name}: not quarantined: whether namespace {vllm.namespace} opted in"
        " (serving-guard.io/enforce=true) is unknown: namespace ml-serving could not be read:"
    )
    assert LABEL not in (stored(running, vllm)["metadata"].get("labels") or {})


def test_isolate_cuts_one_way_and_never_narrows_a_wider_quarantine(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    argv = [
        "-n",
        vllm.namespace,
        vllm.name,
        "--reason",
        "exfiltration",
        "--by",
        "carol",
        "--kubeconfig",
        kubeconfig,
    ]
    code, out, err = run([*argv, "--isolate", "egress"], capsys)
    assert code == 0, err
    assert out.startswith(f"{vllm.namespace}/{vllm.name}: quarantined (egress cut)")
    assert stored(running, vllm)["metadata"]["labels"][LABEL] == "true-egress"
    assert stored(running, vllm)["metadata"]["annotations"][QUARANTINE_LABELS] == f"{LABEL}=true-egress"
    code, out, _ = run([*argv, "--isolate", "ingress"], capsys)
    # Both ways now: not "quarantined (ingress cut)".
    assert code == 0
    assert out.startswith(f"{vllm.namespace}/{vllm.name}: quarantined (widened its egress cut to both;")
    assert stored(running, vllm)["metadata"]["labels"][LABEL] == "true"
    assert stored(running, vllm)["metadata"]["annotations"][QUARANTINE_LABELS] == f"{LABEL}=true"
    with pytest.raises(SystemExit) as exited:
        run([*argv, "--isolate", "sideways"], capsys)
    assert exited.value.code == 2 and "--isolate: invalid choice: 'sideways'" in capsys.readouterr().err


def test_a_release_that_does_not_know_the_label_refuses_instead_of_saying_released(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantined under a custom label, released without --config: the default label is not on
    the pod, and saying "released" (clearing its record) would leave it cut off unseen."""
    running, pods, kubeconfig = seeded
    torchserve = pods["torchserve"]
    custom = acme_config(tmp_path, kubeconfig)
    where = ["-n", torchserve.namespace, torchserve.name]
    code, _, err = run([*where, "--reason", "r", "--by", "carol", "--config", str(custom)], capsys)
    assert code == 0, err
    release = ["release", *where, "--reason", "done", "--by", "carol"]
    assert main([*release, "--kubeconfig", kubeconfig]) == 1
    out = capsys.readouterr().out
    assert "failed: the pod carries a quarantine record (serving-guard.io/quarantined-at) but not the" in out
    # The record names the label it was quarantined under.
    assert "it was quarantined under acme.io/isolated=true; nothing was changed" in out
    assert "run release with the responder's --config" in out and ": released" not in out
    metadata = stored(running, torchserve)["metadata"]
    assert metadata["labels"]["acme.io/isolated"] == "true"
    assert "serving-guard.io/quarantined-at" in metadata["annotations"]
    assert "serving-guard.io/released-at" not in metadata["annotations"]
    # Carrying a destination block (the default block label) too: still refused, block and all.
    pod = stored(running, torchserve)
    pod["metadata"]["labels"]["serving-guard.io/block"] = "0123456789ab"
    running.call(running.emulator.put_object, "v1/pods", pod)
    assert main([*release, "--kubeconfig", kubeconfig]) == 1
    assert "failed: the pod carries a quarantine record" in capsys.readouterr().out
    labels = stored(running, torchserve)["metadata"]["labels"]
    assert labels["acme.io/isolated"] == "true" and "serving-guard.io/block" in labels
    # With the config it goes.
    assert main([*release, "--config", str(custom)]) == 0
    assert "acme.io/isolated" not in stored(running, torchserve)["metadata"]["labels"]
    # Again: nothing left to lift, and said so (who released it), not "released".
    assert main([*release, "--config", str(custom)]) == 0
    again = capsys.readouterr().out
    assert (
        f"{torchserve.namespace}/{torchserve.name}: nothing to release: its release from acme.io/isolated"
        " is recorded already (by carol at"
    ) in again, again


def test_an_incident_named_without_the_journal_is_refused_before_anything_is_done(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Else the action is done, journaled nowhere and told to no one, while the person believes it is."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    argv = ["-n", vllm.namespace, vllm.name, "--reason", "r", "--by", "carol", "--incident", INCIDENT]
    code, out, err = run([*argv, "--kubeconfig", kubeconfig], capsys)
    assert code == 2 and out == ""
    assert f"--incident {INCIDENT}: it is recorded in the responder's journal" in err
    assert "give the responder's --config" in err and "nothing was done" in err
    elsewhere = write_config(tmp_path, kubeconfig)  # its journal.db does not exist here
    code, out, err = run([*argv, "--config", str(elsewhere)], capsys)
    assert code == 2 and "is not here (run where the responder runs)" in err
    assert main(["release", *argv, "--kubeconfig", kubeconfig]) == 2
    assert LABEL not in stored(running, vllm)["metadata"].get("labels", {})


def test_a_release_clears_a_record_whose_label_was_taken_off_by_hand_naming_that_label(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantined under a custom label that on-call then took off by hand (kubectl label ... -): the
    record names the label, so a release without --config sees the pod is held under no label any
    more and clears the record, naming the label that was gone, instead of refusing (review-session-44
    L4: a record told apart from another config's quarantine)."""
    running, pods, kubeconfig = seeded
    torchserve = pods["torchserve"]
    custom = acme_config(tmp_path, kubeconfig)
    where = ["-n", torchserve.namespace, torchserve.name]
    code, _, err = run([*where, "--reason", "r", "--by", "carol", "--config", str(custom)], capsys)
    assert code == 0, err
    pod = stored(running, torchserve)
    assert pod["metadata"]["annotations"]["serving-guard.io/quarantine-labels"] == "acme.io/isolated=true"
    del pod["metadata"]["labels"]["acme.io/isolated"]
    running.call(running.emulator.put_object, "v1/pods", pod)

    release = ["release", *where, "--reason", "done", "--by", "carol", "--kubeconfig", kubeconfig]
    assert main(release) == 0
    out = capsys.readouterr().out
    assert (
        f"{torchserve.namespace}/{torchserve.name}: nothing to release: the label it was quarantined under"
        " (acme.io/isolated=true) was already gone; its quarantine record cleared by carol"
    ) in out
    annotations = stored(running, torchserve)["metadata"]["annotations"]
    assert "serving-guard.io/quarantined-at" not in annotations
    assert "serving-guard.io/quarantine-labels" not in annotations


def test_a_cut_widened_by_hand_under_another_label_is_still_refused_by_a_release_without_config(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantined egress under acme (recorded acme.io/isolated=true-egress), widened by hand to both:
    still quarantined under acme, whatever the value (review-session-45 H1: read as a lapse, the
    record was cleared and the label left on)."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    custom = acme_config(tmp_path, kubeconfig)
    code, _, err = run(
        [*where, "--reason", "r", "--by", "carol", "--config", str(custom), "--isolate", "egress"], capsys
    )
    assert code == 0, err
    edit_pod(running, pod, lambda meta: meta["labels"].__setitem__(ACME, "true"))

    assert main(["release", *where, "--reason", "done", "--by", "carol", "--kubeconfig", kubeconfig]) == 1
    assert f"it was quarantined under {ACME}=true; nothing was changed" in capsys.readouterr().out
    meta = stored(running, pod)["metadata"]
    assert meta["labels"][ACME] == "true" and QUARANTINED_AT in meta["annotations"]


@pytest.mark.parametrize("garbage", ["", ACME, f"{ACME}:true"])
def test_a_record_edited_into_something_unreadable_names_no_label_and_is_refused(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], garbage: str
) -> None:
    """Read as naming no label (as an earlier version's record), never as a lapse (review-session-45
    M2)."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    code, _, err = run(
        [*where, "--reason", "r", "--by", "carol", "--config", str(acme_config(tmp_path, kubeconfig))], capsys
    )
    assert code == 0, err
    edit_pod(running, pod, lambda meta: meta["annotations"].__setitem__(QUARANTINE_LABELS, garbage))

    assert main(["release", *where, "--reason", "done", "--by", "carol", "--kubeconfig", kubeconfig]) == 1
    assert "it may have been quarantined under another quarantine.label" in capsys.readouterr().out
    assert QUARANTINED_AT in stored(running, pod)["metadata"]["annotations"]


def test_a_release_by_one_of_two_configs_says_the_other_still_holds_the_pod_and_keeps_its_label_named(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantined by acme and by the default config; released with the default's: its label goes,
    the release says acme's still cuts the pod, and the record still names acme's label, so a rerun
    says so again (review-session-45 M3: "released", and the whole record wiped; review-session-45c
    L6: a rerun was refused)."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    default = write_config(tmp_path, kubeconfig)
    for config in (acme_config(tmp_path, kubeconfig), default):
        code, _, err = run([*where, "--reason", "r", "--by", "carol", "--config", str(config)], capsys)
        assert code == 0, err
    assert stored(running, pod)["metadata"]["annotations"][QUARANTINE_LABELS] == f"{ACME}=true,{LABEL}=true"

    assert main(["release", *where, "--reason", "done", "--by", "carol", "--config", str(default)]) == 0
    out = capsys.readouterr().out
    assert "released by carol: done" in out
    assert f"the pod is still quarantined under {ACME}=true (another config's quarantine.label)" in out
    meta = stored(running, pod)["metadata"]
    assert meta["labels"][ACME] == "true" and LABEL not in meta["labels"]
    assert meta["annotations"][QUARANTINE_LABELS] == f"{ACME}=true"

    # Run again, with the default's config or without one (the default label): its release is
    # recorded already, said so, with the quarantine that stands (not refused, exit 1).
    for again in (["--config", str(default)], ["--kubeconfig", kubeconfig]):
        assert main(["release", *where, "--reason", "again", "--by", "dave", *again]) == 0
        said = capsys.readouterr().out
        assert f"nothing to release: its release from {LABEL} is recorded already (by carol at" in said
        assert f"the pod is still quarantined under {ACME}=true (another config's quarantine.label)" in said


def test_a_release_refused_with_a_config_given_points_at_the_other_config(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantined under acme only, released with the default config: refused, and not told to give
    the --config it was given (review-session-45 M4)."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    code, _, err = run(
        [*where, "--reason", "r", "--by", "carol", "--config", str(acme_config(tmp_path, kubeconfig))], capsys
    )
    assert code == 0, err

    release = ["release", *where, "--reason", "done", "--by", "carol"]
    assert main([*release, "--config", str(write_config(tmp_path, kubeconfig))]) == 1
    out = capsys.readouterr().out
    assert (
        f"it was quarantined under {ACME}=true; nothing was changed: run release with the --config of" in out
    )
    assert "run release with the responder's --config" not in out
    assert stored(running, pod)["metadata"]["labels"][ACME] == "true"


def test_a_second_release_keeps_the_first_ones_record_and_says_it_is_recorded_already(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two on-call engineers paste the same release: the second changes nothing and says who released
    it, and the pod's record keeps the first's name and reason (review-operator M2: the second wrote
    theirs over it, read "the pod was not quarantined")."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name, "--config", str(write_config(tmp_path, kubeconfig))]
    code, _, err = run([*where, "--reason", "shell", "--by", "alice"], capsys)
    assert code == 0, err
    assert main(["release", *where, "--reason", "false positive", "--by", "bob"]) == 0
    assert "released by bob: false positive" in capsys.readouterr().out
    record = dict(stored(running, pod)["metadata"]["annotations"])

    assert main(["release", *where, "--reason", "fp too", "--by", "carol"]) == 0
    out = capsys.readouterr().out
    assert f"nothing to release: its release from {LABEL} is recorded already (by bob at" in out, out
    assert "carol" not in out and not out.rstrip().endswith(";"), out
    assert stored(running, pod)["metadata"]["annotations"] == record
