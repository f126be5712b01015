"""`serving-guard rules test --override` evaluates the rule examples and the evasion cases on the
user's rules, not only the recorded captures: the three tuning mistakes of the replay review
(notes/review-replay.md, M2) each silence attacks no capture holds, and each now fails, naming the
rule, the case, what was expected and the line of the tuning file that changed the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.sysdig import Sysdig

pytestmark = pytest.mark.timeout(180)

DOWNLOAD = "Runtime download or package install in serving pod"
SHELL = "Shell in serving pod"
CREDENTIALS = "Credential access in serving pod"

# "we only care about the tools our images ship"
DOWNLOAD_TOOLS_REPLACED = """\
- list: serving_guard_download_tools
  items: [pip, curl, wget, git]
  override:
    items: replace
"""
# A shell exception for the model server's health checks: hides a shell spawned by the server.
SHELL_UNDER_THE_SERVER = """\
- rule: Shell in serving pod
  exceptions:
    - name: triton_healthcheck
      fields: [proc.pname]
      values: [[tritonserver]]
  override:
    exceptions: append
"""
# "our metrics sidecar reads /proc/*/environ": hides /proc/1/environ, the server's tokens.
ENVIRON_EXCEPTION = """\
# our metrics sidecar reads /proc/*/environ
- rule: Credential access in serving pod
  exceptions:
    - name: proc_environ_reader
      fields: [fd.name]
      comps: [glob]
      values: [["/proc/*/environ"]]
  override:
    exceptions: append
"""


def _failures(out: str) -> list[str]:
    block = out.split("examples and evasions: FAILED", 1)[1].split("\n\nresult:", 1)[0]
    return [line.strip() for line in block.splitlines()[1:]]


def test_the_shipped_pack_holds_every_example_and_evasion(
    sysdig: Sysdig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "test"]) == 0
    out = capsys.readouterr().out
    assert "Rule examples and evasion cases: 142 examples of rules/examples.yaml" in out
    assert "\nexamples and evasions: ok: 135 examples and 829 evasion cases held\n" in out
    assert "\n  R3    Shell in serving pod" in out
    assert out.rstrip().endswith("result: ok: every capture expectation, rule example and evasion case held")


def test_replacing_the_download_tools_fails_and_names_the_list(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "h-download-replace.yaml"
    tuning.write_text(DOWNLOAD_TOOLS_REPLACED)
    assert main(["rules", "test", "--override", str(tuning)]) == 1
    out = capsys.readouterr().out
    failures = _failures(out)
    assert (
        f"evasion more download tools are downloads[dvc pull]: {DOWNLOAD} must fire exactly 1x, fired 0x;"
        f" your files change {DOWNLOAD} at {tuning}:1 (list serving_guard_download_tools)"
    ) in failures
    assert all(DOWNLOAD in failure for failure in failures)
    # The examples of the tools the replacement drops (npx, yarn, ssh ...) fail too.
    examples = sum(failure.startswith("example ") for failure in failures)
    assert any(failure.startswith("example npx: ") for failure in failures)
    assert "captures: ok" in out  # the recorded captures alone did not see it
    assert out.rstrip().endswith(
        f"result: FAILED ({len(failures)}: captures 0, examples {examples},"
        f" evasion cases {len(failures) - examples})"
    )


def test_a_shell_exception_for_the_server_as_parent_fails_and_names_the_exception(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "d-shell-exc-bash.yaml"
    tuning.write_text(SHELL_UNDER_THE_SERVER)
    assert main(["rules", "test", "--override", str(tuning)]) == 1
    failures = _failures(capsys.readouterr().out)
    changed = f"your files change {SHELL} at {tuning}:3 (exception triton_healthcheck of rule '{SHELL}')"
    assert (
        "evasion Triton's stub is excepted only for a model in the model dirs[/tmp/folderAbC123]:"
        f" {SHELL} must fire, fired 0x; {changed}"
    ) in failures
    # The shells chained to the stub's command line, started by tritonserver, are silenced too.
    assert sum("only Triton's own Python backend stub start is not a shell" in f for f in failures) == 11
    assert all(failure.endswith(changed) for failure in failures)


def test_an_environ_exception_fails_on_the_servers_environment_in_json(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "i-environ-exc.yaml"
    tuning.write_text(ENVIRON_EXCEPTION)
    assert main(["rules", "test", "--override", str(tuning), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["captures_ok"] is True
    derived = document["examples_and_evasions"]
    [example] = [e for e in derived["examples"] if e["status"] == "FAIL"]
    assert (example["rule"], example["id"], example["positive"]) == (
        CREDENTIALS,
        "read-server-environment",
        True,
    )
    failed = {e["id"] for e in derived["evasions"] if e["status"] == "FAIL"}
    assert "another process's environment is a credential[/proc/1/environ]" in failed
    assert derived["changed_by_override"] == {
        CREDENTIALS: [f"{tuning}:4 (exception proc_environ_reader of rule '{CREDENTIALS}')"]
    }
    assert (
        f"example read-server-environment: {CREDENTIALS} must fire on `open_read /proc/1/environ` (positive),"
        f" fired 0x on a derived capture; your files change {CREDENTIALS} at {tuning}:4"
        f" (exception proc_environ_reader of rule '{CREDENTIALS}')"
    ) in document["failures"]
