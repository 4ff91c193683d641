"""Which splits a run loads, and the rules about them: one place, shared by the runner and the reports.

The reports rebuild a recorded run's test split (for per-scene-class recall) with exactly the rules the runner
used to load it, without importing the runner and everything a run needs.
"""

from __future__ import annotations

from pathlib import Path

from rsitr_bench.data.model import Split
from rsitr_bench.errors import DataError, UserError
from rsitr_bench.harness.config import RunConfig
from rsitr_bench.harness.plugins import PluginHost


def load_splits(config: RunConfig, host: PluginHost, trainable: bool, target: str = "test") -> dict[str, Split]:
    """Load the splits a run needs, and nothing more.

    A zero-shot method needs only the scored split (test files alone suffice); a trainable method also
    needs train and val. A validation-only run (``target="val"``, used by sweeps) never loads test.
    """
    spec = host.get("datasets", config.dataset).spec
    root = Path(config.data.root).expanduser() if config.data.root else None
    dataset = spec.factory(root, config.dataset_options)
    defaults = dataset.default_splits()
    roles = ["train", "val"] if trainable else []
    if target not in roles:
        roles.append(target)
    names = {role: getattr(config.data, f"{role}_split") or defaults.get(role) for role in roles}
    if "test" in names and names["test"] in (names.get("train"), names.get("val")):
        raise UserError(f"The test split {names['test']!r} is also used for training or validation; "
                        f"the test split is sealed. Choose other data.train_split / data.val_split.")
    if names.get("train") is not None and names.get("train") == names.get("val"):
        raise UserError(f"The split {names['train']!r} is used for both training and validation; model "
                        f"selection needs held-out data. Set data.val_split to another split.")
    splits = {}
    for role, name in names.items():
        if not name:
            raise DataError(f"Dataset {config.dataset!r} declares no {role} split; set data.{role}_split.")
        splits[role] = dataset.load_split(name)
    return splits
