"""The audit trail from the journal: alert -> decision -> actions -> notifications, with timings;
shared by `serving-guard audit`, the HTTP `GET /v1/audit` endpoint and `serving-guard verify`.

- :mod:`responder.audit.query`: what is asked for (since, pod, run id, policy, incident, limit).
- :mod:`responder.audit.trail`: the trail loaded from the journal.
- :mod:`responder.audit.answer`: its shape, as `GET /v1/audit` answers it, and a client's reader.
- :mod:`responder.audit.text`: the trail in words (summary, incidents, table).
"""
