"""The recorded actions derived captures start from, and the rewrites that turn one into an evasion
or a rule example: a program started otherwise, a file opened instead of another, a connect or a
datagram to another address, a link, rename or mode change of other paths, a program as PID 1.

Each rewrite returns the replacements for scapedit.rewrite: the events it changes, every other
event of the recording stays as it was.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from responder.rulespack import scapedit as se

Replacements = Mapping[int, list[bytes] | se.Retyped]
EXECVE = "evt.type = execve and evt.dir = <"


@dataclass
class CaptureLibrary:
    """The recordings of a directory, each parsed once (per run: a library is made per command)."""

    directory: Path
    _events: dict[str, list[se.Event]] = field(default_factory=dict)
    _blocks: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    _execs: dict[Recorded, tuple[se.Event, se.Event]] = field(default_factory=dict)

    def path(self, capture: str) -> Path:
        return self.directory / capture

    def events(self, capture: str) -> list[se.Event]:
        if capture not in self._events:
            self._events[capture] = se.read_events(self.path(capture))
        return self._events[capture]

    def blocks(self, capture: str) -> list[tuple[int, bytes]]:
        if capture not in self._blocks:
            self._blocks[capture] = se.read_blocks(self.path(capture))
        return self._blocks[capture]

    def exec_events(self, recorded: Recorded) -> tuple[se.Event, se.Event]:
        if recorded not in self._execs:
            self._execs[recorded] = recorded.find_exec(self)
        return self._execs[recorded]

    def load(self, captures: Iterable[Recorded]) -> None:
        """Parse what the derivations will ask for, before threads share the library."""
        for recorded in captures:
            self.blocks(recorded.capture)
            self.exec_events(recorded)


@dataclass(frozen=True)
class Recorded:
    """A program start in a capture: the first with ``marker`` among its arguments (and that name)."""

    capture: str
    marker: str
    name: str | None = None

    def exec_events(self, library: CaptureLibrary) -> tuple[se.Event, se.Event]:
        return library.exec_events(self)

    def find_exec(self, library: CaptureLibrary) -> tuple[se.Event, se.Event]:
        events = library.events(self.capture)
        exit_ = next(
            (
                e
                for e in events
                if e.type == se.EXECVE_EXIT
                and self.marker in e.text(se.EXECVE_ARGS).split(" ")
                and self.name in (None, e.text(se.EXECVE_COMM))
            ),
            None,
        )
        if exit_ is None:
            raise se.CaptureFormatError(
                f"{library.path(self.capture)}: no program started with {self.marker!r} among its arguments"
                + (f" under the name {self.name!r}" if self.name else "")
                + ": the recording is not the one the derived cases were written for"
            )
        return se.find_exec(events, exit_.text(se.EXECVE_ARGS), name=exit_.text(se.EXECVE_COMM))

    def tid(self, library: CaptureLibrary) -> int:
        return self.exec_events(library)[1].tid

    def thread(self, library: CaptureLibrary) -> str:
        """A filter for the events of its thread."""
        return f"thread.tid = {self.tid(library)}"

    def argv(self, library: CaptureLibrary) -> list[str]:
        """Its recorded argv (argv[0] first)."""
        _, exit_ = self.exec_events(library)
        args = exit_.params[se.EXECVE_ARGS].rstrip(b"\0").decode(errors="replace")
        return [exit_.text(se.EXECVE_EXE), *(args.split("\0") if args else [])]

    def exec(
        self,
        library: CaptureLibrary,
        *,
        path: str | None = None,
        argv: list[str] | None = None,
        name: str | None = None,
        cwd: str | None = None,
    ) -> dict[int, list[bytes] | se.Retyped]:
        """Started otherwise: the path given to execve (what sysdig 0.29 reports as proc.exepath),
        argv (argv[0] is proc.exe), the process name and the working directory."""
        enter, exit_ = self.exec_events(library)
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
                for e in library.events(self.capture)[: enter.index]
                if e.tid == exit_.tid and e.type % 2 == 1 and e.type not in se.CLONE_EXITS
            ]
            chdir = se.Retyped(se.CHDIR_EXIT, [struct.pack("<q", 0), se.strings(cwd)])
            replacements[before[-1].index] = chdir
        replacements[exit_.index] = se.replaced(exit_, changes)
        return replacements

    def only(self, library: CaptureLibrary, event_type: int) -> se.Event:
        """The event of that type (the only one) of its thread."""
        found = se.find_events(library.events(self.capture), (event_type,), self.tid(library))
        if len(found) != 1:
            raise se.CaptureFormatError(
                f"{library.path(self.capture)}: {len(found)} events of type {event_type} in thread"
                f" {self.tid(library)}, expected one"
            )
        return found[0]

    def socket(self, library: CaptureLibrary, *, inet_only: bool = False) -> se.Event:
        """The thread's last socket() call (of an AF_INET socket, with ``inet_only``)."""
        return [
            e
            for e in library.events(self.capture)
            if e.tid == self.tid(library)
            and e.type == se.SOCKET_ENTER
            and (not inet_only or e.params[0][:1] == b"\x02")
        ][-1]


