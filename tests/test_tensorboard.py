"""MetricWriter's event files, read back with TensorBoard's own reader (EventAccumulator)."""

import io
import math
import sys

import numpy as np
import pytest

from signs_jax import tensorboard
from signs_jax.tensorboard import MetricWriter


def read_events(run_dir):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    # 0: keep every event (the default keeps a sample of images)
    return event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def steps_and_values(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def decoded(image_event):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def test_scalars_read_back_with_their_tags_steps_and_values(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.scalars(1, {"loss": 2.5, "learning_rate": np.float32(0.125)}, prefix="train/")
        writer.scalars(2, {"loss": np.array(1.5), "learning_rate": 0.25}, prefix="train/")
        writer.scalars(2, {"epoch": 1, "val_accuracy": 0.75, "note": "text", "missing": None}, prefix="epoch/")

    events = read_events(tmp_path)
    assert sorted(events.Tags()["scalars"]) == [
        "epoch/epoch",
        "epoch/val_accuracy",
        "train/learning_rate",
        "train/loss",
    ]
    assert steps_and_values(events, "train/loss") == [(1, 2.5), (2, 1.5)]
    assert steps_and_values(events, "train/learning_rate") == [(1, 0.125), (2, 0.25)]
    assert steps_and_values(events, "epoch/epoch") == [(2, 1.0)]
    assert steps_and_values(events, "epoch/val_accuracy") == [(2, 0.75)]


def test_non_finite_scalars_are_logged_not_raised(tmp_path, caplog):
    with MetricWriter(tmp_path) as writer:
        writer.scalars(1, {"loss": float("nan"), "grad_norm": float("inf"), "floor": -np.inf})

    events = read_events(tmp_path)
    assert math.isnan(events.Scalars("loss")[0].value)
    assert events.Scalars("grad_norm")[0].value == math.inf
    assert events.Scalars("floor")[0].value == -math.inf
    assert not [r for r in caplog.records if "NaN or Inf" in r.getMessage()], "deliberate, so not warned about"


def test_hparams_are_in_the_run_itself_with_dotted_keys_and_dashboard_types(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    config = {
        "recipe": "default",
        "epochs": 3,
        "lr": 1e-3,
        "augment": True,
        "init_from": None,
        "model": {"width": 0.25, "stage_sizes": (1, 1, 1, 1), "classes": ["a", "b"]},
    }
    with MetricWriter(tmp_path) as writer:
        writer.hparams(config, {"test_accuracy": 0.9, "test_loss": float("nan"), "label": "x"}, step=40)

    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "no sub-run: the run's own row in the dashboard"
    events = read_events(tmp_path)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {
        key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for key, value in start.hparams.items()
    }
    assert values == {
        "recipe": "default",
        "epochs": 3.0,
        "lr": 1e-3,
        "augment": True,
        "init_from": "None",
        "model.width": 0.25,
        "model.stage_sizes": "(1, 1, 1, 1)",
        "model.classes": "['a', 'b']",
    }
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert sorted(m.name.tag for m in experiment.metric_infos) == ["hparams/test_accuracy", "hparams/test_loss"]
    assert steps_and_values(events, "hparams/test_accuracy") == [(40, pytest.approx(0.9))]
    assert math.isnan(events.Scalars("hparams/test_loss")[0].value)


def test_image_grid_holds_the_batch_sample_pixel_for_pixel(tmp_path):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    floats = np.full((1, 4, 6, 3), 0.5, np.float32)
    floats[0, 0, 0] = [np.nan, 2.0, -1.0]
    with MetricWriter(tmp_path) as writer:
        writer.image_grid("images/augmented_batch", 0, batch)
        writer.image_grid("images/floats", 3, floats)

    events = read_events(tmp_path)
    (sample,) = events.Images("images/augmented_batch")
    grid = decoded(sample)
    # 5 images -> 3 columns, 2 rows, 2 black pixels between them
    assert grid.shape == (2 * 4 + 2, 3 * 6 + 2 * 2, 3)
    assert np.array_equal(grid[0:4, 0:6], batch[0])
    assert np.array_equal(grid[0:4, 8:14], batch[1])
    assert np.array_equal(grid[6:10, 8:14], batch[4])
    assert not grid[4:6].any() and not grid[6:10, 16:22].any()
    (float_event,) = events.Images("images/floats")
    assert float_event.step == 3
    pixels = decoded(float_event)
    assert pixels[0, 0].tolist() == [0, 255, 0] and pixels[1, 1].tolist() == [128, 128, 128]


def test_confusion_matrix_picture_is_logged_even_with_nan_cells(tmp_path):
    counts = np.diag([20, 19, 20, 18, 20, 20])
    counts[3, 1] = 2
    normalised = counts / counts.sum(1, keepdims=True)
    normalised[0] = np.nan
    with MetricWriter(tmp_path) as writer:
        writer.confusion_matrix("images/confusion_matrix", 7, counts, ["0", "1", "2", "3", "4", "5"])
        writer.confusion_matrix("images/confusion_normalised", 7, normalised, ["0", "1", "2", "3", "4", "5"])

    events = read_events(tmp_path)
    for tag in ("images/confusion_matrix", "images/confusion_normalised"):
        (event,) = events.Images(tag)
        assert event.step == 7
        picture = decoded(event)
        assert picture.shape == (450, 500, 3)
        assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 10, "a drawing, not a blank picture"


def test_purge_step_hides_what_an_earlier_writer_logged_from_that_step_on(tmp_path, monkeypatch):
    # Both writers start in the same second: the second must neither overwrite the first's file nor be read
    # before it (event files are read in name order).
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.0)
    with MetricWriter(tmp_path) as writer:
        for step in range(1, 7):
            writer.scalars(step, {"loss": float(step), "lr": 0.1})
    with MetricWriter(tmp_path, purge_step=4) as writer:
        writer.scalars(4, {"loss": 40.0})

    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    events = read_events(tmp_path)
    assert steps_and_values(events, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    # not logged again after the rewind, and still cut at step 4
    assert steps_and_values(events, "lr") == [(step, pytest.approx(0.1)) for step in (1, 2, 3)]


def test_disabled_writer_writes_nothing(tmp_path, capfd):
    run_dir = tmp_path / "run"
    with MetricWriter(run_dir, enabled=False) as writer:
        writer.scalars(1, {"loss": 1.0})
        writer.hparams({"lr": 0.1}, {"test_accuracy": 1.0})
        assert not writer.active
    assert not run_dir.exists()
    assert capfd.readouterr().err == ""


def test_without_tensorboardx_nothing_is_written_and_the_reason_is_said_once(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX -> ImportError
    monkeypatch.setattr(tensorboard, "_said_missing", False)
    for name in ("first", "second"):
        with MetricWriter(tmp_path / name) as writer:
            assert not writer.active
            writer.scalars(1, {"loss": 1.0}, prefix="train/")
            writer.hparams({"lr": 0.1}, {"test_accuracy": 1.0})
            writer.image_grid("images/augmented_batch", 0, np.zeros((2, 4, 4, 3), np.uint8))
            writer.confusion_matrix("images/confusion_matrix", 0, np.eye(2), ["a", "b"])
            writer.flush()
    assert list(tmp_path.iterdir()) == []
    err = capfd.readouterr().err
    assert err.count("tensorboardX is not installed") == 1
