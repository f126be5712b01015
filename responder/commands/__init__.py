"""The `serving-guard` commands that live in responder/, one module each (responder/cli.py holds the
table of every command):
serve, ingest, quarantine, block, release, audit, config check and config explain; what the
by-hand commands share is in :mod:`responder.commands.by_hand`, the options several commands take
in :mod:`responder.commands.common`. `rules check` and `rules test` are
responder/rulespack/check_command.py and test_command.py; `simulate`, `replay`, `verify` and `demo`
are simulators/simulate_command.py, replay_command.py, verify_command.py and demo_command.py."""
