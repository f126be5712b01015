"""The journal: every alert the responder accepts, and everything it decides, does and tells, in
one SQLite database in WAL mode, the source of truth a restart resumes from.

- :mod:`responder.journal.store`: the Journal: the writes handed to its writer, and the reads.
- :mod:`responder.journal.ops`: the writes, as small values the writer runs.
- :mod:`responder.journal.rows`: an alert as the journal's row, and back.
- :mod:`responder.journal.schema`: the tables, their indexes and the schema's version.
- :mod:`responder.journal.writer`: the group commit (the writer's loop), in a thread or a process.
- :mod:`responder.journal.process`: the writer's child process and its end of the socket.
- :mod:`responder.journal.walsync`: the fsync that makes a group's commit durable.
- :mod:`responder.journal.lock`: one responder per journal file.
- :mod:`responder.journal.posts`: the order the Slack posts waiting in it go out in.
"""
