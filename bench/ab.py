"""Interleaved A/B of responder variants over HTTP: how bench/README's A/B figures are measured.

    python -m bench.ab --senders 16 --rounds 4 base=rev:HEAD~1 new=
    python -m bench.ab --senders 64 --rounds 3 process= thread=writer:thread

A variant is ``NAME=`` (this checkout, default settings) or ``NAME=KEY:VALUE,...`` with keys
``rev`` (a commit, run from a temporary git worktree of it), ``writer``, ``synchronous`` and
``commit_interval_ms`` (the journal's settings). Each round runs the aiohttp baseline, then every
variant for the same time with the same senders, in the opposite order every other round: on a
machine whose speed moves within minutes, only a difference seen round after round counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT, _env, baseline_server, fixture
from bench.run import FULL, Bench

VARIANT_KEYS = ("rev", "writer", "synchronous", "commit_interval_ms")
CHOICES = {"writer": ("process", "thread"), "synchronous": ("full", "normal")}


@dataclass(frozen=True)
class Variant:
    name: str
    rev: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # Responder's journal settings


def parse_variant(text: str) -> Variant:
    """``NAME=KEY:VALUE,...``; ValueError names the variant and what is wrong in it."""
    name, equals, spec = text.partition("=")
    if not equals or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(
            f"variant {text!r}: expected NAME= or NAME=KEY:VALUE,... (NAME: letters, digits, - or _)"
        )
    rev: str | None = None
    options: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, colon, value = item.partition(":")
        if key not in VARIANT_KEYS:
            raise ValueError(f"variant {name}: unknown key {key!r} (known: {', '.join(VARIANT_KEYS)})")
        if not colon or not value:
            raise ValueError(f"variant {name}: {key} needs a value ({key}:VALUE)")
        if key == "rev":
            rev = value
        elif key == "commit_interval_ms":
            try:
                interval = float(value)
            except ValueError:
                raise ValueError(
                    f"variant {name}: commit_interval_ms must be a number, got {value!r}"
                ) from None
            if not 0 <= interval <= 1000:
                raise ValueError(f"variant {name}: commit_interval_ms must be within 0..1000, got {value}")
            options[key] = interval
        else:
            if value not in CHOICES[key]:
                raise ValueError(
                    f"variant {name}: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}"
                )
            options[key] = value
    return Variant(name, rev, options)


@contextmanager
def checkout(rev: str, where: Path) -> Iterator[Path]:
    """A detached git worktree of ``rev`` at ``where``, removed afterwards. ValueError for a
    revision this repository does not have; RuntimeError when the worktree would not run its own
    code (its ``responder`` package not the one imported)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise ValueError(f"rev {rev!r}: not a commit of {ROOT}")
    commit = found.stdout.strip()
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), commit],
        check=True,
        capture_output=True,
    )
    try:
        imported = imported_responder(where)
        if not imported.is_relative_to(where.resolve()):
            raise RuntimeError(f"rev {rev}: the worktree imports responder from {imported}, not its own")
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
            check=False,
            capture_output=True,
        )


def imported_responder(root: Path) -> Path:
    """The ``responder`` package a responder started from ``root`` (as Responder starts it) imports."""
    printed = subprocess.run(
        [sys.executable, "-c", "import responder; print(responder.__file__)"],
        env=_env(root),
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(printed).resolve()


def compare(rates: dict[str, list[float]]) -> list[str]:
    """A summary line per variant: mean, each round's rate, and against the first variant the
    rounds in which it was higher."""
    first = next(iter(rates))
    lines = []
    for name, values in rates.items():
        line = f"{name:20s} mean {statistics.mean(values):8.0f}/s  rounds {[round(v) for v in values]}"
        if name not in (first, "aiohttp"):
            higher = sum(mine > theirs for mine, theirs in zip(values, rates[first], strict=True))
            line += f"  higher than {first} in {higher} of {len(values)}"
        lines.append(line)
    return lines


def run(
    variants: Sequence[Variant], senders: int, rounds: int, seconds: float, warmup: float
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {variant.name: [] for variant in variants}
    round_trips: dict[str, list[float]] = {variant.name: [] for variant in variants}
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="serving-guard-ab-") as temporary, ExitStack() as trees:
        workdir = Path(temporary)
        roots = {
            variant.name: trees.enter_context(checkout(variant.rev, workdir / f"tree-{variant.name}"))
            if variant.rev is not None
            else ROOT
            for variant in variants
        }
        with fixture(workdir) as world:
            bench = Bench(workdir, world, FULL)
            bench.control("/latency", {"seconds": 0.0})
            spec = bench.ingest_spec(senders, seconds, warmup)
            for number in range(rounds):
                with baseline_server(workdir) as port:
                    baseline.append(
                        bench.load(f"baseline-{number}", port, token=None, **spec).result()["rate_per_second"]
                    )
                order = list(variants) if number % 2 == 0 else list(reversed(variants))
                for variant in order:
                    name = f"{variant.name}-{number}"
                    with bench.responder(name, root=roots[variant.name], **variant.options) as responder:
                        measured = bench.load(name, responder.http_port, **spec).result()
                    rates[variant.name].append(measured["rate_per_second"])
                    round_trips[variant.name].append(measured["round_trip_ms"]["p50"])
                    print(
                        f"round {number}: {variant.name} {measured['rate_per_second']:.0f}/s,"
                        f" round trip p50 {measured['round_trip_ms']['p50']:.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    return {
        "senders": senders,
        "rounds": rounds,
        "seconds": seconds,
        "variants": {v.name: {"rev": v.rev, **v.options} for v in variants},
        "rate_per_second": rates,
        "round_trip_p50_ms": round_trips,
        "aiohttp_baseline_rate_per_second": baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("variants", nargs="+", metavar="NAME=SPEC", help="two or more variants (see above)")
    parser.add_argument(
        "--senders", type=int, default=16, help="keep-alive connections, one request in flight each"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant and round, warm-up included")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted at the start of each")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(text) for text in args.variants]
    except ValueError as exc:
        parser.error(str(exc))
    names = [variant.name for variant in variants]
    if len(variants) < 2 or len(set(names)) != len(names) or "aiohttp" in names:
        parser.error("give two or more variants, each with a name of its own (not 'aiohttp')")
    if args.senders < 1 or args.rounds < 1 or not 0 <= args.warmup < args.seconds:
        parser.error("--senders and --rounds must be at least 1, and --warmup shorter than --seconds")
    try:
        results = run(variants, args.senders, args.rounds, args.seconds, args.warmup)
    except ValueError as exc:  # a revision this repository does not have
        parser.error(str(exc))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    summary = {**results["rate_per_second"], "aiohttp": results["aiohttp_baseline_rate_per_second"]}
    print(f"{args.senders} senders, {args.rounds} rounds of {args.seconds:g} s:")
    print("\n".join(compare(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
