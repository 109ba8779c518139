"""Named experiments: `python -m signs_jax.train --config NAME` (or `sweep NAME`). Each module's docstring says
the command, the wall time on 2 CPU cores and the numbers to expect; `get_config()` returns its TrainConfig."""
