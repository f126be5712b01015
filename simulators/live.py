"""A scenario's live actions, performed for real in the current container (`serving-guard simulate`).

Harmless by construction: every shell only runs ``true``; reverse shells wire their streams to a
socket but run ``true``, and always connect to a listener of our own on 127.0.0.1 (whatever
--target says, so ``simulate all --target`` needs no TCP listener at the target); the egress
connections go only to the explicit --target, with a short timeout; tools run only with ``--version``; files
are dummies created in the run's own directory, and in the model dir only new files named after
the run (created with O_EXCL, never an existing file). Everything created is removed afterwards.

Each action (a step, numbered from 1) runs as a separate process tagged with the run: ``SG_RUN_ID``
in its environment and the step's marker ``sg-run=<run id>.<scenario>.<n>`` in its command line or
its parent's, so the alerts it causes can be told apart, step by step. Each step's processes form a
process group of their own: a step that times out is killed with everything it started, and none
outlives it. An action that cannot run here (a tool that is absent, a read-only model dir, a
noexec /dev/shm) is reported as skipped with the reason, never silently; one that ran and timed
out or errored is reported as failed.

What a run creates is named after its marker (``sg-run=...``) and removed when the scenario ends,
also when simulate is stopped by SIGTERM, SIGHUP or ^C (:class:`ExitOnSignals`); the files made in
the model dir are removed as soon as the scenario's last model-dir step is done. What a run killed
outright (SIGKILL) leaves is found by :func:`find_leftovers` and removed by :func:`remove_leftovers`
(``simulate --cleanup``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import FrameType, TracebackType

from responder.errors import UserError
from simulators.child import EXIT_CANNOT_EXECUTE, EXIT_NOT_ACCEPTED
from simulators.scenario import (
    DOWNLOAD_TOOLS,
    MARKER_PREFIX,
    ConnectAction,
    DriftExecAction,
    LiveAction,
    ModelFileAction,
    ReadFileAction,
    ReverseShellAction,
    RunToolAction,
    Scenario,
    ServeModelAction,
    ShellAction,
    marker,
    step_marker,
    substitute,
)

DEFAULT_MODEL_DIR = "/models"
DEFAULT_SHM_DIR = "/dev/shm"  # noqa: S108 - drift-exec makes its own subdirectory
# What the control serves: any of these in the model dir (the rules pack's model extensions).
MODEL_EXTENSIONS = (
    ".pt",
    ".pth",
    ".bin",
    ".safetensors",
    ".onnx",
    ".pb",
    ".h5",
    ".keras",
    ".pkl",
    ".joblib",
    ".gguf",
    ".plan",
    ".engine",
    ".tflite",
    ".mar",
    ".ckpt",
    ".msgpack",
)
RUN_ENV = "SG_RUN_ID"
SCENARIO_ENV = "SG_SCENARIO"
# In the run's own directory: the pid of the simulate that made it (a leftover whose simulate still
# runs is in use, not left over).
PID_FILE = ".sg-pid"
# How long a step's processes may take to go once its first process ended (they were exiting).
_LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        """``HOST:PORT`` or ``[IPv6]:PORT``."""
        host, sep, port = text.rpartition(":")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError(f"--target must be HOST:PORT (IPv6 as [ADDR]:PORT), got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LiveSettings:
    run_id: str
    # The run creates its own directory below this one and removes it afterwards.
    workdir: Path
    model_dir: Path = Path(DEFAULT_MODEL_DIR)
    shm_dir: Path = Path(DEFAULT_SHM_DIR)
    target: Target | None = None
    python: str = sys.executable
    timeout_seconds: float = 10.0


class StepStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    what: str
    status: StepStatus
    detail: str = ""
    command: tuple[str, ...] = ()
    number: int = 0  # the step's place in the scenario's live actions, from 1 (its marker's .<n>)
    fires: bool = True  # the scenario's rule is expected to fire for it


@dataclass
class ScenarioRun:
    scenario: Scenario
    marker: str
    steps: list[StepResult] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)

    @property
    def performed(self) -> int:
        return sum(1 for step in self.steps if step.status is StepStatus.DONE)

    @property
    def failed(self) -> int:
        return sum(1 for step in self.steps if step.status is StepStatus.FAILED)

    @property
    def ok(self) -> bool:
        """No action failed, everything was cleaned up, and at least one action really ran."""
        return not self.failed and not self.cleanup_problems and self.performed > 0

    @property
    def steps_to_verify(self) -> tuple[int, ...]:
        """The steps that ran and that the scenario's rule must fire for: verify --steps."""
        return tuple(s.number for s in self.steps if s.status is StepStatus.DONE and s.fires and s.number)


