"""Derive a capture from a recorded one by rewriting parameters of chosen events.

Used by `rules test` (the evasion cases and the rule examples, on the user's rules) and the tests.
An evasion the captures do not hold (a shell started under another name, a token read through
another path) is tested on the nearest recorded action with the parameters the attacker changes
rewritten: every other event and parameter stays as recorded, and the real libsinsp reads the
result. Block, event and parameter lengths are recomputed.

Layout (scap files of libs >= 0.10, little-endian): a block is ``type:u32 length:u32 body
length:u32``, padded to 4 bytes. An event block (type 0x216) has the body ``cpuid:u16 ts:u64
tid:u64 len:u32 type:u16 nparams:u32 lengths:u16[nparams] params``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from responder.errors import UserError

EVENT_BLOCK = 0x216
_BLOCK_HEADER = struct.Struct("<II")
_EVENT_HEADER = struct.Struct("<HQQIHI")  # cpuid, ts, tid, len, type, nparams
_EVENT_HEADER_LEN = 26  # the scap event header, without the block's cpuid

# Event type numbers (the driver's event table) of the events the derivations rewrite.
EXECVE_ENTER, EXECVE_EXIT = 292, 293
OPENAT_ENTER, OPENAT_EXIT = 306, 307
CONNECT_ENTER, CONNECT_EXIT = 22, 23
SENDTO_ENTER, SENDTO_EXIT = 30, 31
SOCKET_ENTER = 18
SYMLINKAT_EXIT = 181
FCHMODAT_EXIT = 313
RENAMEAT2_EXIT = 319
CHDIR_EXIT = 95  # res, path
CLONE_EXITS = (223, 227)  # clone (the two event versions of the capture's libs)

# Parameter positions.
EXECVE_FILENAME = 0  # enter event: the path given to execve (sysdig 0.29 builds proc.exepath from it)
EXECVE_EXE, EXECVE_ARGS, EXECVE_COMM = 1, 2, 13  # exit event: argv[0], argv[1:], the process name
OPENAT_ENTER_NAME, OPENAT_EXIT_NAME = 1, 2
OPENAT_ENTER_FLAGS, OPENAT_EXIT_FLAGS = 2, 3  # the open flags, in the driver's PPM_O_* bits
CONNECT_ENTER_ADDR, CONNECT_EXIT_TUPLE = 1, 1
SENDTO_ENTER_TUPLE = 2
SOCKET_ENTER_TYPE, SOCKET_ENTER_PROTO = 1, 2  # domain, type, proto
SYMLINKAT_EXIT_TARGET, SYMLINKAT_EXIT_LINKPATH = 1, 3  # res, target, linkdirfd, linkpath
FCHMODAT_EXIT_FILENAME = 2  # res, dirfd, filename, mode
RENAMEAT2_EXIT_OLDPATH, RENAMEAT2_EXIT_NEWPATH = 2, 4  # res, olddirfd, oldpath, newdirfd, newpath, flags
CLONE_EXIT_RES, CLONE_EXIT_VTID, CLONE_EXIT_VPID = 0, 18, 19


@dataclass(frozen=True)
class Event:
    index: int  # position among the event blocks of the file
    tid: int
    type: int
    params: tuple[bytes, ...]

    def text(self, position: int) -> str:
        return self.params[position].replace(b"\0", b" ").decode(errors="replace").strip()


def strings(*values: str) -> bytes:
    """A NUL-terminated string, or a NUL-separated list of them (execve args)."""
    return b"".join(value.encode() + b"\0" for value in values)


def _ipv4(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def ipv4_sockaddr(address: str, port: int) -> bytes:
    """A sockaddr parameter: family AF_INET, address, port."""
    return b"\x02" + _ipv4(address) + struct.pack("<H", port)


def ipv4_tuple(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A socket tuple parameter: family AF_INET, source address and port, destination address and port."""
    return ipv4_sockaddr(*source) + _ipv4(destination[0]) + struct.pack("<H", destination[1])


class CaptureFormatError(UserError):
    """A file that is not a scap capture this module can rewrite (truncated, or another layout)."""


