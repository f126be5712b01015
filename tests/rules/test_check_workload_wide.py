"""`rules check` warns of a tuning that switches a rule off for a whole image, pod or namespace: an
exception or condition on container.image.repository or k8s.ns.name (Triton's image named in a shell
exception silences the rule for every Triton pod). The recorded captures are host processes, so
`rules test` cannot show it: the warning is all there is, at the user's file and line. And `rules test`
names the line of a misspelt field in a tuning (sysdig names an offset in the expanded condition)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK

# Two whole `rules test` runs in some tests (~50 s each here): a hang guard, not a speed target.
pytestmark = pytest.mark.timeout(300)

IMAGE_EXCEPTION = """\
- rule: Shell in serving pod
  exceptions:
    - name: triton_image
      fields: container.image.repository
      comps: in
      values: [nvcr.io/nvidia/tritonserver]
  override:
    exceptions: append
"""
NAMESPACE_CONDITION = """\
- rule: Credential access in serving pod
  condition: and not k8s.ns.name = ml-serving
  override:
    condition: append
"""
HARMLESS = """\
- rule: Shell in serving pod
  exceptions:
    - name: nightly_job
      fields: [proc.name, proc.pname]
      comps: ["=", "="]
      values: [[bash, nightly-reindex]]
  override:
    exceptions: append
"""


@pytest.mark.parametrize(
    ("text", "line", "rule", "fields", "what"),
    [
        (IMAGE_EXCEPTION, 3, "Shell in serving pod", "container.image.repository", "exception"),
        (NAMESPACE_CONDITION, 2, "Credential access in serving pod", "k8s.ns.name", "condition"),
    ],
)
def test_a_tuning_on_a_whole_image_or_namespace_is_a_warning_at_its_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    rule: str,
    fields: str,
    what: str,
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(text, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) in (0, 3)  # a warning, no error
    out = capsys.readouterr().out
    assert (
        f"{tuning}:{line}: warning: rule '{rule}': this {what} tests {fields}, which holds for every" in out
    )
    assert "cannot evaluate it" in out


def test_a_tuning_on_process_fields_and_the_pack_itself_are_not_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(HARMLESS, encoding="utf-8")
    main(["rules", "check", "--no-falco", str(PACK), str(tuning)])
    # The pack's own model-puller exception (on container.image.repository, values left to the user)
    # is not the user's tuning.
    assert "holds for every process" not in capsys.readouterr().out


MISSPELT = """\
- rule: Shell in serving pod
  exceptions:
    - name: nightly_job
      fields: [proc.pnmae]
      values: [[nightly-reindex]]
  override:
    exceptions: append
"""


def test_rules_test_names_the_line_of_a_misspelt_field_and_tests_nothing(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sysdig's own words name an offset in the expanded condition: rules test says the line."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(MISSPELT, encoding="utf-8")
    assert main(["rules", "test", "--override", str(tuning)]) == 2
    captured = capsys.readouterr()
    assert (
        f"{tuning}:4: error: rule 'Shell in serving pod': sysdig filter error: unrecognized field"
        in captured.err
    )
    assert "nothing was tested" in captured.err and "Traceback" not in captured.err


IPV6_ALLOWED = """\
- list: serving_guard_allowed_egress_networks
  items: ["fd00::/8"]
  override:
    items: append
"""


def test_rules_test_says_what_of_the_tuning_libsinsp_could_not_evaluate(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An IPv6 network 2022 libsinsp cannot parse is left out for it: "ok" could be an alert Falco
    would not send, so the line of the tuning is named, in the text and the JSON."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(IPV6_ALLOWED, encoding="utf-8")
    main(["rules", "test", "--override", str(tuning)])
    out = capsys.readouterr().out
    assert f"not evaluated: {tuning}:2: fd00::/8 in fd.snet in (" in out
    assert "rule 'Anomalous egress from serving pod' was run without it" in out
    main(["rules", "test", "--format", "json", "--override", str(tuning)])
    document = json.loads(capsys.readouterr().out)
    assert [line.split(": ")[1] for line in document["tuning_not_evaluated"]] == [f"{tuning}:2"]


def test_rules_test_says_rules_checks_warnings_on_the_users_files(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Triton's image in a shell exception passes every capture (host processes have no image): the
    result alone reads "ok", so rules test says the warning too, at the line, in text and JSON."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(IMAGE_EXCEPTION, encoding="utf-8")
    assert main(["rules", "test", "--override", str(tuning)]) == 0
    out = capsys.readouterr().out
    warning = f"{tuning}:3: warning: rule 'Shell in serving pod': this exception tests container.image"
    said = [line for line in out.splitlines() if line.startswith(warning)]
    assert len(said) == 1, out
    assert out.index(said[0]) < out.index("result: ok")
    # The result line says it too: its "ok" proves nothing of what the warning names.
    assert "; 1 warning(s) on your files above: what they switch off, no capture shows" in out
    main(["rules", "test", "--format", "json", "--override", str(tuning)])
    document = json.loads(capsys.readouterr().out)
    assert [w.split(": warning")[0] for w in document["warnings"]] == [f"{tuning}:3"]
    assert document["ok"] is True


SERVING_USER_EXCEPTION = """\
- rule: Shell in serving pod
  exceptions:
    - name: model_server_user
      fields: [user.name]
      comps: ["="]
      values:
        - [model-server]
  override:
    exceptions: append
