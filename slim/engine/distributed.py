"""Multi-card data parallel for static programs: environment, device, fleet collective.

`python -m paddle.distributed.launch --gpus 0,1,2,3 compress.py ...` starts one
process per card and tells each who it is through environment variables
(PADDLE_TRAINER_ID, PADDLE_TRAINERS_NUM, PADDLE_TRAINER_ENDPOINTS,
PADDLE_CURRENT_ENDPOINT, PADDLE_RANK_IN_NODE / PADDLE_LOCAL_RANK,
FLAGS_selected_gpus). `read_distributed_env` turns them into a
`DistributedEnv`; a plain `python compress.py` is rank 0 of 1.

With more than one worker the optimizer is wrapped by
`fleet.distributed_optimizer` (collective mode): its `minimize` inserts the
gradient all-reduce (`c_allreduce_sum` on Paddle 2.6, `all_reduce` on 3.x) and
the NCCL communicator set-up into the programs. Each rank reads its own shard
of the data, `batch_size` is per card, and only rank 0 writes files.

The collective path needs a CUDA build of Paddle and GPUs (NCCL); it does not
run on CPU (PLATFORM.md), so a multi-worker launch on CPU stops with a clear
message, and a single process with `use_gpu: true` on a CPU-only Paddle runs on
CPU with a one-line notice.
"""
import dataclasses
import os

from slim.errors import UserError

GRADIENT_ALLREDUCE_OP_TYPES = ("c_allreduce_sum", "all_reduce")


