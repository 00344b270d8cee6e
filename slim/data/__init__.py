"""Data: VOC / COCO sources, YOLOv3 transforms, the loader, and the demo dataset.

Config modules (registered at import): `VOCDataSet`, `COCODataSet` (sources),
`YoloTrainFeed`, `YoloEvalFeed`, `YoloTestFeed` (pipelines). A feed's
`dataset:` is a plain mapping of VOCDataSet options (an `annotation` ending in
`.json` reads a COCO instances file) or a tagged `!VOCDataSet {...}`; built feeds
also take COCODataSet objects (`YoloTrainFeed(dataset=COCODataSet(...))`).

Interface for the driver (`slim.data.loader`; no paddle import until workers start):

    set_dataset_dir(cfg, args.dataset_dir)          # -d: every feed's dataset_dir

    train = build_train_loader(train_feed, rank=0, world_size=1, seed=0)
    train.num_samples          usable training images (all ranks), after bad-data skips
    train.batches_per_epoch    batches per data pass per rank (= max_iters for `auto`)
    for batch in train.batches(start_iteration=i0, num_iterations=n): ...
    for batch in train.epoch(e): ...                 # one pass over this rank's shard

        batch["image"]     (N, 3, S, S) float32, ImageNet-normalised RGB; S drawn per batch
                           from feed.multi_scale_sizes (same S for batch b on every rank)
        batch["gt_box"]    (N, num_max_boxes, 4) float32, normalised cx, cy, w, h
        batch["gt_label"]  (N, num_max_boxes) int32 (0 on padding rows)
        batch["gt_score"]  (N, num_max_boxes) float32: 1 for real boxes, the mixup weight
                           w / 1 - w for boxes of mixed images, 0 on padding rows
        batch["im_id"]     (N,) int64

      Iteration i is batch i % batches_per_epoch of data epoch i // batches_per_epoch;
      mixup is on while the data epoch < feed.mixup_epoch. Everything random is a
      function of (seed, epoch, position), so the batches do not depend on num_workers,
      threads vs processes, or on resuming at i. Ranks get contiguous slices of the
      epoch's permutation, all of one length so that every rank runs the same batches
      (the gradient all-reduce needs them in step): with drop_last every rank runs
      (num_samples // world_size) // batch_size full batches; without, each slice holds
      ceil(num_samples / world_size) samples, the last ranks' padded with the epoch's
      first samples again (at most world_size - 1 repeats), and the last batch may be
      partial, of the same size on every rank.

    evaluation = build_eval_loader(eval_feed, rank=0, world_size=1)
    evaluation.records, evaluation.label_names, len(evaluation) (batches)
    for batch in evaluation:
        batch["image"]     (N, 3, H, W) float32 (eval_feed.image_shape, cubic resize)
        batch["im_size"]   (N, 2) int32 original [h, w]
        batch["im_id"]     (N,) int64 (VOC: list line index; COCO: image id)
        batch["gt_bbox"]   (N, M, 4) float32 x1, y1, x2, y2 in original pixels
        batch["gt_class"]  (N, M) int32, -1 on padding rows (M = the batch's largest count)
        batch["difficult"], batch["is_crowd"]  (N, M) int32

    test = build_test_loader(test_feed, image_paths(infer_img, infer_dir))
        like evaluation batches plus batch["im_file"] (list of paths)

    dataset_size(train_feed)    usable training images, without building a loader
    label_names(feed.dataset)   class names in label order
    open_dataset(feed.dataset)  the VOCDataSet / COCODataSet source (COCO: category_ids())

Feed only the program's inputs to the executor: `{name: batch[name] for name in feed_names}`.

Bad data (see `slim.data.records`): bad samples are skipped, bad objects dropped or
clipped, one warning line each and a summary line when the dataset (or the inference
image list) is opened. A bad sample: a missing, truncated or corrupt image (all of its
compressed data is decoded once; libjpeg's "Corrupt JPEG data" warnings count), a list
line that is not UTF-8 or names a path outside dataset_dir, a missing or malformed XML.
DataError (exit 2) for a missing dataset dir / list file, an `annotation`, `label_list`
or `image_dir` resolving outside dataset_dir (symlinks followed), a label_list line that
is not UTF-8 (skipping it would renumber the classes after it), a malformed COCO JSON, or
nothing usable. A list or label line is echoed at most 60 characters long.

`python -m slim.data.demo --out dataset/demo` writes the synthetic demo dataset;
`python -m slim.data.voc_lists -d dataset/voc` writes the VOC list files.
"""
from slim.data.coco import COCODataSet  # noqa: F401
from slim.data.feeds import YoloEvalFeed, YoloTestFeed, YoloTrainFeed, set_dataset_dir  # noqa: F401
from slim.data.voc import VOC_CLASSES, VOCDataSet  # noqa: F401
