"""Evasion cases of the file rules (model load, model tampering, credential access): a recorded
open, link, rename or mode change rewritten to the paths the attacker (or the serving image) uses."""

# ruff: noqa: S108 - the paths and addresses are what the attacker's program names: text in
# derived captures, never opened or bound here.

from __future__ import annotations

from responder.rulespack import scapedit as se
from responder.rulespack.derived import Derivation, DerivedCase
from responder.rulespack.evasions_common import (
    CREDENTIALS,
    EXEC,
    MODEL_LOAD,
    RENAMED,
    SYMLINKED,
    TAMPER,
    THREAD,
    case,
    exec_as,
    fires,
    label,
    linked,
    merged,
    opened,
    opens_instead,
    shows,
)
from responder.rulespack.evasions_exec import TRITON_STUB
from responder.rulespack.recorded import (
    CAT_H1,
    CHMOD_D3,
    LN_D4,
    MV_D2,
    PYTHON_C1,
    PYTHON_D1,
    SH_D2,
    CaptureLibrary,
    Recorded,
    Replacements,
    chmod,
    open_flags,
    rename,
    token_read_as,
)

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
RECORDED_MODEL_LOAD = "/tmp/evil/model.pt"  # c1 reads it
RECORDED_MODEL_WRITE = "/models/resnet/model.pt"  # d1 appends to it
TORCHSERVE_MODEL = "/home/model-server/tmp/models/3f2a9c1e5b7d/resnet18.pt"
TRITON_LOCALIZED = "/tmp/folderAbC123"
PPM_O_RDONLY, PPM_O_WRONLY, PPM_O_CREAT, PPM_O_APPEND, PPM_O_TRUNC, PPM_O_CLOEXEC = 1, 2, 4, 8, 256, 4096
PPM_O_EXCL = 32
# Triton's Python backend stub importing model.py writes its bytecode beside it when the repository
# is writable: tampering, on purpose (a .pyc planted there runs at the next import).
PYC = "/models/ensemble_pre/1/__pycache__/model.cpython-312.pyc.140234567"


def _token(path: str) -> Derivation:
    def derive(library: CaptureLibrary) -> Replacements:
        return token_read_as(library, path)

    return derive


def _rename(oldpath: str, newpath: str) -> Derivation:
    def derive(library: CaptureLibrary) -> Replacements:
        return rename(library, oldpath, newpath)

    return derive


def _opened_case(
    group: str, rule: str, recorded: Recorded, recorded_path: str, path: str, shown: str, yes: bool
) -> DerivedCase:
    """The recorded program opens ``path`` instead (fd.name shows ``shown``): ``rule`` fires or not."""
    return case(
        group,
        label(path),
        recorded,
        opens_instead(recorded, recorded_path, path),
        fires(rule, yes, opened(shown)),
        witness=(shows(opened(shown), count=None),),  # python may open it at its start too
    )


def _link_case(group: str, target: str, link: str, yes: bool) -> DerivedCase:
    return case(
        group,
        label(target, "<-", link),
        LN_D4,
        linked(target, link),
        fires(TAMPER, yes, SYMLINKED),
        witness=(shows(SYMLINKED),),
    )


def _rename_case(group: str, oldpath: str, newpath: str, yes: bool) -> DerivedCase:
    return case(
        group,
        label(oldpath, "->", newpath),
        MV_D2,
        _rename(oldpath, newpath),
        fires(TAMPER, yes, RENAMED),
        witness=(shows(RENAMED),),
    )


