"""Feeds -> batches: deterministic, rank-sharded, multi-worker.

Every random choice is a pure function of (seed, epoch, position): the
shuffle of an epoch, each batch's input size, and each sample's augmentation
(and its mixup partner). So a given seed gives the same batches whatever the
worker count, thread or process workers, and a run resumed at iteration k sees
the batches an uninterrupted run would have seen from k on.

Worker processes are `paddle.io.DataLoader` workers (a batch sampler yields
sample keys, our collate function stacks them; results come back as numpy);
`use_process: false` uses a thread pool, `num_workers: 0` the main process.
In every mode a background thread (`_prefetched`) finishes the next batches
while the trainer runs the current one.
"""
import collections
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time

import cv2
import numpy as np

from slim.data import records as records_lib
from slim.data import transforms
from slim.data.coco import COCODataSet
from slim.data.voc import VOCDataSet
from slim.errors import DataError, shorten

LOGGER = logging.getLogger("slim.data")

# Worker processes are forked, and a child that inherits OpenCV's thread pool (not its
# threads) can wait forever in its first parallel cv2 call: a worker stuck in cvtColor hung
# the test suite, once in two runs. Here the workers are the parallelism, so OpenCV runs
# sequentially in this process and its children (as Ultralytics and MMDetection set it); set
# at import, before any thread of ours uses cv2 (changing it while one does can crash).
cv2.setNumThreads(0)

# Stream ids keep the random streams of one (seed, epoch) independent.
_SHUFFLE_STREAM, _SIZE_STREAM, _SAMPLE_STREAM = 1, 2, 3
_MAX_DECODE_RETRIES = 10


def open_dataset(dataset):
    """The source object for a feed's dataset; a VOCDataSet whose annotation ends in .json is COCO."""
    if isinstance(dataset, VOCDataSet) and dataset.is_coco():
        return dataset.as_coco()
    if isinstance(dataset, (VOCDataSet, COCODataSet)):
        return dataset
    raise DataError(f"unsupported dataset {dataset!r}; use VOCDataSet or COCODataSet")


def label_names(dataset):
    """Class names of a feed's dataset, in label order."""
    return open_dataset(dataset).label_names()


def load_feed_records(feed, for_training):
    """Records of a feed's dataset (bad samples skipped with warnings), limited to feed.samples."""
    records = open_dataset(feed.dataset).load_records(for_training=for_training)
    if getattr(feed, "samples", -1) > 0:
        records = records[:feed.samples]
    return records


def dataset_size(feed):
    """Usable training images of a feed (for `max_iters: auto`); parses annotations, no images."""
    return len(load_feed_records(feed, for_training=True))


def _rng(*keys):
    return np.random.default_rng([int(k) for k in keys])


