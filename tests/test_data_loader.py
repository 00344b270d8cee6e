"""The loader: batch layout, determinism across workers, rank sharding, resume, eval batches."""
import numpy as np
import pytest

from slim.data import YoloEvalFeed, YoloTestFeed, YoloTrainFeed
from slim.data.demo import generate_demo_dataset
from slim.data.loader import (
    build_eval_loader,
    build_test_loader,
    build_train_loader,
    dataset_size,
    image_paths,
    shard_bounds,
)
from slim.errors import DataError


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return generate_demo_dataset(str(tmp_path_factory.mktemp("data") / "demo"), num_train=21, num_test=5,
                                 seed=1)


def train_feed(demo_dir, **options):
    settings = dict(dataset={"dataset_dir": demo_dir, "annotation": "train.txt", "use_default_label": False},
                    batch_size=4, num_workers=0, multi_scale_sizes=[64, 96, 128], mixup_epoch=1)
    settings.update(options)
    return YoloTrainFeed(**settings)


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for batch_a, batch_b in zip(first, second):
        assert batch_a.keys() == batch_b.keys()
        for key in batch_a:
            np.testing.assert_array_equal(batch_a[key], batch_b[key], err_msg=key)


def test_train_batch_layout(demo_dir):
    loader = build_train_loader(train_feed(demo_dir), seed=0)
    assert loader.num_samples == 21 and loader.batches_per_epoch == 5 and len(loader) == 5
    batches = list(loader.batches(0, 6))
    assert len(batches) == 6
    sizes = set()
    for batch in batches:
        size = batch["image"].shape[-1]
        sizes.add(size)
        assert batch["image"].shape == (4, 3, size, size) and batch["image"].dtype == np.float32
        assert batch["gt_box"].shape == (4, 50, 4) and batch["gt_box"].dtype == np.float32
        assert batch["gt_label"].shape == (4, 50) and batch["gt_label"].dtype == np.int32
        assert batch["gt_score"].shape == (4, 50) and batch["gt_score"].dtype == np.float32
        assert batch["im_id"].shape == (4,) and batch["im_id"].dtype == np.int64
        real = batch["gt_score"] > 0
        assert real.any(axis=1).all(), "every training image keeps at least one box"
        assert (batch["gt_box"][real] >= 0).all() and (batch["gt_box"][real] <= 1).all()
        assert (batch["gt_box"][~real] == 0).all() and (batch["gt_label"][~real] == 0).all()
        assert (batch["gt_label"][real] < 5).all()
    assert sizes <= {64, 96, 128} and len(sizes) >= 2
    # Epoch 0 < mixup_epoch: mixed samples carry weights in (0, 1); epoch 1 has plain scores of 1.
    epoch0_scores = np.concatenate([b["gt_score"][b["gt_score"] > 0] for b in batches[:5]])
    assert ((epoch0_scores > 0) & (epoch0_scores < 1)).any()
    epoch1_scores = batches[5]["gt_score"][batches[5]["gt_score"] > 0]
    assert (epoch1_scores == 1).all()


def test_same_seed_same_batches_for_any_worker_count(demo_dir):
    reference = list(build_train_loader(train_feed(demo_dir), seed=7).batches(0, 3))
    processes = list(build_train_loader(train_feed(demo_dir, num_workers=2), seed=7).batches(0, 3))
    threads = list(build_train_loader(train_feed(demo_dir, num_workers=2, use_process=False),
                                      seed=7).batches(0, 3))
    assert_batches_equal(reference, processes)
    assert_batches_equal(reference, threads)
    other_seed = list(build_train_loader(train_feed(demo_dir), seed=8).batches(0, 1))
    assert not np.array_equal(reference[0]["image"], other_seed[0]["image"]) or \
        reference[0]["image"].shape != other_seed[0]["image"].shape


