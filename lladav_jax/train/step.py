"""One optimiser step of masked-diffusion training: corrupt, forward/backward over micro-batches, update.

The masks of step s come from fold_in(state.rng, s) and are drawn for the whole global batch before
it is split into micro-batches, so neither a restart nor the micro-batch split changes them. Micro-
batches are scanned; the carry adds loss numerators and gradients and they are divided once by the
batch's number of samples (Eq. 1's normaliser), so the split cannot change the update. With
`compute.loss_chunk` the LM head runs inside the chunked loss (no [B, L, V] logits). Gradients are
taken only with respect to trainable parameters (with LoRA: the adapters, whose dropout draws from
the step's key). With complementary masking the batch is followed by its second view (the masks'
complements, diffusion/loss.py) and every sample counts once per view. A step whose loss or gradient
norm is not finite leaves params and optimiser state untouched and is counted.
"""


import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from lladav_jax import sharding
from lladav_jax.diffusion import loss as diffusion_loss
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import model_inputs
from lladav_jax.train.state import TrainState

# Keys of a host batch that the step reads (besides the model inputs).
LABELS = "labels"
SEGMENT_IDS = "segment_ids"


def step_inputs(batch: dict, *, dialogue_causal: bool) -> dict:
  """The part of a collated batch the train step consumes (drops e.g. crop_mask)."""
  out = model_inputs(batch, dialogue_causal=dialogue_causal)
  out[LABELS] = batch[LABELS]
  out[SEGMENT_IDS] = batch[SEGMENT_IDS]
  return out


