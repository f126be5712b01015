"""Falco-compatible JSON alerts (the http_output / stdout format) for seeded pods: what Falco
would send for a rule firing in that pod. Keys and value types as Falco emits them."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from responder.alert import FieldValue, format_time_ns
from simulators.seed import SeededPod


def falco_alert(
    pod: SeededPod,
    rule: str,
    priority: str,
    message: str,
    fields: Mapping[str, FieldValue | None],
    *,
    tags: list[str] | None = None,
    time_ns: int | None = None,
    hostname: str | None = None,
) -> dict[str, Any]:
    """One alert as Falco's JSON output carries it (see :func:`falco_bytes` for Falco's exact bytes)."""
    when = time.time_ns() if time_ns is None else time_ns
    output_fields: dict[str, FieldValue | None] = {
        "container.id": pod.short_id,
        "container.image.repository": pod.image_repository,
        "evt.time": when,
        "k8s.ns.name": pod.namespace,
        "k8s.pod.name": pod.name,
        **fields,
    }
    stamp = format_time_ns(when)
    rendered = " ".join(
        f"{key}={'<NA>' if value is None else value}"
        for key, value in output_fields.items()
        if key != "evt.time"
    )
    return {
        "hostname": hostname if hostname is not None else pod.node,
        "output": f"{stamp[:-1]}+0000: {priority} {message} | {rendered}",
        "output_fields": output_fields,
        "priority": priority,
        "rule": rule,
        "source": "syscall",
        "tags": sorted(tags or ["serving_guard"]),
        "time": stamp,
    }


def falco_bytes(alert: Mapping[str, Any]) -> bytes:
    """Falco's serialisation (nlohmann ``dump()``): compact, keys sorted, UTF-8 kept as is,
    no trailing newline."""
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
