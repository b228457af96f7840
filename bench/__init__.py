"""dbworker's benchmark harness: ``python -m bench.run [--quick] [--out bench/RESULTS.md]`` (see run.py).

Every process of the harness (the run, the echo server, the bare oslo peer, the Celery worker)
imports this package first: it selects oslo.service's threading backend, as ``dbworker.daemon.cmd`` does,
before anything imports oslo.messaging (which would otherwise load the eventlet backend).
"""

import warnings

from oslo_service import backend as _backend

# futurist imports eventlet whenever it is installed; its deprecation notice is noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
_backend.init_backend(_backend.BackendType.THREADING)
