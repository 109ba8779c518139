"""Pure training, evaluation and BatchNorm-statistics steps, one jit-compiled function each (loops.py runs them
over a data set)."""

import functools
from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from .augment import augment
from .backends import default_donate
from .recipes import Recipe


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any  # None when the recipe has no EMA
    ema_batch_stats: Any
    rng: jax.Array  # raw uint32 key data, so that checkpoints store it as a plain array

    def eval_variables(self) -> Dict[str, Any]:
        """The weights to evaluate and predict with: the EMA when there is one."""
        if self.ema_params is None:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}


def _is_kernel(path, _leaf) -> bool:
    return path[-1].key == "kernel"


def learning_rate_schedule(recipe: Recipe, steps_per_epoch: int):
    """The learning rate by optimizer step (an optax schedule, or a constant)."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "cosine":
        warmup = min(max(warmup, 1), total - 1) if total > 1 else 0
        lr = optax.warmup_cosine_decay_schedule(0.0, recipe.lr, warmup, max(total, warmup + 1), end_value=0.0)
    elif recipe.schedule == "constant":
        lr = optax.linear_schedule(0.0, recipe.lr, warmup) if warmup else recipe.lr
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    return lr


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optax.GradientTransformation:
    lr = learning_rate_schedule(recipe, steps_per_epoch)
    kernels_only = lambda params: jax.tree_util.tree_map_with_path(_is_kernel, params)  # noqa: E731
    if recipe.optimizer == "adam":
        tx = optax.adam(lr, eps=recipe.adam_eps)
    elif recipe.optimizer == "adamw":
        tx = optax.adamw(lr, eps=recipe.adam_eps, weight_decay=recipe.weight_decay, mask=kernels_only)
    elif recipe.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(recipe.weight_decay, mask=kernels_only),
            optax.sgd(lr, momentum=0.9, nesterov=True),
        )
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    if recipe.freeze_conv_bias:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, _conv_bias_labels)
    return tx


def _conv_bias_labels(params):
    """'frozen' for the bias of every conv (each feeds a BatchNorm), 'train' for everything else."""

    def label(path, _leaf):
        keys = [k.key for k in path]
        is_conv_bias = keys[-1] == "bias" and not keys[-2].startswith("bn") and keys[-2] != "fc"
        return "frozen" if is_conv_bias else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def create_state(variables, tx: optax.GradientTransformation, seed: int, ema: bool = False) -> TrainState:
    params, batch_stats = variables["params"], variables["batch_stats"]
    copy = functools.partial(jax.tree_util.tree_map, jnp.array)  # EMA buffers must not alias the live ones
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.jit(tx.init)(params),
        ema_params=copy(params) if ema else None,
        ema_batch_stats=copy(batch_stats) if ema else None,
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def l2_penalty(params, weight: float):
    """Keras `kernel_regularizer=l2(weight)` on the layers the original regularised."""
    return weight * (jnp.sum(jnp.square(params["conv1"]["kernel"])) + jnp.sum(jnp.square(params["fc"]["kernel"])))


def _cross_entropy(logits, labels, num_classes: int, smoothing: float):
    targets = (
        optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
        if smoothing
        else jax.nn.one_hot(labels, num_classes)
    )
    return optax.softmax_cross_entropy(logits, targets)


def make_train_step(
    model, tx: optax.GradientTransformation, recipe: Recipe, dp=None, donate: Optional[bool] = None
) -> Callable:
    """`(state, images uint8, labels) -> (state, metrics)`, jit-compiled.

    With a `DataParallel` the batch arrives sharded over its mesh and everything else is replicated.
    With `donate` the step takes over the state it is given (its arrays are deleted: use the state
    it returns); None donates where the backend's default says so (`backends.default_donate`).
    """

    def train_step(state: TrainState, images, labels):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        x = images.astype(jnp.float32) / 255.0
        if recipe.augment:
            x = augment(rng, x, recipe.augment_policy)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            if recipe.freeze_batch_norm:
                logits, updates = model.apply(variables, x), {"batch_stats": state.batch_stats}
            else:
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
            loss = _cross_entropy(logits, labels, model.num_classes, recipe.label_smoothing).mean()
            if recipe.l2:
                loss = loss + l2_penalty(params, recipe.l2)
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if recipe.ema_decay:
            d = recipe.ema_decay
            ema = lambda old, new: d * old + (1.0 - d) * new  # noqa: E731
            ema_params = jax.tree_util.tree_map(ema, state.ema_params, params)
            ema_batch_stats = jax.tree_util.tree_map(ema, state.ema_batch_stats, batch_stats)
        else:
            ema_params, ema_batch_stats = None, None
        metrics = {
            "loss": loss,
            "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
            # A non-finite gradient makes the next loss non-finite; checking the loss alone spares a
            # reduction over every gradient each step.
            "finite": jnp.isfinite(loss),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=ema_params,
            ema_batch_stats=ema_batch_stats,
        )
        return new_state, metrics

    # Not donated on the CPU: there XLA copies every parameter each step (the in-place update of a
    # kernel may not overwrite it before the backward pass has read it), slower than allocating a new state.
    if donate is None:
        donate = default_donate()
    donated = (0,) if donate else ()
    if dp is None:
        return jax.jit(train_step, donate_argnums=donated)
    r, b = dp.replicated, dp.batch
    return jax.jit(train_step, in_shardings=(r, b, b), out_shardings=(r, r), donate_argnums=donated)


def make_eval_step(model, dp=None) -> Callable:
    """`(variables, images uint8, labels, mask) -> (loss sum, correct count, probabilities)` in inference mode."""

    def eval_step(variables, images, labels, mask):
        logits = model.apply(variables, images.astype(jnp.float32) / 255.0)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels) & mask
        return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(correct), jax.nn.softmax(logits)

    if dp is None:
        return jax.jit(eval_step)
    r, b = dp.replicated, dp.batch
    return jax.jit(eval_step, in_shardings=(r, b, b, b), out_shardings=(r, r, r))


def make_bn_statistics_step(model, dp=None) -> Callable:
    """`(variables, images uint8) -> batch_stats` holding this batch's own BatchNorm statistics.

    A clone with BatchNorm momentum 0 writes the batch statistics (Keras's unbiased variance) where
    the moving averages would go, each layer seeing inputs normalised as in training.
    """
    probe = model.clone(bn_momentum=0.0)

    def batch_statistics(variables, images):
        _, updates = probe.apply(variables, images.astype(jnp.float32) / 255.0, train=True, mutable=["batch_stats"])
        return updates["batch_stats"]

    if dp is None:
        return jax.jit(batch_statistics)
    return jax.jit(batch_statistics, in_shardings=(dp.replicated, dp.batch), out_shardings=dp.replicated)