def _credentials() -> list[DerivedCase]:
    cases = []
    group = "the token is found under every path that opens it"
    for path in [
        f"{SA}/..data/token",
        f"{SA}/..2026_12_01_10_00_00.123456789/token",
        "/run/secrets/kubernetes.io/serviceaccount/..data/token",
        f"/proc/1/root{SA}/token",
        f"/proc/self/root{SA}/..data/token",
        "/proc/1/cwd/run/secrets/kubernetes.io/serviceaccount/token",
        "/proc/self/cwd/token",  # after changing into the token directory
        "/proc/self/fd/3/token",  # through a descriptor of the directory
        "/dev/fd/3/token",  # the same through the runtime's /dev/fd link (review-rules-evasion H1)
        "/dev/stdin/token",  # `cat /dev/stdin/token < /var/run/secrets/.../serviceaccount`
        "/dev/fd/3/kubernetes.io/serviceaccount/token",  # fd 3: /var/run/secrets
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/..data/token",
        "/run/secrets/azure/tokens/azure-identity-token",
        "/var/run/secrets/tokens/vault-token",
    ]:
        cases.append(
            case(
                group,
                label(path),
                CAT_H1,
                _token(path),
                fires(CREDENTIALS, True, THREAD, count=1),
                fires(CREDENTIALS, True, opened(path), count=1),  # on that open
            )
        )
    group = "the public files beside the token stay quiet"
    for path in [
        f"{SA}/ca.crt",
        f"{SA}/..data/ca.crt",
        f"{SA}/namespace",
        f"/proc/1/root{SA}/ca.crt",
        "/dev/fd/3/ca.crt",
        "/var/run/secrets/kubernetes.io/serviceaccount-reader/token",  # another directory
    ]:
        cases.append(
            case(
                group,
                label(path),
                CAT_H1,
                _token(path),
                fires(CREDENTIALS, False, THREAD),
                witness=(shows(opened(path)),),
            )
        )
    group = "another process's environment is a credential"
    for path, yes in [
        ("/proc/1/environ", True),  # the server's: HF_TOKEN, the AWS_* keys of KServe's storage
        ("/proc/1/task/1/environ", True),
        ("/proc/self/root/proc/1/environ", True),
        ("/dev/fd/3/environ", True),  # fd 3: /proc/1
        ("/proc/self/environ", False),  # its own, which it has anyway
        ("/proc/thread-self/environ", False),
    ]:
        cases.append(
            case(
                group,
                label(path),
                CAT_H1,
                _token(path),
                fires(CREDENTIALS, yes, opened(path)),
                witness=(shows(opened(path)),),
            )
        )
    # libsinsp resolves '..' textually; the kernel follows a symlink first (/var/run is a link to /run
    # in Debian and Ubuntu images, so /var/run/.. is /).
    group = "the token through a symlink and '..' is a credential"
    for path, shown, yes in [
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
        # A '..' after a link to /proc/self/fd: the kernel applies it to the directory the descriptor
        # holds, libsinsp to the text (review-session-51 H1). stdin: the token directory.
        ("/dev/stdin/../serviceaccount/token", "/dev/serviceaccount/token", True),
        ("/dev/stdin/../../kubernetes.io/serviceaccount/token", "/kubernetes.io/serviceaccount/token", True),
        (
            "/proc/self/fd/0/../../kubernetes.io/serviceaccount/..data/token",
            "/proc/self/kubernetes.io/serviceaccount/..data/token",
            True,
        ),
        ("/dev/stdin/../environ", "/dev/environ", True),  # stdin: /proc/1/task
        ("/dev/stdin/../ca.crt", "/dev/ca.crt", False),  # the public file beside the token
    ]:
        cases.append(
            case(
                group,
                label(path),
                CAT_H1,
                _token(path),
                fires(CREDENTIALS, yes, opened(shown)),
                witness=(shows(opened(shown)),),
            )
        )
    return cases


