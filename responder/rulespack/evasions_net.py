"""Evasion cases of the egress rule: the recorded TCP connect (e1) and UDP datagram (e2) sent to other
addresses, or on sockets of another kind (TCP Fast Open, ICMP, raw, a connected UDP socket)."""

# ruff: noqa: S104 - the paths and addresses are what the attacker's program names: text in
# derived captures, never opened or bound here.

from __future__ import annotations

from responder.rulespack.derived import Derivation, DerivedCase
from responder.rulespack.evasions_common import EGRESS, THREAD, case, fires, label, merged, shows
from responder.rulespack.recorded import (
    PYTHON_E1,
    PYTHON_E2,
    CaptureLibrary,
    Replacements,
    socket_type,
    tcp_to,
    udp_to,
)

SENT = f"evt.type in (sendto, connect) and evt.dir = < and {THREAD} and fd.type = ipv4"
SENDTO = f"evt.type = sendto and evt.dir = < and {THREAD}"
CONNECTED = f"evt.type = connect and evt.dir = < and {THREAD} and fd.type = ipv4"
SOCK_DGRAM, SOCK_RAW = 2, 3
IPPROTO_ICMP, IPPROTO_RAW = 1, 255
SOCK_STREAM_CLOEXEC = 0o2000000 | 1
# Where the cases send: TEST-NET-3, a public address no tuning allows. The recordings (e1, e2) went to
# 100.64.10.2, inside CGNAT 100.64.0.0/10, which clusters allow as a pod range (the README's recipe).
OUTSIDE = "203.0.113.10"


def _to(proto: str, address: str, port: int) -> Derivation:
    def derive(library: CaptureLibrary) -> Replacements:
        return udp_to(library, address, port) if proto == "udp" else tcp_to(library, address, port)

    return derive


def _socket(recorded_is_e1: bool, sock_type: int, protocol: int | None) -> Derivation:
    def derive(library: CaptureLibrary) -> Replacements:
        recorded = PYTHON_E1 if recorded_is_e1 else PYTHON_E2
        return socket_type(library, recorded, sock_type, protocol, inet_only=recorded_is_e1)

    return derive


# DNS to the metadata address alerts by default; GKE with Cloud DNS resolves through it, and the
# README's recipe allows it there (as DNS to a node cache is): a default, not a property of every tuning.
METADATA_DNS_DEFAULTS = ("serving_guard_node_dns", "serving_guard_metadata_addresses")
METADATA_DNS_CASES = {("169.254.169.254", 53), ("169.254.170.23", 53), ("169.254.170.2", 53)}


