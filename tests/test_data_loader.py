"""The loader: batch layout, determinism across workers, rank sharding, resume, eval batches,
the prefetch thread."""
import multiprocessing
import threading
import time

import numpy as np
import pytest

from slim.data import YoloEvalFeed, YoloTestFeed, YoloTrainFeed
from slim.data import loader as loader_lib
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
        shards, batch_sizes = [], []
        for rank in range(world_size):
            loader = build_train_loader(train_feed(demo_dir, drop_last=False), rank=rank,
                                        world_size=world_size, seed=3)
            keys = list(loader.epoch_keys(epoch))
            assert len(keys) == loader.batches_per_epoch
            shards.append([key[2] for batch in keys for key in batch])
            batch_sizes.append([len(batch) for batch in keys])
        # Every rank the same batches of the same sizes (the all-reduce needs them in step),
        # ceil(21 / world_size) samples each: the shards padded with repeated samples.
        per_rank = -(-21 // world_size)
        assert batch_sizes == [batch_sizes[0]] * world_size and sum(batch_sizes[0]) == per_rank
        flat = [index for shard in shards for index in shard]
        assert sorted(set(flat)) == list(range(21)), "ranks miss samples"
        padding = flat[21:]
        assert len(padding) == per_rank * world_size - 21 < world_size
        assert len(set(flat[:21])) == 21, "ranks overlap beyond the padding"
        assert padding == flat[:len(padding)]  # the padding repeats the epoch's first samples
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
    assert sorted(set(ids)) == list(range(21)) and len(ids) == 22  # 11 per rank: one repeat
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


def prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name == "slim-data-prefetch"]


def within(seconds, function):
    """function() run in a helper thread; fails the test instead of hanging if it takes longer."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001  (re-raised in the test's thread)
            outcome["error"] = error
    helper = threading.Thread(target=run, daemon=True)
    helper.start()
    helper.join(seconds)
    assert not helper.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def gone_within(seconds, alive):
    """True once alive() is empty, polling for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not alive()


@pytest.mark.parametrize("options", [{"num_workers": 0}, {"num_workers": 2},
                                     {"num_workers": 2, "use_process": False}],
                         ids=["serial", "processes", "threads"])
def test_prefetched_stream_is_the_unprefetched_stream(demo_dir, options):
    feed = train_feed(demo_dir, **options)
    prefetched = build_train_loader(feed, seed=4)
    plain = build_train_loader(feed, seed=4)
    assert plain.prefetch
    plain.prefetch = False
    # 7 batches cross from epoch 0 into epoch 1 (5 batches per epoch), resumed at 3 too.
    assert_batches_equal(list(plain.batches(0, 7)), list(prefetched.batches(0, 7)))
    assert_batches_equal(list(plain.batches(3, 4)), list(prefetched.batches(3, 4)))
    assert not prefetch_threads()


def test_prefetch_runs_ahead_in_a_thread_by_at_most_its_depth():
    produced = []

    def numbers():
        for number in range(100):
            produced.append((number, threading.current_thread().name))
            yield number
    stream = loader_lib._prefetched(numbers(), depth=3)
    assert next(stream) == 0
    # While the consumer holds batch 0, the thread fills the queue (1..3) and builds batch 4.
    assert gone_within(1.0, lambda: len(produced) < 5)
    time.sleep(0.1)
    assert len(produced) == 5
    assert {name for _, name in produced} == {"slim-data-prefetch"}
    assert list(stream) == list(range(1, 100))
    assert not prefetch_threads()


def test_closing_a_full_prefetch_stops_its_waiting_thread():
    produced = []

    def numbers():
        for number in range(100):
            produced.append(number)
            yield number

    def take_one_then_close_while_the_thread_waits():
        stream = loader_lib._prefetched(numbers(), depth=2)
        next(stream)
        assert gone_within(1.0, lambda: len(produced) < 4)  # queue full, the thread waits to put
        stream.close()
    within(2, take_one_then_close_while_the_thread_waits)
    assert not prefetch_threads() and len(produced) == 4


def test_prefetch_raises_the_sources_exception_in_the_consumer():
    error = DataError("10 images in a row cannot be decoded, from a.jpg")

    def failing():
        yield "first"
        yield "second"
        raise error
    received = []

    def consume():
        for item in loader_lib._prefetched(failing(), depth=4):
            received.append(item)
    with pytest.raises(DataError) as raised:
        within(5, consume)
    assert raised.value is error and received == ["first", "second"]
    assert gone_within(1.0, prefetch_threads)


def test_undecodable_training_images_raise_a_data_error_through_the_prefetch(demo_dir, monkeypatch):
    from slim.data import records as records_lib
    monkeypatch.setattr(records_lib, "read_image_rgb", lambda path, *args: None)
    loader = build_train_loader(train_feed(demo_dir), seed=0)
    with pytest.raises(DataError, match="10 images in a row cannot be decoded"):
        next(iter(loader.batches(0, 3)))
    assert gone_within(1.0, prefetch_threads)


def test_opencv_runs_sequentially_so_forked_workers_inherit_no_thread_pool():
    """A worker forked while OpenCV had a thread pool hung in cvtColor (this test file's
    next test, once in two suite runs): the loader's import turns the pool off."""
    import cv2
    assert loader_lib.cv2 is cv2 and cv2.getNumThreads() == 1


@pytest.mark.parametrize("options", [{"num_workers": 0}, {"num_workers": 2}], ids=["serial", "processes"])
def test_a_consumer_that_stops_early_ends_the_thread_and_the_workers(demo_dir, options):
    loader = build_train_loader(train_feed(demo_dir, **options), seed=2)
    uninterrupted = list(loader.batches(0, 6))
    taken = []
    for batch in loader.batches(0, None):  # endless: only the consumer's break ends it
        taken.append(batch)
        if len(taken) == 2:
            break
    assert gone_within(1.0, prefetch_threads)
    assert gone_within(1.0, multiprocessing.active_children)
    stream = loader.batches(2, None)  # resume where the consumer stopped
    resumed = [next(stream) for _ in range(4)]
    stream.close()
    assert not prefetch_threads() and gone_within(1.0, multiprocessing.active_children)
    assert_batches_equal(taken + resumed, uninterrupted)


def test_closing_while_the_source_is_busy_waits_for_the_batch_in_hand():
    finished = []

    def slow():
        try:
            for number in range(100):
                time.sleep(0.2)
                yield number
        finally:
            finished.append(True)

    def take_one_and_close():
        source = slow()  # held here, so only an explicit close runs its finally
        stream = loader_lib._prefetched(source, depth=2)
        first = next(stream)
        stream.close()
        return first, list(finished), [thread.name for thread in prefetch_threads()]
    # close() returns after the thread finished its batch and closed the source.
    assert within(5, take_one_and_close) == (0, [True], [])


def test_serial_batches_are_built_in_the_prefetch_thread(demo_dir, monkeypatch):
    built_in = set()
    real_getitem = loader_lib.TrainSamples.__getitem__

    def recording_getitem(samples, key):
        built_in.add(threading.current_thread().name)
        return real_getitem(samples, key)
    monkeypatch.setattr(loader_lib.TrainSamples, "__getitem__", recording_getitem)
    loader = build_train_loader(train_feed(demo_dir), seed=0)
    list(loader.batches(0, 2))
    assert built_in == {"slim-data-prefetch"}
    loader.prefetch = False
    built_in.clear()
    list(loader.batches(0, 2))
    assert built_in == {threading.current_thread().name}
