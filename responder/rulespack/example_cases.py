"""The rule examples of the examples file (per rule, actions it must and must not match), each made
something sysdig can judge: an action recorded in a capture (``proven_by``), an evasion case that
shows the same thing, or the nearest recorded action rewritten into the example's action.

An example a recording cannot be rewritten into (it runs in a container: a configured probe, an
image; it needs a field 2022 libsinsp lacks) is listed as not evaluated, with the reason: nothing
is skipped silently.
"""

# ruff: noqa: S108 - the paths and addresses are what the attacker's program names: text in
# derived captures, never opened or bound here.

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath

from responder.rulespack.derived import Derivation, DerivedCase, Expectation
from responder.rulespack.evasions_common import (
    CREDENTIALS,
    DOWNLOAD,
    DRIFT,
    EXEC,
    RENAMED,
    REVERSE_SHELL,
    SHELL,
    SYMLINKED,
    TAMPER,
    THREAD,
    exec_as,
    merged,
    opens_instead,
)
from responder.rulespack.evasions_net import CONNECTED, SENDTO
from responder.rulespack.examples import Action, Example, ExamplesFile
from responder.rulespack.recorded import (
    CAT_H1,
    CHMOD_D3,
    CURL_F2,
    DROPPED_G2,
    LN_D4,
    MV_D2,
    PYTHON_B1,
    PYTHON_C1,
    PYTHON_D1,
    PYTHON_E1,
    PYTHON_E2,
    SERVICE_ACCOUNT_TOKEN,
    SH_A1,
    CaptureLibrary,
    Recorded,
    Replacements,
    as_pid_1,
    chmod,
    rename,
    symlink,
    tcp_to,
    udp_to,
)

# The program each rule's exec examples are started in place of: the recorded action of that rule.
EXEC_TEMPLATES = {
    SHELL: SH_A1,
    REVERSE_SHELL: PYTHON_B1,
    DOWNLOAD: CURL_F2,
    DRIFT: DROPPED_G2,
    CREDENTIALS: CAT_H1,
}
# The recorded open each rule's open examples replace (the program and the path it opened).
OPEN_TEMPLATES: dict[str, tuple[Recorded, str]] = {
    CREDENTIALS: (CAT_H1, SERVICE_ACCOUNT_TOKEN),
    TAMPER: (PYTHON_D1, "/models/resnet/model.pt"),
}
READ_TEMPLATE = (PYTHON_C1, "/tmp/evil/model.pt")
WRITE_TEMPLATE = (PYTHON_D1, "/models/resnet/model.pt")
# The executable Falco reports for a program started by name (the image's): sysdig 0.29 reports the
# path given to execve, so the derivation gives Falco's. Scripts (pip) resolve to their interpreter.
RESOLVED = {
    "sh": "/usr/bin/dash",
    "python3": "/usr/bin/python3.11",
    "pip": "/usr/bin/python3.11",
    "pip3.11": "/usr/bin/python3.11",
}
# Examples whose program Falco sees otherwise than its argv says: a link resolved, a script started
# by its interpreter (the kernel puts the interpreter first and names the process after the script).
STARTED_AS: dict[str, tuple[str, list[str], str]] = {
    "shell-under-another-name": ("/usr/bin/dash", ["/tmp/x", "-c", "true"], "x"),
    "curl-under-another-name": ("/usr/bin/curl", ["/tmp/c", "--version"], "c"),
    "system-script-run-by-the-images-sh": ("/usr/bin/dash", ["/bin/sh", "/sbin/ldconfig", "-p"], "ldconfig"),
}
# Examples an evasion case shows (they need a parent a recording has only there).
SHOWN_BY_EVASION = {
    "torchserve-unpacked-model": "only TorchServe's worker loading its unpacked model is quiet"
    "[java python /home/model-server/tmp/models/3f2a9c1e5b7d/resnet18.pt]",
    # It checks a default (the README's GKE recipe changes it): judged as that case, pins included.
    "cloud-metadata-dns": "egress allows link-local addresses only for DNS[udp 169.254.169.254:53]",
}
NOT_EVALUABLE = {
    "shell-as-entrypoint": "the exception holds while the container is younger than 30 s"
    " (container.duration), which 2022 libsinsp lacks",
    "exec-from-upper-layer": "the rule sees the overlayfs upper layer (proc.is_exe_upper_layer), which 2022"
    " libsinsp lacks",
    "model-unlink": "no recording holds an unlink to rewrite (`rules check` compiles the clause)",
}
CONTAINER_ONLY = "needs a container ({what}): the recordings are host processes"


@dataclass(frozen=True)
class ExampleCase:
    """One example of one rule, and how it is judged: exactly one of the last four is set."""

    rule: str
    example: Example
    positive: bool
    derived: DerivedCase | None = None
    proven_by: str | None = None  # capture.scap#action, judged by the capture suite
    shown_by: str | None = None  # an evasion case's id
    not_evaluated: str | None = None  # why not

    @property
    def id(self) -> str:
        return self.example.id

    @property
    def expected(self) -> str:
        return "must fire" if self.positive else "must stay silent"


