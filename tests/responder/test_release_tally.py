"""`release` ends with the tally `quarantine` and `block` end with, for one pod as for several: a
release that did not happen is said on stderr as well as by the exit status."""

from __future__ import annotations

import pytest

from responder.cli import main
from tests.responder.test_commands import Seeded


def test_a_single_pod_not_released_gets_the_closing_tally(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, kubeconfig = seeded
    argv = [
        "release",
        "-n",
        "ml-serving",
        "ghost",
        "--reason",
        "x",
        "--by",
        "carol",
        "--kubeconfig",
        kubeconfig,
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "ml-serving/ghost: not found\n"
    assert captured.err == "1 of 1 pods not released\n"
    # As quarantine says it of the same pod.
    argv[0] = "quarantine"
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "ml-serving/ghost: not found\n"
    assert captured.err == "1 of 1 pods not isolated\n"
