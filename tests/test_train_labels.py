"""Zoo training refuses labels outside the model's classes before any epoch, with evaluation's one-line error
(the column, the value, its row), and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

NUM_CLASSES = 10
LABEL_ERROR_HINT = "pass the right column with --label-column, or a dataset with the model's classes"
#: What the trainer's check says to do: training is configured by the zoo config, not by command-line options.
TRAIN_HINT = ("set data.label_column in the zoo config to the label column, or data.num_classes to the dataset's "
              "number of classes")


def _write_split(path: Path, labels: list[int], seed: int) -> None:
    """A parquet split of 32x32 PNG images with plain int64 labels (a ClassLabel could not hold -100 or 12)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(a) for a in rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)]
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"img": images, "fine_label": labels}, features=features).to_parquet(str(path))


def _zoo(root: Path, train: list[int], test: list[int]) -> Path:
    data = root / "data"
    (data / "data").mkdir(parents=True)
    _write_split(data / "data" / "train-00000-of-00001.parquet", train, seed=1)
    _write_split(data / "data" / "test-00000-of-00001.parquet", test, seed=2)
    cfg = {"data": {"dataset": str(data), "num_classes": NUM_CLASSES},
           "optim": {"t_max": 1},
           "train": {"architecture": "resnet10_cifar_nano", "epochs": 1, "batch_size": 16, "checkpoint_interval": 1,
                     "eval_batch_size": 64},
           "branches": {"epochs": [1], "max_epochs": 1, "patience": 1}}
    path = root / "zoo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _good_labels(n: int) -> list[int]:
    return [i % NUM_CLASSES for i in range(n)]


def _train(capsys, config: Path, out: Path) -> tuple[int, str]:
    from hfsoup.cli.train import main

    capsys.readouterr()
    code = main(["trunk", "--config", str(config), "--out", str(out), "--cpu", "-q"])
    return code, capsys.readouterr().err


def test_a_label_past_num_classes_fails_before_training_with_the_row(tmp_path, capsys):
    test = _good_labels(16)
    test[5] = 12  # one past the model's 10 classes, in the test split (evaluated after each checkpoint)
    config = _zoo(tmp_path, _good_labels(40), test)
    out = tmp_path / "runs" / "zoo"
    code, err = _train(capsys, config, out)
    data = tmp_path / "data"
    assert code == 2
    assert err == (f"hfsoup: error: label column 'fine_label' of '{data}' [test] holds 12 at row 5: outside the "
                   f"model's 10 classes [0, 10): {TRAIN_HINT}\n")
    assert not out.exists()  # no epoch ran, nothing written (not even zoo.yaml)


NEGATIVE = ("a negative label (-100 and -1 mark unlabelled rows; cross-entropy would skip -100 silently)")


@pytest.mark.parametrize("value, why, hint", [(NUM_CLASSES, "outside the model's 10 classes [0, 10)", TRAIN_HINT),
                                             (-100, NEGATIVE, LABEL_ERROR_HINT)])
def test_a_bad_training_label_fails_before_training_with_its_row_in_the_split(tmp_path, capsys, value, why, hint):
    """A label past the classes in the split trained on (training would fail in the first batch that holds it,
    with torch's IndexError), or a negative one (refused when the data is loaded)."""
    from hfsoup.data.images import heldout_indices

    # the row is counted in the split trained on (train-main: 95 % of train, carved with seed 42), as evaluation
    # counts it: put the bad label on train-main's row 3
    main_rows, _ = heldout_indices(40)
    train = _good_labels(40)
    train[main_rows[3]] = value
    config = _zoo(tmp_path, train, _good_labels(16))
    out = tmp_path / "runs" / "zoo"
    code, err = _train(capsys, config, out)
    assert code == 2 and not out.exists()
    assert err == (f"hfsoup: error: label column 'fine_label' of '{tmp_path / 'data'}' [train-main] holds {value} at "
                   f"row 3: {why}: {hint}\n")


def test_the_trainer_raises_the_dataset_error_of_evaluation(tmp_path):
    from hfsoup.errors import DatasetError
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_trunk

    test = _good_labels(16)
    test[0] = NUM_CLASSES
    config = _zoo(tmp_path, _good_labels(40), test)
    with pytest.raises(DatasetError) as e:
        train_trunk(load_config(config), tmp_path / "zoo", cpu=True, progress=False)
    assert (e.value.column, e.value.split) == ("fine_label", "test")
    assert "holds 10 at row 0: outside the model's 10 classes [0, 10)" in str(e.value)
    assert not (tmp_path / "zoo").exists()


def test_labels_in_range_train(tmp_path):
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_trunk

    config = _zoo(tmp_path, _good_labels(40), [NUM_CLASSES - 1] * 16)  # the last class is a class
    res = train_trunk(load_config(config), tmp_path / "zoo", cpu=True, progress=False)
    assert res.epoch == 1 and (tmp_path / "zoo" / "trunk" / "e001" / "model.safetensors").is_file()