def _tampering() -> list[DerivedCase]:
    cases = []
    # A link made outside the model dirs to a model or a model dir, and writes through
    # /proc/<pid>/root or /proc/<pid>/cwd.
    group = "a link into the model dirs made anywhere is tampering"
    for target, link, yes in [
        ("/models/resnet/model.pt", "/tmp/m", True),  # then `echo x >> /tmp/m` writes the model
        ("/models", "/tmp/md", True),  # then /tmp/md/resnet/model.pt is every model
        ("/mnt/models/model.safetensors", "/dev/shm/.m", True),
        ("/proc/self/root/models", "/tmp/md", True),  # a link to the model dir through /proc
        ("/tmp/evil/model.pt", "/models/resnet/evil.pt", True),  # as recorded (d4)
        ("/tmp/evil/model.pt", "/tmp/m", False),  # nothing of the model dirs
        ("/proc/self/fd", "/dev/fd", False),  # the links the runtime makes in /dev
        ("/proc/self/fd/1", "/dev/stdout", False),
    ]:
        cases.append(_link_case(group, target, link, yes))
    group = "a write through /proc/<pid>/root or cwd into a model dir is tampering"
    for path, yes in [
        ("/proc/self/root/models/resnet/model.pt", True),
        ("/proc/1/root/models/resnet/model.pt", True),
        ("/proc/thread-self/root/mnt/models/model.safetensors", True),
        ("/proc/1/task/1/root/root/.cache/huggingface/hub/model.bin", True),
        ("/proc/1/root/models/resnet/config.pbtxt", True),  # any file of a model dir
        # Through a directory the path does not name (the working directory, a directory's fd): a
        # file with a model extension counts.
        ("/proc/1/cwd/models/resnet/model.pt", True),
        ("/proc/self/cwd/resnet/model.pt", True),  # after cd /models
        ("/proc/self/fd/3/model.safetensors", True),
        # The runtime's /dev links to /proc/self/fd (review-rules-evasion H1): fd 3 is /.
        ("/dev/fd/3/models/resnet/model.pt", True),
        ("/dev/stdout/models/resnet/model.pt", True),
        ("/dev/fd/2", False),  # a shell's `> /dev/fd/2`
        ("/models/resnet/model.pt", True),  # as recorded (d1)
        # Writes through /proc elsewhere: the JVM attach file jcmd creates, a profiler's agent.
        ("/proc/1/cwd/.attach_pid1", False),
        ("/proc/1/root/tmp/libasyncProfiler.so", False),
    ]:
        cases.append(_opened_case(group, TAMPER, PYTHON_D1, RECORDED_MODEL_WRITE, path, path, yes))

    def chmod_through_proc(library: CaptureLibrary) -> Replacements:
        return chmod(library, "/proc/self/root/models/resnet/model.pt")

    group = "chmod and rename through /proc/<pid>/root are tampering"
    cases.append(
        case(
            group,
            "chmod /proc/self/root/models/resnet/model.pt",
            CHMOD_D3,
            chmod_through_proc,
            fires(TAMPER, True, THREAD, count=1),
            fires(TAMPER, True, f"evt.type = fchmodat and {THREAD}", count=1),
        )
    )
    cases.append(
        case(
            group,
            "mv /tmp/evil.bin /proc/1/root/models/resnet/model.pt",
            MV_D2,
            _rename("/tmp/evil.bin", "/proc/1/root/models/resnet/model.pt"),
            fires(TAMPER, True, THREAD, count=1),
            fires(TAMPER, True, RENAMED, count=1),
        )
    )
    group = "a write through '..' into a model dir is tampering"
    for path, shown, yes in [
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
    ]:
        cases.append(_opened_case(group, TAMPER, PYTHON_D1, RECORDED_MODEL_WRITE, path, shown, yes))
    group = "a rename through '..' into a model dir is tampering"
    for newpath, yes in [
        ("/var/run/../models/resnet/model.pt", True),
        ("/var/run/../mnt/models/model.safetensors", True),
        ("/var/run/../tmp/evil.bin", False),
    ]:
        cases.append(_rename_case(group, "/tmp/evil.bin", newpath, yes))
    group = "a link to a model dir written with dot segments is tampering"
    for target, link, yes in [
        ("/tmp/../models", "/tmp/md", True),
        ("/var/run/../models/resnet/model.pt", "/tmp/m", True),
        ("/./models/resnet/model.pt", "/tmp/m", True),
        ("/mnt/./models", "/dev/shm/.m", True),
        ("/proc/self/root//models", "/tmp/md", True),
        ("../models/resnet/model.pt", "/tmp/m", True),  # relative, with '..'
        ("/tmp/../tmp/evil/model.pt", "/tmp/m", False),  # nothing of the model dirs
        ("/var/run/../run/lock", "/tmp/l", False),
    ]:
        cases.append(_link_case(group, target, link, yes))
    # An open that truncates or creates without O_WRONLY (the kernel truncates on O_RDONLY|O_TRUNC;
    # evt.is_open_write is false for it).
    group = "an open that truncates or creates a model file is tampering"
    for flags, shown, yes in [
        (
            PPM_O_WRONLY | PPM_O_CREAT | PPM_O_APPEND | PPM_O_CLOEXEC,
            "O_APPEND|O_CREAT|O_WRONLY|O_CLOEXEC",
            True,
        ),
        (PPM_O_RDONLY | PPM_O_TRUNC | PPM_O_CLOEXEC, "O_TRUNC|O_RDONLY|O_CLOEXEC", True),  # empties the model
        (PPM_O_RDONLY | PPM_O_CREAT | PPM_O_TRUNC, "O_TRUNC|O_CREAT|O_RDONLY", True),
        (PPM_O_RDONLY | PPM_O_CREAT | PPM_O_CLOEXEC, "O_CREAT|O_RDONLY|O_CLOEXEC", True),  # creates a file
        (PPM_O_RDONLY | PPM_O_CLOEXEC, "O_RDONLY|O_CLOEXEC", False),  # the server reading its model
    ]:

        def with_flags(library: CaptureLibrary, flags: int = flags) -> Replacements:
            return open_flags(library, PYTHON_D1, RECORDED_MODEL_WRITE, flags)

        cases.append(
            case(
                group,
                shown,
                PYTHON_D1,
                with_flags,
                fires(TAMPER, yes, opened(RECORDED_MODEL_WRITE)),
                witness=(shows(opened(RECORDED_MODEL_WRITE), {"evt.arg.flags": shown}),),
            )
        )
    cases.append(
        case(
            "the Triton stub writing bytecode into a model dir is tampering",
            "model.cpython-312.pyc",
            PYTHON_D1,
            _stub_writes_bytecode,
            fires(TAMPER, True, opened(PYC)),
            witness=(
                shows(
                    opened(PYC),
                    {"proc.name": "triton_python_b", "evt.arg.flags": "O_EXCL|O_CREAT|O_WRONLY|O_CLOEXEC"},
                ),
            ),
            only=True,
        )
    )
    # A model dir swapped whole by renaming one of the directories above it, or by putting a
    # directory or a link in its place: nothing below the model dir changes.
    group = "renaming a directory above a model dir is tampering"
    for oldpath, newpath, yes in [
        ("/root/.cache", "/root/.cache.orig", True),  # the HF cache's parent moved away
        ("/tmp/fake-cache", "/root/.cache", True),  # another tree put in its place
        ("/opt/ml", "/opt/ml.orig", True),
        ("/home/model-server", "/home/ms", True),
        ("/root/.cache/pip", "/root/.cache/pip.old", False),  # inside, the model dirs left alone
        ("/opt/app", "/opt/app.old", False),
    ]:
        cases.append(_rename_case(group, oldpath, newpath, yes))
    group = "a link put in place of a directory above a model dir is tampering"
    for target, link, yes in [
        ("/tmp/fake-ml", "/opt/ml", True),
        ("/tmp/fake-home", "/home/bentoml/bento", True),
        ("/tmp/fake", "/root/.cache", True),
        ("/tmp/x", "/opt/other", False),
    ]:
        cases.append(_link_case(group, target, link, yes))
    return cases


