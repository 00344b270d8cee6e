"""Write eval and inference models that Paddle Inference and `load_inference_model` load.

    <dir>/__model__         the eval program (feeds image, im_size; fetches bbox,
                            bbox_num and the raw head outputs), classic ProgramDesc
    <dir>/__model__.infer   the inference program: feeds image and im_size, fetches
                            the NMS result (bbox, bbox_num) only; every op not needed
                            for it (training-only ops, raw-output fetches) removed
    <dir>/__params__        all parameters both programs read, combined in name order

Both programs read exactly the same persistables (the raw head outputs are
upstream of NMS), so one `__params__` serves both, as in the seed:

    config = paddle.inference.Config("<dir>/__model__.infer", "<dir>/__params__")
    paddle.static.load_inference_model("<dir>", exe, model_filename="__model__.infer",
                                       params_filename="__params__")
"""
import os

MODEL_NAME = "__model__"
INFER_MODEL_NAME = "__model__.infer"
PARAMS_NAME = "__params__"
EVAL_MODEL_DIR = "eval_model"
INFER_FEEDS = ("image", "im_size")
INFER_FETCHES = ("bbox", "bbox_num")


def _persistable_names(program):
    return sorted(var.name for var in program.list_vars()
                  if var.persistable and var.name not in ("feed", "fetch"))


def _write_bytes(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def export_model(eval_built, scope, executor, out_dir, with_eval_model=True, with_infer_model=True):
    """Write `__model__` (if with_eval_model), `__model__.infer` (if with_infer_model) and
    `__params__` of the eval program `eval_built` (a slim.model BuiltProgram) with the
    parameters in `scope` into `out_dir`; return {file name: path}."""
    import paddle
    if not (with_eval_model or with_infer_model):
        return {}
    os.makedirs(out_dir, exist_ok=True)
    program = eval_built.program
    feeds = [eval_built.feeds[name] for name in INFER_FEEDS]
    infer_fetches = [eval_built.fetches[name] for name in INFER_FETCHES]
    eval_fetches = list(eval_built.fetches.values())

    written = {}
    programs = []
    if with_eval_model:
        programs.append((MODEL_NAME, eval_fetches))
    if with_infer_model:
        programs.append((INFER_MODEL_NAME, infer_fetches))
    param_sets = []
    for file_name, fetches in programs:
        data = paddle.static.serialize_program(feeds, fetches, program=program)
        param_sets.append(_persistable_names(paddle.static.deserialize_program(data)))
        path = os.path.join(out_dir, file_name)
        _write_bytes(path, data)
        written[file_name] = path
    if len(param_sets) == 2 and param_sets[0] != param_sets[1]:
        # One combined __params__ file stores no names; both programs must read the same list.
        raise RuntimeError("the eval and inference programs read different parameters: "
                           f"{sorted(set(param_sets[0]) ^ set(param_sets[1]))[:5]}")
    fetches_for_params = programs[-1][1]
    with paddle.static.scope_guard(scope):
        params = paddle.static.serialize_persistables(feeds, fetches_for_params, executor,
                                                      program=program)
    path = os.path.join(out_dir, PARAMS_NAME)
    _write_bytes(path, params)
    written[PARAMS_NAME] = path
    return written


def load_exported_program(model_dir, executor, scope, model_name=INFER_MODEL_NAME,
                          params_name=PARAMS_NAME):
    """(program, feed names, fetch vars) of an exported model, parameters loaded into `scope`.
    A missing file raises a UserError naming it."""
    import paddle
    from slim.errors import UserError
    for name in (model_name, params_name):
        if not os.path.isfile(os.path.join(model_dir, name)):
            present = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
            from slim.errors import did_you_mean
            raise UserError(f"model file '{os.path.join(model_dir, name)}' does not exist"
                            f"{did_you_mean(name, present)}"
                            f"{'; the dir holds: ' + ', '.join(present) if present else ''}")
    with paddle.static.scope_guard(scope):
        program, feed_names, fetch_vars = paddle.static.load_inference_model(
            model_dir, executor, model_filename=model_name, params_filename=params_name)
    return program, feed_names, fetch_vars


def inference_predictor(model_dir, model_name=INFER_MODEL_NAME, params_name=PARAMS_NAME,
                        use_gpu=False, cpu_threads=None):
    """A `paddle.inference` predictor of an exported model (CPU unless use_gpu)."""
    import paddle.inference as paddle_infer
    config = paddle_infer.Config(os.path.join(model_dir, model_name),
                                 os.path.join(model_dir, params_name))
    if use_gpu:
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
        if cpu_threads:
            config.set_cpu_math_library_num_threads(int(cpu_threads))
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


def run_predictor(predictor, feeds):
    """Run `predictor` on {input name: ndarray}; return its outputs as a list of ndarrays
    in fetch order (for `__model__.infer`: bbox, bbox_num)."""
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        array = feeds[name]
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(array)
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu()
            for name in predictor.get_output_names()]
