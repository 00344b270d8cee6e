"""The multi-card path executed: compress.py and train.py on two CPU ranks, collective over
gloo (tests/cpu_ranks.py makes the three run-time replacements that a CPU build needs).

What a GPU machine would show beyond this (NCCL set-up ops, per-rank GPU selection,
sync_batch_norm, speed) is listed in docs/compress.md's multi-card section.

These runs take minutes on two shared cores, so they are the `two_ranks` set:
`make test` leaves them out, `make test-ranks` (and `.ci/run`) runs them.
"""
import json
import os
import shutil

import numpy as np
import pytest
from cpu_ranks import DUMP_DIR, KILL_AT_STEP, SAME_DATA, compare_dumps, launch, missing_internals
from test_compress import DETECTION_CONFIG, write_slim_config

from slim.io import checkpoint as ck

pytestmark = pytest.mark.two_ranks

MISSING = missing_internals()
if MISSING:
    pytest.skip(f"the CPU replacements cannot be made: {MISSING}", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPRESS = os.path.join(ROOT, "compress.py")
TRAIN_IMAGES = 17  # uneven: counted from each rank's own shard, 4 and 5 batches
EPOCHS = 2  # pruning at epoch 1
PER_RANK = -(-TRAIN_IMAGES // 2)  # the shorter shard padded by repeated samples
BATCH_SIZES = [2] * (PER_RANK // 2) + [PER_RANK % 2] * (PER_RANK % 2)  # drop_last: false
BATCHES_PER_EPOCH = len(BATCH_SIZES)
# sync_bn has no CPU kernel; max_iters auto is one pass over the data; drop_last false keeps
# the last, partial batch.
OPTIONS = {"MobileNet.norm_type": "bn", "max_iters": "auto", "YoloTrainFeed.drop_last": "false"}


def _workspace(root, train_images=TRAIN_IMAGES):
    from slim.data.demo import main as make_demo_dataset
    os.makedirs(root, exist_ok=True)
    make_demo_dataset(["--out", os.path.join(root, "data"), "--train", str(train_images),
                       "--test", "4"])
    with open(os.path.join(root, "tiny.yml"), "w") as handle:
        handle.write(DETECTION_CONFIG)
    write_slim_config(root, "slim.yaml", epochs=EPOCHS)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return _workspace(str(tmp_path_factory.mktemp("ranks-data")))


def _copy_workspace(data_root, root):
    shutil.copytree(data_root, root)
    os.makedirs(os.path.join(root, "dump"))
    return root


def _run(root, world_size=2, options=None, env=None, per_rank=None, script=COMPRESS, args=None,
         grace=30):
    env = dict(os.environ, **{DUMP_DIR: os.path.join(root, "dump")}, **(env or {}))
    options = dict(OPTIONS, **(options or {}))
    command = [script, *(args or ["-s", "slim.yaml", "-c", "tiny.yml", "--output_eval", "out"]),
               "-o", *(f"{key}={value}" for key, value in options.items())]
    return launch(command, cwd=root, world_size=world_size, env=env, per_rank=per_rank, grace=grace)


def _dump(root, rank):
    with open(os.path.join(root, "dump", f"rank{rank}.json")) as handle:
        meta = json.load(handle)
    with np.load(os.path.join(root, "dump", f"rank{rank}.npz")) as arrays:
        meta["arrays"] = {name: arrays[name] for name in arrays.files}
    return meta


def _probe(root, name, rank):
    with open(os.path.join(root, "dump", f"{name}-rank{rank}.json" if name == "keys"
                           else f"rank{rank}-{name}.json")) as handle:
        return json.load(handle)


def _of_kind(dump, *kinds):
    return {name: value for name, value in dump["arrays"].items() if dump["kinds"][name] in kinds}


def _equal(first, second):
    assert sorted(first) == sorted(second)
    return [name for name in first if first[name].shape != second[name].shape
            or not np.array_equal(first[name], second[name])]


@pytest.fixture(scope="module")
def two_ranks(data_root, tmp_path_factory):
    """compress.py on two ranks, uninterrupted: uniform pruning at epoch 1, 17 images."""
    root = _copy_workspace(data_root, str(tmp_path_factory.mktemp("ranks") / "run"))
    results = _run(root)
    for result in results:
        assert result.returncode == 0, result
    return {"root": root, "results": results, "dumps": [_dump(root, rank) for rank in (0, 1)]}


def test_both_ranks_train_the_same_number_of_full_and_partial_batches(two_ranks):
    assert BATCH_SIZES == [2, 2, 2, 2, 1]
    assert (f"max_iters auto: {TRAIN_IMAGES} training images on 2 cards of batch 2 = "
            f"{BATCHES_PER_EPOCH} iterations per epoch (9 images per card, 1 repeated to even "
            "the shards)") in two_ranks["results"][0].stdout
    for rank in (0, 1):
        assert two_ranks["dumps"][rank]["iteration"] == EPOCHS * BATCHES_PER_EPOCH
        keys = _probe(two_ranks["root"], "keys", rank)
        assert len(keys) == EPOCHS * BATCHES_PER_EPOCH
        assert [len(batch) for batch in keys[:BATCHES_PER_EPOCH]] == BATCH_SIZES


def test_shards_are_disjoint_and_cover_the_data_every_epoch(two_ranks):
    keys = [_probe(two_ranks["root"], "keys", rank) for rank in (0, 1)]
    for epoch in range(EPOCHS):
        records = []
        for rank in (0, 1):
            shard = [key for batch in keys[rank] for key in batch if key[0] == epoch]
            assert len(shard) == PER_RANK
            records.append([key[2] for key in shard])
        assert set(records[0]) | set(records[1]) == set(range(TRAIN_IMAGES))
        assert len(set(records[0])) == len(set(records[1])) == PER_RANK
        repeated = set(records[0]) & set(records[1])
        assert len(repeated) == 2 * PER_RANK - TRAIN_IMAGES  # the padding, nothing else
        assert set(records[1][len(records[1]) - len(repeated):]) == repeated
    assert keys[0][:BATCHES_PER_EPOCH] != keys[0][BATCHES_PER_EPOCH:]  # reshuffled


def test_parameters_and_optimizer_state_are_bitwise_equal_across_ranks(two_ranks):
    rank0, rank1 = two_ranks["dumps"]
    assert rank0["kinds"] == rank1["kinds"]
    kinds = list(rank0["kinds"].values())
    assert kinds.count("parameter") > 100 and kinds.count("optimizer_state") > 100
    assert kinds.count("bn_statistic") == 2 * 47
    assert _equal(_of_kind(rank0, "parameter", "optimizer_state"),
                  _of_kind(rank1, "parameter", "optimizer_state")) == []
    # Without sync_bn each rank keeps the batch statistics of its own shard.
    assert _equal(_of_kind(rank0, "bn_statistic"), _of_kind(rank1, "bn_statistic"))
    differing = compare_dumps(os.path.join(two_ranks["root"], "dump"))  # what a GPU run uses
    assert differing["parameter"] == differing["optimizer_state"] == []
    assert differing["bn_statistic"]
    # the checkpoint is rank 0's
    manifest = ck.validate_checkpoint(os.path.join(two_ranks["root"], "ckpt", str(EPOCHS - 1))).manifest
    assert sorted(manifest["variables"]) == sorted(rank0["arrays"])
    for name, described in manifest["variables"].items():
        assert described["shape"] == list(rank0["arrays"][name].shape)


def test_both_ranks_prune_by_the_same_plan(two_ranks):
    rank0, rank1 = two_ranks["dumps"]
    assert [record["epoch"] for record in rank0["plan_records"]] == [1]
    assert rank0["plan_records"] == rank1["plan_records"]
    checkpoint = ck.validate_checkpoint(os.path.join(two_ranks["root"], "ckpt", str(EPOCHS - 1)))
    assert checkpoint.state.pruning_plans == rank0["plan_records"]


def test_rank_1_writes_nothing(two_ranks):
    root = two_ranks["root"]
    rank0_writes = [path for _, path in _probe(root, "writes", 0)]
    assert any("ckpt" in path for path in rank0_writes)  # the probe sees writes
    assert _probe(root, "writes", 1) == []


def test_the_same_data_on_two_ranks_equals_one_process(data_root, tmp_path_factory):
    """Each rank reading the whole dataset: the all-reduced mean gradient is each rank's own,
    so two ranks end bitwise where one process ends (batch statistics included)."""
    base = tmp_path_factory.mktemp("same-data")
    one = _copy_workspace(data_root, str(base / "one"))
    two = _copy_workspace(data_root, str(base / "two"))
    fixed = {"max_iters": 3}  # one process would count 9 batches of the 17 images
    for result in _run(one, world_size=1, options=fixed) + _run(two, options=fixed,
                                                                 env={SAME_DATA: "1"}):
        assert result.returncode == 0, result
    single = _dump(one, 0)
    assert [record["epoch"] for record in single["plan_records"]] == [1]
    for rank in (0, 1):
        ranked = _dump(two, rank)
        assert ranked["iteration"] == single["iteration"] == EPOCHS * 3
        assert ranked["plan_records"] == single["plan_records"]
        assert _equal(ranked["arrays"], single["arrays"]) == []


def test_a_kill_9_of_a_rank_and_a_rerun_resume_to_the_uninterrupted_result(two_ranks, data_root,
                                                                             tmp_path_factory):
    root = _copy_workspace(data_root, str(tmp_path_factory.mktemp("ranks-killed") / "run"))
    # Rank 1 kills itself before step BATCHES_PER_EPOCH + 2: the step before, the first of
    # epoch 1, needed rank 0's gradients, which rank 0 gives only after writing checkpoint 0.
    killed = _run(root, per_rank={1: {KILL_AT_STEP: str(BATCHES_PER_EPOCH + 2)}}, grace=0)
    assert killed[1].returncode == -9, killed[1]
    assert killed[0].returncode != 0  # the launcher stops the rank left waiting
    assert sorted(os.listdir(os.path.join(root, "ckpt"))) == ["0"]
    ck.validate_checkpoint(os.path.join(root, "ckpt", "0"))
    resumed = _run(root)
    for result in resumed:
        assert result.returncode == 0, result
    assert "resumed from checkpoint 'ckpt/0'" in resumed[0].stdout
    for rank in (0, 1):
        after_resume, uninterrupted = _dump(root, rank), two_ranks["dumps"][rank]
        assert after_resume["plan_records"] == uninterrupted["plan_records"]
        assert _equal(_of_kind(after_resume, "parameter", "optimizer_state"),
                      _of_kind(uninterrupted, "parameter", "optimizer_state")) == []
    # Rank 0 entirely, batch statistics included; rank 1 resumed from the checkpoint's batch
    # statistics, which are rank 0's, so its own differ from the uninterrupted rank 1's.
    assert _equal(_dump(root, 0)["arrays"], two_ranks["dumps"][0]["arrays"]) == []
    assert _equal(_of_kind(_dump(root, 1), "bn_statistic"),
                  _of_kind(two_ranks["dumps"][1], "bn_statistic"))
    last = str(EPOCHS - 1)
    files = [ck.validate_checkpoint(os.path.join(run, "ckpt", last)).manifest["files"]
             for run in (root, two_ranks["root"])]
    # The final checkpoints' tensors and plans are byte for byte the same (the programs are
    # rebuilt on resume, so their serialised descs, and the files naming their sha256, are not).
    for name in ("persistables", "pruning_plans.json", "eval_model/__params__"):
        assert files[0][name] == files[1][name], name


def test_train_py_on_two_ranks(data_root, tmp_path_factory):
    root = _copy_workspace(data_root, str(tmp_path_factory.mktemp("ranks-train") / "run"))
    results = _run(root, script=os.path.join(ROOT, "train.py"),
                   args=["-c", "tiny.yml", "--output_eval", "out"], options={"weights": "null"})
    for result in results:
        assert result.returncode == 0, result
    rank0, rank1 = _dump(root, 0), _dump(root, 1)
    assert rank0["iteration"] == rank1["iteration"] == BATCHES_PER_EPOCH
    assert _equal(_of_kind(rank0, "parameter", "optimizer_state"),
                  _of_kind(rank1, "parameter", "optimizer_state")) == []
    assert os.path.isdir(os.path.join(root, "output", "tiny", "model_final"))
    assert _probe(root, "writes", 1) == []