class _Skip(Exception):
    pass


class _Fail(Exception):
    pass


class LoopbackListener:
    """The TCP listener on 127.0.0.1 that reverse shells connect to (never the --target).
    It never sends anything: it only records what arrives."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="sg-listener", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn, contextlib.suppress(OSError):
            while conn.recv(4096):
                pass

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.connections >= count:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=2)


class ExitOnSignals:
    """While active (in the main thread): SIGTERM and SIGHUP raise SystemExit(128 + signal), as ^C
    raises KeyboardInterrupt, so that ``finally`` blocks (the run's cleanup) run; Python's default
    for them is to die on the spot. Inside :meth:`shield` (the cleanup itself) a signal waits until
    the block is done. The previous handlers are put back at the end."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._raised = False
        self._shielded = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ExitOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]  # as signal.signal returned it
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if not self._shielded:
            self._raise()

    def _raise(self) -> None:
        if self._raised or self.received is None:
            return  # once: a second signal while the first one unwinds would cut the cleanup short
        self._raised = True
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + self.received)

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if not self._shielded:
            self._raise()


class ScenarioRunner:
    """Runs one scenario's actions, then removes everything it created."""

    def __init__(
        self, scenario: Scenario, settings: LiveSettings, signals: ExitOnSignals | None = None
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.signals = signals
        self.marker = marker(settings.run_id, scenario.name)
        # What this step's processes are tagged with (the step's marker while a step runs).
        self._tag = self.marker
        self.rundir = settings.workdir / self.marker
        self.home = self.rundir / "home"
        self.values = {
            "marker": self.marker,
            "run_id": settings.run_id,
            "rundir": str(self.rundir),
            "home": str(self.home),
            "model_dir": str(settings.model_dir),
        }
        self._model_files: list[Path] = []  # created by us in the model dir, in creation order
        self._extra_dirs: list[Path] = []  # created by us outside the run dir (/dev/shm/<marker>)
        self._listener: LoopbackListener | None = None
        # What the run did so far: complete once run() returns, partial if it was interrupted.
        self.result = ScenarioRun(scenario, self.marker)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> ScenarioRun:
        if self.scenario.needs_target and self.settings.target is None:
            raise UserError(
                f"{self.scenario.name} connects out and needs an explicit --target HOST:PORT "
                "(an address you control; nothing connects anywhere by default)"
            )
        if not self.settings.workdir.is_dir():
            raise UserError(f"--workdir {self.settings.workdir} is not a directory")
        try:
            self.rundir.mkdir(mode=0o700)
        except FileExistsError:
            raise UserError(f"{self.rundir} already exists: use another --run-id") from None
        except OSError as exc:
            raise UserError(f"cannot create {self.rundir}: {exc.strerror}") from None
        result = self.result
        # The model dir holds files of ours only until the last step that works there is done.
        last_model_step = max(
            (n for n, action in enumerate(self.scenario.live, 1) if isinstance(action, ModelFileAction)),
            default=0,
        )
        try:
            (self.rundir / PID_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")
            for number, action in enumerate(self.scenario.live, 1):
                result.steps.append(self._step(number, action))
                if number == last_model_step:
                    with self._shielded():
                        result.cleanup_problems.extend(self._remove_model_files())
        finally:
            with self._shielded():
                result.cleanup_problems.extend(self._cleanup())
        return result

    def _shielded(self) -> contextlib.AbstractContextManager[None]:
        return self.signals.shield() if self.signals is not None else contextlib.nullcontext()

    def _step(self, number: int, action: LiveAction) -> StepResult:
        what = _describe(action)
        self._tag = step_marker(self.settings.run_id, self.scenario.name, number)
        step = StepResult(what, StepStatus.DONE, number=number, fires=action.fires)
        try:
            detail, command = self._perform(action)
        except _Skip as exc:
            return replace(step, status=StepStatus.SKIPPED, detail=str(exc))
        except _Fail as exc:
            return replace(step, status=StepStatus.FAILED, detail=str(exc))
        except OSError as exc:  # preparing files (disk full, permissions): this action failed, go on
            where = f" ({exc.filename})" if exc.filename else ""
            return replace(step, status=StepStatus.FAILED, detail=f"{exc.strerror or exc}{where}")
        finally:
            self._tag = self.marker
        return replace(step, detail=detail, command=tuple(command))

    def _perform(self, action: LiveAction) -> tuple[str, Sequence[str]]:
        if isinstance(action, ShellAction):
            return self._shell(action)
        if isinstance(action, ReadFileAction):
            return self._read_file(action)
        if isinstance(action, ModelFileAction):
            return self._model_file(action)
        if isinstance(action, ReverseShellAction):
            return self._reverse_shell(action)
        if isinstance(action, ConnectAction):
            return self._connect(action)
        if isinstance(action, RunToolAction):
            return self._run_tool(action)
        if isinstance(action, DriftExecAction):
            return self._drift_exec(action)
        return self._serve_model(action)

    # -- process plumbing --------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[RUN_ENV] = self.settings.run_id
        env[SCENARIO_ENV] = self.scenario.name
        return env

    def _child(self, operation: str, *args: str) -> list[str]:
        return [self.settings.python, "-m", "simulators.child", operation, *args, self._tag]

    def _exec(self, argv: Sequence[str], *, pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
        """Run one process of a step in a process group (a session) of its own, so that nothing
        it starts outlives the step: on a timeout, an error or an interruption (a signal, ^C) the
        whole group is killed, and so is what is left of it once the process ended."""
        try:
            process = subprocess.Popen(
                list(argv),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        except OSError as exc:
            raise _Fail(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            stdout, stderr = process.communicate(timeout=self.settings.timeout_seconds)
        except subprocess.TimeoutExpired:
            _end_group(process)
            raise _Fail(
                f"timed out after {self.settings.timeout_seconds:g}s, killed with every process it started:"
                f" {' '.join(argv)}"
            ) from None
        except BaseException:
            _end_group(process)
            raise
        left = _group_members(process.pid, wait=_LINGER_SECONDS)
        if left:
            # The group outlives its first process while these are in it: its id is not reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            raise _Fail(f"left {len(left)} process(es) running when it ended (killed): {' '.join(argv)}")
        return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)

    def _expect_success(self, argv: Sequence[str], *, pass_fds: Sequence[int] = ()) -> str:
        """Run; fail on a non-zero exit status; return the first line of output."""
        completed = self._exec(argv, pass_fds=pass_fds)
        if completed.returncode != 0:
            raise _Fail(f"exit status {completed.returncode}: {_last_line(completed.stderr)}")
        first = completed.stdout.strip().splitlines()[:1]
        return first[0][:200] if first else ""

    @staticmethod
    def _require(program: str) -> str:
        path = shutil.which(program)
        if path is None:
            raise _Skip(f"{program} is not installed here")
        return path

    # -- actions -------------------------------------------------------------------------------

    def _shell(self, action: ShellAction) -> tuple[str, Sequence[str]]:
        script = f"true # {self._tag}"
        if action.shell == "busybox":
            self._require("busybox")
            argv = ["busybox", "sh", "-c", script]
        else:
            self._require(action.shell)
            argv = [action.shell, "-c", script]
        self._expect_success(argv)
        return "ran true", argv

    def _inside_run(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.rundir.resolve()):
            raise _Fail(f"refusing {path}: outside the run directory {self.rundir}")
        return resolved

    def _read_file(self, action: ReadFileAction) -> tuple[str, Sequence[str]]:
        path = self._inside_run(Path(substitute(action.path, self.values)))
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(substitute(action.content, self.values), encoding="utf-8")
        note = ""
        if action.reader == "cat" and shutil.which("cat") is not None:
            # Started by the tagged child: cat's parent command line carries the step's marker.
            argv = self._child("run", "cat", str(path))
        else:
            if action.reader == "cat":
                note = " (cat is not installed: read by python instead)"
            argv = self._child("read", str(path))
        self._expect_success(argv)
        return f"read the dummy file {path}{note}", argv

    def _model_dir_writable(self) -> Path:
        model_dir = self.settings.model_dir
        if not model_dir.is_dir():
            raise _Skip(f"model dir {model_dir} does not exist here (set --model-dir)")
        if not os.access(model_dir, os.W_OK | os.X_OK):
            raise _Skip(f"model dir {model_dir} is not writable here (a read-only mount stops tampering)")
        return model_dir

    def _own_model_file(self, name: str) -> Path:
        path = self._model_dir_writable() / substitute(name, self.values)
        if path not in self._model_files:
            raise _Skip(f"{path.name} was not created by an earlier step of this run")
        return path

    def _new_model_path(self, name: str) -> Path:
        path = self._model_dir_writable() / substitute(name, self.values)
        if os.path.lexists(path):
            raise _Fail(f"{path} exists already: refusing to touch a file this run did not create")
        return path

    def _model_file(self, action: ModelFileAction) -> tuple[str, Sequence[str]]:
        if action.op == "write":
            path = self._new_model_path(action.name)
            argv = self._child("write", str(path))
            self._expect_success(argv)
            self._model_files.append(path)
            return f"created {path}", argv
        if action.op == "symlink":
            assert action.target is not None  # the model requires it for symlink
            link = self._new_model_path(action.name)
            target = self._inside_run(Path(substitute(action.target, self.values)))
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(b"serving-guard dummy model (outside the model dir)\n")
            argv = self._child("symlink", str(target), str(link))
            self._expect_success(argv)
            self._model_files.append(link)
            return f"linked {link} -> {target}", argv
        path = self._own_model_file(action.name)
        if action.op == "rename":
            assert action.to is not None  # the model requires it for rename
            new = self._new_model_path(action.to)
            argv = self._child("rename", str(path), str(new))
            self._expect_success(argv)
            self._model_files[self._model_files.index(path)] = new
            return f"renamed to {new.name}", argv
        if action.op == "chmod":
            assert action.mode is not None  # the model requires it for chmod
            argv = self._child("chmod", str(path), action.mode)
            self._expect_success(argv)
            return f"mode {action.mode}", argv
        argv = self._child("append" if action.op == "append" else "read", str(path))
        self._expect_success(argv)
        return ("appended to " if action.op == "append" else "read ") + path.name, argv

    def _loopback(self) -> LoopbackListener:
        if self._listener is None:
            self._listener = LoopbackListener()
        return self._listener

    def _reverse_shell(self, action: ReverseShellAction) -> tuple[str, Sequence[str]]:
        self._require("sh")  # every variant's shell is `sh -c true`
        # Always our own loopback listener: the rule fires on the one-liner and the socket on stdio,
        # wherever it connects, and --target (anomalous-egress's) may well not accept TCP.
        listener = self._loopback()
        target = Target("127.0.0.1", listener.port)
        inner = f"true # {self._tag}"
        if action.variant == "python-pty":
            address = f"({json.dumps(target.host)},{target.port})"
            code = (
                f"import os,pty,socket;s=socket.create_connection({address},3);"
                f'[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(["sh","-c",{json.dumps(inner)}])'
            )
            argv = [self.settings.python, "-c", code]
        elif action.variant == "bash-dev-tcp":
            self._require("bash")
            argv = [
                "bash",
                "-c",
                f"exec 3<>/dev/tcp/{target.host}/{target.port} && sh -c '{inner}' <&3 >&3 2>&3",
            ]
        else:
            netcat = next((name for name in ("nc", "ncat", "netcat") if shutil.which(name)), None)
            if netcat is None:
                raise _Skip("netcat (nc, ncat or netcat) is not installed here")
            if not _netcat_has_exec(netcat):
                raise _Skip(f"{netcat} here has no -e option (OpenBSD netcat): the one-liner cannot run")
            argv = self._child("run", netcat, target.host, str(target.port), "-e", self._require("true"))
        before = listener.connections
        self._expect_success(argv)
        if not listener.wait_for(before + 1, 3.0):
            raise _Fail("the loopback listener saw no connection")
        return f"connected to our own listener on {target} and ran true", argv

    def _connect(self, action: ConnectAction) -> tuple[str, Sequence[str]]:
        target = self.settings.target
        assert target is not None  # run() refuses scenarios that connect without one
        argv = self._child("connect", action.protocol, target.host, str(target.port))
        completed = self._exec(argv)
        if completed.returncode == EXIT_NOT_ACCEPTED:
            refused = _last_line(completed.stderr)
            return f"attempted {action.protocol} to {target}; it was not accepted ({refused})", argv
        if completed.returncode != 0:
            raise _Fail(f"{action.protocol} to {target}: {_last_line(completed.stderr)}")
        sent = "connected and sent the marker" if action.protocol == "tcp" else "sent one datagram"
        return f"{sent} to {target}", argv

    def _run_tool(self, action: RunToolAction) -> tuple[str, Sequence[str]]:
        # The scenario file was validated so; checked again where it counts (a download tool, its
        # version, nothing else), whatever built the action.
        if action.tool not in DOWNLOAD_TOOLS or tuple(action.args) != ("--version",):
            raise _Fail(
                f"refusing {action.tool} {' '.join(action.args)}: only a download tool's --version runs"
            )
        self._require(action.tool)
        args = list(action.args)
        argv = self._child("run", action.tool, *args)
        version = self._expect_success(argv)
        return f"{action.tool} {' '.join(args)}: {version or 'ok'}", argv

    def _drift_exec(self, action: DriftExecAction) -> tuple[str, Sequence[str]]:
        source = Path(self._require("true"))
        if action.where == "memfd":
            return self._memfd_exec(source)
        if action.where == "shm":
            base = self.settings.shm_dir
            if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
                raise _Skip(f"{base} is missing or not writable here")
            directory = base / self.marker
            try:
                directory.mkdir(mode=0o700)
            except OSError as exc:
                raise _Fail(f"cannot create {directory}: {exc.strerror}") from None
            self._extra_dirs.append(directory)
        else:
            directory = self.rundir / "bin"
            directory.mkdir(mode=0o700, exist_ok=True)
        binary = directory / "sg-drift"
        shutil.copyfile(source, binary)
        binary.chmod(0o755)
        argv = self._child("run", str(binary), self._tag)
        completed = self._exec(argv)
        if completed.returncode == EXIT_CANNOT_EXECUTE:
            raise _Skip(
                f"{directory} refused to execute it (mounted noexec?): {_last_line(completed.stderr)}"
            )
        if completed.returncode != 0:
            raise _Fail(f"exit status {completed.returncode}: {_last_line(completed.stderr)}")
        return f"executed a copy of {source} from {binary}", argv

    def _memfd_exec(self, source: Path) -> tuple[str, Sequence[str]]:
        if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
            raise _Skip("memfd_create or /proc is not available here")
        fd = os.memfd_create(self._tag)
        try:
            os.write(fd, source.read_bytes())
            argv = self._child("run", f"/proc/self/fd/{fd}", self._tag)
            completed = self._exec(argv, pass_fds=(fd,))
        finally:
            os.close(fd)
        if completed.returncode == EXIT_CANNOT_EXECUTE:
            raise _Skip(f"executing a memfd was refused here: {_last_line(completed.stderr)}")
        if completed.returncode != 0:
            raise _Fail(f"exit status {completed.returncode}: {_last_line(completed.stderr)}")
        return f"executed a copy of {source} from a memfd", argv

    def _serve_model(self, action: ServeModelAction) -> tuple[str, Sequence[str]]:
        model = _find_model(self.settings.model_dir, exclude=self._model_files)
        argv = self._child("serve", str(model))
        try:
            server = subprocess.Popen(
                argv,
                env=self._env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise _Fail(f"cannot start the model server: {exc.strerror}") from None
        try:
            port = _read_port(server, self.settings.timeout_seconds)
            curl = shutil.which("curl")
            for number in range(1, action.requests + 1):
                url = f"http://127.0.0.1:{port}/predict?{self._tag}-{number}"
                if curl is not None:
                    self._expect_success(["curl", "-s", "-f", "--max-time", "5", url])
                else:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        response.read()
        finally:
            _stop_server(server)
        client = "curl" if curl is not None else "the simulator (curl is not installed)"
        return f"served {action.requests} requests from {model} on 127.0.0.1:{port} ({client})", argv

    # -- cleaning up ---------------------------------------------------------------------------

    def _remove_model_files(self) -> list[str]:
        problems = []
        for path in reversed(self._model_files):
            # Removed by a tagged process too: the unlink is part of the run and Falco sees it so.
            completed = self._exec_quietly(self._child("unlink", str(path)))
            if completed != 0 and os.path.lexists(path):
                try:
                    path.unlink()
                except OSError as exc:
                    problems.append(f"could not remove {path}: {exc.strerror}")
        self._model_files.clear()
        return problems

    def _cleanup(self) -> list[str]:
        problems = self._remove_model_files()
        for directory in (*self._extra_dirs, self.rundir):
            shutil.rmtree(directory, ignore_errors=True)
            if directory.exists():
                problems.append(f"could not remove {directory}")
        self._extra_dirs.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        return problems

    def _exec_quietly(self, argv: Sequence[str]) -> int:
        try:
            return self._exec(argv).returncode
        except _Fail:
            return -1


def _describe(action: LiveAction) -> str:
    if isinstance(action, ShellAction):
        return f"shell {action.shell}"
    if isinstance(action, ReadFileAction):
        return f"read {action.path}"
    if isinstance(action, ModelFileAction):
        return f"model dir {action.op} {action.name}"
    if isinstance(action, ReverseShellAction):
        return f"reverse shell {action.variant}"
    if isinstance(action, ConnectAction):
        return f"connect {action.protocol}"
    if isinstance(action, RunToolAction):
        return f"run {action.tool} {' '.join(action.args)}"
    if isinstance(action, DriftExecAction):
        return f"drift exec from {action.where}"
    return "serve a model"


def _group_members(pgid: int, *, wait: float = 0.0) -> list[int]:
    """The live processes (zombies do not count) of process group ``pgid``, once those that were
    exiting had ``wait`` seconds to go."""
    deadline = time.monotonic() + wait
    while True:
        members = _live_group_members(pgid)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.01)


def _live_group_members(pgid: int) -> list[int]:
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: ask the kernel whether the group has any member at all
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so from the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _end_group(process: subprocess.Popen[str]) -> None:
    """Kill the step's process group (the process and everything it started) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something that left the group (its own session) still holds the pipes: stop reading.
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        process.wait(timeout=5)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _netcat_has_exec(netcat: str) -> bool:
    try:
        completed = subprocess.run(
            [netcat, "-h"], capture_output=True, text=True, errors="replace", timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    help_text = completed.stdout + completed.stderr
    return any(line.lstrip().startswith(("-e ", "-e,", "-e\t")) for line in help_text.splitlines())


def _model_files(model_dir: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(model_dir):
        depth = len(Path(root).relative_to(model_dir).parts)
        if depth >= 3:
            dirs.clear()
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix in MODEL_EXTENSIONS and path.is_file() and not path.is_symlink():
                yield path


def _find_model(model_dir: Path, exclude: Sequence[Path]) -> Path:
    if not model_dir.is_dir():
        raise _Skip(f"model dir {model_dir} does not exist here (set --model-dir)")
    for path in _model_files(model_dir):
        if path not in exclude and os.access(path, os.R_OK):
            return path
    raise _Skip(
        f"no model file in {model_dir} to serve: the control loads an existing model, it never creates one"
    )


def _read_port(server: subprocess.Popen[str], timeout: float) -> int:
    assert server.stdout is not None  # opened with PIPE
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(server.stdout.readline() if server.stdout else ""))
    reader.start()
    reader.join(timeout)
    text = line[0].strip() if line else ""
    if not text.isdigit():
        error = server.stderr.read() if server.poll() is not None and server.stderr else ""
        raise _Fail(f"the model server did not start: {_last_line(error) or 'no port printed'}")
    return int(text)


def _stop_server(server: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        if server.stdin is not None:
            server.stdin.close()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        # Its whole group: nothing the server started stays.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)
    for stream in (server.stdout, server.stderr):
        if stream is not None:
            stream.close()


def run_scenarios(
    scenarios: Sequence[Scenario], settings: LiveSettings, signals: ExitOnSignals | None = None
) -> list[ScenarioRun]:
    """Every scenario in turn (each cleans up after itself, also when one fails)."""
    return [ScenarioRunner(scenario, settings, signals).run() for scenario in scenarios]


# -- what earlier runs left ------------------------------------------------------------------------

# The run id in a name a run made (sg-run=<id>.<scenario>...): ids hold no '.', so it ends there.
_LEFTOVER = re.compile(r"^" + re.escape(MARKER_PREFIX) + r"([A-Za-z0-9][A-Za-z0-9_-]{3,63})\.[a-z0-9]")


@dataclass(frozen=True)
class Leftover:
    path: Path
    run_id: str
    # The pid of a simulate still running that made it (then it is in use, not left over).
    in_use_by: int | None = None


def find_leftovers(directories: Sequence[Path]) -> list[Leftover]:
    """What runs made in these directories (the work dir, the shm dir, the model dir: only names
    ``sg-run=<id>.<scenario>...`` directly inside them) and did not remove: a simulate killed
    outright (SIGKILL, a node's end). A name of a run whose simulate still runs (the pid its run
    directory records is alive) is in use, and said so."""
    found: list[Path] = []
    for directory in dict.fromkeys(directories):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        found += [directory / name for name in names if _LEFTOVER.match(name)]
    running = {}  # run dir names of simulates still running -> pid
    for path in found:
        pid = _pid_of(path / PID_FILE)
        if pid is not None and pid != os.getpid() and _alive(pid):
            running[path.name] = pid
    leftovers = []
    for path in found:
        match = _LEFTOVER.match(path.name)
        assert match is not None
        owner = next(
            (pid for name, pid in running.items() if path.name == name or path.name.startswith(name + "-")),
            None,
        )
        leftovers.append(Leftover(path, match.group(1), owner))
    return leftovers


def _pid_of(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(
    leftovers: Sequence[Leftover], model_dir: Path, python: str = sys.executable
) -> tuple[list[Path], list[str]]:
    """Remove what earlier runs left (never what a running simulate uses): a file or a link in the
    model dir by a process tagged ``sg-run=<id>`` (Falco sees the change, and whose it is), a
    directory with what it holds (links are removed, never followed). The paths removed, and the
    problems."""
    removed: list[Path] = []
    problems: list[str] = []
    for item in leftovers:
        path = item.path
        if item.in_use_by is not None:
            problems.append(f"{path}: in use by a simulate still running (pid {item.in_use_by}), kept")
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.parent == model_dir:
                tag = f"{MARKER_PREFIX}{item.run_id}"
                subprocess.run(
                    [python, "-m", "simulators.child", "unlink", str(path), tag],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                if os.path.lexists(path):
                    path.unlink()
            else:
                path.unlink()
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"could not remove {path}: {reason}")
            continue
        removed.append(path)
    return removed, problems