class DistributedError(UserError):
    """The multi-card environment is inconsistent or cannot run here."""


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """Who this process is in a data-parallel job.

    Attributes:
        rank: global index of this worker (0 for a single process).
        world_size: number of workers (cards).
        local_rank: index of this worker on its machine.
        endpoints: every worker's `ip:port`, in rank order.
        current_endpoint: this worker's `ip:port`.
        gpu_id: the card `paddle.distributed.launch` gave this worker
            (FLAGS_selected_gpus), or None when not set.
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    endpoints: tuple = ()
    current_endpoint: str = ""
    gpu_id: object = None

    @property
    def is_distributed(self):
        """More than one worker: gradients must be all-reduced."""
        return self.world_size > 1

    @property
    def is_main(self):
        """Rank 0: the one worker that writes checkpoints, exports and logs files."""
        return self.rank == 0


def _int_env(environ, name, default):
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text!r} is not an integer") from None


def read_distributed_env(environ=None):
    """The DistributedEnv described by `environ` (default: os.environ)."""
    environ = os.environ if environ is None else environ
    world_size = _int_env(environ, "PADDLE_TRAINERS_NUM", 1)
    rank = _int_env(environ, "PADDLE_TRAINER_ID", 0)
    local_rank = _int_env(environ, "PADDLE_RANK_IN_NODE", _int_env(environ, "PADDLE_LOCAL_RANK", 0))
    endpoints = tuple(e for e in environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",") if e)
    current = environ.get("PADDLE_CURRENT_ENDPOINT", "")
    selected = environ.get("FLAGS_selected_gpus", "")
    gpu_id = None
    if selected:
        try:
            gpu_id = int(selected.split(",")[0])
        except ValueError:
            raise DistributedError(f"environment variable FLAGS_selected_gpus={selected!r} is not "
                                   "a GPU index") from None
    if world_size < 1:
        raise DistributedError(f"PADDLE_TRAINERS_NUM={world_size} must be at least 1")
    if not 0 <= rank < world_size:
        raise DistributedError(f"PADDLE_TRAINER_ID={rank} must be in [0, {world_size}) "
                               f"(PADDLE_TRAINERS_NUM={world_size})")
    if world_size > 1:
        if len(endpoints) != world_size:
            raise DistributedError(f"PADDLE_TRAINER_ENDPOINTS lists {len(endpoints)} endpoints, "
                                   f"PADDLE_TRAINERS_NUM says {world_size}; start multi-card jobs "
                                   "with python -m paddle.distributed.launch")
        if current and current != endpoints[rank]:
            raise DistributedError(f"PADDLE_CURRENT_ENDPOINT={current} is not endpoint {rank} "
                                   f"of PADDLE_TRAINER_ENDPOINTS ({','.join(endpoints)})")
        current = current or endpoints[rank]
    return DistributedEnv(rank, world_size, local_rank, endpoints, current, gpu_id)


def cuda_available():
    """(usable, why not): a CUDA build of paddle and at least one visible GPU."""
    import paddle
    if not paddle.device.is_compiled_with_cuda():
        return False, f"this paddle {paddle.__version__} is a CPU-only build"
    try:
        count = paddle.device.cuda.device_count()
    except Exception as error:  # a driver problem surfaces here; report it, run on CPU
        return False, f"CUDA is not usable ({error})"
    if count < 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return False, f"no GPU is visible{where}"
    return True, ""


def select_place(use_gpu, env, log=print):
    """The place to run on: CUDAPlace(this worker's card) when `use_gpu` and a GPU is
    usable, else CPUPlace with a one-line notice. A multi-worker job that would end
    up on CPU is refused: the collective path is NCCL-only."""
    import paddle
    if use_gpu:
        usable, reason = cuda_available()
        if usable:
            # launch sets FLAGS_selected_gpus per worker, relative to CUDA_VISIBLE_DEVICES.
            device = env.gpu_id if env.gpu_id is not None else env.local_rank
            return paddle.CUDAPlace(device)
        notice = f"notice: use_gpu is true but {reason}; running on CPU"
    else:
        notice = "notice: use_gpu is false; running on CPU"
    if env.is_distributed:
        raise DistributedError(
            f"{env.world_size} workers were launched but this run is on CPU ({notice[8:]}): "
            "multi-card data parallel needs paddlepaddle-gpu and GPUs (NCCL); run compress.py "
            "without paddle.distributed.launch to train on one CPU process")
    if env.is_main:
        log(notice)
    use_all_cpu_threads()
    return paddle.CPUPlace()


def use_all_cpu_threads():
    """Let Paddle's CPU kernels use every core (OMP_NUM_THREADS or CPU_NUM, when set, win);
    the Executor uses one thread otherwise. Returns the thread count."""
    from paddle.base import core
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("CPU_NUM")
    try:
        count = max(1, int(threads)) if threads else (os.cpu_count() or 1)
    except ValueError:
        count = os.cpu_count() or 1
    core.set_num_threads(count)
    return count


def init_collective(env):
    """Initialise fleet in collective mode for a multi-worker job (no-op for one worker)."""
    if not env.is_distributed:
        return False
    from paddle.distributed import fleet
    fleet.init(is_collective=True)
    return True


def wrap_optimizer(optimizer, env):
    """`optimizer` as-is for one worker; for several, fleet's collective wrapper whose
    minimize() adds the gradient all-reduce and communicator set-up."""
    if not env.is_distributed:
        return optimizer
    from paddle.distributed import fleet
    strategy = fleet.DistributedStrategy()
    return fleet.distributed_optimizer(optimizer, strategy)


def convert_to_sync_batch_norm(program):
    """Turn every batch_norm (and its grad) in `program` into sync_batch_norm, which
    shares batch statistics across cards; return how many ops changed. Same inputs,
    outputs and attributes: this is what Paddle's sync_batch_norm pass does."""
    renames = {"batch_norm": "sync_batch_norm", "batch_norm_grad": "sync_batch_norm_grad"}
    changed = 0
    for block in program.blocks:
        for op in block.ops:
            new_type = renames.get(op.type)
            if new_type is not None:
                op.desc.set_type(new_type)
                changed += 1
    if changed:
        program._sync_with_cpp()
    return changed


def gradient_allreduce_ops(program):
    """The gradient all-reduce ops in `program` (whichever type this Paddle line inserts)."""
    return [op for op in program.global_block().ops if op.type in GRADIENT_ALLREDUCE_OP_TYPES]


def minimize(optimizer, loss, startup_program, env, sync_bn=False):
    """Append backward + optimizer ops for `loss` to its program: plain `minimize` for one
    worker; for several, fleet's collective data parallel (gradient all-reduce, NCCL
    set-up in `startup_program`) and, with `sync_bn`, batch norm synchronized across
    cards. Call inside `program_guard(loss program, startup_program)`."""
    wrapped = wrap_optimizer(optimizer, env)
    result = wrapped.minimize(loss, startup_program=startup_program)
    if env.is_distributed and sync_bn:
        convert_to_sync_batch_norm(loss.block.program)
    return result


class RankSum:
    """Sums of a few floats over the ranks of a collective run: one all-reduce on ring 0
    (the gradients' communicator) in a tiny program of its own, run by `executor`. Every
    rank must call `sum` at the same point of the run with a vector of the same length.
    One process: the values unchanged, no program."""

    def __init__(self, env, executor):
        self.env = env
        self.executor = executor
        self._program = self._result = self._scope = None

    def sum(self, values):
        """The element-wise sum over ranks of `values` (a float vector), as float64 numpy."""
        import numpy as np
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if not self.env.is_distributed or values.size == 0:
            return values
        if self._program is None:
            self._build()
        reduced, = self.executor.run(self._program, feed={"values": values},
                                     fetch_list=[self._result], scope=self._scope)
        return np.asarray(reduced, dtype=np.float64)

    def mean(self, values):
        """The element-wise mean over ranks of `values`."""
        return self.sum(values) / self.env.world_size

    def _build(self):
        import paddle
        program, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(program, startup):
            values = paddle.static.data("values", [-1], "float64")
            result = paddle.scale(values, 1.0)
            # The op fleet's gradient all-reduce uses on this Paddle line, appended directly:
            # paddle.distributed.all_reduce's static form fails on 3.3.1 (its op name is a
            # ReduceOp, not a string).
            if paddle.__version__.startswith("2."):
                program.global_block().append_op(
                    type="c_allreduce_sum", inputs={"X": [result]}, outputs={"Out": [result]},
                    attrs={"ring_id": 0, "use_calc_stream": True})
            else:
                program.global_block().append_op(
                    type="all_reduce", inputs={"x": [result]}, outputs={"out": [result]},
                    attrs={"ring_id": 0, "reduce_type": int(paddle.distributed.ReduceOp.SUM)})
        self._program, self._result, self._scope = program, result, paddle.static.Scope()


class OtherRanksFailed(DistributedError):
    """Another rank stopped before training; its own error line says why."""


def start_together(rank_sum, failed):
    """Before the first iteration every rank says whether its checks failed (one
    all-reduce), so that no rank trains, alone and waiting, when another has stopped.
    A rank whose checks passed raises OtherRanksFailed if any other rank's failed."""
    env = rank_sum.env
    failures = int(round(float(rank_sum.sum([1.0 if failed else 0.0])[0]))) if env.is_distributed else 0
    if failures and not failed:
        raise OtherRanksFailed(f"{failures} of {env.world_size} ranks stopped before training (their "
                               "error lines say why); nothing was trained")
