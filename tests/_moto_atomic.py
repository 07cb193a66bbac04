"""moto's S3 server with atomic conditional writes, run as ``python _moto_atomic.py -H HOST -p PORT``.

moto 5 checks ``If-Match`` / ``If-None-Match`` and then stores the object as two separate
steps, on a threaded server. Two PUTs carrying the same ``If-Match`` can therefore both
succeed, which real S3 and GCS never allow. Icechunk 2 keeps every branch head and the
snapshot list in one object updated with exactly such a conditional PUT, so under racing
commits stock moto loses updates: a commit returns a snapshot id that the repository no
longer knows (``SnapshotNotFoundError``), as one CI run showed. Holding one lock around the
check and the store makes the emulator behave like the object stores it stands in for;
``tests/test_s3_emulator.py`` holds it to that.
"""

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_WRITE = threading.Lock()


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        with _WRITE:
            return method(self, *args, **kwargs)

    return locked


# Every handler that checks a precondition before it stores or deletes.
for _name in ("put_object", "copy_object", "delete_object", "_key_response_post"):
    if hasattr(S3Response, _name):
        setattr(S3Response, _name, _atomic(getattr(S3Response, _name)))

if __name__ == "__main__":
    # Tests that probe for races shorten the interpreter's thread switch interval so that a
    # race window of a few bytecodes is hit within seconds instead of once in many CI runs.
    if "RISK_MOTO_SWITCH_INTERVAL" in os.environ:
        sys.setswitchinterval(float(os.environ["RISK_MOTO_SWITCH_INTERVAL"]))
    main()
