"""The `serving-guard` commands, one module each (responder/cli.py holds their table):
serve, ingest, quarantine, block, release, audit, config check and config explain; what the
by-hand commands share is in :mod:`responder.commands.by_hand`, the options several commands take
in :mod:`responder.commands.common`."""
