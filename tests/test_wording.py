"""The shared "first few and N more" wording."""

from __future__ import annotations

from responder.wording import first_few


def test_first_few_names_up_to_the_limit_and_counts_the_rest() -> None:
    assert first_few([], 3) == ""
    assert first_few(["a"], 3) == "a"
    assert first_few(["a", "b", "c"], 3) == "a, b, c"
    assert first_few(["a", "b", "c", "d", "e"], 3) == "a, b, c and 2 more"


def test_first_few_counts_from_a_total_when_only_the_first_are_kept() -> None:
    assert first_few(["a", "b", "c"], 3, total=3) == "a, b, c"
    assert first_few(["a", "b", "c"], 3, total=1000) == "a, b, c and 997 more"
