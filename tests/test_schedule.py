import dataclasses
import itertools

import pytest

from multiscale_transformer.training.schedule import Schedule, lr_at, wsd_lr_at


def test_wsd_is_warmup_then_flat_then_a_linear_decay() -> None:
    lr = [wsd_lr_at(s, 1.0, 10, 100, 0.1, 0.5) for s in range(0, 101)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(v == 1.0 for v in lr[10:51])  # flat until the last half of the run starts
    assert lr[75] == pytest.approx(1 - 0.9 * 25 / 50)  # halfway down the linear ramp
    assert lr[100] == pytest.approx(0.1) and wsd_lr_at(500, 1.0, 10, 100) == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lr[10:]))
    # Equal steps down: linear, not cosine-shaped.
    steps = [a - b for a, b in itertools.pairwise(lr[50:101])]
    assert max(steps) == pytest.approx(min(steps))


def test_wsd_decay_never_starts_inside_the_warmup() -> None:
    lr = [wsd_lr_at(s, 1.0, 10, 12, 0.0, 0.5) for s in range(13)]
    assert lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)  # the peak is reached first
    assert lr[11] == pytest.approx(0.5) and lr[12] == 0.0


def test_schedule_dispatches_on_kind_and_old_checkpoints_stay_cosine() -> None:
    cosine = Schedule(2.0, 5, 50, 0.1)
    assert cosine.kind == "cosine"
    assert [cosine.lr_at(s) for s in range(60)] == [lr_at(s, 2.0, 5, 50, 0.1) for s in range(60)]
    wsd = dataclasses.replace(cosine, kind="wsd", decay_fraction=0.3)
    assert [wsd.lr_at(s) for s in range(60)] == [wsd_lr_at(s, 2.0, 5, 50, 0.1, 0.3) for s in range(60)]
    # A checkpoint stores asdict(schedule); one written before `kind` existed resumes as a cosine.
    assert Schedule(**{"lr": 2.0, "warmup": 5, "total": 50, "min_ratio": 0.1}) == cosine
    assert Schedule(**dataclasses.asdict(wsd)) == wsd
    with pytest.raises(ValueError, match="unknown schedule kind"):
        Schedule(1.0, 1, 10, kind="linear")
    with pytest.raises(ValueError, match="decay_fraction"):
        Schedule(1.0, 1, 10, kind="wsd", decay_fraction=0.0)
