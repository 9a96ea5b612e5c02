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

Every stored result also carries ``content_sha256`` (`DIGEST_KEY`), the SHA-256 of its own
content (`content_digest`: the canonical strict JSON of everything else in the file), written by
`store_result` and checked by `load_result` before anything else: a number edited by hand, a
flipped byte, a curve replaced by strings are caught there, and a file without a digest is not
used. `load_result` is the one place results are read; every failure there (bad JSON, JSON nested
too deeply, a digest that does not match, a value of the wrong type, a caller's check that raises)
is an `InvalidResult` with its reason, so a read is always the stored result, a warned recompute,
or under ``only`` a `MissingResultError`. A file named for one device (``-cpu.json``) holding a
run of another (``cuda:0``) raises `DeviceMismatchError`. `certify_unstamped` adds the digest to
files written before digests existed, but only to those that pass every other check.

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
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .validation import choice_or_env

__all__ = ["config_hash", "atomic_write_json", "read_json", "DEFAULT_RESULTS", "FORMAT",
           "CACHE_MODES", "CACHE_ENV", "cache_mode", "code_fingerprint", "jsonable",
           "load_result", "read_valid", "cached", "check_writable", "nan_for_null",
           "InvalidResult", "StaleResultWarning", "MissingResultError", "ResultsDirError",
           "DIGEST_KEY", "content_digest", "store_result", "certify_unstamped",
           "DeviceMismatchError", "ResultWriteError"]

# Version of what every stored result holds besides its numbers (the keys below, null for
# non-finite floats). Raise it when that changes: older files are then recomputed, never misread.
FORMAT = 1
_REQUIRED = ("format", "config", "code_fingerprint")
# The SHA-256 of a result's own content (`content_digest`), stored beside it and checked on read.
DIGEST_KEY = "content_sha256"
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


class ResultWriteError(OSError):
    """A result could not be written where it belongs; the message says where it was kept."""


class DeviceMismatchError(ValueError):
    """A result file named for one device (``-cpu.json``) holds a run computed on another."""


RESULTS_ENV = "ITERATION_ORDER_RESULTS"  # where results are cached, when not the repository's


def _default_results() -> Path:
    """$ITERATION_ORDER_RESULTS (so tests, nbval and other machines can cache elsewhere), else the
    repository's results/ folder whatever the working directory (a notebook runs from notebooks/),
    else ./results for a copy of the package installed outside the repository."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
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
    ``"book.lie_bracket"``): any change to their code changes it; comments, docstrings, blank lines
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
    A write that fails (a full disk, a folder gone read-only) raises `ResultWriteError` naming
    ``path`` and the reason, after keeping the text in a file of the system's temporary folder
    (else the home folder) whose path the message gives: hours of computation are not lost.
    """
    path = Path(path)
    payload = _strict(payload)
    try:
        _write_atomically(path, payload)
    except OSError as err:
        raise ResultWriteError(f"could not write {str(path)!r} "
                               f"({type(err).__name__}: {err.strerror or err}); "
                               f"{_keep_elsewhere(path, payload)}") from err
    return path


def _write_atomically(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keep_elsewhere(path: Path, payload: Any) -> str:
    """Store ``payload`` (the result ``path`` could not take) where it can be found again; say
    where."""
    tried = []
    for folder in (tempfile.gettempdir(), Path.home()):
        try:
            fd, kept = tempfile.mkstemp(prefix=f"iteration_order-unsaved-{path.stem}-",
                                        suffix=".json", dir=folder)
            with os.fdopen(fd, "w") as fh:
                json.dump(payload, fh, allow_nan=False)
            return (f"the result was kept at {kept!r}: once there is room, move it into place "
                    f"(mv {kept} {path}) and it is used like any stored result")
        except OSError as err:
            tried.append(f"{folder}: {err.strerror or err}")
    return f"it could not be kept elsewhere either ({'; '.join(tried)}): the result is lost"


def _canonical_json(payload: Any) -> str:
    return json.dumps(_strict(payload), sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True)


def content_digest(result: dict) -> str:
    """The SHA-256 of ``result``'s content: its canonical strict JSON (keys sorted, no spaces,
    non-finite floats as null) without the `DIGEST_KEY` entry. Equal for a result and the file it
    was read from; any change of a value, type or structure changes it."""
    body = {k: v for k, v in result.items() if k != DIGEST_KEY}
    return hashlib.sha256(_canonical_json(body).encode()).hexdigest()


def store_result(path: str | os.PathLike, result: dict) -> Path:
    """Write ``result`` atomically with its `content_digest` (any digest it carries is replaced):
    the only way results are written, so that every stored result can be checked on read."""
    body = {k: v for k, v in result.items() if k != DIGEST_KEY}
    return atomic_write_json(path, {**body, DIGEST_KEY: content_digest(body)})


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


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e999 parses as inf: not a number a result may hold
        raise ValueError(f"{token} is not a finite number")
    return value


def _differing(stored: Any, wanted: Any) -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        keys = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))

        def one(k) -> str:  # a key the file lacks: it was written before that field existed
            held = f"{stored[k]!r} stored" if k in stored else "not stored"
            return f"{k}: {held}, " + (f"{wanted[k]!r} wanted" if k in wanted else "not wanted")
        return ", ".join(one(k) for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
    return f"{stored!r} stored"


# During `certify_unstamped`: the files without a digest that passed every other check, and those
# that failed one (None otherwise: a file without a digest is invalid).
_UNSTAMPED: dict[str, set[Path]] | None = None

# A file named <anything>-<device>.json or <anything>-<device>.shard-<a>-<b>.json
_DEVICE_IN_NAME = re.compile(r"-(cpu|cuda)(?:\.shard-\d+-\d+)?\.json")


def load_result(path: str | os.PathLike, config: Any, fingerprint: str,
                check: Callable[[dict], None] | None = None) -> dict:
    """The result stored at ``path`` if it is valid for ``config`` (as `jsonable` gives it) and
    the code ``fingerprint``. Raises FileNotFoundError if there is no file, `InvalidResult` saying
    why otherwise; ``check(result)`` raises `InvalidResult` for a result of the wrong shape (any
    other exception it raises on a malformed result is turned into `InvalidResult` too).

    The checks, in order: the file reads as strict JSON (finite numbers, nesting within Python's
    recursion limit) holding an object; its `DIGEST_KEY` equals the digest of its content; format,
    config and fingerprint; the device its name gives is the one it records
    (`DeviceMismatchError`, not `InvalidResult`: a misplaced result is not recomputed over); the
    values of a trajectory's curves (`_check_curve_values`); ``check``. The result is returned
    without its digest."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no file there (a parent may be a file)
        raise FileNotFoundError(f"no result at {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidResult(f"cannot be read ({err})") from None
    if not text.strip():
        raise InvalidResult("is empty")
    try:
        result = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as err:
        raise InvalidResult(f"is not valid JSON ({err})") from None
    except RecursionError:
        raise InvalidResult("is JSON nested too deeply to be a result") from None
    if not isinstance(result, dict):
        raise InvalidResult(f"holds a JSON {type(result).__name__}, not an object")
    unstamped = DIGEST_KEY not in result
    try:
        if unstamped and _UNSTAMPED is None:
            raise InvalidResult(f"carries no content digest ({DIGEST_KEY}): written before "
                                f"results were checked by their content, or not by this package")
        if not unstamped and result[DIGEST_KEY] != content_digest(result):
            raise InvalidResult("does not match its content digest: it was edited or corrupted "
                                "after it was written")
        result = _checked(path, result, config, fingerprint, check)
    except RecursionError:
        if unstamped and _UNSTAMPED is not None:
            _UNSTAMPED["failed"].add(path.resolve())
        raise InvalidResult("is JSON nested too deeply to be a result") from None
    except InvalidResult:
        if unstamped and _UNSTAMPED is not None:
            _UNSTAMPED["failed"].add(path.resolve())
        raise
    if unstamped:
        _UNSTAMPED["passed"].add(path.resolve())
    return result


def _checked(path: Path, result: dict, config: Any, fingerprint: str,
             check: Callable[[dict], None] | None) -> dict:
    result = {k: v for k, v in result.items() if k != DIGEST_KEY}
    missing = [k for k in _REQUIRED if k not in result]
    if missing:
        raise InvalidResult(f"lacks {', '.join(missing)} (written by an older version, or not a "
                            f"result)")
    if result["format"] != FORMAT:
        raise InvalidResult(f"has format {result['format']!r}; this code reads {FORMAT}")
    # both reasons when both hold: a field added to the config also changes the code, and naming
    # only the config would hide that the code changed too
    reasons = []
    if result["config"] != config:
        reasons.append(f"holds the result of another config "
                       f"({_differing(result['config'], config)})")
    if result["code_fingerprint"] != fingerprint:
        reasons.append(f"was computed by other code (fingerprint "
                       f"{result['code_fingerprint']!r}, current code {fingerprint!r})")
    if reasons:
        raise InvalidResult(" and ".join(reasons))
    named = _DEVICE_IN_NAME.search(path.name)
    runtime = result.get("runtime")
    recorded = runtime.get("device") if isinstance(runtime, dict) else None
    if named and isinstance(recorded, str) and recorded.split(":")[0] != named.group(1):
        raise DeviceMismatchError(
            f"{path} is named as a {named.group(1)} result but holds a run computed on "
            f"{recorded.split(':')[0]!r} ({recorded!r}); a page shows the runs of one device: "
            f"remove the file or store it under its own device's name")
    _check_curve_values(result)
    if check is not None:
        try:
            check(result)
        except InvalidResult:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed result is invalid, whatever breaks
            raise InvalidResult(f"is malformed ({type(err).__name__}: {err})") from None
    return result


# A trajectory's curves (trajectory.CURVES): losses and displacements are numbers, null only at
# the step a run diverged at; accuracies are numbers, or null throughout for a regression task.
_LOSS_CURVES = ("train_loss", "test_loss", "displacement")
_ACCURACY_CURVES = ("train_acc", "test_acc")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_curve_values(result: dict) -> None:
    """Types and values of a trajectory's (or shard's) stored curves and schedule, which its
    shape check (``trajectory._check_curves``: lengths and steps) leaves unchecked. Only for a
    result holding ``recorded_steps``; lengths are the shape check's."""
    if "recorded_steps" not in result:
        return
    steps, diverged = result["recorded_steps"], result.get("diverged_at")
    if not isinstance(steps, list) or not all(isinstance(n, int) and not isinstance(n, bool)
                                              and n >= 0 for n in steps):
        raise InvalidResult("has recorded_steps that are not a list of step numbers")
    if diverged is not None and (not isinstance(diverged, int) or isinstance(diverged, bool)):
        raise InvalidResult(f"has diverged_at={diverged!r}, not a step number or null")
    for key in _LOSS_CURVES + _ACCURACY_CURVES:
        curve = result.get(key)
        if curve is None:
            continue  # absent: the shape check names it
        if not isinstance(curve, list):
            raise InvalidResult(f"has {key!r} of type {type(curve).__name__}, not a list")
        bad = next((i for i, v in enumerate(curve) if v is not None and not _is_number(v)), None)
        if bad is not None:
            raise InvalidResult(f"has {curve[bad]!r} at entry {bad} of {key!r}, not a number")
        nulls = [i for i, v in enumerate(curve) if v is None]
        if key in _ACCURACY_CURVES and len(nulls) == len(curve):
            continue  # a regression task has no accuracy
        if nulls and (diverged is None or nulls != [len(curve) - 1]):
            raise InvalidResult(
                f"has null at entry {nulls[0]} of {key!r}" + (
                    " but did not diverge" if diverged is None else
                    f", not only at its last step (it diverged at step {diverged})"))
        if key in _ACCURACY_CURVES and any(not 0 <= v <= 1 for v in curve if v is not None):
            raise InvalidResult(f"has an accuracy outside [0, 1] in {key!r}")
    if diverged is not None:
        # a run diverges at the first step whose train or test loss is not finite (stored null)
        last = [curve[-1] if isinstance(curve, list) and curve else None
                for curve in (result.get("train_loss"), result.get("test_loss"))]
        if None not in last:
            raise InvalidResult(f"has diverged_at={diverged} but finite losses at its last step")
    schedule, digest = result.get("schedule"), result.get("schedule_sha256")
    if isinstance(schedule, list) and digest is not None:
        try:
            actual = hashlib.sha256(np.asarray(schedule, dtype=np.int64).tobytes()).hexdigest()
        except (TypeError, ValueError, OverflowError) as err:
            raise InvalidResult(f"has a schedule that is not a table of indices ({err})") from None
        if actual != digest:
            raise InvalidResult("has a schedule that does not match its schedule_sha256")