def example_cases(examples: ExamplesFile) -> list[ExampleCase]:
    cases = []
    for entry in examples.rules:
        for example, positive in [(e, True) for e in entry.positive] + [(e, False) for e in entry.negative]:
            cases.append(_example_case(entry.rule, example, positive))
    return cases


def _example_case(rule: str, example: Example, positive: bool) -> ExampleCase:
    if example.proven_by is not None:
        return ExampleCase(rule, example, positive, proven_by=example.proven_by)
    if example.id in SHOWN_BY_EVASION:
        return ExampleCase(rule, example, positive, shown_by=SHOWN_BY_EVASION[example.id])
    context = example.context
    if context.probe is not None:
        return ExampleCase(
            rule, example, positive, not_evaluated=CONTAINER_ONLY.format(what=f"{context.probe} probe")
        )
    if context.image is not None:
        return ExampleCase(
            rule, example, positive, not_evaluated=CONTAINER_ONLY.format(what=f"image {context.image}")
        )
    if example.id in NOT_EVALUABLE:
        return ExampleCase(rule, example, positive, not_evaluated=NOT_EVALUABLE[example.id])
    derived = _derive(rule, example, positive)
    if isinstance(derived, str):
        return ExampleCase(rule, example, positive, not_evaluated=derived)
    return ExampleCase(rule, example, positive, derived=derived)


def _derive(rule: str, example: Example, positive: bool) -> DerivedCase | str:
    """The example as a derived case, or why it cannot be one."""
    made = _action(rule, example.id, example.action)
    if isinstance(made, str):
        return made
    recorded, derive, on = made
    if example.context.entrypoint:
        derive = merged(derive, _pid_1(recorded))
    group = f"examples of {rule}"
    expectation = Expectation(rule, positive, on)
    return DerivedCase(f"{example.id}", group, recorded, derive, (expectation,))


def _pid_1(recorded: Recorded) -> Derivation:
    def derive(library: CaptureLibrary) -> Replacements:
        return as_pid_1(library, recorded)

    return derive


def _action(rule: str, example_id: str, action: Action) -> tuple[Recorded, Derivation, str] | str:
    if action.exec is not None:
        return _exec(rule, example_id, action.exec)
    if action.open_read is not None or action.open_write is not None:
        path = action.open_read if action.open_read is not None else action.open_write
        assert path is not None
        if '"' in path:
            return "a path with a double quote cannot be named in a sysdig filter"
        default = READ_TEMPLATE if action.open_read is not None else WRITE_TEMPLATE
        recorded, recorded_path = OPEN_TEMPLATES.get(rule, default)
        if action.open_read is not None and rule == TAMPER:
            recorded, recorded_path = READ_TEMPLATE
        on = f'evt.type = openat and evt.dir = < and {THREAD} and evt.rawarg.name = "{path}"'
        return recorded, opens_instead(recorded, recorded_path, path), on
    if action.rename is not None:
        source, target = action.rename.source, action.rename.to
        return MV_D2, lambda library: rename(library, source, target), RENAMED
    if action.chmod is not None:
        path = action.chmod.path
        return (
            CHMOD_D3,
            lambda library: chmod(library, path),
            f"evt.type = fchmodat and evt.dir = < and {THREAD}",
        )
    if action.symlink is not None:
        target, link = action.symlink.target, action.symlink.link
        return LN_D4, lambda library: symlink(library, target, link), SYMLINKED
    if action.connect is not None:
        connect = action.connect
        if ipaddress.ip_address(connect.address).version != 4:
            return "only IPv4 connects are rewritten (the recorded ones are IPv4)"
        if connect.proto == "tcp":
            return PYTHON_E1, lambda library: tcp_to(library, connect.address, connect.port), CONNECTED
        return PYTHON_E2, lambda library: udp_to(library, connect.address, connect.port), SENDTO
    return "no recorded action of this kind to rewrite"


def _exec(rule: str, example_id: str, argv: list[str]) -> tuple[Recorded, Derivation, str] | str:
    recorded = EXEC_TEMPLATES.get(rule, SH_A1)
    if example_id in STARTED_AS:
        path, argv, name = STARTED_AS[example_id]
    else:
        path = argv[0] if argv[0].startswith("/") else RESOLVED.get(argv[0], f"/usr/bin/{argv[0]}")
        name = PurePosixPath(argv[0]).name[:15]  # the kernel's comm: 15 characters
    derive = exec_as(recorded, path=path, argv=argv, name=name)
    if rule == CREDENTIALS:
        # The rule fires on the open, not the exec: cat opens its argument where h1's opened the token.
        derive = merged(derive, opens_instead(CAT_H1, SERVICE_ACCOUNT_TOKEN, argv[-1]))
        return recorded, derive, f"evt.type = openat and evt.dir = < and {THREAD}"
    return recorded, derive, EXEC
