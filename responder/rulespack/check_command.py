"""`serving-guard rules check [FILES...]`: check Falco rules files and compile every rule with sysdig.

Files load in the order given, as Falco loads them (the pack first, then your overrides). Exit
status: 0 everything passed; 1 an error; 3 no error, but sysdig is not installed so no condition
was compiled (with SERVING_GUARD_REQUIRE_SYSDIG=1 that is an error instead).
"""

from __future__ import annotations

import argparse

from responder.rulespack.check import CheckReport, ExitCode, check_files
from responder.rulespack.paths import default_pack, display_path
from responder.rulespack.sysdig import Sysdig, sysdig_required


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="rules files in load order (default: the shipped pack, rules/serving_guard_rules.yaml)",
    )
    parser.add_argument(
        "--expanded",
        action="store_true",
        help="also print every rule's condition as Falco compiles it and as sysdig evaluates it",
    )
    parser.add_argument(
        "--no-falco", action="store_true", help="do not run `falco -V` even if falco is on PATH"
    )


def render_report(report: CheckReport, expanded: bool) -> str:
    ruleset = report.ruleset
    lines = [
        f"checked {', '.join(report.files)}: {len(ruleset.rules)} rules, {len(ruleset.macros)} macros, "
        f"{len(ruleset.lists)} lists"
    ]
    if report.sysdig is None:
        lines.append(
            "sysdig: skipped: sysdig not installed (apt-get install sysdig); no condition was compiled"
        )
    else:
        compiled = sum(1 for v in report.verdicts if v.compiled)
        lines.append(
            f"sysdig {report.sysdig.version} ({report.sysdig.path}): {compiled}/{len(report.verdicts)} rule "
            "conditions and outputs compiled"
        )
    for verdict in report.verdicts:
        status = {True: "ok", False: "FAILED", None: "not compiled"}[verdict.compiled]
        disabled_at = ruleset.rules[verdict.name].disabled_at
        if disabled_at is not None and verdict.compiled is not False:
            # It compiles, but Falco never evaluates it: "ok" read as "detects" after a tuning.
            status = f"disabled ({disabled_at})"
        lines.append(f"  {status:<12} {verdict.name}")
        for stand_in in verdict.condition.stand_ins:
            lines.append(
                f"               clause `{stand_in.clause}` -> {stand_in.replacement} for sysdig: "
                f"{stand_in.reason}"
            )
        for stand_in in verdict.output_dropped:
            lines.append(f"               output {stand_in.clause} dropped for sysdig: {stand_in.reason}")
        if expanded:
            rule = ruleset.expanded[verdict.name]
            lines.append(f"               falco:  {rule.expanded}")
            lines.append(f"               sysdig: {verdict.condition.text}")
            # Exact rewrites (label fields' dot form, an emptied list), not gaps: shown with the text.
            lines += [f"               translated for sysdig: {t}" for t in verdict.condition.translations]
    if report.falco is None:
        lines.append("falco: not on PATH, `falco -V` not run")
    else:
        lines.append(f"falco -V ({report.falco.binary}): {'ok' if report.falco.ok else 'FAILED'}")
        lines += [f"  {line}" for line in report.falco.lines]
    for problem in report.warnings:
        lines.append(problem.format())
    for problem in report.errors:
        lines.append(problem.format())
    disabled = sum(1 for rule in ruleset.rules.values() if not rule.enabled)
    counts = f"rules: {len(ruleset.rules) - disabled} enabled, {disabled} disabled"
    code = report.exit_code
    if code is ExitCode.OK:
        lines.append(f"result: ok ({len(report.warnings)} warnings); {counts}")
    elif code is ExitCode.SYSDIG_SKIPPED:
        lines.append(f"result: skipped: sysdig not installed (rules format and expansion passed); {counts}")
    else:
        lines.append(
            f"result: FAILED ({len(report.errors)} errors, {len(report.warnings)} warnings); {counts}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    files = list(args.files) or [display_path(default_pack())]
    report = check_files(files, Sysdig.find(), require_sysdig=sysdig_required(), run_falco=not args.no_falco)
    text = render_report(report, args.expanded)
    print(text)
    return int(report.exit_code)
