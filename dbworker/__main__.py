"""``python -m dbworker``: run the worker daemon."""

from dbworker.cmd import main

main()
