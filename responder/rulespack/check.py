"""The whole check of a set of rules files: Falco's format, Falco's loading semantics, the house rules,
and compilation of every rule condition and output by the real 2022 libsinsp (sysdig), plus
`falco -V` when a Falco binary is on PATH.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum

from responder.rulespack import policy
from responder.rulespack.condition import token_at
from responder.rulespack.expand import ExpandedRule, RuleSet, load
from responder.rulespack.falco import FalcoVerdict, find_falco, validate
from responder.rulespack.problems import Problem, Severity, has_errors, item_label
from responder.rulespack.rulesfile import MacroItem, RuleItem, read_rules_file
from responder.rulespack.sysdig import CompileResult, Sysdig
from responder.rulespack.sysdig_compat import StandIn, SysdigCondition, output_to_sysdig, to_sysdig
from responder.wording import first_few

# sysdig names the offending token in most of its messages; fall back to the word at the position.
_TOKEN_IN_MESSAGE = (
    re.compile(r"unrecognized field (\S+)"),
    re.compile(r"unknown event type (\S+)"),
    re.compile(r"unrecognized IPv[46] address (\S+)"),
    re.compile(r"unrecognized IP (?:network|address) (\S+)"),
    re.compile(r"unrecognized boolean value (\S+)"),
    re.compile(r"unrecognized protocol (\S+)"),
)
_PARALLEL_SYSDIG_RUNS = 4
# The parts of sysdig's message that differ between the rules one bad token is expanded into.
_POSITIONS = re.compile(r" at pos \d+| \(at offset \d+ of the expanded condition\)")
# The rules a merged problem names before "and N more".
MERGED_RULES_SHOWN = 3


class ExitCode(IntEnum):
    OK = 0
    ERRORS = 1
    SYSDIG_SKIPPED = 3  # everything else passed, but the conditions were not compiled


@dataclass(frozen=True)
class RuleVerdict:
    name: str
    file: str
    line: int | None
    condition: SysdigCondition
    output_dropped: tuple[StandIn, ...]
    compiled: bool | None  # None: not compiled (sysdig missing, or the rule is not for syscalls)


@dataclass
class CheckReport:
    files: list[str]
    ruleset: RuleSet
    problems: list[Problem] = field(default_factory=list)
    verdicts: list[RuleVerdict] = field(default_factory=list)
    sysdig: Sysdig | None = None
    falco: FalcoVerdict | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def exit_code(self) -> ExitCode:
        if has_errors(self.problems):
            return ExitCode.ERRORS
        if self.sysdig is None:
            return ExitCode.SYSDIG_SKIPPED
        return ExitCode.OK


def _sysdig_token(result: CompileResult, text: str) -> str:
    for pattern in _TOKEN_IN_MESSAGE:
        match = pattern.search(result.message)
        if match:
            return match.group(1)
    if result.position is None:
        return ""
    # sysdig reports the position after the token it choked on: step back to that token's start.
    start = max(0, min(result.position, len(text)) - 1)
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "()":
        start -= 1
    return token_at(text, start).rstrip(",")


def _compile_rule(sysdig: Sysdig, rule: ExpandedRule) -> tuple[CompileResult, CompileResult]:
    condition = to_sysdig(rule.ast)
    output = output_to_sysdig(rule.output)
    return sysdig.compile_filter(condition.text), sysdig.check_format(output.text)


def _sysdig_problems(
    ruleset: RuleSet, rule: ExpandedRule, results: tuple[CompileResult, CompileResult]
) -> list[Problem]:
    problems = []
    label = item_label("rule", rule.name)
    condition_result, output_result = results
    if not condition_result.ok:
        text = to_sysdig(rule.ast).text
        token = _sysdig_token(condition_result, text)
        file, line = rule.locate(token)
        problems.append(
            Problem(
                Severity.ERROR,
                file,
                line,
                f"sysdig {condition_result.message}"
                + (
                    f" (at offset {condition_result.position} of the expanded condition)"
                    if condition_result.position
                    else ""
                ),
                label,
                token or None,
            )
        )
    if not output_result.ok:
        origin = rule.output_origin or rule.origin
        token = output_result.token or ""
        line = origin.file.find(token, origin.line) or origin.line
        problems.append(
            Problem(Severity.ERROR, origin.file.path, line, f"sysdig: {output_result.message}", label, token)
        )
    return problems


def merge_rule_problems(problems: list[Problem]) -> list[Problem]:
    """One problem per file, line and message for the rules one text is expanded into: a bad field
    appended to a macro that eight rules use is one error at the append, naming how many rules it
    affects, not eight (the messages differ only in the rule's name and the offset in its condition)."""
    groups: dict[tuple[Severity, str, int | None, str | None, str], list[Problem]] = {}
    for problem in problems:
        key = (
            problem.severity,
            problem.file,
            problem.line,
            problem.token,
            _POSITIONS.sub("", problem.message),
        )
        groups.setdefault(key, []).append(problem)
    merged = []
    for (*_, message), group in groups.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        first = group[0]
        names = [problem.item or "?" for problem in group]
        shown = first_few(names, MERGED_RULES_SHOWN)
        merged.append(
            Problem(
                first.severity,
                first.file,
                first.line,
                f"{message} (it affects {len(group)} rules: {shown})",
                None,
                first.token,
            )
        )
    return merged


def _disabled_pack_rules(ruleset: RuleSet) -> list[Problem]:
    """A warning for each rule of the Serving Guard pack (tagged serving_guard) that the files switch
    off, at its `enabled: false`: a tuning that silences a whole class of attack is worth a look."""
    problems = []
    for rule in ruleset.rules.values():
        if rule.enabled or policy.PACK_TAG not in rule.tags:
            continue
        origin = rule.enabled_origin or rule.origin
        problems.append(
            Problem(
                Severity.WARNING,
                origin.file.path,
                origin.line,
                "a Serving Guard rule is disabled: Falco will not detect what it covers"
                " (`serving-guard rules test` lists the attacks that go unseen)",
                item_label("rule", rule.name),
            )
        )
    return problems


# Fields that hold for every process of a container, pod, image or namespace: an exception or
# condition on them switches a rule off for all of them, and the recorded captures (host
# processes) cannot show it.
_WORKLOAD_FIELDS = re.compile(
    r"\b(container\.(?:image(?:\.repository|\.tag|\.digest)?|name|id)|k8s\.[a-z]+\.[a-z.]+)"
)


# A process's user: the recorded captures run as root, so an exception on another user is never
# exercised by them, and an exception on the serving user silences the rule for the server's own
# processes, where an attacker's code in it (a malicious model, an RCE) runs.
_USER_FIELDS = re.compile(r"\buser\.(?:name|uid|loginname|loginuid)\b")
_ROOT = frozenset({"root", "0"})


def _exception_values(values: object) -> set[str]:
    """Every value of ``values``, whatever its nesting (``comps: in`` gives a field a list)."""
    if isinstance(values, (list, tuple)):
        return {value for row in values for value in _exception_values(row)}
    return {str(values)}


def _values_of(values: object, columns: list[int], *, single: bool) -> set[str]:
    """The values an exception gives the fields at ``columns`` (one row per entry, one column per
    field; ``single``: its fields are one field, every value its)."""
    if single or not isinstance(values, (list, tuple)):
        return _exception_values(values)
    found: set[str] = set()
    for row in values:
        if isinstance(row, (list, tuple)):
            found |= {v for i in columns if i < len(row) for v in _exception_values(row[i])}
    return found


@dataclass(frozen=True)
class _TuningUse:
    """Fields of ``pattern`` an exception or condition of the user's files tests, where."""

    path: str
    line: int | None
    rule: str
    fields: list[str]
    what: str  # "exception" or "condition"
    values: set[str]  # an exception's values (empty for a condition)


def _tuning_uses(ruleset: RuleSet, pattern: re.Pattern[str], *, macros: bool = False) -> list[_TuningUse]:
    """Every exception (with values) or condition the user's files (not the pack's) add to a pack
    rule (with ``macros``, or put in a macro) that tests a field ``pattern`` matches; an exception's
    values are those it gives those fields."""
    packs = {id(rules_file) for rules_file in policy.pack_files(ruleset)}
    uses = []
    for rules_file in ruleset.files:
        if id(rules_file) in packs:
            continue
        for item in rules_file.items:
            if macros and isinstance(item, MacroItem):
                found = sorted(set(pattern.findall(item.condition or "")))
                if found:
                    uses.append(
                        _TuningUse(
                            rules_file.path,
                            item.condition_line or item.line,
                            item.name,
                            found,
                            "macro",
                            set(),
                        )
                    )
                continue
            rule = ruleset.rules.get(item.name) if isinstance(item, RuleItem) else None
            if not isinstance(item, RuleItem) or rule is None or id(rule.origin.file) not in packs:
                continue  # a rule of the user's own: what it tests is its purpose
            for exception in item.get("exceptions") or ():
                defined = next((e for e in rule.exceptions if e.name == exception.name), None)
                fields = exception.fields or (defined.fields if defined is not None else None)
                named = [fields] if isinstance(fields, str) else list(fields or ())
                matched = [i for i, f in enumerate(named) if pattern.fullmatch(f)]
                if matched and exception.values:
                    line = exception.line or item.line
                    values = _values_of(exception.values, matched, single=isinstance(fields, str))
                    uses.append(
                        _TuningUse(
                            rules_file.path, line, item.name, [named[i] for i in matched], "exception", values
                        )
                    )
            condition = item.get("condition")
            tested = sorted(set(pattern.findall(condition))) if isinstance(condition, str) else []
            if tested:
                line = item.key_lines.get("condition") or item.line
                uses.append(_TuningUse(rules_file.path, line, item.name, tested, "condition", set()))
    return uses


def _user_tuning(ruleset: RuleSet) -> list[Problem]:
    """A warning at each exception or condition of the user's files on a process's user other than
    root: no recorded capture can show what it silences (they run as root), and excepting the
    serving user excepts what an attacker runs inside the server."""
    return [
        _user_problem(use.path, use.line, use.rule, use.fields, use.what)
        for use in _tuning_uses(ruleset, _USER_FIELDS, macros=True)
        if use.what != "exception" or use.values - _ROOT
    ]


def _user_problem(path: str, line: int | None, name: str, fields: list[str], what: str) -> Problem:
    """``what``: "exception" or "condition" of rule ``name``, or "macro" (``name``'s condition)."""
    macro = what == "macro"
    return Problem(
        Severity.WARNING,
        path,
        line,
        f"this {'condition' if macro else what} tests {', '.join(fields)}: the recorded captures run as root,"
        " so `serving-guard rules test` cannot evaluate it; and if it names the user the model server runs"
        f" as, it switches {'the rules using it' if macro else 'the rule'} off for whatever runs inside the"
        " server (a malicious model's code, an exploited request), which runs as that user too",
        item_label("macro" if macro else "rule", name),
    )


def _workload_wide_tuning(ruleset: RuleSet) -> list[Problem]:
    """A warning at each exception value or condition the user's files (not the pack's) add to a
    rule on a field that holds for a whole container, pod, image or namespace: it switches the rule
    off for every process there (a serving image named by mistake silences the rule for every
    serving pod of it), and `rules test` cannot evaluate it on host captures."""
    return [
        _workload_problem(use.path, use.line, use.rule, use.fields, use.what)
        for use in _tuning_uses(ruleset, _WORKLOAD_FIELDS)
    ]


def _workload_problem(path: str, line: int | None, rule: str, fields: list[str], what: str) -> Problem:
    return Problem(
        Severity.WARNING,
        path,
        line,
        f"this {what} tests {', '.join(fields)}, which holds for every process of a container, pod, image"
        " or namespace: it switches the rule off for all of them (name only helper images, such as model"
        " pullers, never a serving image or namespace); the recorded captures are host processes, so"
        " `serving-guard rules test` cannot evaluate it",
        item_label("rule", rule),
    )


def tuning_warnings(ruleset: RuleSet) -> list[Problem]:
    """The warnings about what the files switch off that the captures cannot show: a pack rule
    disabled, an exception or condition on a workload-wide field. `rules check` and `rules test`
    both say them (an "ok" from the captures says nothing of a Triton image excepted)."""
    return [*_disabled_pack_rules(ruleset), *_workload_wide_tuning(ruleset), *_user_tuning(ruleset)]


def tuning_errors(ruleset: RuleSet, user_files: Collection[str]) -> list[Problem]:
    """rules check's errors on the lists and the macros that must stay in step with them (the model
    dirs and their `/proc`, stub and '..' macros, the model extensions), where the user's files
    wrote them: `rules test` says them too, and fails on them."""
    return [
        problem
        for problem in policy.consistency_problems(ruleset)
        if problem.file in user_files and problem.severity is Severity.ERROR
    ]


def compile_problems(ruleset: RuleSet, sysdig: Sysdig) -> list[Problem]:
    """What the real libsinsp refuses of the enabled syscall rules' conditions and outputs, each at
    the file and line its text came from (a misspelt field in a tuning's exception, say)."""
    rules = [rule for rule in ruleset.expanded.values() if rule.source == "syscall"]
    with ThreadPoolExecutor(max_workers=_PARALLEL_SYSDIG_RUNS) as pool:
        results = list(pool.map(lambda rule: _compile_rule(sysdig, rule), rules))
    return merge_rule_problems(
        [
            problem
            for rule, result in zip(rules, results, strict=True)
            for problem in _sysdig_problems(ruleset, rule, result)
        ]
    )


def check_files(
    paths: list[str], sysdig: Sysdig | None, *, require_sysdig: bool, run_falco: bool = True
) -> CheckReport:
    rules_files = [read_rules_file(path) for path in paths]
    ruleset = load(rules_files)
    report = CheckReport(files=paths, ruleset=ruleset, sysdig=sysdig)
    for rules_file in rules_files:
        report.problems += rules_file.problems
    report.problems += ruleset.problems
    report.problems += policy.check_engine_versions(ruleset)
    report.problems += policy.check_evttype_restriction(ruleset)
    report.problems += policy.check_pack(ruleset)
    report.problems += tuning_warnings(ruleset)
    if sysdig is None and require_sysdig:
        report.problems.append(
            Problem(
                Severity.ERROR,
                paths[0] if paths else "-",
                None,
                "sysdig is not installed but SERVING_GUARD_REQUIRE_SYSDIG=1: the conditions must be compiled "
                "(apt-get install sysdig)",
            )
        )
    syscall_rules = [rule for rule in ruleset.expanded.values() if rule.source == "syscall"]
    results: dict[str, tuple[CompileResult, CompileResult]] = {}
    if sysdig is not None and syscall_rules:
        with ThreadPoolExecutor(max_workers=_PARALLEL_SYSDIG_RUNS) as pool:
            futures = {rule.name: pool.submit(_compile_rule, sysdig, rule) for rule in syscall_rules}
            results = {name: future.result() for name, future in futures.items()}
    refused: list[Problem] = []
    for rule in ruleset.expanded.values():
        compiled: bool | None = None
        if rule.name in results:
            rule_problems = _sysdig_problems(ruleset, rule, results[rule.name])
            refused += rule_problems
            compiled = not rule_problems
        report.verdicts.append(
            RuleVerdict(
                rule.name,
                rule.origin.file.path,
                rule.origin.line,
                to_sysdig(rule.ast),
                output_to_sysdig(rule.output).dropped,
                compiled,
            )
        )
    report.problems += merge_rule_problems(refused)
    falco = find_falco() if run_falco else None
    if falco is not None and paths:
        report.falco = validate(falco, paths)
        if not report.falco.ok:
            report.problems.append(
                Problem(
                    Severity.ERROR,
                    paths[-1],
                    None,
                    "falco -V rejected the rules files (its verdict is above)",
                )
            )
    return report
