"""Test-only launcher: compress.py / train.py on several CPU ranks, collective over gloo.

Paddle's classic static-graph collective training does not start on a CPU build
(PLATFORM.md): fleet's communicator set-up has CUDA and XPU branches only. Three
replacements, made at run time in each rank's process (no file of Paddle or of the
tool is edited), let the tool's real multi-card path run on CPU:

1. the tool's `distributed.select_place` gives CPUPlace to a multi-worker run (it
   refuses one otherwise: on a real machine that is a GPU job landed on CPU);
2. the tool's `distributed.init_collective` also creates a gloo communicator for ring 0
   (3.x: `CommContextManager.create_gloo_comm_context` on the global TCP store;
   2.6: `paddle.distributed.gloo_init_parallel_env`);
3. Paddle's private `RawProgramOptimizer._init_process_group` keeps only fleet's
   parameter broadcast, without the NCCL set-up ops (`c_gen_nccl_id`, `c_comm_init`,
   `c_sync_comm_stream`), which have no CPU kernels.

Everything else is the product unmodified: fleet's gradient all-reduce and scaling,
the tool's sharding, strategies, checkpoints and resume.

For the tests' eyes only, a rank also (all switched by environment variables):
- records the sample keys it trained on (SLIM_TEST_DUMP_DIR/keys-rank{R}.json) and its
  own losses of every step (losses-rank{R}.json),
- dumps every persistable of its train program and its plan records after the run
  (SLIM_TEST_DUMP_DIR/rank{R}.npz, rank{R}.json),
- records every file it opens for writing (rank 0 too: the probe is seen to work), creates, renames or removes
  (rank{R}-writes.json, through a Python audit hook),
- kills itself with SIGKILL before its SLIM_TEST_KILL_AT_STEP-th training step,
- reads the whole dataset instead of its shard (SLIM_TEST_SAME_DATA=1).

Run one rank: `python tests/cpu_ranks.py SCRIPT ARGS...` (with the PADDLE_TRAINER_*
variables set); `launch()` starts them all. On a GPU machine,
`SLIM_TEST_CPU_REPLACEMENTS=0 SLIM_TEST_DUMP_DIR=DIR python -m paddle.distributed.launch
--gpus 0,1 tests/cpu_ranks.py compress.py ...` keeps Paddle's NCCL path and only probes;
`python tests/cpu_ranks.py --compare DIR` then says which tensors differ between ranks.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.abspath(__file__)
DUMP_DIR = "SLIM_TEST_DUMP_DIR"
KILL_AT_STEP = "SLIM_TEST_KILL_AT_STEP"
SAME_DATA = "SLIM_TEST_SAME_DATA"
GLOO_ENDPOINT = "SLIM_TEST_GLOO_ENDPOINT"
CPU_REPLACEMENTS = "SLIM_TEST_CPU_REPLACEMENTS"  # "0" on a GPU machine: probes only, real NCCL


def missing_internals():
    """Why the replacements cannot be made on this Paddle (None when they can): the
    private Paddle names they rely on."""
    import paddle
    try:
        from paddle.distributed.fleet.meta_optimizers import raw_program_optimizer
    except ImportError as error:
        return f"paddle {paddle.__version__} has no fleet raw_program_optimizer ({error})"
    cls = getattr(raw_program_optimizer, "RawProgramOptimizer", None)
    for name in ("_init_process_group", "_get_process_group_info", "_broadcast_params"):
        if cls is None or not hasattr(cls, name):
            return f"paddle {paddle.__version__} lacks RawProgramOptimizer.{name}"
    if paddle.__version__.startswith("2."):
        if not hasattr(paddle.distributed, "gloo_init_parallel_env"):
            return f"paddle {paddle.__version__} lacks paddle.distributed.gloo_init_parallel_env"
    else:
        from paddle.base import core
        manager = getattr(core, "CommContextManager", None)
        if manager is None or not hasattr(manager, "create_gloo_comm_context") \
                or not hasattr(core, "create_or_get_global_tcp_store"):
            return (f"paddle {paddle.__version__} lacks core.CommContextManager."
                    "create_gloo_comm_context or core.create_or_get_global_tcp_store")
    if not paddle.distributed.is_available():
        return f"paddle {paddle.__version__} is built without distributed support"
    return None


# --- inside a rank ----------------------------------------------------------------------------

def _install_replacements():
    import paddle
    from paddle.distributed.fleet.meta_optimizers import raw_program_optimizer

    from slim.engine import distributed

    def select_place(use_gpu, env, log=print):
        if not env.is_distributed:
            return original_select_place(use_gpu, env, log)
        distributed.use_all_cpu_threads()
        return paddle.CPUPlace()

    def init_collective(env):
        started = original_init_collective(env)
        if started:
            if paddle.__version__.startswith("2."):
                paddle.distributed.gloo_init_parallel_env(env.rank, env.world_size,
                                                          os.environ[GLOO_ENDPOINT])
            else:
                from paddle.base import core
                core.CommContextManager.create_gloo_comm_context(
                    core.create_or_get_global_tcp_store(), "0", env.rank, env.world_size)
        return started

    def init_process_group(self):
        self._get_process_group_info()
        self._broadcast_params(self.global_ring_id)  # every rank starts from rank 0's weights
        block = self.startup_program.global_block()
        for index in reversed(range(len(block.ops))):
            if block.ops[index].type == "c_sync_comm_stream":  # a CUDA stream sync
                block._remove_op(index)

    original_select_place, original_init_collective = distributed.select_place, \
        distributed.init_collective
    distributed.select_place = select_place
    distributed.init_collective = init_collective
    raw_program_optimizer.RawProgramOptimizer._init_process_group = init_process_group


def _install_probes(rank, dump_dir):
    """The tests' probes: sample keys, write audit, self-kill, whole-data loader, dump."""
    import numpy as np

    from slim.data import loader as loader_lib
    from slim.runs import loop

    keys_seen = []
    losses_seen = []  # this rank's own losses, step by step
    writes = []
    recording = [True]

    original_epoch_keys = loader_lib.TrainLoader.epoch_keys

    def epoch_keys(self, epoch, first_batch=0):
        for batch in original_epoch_keys(self, epoch, first_batch):
            keys_seen.append([list(key) for key in batch])
            yield batch
    loader_lib.TrainLoader.epoch_keys = epoch_keys

    if os.environ.get(SAME_DATA) == "1":
        original_build = loader_lib.build_train_loader

        def build_train_loader(feed, rank=0, world_size=1, seed=0, **kwargs):
            return original_build(feed, rank=0, world_size=1, seed=seed, **kwargs)
        loader_lib.build_train_loader = build_train_loader

    kill_at = int(os.environ.get(KILL_AT_STEP, "0"))
    original_train_step = loop.train_step

    def train_step(job):
        step = original_train_step(job)
        calls = [0]

        def counted(batch):
            calls[0] += 1
            if calls[0] == kill_at:
                _flush_probe_files()
                os.kill(os.getpid(), signal.SIGKILL)
            losses = step(batch)
            losses_seen.append(losses)
            return losses
        return counted
    loop.train_step = train_step

    write_events = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.symlink",
                    "os.link", "os.truncate", "os.chmod", "shutil.rmtree", "shutil.copyfile",
                    "shutil.move"}

    def audit(event, args):
        if not recording[0]:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and isinstance(path, (str, bytes)):
                writes.append([event, os.fsdecode(path)])
        elif event in write_events:
            writes.append([event, os.fsdecode(args[0]) if isinstance(args[0], (str, bytes))
                           else repr(args[0])])
    sys.addaudithook(audit)

    def _flush_probe_files():
        recording[0] = False
        with open(os.path.join(dump_dir, f"keys-rank{rank}.json"), "w") as handle:
            json.dump(keys_seen, handle)
        with open(os.path.join(dump_dir, f"rank{rank}-writes.json"), "w") as handle:
            json.dump(writes, handle)
        with open(os.path.join(dump_dir, f"losses-rank{rank}.json"), "w") as handle:
            json.dump(losses_seen, handle)
        recording[0] = True

    original_run_guarded = loop.run_guarded

    def run_guarded(prepare, after_training=None):
        try:
            job, state, finished = original_run_guarded(prepare, after_training)
        finally:
            _flush_probe_files()
        recording[0] = False
        _dump_state(job, state, rank, dump_dir, np)
        return job, state, finished
    loop.run_guarded = run_guarded


