"""Choosing benchmark entries (``python -m fastnorm bench``, bench/report.py, bench/scaling.py)."""

import subprocess
import sys

import pytest

from fastnorm import _bench


def test_select_names_and_passes():
    ops = _bench.select(["layer_norm"], ["fwd", "bwd"])
    assert [(op.name, op.kind) for op in ops] == [("layer_norm", "fwd"), ("layer_norm", "bwd")]
    assert all(op.default for op in _bench.select(None, None))


@pytest.mark.parametrize(
    ("names", "kinds", "match"),
    [
        (["layer_nrom"], None, "unknown op layer_nrom"),
        (None, ["backward"], "unknown pass backward"),
        (["batch_norm"], ["bwd"], r"batch_norm with pass bwd .*batch_norm: fwd, fwd\+bwd, eval"),
    ],
)
def test_select_refuses_what_selects_nothing(names, kinds, match):
    with pytest.raises(ValueError, match=match):
        _bench.select(names, kinds)


def test_bench_command_reports_an_empty_selection(tmp_path):
    """A pass the op does not have is an error with a message, not a crash or an empty
    run."""
    r = subprocess.run(
        [sys.executable, "-m", "fastnorm", "bench", "--ops", "group_norm", "--pass", "bwd"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2
    assert "group_norm with pass bwd" in r.stderr
    assert not list(tmp_path.iterdir())
