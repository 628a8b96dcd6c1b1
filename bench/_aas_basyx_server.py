"""Serve an AAS JSON environment with the Eclipse BaSyx Python SDK's HTTP server.

Run by the benchmark's own virtual environment (``bench/.venv-basyx``, basyx-python-sdk 1.2.1
and waitress), never imported by metrocloud::

    python _aas_basyx_server.py ENV.json PORT [THREADS]

Loads ENV.json with ``read_aas_json_file`` (strict: ``failsafe=False``, a bad object is an
error, not a skipped warning) into a ``DictObjectStore`` and serves
``WSGIApp(object_store, DictSupplementaryFileContainer())`` under waitress on 127.0.0.1 with
the API at ``/api/v3.0``. Prints one JSON line on stdout when listening: the object counts.
"""

from __future__ import annotations

import json
import sys
import time

import waitress
from basyx.aas import model
from basyx.aas.adapter.aasx import DictSupplementaryFileContainer
from basyx.aas.adapter.http import WSGIApp
from basyx.aas.adapter.json import read_aas_json_file


def main() -> None:
    env_file, port = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    began = time.perf_counter()
    store = read_aas_json_file(env_file, failsafe=False)
    shells = sum(isinstance(o, model.AssetAdministrationShell) for o in store)
    submodels = sum(isinstance(o, model.Submodel) for o in store)
    app = WSGIApp(store, DictSupplementaryFileContainer())
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=threads)
    print(
        json.dumps(
            {
                "shells": shells,
                "submodels": submodels,
                "objects": len(store),
                "load_seconds": round(time.perf_counter() - began, 2),
            }
        ),
        flush=True,
    )
    server.run()


if __name__ == "__main__":
    main()
