"""Blocking one destination, pure: which address an alert names, the pod's own NetworkPolicy that
allows all egress but the blocked addresses, and whether NetworkPolicies can block it at all.

NetworkPolicies are a union of allows, so a policy can only ever add to what a pod may reach. A
pod that no other policy restricts in egress may reach everything; the block policy makes it
egress-isolated and allows back everything but the blocked addresses. A pod that other policies
already restrict in egress may reach only what they allow: adding "everything but X" would open
the rest, so no block policy is made. Either X is already out of reach (none of them allows it),
or they allow it, and only changing them would block it (LEAKY: said, never patched).

Only public addresses are blocked (not private, shared, loopback, link-local, unique-local,
multicast or reserved space: MAYBE_IN_CLUSTER). An ipBlock is meant for addresses outside the
cluster: whether it matches a pod's or a node's address differs by network plugin, so in-cluster
traffic is allowed back by a peer of its own (every pod of every namespace), and a private address
could be one of them.

A pod quarantined in a cut that stops its egress must not have egress allowed back by its block:
the block policy leaves out pods that carry those cuts' label values (``NotIn``), so a quarantine
needs no change to it. While such a cut holds, no block policy is made and no address is added:
lifted by hand, the policies the quarantine had patched could select the pod again, and a block
policy made in the meantime would add to what they allow. ``serving-guard release`` lifts both. A
block policy that an earlier version made leaves out the label values of its day, so it may still
select such a pod and open its egress: the block rewrites it as built now (leaving the pod out) and
proves it before it calls an address out of reach.

An IPv4 host has a second address on a cluster with DNS64/NAT64: 64:ff9b::a.b.c.d (RFC 6052's
well-known prefix), which the gateway translates to a.b.c.d. An address is blocked in both forms,
whichever the alert names, and known by its IPv4 form (never_block and the public-address check
hold for both). A network-specific NAT64 prefix is not known here: list it in never_block, or
quarantine the pod's egress, on such a cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from responder.actions.netpol import MANAGED_BY, may_select, name_of, policy_types
from responder.alert import Alert

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6052's well-known prefix: 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")

_ALL = {4: "0.0.0.0/0", 6: "::/0"}

# Where a pod, a Service, a node or the node's own services may live (private, shared, loopback,
# link-local and unique-local space, multicast and reserved): never blocked by an ipBlock. A
# cluster that gives pods or Services public ranges (privately used public IPs) names them in
# block_destination.never_block.
MAYBE_IN_CLUSTER = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


@dataclass(frozen=True, slots=True)
class Target:
    """The address an alert names, and the field it came from."""

    address: Address
    field: str


def target_of(alert: Alert, fields: Sequence[str], never_block: Iterable[str]) -> Target | str:
    """The address to block for ``alert`` (the first of ``fields`` it carries), or why there is
    none to block, in words."""
    for name in fields:
        text = alert.text(name)
        if text is None or text == "":
            continue
        return target_from_text(name, text, never_block)
    return "the alert carries no remote address (" + ", ".join(fields) + ")"


def target_from_text(name: str, text: str, never_block: Iterable[str]) -> Target | str:
    """The address ``text`` (from ``name``: an alert field, or a command's option) if it may be
    blocked, or why not, in words."""
    try:
        # A zone ("fe80::1%eth0") is refused with the rest: an ipBlock cannot hold one.
        address = ipaddress.ip_address(text.strip("[]"))
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise ValueError(text)
    except ValueError:
        return f"{name} is {text[:64]!r}, not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    host = host_address(address)  # one host: known by its IPv4 form, blocked in both
    shown = f"{address} (NAT64 for {host})" if host != address else str(address)
    address = host
    if any(address in network for network in MAYBE_IN_CLUSTER):
        return (
            f"{name} {shown} is not a public address: it may be inside the cluster, where"
            " NetworkPolicies cannot tell it apart (quarantine the pod's egress instead)"
        )
    kept = never_blocked(address, never_block)
    if kept is not None:
        return f"{name} {shown} is in block_destination.never_block ({kept})"
    return Target(address, name)


def never_blocked(address: Address, never_block: Iterable[str]) -> str | None:
    """The block_destination.never_block range that holds ``address`` in either of its forms
    (IPv4 and NAT64: one host), or None."""
    forms = forms_of(address)
    return next((n for n in never_block if any(f in ipaddress.ip_network(n) for f in forms)), None)


def nat64_form(address: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    """``address`` under the NAT64 well-known prefix (203.0.113.7: 64:ff9b::cb00:7107)."""
    return ipaddress.IPv6Address(int(NAT64_PREFIX.network_address) | int(address))


def nat64_embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 address (64:ff9b::/96) stands for; None: not one."""
    if isinstance(address, ipaddress.IPv6Address) and address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def host_address(address: Address) -> Address:
    """The address its host is known by: a NAT64 address's IPv4 form, else ``address``."""
    embedded = nat64_embedded(address)
    return embedded if embedded is not None else address


def forms_of(address: Address) -> tuple[Address, ...]:
    """``address`` and the other address of the same host, if any: an IPv4 address and its NAT64
    form, either way round."""
    if isinstance(address, ipaddress.IPv4Address):
        return address, nat64_form(address)
    embedded = nat64_embedded(address)
    return (address,) if embedded is None else (address, embedded)


# API groups of network policies that Kubernetes NetworkPolicies do not see: unioned with them
# (Cilium), enforced before them (an Allow of an AdminNetworkPolicy, of an Antrea or Calico policy
# ordered first, lets traffic through whatever a NetworkPolicy says), or overridden by any
# NetworkPolicy selecting the pod (a BaselineAdminNetworkPolicy, Antrea's baseline tier). The
# block's and the quarantine's reasoning read NetworkPolicies only.
OTHER_POLICY_GROUPS = (
    "cilium.io",
    "crd.projectcalico.org",
    "projectcalico.org",
    "policy.networking.k8s.io",
    "crd.antrea.io",
    "security.antrea.tanzu.vmware.com",  # Antrea before 1.0
)


# API groups that serve such policies among other kinds, by the resources of their policies: counted
# only where discovery finds one of them served. GKE serves networking.gke.io on every cluster
# (ManagedCertificate, FrontendConfig); its FQDNNetworkPolicy (egress to domain names, which selects
# pods and allows beside their NetworkPolicies) only where FQDN network policies are enabled. EKS (the
# VPC CNI's network policy agent, Auto Mode) serves networking.k8s.aws/v1alpha1 with
# ClusterNetworkPolicy (cluster-wide; its Admin tier's Allow is evaluated before any NetworkPolicy) and
# ApplicationNetworkPolicy (namespaced, FQDN egress allows added to the NetworkPolicies'); its
# policyendpoints and clusterpolicyendpoints are derived from policies and allow nothing of their own,
# so they are not counted (every EKS cluster with network policies on serves them).
OTHER_POLICY_RESOURCES: dict[str, tuple[str, ...]] = {
    "networking.gke.io": ("fqdnnetworkpolicies",),
    "networking.k8s.aws": ("clusternetworkpolicies", "applicationnetworkpolicies"),
}


def other_policy_apis(groups: Iterable[str]) -> list[str]:
    """The served API groups whose policies the block's and the quarantine's reasoning do not read
    (those of OTHER_POLICY_RESOURCES aside: their policies' resource is to be looked for)."""
    served = set(groups)
    return [group for group in OTHER_POLICY_GROUPS if group in served]


def shared_policy_groups(groups: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Of the served API groups, those of OTHER_POLICY_RESOURCES, with their policies' resources."""
    served = set(groups)
    return {group: resources for group, resources in OTHER_POLICY_RESOURCES.items() if group in served}


def pod_key(uid: str) -> str:
    """The label value (and policy name suffix) of a pod's block: its uid's hash, so that a pod
    re-created under the same name is never selected by the old one's policy."""
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


def block_policy_name(prefix: str, uid: str) -> str:
    return f"{prefix}-{pod_key(uid)}"


def _host_network(address: Address) -> str:
    return f"{address}/{address.max_prefixlen}"


def block_spec(
    label: str,
    value: str,
    addresses: Iterable[Address],
    *,
    quarantine_label: str,
    egress_cut_values: Sequence[str],
) -> dict[str, Any]:
    """All egress but ``addresses`` (each in both its forms, IPv4 and NAT64), for the pod labelled
    ``label=value`` unless a quarantine cuts its egress (see the module's doc)."""
    forms = {form for address in addresses for form in forms_of(address)}
    blocked = sorted(forms, key=lambda a: (a.version, a))
    peers: list[dict[str, Any]] = []
    for version, cidr in _ALL.items():
        excepted = [_host_network(a) for a in blocked if a.version == version]
        peers.append({"ipBlock": {"cidr": cidr, **({"except": excepted} if excepted else {})}})
    return {
        "podSelector": {
            "matchLabels": {label: value},
            "matchExpressions": [
                {"key": quarantine_label, "operator": "NotIn", "values": sorted(egress_cut_values)}
            ],
        },
        "policyTypes": ["Egress"],
        # Every pod of every namespace: in-cluster traffic (DNS first) where ipBlocks do not match it.
        "egress": [{"to": peers}, {"to": [{"namespaceSelector": {}}]}],
    }


def block_policy(
    namespace: str, name: str, spec: dict[str, Any], *, owner: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The block policy; with ``owner`` (the pod's name and uid) it is the pod's: Kubernetes'
    garbage collector deletes it with the pod (the responder has no right to delete policies)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if owner is not None:
        pod_name, uid = owner
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": uid}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def blocked_by(spec: Mapping[str, Any] | None) -> set[Address]:
    """The addresses a block policy's spec (as read back) leaves out, by their IPv4 form where
    they have one (a NAT64 address is its IPv4 host's); malformed parts are ignored (the policy is
    then rewritten whole)."""
    found: set[Address] = set()
    if not isinstance(spec, Mapping):
        return found
    for rule in spec.get("egress") or []:
        for peer in (rule or {}).get("to") or []:
            for text in ((peer or {}).get("ipBlock") or {}).get("except") or []:
                try:
                    network = ipaddress.ip_network(str(text), strict=False)
                except ValueError:
                    continue
                if network.num_addresses == 1:
                    found.add(host_address(network.network_address))
    return found


@dataclass(frozen=True, slots=True)
class EgressGovernance:
    """What the pod's other policies say of its egress: the policies that restrict it (the pod is
    egress-isolated by them), and of those the ones that allow ``address``."""

    governing: tuple[str, ...]
    allowing: tuple[str, ...]


def egress_governance(
    policies: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str], address: Address, ours: set[str]
) -> EgressGovernance:
    """The policies other than ``ours`` that select the pod and govern its egress, and which of
    them allow it to reach ``address`` (a rule with no ``to``, or an ipBlock that holds it and
    does not except it, in either of its forms: IPv4 or NAT64; a pod or namespace peer does not
    match a public address)."""
    forms = forms_of(address)
    governing: list[str] = []
    allowing: list[str] = []
    for policy in policies:
        name = name_of(policy)
        if name in ours:
            continue
        spec = policy.get("spec") or {}
        if not may_select(spec.get("podSelector") or {}, pod_labels) or "Egress" not in policy_types(spec):
            continue
        governing.append(name)
        if any(_rule_allows(rule, form) for rule in spec.get("egress") or [] for form in forms):
            allowing.append(name)
    return EgressGovernance(tuple(governing), tuple(allowing))


def _rule_allows(rule: Mapping[str, Any] | None, address: Address) -> bool:
    peers = (rule or {}).get("to")
    if not peers:
        return True  # no `to`: every destination (on its ports)
    return any(_peer_allows(peer, address) for peer in peers)


def _peer_allows(peer: Mapping[str, Any] | None, address: Address) -> bool:
    block = (peer or {}).get("ipBlock")
    if not isinstance(block, Mapping):
        return False
    try:
        network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
    except ValueError:
        return True  # fail safe: a block we cannot read may allow it
    if address.version != network.version or address not in network:
        return False
    for text in block.get("except") or []:
        try:
            if address in ipaddress.ip_network(str(text), strict=False):
                return False
        except ValueError:
            continue
    return True