def _dump_state(job, state, rank, dump_dir, np):
    """Every persistable of the train program (by kind) and the run state, for comparison."""
    program = job.programs.train.program
    block = program.global_block()
    parameters = {p.name for p in block.all_parameters()}
    bn_stats = set()
    for op in block.ops:
        if op.type in ("batch_norm", "sync_batch_norm"):
            bn_stats.update(op.input("Mean") + op.input("Variance"))
    arrays, kinds = {}, {}
    for var in program.list_vars():
        if not var.persistable or var.name in ("feed", "fetch"):
            continue
        found = job.scope.find_var(var.name)
        if found is None:
            continue
        try:
            tensor = found.get_tensor()
        except Exception:  # readers and other non-tensor persistables
            continue
        if not tensor._is_initialized():
            continue
        arrays[var.name] = np.array(tensor)
        kinds[var.name] = ("bn_statistic" if var.name in bn_stats else
                           "parameter" if var.name in parameters else "optimizer_state")
    np.savez(os.path.join(dump_dir, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(dump_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"kinds": kinds, "plan_records": state.plan_records if state else None,
                   "iteration": state.iteration if state else None,
                   "max_iters": job.max_iters}, handle)


def compare_dumps(dump_dir, ranks=(0, 1)):
    """{kind: names of the tensors that differ between the ranks' dumps} (parameter,
    optimizer_state, bn_statistic)."""
    import numpy as np
    metas, arrays = [], []
    for rank in ranks:
        with open(os.path.join(dump_dir, f"rank{rank}.json")) as handle:
            metas.append(json.load(handle))
        with np.load(os.path.join(dump_dir, f"rank{rank}.npz")) as loaded:
            arrays.append({name: loaded[name] for name in loaded.files})
    differing = {kind: [] for kind in ("parameter", "optimizer_state", "bn_statistic")}
    for name, kind in metas[0]["kinds"].items():
        values = [rank_arrays.get(name) for rank_arrays in arrays]
        if any(value is None or value.shape != values[0].shape or not np.array_equal(value, values[0])
               for value in values):
            differing[kind].append(name)
    return differing


def _rank_main(argv):
    sys.path.insert(0, ROOT)
    import slim  # noqa: F401  (classic static IR before paddle)
    if os.environ.get(CPU_REPLACEMENTS, "1") == "1":
        _install_replacements()
    dump_dir = os.environ.get(DUMP_DIR)
    if dump_dir:
        _install_probes(int(os.environ.get("PADDLE_TRAINER_ID", "0")), dump_dir)
    import runpy
    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


# --- the launcher -----------------------------------------------------------------------------

def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def rank_environments(world_size, base_env, per_rank=None):
    """The variables `paddle.distributed.launch --nproc_per_node N` gives each rank, plus
    the gloo endpoint the replacement uses; `per_rank[r]` adds to rank r's."""
    ports = free_ports(world_size + 1)
    endpoints = [f"127.0.0.1:{port}" for port in ports[:world_size]]
    environments = []
    for rank in range(world_size):
        env = dict(base_env)
        env.update({
            "PADDLE_TRAINER_ID": str(rank), "PADDLE_TRAINERS_NUM": str(world_size),
            "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
            "PADDLE_CURRENT_ENDPOINT": endpoints[rank], "PADDLE_RANK_IN_NODE": str(rank),
            "PADDLE_LOCAL_RANK": str(rank), "PADDLE_MASTER": endpoints[0],
            "PADDLE_GLOBAL_SIZE": str(world_size), "PADDLE_LOCAL_SIZE": str(world_size),
            "PADDLE_GLOBAL_RANK": str(rank), "PADDLE_NNODES": "1",
            GLOO_ENDPOINT: f"127.0.0.1:{ports[world_size]}",
            "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
        })
        env.update((per_rank or {}).get(rank, {}))
        environments.append(env)
    return environments


class RankResult:
    """What one rank did: returncode (negative: killed by that signal), stdout, stderr."""

    def __init__(self, rank, returncode, stdout, stderr):
        self.rank, self.returncode, self.stdout, self.stderr = rank, returncode, stdout, stderr

    def __repr__(self):
        return f"rank {self.rank}: exit {self.returncode}\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}"


def launch(command, cwd, world_size=2, env=None, per_rank=None, timeout=600, grace=30):
    """Run `command` ([script, args...]) as `world_size` ranks (as `paddle.distributed.launch`
    would); when one rank ends with an error the others get `grace` seconds to end on their
    own, then are killed, as launch does. Returns a RankResult per rank."""
    base = dict(os.environ if env is None else env)
    base["PYTHONPATH"] = ROOT + os.pathsep + base.get("PYTHONPATH", "")
    base.setdefault("GLOG_minloglevel", "2")
    logs, processes = [], []
    for rank_env in rank_environments(world_size, base, per_rank):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        logs.append((out, err))
        processes.append(subprocess.Popen([sys.executable, "-u", THIS, *command], cwd=cwd,
                                          env=rank_env, stdout=out, stderr=err))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes):
            if any(p.poll() not in (None, 0) for p in processes):
                deadline = min(deadline, time.monotonic() + grace)
            if time.monotonic() > deadline:
                for p in processes:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
    results = []
    for rank, (process, (out, err)) in enumerate(zip(processes, logs)):
        out.seek(0)
        err.seek(0)
        results.append(RankResult(rank, process.returncode, out.read(), err.read()))
        out.close()
        err.close()
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:  # python tests/cpu_ranks.py --compare DUMP_DIR
        for kind, names in compare_dumps(sys.argv[2]).items():
            print(f"{kind}: {len(names)} differ between rank 0 and rank 1"
                  + (f" ({', '.join(names[:3])}, ...)" if names else ""))
    else:
        _rank_main(sys.argv[1:])
