"""Enrich and verify: what the Kubernetes API says about the pod an alert names.

- :mod:`responder.cluster.api`: a thin, retried door to the API (official client, plain dicts).
- :mod:`responder.cluster.enrich`, :mod:`responder.cluster.context`: the pod, its owner chain and
  its namespace labels, cached.
- :mod:`responder.cluster.verify`: whether the alert is about the pod it names (pure).
- :mod:`responder.cluster.live_check`: that check against the live pod, waiting for a container
  the kubelet has not listed yet; :mod:`responder.cluster.unlisted_ids` remembers for how long.
- :mod:`responder.cluster.network_escape`: whether the pod can leave its network namespace (pure).
- :mod:`responder.cluster.selectors`: label-selector semantics (pure).
- :mod:`responder.cluster.kubeconfig`: the kubeconfig, checked before the client reads it.
- :mod:`responder.cluster.pool`: a client call run on the thread pool (made in
  responder/service.py, ``cluster.workers`` threads) with the alert's log context.
"""