def split_micro_batches(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [n, B / n, ...]; micro-batch k holds rows k, k + n, ... so that each device's rows
  spread over all micro-batches and the split needs no communication."""
  b = x.shape[0]
  if b % n:
    raise ValueError(f"batch of {b} rows cannot be split into {n} micro-batches")
  x = x.reshape((b // n, n) + x.shape[1:]).swapaxes(0, 1)
  return nn.with_logical_constraint(x, (None, sharding.ACT_BATCH) + (None,) * (x.ndim - 2))


def make_train_step(model: LLaDAV, tx: optax.GradientTransformation, trainable: frozenset, *,
                    micro_batches: int, mask_eps: float, dialogue_causal: bool, schedule=None,
                    complementary_masking: bool = False):
  """Returns train_step(state, batch) -> (state, metrics).

  `batch` holds `step_inputs` arrays for the whole global batch ([B, ...]); `trainable` is the set of
  flattened parameter paths that get gradients (optimizer.trainable_paths). `schedule`, if given,
  reports the base learning rate at the update count.
  """
  mask_id = model.config.tokens.mask
  loss_chunk = model.compute.loss_chunk
  views = 2 if complementary_masking else 1
  dropout = model.compute.lora is not None and model.compute.lora.dropout > 0

  def micro_numerator(trainable_params, frozen_params, micro):
    variables = {"params": traverse_util.unflatten_dict({**frozen_params, **trainable_params})}
    inputs = model_inputs(micro, dialogue_causal=dialogue_causal)
    corruption = diffusion_loss.Corruption(masked=micro["masked"], p_mask=micro["p_mask"])
    # Dropout keys travel with the rows through the micro-batch split; a micro-batch uses its first row's.
    rngs = {"dropout": jax.random.wrap_key_data(micro["dropout_key"][0])} if dropout else {}
    if loss_chunk:
      hidden = model.apply(variables, **inputs, method=LLaDAV.final_hidden_states, rngs=rngs)
      head = lambda h: model.apply(variables, h, method=LLaDAV.head)
      return diffusion_loss.chunked_diffusion_loss_terms(hidden, head, micro[LABELS], micro[SEGMENT_IDS],
                                                         corruption, chunk=loss_chunk)
    logits = model.apply(variables, **inputs, rngs=rngs)
    return diffusion_loss.diffusion_loss_terms(logits, micro[LABELS], micro[SEGMENT_IDS], corruption)

  grad_fn = jax.value_and_grad(micro_numerator, has_aux=True)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.key, state.step)
    noisy_ids, corruption = diffusion_loss.corrupt(
        rng, batch["input_ids"], batch[LABELS], batch[SEGMENT_IDS], mask_id=mask_id, eps=mask_eps,
        max_p=1.0 - mask_eps if complementary_masking else 1.0)
    samples = views * diffusion_loss.num_samples(batch[SEGMENT_IDS])
    data = dict(batch, input_ids=noisy_ids, masked=corruption.masked, p_mask=corruption.p_mask)
    if complementary_masking:
      second_ids, second = diffusion_loss.complement(batch["input_ids"], batch[LABELS], batch[SEGMENT_IDS],
                                                     corruption, mask_id=mask_id)
      second_view = dict(batch, input_ids=second_ids, masked=second.masked, p_mask=second.p_mask)
      data = jax.tree.map(lambda *views_: jnp.concatenate(views_, axis=0), data, second_view)
    if dropout:
      rows = data["input_ids"].shape[0]
      data["dropout_key"] = jax.random.key_data(jax.random.split(jax.random.fold_in(rng, 1), rows))

    flat = traverse_util.flatten_dict(state.params)
    trainable_params = {k: v for k, v in flat.items() if k in trainable}
    frozen_params = {k: v for k, v in flat.items() if k not in trainable}

    if micro_batches == 1:
      (numerator, counts), grads = grad_fn(trainable_params, frozen_params, data)
    else:
      micro = jax.tree.map(lambda x: split_micro_batches(x, micro_batches), data)

      def body(carry, mb):
        (num, counts), g = grad_fn(trainable_params, frozen_params, mb)
        acc_num, acc_counts, acc_grads = carry
        return (acc_num + num, jax.tree.map(jnp.add, acc_counts, counts),
                jax.tree.map(jnp.add, acc_grads, g)), None

      zeros = (jnp.zeros((), jnp.float32),
               dict(masked_tokens=jnp.zeros((), jnp.int32), supervised_tokens=jnp.zeros((), jnp.int32)),
               jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable_params))
      (numerator, counts, grads), _ = jax.lax.scan(body, zeros, micro)

    denominator = jnp.maximum(samples, 1).astype(jnp.float32)
    loss = numerator / denominator
    grads = jax.tree.map(lambda g: g / denominator, grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    # Frozen params get zero gradients (constants XLA folds away) so the update runs on the whole
    # tree the optimiser state was built for; only trainable leaves are then written. A non-finite
    # step keeps the old values: a select fused into the update (a lax.cond would copy the state).
    full = {k: grads[k] if k in trainable else jnp.zeros(v.shape, v.dtype) for k, v in flat.items()}
    updates, new_opt_state = tx.update(traverse_util.unflatten_dict(full), state.opt_state, state.params)
    keep = lambda new, old: jnp.where(finite, new, old)
    opt_state = jax.tree.map(keep, new_opt_state, state.opt_state)
    flat_updates = traverse_util.flatten_dict(updates)
    params = traverse_util.unflatten_dict(
        {k: keep(v + flat_updates[k].astype(v.dtype), v) if k in trainable else v for k, v in flat.items()})
    skipped = jnp.where(finite, 0, 1).astype(jnp.int32)
    update_count = state.step - state.skipped_steps  # the optimiser's count for this update
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              skipped_steps=state.skipped_steps + skipped,
                              consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1))
    metrics = dict(
        loss=loss, grad_norm=grad_norm, finite=finite, samples=samples,
        tokens=jnp.sum(batch[SEGMENT_IDS] > 0, dtype=jnp.int32),
        masked_tokens=counts["masked_tokens"], supervised_tokens=counts["supervised_tokens"],
        skipped_steps=new_state.skipped_steps, consecutive_skips=new_state.consecutive_skips)
    if schedule is not None:
      metrics["learning_rate"] = schedule(update_count)
    return new_state, metrics

  return train_step


def jit_train_step(train_step, state_shardings: TrainState, batch_shardings: dict, mesh, rules):
  """jit with the state donated and laid out by `state_shardings`; metrics replicated.

  The returned callable enters the mesh and the logical-axis rules, which tracing needs."""
  rules = sharding.normalize_rules(rules)
  jitted = jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, None), donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  run.jitted = jitted
  return run