def test_epochs_reshuffle_and_shuffle_false_keeps_order(demo_dir):
    loader = build_train_loader(train_feed(demo_dir), seed=0)
    order0, order1 = loader.epoch_order(0), loader.epoch_order(1)
    assert sorted(order0) == list(range(21)) and not np.array_equal(order0, order1)
    fixed = build_train_loader(train_feed(demo_dir, shuffle=False), seed=0)
    ids = [key[2] for keys in fixed.epoch_keys(0) for key in keys]
    assert ids == list(range(20))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_shards_are_disjoint_and_complete(demo_dir, world_size):
    for epoch in (0, 1):
        shards = []
        for rank in range(world_size):
            loader = build_train_loader(train_feed(demo_dir, drop_last=False), rank=rank,
                                        world_size=world_size, seed=3)
            shards.append([key[2] for keys in loader.epoch_keys(epoch) for key in keys])
        flat = [index for shard in shards for index in shard]
        assert len(flat) == len(set(flat)), "ranks overlap"
        assert sorted(flat) == list(range(21)), "ranks miss samples"
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # With drop_last every rank runs the same number of full batches, still disjoint.
    loaders = [build_train_loader(train_feed(demo_dir), rank=rank, world_size=world_size, seed=3)
               for rank in range(world_size)]
    counts = {loader.batches_per_epoch for loader in loaders}
    assert counts == {(21 // world_size) // 4}
    ids = [key[2] for loader in loaders for keys in loader.epoch_keys(0) for key in keys]
    assert len(ids) == len(set(ids))
    assert all(len(keys) == 4 for loader in loaders for keys in loader.epoch_keys(0))


def test_rank_batches_hold_their_shard_images(demo_dir):
    ids = []
    for rank in range(2):
        loader = build_train_loader(train_feed(demo_dir, drop_last=False, mixup_epoch=0, batch_size=8),
                                    rank=rank, world_size=2, seed=5)
        ids += [int(i) for batch in loader.epoch(0) for i in batch["im_id"]]
    assert sorted(ids) == list(range(21))
    # Same batch index, same input size on every rank (sizes do not depend on the rank).
    a = build_train_loader(train_feed(demo_dir), rank=0, world_size=2, seed=5)
    b = build_train_loader(train_feed(demo_dir), rank=1, world_size=2, seed=5)
    assert [k[0][3] for k in a.epoch_keys(2)] == [k[0][3] for k in b.epoch_keys(2)]


def test_shard_bounds_rejects_bad_rank():
    assert shard_bounds(10, 2, 3) == (6, 10)
    with pytest.raises(ValueError):
        shard_bounds(10, 3, 3)


def test_resume_at_iteration_k_gives_the_uninterrupted_batches(demo_dir):
    loader = build_train_loader(train_feed(demo_dir), seed=11)
    full = list(loader._keys_from(0, 13))
    assert list(loader._keys_from(7, 6)) == full[7:]
    resumed = list(loader.batches(start_iteration=6, num_iterations=1))
    uninterrupted = list(loader.batches(start_iteration=0, num_iterations=7))[6:]
    assert_batches_equal(resumed, uninterrupted)


def test_too_few_images_for_one_batch_is_a_data_error(demo_dir):
    with pytest.raises(DataError, match="no full batch of 16 per card on 2 card"):
        build_train_loader(train_feed(demo_dir, batch_size=16), rank=0, world_size=2)


def test_dataset_size_counts_usable_training_images(demo_dir):
    assert dataset_size(train_feed(demo_dir)) == 21
    assert dataset_size(train_feed(demo_dir, samples=10)) == 10


def test_eval_batches_keep_original_size_id_and_ground_truth(demo_dir):
    feed = YoloEvalFeed(dataset={"dataset_dir": demo_dir, "annotation": "test.txt",
                                 "use_default_label": False},
                        image_shape=[3, 96, 128], batch_size=2, num_workers=0)
    loader = build_eval_loader(feed)
    assert loader.label_names == ["circle", "square", "triangle", "star", "cross"]
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and [len(b["im_id"]) for b in batches] == [2, 2, 1]
    records = loader.records
    row = 0
    for batch in batches:
        assert batch["image"].shape[1:] == (3, 96, 128) and batch["image"].dtype == np.float32
        assert batch["im_size"].dtype == np.int32 and batch["im_id"].dtype == np.int64
        for i in range(len(batch["im_id"])):
            record = records[row]
            np.testing.assert_array_equal(batch["im_size"][i], [record["h"], record["w"]])
            assert batch["im_id"][i] == record["im_id"] == row
            count = len(record["gt_class"])
            np.testing.assert_array_equal(batch["gt_bbox"][i, :count], record["gt_bbox"])
            np.testing.assert_array_equal(batch["gt_class"][i, :count], record["gt_class"])
            np.testing.assert_array_equal(batch["difficult"][i, :count], record["difficult"])
            assert (batch["gt_class"][i, count:] == -1).all()
            row += 1
    threaded = list(build_eval_loader(YoloEvalFeed(dataset=feed.dataset, image_shape=[3, 96, 128],
                                                   batch_size=2, num_workers=2)))
    assert_batches_equal(batches, threaded)
    halves = [build_eval_loader(feed, rank=r, world_size=2).records for r in range(2)]
    assert [int(r["im_id"]) for half in halves for r in half] == list(range(5))


def test_test_loader_reads_image_files_and_skips_unreadable(demo_dir, tmp_path, caplog):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = image_paths(infer_dir=f"{demo_dir}/JPEGImages")[:2] + [str(tmp_path / "broken.jpg")]
    feed = YoloTestFeed(dataset={"dataset_dir": demo_dir, "use_default_label": False},
                        image_shape=[3, 64, 64])
    loader = build_test_loader(feed, paths)
    batches = list(loader)
    assert [b["im_file"] for b in batches] == [[paths[0]], [paths[1]]]
    assert batches[0]["image"].shape == (1, 3, 64, 64) and list(batches[0]["im_id"]) == [0]
    assert loader.label_names[0] == "circle"
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    assert image_paths(infer_img=paths[0], infer_dir="/nonexistent") == [paths[0]]
    with pytest.raises(DataError, match="--infer_img .* is a directory; give it as --infer_dir"):
        image_paths(infer_img=str(tmp_path))
    with pytest.raises(DataError, match="--infer_dir"):
        image_paths(infer_dir=str(tmp_path / "none"))


def test_image_that_fails_to_decode_late_is_replaced_in_training_and_blank_in_eval(demo_dir, monkeypatch,
                                                                                  caplog):
    from slim.data import records as records_lib
    real_read = records_lib.read_image_rgb
    broken = f"{demo_dir}/JPEGImages/train_00003.jpg"
    monkeypatch.setattr(records_lib, "read_image_rgb",
                        lambda path, *args: None if path == broken else real_read(path, *args))
    loader = build_train_loader(train_feed(demo_dir, shuffle=False, mixup_epoch=0), seed=0)
    first = list(loader.epoch(0))[0]
    # Position 3 held the broken image; the next record (4) stands in for it.
    assert list(first["im_id"]) == [0, 1, 2, 4]
    list(loader.epoch(1))
    warnings = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1 and "train_00003.jpg" in warnings[0]
    feed = YoloEvalFeed(dataset={"dataset_dir": demo_dir, "annotation": "train.txt",
                                 "use_default_label": False},
                        image_shape=[3, 64, 64], batch_size=4, num_workers=0, samples=4)
    batch = next(iter(build_eval_loader(feed)))
    assert list(batch["im_id"]) == [0, 1, 2, 3]
    blank = batch["image"][3]
    normalised_black = -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(blank[:, 0, 0], normalised_black,
                               rtol=1e-5)
    assert any("train_00003.jpg" in r.getMessage() and "blank" in r.getMessage() for r in caplog.records)
