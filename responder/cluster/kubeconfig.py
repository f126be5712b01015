"""Checks a kubeconfig before the official client reads it, so a file it cannot use is one clear
error naming the file (and line) instead of the client's traceback from deep inside its merger.

The client is still what loads the file (relative certificate paths, exec plugins, token files and
the merging of a ``KUBECONFIG`` list all stay its own); this only refuses what it would choke on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from responder.errors import SourceError, UserError
from responder.yamlsource import MAX_FILE_BYTES, FileRefused, YamlDocument, load_yaml, read_regular_file

DEFAULT_KUBECONFIG = "~/.kube/config"
# What each list holds its entries' settings under: clusters[].cluster, contexts[].context, ...
SECTIONS = {"clusters": "cluster", "contexts": "context", "users": "user"}


@dataclass(frozen=True)
class SettingNames:
    """What messages call the kubeconfig and context settings: the config file's keys, or the
    flags of a command that took them from its command line (the user fixes what is named)."""

    kubeconfig: str = "cluster.kubeconfig"
    context: str = "cluster.context"


CONFIG_KEYS = SettingNames()
FLAGS = SettingNames("--kubeconfig", "--context")


@dataclass
class KubeconfigFiles:
    """The file(s) a kubeconfig setting names, as the client will merge them: first name wins."""

    where: str  # how the message names the setting
    spec: str  # what the client is given (one path, or a KUBECONFIG list)
    paths: list[str]
    context_name: str  # how the message names the context setting
    # section -> name -> (the file it came from, the entry)
    entries: dict[str, dict[str, tuple[str, Any]]] = field(default_factory=dict)
    current_context: tuple[str, str] | None = None  # (file, name); name "" when a file unsets it


def kubeconfig_spec(kubeconfig: str | None, name: str = CONFIG_KEYS.kubeconfig) -> tuple[str, str]:
    """(how messages name it, what the client reads) for the kubeconfig setting called ``name``."""
    if kubeconfig is not None:
        return name, kubeconfig
    from_env = os.environ.get("KUBECONFIG")
    if from_env:
        return f"{name} (unset; not in a pod, so $KUBECONFIG)", from_env
    return f"{name} (unset; not in a pod, so {DEFAULT_KUBECONFIG})", DEFAULT_KUBECONFIG


def check_kubeconfig(
    where: str, spec: str, context: str | None, context_name: str = CONFIG_KEYS.context
) -> KubeconfigFiles:
    """Read and check every file ``spec`` names (a path, or a list like $KUBECONFIG) and the context
    that will be used (a setting messages call ``context_name``); raise UserError naming the file,
    the line and what is wrong."""
    named = [os.path.expanduser(part) for part in spec.split(os.pathsep) if part]
    if not named:
        raise UserError(f"{where}: names no file")
    # Like kubectl, a list may name files that do not exist (yet); one file must.
    paths = [path for path in named if os.path.exists(path)] if len(named) > 1 else named
    if not paths:
        raise UserError(f"{where}: none of {', '.join(named)} exists")
    files = KubeconfigFiles(where, spec, paths, context_name)
    for path in paths:
        _add_file(files, path)
    _check_context(files, context)
    return files


def _read(where: str, path: str) -> YamlDocument:
    try:
        # Bounded, and a regular file only: the Kubernetes client reads it again by its path.
        raw = read_regular_file(path, MAX_FILE_BYTES, "a kubeconfig holds")
    except FileRefused as exc:
        raise UserError(f"{where} {path} {exc}") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{where} {path}: not a kubeconfig: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})"
        ) from None
    try:
        return load_yaml(text, path)
    except SourceError as exc:
        raise _not_a_kubeconfig(where, path, exc.line, exc.message) from None


def _not_a_kubeconfig(where: str, path: str, line: int | None, message: str) -> UserError:
    place = f"{path}:{line}" if line is not None else path
    return UserError(f"{where} {place}: not a kubeconfig: {message}")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _add_file(files: KubeconfigFiles, path: str) -> None:
    document = _read(files.where, path)

    def bad(at: tuple[str | int, ...], message: str) -> UserError:
        return _not_a_kubeconfig(files.where, path, document.line_of(at), message)

    data = document.data
    if data is None:
        raise bad((), "the file is empty")
    if not isinstance(data, dict):
        raise bad((), f"expected a mapping with clusters, contexts and users, got {_kind(data)}")
    for section, setting in SECTIONS.items():
        listed = data.get(section)
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise bad((section,), f"{section} must be a list, got {_kind(listed)}")
        known = files.entries.setdefault(section, {})
        for index, entry in enumerate(listed):
            at = (section, index)
            if not isinstance(entry, dict):
                raise bad(
                    at, f"{section}[{index}] must be a mapping with name and {setting}, got {_kind(entry)}"
                )
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise bad(at, f"{section}[{index}] needs a name (a string)")
            body = entry.get(setting)
            if body is not None and not isinstance(body, dict):
                raise bad(
                    (*at, setting), f"{section}[{index}].{setting} must be a mapping, got {_kind(body)}"
                )
            known.setdefault(name, (path, entry))
    if "current-context" in data:
        current = data["current-context"]
        if current is not None and not isinstance(current, str):
            raise bad(("current-context",), f"current-context must be a context's name, got {_kind(current)}")
        # The client lets the last file that has the key win, even with an empty value.
        files.current_context = (path, current or "")


def _check_context(files: KubeconfigFiles, context: str | None) -> None:
    """The context the client will use, and the cluster (with a server) and user it names."""
    where = files.where
    shown = files.paths[0] if len(files.paths) == 1 else files.spec
    contexts = files.entries.get("contexts", {})
    if context is None:
        path, name = files.current_context or (shown, "")
        if not name:
            raise UserError(f"{where} {path}: sets no current-context; name one with {files.context_name}")
        asked = f"current-context {name!r}"
    else:
        path, name = shown, context
        asked = f"{files.context_name} {name!r}"
    if name not in contexts:
        have = ", ".join(sorted(contexts)) or "none"
        raise UserError(f"{where} {path}: {asked}: no such context (it has: {have})")
    path, entry = contexts[name]
    settings: Mapping[str, Any] = entry.get("context") or {}
    cluster = settings.get("cluster")
    if not isinstance(cluster, str) or not cluster:
        raise UserError(f"{where} {path}: context {name!r} names no cluster")
    clusters = files.entries.get("clusters", {})
    if cluster not in clusters:
        have = ", ".join(sorted(clusters)) or "none"
        raise UserError(
            f"{where} {path}: context {name!r} names cluster {cluster!r}: no such cluster (it has: {have})"
        )
    cluster_path, cluster_entry = clusters[cluster]
    server = (cluster_entry.get("cluster") or {}).get("server")
    if not isinstance(server, str) or not server.strip():
        raise UserError(f"{where} {cluster_path}: cluster {cluster!r} has no server (its API server's URL)")
    user = settings.get("user")
    if user is not None and not isinstance(user, str):
        raise UserError(f"{where} {path}: context {name!r}: user must be a user's name, got {_kind(user)}")
    # A user the context names but the file lacks means no credentials, as with kubectl.
    if user and user in files.entries.get("users", {}):
        user_path, user_entry = files.entries["users"][user]
        if not isinstance(user_entry.get("user"), dict):
            raise UserError(
                f"{where} {user_path}: user {user!r} has no user settings (use user: {{}} for none)"
            )
