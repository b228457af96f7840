"""Tools around the worker: ``dbworker-manage``, the signature describer, and test helpers."""
