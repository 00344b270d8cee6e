"""Multi-card path, checked as far as a CPU can: environment, device choice, the
collective train program of a 2-worker fleet role, sync batch norm, per-rank data shards."""
import json
import os
import subprocess
import sys
import textwrap

import paddle
import pytest

from slim.data.loader import TrainLoader
from slim.engine import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDPOINTS = "127.0.0.1:36170,127.0.0.1:36171"


def _launch_env(rank, world_size=2):
    """The variables `python -m paddle.distributed.launch --gpus 0,1` gives worker `rank`."""
    endpoints = ENDPOINTS.split(",")[:world_size]
    return {"PADDLE_TRAINER_ID": str(rank), "PADDLE_TRAINERS_NUM": str(world_size),
            "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
            "PADDLE_CURRENT_ENDPOINT": endpoints[rank], "PADDLE_RANK_IN_NODE": str(rank),
            "FLAGS_selected_gpus": str(rank)}


def test_single_process_is_rank_0_of_1():
    env = distributed.read_distributed_env({})
    assert (env.rank, env.world_size, env.is_main, env.is_distributed) == (0, 1, True, False)


def test_launch_environment_is_read():
    env = distributed.read_distributed_env(_launch_env(1))
    assert (env.rank, env.world_size, env.local_rank, env.gpu_id) == (1, 2, 1, 1)
    assert env.endpoints == tuple(ENDPOINTS.split(",")) and env.current_endpoint == "127.0.0.1:36171"
    assert env.is_distributed and not env.is_main


@pytest.mark.parametrize("change, message", [
    ({"PADDLE_TRAINER_ID": "2"}, r"PADDLE_TRAINER_ID=2 must be in \[0, 2\)"),
    ({"PADDLE_TRAINERS_NUM": "two"}, r"PADDLE_TRAINERS_NUM='two' is not an integer"),
    ({"PADDLE_TRAINER_ENDPOINTS": "127.0.0.1:1"}, r"lists 1 endpoints, PADDLE_TRAINERS_NUM says 2"),
    ({"FLAGS_selected_gpus": "gpu0"}, r"FLAGS_selected_gpus='gpu0' is not a GPU index"),
])
def test_inconsistent_launch_environment_is_a_user_error(change, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.read_distributed_env(dict(_launch_env(0), **change))


def test_cpu_place_with_a_one_line_notice():
    notices = []
    env = distributed.read_distributed_env({})
    place = distributed.select_place(False, env, log=notices.append)
    assert isinstance(place, paddle.CPUPlace) and notices == ["notice: use_gpu is false; running on CPU"]
    notices.clear()
    place = distributed.select_place(True, env, log=notices.append)
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        assert isinstance(place, paddle.CUDAPlace) and notices == []
    else:
        assert isinstance(place, paddle.CPUPlace)
        assert len(notices) == 1 and notices[0].startswith("notice: use_gpu is true but ")
        assert notices[0].endswith("; running on CPU")


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="CPU-only paddle behaviour")
def test_multi_worker_launch_on_cpu_is_refused():
    env = distributed.read_distributed_env(_launch_env(0))
    with pytest.raises(distributed.DistributedError, match=r"2 workers were launched but this run "
                                                           r"is on CPU .*needs paddlepaddle-gpu"):
        distributed.select_place(True, env)


# The collective train program of one worker, built in its own process (fleet state is global).
# CPU builds of paddle lack the NCCL ops (c_gen_nccl_id, c_comm_init) that fleet puts in the
# startup program, so the communicator set-up is recorded instead of appended; the gradient
# all-reduce in the main program is paddle's own, untouched.
WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import slim, paddle
    paddle.enable_static()
    from paddle.distributed.fleet.meta_optimizers import raw_program_optimizer
    communicators = []
    def record_process_group(self):
        self._get_process_group_info()
        communicators.append([self.global_rank, self.global_nranks, list(self.global_endpoints)])
    raw_program_optimizer.RawProgramOptimizer._init_process_group = record_process_group

    from slim.engine import distributed
    from slim.model import YOLOv3, MobileNet, YOLOv3Head
    from slim.engine.optimizer import LearningRate, OptimizerBuilder
    from slim.engine.programs import ProgramSet
    env = distributed.read_distributed_env()
    distributed.init_collective(env)
    model = YOLOv3(MobileNet(norm_type="sync_bn", conv_group_scale=0.125), YOLOv3Head(num_classes=2))
    programs = ProgramSet(model, [3, 64, 64], OptimizerBuilder(), LearningRate(0.001, []).scheduler(),
                          env, sync_bn=True)

    def describe(program):
        block = program.global_block()
        reduced = set()
        for op in distributed.gradient_allreduce_ops(program):
            reduced.update(op.input_arg_names)
        for op in block.ops:  # gradients are all-reduced as fused buffers that coalesce_tensor views
            if op.type == "coalesce_tensor" and set(op.output("FusedOutput")) & reduced:
                reduced.update(op.output("Output"))
        types = [op.type for op in block.ops]
        grads = sorted(p.name + "@GRAD" for p in block.all_parameters() if p.trainable)
        return {{
            "allreduce_types": sorted({{op.type for op in distributed.gradient_allreduce_ops(program)}}),
            "grads": grads, "reduced": sorted(reduced),
            "batch_norm": types.count("batch_norm"), "sync_batch_norm": types.count("sync_batch_norm"),
            "sync_batch_norm_grad": types.count("sync_batch_norm_grad"),
            "conv2_1_sep_weights": list(block.var("conv2_1_sep_weights").shape),
        }}

    before = describe(programs.train.program)
    # Pruning on several cards: planned and applied on a single-card twin, then the
    # collective train program is rebuilt with the plan.
    scope = paddle.static.Scope()
    paddle.static.Executor(paddle.CPUPlace()).run(programs.startup, scope=scope)
    plan = programs.plan("conv2_1_sep_weights|yolo_block.0.0.0.conv.weights", 0.05, "l1_norm", scope)
    programs.apply(plan, scope)
    after = describe(programs.train.program)
    after["scope_conv2_1_sep_weights"] = list(scope.find_var("conv2_1_sep_weights").get_tensor().shape())
    after["scope_velocity"] = list(scope.find_var("conv2_1_sep_weights_velocity_0").get_tensor().shape())
    print(json.dumps({{"before": before, "after": after, "communicators": communicators}}))
