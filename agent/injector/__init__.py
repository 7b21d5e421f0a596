"""The sidecar injector: a mutating admission webhook that adds the agent to pods.

``config`` (what to inject), ``overrides`` (per-pod annotations), ``sidecar`` (the
containers and volume), ``patch`` (JSON Patch), ``review`` (AdmissionReview in and out),
``server`` (HTTPS), ``cli`` (``meshagent injector``). All but ``server`` and ``cli`` are pure.
"""
