"""A stored result is checked by its content (issue 21, item 1).

Every result carries the digest of its own content; any corruption of the file (bytes, values,
types, structure) makes a read either the original result or one warned recompute, never a wrong
result served; a file without a digest is invalid; a result named for one device that holds a run
of another is refused; a write that fails names the file and keeps the result where it says;
`certify_unstamped` stamps only files that pass every other check.
"""
import errno
import json
import math
import shutil
import tempfile
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iteration_order.cache as cache
from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.cache import (DeviceMismatchError, MissingResultError, ResultWriteError,
                                   StaleResultWarning)
from iteration_order.trajectory import CURVES, result_path, stored_trajectory

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, lr=0.01, steps=6,
                        order="backward", record="every:2")
# what a recomputation reproduces (the wall time and the like are the machine's)
SCIENCE = ("config", "code_fingerprint", "recorded_steps", *CURVES, "diverged_at", "schedule",
           "schedule_sha256", "applications", "engine")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


def _restamped(path, change):
    result = json.loads(path.read_text())
    change(result)
    result[cache.DIGEST_KEY] = cache.content_digest(result)
    path.write_text(json.dumps(result))


def test_every_stored_result_carries_the_digest_of_its_content(tmp_path):
    run_trajectory(TINY, runtime(tmp_path))
    stored = json.loads(result_path(TINY, runtime(tmp_path)).read_text())
    assert stored[cache.DIGEST_KEY] == cache.content_digest(stored)
    assert cache.DIGEST_KEY not in run_trajectory(TINY, runtime(tmp_path))  # a storage detail


def test_a_result_named_for_one_device_holding_another_is_refused_by_run_trajectory(tmp_path):
    run_trajectory(TINY, runtime(tmp_path))
    path = result_path(TINY, runtime(tmp_path))
    _restamped(path, lambda r: r["runtime"].update(device="cuda:0"))
    for mode in ("use", "only"):
        with pytest.raises(DeviceMismatchError, match=f"{path} is named as a cpu result but holds "
                                                      f"a run computed on 'cuda'"):
            run_trajectory(TINY, runtime(tmp_path, cache=mode))
    assert json.loads(path.read_text())["runtime"]["device"] == "cuda:0"  # not overwritten


def test_a_failed_write_names_the_file_and_keeps_the_result(tmp_path, monkeypatch):
    keep = tmp_path / "kept"
    keep.mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(keep))

    def full_disk(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache, "_write_atomically", full_disk)
    path = result_path(TINY, runtime(tmp_path))
    with pytest.raises(ResultWriteError, match="No space left on device") as caught:
        run_trajectory(TINY, runtime(tmp_path))
    message = str(caught.value)
    assert str(path) in message and "kept at" in message
    [kept] = keep.glob("iteration_order-unsaved-*.json")
    assert str(kept) in message
    monkeypatch.undo()
    shutil.move(kept, path)  # what the message says to do once there is room
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_trajectory(TINY, runtime(tmp_path))["from_cache"]


def test_a_failed_write_with_nowhere_to_keep_the_result_says_so(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache, "_write_atomically", fails)
    monkeypatch.setattr(tempfile, "mkstemp", fails)
    with pytest.raises(ResultWriteError, match="could not be kept elsewhere either"):
        cache.store_result(tmp_path / "x-cpu.json", {"a": 1})


def test_certify_unstamped_stamps_only_what_passes_every_other_check(tmp_path):
    good, stale = TINY, TINY.replace(seed=1)
    for config in (good, stale):
        run_trajectory(config, runtime(tmp_path))
    paths = {c: result_path(c, runtime(tmp_path)) for c in (good, stale)}

    def unstamp(result):
        result.pop(cache.DIGEST_KEY)
    for config, path in paths.items():
        result = json.loads(path.read_text())
        unstamp(result)
        if config is stale:
            result["code_fingerprint"] = "0123456789abcdef"
        path.write_text(json.dumps(result))
    before = {c: p.read_text() for c, p in paths.items()}

    def read_all():
        for config in (good, stale):
            try:
                stored_trajectory(config, runtime(tmp_path, cache="only"))
            except MissingResultError:
                pass
    stamped, refused = cache.certify_unstamped(read_all)
    assert stamped == [paths[good].resolve()] and refused == [paths[stale].resolve()]
    assert paths[stale].read_text() == before[stale]
    # the stamp adds the digest and changes nothing else
    assert json.loads(paths[good].read_text()) == {
        **json.loads(before[good]), cache.DIGEST_KEY: cache.content_digest(
            json.loads(before[good]))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stored_trajectory(good, runtime(tmp_path, cache="only"))["from_cache"]
    with pytest.raises(MissingResultError, match="carries no content digest"):
        stored_trajectory(stale, runtime(tmp_path, cache="only"))


# ------------------------------------------------------------------------------------------------
# Random corruption: each read is the original result or one warned recompute
# ------------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


def _corrupt_structure(data, result):
    """One change at a random place of the parsed result: a value replaced (by one of any type, or
    a number nudged), removed, or a key or item added."""
    path = data.draw(st.sampled_from(list(_paths(result))))
    kind = data.draw(st.sampled_from(["replace", "nudge", "remove", "add"]))
    if not path:
        return data.draw(_JSON) if kind == "replace" else result
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    last, node = path[-1], parent[path[-1]]
    if kind == "replace":
        parent[last] = data.draw(_JSON)
    elif kind == "nudge" and isinstance(node, (int, float)) and not isinstance(node, bool):
        parent[last] = math.nextafter(float(node), math.inf) if isinstance(node, float) \
            else node + data.draw(st.sampled_from([-1, 1]))
    elif kind == "remove":
        del parent[last]
    elif isinstance(node, dict):
        node[data.draw(st.text(max_size=6))] = data.draw(_JSON)
    elif isinstance(node, list):
        node.insert(data.draw(st.integers(0, len(node))), data.draw(_JSON))
    return result


def _corrupt_bytes(data, raw: bytes) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        return raw[:i] + bytes([raw[i] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[i + 1:]
    if kind == "delete":
        return raw[:i] + raw[i + data.draw(st.integers(1, 64)):]
    if kind == "insert":
        return raw[:i] + data.draw(st.binary(min_size=1, max_size=16)) + raw[i:]
    return raw[:i]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    original = run_trajectory(TINY, runtime(folder))
    return folder, result_path(TINY, runtime(folder)).read_bytes(), original


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_randomly_corrupted_result_is_the_original_or_a_warned_recompute(stored, data):
    folder, raw, original = stored
    with tempfile.TemporaryDirectory() as where:
        path = result_path(TINY, runtime(where))
        if data.draw(st.booleans(), label="bytes"):
            path.write_bytes(_corrupt_bytes(data, raw))
        else:
            path.write_text(json.dumps(_corrupt_structure(data, json.loads(raw))))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = run_trajectory(TINY, runtime(where))
        stale = [w for w in caught if issubclass(w.category, StaleResultWarning)]
        if again["from_cache"]:
            assert not stale
            assert {k: v for k, v in again.items() if k != "from_cache"} == \
                {k: v for k, v in original.items() if k != "from_cache"}
        else:
            assert len(stale) == 1 and str(path) in str(stale[0].message)
            assert {k: again[k] for k in SCIENCE} == {k: original[k] for k in SCIENCE}
        # and the file now holds a valid result
        assert stored_trajectory(TINY, runtime(where, cache="only"))["from_cache"]
