"""``python -m dbworker``: run the worker daemon."""

from dbworker.daemon.cmd import main

main()
