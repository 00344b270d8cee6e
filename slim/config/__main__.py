"""`python -m slim.config list | help MODULE | generate MODULE... | generate --dataset_dir DIR
| analyze FILE [-o ...]`.

An entry point (top layer, as slim/__main__.py): `generate --dataset_dir` reads a dataset
(slim.data.dataset_config), which the config package itself may not import."""
import slim  # noqa: F401  (classic static IR before paddle is imported by the module packages)
from slim.config.cli import main
from slim.data.dataset_config import dataset_config_command

if __name__ == "__main__":
    main(dataset_config=dataset_config_command)
