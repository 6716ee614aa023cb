"""nebula_sync: a synchronous, thread-safe Python client for NebulaGraph 3.x."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
