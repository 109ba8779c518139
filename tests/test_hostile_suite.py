"""The rules scripts/hostile_suite.py judges each case by: each one catches what it is meant to."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import hostile_suite  # noqa: E402

REFUSAL = hostile_suite.Case("refusal", "flags", "predict", [], fails=True)
SUCCESS = hostile_suite.Case("success", "flags", "predict", [], fails=False, outputs=["out/*"])
FILES = {"photo.jpg": "a", "out/x.csv": "b"}


def judged(case, rc=2, out="", err="error: --lr nan: must be finite", after=FILES, runs=()):
    return hostile_suite.judge(case, rc, out, err, FILES, after, list(runs), Path("."))


def test_a_clean_refusal_and_a_clean_success_break_no_rule():
    assert judged(REFUSAL) == []
    assert judged(SUCCESS, rc=0, err="", out='{"class": "1", "p": 0.5}') == []


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        ({"rc": 0}, "exit status 0"),
        ({"err": "Traceback (most recent call last):\n  ...\nValueError: x\nerror: x"}, "traceback"),
        ({"err": "ValueError: x"}, "no error: line"),
        ({"err": "\n".join(["warning: w"] * 4 + ["error: e"])}, "lines on stderr"),
        ({"after": {"photo.jpg": "changed", "out/x.csv": "b"}}, "changed or lost: photo.jpg"),
        ({"after": {"out/x.csv": "b"}}, "changed or lost: photo.jpg"),
    ],
)
def test_each_way_of_mishandling_a_refusal_is_caught(kwargs, rule):
    assert any(rule in broken for broken in judged(REFUSAL, **kwargs))


def test_a_success_may_replace_its_outputs_but_must_print_strict_json():
    assert judged(SUCCESS, rc=0, err="", after={"photo.jpg": "a", "out/x.csv": "new"}) == []
    assert any("invalid JSON" in b for b in judged(SUCCESS, rc=0, err="", out='{"p": NaN}'))
    assert any("exit status 1" in b for b in judged(SUCCESS, rc=1, err="error: x"))


def test_a_failed_train_that_leaves_a_run_is_caught():
    case = hostile_suite.Case("train", "flags", "train", [], fails=True, no_run_left=True)
    assert any("left a run" in b for b in judged(case, runs=["default-seed0-x"]))


def test_a_bad_photo_among_good_ones_must_get_no_class_be_named_and_not_stop_the_others():
    check = hostile_suite.only_the_bad_photo_refused("bad.jpg", good=2)
    good = '{"path": "a.jpg", "class": "1"}\n{"path": "b.jpg", "class": "2"}\n'
    assert check(None, good, "error: bad.jpg: not an image") is None
    assert "got a class" in check(None, good + '{"path": "bad.jpg", "class": "5"}', "error: bad.jpg: x")
    assert "does not name" in check(None, good, "error: something")
    assert "1 of the 2" in check(None, '{"path": "a.jpg", "class": "1"}', "error: bad.jpg: x")