"""
SERVING_UID_CONDITION = """\
- rule: Shell in serving pod
  condition: and not user.uid = 1000
  override:
    condition: append
"""
ROOT_EXCEPTION = SERVING_USER_EXCEPTION.replace("model-server", "root")


@pytest.mark.parametrize(
    ("text", "line", "fields", "what"),
    [
        (SERVING_USER_EXCEPTION, 3, "user.name", "exception"),
        (SERVING_UID_CONDITION, 2, "user.uid", "condition"),
    ],
)
def test_a_tuning_on_a_user_other_than_root_is_a_warning_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, fields: str, what: str
) -> None:
    """The recorded captures run as root: an exception on the serving user passes them all, yet
    silences the rule for what runs inside the server (review-replay H2: "ok", exit 0)."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(text, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) in (0, 3)
    out = capsys.readouterr().out
    assert (
        f"{tuning}:{line}: warning: rule 'Shell in serving pod': this {what} tests {fields}: the recorded"
        " captures run as root, so `serving-guard rules test` cannot evaluate it" in out
    ), out
    assert "it switches the rule off for whatever runs inside the server" in out


def test_an_exception_on_root_is_left_to_the_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The captures run as root: rules test judges that one (and fails it), no warning needed."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(ROOT_EXCEPTION, encoding="utf-8")
    main(["rules", "check", "--no-falco", str(PACK), str(tuning)])
    assert "the recorded captures run as root" not in capsys.readouterr().out


MACRO_ON_SERVING_USER = """\
- macro: serving_guard_shell
  condition: and not user.name = model-server
  override:
    condition: append
"""
ROOT_BESIDE_A_PROCESS = """\
- rule: Shell in serving pod
  exceptions:
    - name: bash_as_root
      fields: [proc.name, user.name]
      comps: ["=", "="]
      values:
        - [bash, root]
  override:
    exceptions: append
"""
OWN_RULE_ON_A_USER = """\
- rule: Root shell anywhere
  desc: a rule of the user's own
  condition: evt.type = execve and evt.dir = < and proc.name = bash and user.name = model-server
  output: root shell (user=%user.name)
  priority: WARNING
  source: syscall
"""


def test_a_macro_of_yours_on_a_user_is_warned_of_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rules/README tells how to replace or append to a macro: one on the serving user silences every
    rule using it (review-48b M4)."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(MACRO_ON_SERVING_USER, encoding="utf-8")
    main(["rules", "check", "--no-falco", str(PACK), str(tuning)])
    out = capsys.readouterr().out
    assert (
        f"{tuning}:2: warning: macro 'serving_guard_shell': this condition tests user.name: the recorded"
        " captures run as root" in out
    ), out
    assert "it switches the rules using it off" in out


@pytest.mark.parametrize(
    "text", [ROOT_BESIDE_A_PROCESS, OWN_RULE_ON_A_USER], ids=["root-beside-a-process", "own-rule"]
)
def test_root_in_a_user_column_and_a_users_own_rule_are_not_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """Only the user column's values count (bash beside root is root); a rule of the user's own tests
    what it is for, it switches no pack rule off (review-48b L1)."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(text, encoding="utf-8")
    main(["rules", "check", "--no-falco", str(PACK), str(tuning)])
    assert "the recorded captures run as root" not in capsys.readouterr().out
