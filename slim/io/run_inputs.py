"""The paths a run reads: none of its output places may be one of them (or, for a directory
the run replaces as a whole, hold one). See `slim.io.output_places`."""


def feed_dataset_dirs(cfg, feed_keys):
    """The dataset_dir of each feed of `cfg` named by `feed_keys` (e.g. 'eval_feed') that
    is set."""
    from slim.config import create
    directories = []
    for key in feed_keys:
        if cfg.get(key):
            dataset = getattr(create(cfg[key], cfg), "dataset", None)
            directory = getattr(dataset, "dataset_dir", None)
            if directory:
                directories.append(directory)
    return directories


def config_inputs(cfg, feed_keys, *paths):
    """The inputs of a run of `cfg`: the dataset dirs of `feed_keys`, the config's `weights`
    and `pretrain_weights`, and `paths` (the config file, a model dir ...); unset ones left
    out."""
    candidates = [*feed_dataset_dirs(cfg, feed_keys), cfg.get("weights"),
                  cfg.get("pretrain_weights"), *paths]
    return [str(path) for path in candidates if path]