# The recorded actions the derivations start from.
SH_A1 = Recorded("sg-a-shell.scap", "sgcap-a1")  # sh -c echo sgcap-a1
SH_A4_PTY = Recorded("sg-a-shell.scap", "bash", "sh")  # sh -c "bash -c 'echo sgcap-a4'" on script's pty
BASH_A4_PTY = Recorded("sg-a-shell.scap", "sgcap-a4", "bash")  # its child bash, on the pty
PYTHON_B1 = Recorded("sg-b-revshell.scap", "sgcap-b1")  # python3 -c 'import pty,socket...'
PYTHON_C1 = Recorded("sg-c-modelload.scap", "sgcap-c1")  # python3 reads /tmp/evil/model.pt
PYTHON_D1 = Recorded("sg-d-tamper.scap", "sgcap-d1")  # python3 appends to /models/resnet/model.pt
SH_D2 = Recorded("sg-d-tamper.scap", "sgcap-d2")  # sh -c 'mv ...', the parent of mv
MV_D2 = Recorded("sg-d-tamper.scap", "/models/resnet/sgcap-d2-old.bin", "mv")
CHMOD_D3 = Recorded("sg-d-tamper.scap", "0666", "chmod")
SH_D4 = Recorded("sg-d-tamper.scap", "sgcap-d4")  # sh -c 'ln -s ...; : sgcap-d4', the parent of ln
LN_D4 = Recorded("sg-d-tamper.scap", "-s", "ln")  # ln -s /tmp/evil/model.pt /models/resnet/evil.pt
PYTHON_E1 = Recorded("sg-e-egress.scap", "sgcap-e1")  # TCP connect 100.64.10.2:443
PYTHON_E2 = Recorded("sg-e-egress.scap", "sgcap-e2")  # UDP sendto 100.64.10.2:53
CURL_F2 = Recorded("sg-f-tools.scap", "--version", "curl")  # curl --version
DROPPED_G2 = Recorded("sg-g-drift.scap", "sgcap-g2")  # /tmp/sgcap-g2-dropped sgcap-g2
CAT_H1 = Recorded("sg-h-creds.scap", "/var/run/secrets/kubernetes.io/serviceaccount/token")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


def _open_name(event: se.Event) -> str:
    return event.text(se.OPENAT_ENTER_NAME if event.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME)


def _open_pair(library: CaptureLibrary, recorded: Recorded, recorded_path: str) -> tuple[se.Event, se.Event]:
    events = library.events(recorded.capture)
    pair = [
        e
        for e in se.find_events(events, (se.OPENAT_ENTER, se.OPENAT_EXIT), recorded.tid(library))
        if _open_name(e) == recorded_path
    ]
    if len(pair) < 2:
        raise se.CaptureFormatError(
            f"{library.path(recorded.capture)}: thread {recorded.tid(library)} does not open {recorded_path}"
        )
    return pair[0], pair[1]


def open_instead(library: CaptureLibrary, recorded: Recorded, recorded_path: str, path: str) -> Replacements:
    """The recorded program opens ``path`` where it opened ``recorded_path`` (the openat pair)."""
    enter, exit_ = _open_pair(library, recorded, recorded_path)
    return {
        enter.index: se.replaced(enter, {se.OPENAT_ENTER_NAME: se.strings(path)}),
        exit_.index: se.replaced(exit_, {se.OPENAT_EXIT_NAME: se.strings(path)}),
    }


def open_flags(library: CaptureLibrary, recorded: Recorded, path: str, flags: int) -> Replacements:
    """The recorded program opens ``path`` with ``flags`` (the driver's PPM_O_* bits)."""
    enter, exit_ = _open_pair(library, recorded, path)
    packed = struct.pack("<I", flags)
    return {
        enter.index: se.replaced(enter, {se.OPENAT_ENTER_FLAGS: packed}),
        exit_.index: se.replaced(exit_, {se.OPENAT_EXIT_FLAGS: packed}),
    }


