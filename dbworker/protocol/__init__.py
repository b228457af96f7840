"""What a caller and the worker share: the wire format and the catalogue of functions.

Imports nothing from the rest of the package but :mod:`dbworker.exception`'s base (through
:mod:`~dbworker.protocol.wire`): a caller's process loads only this, the client and the options.
"""
