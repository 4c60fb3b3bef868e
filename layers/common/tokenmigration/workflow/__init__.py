"""The steps of a migration or rollback run, as the state machines call them.

``steps`` holds one function per Lambda of the workflow (plan, migrate or roll back a chunk, finalize,
record a failure, scheduled cleanup). They take the ``Services`` container and plain values, never a
Lambda or Step Functions event: the handlers under ``functions/wf_*`` parse events and shape results.
``errors`` names the failures the state machines retry (``TransientDatabaseError``, ``TransientRedisError``)
and turns any error into the short line a run item may carry.
"""
