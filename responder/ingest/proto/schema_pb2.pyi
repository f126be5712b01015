# mypy: ignore-errors
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMERGENCY: _ClassVar[priority]
    emergency: _ClassVar[priority]
    Emergency: _ClassVar[priority]
    ALERT: _ClassVar[priority]
    alert: _ClassVar[priority]
    Alert: _ClassVar[priority]
    CRITICAL: _ClassVar[priority]
    critical: _ClassVar[priority]
    Critical: _ClassVar[priority]
    ERROR: _ClassVar[priority]
    error: _ClassVar[priority]
    Error: _ClassVar[priority]
    WARNING: _ClassVar[priority]
    warning: _ClassVar[priority]
    Warning: _ClassVar[priority]
    NOTICE: _ClassVar[priority]
    notice: _ClassVar[priority]
    Notice: _ClassVar[priority]
    INFORMATIONAL: _ClassVar[priority]
    informational: _ClassVar[priority]
    Informational: _ClassVar[priority]
    DEBUG: _ClassVar[priority]
    debug: _ClassVar[priority]
    Debug: _ClassVar[priority]

class source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSCALL: _ClassVar[source]
    syscall: _ClassVar[source]
    Syscall: _ClassVar[source]
    K8S_AUDIT: _ClassVar[source]
    k8s_audit: _ClassVar[source]
    K8s_audit: _ClassVar[source]
    K8S_audit: _ClassVar[source]
    INTERNAL: _ClassVar[source]
    internal: _ClassVar[source]
    Internal: _ClassVar[source]
    PLUGIN: _ClassVar[source]
    plugin: _ClassVar[source]
    Plugin: _ClassVar[source]
EMERGENCY: priority
emergency: priority
Emergency: priority
ALERT: priority
alert: priority
Alert: priority
CRITICAL: priority
critical: priority
Critical: priority
ERROR: priority
error: priority
Error: priority
WARNING: priority
warning: priority
Warning: priority
NOTICE: priority
notice: priority
Notice: priority
INFORMATIONAL: priority
informational: priority
Informational: priority
DEBUG: priority
debug: priority
Debug: priority
SYSCALL: source
syscall: source
Syscall: source
K8S_AUDIT: source
k8s_audit: source
K8s_audit: source
K8S_audit: source
INTERNAL: source
internal: source
Internal: source
PLUGIN: source
plugin: source
Plugin: source
