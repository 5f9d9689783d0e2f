"""--image-data: folders read in a stable order, labels from sub-folder names, the model's own preprocessing."""
from __future__ import annotations

import numpy as np
import pytest

from optkit.eval.image_data import list_images, prepare
from optkit.types.errors import UsageError
from tests.hf_models import COLOURS, vit_folder, write_images

pytest.importorskip("PIL")


def test_class_sub_folders_are_the_labels_in_sorted_order(tmp_path):
    paths, names = list_images(write_images(tmp_path / "img", per_class=2))
    assert names == sorted(names) and set(names) == set(COLOURS) and len(paths) == 6
    assert paths == sorted(paths)


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such folder"), ("empty", "holds no images"), ("mixed", "both images and class sub-folders"),
    ("empty_classes", "its sub-folders hold no images")])
def test_bad_folders_are_usage_errors(tmp_path, layout, message):
    root = tmp_path / "img"
    if layout != "missing":
        root.mkdir()
    if layout == "mixed":
        write_images(root, per_class=1)
        write_images(root, per_class=1, labels=False)
    if layout == "empty_classes":
        (root / "cat").mkdir()
    with pytest.raises(UsageError, match=message):
        list_images(root)


def test_prepare_splits_preprocessed_pixels_and_maps_label_names(tmp_path):
    model = vit_folder(tmp_path / "vit")
    made = prepare(write_images(tmp_path / "img", per_class=4), model, tmp_path / "out", channels=3,
                   label2id={"red": 0, "green": 1, "blue": 2})
    with np.load(made["eval"]) as ev, np.load(made["calib"]) as cal:
        assert ev["pixel_values"].shape == (6, 3, 32, 32) and cal["pixel_values"].shape == (6, 3, 32, 32)
        # sorted sub-folders: blue (2) first, then green (1); the eval half is blue x4 + green x2
        assert ev["labels"].tolist() == [2, 2, 2, 2, 1, 1]
        assert ev["pixel_values"].dtype == np.float32 and abs(float(ev["pixel_values"].mean())) < 1.0
    again = prepare(tmp_path / "img", model, tmp_path / "out", channels=3, label2id={"red": 0, "green": 1, "blue": 2})
    assert again["eval"] == made["eval"]  # same images, same digest: the file is reused, not rewritten


def test_a_class_name_the_model_does_not_know_is_refused(tmp_path):
    model = vit_folder(tmp_path / "vit")
    with pytest.raises(UsageError, match="'blue' is not a class id"):
        prepare(write_images(tmp_path / "img", per_class=1), model, tmp_path / "out", channels=3,
                label2id={"cat": 0})
