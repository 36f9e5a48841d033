"""Where the toolkit keeps things by default: the cache (built-in data, TensorRT engines) and new run folders."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ALEXNET_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/alexnet-deploy`` (``~/.cache/alexnet-deploy``)."""
    root = os.environ.get("ALEXNET_DEPLOY_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-deploy"
    return Path(root)


def default_run_dir(parent: str | os.PathLike = "runs") -> Path:
    """A new run folder named by the local time, ``runs/<YYYYmmdd-HHMMSS>``."""
    return Path(parent) / f"{datetime.now():%Y%m%d-%H%M%S}"
