"""Results on disk: named by a hash of the config, written atomically, used again only when valid.

Every stored result is a JSON object that carries, besides its numbers, the ``format`` of this
module, the full ``config`` it was computed for and the ``code_fingerprint`` of the modules that
determine it (`code_fingerprint`). `load_result` uses a file only if it parses as strict JSON, is
an object with those keys, its config equals the requested one, its fingerprint equals the
current code's and the caller's own check of its shape passes (for a trajectory: one entry per
recorded step in every curve). `cached` runs a computation behind that check in one of three
modes (`CACHE_MODES`), chosen by the caller or by ``$ITERATION_ORDER_CACHE``:

* ``use`` (the default): a valid result is loaded; a missing one is computed; an invalid one is
  computed again and overwritten, with one `StaleResultWarning` naming the file and the reason;
* ``refresh``: always compute and overwrite (the way to force a rerun);
* ``only``: never compute; a missing or invalid result raises `MissingResultError` naming the
  file, the config and the reason (for a check that every page's numbers are in the cache).

Strict JSON: files are written with ``allow_nan=False`` and every non-finite float (NaN, ±inf) is
stored as ``null``. A trajectory stops at its first non-finite loss, so its losses can be ``null``
only at the last recorded step (accuracies of a regression task are ``null`` throughout).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from .validation import choice_or_env

__all__ = ["config_hash", "atomic_write_json", "read_json", "DEFAULT_RESULTS", "FORMAT",
           "CACHE_MODES", "CACHE_ENV", "cache_mode", "code_fingerprint", "jsonable",
           "load_result", "read_valid", "cached", "check_writable", "nan_for_null",
           "InvalidResult", "StaleResultWarning", "MissingResultError", "ResultsDirError"]

# Version of what every stored result holds besides its numbers (the keys below, null for
# non-finite floats). Raise it when that changes: older files are then recomputed, never misread.
FORMAT = 1
_REQUIRED = ("format", "config", "code_fingerprint")
CACHE_MODES = ("use", "refresh", "only")
CACHE_ENV = "ITERATION_ORDER_CACHE"


class InvalidResult(Exception):
    """A stored result that must not be used; the message says why."""


class StaleResultWarning(UserWarning):
    """A stored result was invalid and is being recomputed."""


class MissingResultError(LookupError):
    """``cache='only'`` and no valid stored result."""


class ResultsDirError(OSError):
    """The folder results are written to cannot be created or written."""


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


def jsonable(config: Any) -> Any:
    """A config as it reads back from a result file (tuples become lists, and so on), so that a
    stored config compares equal to the requested one exactly when they are the same."""
    payload = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(json.dumps(_strict(payload), default=str, allow_nan=False))


# ------------------------------------------------------------------------------------------------
# The cache mode
# ------------------------------------------------------------------------------------------------

def cache_mode(mode: str | None = None) -> str:
    """``mode`` checked, or (None) the one ``$ITERATION_ORDER_CACHE`` names, ``use`` if unset.

    The environment steers runs whose `Runtime` is built where the caller cannot reach it (each
    book page builds its own in its notebook)."""
    return choice_or_env(mode, CACHE_ENV, CACHE_MODES, "use", "cache mode")


# ------------------------------------------------------------------------------------------------
# The code fingerprint
# ------------------------------------------------------------------------------------------------

def code_fingerprint(modules: Iterable[str]) -> str:
    """A hash of the code of ``modules`` (names inside this package, e.g. ``"maps"`` or
    ``"book.lie_study"``): any change to their code changes it; comments, docstrings, blank lines
    and formatting do not, so editing those does not throw away hours of cached runs."""
    return _fingerprint(tuple(modules))


@lru_cache(maxsize=None)
def _fingerprint(modules: tuple[str, ...]) -> str:
    # Once per process: every result a process writes carries the fingerprint of the code it
    # loaded, not of a file edited while it ran.
    digest = hashlib.sha256()
    for name in modules:
        digest.update(f"{name}\0{_normalised_source(name)}\0".encode())
    return digest.hexdigest()[:16]


def _module_file(name: str) -> Path:
    """The source file of a module of this package, found without importing it (the library never
    imports the book, even to fingerprint it)."""
    spec = importlib.util.find_spec(f"{__package__}.{name}")
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"no source file for module {__package__}.{name}; a fingerprint needs "
                         f"the .py file of every module it covers")
    return Path(spec.origin)


def _normalised_source(name: str) -> str:
    tree = ast.parse(_module_file(name).read_text(encoding="utf-8"))
    _drop_docstrings(tree)
    return _canonical(tree)


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]


def _canonical(node: Any) -> str:
    """The AST as text without positions, like ``ast.dump(include_attributes=False)``, but leaving
    out empty and None fields: ``ast.dump``'s own text changes between Python versions (3.12 adds
    ``type_params=[]`` to every function, 3.13 stops printing empty fields), which would make a
    result computed on one machine stale on another with the same code."""
    if isinstance(node, ast.AST):
        fields = [f"{k}={_canonical(v)}" for k, v in ast.iter_fields(node)
                  if v is not None and not (isinstance(v, list) and not v)]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_canonical(v) for v in node)}]"
    return repr(node)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: writable as strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def nan_for_null(value: Any) -> Any:
    """The reverse of the null-for-non-finite rule, for results whose numbers are never None
    otherwise: every None becomes NaN (a stored ±inf also reads back as NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_null(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write strict JSON (non-finite floats as null) so that ``path`` holds either its old content
    or the complete new one.

    The text goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
    ``path`` (rename is atomic on one file system). On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_strict(payload), fh, allow_nan=False)
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


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and write and remove a probe file in it, so that a run whose
    result could not be stored fails before it computes anything."""
    try:
        folder = Path(folder)
    except TypeError:
        raise ResultsDirError(f"results_dir must be a path; got {folder!r}") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ResultsDirError(f"cannot write results to {str(folder)!r}: {err.strerror or err}. "
                              f"Pass a writable Runtime(results_dir=...) or set "
                              f"$ITERATION_ORDER_RESULTS") from None
    return folder


# ------------------------------------------------------------------------------------------------
# Reading, with the validity check
# ------------------------------------------------------------------------------------------------

def _reject_constant(token: str):
    raise ValueError(f"{token} is not strict JSON")


def _differing(stored: Any, wanted: Any) -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        keys = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
        return ", ".join(f"{k}: {stored.get(k)!r} stored, {wanted.get(k)!r} wanted"
                         for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
    return f"{stored!r} stored"


def load_result(path: str | os.PathLike, config: Any, fingerprint: str,
                check: Callable[[dict], None] | None = None) -> dict:
    """The result stored at ``path`` if it is valid for ``config`` (as `jsonable` gives it) and
    the code ``fingerprint``. Raises FileNotFoundError if there is no file, `InvalidResult` saying
    why otherwise; ``check(result)`` raises `InvalidResult` for a result of the wrong shape."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no file there (a parent may be a file)
        raise FileNotFoundError(f"no result at {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidResult(f"cannot be read ({err})") from None
    if not text.strip():
        raise InvalidResult("is empty")
    try:
        result = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise InvalidResult(f"is not valid JSON ({err})") from None
    if not isinstance(result, dict):
        raise InvalidResult(f"holds a JSON {type(result).__name__}, not an object")
    missing = [k for k in _REQUIRED if k not in result]
    if missing:
        raise InvalidResult(f"lacks {', '.join(missing)} (written by an older version, or not a "
                            f"result)")
    if result["format"] != FORMAT:
        raise InvalidResult(f"has format {result['format']!r}; this code reads {FORMAT}")
    if result["config"] != config:
        raise InvalidResult(f"holds the result of another config "
                            f"({_differing(result['config'], config)})")
    if result["code_fingerprint"] != fingerprint:
        raise InvalidResult(f"was computed by other code (fingerprint "
                            f"{result['code_fingerprint']!r}, current code {fingerprint!r})")
    if check is not None:
        check(result)
    return result


def read_valid(path: str | os.PathLike, config: Any, fingerprint: str,
               check: Callable[[dict], None] | None = None, mode: str | None = None,
               describe: str = "") -> dict | None:
    """What a run would load under ``mode``: the valid stored result, or None where it must be
    computed (missing, ``refresh``, or invalid: then with one `StaleResultWarning`). With ``only``
    a missing or invalid result raises `MissingResultError` naming the file, ``describe`` (the
    config) and the reason."""
    mode = cache_mode(mode)
    if mode == "refresh":
        return None
    try:
        return load_result(path, config, fingerprint, check)
    except FileNotFoundError:
        reason = "no result is stored there"
        invalid = False
    except InvalidResult as err:
        reason, invalid = f"the file {err}", True
    if mode == "only":
        raise MissingResultError(f"cache='only' and no valid result for {describe or config} at "
                                 f"{str(path)!r}: {reason}")
    if invalid:
        warnings.warn(f"{str(path)!r}: {reason}; recomputing it", StaleResultWarning,
                      stacklevel=3)
    return None


def cached(path: str | os.PathLike, config: Any, fingerprint: str, compute: Callable[[], dict],
           check: Callable[[dict], None] | None = None, mode: str | None = None,
           describe: str = "") -> dict:
    """The valid stored result (``from_cache: True``), else ``compute()`` stored with ``format``,
    ``config`` and ``code_fingerprint`` and read back (``from_cache: False``), so a fresh result
    and a cached one are indistinguishable. The folder is checked to be writable before
    ``compute`` runs."""
    path = Path(path)
    found = read_valid(path, config, fingerprint, check, mode, describe)
    if found is not None:
        return {**found, "from_cache": True}
    check_writable(path.parent)
    result = compute()
    stamp = {"format": FORMAT, "config": config, "code_fingerprint": fingerprint}
    if stamp.keys() & result.keys():
        raise ValueError(f"a computed result must not set {sorted(stamp.keys() & result.keys())}; "
                         f"the cache stores them")
    atomic_write_json(path, {**stamp, **result})
    return {**load_result(path, config, fingerprint, check), "from_cache": False}