@contextmanager
def _accepting_unstamped():
    global _UNSTAMPED
    previous, _UNSTAMPED = _UNSTAMPED, {"passed": set(), "failed": set()}
    try:
        yield _UNSTAMPED
    finally:
        _UNSTAMPED = previous


def certify_unstamped(read_all: Callable[[], Any]) -> tuple[list[Path], list[Path]]:
    """Add the content digest to the stored results written before digests existed, certifying
    nothing that is not already provable: ``read_all()`` reads results the way their users do
    (e.g. every page's loads, `verify.restamp_results`); meanwhile a file without a digest is
    read with every other check (config, fingerprint, curve values, the caller's check). Each
    file that passed every read and failed none is rewritten with its digest, its content
    otherwise unchanged. Returns (stamped, refused): refused files are left as they are, and
    stay invalid."""
    with _accepting_unstamped() as seen:
        read_all()
    stamped = []
    for path in sorted(seen["passed"] - seen["failed"]):
        result = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant,
                            parse_float=_finite_float)
        store_result(path, result)
        stamped.append(path)
    return stamped, sorted(seen["failed"])


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
    stamp_keys = stamp.keys() | {DIGEST_KEY}
    if stamp_keys & result.keys():
        raise ValueError(f"a computed result must not set {sorted(stamp_keys & result.keys())}; "
                         f"the cache stores them")
    store_result(path, {**stamp, **result})
    return {**load_result(path, config, fingerprint, check), "from_cache": False}
