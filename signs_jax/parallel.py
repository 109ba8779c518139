"""Data parallelism on JAX's own runtime: one mesh over every device of every process.

The batch axis is sharded over the mesh's `data` axis; parameters, optimizer state and BatchNorm
statistics are replicated. Because the train step is one jit over global arrays, XLA computes the
BatchNorm batch statistics and the gradients over the global batch (synchronous BatchNorm, all-reduced
gradients) with no code of ours. One device is the same code path with a mesh of one.
"""

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from .errors import UserError

if TYPE_CHECKING:  # jax is imported only once the process is set up (see train.main)
    import jax

ENV_COORDINATOR = "SIGNS_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "SIGNS_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SIGNS_JAX_PROCESS_ID"


def multi_process(coordinator: Optional[str]) -> bool:
    """Whether `initialize_distributed` will join several processes (a coordinator is given)."""
    return bool(coordinator or os.environ.get(ENV_COORDINATOR))


def initialize_distributed(coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int]) -> None:
    """`jax.distributed.initialize` from flags or SIGNS_JAX_* variables; nothing when neither is set."""
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if not coordinator:
        return
    num_processes = num_processes if num_processes is not None else int(os.environ.get(ENV_NUM_PROCESSES, "0") or 0)
    process_id = process_id if process_id is not None else int(os.environ.get(ENV_PROCESS_ID, "-1"))
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise UserError(
            f"--coordinator {coordinator}: needs --num-processes N and --process-id 0..N-1 "
            f"(got {num_processes} and {process_id})"
        )
    import jax

    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


@dataclass(frozen=True)
class DataParallel:
    """The mesh, the two shardings the training loop needs, and this process's share of a batch."""

    mesh: "jax.sharding.Mesh"

    @classmethod
    def over_all_devices(cls) -> "DataParallel":
        import jax

        return cls(jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)))

    @property
    def batch(self):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def process_index(self) -> int:
        import jax

        return jax.process_index()

    @property
    def process_count(self) -> int:
        import jax

        return jax.process_count()

    @property
    def is_primary(self) -> bool:
        return self.process_index == 0

    def check_batch_size(self, batch_size: int, what: str = "batch size") -> None:
        if batch_size % self.num_devices:
            raise UserError(
                f"{what} {batch_size} does not divide by the {self.num_devices} devices; "
                f"choose a multiple of {self.num_devices}"
            )

    def shard(self, *global_arrays):
        """Global host batches -> global device arrays; each process transfers only the rows its devices hold."""
        import jax

        out = []
        for array in global_arrays:
            n = array.shape[0]
            per_process = n // self.process_count
            local = array[self.process_index * per_process : (self.process_index + 1) * per_process]
            out.append(jax.make_array_from_process_local_data(self.batch, local, array.shape))
        return out if len(out) > 1 else out[0]

    def replicate(self, tree):
        """Put identical host values on every device (every process holds the same values)."""
        import jax

        if self.process_count == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_callback(np.shape(x), self.replicated, lambda idx: np.asarray(x)[idx]), tree
        )