""")


@pytest.fixture(scope="module")
def worker_programs(tmp_path_factory):
    script = tmp_path_factory.mktemp("fleet") / "worker.py"
    script.write_text(WORKER.format(root=ROOT))
    results = []
    for rank in (0, 1):
        env = dict(os.environ, **_launch_env(rank))
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def test_two_worker_program_all_reduces_every_gradient(worker_programs):
    expected_type = "c_allreduce_sum" if paddle.__version__.startswith("2.") else "all_reduce"
    for rank, built in enumerate(worker_programs):
        for stage in ("before", "after"):  # as built, and rebuilt after pruning
            program = built[stage]
            assert program["allreduce_types"] == [expected_type]
            assert len(program["grads"]) > 100  # every conv / bn parameter has a gradient
            assert set(program["grads"]) <= set(program["reduced"]), \
                sorted(set(program["grads"]) - set(program["reduced"]))[:5]
        # fleet set up one communicator per build: this rank of 2, over both endpoints
        assert built["communicators"] == [[rank, 2, ENDPOINTS.split(",")]] * 2


def test_sync_bn_replaces_every_batch_norm_on_multiple_cards(worker_programs):
    for built in worker_programs:
        for stage in ("before", "after"):
            program = built[stage]
            assert program["batch_norm"] == 0
            # 27 in MobileNetV1 (conv1 + 13 depthwise-separable blocks) + 20 in the YOLOv3 head
            assert program["sync_batch_norm"] == program["sync_batch_norm_grad"] == 47


def test_pruning_on_two_workers_rebuilds_the_collective_program(worker_programs):
    for built in worker_programs:
        before, after = built["before"], built["after"]
        assert before["conv2_1_sep_weights"][0] == 8
        assert after["conv2_1_sep_weights"][0] < 8
        assert after["scope_conv2_1_sep_weights"] == after["conv2_1_sep_weights"]
        assert after["scope_velocity"] == after["conv2_1_sep_weights"]  # momentum pruned too
    assert worker_programs[0]["after"] == worker_programs[1]["after"]  # same plan on both ranks


class _Feed:
    batch_size, drop_last, shuffle = 3, False, True
    mixup_epoch, num_max_boxes, bufsize, num_workers, use_process = 0, 50, 8, 0, False

    def sizes(self):
        return [64]


def test_reader_gives_each_rank_its_shard():
    records = [{"im_id": i} for i in range(23)]
    shards = []
    for rank in range(2):
        env = distributed.read_distributed_env(_launch_env(rank))
        loader = TrainLoader(_Feed(), records, rank=env.rank, world_size=env.world_size, seed=7)
        for epoch in (0, 1):
            indices = [key[2] for batch in loader.epoch_keys(epoch) for key in batch]
            shards.append((rank, epoch, indices))
    for epoch in (0, 1):
        rank0, rank1 = (indices for rank, e, indices in shards if e == epoch)
        assert len(rank0) == len(rank1) == 12  # rank 1's 11 padded by the epoch's first sample
        assert set(rank0) & set(rank1) == {rank0[0]} == {rank1[-1]}
        assert set(rank0) | set(rank1) == set(range(23))
    first_epochs = [indices for rank, e, indices in shards if e == 0]
    second_epochs = [indices for rank, e, indices in shards if e == 1]
    assert first_epochs != second_epochs  # reshuffled every epoch
