"""Defaults that were measured on one JAX backend, applied on that backend only.

The matmul convolution (with its inference-only paths) and training without state donation were
measured faster on XLA's CPU backend; GPUs and TPUs keep XLA's own convolution and donate the
state. Each default is resolved when a model or a step is built, from the backend JAX runs on
then, never at import: a run trained on the CPU and restored on a GPU gets the GPU's defaults.
"""

import jax


def on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def default_conv() -> str:
    """The convolution implementation (a `models.CONV_IMPLEMENTATIONS` name) for this backend."""
    return "matmul" if on_cpu() else "xla"


def default_donate() -> bool:
    """Whether the train step donates the state it is given (lets XLA update it in place)."""
    return not on_cpu()
