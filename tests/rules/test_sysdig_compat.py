"""The allow-list of what 2022 libsinsp lacks: such clauses are replaced and reported, everything else in
the rule is still compiled by the real sysdig, and nothing outside the allow-list slips through."""

from __future__ import annotations

from pathlib import Path

from responder.rulespack.check import ExitCode, check_files
from responder.rulespack.condition import parse
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import output_to_sysdig, to_sysdig

NEWER = (
    "evt.type in (execve, memfd_create) and proc.name regex 'x.*' and tolower(proc.name) = sh"
    ' and container.label[app] = web and fd.snet in (10.0.0.0/8, "fd00::/8")'
    ' and k8s.pod.label[serving-guard.io/serving] = "true" and not proc.is_exe_upper_layer = true'
)


def test_newer_clauses_are_replaced_and_listed(sysdig: Sysdig) -> None:
    converted = to_sysdig(parse(NEWER))
    replaced = {s.clause: s.replacement for s in converted.stand_ins}
    assert replaced == {
        "memfd_create in evt.type in (execve, memfd_create)": "dropped from the list",
        'proc.name regex "x.*"': "evt.num = 0",
        "tolower(proc.name) = sh": "evt.num = 0",
        "container.label[app] = web": "evt.num = 0",
        'fd00::/8 in fd.snet in (10.0.0.0/8, "fd00::/8")': "dropped from the list",
        "proc.is_exe_upper_layer = true": "evt.num = 0",
    }
    assert all(s.reason for s in converted.stand_ins)
    assert converted.translations == (
        "k8s.pod.label[serving-guard.io/serving] -> k8s.pod.label.serving-guard.io/serving",
    )
    assert converted.text == (
        "evt.type in (execve) and evt.num = 0 and evt.num = 0 and evt.num = 0 and fd.snet in (10.0.0.0/8)"
        ' and k8s.pod.label.serving-guard.io/serving = "true" and not evt.num = 0'
    )
    assert sysdig.compile_filter(converted.text).ok
    # Without the translation the real engine rejects it: the allow-list is needed, not decorative.
    assert not sysdig.compile_filter("evt.type = execve and proc.is_exe_upper_layer = true").ok


def test_output_fields_sysdig_lacks_are_dropped(sysdig: Sysdig) -> None:
    converted = output_to_sysdig("exe=%proc.exepath upper=%proc.is_exe_upper_layer app=%k8s.pod.label[app]")
    assert converted.text == "exe=%proc.exepath upper=(n/a) app=%k8s.pod.label.app"
    assert [s.clause for s in converted.dropped] == ["%proc.is_exe_upper_layer"]
    assert sysdig.check_format(converted.text).ok


def test_the_rest_of_a_rule_with_a_newer_field_is_still_checked(sysdig: Sysdig, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: Newer field and a typo\n"
        "  desc: the newer field is allow-listed, the typo is not\n"
        "  condition: evt.type = execve and proc.is_exe_upper_layer = true and proc.nme = sh\n"
        '  output: "%proc.name"\n'
        "  priority: WARNING\n"
    )
    report = check_files([str(rules)], sysdig, require_sysdig=True, run_falco=False)
    assert report.exit_code is ExitCode.ERRORS
    assert [p.format() for p in report.errors] == [
        f"{rules}:3: error: rule 'Newer field and a typo': sysdig filter error: unrecognized field proc.nme "
        "at pos 38 (at offset 46 of the expanded condition) (token 'proc.nme')"
    ]
    assert [s.clause for s in report.verdicts[0].condition.stand_ins] == ["proc.is_exe_upper_layer = true"]


def test_iglob_is_translated_exactly_into_glob(sysdig: Sysdig) -> None:
    """2022 libsinsp has no iglob: a pattern without brackets becomes a glob with both cases of every
    letter (what FNM_CASEFOLD matches in the C locale); one with brackets gets the stand-in."""
    converted = to_sysdig(
        parse('evt.type = openat and fd.filename iglob "*.pt" and fd.name iglob "/a[bc]/*"')
    )
    assert converted.text == 'evt.type = openat and fd.filename glob "*.[pP][tT]" and evt.num = 0'
    assert converted.translations == ('fd.filename iglob "*.pt" -> fd.filename glob "*.[pP][tT]"',)
    assert [s.clause for s in converted.stand_ins] == ['fd.name iglob "/a[bc]/*"']
    assert sysdig.compile_filter(converted.text).ok
    assert not sysdig.compile_filter('evt.type = openat and fd.filename iglob "*.pt"').ok


def test_an_emptied_list_is_never_true_as_in_falco(sysdig: Sysdig, tmp_path: Path) -> None:
    """A tuning list emptied (`items: []`): Falco reads `in ()` as no values, so the check is false.
    The 2022 engine read one empty value: `fd.sip in ()` did not compile ("unrecognized IPv6
    address": `rules check` refused a valid tuning) and `pmatch ()` matched every path (so `not
    proc.args pmatch (an empty list)` was never true on the captures)."""
    converted = to_sysdig(parse("evt.type = connect and not fd.sip in () and not proc.args pmatch ()"))
    assert converted.text == "evt.type = connect and not evt.num = 0 and not evt.num = 0"
    assert converted.translations == (
        "fd.sip in () -> evt.num = 0 (an empty list: never true)",
        "proc.args pmatch () -> evt.num = 0 (an empty list: never true)",
    )
    assert converted.stand_ins == ()
    assert sysdig.compile_filter(converted.text).ok
    assert not sysdig.compile_filter("evt.type = connect and fd.sip in ()").ok  # why it is needed
    # What is left of a list of IPv6 networks only: never true too, not an empty list.
    only_ipv6 = to_sysdig(parse('evt.type = connect and fd.snet in ("fd00::/8")'))
    assert only_ipv6.text == "evt.type = connect and evt.num = 0"

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- list: allowed_addresses\n"
        "  items: []\n"
        "- rule: Emptied list\n"
        "  desc: a tuning list emptied by its user\n"
        "  condition: evt.type = connect and not fd.sip in (allowed_addresses)\n"
        '  output: "%fd.sip"\n'
        "  priority: WARNING\n"
    )
    report = check_files([str(rules)], sysdig, require_sysdig=True, run_falco=False)
    assert report.exit_code is ExitCode.OK, report
