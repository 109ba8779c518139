"""Hostile inputs and faults: nothing the user has is overwritten, a failed start leaves no broken run,
every bad flag is one line (exit 2) before anything is written."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import KERAS_FILES, TINY, metrics_of, run_train, train_process
from signs_jax import evaluate, keras_h5, predict, train
from signs_jax.checkpoints import RunLock, newest_run
from signs_jax.config import MIN_IMAGE_SIDE, PACKAGED_DATA
from signs_jax.errors import UserError
from signs_jax.files import atomic_write, check_write_target
from signs_jax.rundir import RunDirectory

KERAS_MODEL = str(KERAS_FILES["keras2_model"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def normal_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------ A: nothing overwritten


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink"])
def test_predict_refuses_a_csv_that_is_an_input(photo, spelling, capsys):
    target = {"same": photo, "dotdot": photo.parent / "x" / ".." / photo.name, "symlink": photo.parent / "link.csv"}[
        spelling
    ]
    if spelling == "symlink":
        target.symlink_to(photo)
    before = photo.read_bytes()
    assert predict.main([str(photo), "--weights", KERAS_MODEL, "--csv", str(target)]) == 2
    assert "one of the inputs" in one_error_line(capsys)
    assert photo.read_bytes() == before


def test_predict_with_the_csv_name_left_out_does_not_overwrite_the_first_photo(photo, tmp_path, capsys):
    second = tmp_path / "second.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(second)
    before = photo.read_bytes()
    assert predict.main(["--csv", str(photo), str(second), "--weights", KERAS_MODEL]) == 2
    assert "left out" in one_error_line(capsys)
    assert photo.read_bytes() == before


def test_predict_refuses_an_image_with_another_name_and_other_non_text_files(photo, tmp_path, capsys):
    disguised = tmp_path / "results.csv"
    shutil.copy(photo, disguised)  # a JPEG, whatever its name says
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\x00\x01\x02binary")
    for target in (disguised, binary, tmp_path):
        before = target.read_bytes() if target.is_file() else None
        assert predict.main([str(photo), "--weights", KERAS_MODEL, "--csv", str(target)]) == 2
        line = one_error_line(capsys)
        assert str(target) in line and ("not a text file" in line or "directory" in line)
        if before is not None:
            assert target.read_bytes() == before


def test_predict_csv_in_a_missing_folder_is_one_line_before_any_work(photo, tmp_path, capsys):
    assert (
        predict.main(
            [str(photo), "--weights", str(tmp_path / "no_weights_here"), "--csv", str(tmp_path / "missing" / "r.csv")]
        )
        == 2
    )
    assert "does not exist" in one_error_line(capsys)  # the CSV is checked before the weights are looked for


def test_predict_replaces_an_old_csv_atomically_with_normal_permissions(photo, tmp_path, capsys):
    out = tmp_path / "photos" / "results.csv"  # inside the input folder: not an image, so never read as one
    out.parent.mkdir()
    for name in ("a.jpg", "b.jpg"):  # two photos: the 8-image batch the predict tests compiled
        shutil.copy(photo, out.parent / name)
    out.write_text("old,results\n")
    assert predict.main([str(out.parent), "--weights", KERAS_MODEL, "--csv", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].startswith("path,class") and len(rows) == 3 and rows[1].startswith(str(out.parent / "a.jpg"))
    assert out.stat().st_mode & 0o777 == normal_mode()
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.jpg", "b.jpg", "results.csv"]  # no temporary left


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "Result.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["Result.csv"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_permissions_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_a_read_only_place_is_one_line(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/signs_jax_results.csv")  # root may write anywhere else
        with pytest.raises(UserError, match="cannot write"):
            with atomic_write(target) as f:
                f.write("x")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(UserError, match="not writable"):
            check_write_target(tmp_path / "ro" / "r.csv", "--csv", "csv")


def test_keras_export_refuses_its_input_a_directory_and_a_photo_and_writes_normal_permissions(photo, tmp_path, capsys):
    source = tmp_path / "model.h5"
    shutil.copy(KERAS_MODEL, source)
    before = source.read_bytes()
    for target, reason in (
        (source, "one of the inputs"),
        (tmp_path, "directory"),
        (photo, "not an HDF5 file"),
        (tmp_path / "no" / "x.h5", "does not exist"),
    ):
        assert keras_h5.main([str(source), "--export", str(target)]) == 2
        assert reason in one_error_line(capsys)
    assert source.read_bytes() == before
    out = tmp_path / "exported.h5"
    assert keras_h5.main([str(source), "--export", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == normal_mode()
    assert keras_h5.main([str(source), "--export", str(out)]) == 0  # an earlier export is replaced


def test_evaluate_refuses_to_draw_over_a_photo(photo, tmp_path, capsys):
    before = photo.read_bytes()
    png = tmp_path / "confusion.png"
    shutil.copy(photo, png)
    for target, reason in ((photo, "ending in .png"), (png, "not a picture made by matplotlib")):
        assert evaluate.main(["--weights", KERAS_MODEL, "--confusion-png", str(target)]) == 2
        assert reason in one_error_line(capsys)
    assert photo.read_bytes() == before


# ------------------------------------------------------------------------------------ C: flags


BAD_TRAIN_FLAGS = {
    "lr-nan": (["--lr", "nan"], "--lr"),
    "lr-inf": (["--lr", "inf"], "--lr"),
    "lr-zero": (["--lr", "0"], "--lr"),
    "lr-negative": (["--lr=-1e-3"], "--lr"),
    "epochs-zero": (["--epochs", "0"], "--epochs"),
    "batch-zero": (["--batch-size", "0"], "--batch-size"),
    "batch-huge": (["--batch-size", str(10**12)], "--batch-size"),
    "eval-batch-zero": (["--eval-batch-size", "0"], "--eval-batch-size"),
    "width-zero": (["--width", "0"], "--width"),
    "width-nan": (["--width", "nan"], "--width"),
    "width-no-filter": (["--width", "0.001"], "--width"),
    "image-size-small": (["--image-size", "36", "64"], "--image-size"),
    "image-size-negative": (["--image-size", "-64", "64"], "--image-size"),
    "val-fraction-above-1": (["--val-fraction", "1.5"], "--val-fraction"),
    "val-fraction-1": (["--val-fraction", "1"], "--val-fraction"),
    "val-fraction-nan": (["--val-fraction", "nan"], "--val-fraction"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "seed-huge": (["--seed", str(2**70)], "--seed"),
    "stage-sizes": (["--stage-sizes", "1,1,1,100000"], "--stage-sizes"),
    "init-from-missing": (["--init-from", "missing.h5"], "missing.h5"),
    "run-path": (["--run", "../escape"], "--run"),
}


@pytest.mark.slow
@pytest.mark.parametrize("flags, named", BAD_TRAIN_FLAGS.values(), ids=BAD_TRAIN_FLAGS)
def test_bad_train_flags_are_one_line_before_anything_is_written(flags, named, small_signs, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert run_train("--data-dir", small_signs, "--workdir", workdir, *TINY, *flags) == 2
    assert named in one_error_line(capsys)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--batch-size", "1000"], "--batch-size"),
        # every class keeps one training image: 6 left, fewer than a batch of 16
        (["--val-fraction", "0.99"], "--batch-size 16: larger than the training set (6 images)"),
    ],
    ids=["batch", "val"],
)
@pytest.mark.slow
def test_flags_that_do_not_fit_the_data_leave_no_run(flags, named, small_signs, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert run_train("--data-dir", small_signs, "--workdir", workdir, "--run", "r", *TINY, *flags) == 2
    assert named in one_error_line(capsys)
    assert not (workdir / "r").exists()


def test_bad_predict_flags_are_one_line(photo, capsys):
    for flags, named in (
        (["--top-k", "0"], "--top-k"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "100000000"], "--batch-size"),
    ):
        assert predict.main([str(photo), "--weights", KERAS_MODEL, *flags]) == 2
        assert named in one_error_line(capsys)


def test_the_smallest_image_side_is_the_models():
    """MIN_IMAGE_SIDE (computed from the architecture) against the real model: the head sees a pixel at that size,
    none at one less."""
    import jax

    from signs_jax.models import ResNet50

    def head_inputs(side):
        model = ResNet50(6, width=1 / 64, stage_sizes=(1, 1, 1, 1), input_shape=(side, side, 3))
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, side, side, 3), np.float32)))
        return shapes["params"]["fc"]["kernel"].shape[0]

    assert head_inputs(MIN_IMAGE_SIDE) > 0
    try:
        assert head_inputs(MIN_IMAGE_SIDE - 1) == 0
    except (ValueError, TypeError, ZeroDivisionError):
        pass  # or the model refuses it outright


NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-0", "0x10", "", " 3", "1_000"]),
)


def _parse(parser, argv):
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's own refusal: its usage line and exit 2
        assert exit_.code == 2
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.fixed_dictionaries(
        {
            flag: NUMBERS
            for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--val-fraction", "--width", "--eval-batch-size")
        }
    ),
    image_size=st.one_of(st.none(), st.tuples(NUMBERS, NUMBERS)),
)
def test_any_numeric_train_flags_are_accepted_sane_or_refused_in_one_line(values, image_size, capsys):
    argv = [f"{flag}={value}" for flag, value in values.items()]
    if image_size:
        argv += ["--image-size", *map(str, image_size)]
    args = _parse(train.build_parser(), argv)
    if args is None:
        return
    try:
        config = train.config_from_args(args)
    except UserError as err:
        assert "\n" not in str(err)
        return
    recipe, run = config.recipe, config.run
    width = config.model.width  # None: the original's (resolved at the start)
    for value in (recipe.lr, recipe.val_fraction, width or 1.0):  # accepted: every value is one a run can use
        assert np.isfinite(value)
    assert recipe.lr > 0 and recipe.epochs >= 1 and recipe.batch_size >= 1
    assert run.eval_batch_size >= 1 and 0 <= recipe.val_fraction < 1 and 0 <= run.seed < 2**32
    assert width is None or (width > 0 and round(64 * width) >= 1)
    assert not config.data.image_size or min(config.data.image_size) >= MIN_IMAGE_SIDE
    np.random.default_rng([run.seed, 7])  # the seeds the run makes do not fail


@settings(max_examples=200, deadline=None)
@given(top_k=NUMBERS, batch_size=NUMBERS)
def test_any_numeric_predict_flags_are_accepted_sane_or_refused_in_one_line(top_k, batch_size):
    args = _parse(predict.build_parser(), ["x.jpg", f"--top-k={top_k}", f"--batch-size={batch_size}"])
    if args is None:
        return
    try:
        predict.validate_args(args)
    except UserError as err:
        assert "\n" not in str(err)
        return
    assert args.top_k >= 1 and 1 <= args.batch_size <= predict.MAX_BATCH_SIZE


# ------------------------------------------------------------------------------------ B: runs


def fake_run(workdir: Path, name: str, steps=(), mtime=None) -> Path:
    run = workdir / name
    (run / "ckpt").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for step in steps:
        (run / "ckpt" / str(step)).mkdir()
    if mtime:
        os.utime(run / "config.json", (mtime, mtime))
    return run


def test_newest_run_is_the_newest_with_a_checkpoint(tmp_path):
    old = fake_run(tmp_path, "old", steps=[10], mtime=time.time() - 100)
    fake_run(tmp_path, "failed-start")  # newer, no checkpoint
    (tmp_path / "failed-start" / "ckpt" / "10.orbax-checkpoint-tmp-1").mkdir()  # killed mid-save
    assert newest_run(tmp_path) == old


def test_predict_names_incomplete_runs_when_there_is_no_other(photo, tmp_path, capsys):
    fake_run(tmp_path, "failed-start")
    assert predict.main([str(photo), "--workdir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "failed-start has no checkpoint yet" in line and "--weights" in line


def test_default_run_names_started_in_the_same_second_differ(tmp_path, monkeypatch):
    places = [RunDirectory(tmp_path, None) for _ in range(3)]
    try:
        for place in places:
            place.prepare_new("default-seed0-20250101-000000")  # three starts in the same second
            place.create()
        assert len({p.path for p in places}) == 3 and all(p.path.is_dir() for p in places)
    finally:
        for place in places:
            place.release()


@pytest.mark.slow
def test_a_locked_run_cannot_be_trained_twice(tmp_path, small_signs, capsys):
    run = fake_run(tmp_path, "busy")
    lock = RunLock(run).acquire()
    try:
        for flags in (["--resume", "--run", "busy"], ["--run", "busy", "--data-dir", str(small_signs), *TINY]):
            assert run_train("--workdir", tmp_path, *flags) == 2
            assert "another train process" in one_error_line(capsys)
    finally:
        lock.release()
    assert run.is_dir()


@pytest.mark.slow
def test_a_foreign_folder_is_not_taken_as_a_run(tmp_path, small_signs, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert run_train("--workdir", tmp_path, "--run", "mine", "--data-dir", small_signs, *TINY) == 2
    assert "not a training run" in one_error_line(capsys)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_a_failed_start_removes_only_what_it_made(small_signs, tmp_path, capsys):
    other = fake_run(tmp_path, "other", steps=[3])
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert run_train("--data-dir", small_signs, "--workdir", tmp_path, "--run", "tl", "--init-from", bad, *TINY) == 2
    one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "other"]
    assert (other / "ckpt" / "3").is_dir()


@pytest.mark.slow
def test_nan_loss_before_any_checkpoint_says_so_and_leaves_no_run(small_signs, tmp_path, capsys):
    code = run_train(
        "--data-dir", small_signs, "--workdir", tmp_path, "--run", "nan", "--epochs", 1, "--lr", "1e30", *TINY
    )
    assert code == 2
    line = one_error_line(capsys)
    assert "loss became" in line and "no checkpoint had been saved" in line and "last good checkpoint" not in line
    assert not (tmp_path / "nan").exists()


@pytest.fixture(scope="module")
def finished_run(small_signs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    assert run_train("--data-dir", small_signs, "--workdir", workdir, "--run", "done", "--epochs", 2, *TINY) == 0
    return workdir / "done"


def snapshot(run_dir: Path):
    return {p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_result_files_have_normal_permissions(finished_run):
    for name in ("config.json", "Result.csv", "curves.png", "metrics.jsonl"):
        assert (finished_run / name).stat().st_mode & 0o777 == normal_mode(), name


@pytest.mark.slow
def test_resume_with_fewer_epochs_or_another_data_dir_is_one_line_and_rewrites_nothing(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    workdir = finished_run.parent
    assert run_train("--workdir", workdir, "--resume", "--run", "done", "--epochs", 1) == 2
    assert "--epochs 1" in one_error_line(capsys)
    assert run_train("--workdir", workdir, "--resume", "--run", "done", "--epochs", 3, "--data-dir", tmp_path) == 2
    assert "--data-dir" in one_error_line(capsys)
    flags = ["--lr", "0.01", "--set", "recipe.weight_decay=0.5", "--width", "0.0625", "--seed", "0"]
    assert run_train("--workdir", workdir, "--resume", "--run", "done", *flags) == 2
    line = one_error_line(capsys)  # each key that would change the experiment, none that would not
    assert "--lr (0.002 in the run, 0.01 given), --set recipe.weight_decay (0.05 in the run, 0.5 given)" in line
    assert "--width" not in line and "--seed" not in line
    assert run_train("--workdir", workdir, "--resume", "--run", "done") == 0
    assert "nothing to do" in capsys.readouterr().out
    after = snapshot(finished_run)
    after.pop(Path("train.lock"), None), before.pop(Path("train.lock"), None)
    assert after == before


@pytest.mark.slow
def test_more_epochs_on_resume_are_trained_and_recorded(finished_run, tmp_path):
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    assert run_train("--workdir", tmp_path, "--resume", "--run", "done", "--epochs", 3, "--no-progress") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["epochs"] == 3 and config["run"]["epochs_extended_from"] == [2]
    assert [r["epoch"] for r in metrics_of(run)] == [1, 2, 3]


@pytest.mark.slow
def test_a_run_on_the_packaged_data_resumes_only_on_it(finished_run, small_signs, tmp_path, capsys):
    run = tmp_path / "packaged"
    shutil.copytree(finished_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["dir"] = PACKAGED_DATA  # what a run started without --data-dir records
    (run / "config.json").write_text(json.dumps(cfg))
    assert (
        run_train("--workdir", tmp_path, "--resume", "--run", "packaged", "--epochs", 3, "--data-dir", small_signs) == 2
    )
    line = one_error_line(capsys)
    assert f"--data-dir ({PACKAGED_DATA} in the run, {small_signs} given)" in line


@pytest.mark.slow
def test_resume_skips_a_metrics_line_cut_by_a_crash(finished_run, tmp_path):
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    assert run_train("--workdir", tmp_path, "--resume", "--run", "done", "--epochs", 3, "--no-progress") == 0
    assert [r["epoch"] for r in metrics_of(run)] == [1, 2, 3]


@pytest.mark.slow
def test_a_run_killed_in_its_first_save_is_not_picked_and_can_be_started_again(finished_run, tmp_path, photo, capsys):
    """The state a kill -9 during the first save leaves: config and metrics written, the step still orbax's
    temporary directory."""
    complete = tmp_path / "complete"
    shutil.copytree(finished_run, complete)
    os.utime(complete / "config.json", (time.time() - 100,) * 2)
    killed = tmp_path / "killed"
    shutil.copytree(finished_run, killed)
    for name in ("Result.csv", "curves.png"):
        (killed / name).unlink()
    steps = sorted((p for p in (killed / "ckpt").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for step in steps[1:]:
        shutil.rmtree(step)
    steps[0].rename(killed / "ckpt" / f"{steps[0].name}.orbax-checkpoint-tmp-1")
    assert predict.main([str(photo), "--workdir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(photo)
    from signs_jax.weights import load_weights

    assert load_weights(None, str(tmp_path)).run_dir == complete
    assert run_train("--workdir", tmp_path, "--resume", "--run", "killed", "--epochs", 1, "--no-progress") == 0
    assert "starting it from the beginning" in capsys.readouterr().out
    assert [r["epoch"] for r in metrics_of(killed)] == [1]


# ------------------------------------------------------------------------------------ real processes


def wait_for(path: Path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.slow
def test_ctrl_c_before_the_first_step_leaves_no_run(small_signs, tmp_path):
    proc = train_process(["--data-dir", small_signs, "--workdir", tmp_path, "--run", "cut", "--epochs", 1, *TINY])
    wait_for(tmp_path / "cut" / "config.json", proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert not (tmp_path / "cut").exists()


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_leaves_a_run_that_starts_again(small_signs, tmp_path, photo, capsys):
    proc = train_process(["--data-dir", small_signs, "--workdir", tmp_path, "--run", "killed", "--epochs", 1, *TINY])
    wait_for(tmp_path / "killed" / "config.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert predict.main([str(photo), "--workdir", str(tmp_path)]) == 2
    assert "killed has no checkpoint yet" in one_error_line(capsys)
    assert run_train("--data-dir", small_signs, "--workdir", tmp_path, "--run", "killed", "--epochs", 1, *TINY) == 0
    assert [r["epoch"] for r in metrics_of(tmp_path / "killed")] == [1]