def _blocks(data: bytes, path: Path) -> list[tuple[int, bytes]]:
    blocks = []
    offset = 0
    while offset < len(data):
        if offset + _BLOCK_HEADER.size > len(data):
            raise CaptureFormatError(f"{path}: truncated block header at byte {offset}: not a scap capture")
        block_type, block_length = _BLOCK_HEADER.unpack_from(data, offset)
        if block_length < _BLOCK_HEADER.size + 4 or offset + block_length > len(data):
            raise CaptureFormatError(
                f"{path}: block at byte {offset} claims {block_length} bytes: a truncated or damaged capture"
            )
        blocks.append((block_type, data[offset : offset + block_length]))
        offset += block_length
    return blocks


def _event(index: int, block: bytes, path: Path) -> Event:
    try:
        _, _, tid, _, event_type, nparams = _EVENT_HEADER.unpack_from(block, 8)
        lengths = struct.unpack_from(f"<{nparams}H", block, 8 + 2 + _EVENT_HEADER_LEN)
    except struct.error:
        raise CaptureFormatError(
            f"{path}: event {index} is shorter than its header: a damaged capture"
        ) from None
    position = 8 + 2 + _EVENT_HEADER_LEN + 2 * nparams
    params = []
    for length in lengths:
        params.append(bytes(block[position : position + length]))
        position += length
    return Event(index, tid, event_type, tuple(params))


def read_events(path: Path) -> list[Event]:
    blocks = [block for block_type, block in read_blocks(path) if block_type == EVENT_BLOCK]
    return [_event(index, block, path) for index, block in enumerate(blocks)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read the capture: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Retyped:
    """An event replaced by one of another type (same CPU, time and thread), with these parameters."""

    type: int
    params: Sequence[bytes]


def _event_block(original: bytes, params: Sequence[bytes] | Retyped) -> bytes:
    cpuid, ts, tid, _, event_type, _ = _EVENT_HEADER.unpack_from(original, 8)
    if isinstance(params, Retyped):
        event_type, params = params.type, params.params
    event_length = _EVENT_HEADER_LEN + 2 * len(params) + sum(len(p) for p in params)
    body = _EVENT_HEADER.pack(cpuid, ts, tid, event_length, event_type, len(params))
    body += struct.pack(f"<{len(params)}H", *(len(p) for p in params)) + b"".join(params)
    body += b"\0" * (-(8 + len(body)) % 4)
    length = 8 + len(body) + 4
    return _BLOCK_HEADER.pack(EVENT_BLOCK, length) + body + struct.pack("<I", length)


def read_blocks(path: Path) -> list[tuple[int, bytes]]:
    """The capture's blocks (type, bytes), for rewriting it many times over."""
    return _blocks(_read(path), path)


def rewrite(
    source: Path,
    target: Path,
    replacements: Mapping[int, Sequence[bytes] | Retyped],
    *,
    blocks: Sequence[tuple[int, bytes]] | None = None,
) -> None:
    """Copy ``source`` to ``target`` with the parameters of the events at the given indexes replaced
    (or, for a ``Retyped``, the events replaced by events of another type). ``blocks``: the source's,
    already read (read_blocks)."""
    out = bytearray()
    index = 0
    used = set()
    for block_type, block in blocks if blocks is not None else read_blocks(source):
        if block_type != EVENT_BLOCK:
            out += block
            continue
        if index in replacements:
            out += _event_block(block, replacements[index])
            used.add(index)
        else:
            out += block
        index += 1
    missing = set(replacements) - used
    if missing:
        raise ValueError(f"no events at indexes {sorted(missing)} in {source}")
    target.write_bytes(bytes(out))


def replaced(event: Event, changes: Mapping[int, bytes]) -> list[bytes]:
    """The event's parameters with some of them changed."""
    params = list(event.params)
    for position, value in changes.items():
        params[position] = value
    return params


def find_exec(
    events: Sequence[Event], args: str | None = None, *, name: str | None = None
) -> tuple[Event, Event]:
    """The execve enter and exit events of the first program started with exactly these arguments
    (or, with ``name``, under that process name)."""
    for event in events:
        if event.type != EXECVE_EXIT:
            continue
        if (args is None or event.text(EXECVE_ARGS) == args) and (
            name is None or event.text(EXECVE_COMM) == name
        ):
            enter = [e for e in events[: event.index] if e.type == EXECVE_ENTER and e.tid == event.tid]
            return enter[-1], event
    raise LookupError(f"no execve with arguments {args!r} and name {name!r}")


def find_events(events: Sequence[Event], event_types: tuple[int, ...], tid: int) -> list[Event]:
    return [event for event in events if event.type in event_types and event.tid == tid]
