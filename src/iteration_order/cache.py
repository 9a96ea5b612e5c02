"""Results on disk: keyed by a hash of the full config, written atomically, loaded on a rerun."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["config_hash", "atomic_write_json", "read_json", "DEFAULT_RESULTS"]



def _default_results() -> Path:
    """$ITERATION_ORDER_RESULTS (so tests, nbval and other machines can cache elsewhere), else the
    repository's results/ folder whatever the working directory (a notebook runs from notebooks/),
    else ./results for a copy of the package installed outside the repository."""
    if os.environ.get("ITERATION_ORDER_RESULTS"):
        return Path(os.environ["ITERATION_ORDER_RESULTS"])
    root = Path(__file__).resolve().parents[2]
    return root / "results" if (root / "pyproject.toml").is_file() else Path("results")


DEFAULT_RESULTS = _default_results()


def config_hash(config: Any, length: int = 16) -> str:
    """A stable hash of a dataclass (or any JSON-able value): same fields and values, same hash."""
    payload = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON so that ``path`` holds either its old content or the complete new one.

    The text goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
    ``path`` (rename is atomic on one file system). On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, allow_nan=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)
