"""tiles_server: a TiTiler service for the outputs of s2core runs.

Layers (RGB, false colour, NDVI, SCL, product mask, model mask, cloud/shadow probabilities) are
addressed as ``/runs/{run_id}/{acquisition_id}/{layer}/…``; files are never named by clients.
Start it with ``python -m tiles_server --root DIR``; build it in code with :func:`create_app`.
"""

from tiles_server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
