"""Actions: what the responder does to the cluster, and what it proves of it.

- :mod:`responder.actions.quarantine`: ClusterActions: quarantine (label the pod into its cut's
  deny-all, then prove no other policy lets traffic through), annotate, and the re-check.
- :mod:`responder.actions.deny_all`: the cut's deny-all policy, made, repaired or refused.
- :mod:`responder.actions.release`: a pod taken out of quarantine and out of its block.
- :mod:`responder.actions.block`, :mod:`responder.actions.destination`: one destination blocked.
- :mod:`responder.actions.netpol`, :mod:`responder.actions.lockdown`: NetworkPolicy reasoning (pure).
- :mod:`responder.actions.pod_patch`, :mod:`responder.actions.pod_records`: the pod's labels and
  records, patched as read.
- :mod:`responder.actions.outcome`, :mod:`responder.actions.events`: what an action did, and its
  Kubernetes Event.
"""