def net_cases() -> list[DerivedCase]:
    cases = []
    group = "egress allows link-local addresses only for DNS"
    for proto, address, port, yes in [
        ("udp", "169.254.20.10", 53, False),  # NodeLocal DNSCache
        ("udp", "169.254.25.10", 53, False),  # NodeLocal DNSCache (kubespray's address)
        ("tcp", "169.254.20.10", 53, False),  # DNS over TCP to it
        ("udp", "169.254.169.253", 53, False),  # the AWS VPC resolver
        ("udp", "169.254.169.254", 53, True),  # the metadata address is never DNS
        ("tcp", "169.254.169.254", 80, True),  # cloud metadata
        ("udp", "169.254.170.23", 53, True),  # EKS Pod Identity: a credential endpoint, never DNS
        ("udp", "169.254.170.2", 53, True),  # ECS task metadata and credentials
        ("udp", "169.254.20.10", 5353, True),  # link-local, not DNS
        ("tcp", "169.254.20.10", 443, True),
        ("tcp", "0.0.0.0", 8080, False),  # this host
        ("udp", "0.0.0.0", 53, False),
        ("udp", OUTSIDE, 53, True),  # e2, to a public address
    ]:
        recorded = PYTHON_E2 if proto == "udp" else PYTHON_E1
        cases.append(
            case(
                group,
                label(proto, f"{address}:{port}"),
                recorded,
                _to(proto, address, port),
                fires(EGRESS, yes, THREAD),
                witness=(shows(SENT, {"fd.sip": address}, count=1 if proto == "udp" else 2),),
                pins=METADATA_DNS_DEFAULTS if (address, port) in METADATA_DNS_CASES else (),
            )
        )
    # TCP Fast Open connects with sendto(MSG_FASTOPEN) and no connect: the recorded datagram (e2) sent
    # on a TCP socket. Its addresses come from the call, before the kernel bound the socket: port 0.
    cases.append(
        case(
            "TCP Fast Open is egress",
            "sendto on a TCP socket",
            PYTHON_E2,
            merged(_socket(False, SOCK_STREAM_CLOEXEC, None), _to("udp", OUTSIDE, 53)),
            fires(EGRESS, True, THREAD, count=1),
            fires(EGRESS, True, SENDTO, count=1),
            witness=(shows(SENDTO, {"fd.sip": OUTSIDE, "fd.sport": 53, "fd.cport": 0}),),
        )
    )
    # e1 connects (here to a public address) and sends: the connect alerts, its send (a real client
    # port) does not alert a second time.
    cases.append(
        case(
            "a connected TCP socket alerts once, on its connect",
            "e1 to a public address",
            PYTHON_E1,
            _to("tcp", OUTSIDE, 443),
            fires(EGRESS, True, THREAD, count=1),
            fires(EGRESS, True, CONNECTED, count=1),
            witness=(shows(SENT, {"fd.sip": OUTSIDE}, count=2),),
        )
    )
    group = "ICMP and raw sends are egress"
    for sock_type, protocol, l4proto in [
        (SOCK_DGRAM, IPPROTO_ICMP, "icmp"),
        (SOCK_RAW, IPPROTO_ICMP, "raw"),
        (SOCK_RAW, IPPROTO_RAW, "raw"),
    ]:
        cases.append(
            case(
                group,
                label(f"type {sock_type} protocol {protocol}"),
                PYTHON_E2,
                merged(_socket(False, sock_type, protocol), _to("udp", OUTSIDE, 0)),
                fires(EGRESS, True, THREAD, count=1),
                fires(EGRESS, True, SENDTO, count=1),
                witness=(shows(SENDTO, {"fd.l4proto": l4proto, "fd.sip": OUTSIDE}),),
            )
        )
    # A UDP socket connected to a public address sends nothing: vLLM and Ray name their own address
    # that way. The recorded TCP connect (e1) made on a UDP socket to those addresses; what the thread
    # sent after its connect is a datagram now, tested as any, and alerted.
    group = "only a UDP connect to port 80 that looks up the pod's own address is not egress"
    for address, port, yes in [
        ("8.8.8.8", 80, False),  # vLLM's get_ip at every start
        # Ray's node address without --node-ip-address: not excepted, a write(2) on the connected
        # socket is not seen (a DNS tunnel through a public resolver).
        ("8.8.8.8", 53, True),
        ("8.8.4.4", 80, True),
        ("8.8.8.8", 443, True),
    ]:
        cases.append(
            case(
                group,
                label(f"{address}:{port}"),
                PYTHON_E1,
                merged(_socket(True, SOCK_DGRAM, 0), _to("tcp", address, port)),
                fires(EGRESS, yes, CONNECTED),
                fires(EGRESS, True, SENDTO),
                witness=(shows(CONNECTED, {"fd.l4proto": "udp", "fd.sip": address, "fd.sport": port}),),
            )
        )
    cases.append(
        case(
            "a datagram sent to the own-address lookup's destination is egress",
            "udp 8.8.8.8:53",
            PYTHON_E2,
            _to("udp", "8.8.8.8", 53),
            fires(EGRESS, True, THREAD, count=1),
            fires(EGRESS, True, SENDTO, count=1),
        )
    )
    cases.append(
        case(
            "ICMP to an allowed network is not egress",
            "icmp 10.1.2.3",
            PYTHON_E2,
            merged(_socket(False, SOCK_DGRAM, IPPROTO_ICMP), _to("udp", "10.1.2.3", 0)),
            fires(EGRESS, False, THREAD),
            witness=(shows(SENDTO, {"fd.sip": "10.1.2.3"}),),
        )
    )
    return cases
