"""dbworker: Cinder's DB API served over oslo.messaging RPC, one transaction per call."""

__version__ = "0.1.0"