def _stub_writes_bytecode(library: CaptureLibrary) -> Replacements:
    replacements = dict(
        PYTHON_D1.exec(library, path=TRITON_STUB, argv=PYTHON_D1.argv(library), name="triton_python_b")
    )
    flags = PPM_O_WRONLY | PPM_O_CREAT | PPM_O_EXCL | PPM_O_CLOEXEC
    for index, params in open_flags(library, PYTHON_D1, RECORDED_MODEL_WRITE, flags).items():
        assert not isinstance(params, se.Retyped)
        event = library.events(PYTHON_D1.capture)[index]
        name = se.OPENAT_ENTER_NAME if event.type == se.OPENAT_ENTER else se.OPENAT_EXIT_NAME
        replacements[index] = [*params[:name], se.strings(PYC), *params[name + 1 :]]
    return replacements


def _model_loads() -> list[DerivedCase]:
    cases = []
    # TorchServe's worker loads the model the frontend unpacked into its temporary directory: quiet
    # when it is that worker (python started by java), not for anyone else.
    group = "only TorchServe's worker loading its unpacked model is quiet"
    for parent, worker, path, yes in [
        ("java", "python", TORCHSERVE_MODEL, False),  # TorchServe loading its model
        ("java", "python3", "/home/model-server/tmp/models/0a1b/model.safetensors", False),
        ("sh", "python", TORCHSERVE_MODEL, True),  # a python started by a shell
        ("java", "cat", TORCHSERVE_MODEL, True),  # not the worker
        ("java", "python", "/home/model-server/tmp/evil.pt", True),  # beside the unpack dir
        # Outside every unpack dir (not /tmp/models: the README's recipe for another java.io.tmpdir).
        ("java", "python", "/tmp/evil/3f2a/resnet18.pt", True),
    ]:
        # `sh -c mv ...` becomes the frontend (parent), its child mv the worker, and the worker reads
        # the model where mv read /usr/share/locale/locale.alias.
        derive = merged(
            exec_as(
                SH_D2,
                path=f"/usr/bin/{parent}",
                argv=[parent, "-Djava.io.tmpdir=/home/model-server/tmp"],
                name=parent,
            ),
            exec_as(
                MV_D2,
                path="/usr/bin/python3.9",
                argv=[worker, "/home/venv/lib/python3.9/site-packages/ts/model_service_worker.py"],
                name=worker,
            ),
            opens_instead(MV_D2, "/usr/share/locale/locale.alias", path),
        )
        cases.append(
            case(
                group,
                label(parent, worker, path),
                MV_D2,
                derive,
                fires(MODEL_LOAD, yes, opened(path)),
                witness=(shows(EXEC, {"proc.name": worker}), shows(opened(path))),
            )
        )
    group = "Python path files are quiet only in the image's site directories"
    for path, yes in [
        ("/tmp/site-packages/evil.pth", True),
        ("/root/.local/lib/python3.11/site-packages/evil.pth", True),
        ("/tmp/evil/dist-packages/x.pth", True),
        ("/usr/lib/python3/dist-packages/distutils-precedence.pth", False),
        ("/usr/local/lib/python3.11/site-packages/_virtualenv.pth", False),
        ("/opt/conda/lib/python3.10/site-packages/matplotlib-3.8.0-py3.10-nspkg.pth", False),
        ("/home/venv/lib/python3.9/site-packages/distutils-precedence.pth", False),
        ("/usr/local/lib/python3.11/site-packages/torch/weights.pth", True),  # not a site directory
    ]:
        cases.append(_opened_case(group, MODEL_LOAD, PYTHON_C1, RECORDED_MODEL_LOAD, path, path, yes))
    group = "model extensions match in any case"
    for path, yes in [
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
    ]:
        cases.append(_opened_case(group, MODEL_LOAD, PYTHON_C1, RECORDED_MODEL_LOAD, path, path, yes))
    # Triton's model-load API with file overrides writes the request's files into /tmp/folderXXXXXX.
    group = "Triton opening a file of its localization dir is a model load"
    tritonserver = "/opt/tritonserver/bin/tritonserver"
    for recorded, recorded_path, exe, name, path, yes in [
        # tritonserver writes the request's files (d1's append, by tritonserver).
        (
            PYTHON_D1,
            RECORDED_MODEL_WRITE,
            tritonserver,
            "tritonserver",
            f"{TRITON_LOCALIZED}/1/model.py",
            True,
        ),
        (
            PYTHON_D1,
            RECORDED_MODEL_WRITE,
            tritonserver,
            "tritonserver",
            f"{TRITON_LOCALIZED}/config.pbtxt",
            True,
        ),
        # The stub reads model.py (c1's read, by the stub; its name is cut at 15 characters).
        (
            PYTHON_C1,
            RECORDED_MODEL_LOAD,
            TRITON_STUB,
            "triton_python_b",
            f"{TRITON_LOCALIZED}/1/model.py",
            True,
        ),
        # Not Triton, or not its localization directory.
        (
            PYTHON_C1,
            RECORDED_MODEL_LOAD,
            "/usr/bin/python3.11",
            "python3",
            f"{TRITON_LOCALIZED}/1/model.py",
            False,
        ),
        (PYTHON_C1, RECORDED_MODEL_LOAD, TRITON_STUB, "triton_python_b", "/models/resnet/1/model.py", False),
        (PYTHON_C1, RECORDED_MODEL_LOAD, tritonserver, "tritonserver", "/tmp/folders.txt", False),
    ]:
        cases.append(
            case(
                group,
                label(name, path),
                recorded,
                merged(_as_program(recorded, exe, name), opens_instead(recorded, recorded_path, path)),
                fires(MODEL_LOAD, yes, opened(path)),
                witness=(shows(opened(path), {"proc.name": name}),),
            )
        )
    return cases


def _as_program(recorded: Recorded, exe: str, name: str) -> Derivation:
    """The recorded program, with its arguments, started as ``exe`` under ``name``."""

    def derive(library: CaptureLibrary) -> Replacements:
        return recorded.exec(library, path=exe, argv=recorded.argv(library), name=name)

    return derive


def file_cases() -> list[DerivedCase]:
    return [*_credentials(), *_tampering(), *_model_loads()]
