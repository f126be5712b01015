"""Bytes of a ``falco.outputs.response`` to a message, keeping text that is not UTF-8.

Proto3 ``string`` fields must hold UTF-8, and Python's protobuf refuses a message with one that
does not ("String field had bad UTF-8"). Falco's C++ side sends such strings all the same (its
protobuf only logs a warning), and what it puts in them comes partly from the watched process:
``proc.cmdline``, file paths, ``proc.name``. Refusing the message would let an attacker in a pod
make their own alert disappear with two bytes, so the stream is read as raw bytes and a message
that fails to parse is parsed again with a mirror of ``response`` whose text fields are ``bytes``
(the same wire format): its text is decoded with invalid bytes replaced by U+FFFD, as Falco's JSON
output does (libsinsp replaces them when it writes JSON), and the alert goes on, its replaced fields
named. Only bytes that are no ``response`` at all are refused.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from responder.alert import WHOLE_PAYLOAD, AlertError
from responder.ingest.proto import outputs_pb2

_MIRROR_PACKAGE = "serving_guard.ingest.outputs_bytes"
_MIRROR_FILE = "serving_guard/ingest/outputs_bytes.proto"
_RESPONSE = "falco.outputs.response"
# A field's name, as said in the list of replaced fields, is cut to this many characters.
MAX_NAME_CHARS = 100


def _mirror_file() -> descriptor_pb2.FileDescriptorProto:
    """``outputs.proto``'s ``response`` (and its map entry) with every string field made bytes. The
    map becomes a repeated entry message (a map's key may not be bytes): the wire format is the same."""
    original = descriptor_pb2.FileDescriptorProto.FromString(outputs_pb2.DESCRIPTOR.serialized_pb)
    mirror = descriptor_pb2.FileDescriptorProto(
        name=_MIRROR_FILE, package=_MIRROR_PACKAGE, syntax=original.syntax, dependency=original.dependency
    )
    (response,) = (message for message in original.message_type if message.name == "response")
    copy = mirror.message_type.add()
    copy.CopyFrom(response)

    def as_bytes(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            if field.type_name.startswith(f".{_RESPONSE}."):
                field.type_name = f".{_MIRROR_PACKAGE}.response{field.type_name[len(_RESPONSE) + 1 :]}"
        for nested in message.nested_type:
            nested.ClearField("options")  # no longer a map entry
            as_bytes(nested)

    as_bytes(copy)
    return mirror


def _mirror_class() -> Any:
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(f"{_MIRROR_PACKAGE}.response")
    except KeyError:
        pool.AddSerializedFile(_mirror_file().SerializeToString())
        descriptor = pool.FindMessageTypeByName(f"{_MIRROR_PACKAGE}.response")
    return message_factory.GetMessageClass(descriptor)


_BytesResponse = _mirror_class()


def parse_response(data: bytes) -> tuple[outputs_pb2.response, tuple[str, ...]]:
    """The response in ``data``, and the names of its fields whose text was not UTF-8 (replaced by
    U+FFFD; empty for nearly every alert). AlertError (``body``) when the bytes are no response."""
    try:
        return outputs_pb2.response.FromString(data), ()
    except DecodeError:
        pass
    try:
        raw = _BytesResponse.FromString(data)
    except DecodeError as exc:
        raise AlertError(WHOLE_PAYLOAD, f"not a falco.outputs.response message: {exc}") from None
    replaced: list[str] = []

    def text(value: bytes, name: str) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            replaced.append(name)
            return value.decode("utf-8", "replace")

    # In the message's field order, so that the names of replaced fields come in that order.
    rule, output = text(raw.rule, "rule"), text(raw.output, "output")
    fields: dict[str, str] = {}
    for entry in raw.output_fields:  # in wire order: a repeated key's last value wins, as in a map
        key = text(entry.key, "output_fields")
        fields[key] = text(entry.value, f"output_fields.{key[:MAX_NAME_CHARS]}")
    response = outputs_pb2.response(
        priority=raw.priority,
        source_deprecated=raw.source_deprecated,
        rule=rule,
        output=output,
        output_fields=fields,
        hostname=text(raw.hostname, "hostname"),
        tags=[text(tag, "tags") for tag in raw.tags],
        source=text(raw.source, "source"),
    )
    if raw.HasField("time"):
        response.time.CopyFrom(raw.time)
    return response, tuple(dict.fromkeys(replaced))