def token_read_as(library: CaptureLibrary, path: str) -> Replacements:
    """cat (h1) opens ``path`` instead of the service-account token."""
    return open_instead(library, CAT_H1, SERVICE_ACCOUNT_TOKEN, path)


def udp_to(library: CaptureLibrary, address: str, port: int) -> Replacements:
    """The recorded UDP datagram (e2) sent to another address."""
    [sendto] = se.find_events(library.events(PYTHON_E2.capture), (se.SENDTO_ENTER,), PYTHON_E2.tid(library))
    destination = se.ipv4_tuple(("0.0.0.0", 0), (address, port))  # noqa: S104 - unbound, as recorded
    return {sendto.index: se.replaced(sendto, {se.SENDTO_ENTER_TUPLE: destination})}


def tcp_to(library: CaptureLibrary, address: str, port: int) -> Replacements:
    """The recorded TCP connect (e1) to another address."""
    enter, exit_ = [
        e
        for e in se.find_events(
            library.events(PYTHON_E1.capture), (se.CONNECT_ENTER, se.CONNECT_EXIT), PYTHON_E1.tid(library)
        )
        if e.params[1][:1] == b"\x02"  # AF_INET (not the libc's unix-socket lookups)
    ]
    local = exit_.params[se.CONNECT_EXIT_TUPLE][1:7]  # the recorded local address and port
    return {
        enter.index: se.replaced(enter, {se.CONNECT_ENTER_ADDR: se.ipv4_sockaddr(address, port)}),
        exit_.index: se.replaced(
            exit_, {se.CONNECT_EXIT_TUPLE: b"\x02" + local + se.ipv4_sockaddr(address, port)[1:]}
        ),
    }


def socket_type(
    library: CaptureLibrary,
    recorded: Recorded,
    sock_type: int,
    protocol: int | None,
    *,
    inet_only: bool = False,
) -> Replacements:
    """The recorded program's last socket() (of an AF_INET socket, with ``inet_only``) made of another
    type, and protocol unless None."""
    socket = recorded.socket(library, inet_only=inet_only)
    changes = {se.SOCKET_ENTER_TYPE: struct.pack("<I", sock_type)}
    if protocol is not None:
        changes[se.SOCKET_ENTER_PROTO] = struct.pack("<I", protocol)
    return {socket.index: se.replaced(socket, changes)}


def symlink(library: CaptureLibrary, target: str, link: str) -> Replacements:
    """ln (d4) links ``link`` to ``target``."""
    event = LN_D4.only(library, se.SYMLINKAT_EXIT)
    changes = {se.SYMLINKAT_EXIT_TARGET: se.strings(target), se.SYMLINKAT_EXIT_LINKPATH: se.strings(link)}
    return {event.index: se.replaced(event, changes)}


def rename(library: CaptureLibrary, oldpath: str, newpath: str) -> Replacements:
    """mv (d2) moves ``oldpath`` to ``newpath``."""
    event = MV_D2.only(library, se.RENAMEAT2_EXIT)
    changes = {se.RENAMEAT2_EXIT_OLDPATH: se.strings(oldpath), se.RENAMEAT2_EXIT_NEWPATH: se.strings(newpath)}
    return {event.index: se.replaced(event, changes)}


def chmod(library: CaptureLibrary, path: str) -> Replacements:
    """chmod (d3) changes the mode of ``path``."""
    event = CHMOD_D3.only(library, se.FCHMODAT_EXIT)
    return {event.index: se.replaced(event, {se.FCHMODAT_EXIT_FILENAME: se.strings(path)})}


def as_pid_1(library: CaptureLibrary, recorded: Recorded) -> dict[int, list[bytes] | se.Retyped]:
    """The recorded program as the PID 1 of its namespace (its clone's child side says so)."""
    tid = recorded.tid(library)
    [clone] = [
        e
        for e in library.events(recorded.capture)
        if e.tid == tid
        and e.type in se.CLONE_EXITS
        and struct.unpack("<q", e.params[se.CLONE_EXIT_RES])[0] == 0
    ]
    pid_1 = struct.pack("<q", 1)
    return {clone.index: se.replaced(clone, {se.CLONE_EXIT_VTID: pid_1, se.CLONE_EXIT_VPID: pid_1})}
