"""Models between the steps of a workflow: the last complete checkpoint of a run, and its
parameters as a weights directory (what a config's `weights` / `pretrain_weights` load)."""
from slim.errors import UserError


def last_checkpoint(checkpoint_root):
    """The highest complete checkpoint (a UserError if there is none)."""
    from slim.io.checkpoint import latest_complete_checkpoint
    checkpoint = latest_complete_checkpoint(checkpoint_root)
    if checkpoint is None:
        raise UserError(f"no complete checkpoint in '{checkpoint_root}'")
    return checkpoint


def write_model_final(checkpoint, config_path, target, overrides=()):
    """Copy the parameters of `checkpoint` to `target` as a weights directory (one file per
    parameter, Paddle's format): what the detection config's `weights` points to."""
    import paddle

    from slim.config import create, load_config
    from slim.io.checkpoint import read_checkpoint_tensors
    from slim.io.weights import save_weights
    from slim.model import build_eval_program
    paddle.enable_static()
    cfg = load_config(config_path, overrides)
    evaluation = build_eval_program(create(cfg["architecture"], cfg),
                                    image_shape=create(cfg["eval_feed"], cfg).image_shape)
    tensors = read_checkpoint_tensors(checkpoint)
    scope = paddle.static.Scope()
    names = [param.name for param in evaluation.program.global_block().all_parameters()]
    for name in names:
        scope.var(name).get_tensor().set(tensors[name], paddle.CPUPlace())
    save_weights(scope, evaluation.program, target)
    return target
