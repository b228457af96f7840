"""The call core: one call, one transaction, one JSON reply, with no broker in sight.

A handler's declaration (:mod:`~dbworker.core.registry`), the dispatcher that runs it
(:mod:`~dbworker.core.dispatch`), and what both need: the caller's context, the handlers'
settings, query and record helpers, the reply's serializer and the per-call logging scope.
"""
