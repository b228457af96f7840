"""The worker daemon: its command (``dbworker``), its processes and their startup checks."""
