"""`serving-guard rules test`: run the pack on recorded syscall captures and print the detection matrix.

Every rule is evaluated by the real libsinsp of Debian's sysdig reading each capture, with the
pack's scope retargeted by an override rules file (the captures are host processes). The
expectations (which rule must fire on which action, which parts are benign) come from the
examples file. Exit status: 0 all expectations met; 1 a failure; 3 sysdig is not installed
(an error instead when SERVING_GUARD_REQUIRE_SYSDIG=1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from responder.rulespack.check import ExitCode
from responder.rulespack.examples import load_examples
from responder.rulespack.matrix import render_json, render_table
from responder.rulespack.paths import default_captures, default_examples, default_pack, display_path
from responder.rulespack.suite import SuiteInput, run_suite
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig, sysdig_required


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--captures",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of .scap captures (default: tests/fixtures/captures)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--rules",
        default=None,
        metavar="FILE",
        help="the rules pack (default: rules/serving_guard_rules.yaml)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=None,
        metavar="FILE",
        help="rules file loaded after the pack, repeatable (default: the examples' captures.scope_override, "
        "looked up in the captures directory)",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        metavar="FILE",
        help="expectations (default: rules/examples.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    sysdig = Sysdig.find()
    if sysdig is None:
        if sysdig_required():
            print(
                f"error: sysdig is not installed but {REQUIRE_ENV}=1 (apt-get install sysdig)",
                file=sys.stderr,
            )
            return int(ExitCode.ERRORS)
        print(
            "skipped: sysdig not installed (apt-get install sysdig); no capture was evaluated",
            file=sys.stderr,
        )
        return int(ExitCode.SYSDIG_SKIPPED)
    captures = args.captures or default_captures()
    examples = load_examples(args.examples or default_examples())
    overrides = args.override
    if overrides is None:
        scope = examples.captures.scope_override
        overrides = [display_path(captures / scope)] if scope else []
    rules = args.rules or display_path(default_pack())
    report = run_suite(sysdig, SuiteInput([rules, *overrides], captures, examples))
    if args.format == "json":
        print(json.dumps(render_json(report), indent=2))
    else:
        print(render_table(report))
    return int(ExitCode.OK if report.ok else ExitCode.ERRORS)