def shard_bounds(num_items, rank, world_size):
    """[start, stop) of rank's contiguous slice of `num_items`: disjoint, together complete."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return num_items * rank // world_size, num_items * (rank + 1) // world_size


def padded_shard_bounds(num_items, rank, world_size, drop_last):
    """[start, stop) of rank's positions in an epoch, the same length on every rank.

    drop_last: the first num_items // world_size positions of rank's `shard_bounds` slice
    (up to world_size - 1 items sit out the epoch). Otherwise every rank gets
    ceil(num_items / world_size) contiguous positions of the epoch padded to
    world_size times that: positions >= num_items repeat the epoch's first items (at
    most world_size - 1 of them, all on the last ranks), as PyTorch's
    DistributedSampler pads. One process: [0, num_items) either way."""
    start = shard_bounds(num_items, rank, world_size)[0]  # (also checks rank, world_size)
    if drop_last:
        return start, start + num_items // world_size
    per_rank = -(-num_items // world_size)
    return rank * per_rank, (rank + 1) * per_rank


def _decode(record, apply_exif_orientation=False):
    image = records_lib.read_image_rgb(record["im_file"], apply_exif_orientation)
    if image is not None and (image.shape[0], image.shape[1]) != (record["h"], record["w"]):
        # Header size and decoded size disagree: trust the pixels, rescale the boxes.
        scale = np.array([image.shape[1] / record["w"], image.shape[0] / record["h"]] * 2, np.float32)
        record = dict(record, gt_bbox=record["gt_bbox"] * scale, h=image.shape[0], w=image.shape[1])
    return image, record


class TrainSamples:
    """Map-style dataset of training samples addressed by (epoch, position, record_index, size)."""

    def __init__(self, records, seed, mixup_epoch, num_max_boxes, expand_max_ratio=4.0):
        self.records = records
        self.seed = seed
        self.mixup_epoch = mixup_epoch
        self.num_max_boxes = num_max_boxes
        self.expand_max_ratio = expand_max_ratio
        self._warned_files = set()  # per worker process: one warning per bad file, not per epoch

    def __len__(self):
        return len(self.records)

    def _decoded(self, record_index):
        """(image, record) of record_index, or of the next decodable record (warning once each)."""
        for attempt in range(_MAX_DECODE_RETRIES):
            index = (record_index + attempt) % len(self.records)
            image, record = _decode(self.records[index])
            if image is not None:
                return image, record
            if record["im_file"] not in self._warned_files:
                self._warned_files.add(record["im_file"])
                LOGGER.warning("skipped sample %s: image cannot be decoded (changed since the dataset "
                               "was checked?); using the next image", shorten(record["im_file"]))
        raise DataError(f"{_MAX_DECODE_RETRIES} images in a row cannot be decoded, from "
                        f"{self.records[record_index]['im_file']}")

    def __getitem__(self, key):
        epoch, position, record_index, size = (int(v) for v in key)
        rng = _rng(self.seed, epoch, position, _SAMPLE_STREAM)
        image, record = self._decoded(record_index)
        partner = None
        if epoch < self.mixup_epoch and len(self.records) > 1:
            partner_index = (record_index + 1 + int(rng.integers(len(self.records) - 1))) % len(self.records)
            partner_image, partner_record = self._decoded(partner_index)
            partner = (partner_image, partner_record["gt_bbox"], partner_record["gt_class"])
        sample = transforms.train_transform(image, record["gt_bbox"], record["gt_class"], rng, size,
                                            self.num_max_boxes, partner, normalize=False,
                                            expand_max_ratio=self.expand_max_ratio)
        sample["im_id"] = np.int64(record["im_id"])
        return sample


def collate_train(samples):
    """Stack training samples into a batch dict (all images share the batch's size; uint8 image)."""
    return {key: np.stack([sample[key] for sample in samples])
            for key in ("image", "gt_box", "gt_label", "gt_score", "im_id")}


class EvalSamples:
    """Map-style dataset of evaluation samples addressed by record index."""

    def __init__(self, records, image_shape, apply_exif_orientation=False):
        self.records = records
        self.height, self.width = image_shape[1], image_shape[2]
        self.apply_exif_orientation = apply_exif_orientation

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        record = self.records[int(key)]
        image, record = _decode(record, self.apply_exif_orientation)
        if image is None:
            # Evaluation cannot drop an image without changing the metric: score it on a blank.
            LOGGER.warning("image %s cannot be decoded (changed since the dataset was checked?); "
                           "evaluated as a blank image",
                           shorten(record["im_file"]))
            image = np.zeros((record["h"], record["w"], 3), np.uint8)
        return {
            "image": transforms.eval_transform(image, self.height, self.width, normalize=False),
            "im_size": np.array([record["h"], record["w"]], np.int32),
            "im_id": np.int64(record["im_id"]),
            "gt_bbox": record["gt_bbox"].astype(np.float32).reshape(-1, 4),
            "gt_class": record["gt_class"].astype(np.int32),
            "difficult": record["difficult"].astype(np.int32),
            "is_crowd": record["is_crowd"].astype(np.int32),
        }


def collate_eval(samples):
    """Batch eval samples (uint8 image); ground truth padded to the batch's largest count, gt_class -1."""
    count = max(1, max(len(sample["gt_class"]) for sample in samples))
    batch = {
        "image": np.stack([s["image"] for s in samples]),
        "im_size": np.stack([s["im_size"] for s in samples]),
        "im_id": np.array([s["im_id"] for s in samples], np.int64),
        "gt_bbox": np.zeros((len(samples), count, 4), np.float32),
        "gt_class": np.full((len(samples), count), -1, np.int32),
        "difficult": np.zeros((len(samples), count), np.int32),
        "is_crowd": np.zeros((len(samples), count), np.int32),
    }
    for row, sample in enumerate(samples):
        n = len(sample["gt_class"])
        for key in ("gt_bbox", "gt_class", "difficult", "is_crowd"):
            batch[key][row, :n] = sample[key]
    return batch


class _KeyBatches:
    """An iterable of lists of sample keys (a paddle batch sampler)."""

    def __init__(self, make_iterator, length=None):
        self._make_iterator = make_iterator
        self._length = length

    def __iter__(self):
        return self._make_iterator()

    def __len__(self):
        if self._length is None:
            raise TypeError("endless batch stream has no length")
        return self._length


def finish_batch(batch):
    """Normalise the uint8 NCHW image of a collated batch into float32 (in place in the dict)."""
    batch["image"] = transforms.normalize_chw(batch["image"])
    return batch


_END_OF_BATCHES = object()
# How long closing a stream waits for its prefetch thread to finish the batch in hand: far
# longer than one batch takes; a source stuck longer (a hung worker) is left to the daemon thread
# rather than hanging the run's shutdown.
_STOP_TIMEOUT_S = 60.0
# Behind worker threads or processes, which already hold the feed's bufsize of batches, the
# prefetch stage only has to cover the main-thread work on one batch.
_DEPTH_BEHIND_WORKERS = 2
_DEPTH_SERIAL_MAX = 4


class _Failure:
    """An exception of the producing thread, carried through the queue to the consumer."""

    def __init__(self, error):
        self.error = error


def _drain(buffer):
    while True:
        try:
            buffer.get_nowait()
        except queue.Empty:
            return


def _prefetched(batches, depth):
    """Yield the items of the generator `batches` in order, produced up to `depth` ahead by a
    background thread.

    Why: the trainer's `exe.run` releases the GIL for the whole step. Without this stage the
    next batch's main-thread work (all of decoding, augmenting and normalising with
    num_workers 0; the tensor -> numpy copy and normalisation behind worker processes) starts
    only after the step returns and adds to every iteration; with it, that work overlaps the
    step. Order and content are those of `batches`. An exception of `batches` is raised here,
    the same object (type, message). Closing this generator (a consumer's break, close(),
    garbage collection) stops the thread, which closes `batches`, and waits for it.
    """
    buffer = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce():
        try:
            with contextlib.closing(batches):
                for batch in batches:
                    buffer.put(batch)  # waits while full; a stopping consumer empties the queue
                    if stop.is_set():
                        return
            buffer.put(_END_OF_BATCHES)
        except BaseException as error:  # noqa: BLE001  (handed to the consumer, raised there)
            buffer.put(_Failure(error))

    thread = threading.Thread(target=produce, name="slim-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END_OF_BATCHES:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while thread.is_alive() and time.monotonic() < deadline:
            _drain(buffer)  # unblocks a put; the producer then sees `stop`
            thread.join(0.05)
        if thread.is_alive():
            LOGGER.warning("the data loader's prefetch thread did not stop within %.0f s; "
                           "leaving it behind", _STOP_TIMEOUT_S)


def _iterate(samples, key_batches, collate, num_workers, use_process, prefetch_batches, prefetch=True):
    """Yield finish_batch(collate(samples[k] for k in keys)) for each keys list, in order;
    `prefetch`: prepared ahead by a background thread (see _prefetched)."""
    num_workers = min(num_workers, os.cpu_count() or 1)
    if num_workers <= 0:
        # The prefetch stage is the only buffer here: the feed's bufsize, capped, since
        # a 608-px float32 batch of 8 is 35 MB and one batch ahead already overlaps a step.
        depth = min(prefetch_batches, _DEPTH_SERIAL_MAX)
        batches = (finish_batch(collate([samples[key] for key in keys])) for keys in key_batches)
    elif use_process:
        depth = _DEPTH_BEHIND_WORKERS
        batch_iterator = _process_batch_iterator(samples, key_batches, collate, num_workers,
                                                 prefetch_batches)
        batches = (finish_batch({key: np.array(value) for key, value in batch.items()})
                   for batch in batch_iterator)
    else:
        depth = _DEPTH_BEHIND_WORKERS
        batches = _iterate_threads(samples, key_batches, collate, num_workers, prefetch_batches)
    try:
        yield from _prefetched(batches, depth) if prefetch else batches
    finally:
        if num_workers > 0 and use_process:
            # Paddle's iterator is kept alive by its own thread, so dropping it does not stop
            # the worker processes of a stream abandoned early; stop them here (a no-op after
            # the last batch). Private paddle API (2.6 and 3.x); tests/test_data_loader.py
            # notices if it goes.
            getattr(batch_iterator, "_try_shutdown_all", lambda: None)()


def _iterate_threads(samples, key_batches, collate, num_workers, prefetch_batches):
    def build(keys):
        return finish_batch(collate([samples[key] for key in keys]))

    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        pending = collections.deque()
        key_iterator = iter(key_batches)
        try:
            for keys in key_iterator:
                pending.append(pool.submit(build, keys))
                if len(pending) >= max(prefetch_batches, num_workers):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _process_batch_iterator(samples, key_batches, collate, num_workers, prefetch_batches):
    """A started paddle.io.DataLoader iterator over collated uint8 batches (paddle tensors).

    Created in the caller's thread: paddle installs a SIGCHLD handler there, which only the
    main thread may do. Batches cross the process boundary as uint8 (a quarter of float32's
    bytes: the transfer and tensor->numpy copies dominate otherwise); normalising after
    them is one LUT pass.
    """
    import paddle
    loader = paddle.io.DataLoader(
        samples, batch_sampler=key_batches, collate_fn=collate, num_workers=num_workers,
        return_list=True, use_shared_memory=True,
        prefetch_factor=max(2, -(-prefetch_batches // num_workers)))
    return iter(loader)


class TrainLoader:
    """Training batches of one rank; see the module and package docs.

    Attributes:
        records: this run's usable training records (all ranks).
        num_samples: len(records).
        batches_per_epoch: batches every rank yields per pass over the data (the same on
            every rank: see `padded_shard_bounds`).
        shard: [start, stop) of this rank's positions in each epoch's order.
        prefetch: a background thread prepares batches while the trainer runs (default);
            False builds each batch when asked for (bench/train_throughput.py compares both).
    """

    def __init__(self, feed, records, rank=0, world_size=1, seed=0, prefetch=True):
        shard_bounds(len(records), rank, world_size)  # validates rank / world_size
        self.feed = feed
        self.prefetch = prefetch
        self.records = records
        self.num_samples = len(records)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.sizes = feed.sizes()
        self.samples = TrainSamples(records, seed, feed.mixup_epoch, feed.num_max_boxes,
                                    getattr(feed, "expand_max_ratio", 4.0))
        # Every rank runs the same number of batches of the same sizes: the gradient
        # all-reduce of collective training needs every rank at every iteration.
        self.shard = padded_shard_bounds(self.num_samples, rank, world_size, feed.drop_last)
        shard_size = self.shard[1] - self.shard[0]
        if feed.drop_last:
            self.batches_per_epoch = shard_size // feed.batch_size
        else:
            self.batches_per_epoch = -(-shard_size // feed.batch_size)
        if self.batches_per_epoch == 0:
            raise DataError(f"{self.num_samples} training images give no full batch of "
                            f"{feed.batch_size} per card on {world_size} card(s); lower "
                            f"YoloTrainFeed.batch_size or set drop_last: false")

    def epoch_order(self, epoch):
        """Record indices of the whole dataset in epoch's order (identical on every rank)."""
        if self.feed.shuffle:
            return _rng(self.seed, epoch, _SHUFFLE_STREAM).permutation(self.num_samples)
        return np.arange(self.num_samples)

    def batch_size_of(self, epoch, batch_index):
        """The square input size of batch `batch_index` of `epoch` (same on every rank)."""
        if len(self.sizes) == 1:
            return self.sizes[0]
        return self.sizes[int(_rng(self.seed, epoch, batch_index, _SIZE_STREAM).integers(len(self.sizes)))]

    def epoch_keys(self, epoch, first_batch=0):
        """Sample keys (epoch, position, record_index, size) of this rank's batches in `epoch`."""
        order = self.epoch_order(epoch)
        start, stop = self.shard
        batch_size = self.feed.batch_size
        for batch_index in range(first_batch, self.batches_per_epoch):
            positions = range(start + batch_index * batch_size,
                              min(start + (batch_index + 1) * batch_size, stop))
            size = self.batch_size_of(epoch, batch_index)
            # positions past the dataset's end are the padding: the epoch's first samples again
            yield [(epoch, position, int(order[position % self.num_samples]), size)
                   for position in positions]

    def _keys_from(self, start_iteration, num_iterations):
        epoch, first_batch = divmod(start_iteration, self.batches_per_epoch)
        produced = 0
        while num_iterations is None or produced < num_iterations:
            for keys in self.epoch_keys(epoch, first_batch):
                if num_iterations is not None and produced >= num_iterations:
                    return
                yield keys
                produced += 1
            epoch, first_batch = epoch + 1, 0

    def _run(self, key_batches):
        feed = self.feed
        prefetch_batches = max(2, feed.bufsize // feed.batch_size)
        return _iterate(self.samples, key_batches, collate_train, feed.num_workers,
                        feed.use_process, prefetch_batches, self.prefetch)

    def epoch(self, epoch):
        """The batches of one pass over this rank's shard of the data."""
        keys = _KeyBatches(lambda: self.epoch_keys(epoch), self.batches_per_epoch)
        return self._run(keys)

    def batches(self, start_iteration=0, num_iterations=None):
        """Batches from global iteration `start_iteration` on, crossing data epochs, endless by default.

        Iteration i is batch i % batches_per_epoch of data epoch i // batches_per_epoch,
        so resuming at i needs no decoding of the skipped batches.
        """
        keys = _KeyBatches(lambda: self._keys_from(start_iteration, num_iterations), num_iterations)
        return self._run(keys)

    def __iter__(self):
        return iter(self.epoch(0))

    def __len__(self):
        return self.batches_per_epoch


class EvalLoader:
    """Evaluation batches in record order (a rank's contiguous slice when world_size > 1).

    Attributes:
        records: the evaluation records of this rank (ground truth in original pixels).
        label_names: class names in label order.
    """

    def __init__(self, feed, records, names, rank=0, world_size=1):
        start, stop = shard_bounds(len(records), rank, world_size)
        self.feed = feed
        self.records = records[start:stop]
        self.label_names = names
        self.samples = EvalSamples(self.records, feed.image_shape)

    def __len__(self):
        return -(-len(self.records) // self.feed.batch_size)

    def _key_batches(self):
        size = self.feed.batch_size
        for start in range(0, len(self.records), size):
            yield list(range(start, min(start + size, len(self.records))))

    def __iter__(self):
        return _iterate(self.samples, _KeyBatches(self._key_batches, len(self)), collate_eval,
                        self.feed.num_workers, getattr(self.feed, "use_process", False),
                        prefetch_batches=2)


def build_train_loader(feed, rank=0, world_size=1, seed=0):
    """A TrainLoader for a YoloTrainFeed: parses annotations now (summary line), decodes lazily."""
    records = load_feed_records(feed, for_training=True)
    return TrainLoader(feed, records, rank=rank, world_size=world_size, seed=seed)


def build_eval_loader(feed, rank=0, world_size=1):
    """An EvalLoader for a YoloEvalFeed (images without objects kept, crowd boxes flagged)."""
    source = open_dataset(feed.dataset)
    records = load_feed_records(feed, for_training=False)
    return EvalLoader(feed, records, source.label_names(), rank=rank, world_size=world_size)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def image_paths(infer_img=None, infer_dir=None):
    """Images for inference: `infer_img` wins over `infer_dir` (sorted images in the dir)."""
    if infer_img:
        if os.path.isdir(infer_img):
            raise DataError(f"--infer_img {shorten(infer_img)} is a directory; give it as --infer_dir")
        if not os.path.isfile(infer_img):
            raise DataError(f"--infer_img {shorten(infer_img)} not found (or not a regular file)")
        return [infer_img]
    if not infer_dir or not os.path.isdir(infer_dir):
        raise DataError(f"--infer_dir {infer_dir} is not a directory (or give --infer_img FILE)")
    paths = sorted(os.path.join(infer_dir, name) for name in os.listdir(infer_dir)
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in --infer_dir {infer_dir}")
    return paths


def build_test_loader(feed, paths, names=None):
    """Batches of (image, im_size, im_id, im_file) for inference over image files; the class
    names are `names`, else those of the feed's dataset.

    Images that are missing, unreadable or corrupt are skipped with one warning each and a
    summary line, like bad samples of a dataset; im_id indexes `paths`.
    """
    report = records_lib.BadSampleReport("--infer_img/--infer_dir")
    report.total = len(paths)
    records = []
    for index, path in enumerate(paths):
        size, problem = records_lib.checked_image_size(path)
        if size is None:
            report.skip(path, problem)
            continue
        records.append({"im_file": path, "im_id": np.int64(index), "h": size[0], "w": size[1],
                        "gt_bbox": np.zeros((0, 4), np.float32), "gt_class": np.zeros(0, np.int32),
                        "difficult": np.zeros(0, np.int32), "is_crowd": np.zeros(0, np.int32)})
    records_lib.require_usable(records, report)
    return TestLoader(feed, records, label_names(feed.dataset) if names is None else list(names))


class TestLoader(EvalLoader):
    """Inference batches: like EvalLoader plus `im_file` (list of paths); threads, no processes."""

    def __init__(self, feed, records, names):
        super().__init__(feed, records, names)
        # Photos are shown upright (as cv2.imread shows them); im_size follows the decoded image.
        self.samples = EvalSamples(self.records, feed.image_shape, apply_exif_orientation=True)

    def __iter__(self):
        for batch_keys, batch in zip(self._key_batches(),
                                     _iterate(self.samples, _KeyBatches(self._key_batches, len(self)),
                                              collate_eval, self.feed.num_workers, False, 2)):
            batch["im_file"] = [self.records[key]["im_file"] for key in batch_keys]
            yield batch
