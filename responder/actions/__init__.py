"""Actions: what the responder does to the cluster, and what it proves of it.

- :mod:`responder.actions.quarantine`: ClusterActions, the one door to every action (a block, a
  release and the deny-all delegate to block, release and deny_all): quarantine (label the pod
  into its cut's deny-all, then prove no other policy lets traffic through), annotate, and the
  recheck (lapse_of).
- :mod:`responder.actions.deny_all`: the cut's deny-all policy, made, repaired or refused.
- :mod:`responder.actions.release`: a pod taken out of quarantine and out of its block.
- :mod:`responder.actions.block`, :mod:`responder.actions.destination`: one destination blocked.
- :mod:`responder.actions.netpol`, :mod:`responder.actions.lockdown`: NetworkPolicy reasoning (pure).
- :mod:`responder.actions.pod_patch`: a pod's metadata merge-patched as read (uid and
  resourceVersion); :mod:`responder.actions.pod_records`: what is recorded on a pod (its
  serving-guard.io/ annotations) and the release record read back.
- :mod:`responder.actions.outcome`, :mod:`responder.actions.events`: what an action did, and its
  Kubernetes Event.
"""
