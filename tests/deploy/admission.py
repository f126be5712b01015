"""The API server's side of a rendered ValidatingAdmissionPolicy, for the tests: which requests it
matches (matchConstraints, matchConditions) and what its validations say of them, with the policy's
own CEL evaluated by cel-python. The chart's expressions use standard CEL only, so that evaluating
them here is evaluating what the API server runs.

Kubernetes semantics kept: variables are visible as `variables.<name>` in order; an expression that
errors counts as failurePolicy says (the chart's: Fail, so denied); `request.subResource` is absent
when empty (the AdmissionRequest's omitempty); `oldObject` is null on CREATE; `namespaceObject` is the
Namespace the object is in, as stored (null for a cluster-scoped object), and `request.namespace` its
name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


@dataclass(frozen=True)
class Request:
    operation: str
    username: str
    group: str
    resource: str
    object: dict[str, Any]
    old_object: dict[str, Any] | None = None
    sub_resource: str = ""
    # The Namespace object the API server looks up for a namespaced request; None: cluster-scoped.
    namespace_object: dict[str, Any] | None = None


@dataclass(frozen=True)
class Verdict:
    applies: bool
    denials: tuple[str, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return not self.denials


def _cel(value: Any) -> celtypes.Value:
    return json_to_cel(value)


class AdmissionPolicy:
    def __init__(self, manifest: dict[str, Any]) -> None:
        assert manifest["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert manifest["kind"] == "ValidatingAdmissionPolicy"
        self.spec: dict[str, Any] = manifest["spec"]
        self._env = celpy.Environment()
        self._programs: dict[str, celpy.Runner] = {}

    def _run(self, expression: str, activation: dict[str, Any]) -> Any:
        if expression not in self._programs:
            self._programs[expression] = self._env.program(self._env.compile(expression))
        return self._programs[expression].evaluate(activation)

    def _matches(self, request: Request) -> bool:
        for rule in self.spec["matchConstraints"]["resourceRules"]:
            resources = rule["resources"]
            wanted = request.resource + (f"/{request.sub_resource}" if request.sub_resource else "")
            if (
                request.group in rule["apiGroups"]
                and request.operation in rule["operations"]
                and (wanted in resources or (request.sub_resource and f"{request.resource}/*" in resources))
            ):
                return True
        return False

    def decide(self, request: Request) -> Verdict:
        if not self._matches(request):
            return Verdict(applies=False)
        cel_request: dict[str, Any] = {
            "operation": request.operation,
            "userInfo": {"username": request.username},
        }
        if request.sub_resource:
            cel_request["subResource"] = request.sub_resource
        if request.namespace_object is not None:
            cel_request["namespace"] = request.namespace_object["metadata"]["name"]
        activation: dict[str, Any] = {
            "request": _cel(cel_request),
            "object": _cel(request.object),
            "oldObject": _cel(request.old_object),
            "namespaceObject": _cel(request.namespace_object),
        }
        strict_fail = self.spec.get("failurePolicy", "Fail") == "Fail"
        for condition in self.spec.get("matchConditions", []):
            try:
                if not self._run(condition["expression"], activation):
                    return Verdict(applies=False)
            except CELEvalError as exc:
                return Verdict(applies=True, denials=(f"matchCondition error: {exc}",) if strict_fail else ())
        variables: dict[celtypes.StringType, Any] = {}
        for variable in self.spec.get("variables", []):
            activation["variables"] = celtypes.MapType(variables)
            try:
                variables[celtypes.StringType(variable["name"])] = self._run(
                    variable["expression"], activation
                )
            except CELEvalError as exc:
                # Lazy in the API server: an error counts only where a validation reads it.
                variables[celtypes.StringType(variable["name"])] = exc
        activation["variables"] = celtypes.MapType(variables)
        denials = []
        for validation in self.spec["validations"]:
            try:
                passed = self._run(validation["expression"], activation)
            except CELEvalError as exc:
                if strict_fail:
                    denials.append(f"{validation['message']} (error: {exc})")
                continue
            assert isinstance(passed, celtypes.BoolType), (validation["expression"], passed)
            if not passed:
                denials.append(validation["message"])
        return Verdict(applies=True, denials=tuple(denials))
