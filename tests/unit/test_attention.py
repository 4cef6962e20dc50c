"""Every attention implementation against the plain "xla" path, forward and gradients, for every mask kind.

The plain path is itself checked against transformers (tests/parity). "splash" runs its TPU kernel in
Pallas interpret mode on CPU; "cudnn" needs a GPU and is not run here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lladav_jax.models import blockwise_attention, chunked_attention
from lladav_jax.models.attention import dot_product_attention
from lladav_jax.models.masks import make_attention_mask, visible_keys_mask

BATCH, LENGTH, HEADS, KV_HEADS, HEAD_DIM = 2, 300, 4, 2, 16
# float32 on CPU: measured differences are below 1e-6 on outputs and 5e-6 on gradients of order 1
# (another summation order of the softmax); the tolerances leave a few times that.
OUT_ATOL, GRAD_ATOL = 5e-6, 2e-5


def _segments():
  segments = np.ones((BATCH, LENGTH), np.int32)
  segments[0, 100:] = 2  # two packed samples, then padding
  segments[0, 250:] = 0
  segments[1, 280:] = 0
  return segments


def _masks():
  rng = np.random.default_rng(1)
  turns = np.sort(rng.integers(0, 3, (BATCH, LENGTH)), axis=1).astype(np.int32)
  # A decoding window: 40 queries against [260 cached ; 40 own] keys, some cached ones hidden.
  visible = np.ones((BATCH, LENGTH), bool)
  visible[:, 50:90] = False
  visible[1, :7] = False
  return {
      "none": (None, LENGTH),
      "padding_packing": (make_attention_mask(_segments()), LENGTH),
      "dialogue_causal": (make_attention_mask(_segments(), turns), LENGTH),
      "kv_cache_window": (visible_keys_mask(jnp.asarray(visible), 40), 40),
  }


def _inputs(query_length, dtype=jnp.float32):
  rng = np.random.default_rng(0)
  draw = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  return (draw(BATCH, query_length, HEADS, HEAD_DIM), draw(BATCH, LENGTH, KV_HEADS, HEAD_DIM),
          draw(BATCH, LENGTH, KV_HEADS, HEAD_DIM))


def _value_and_grads(impl, mask, q, k, v):
  # A fixed random projection of the output, so that every output element gets its own cotangent.
  weights = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.float32)
  loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, mask, impl).astype(jnp.float32) * weights)
  out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, mask, impl))(q, k, v)
  return np.asarray(out, np.float32), [np.asarray(g, np.float32)
                                       for g in jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
  """Blocks of 64 positions: 300 keys make 5 blocks of 64 (with padding), 40 queries one block;
  query chunks of 64: 300 queries make 5 chunks, the last one padded, 40 queries one chunk."""
  monkeypatch.setattr(blockwise_attention, "BLOCK", 64)
  monkeypatch.setattr(chunked_attention, "QUERY_CHUNK", 64)


# splash cannot express turn ids (test_splash_refuses_turn_ids).
CASES = ([(impl, kind) for impl in ("blockwise", "chunked") for kind in _masks()]
         + [("splash", kind) for kind in _masks() if kind != "dialogue_causal"])


@pytest.mark.parametrize("impl,kind", CASES)
def test_matches_the_plain_path(impl, kind):
  mask, query_length = _masks()[kind]
  q, k, v = _inputs(query_length)
  want_out, want_grads = _value_and_grads("xla", mask, q, k, v)
  got_out, got_grads = _value_and_grads(impl, mask, q, k, v)
  np.testing.assert_allclose(got_out, want_out, atol=OUT_ATOL)
  for name, got, want in zip("qkv", got_grads, want_grads):
    np.testing.assert_allclose(got, want, atol=GRAD_ATOL, err_msg=f"d{name}")
  if mask is not None:  # the mask matters: without it the reference differs far beyond the tolerance
    unmasked, _ = _value_and_grads("xla", None, q, k, v)
    assert np.abs(unmasked - want_out).max() > 1e3 * OUT_ATOL


@pytest.mark.parametrize("impl", ["blockwise", "chunked"])
def test_bfloat16_stays_close_to_float32(impl):
  mask, query_length = _masks()["padding_packing"]
  q, k, v = _inputs(query_length)
  want_out, want_grads = _value_and_grads("xla", mask, q, k, v)
  half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  got_out, got_grads = _value_and_grads(impl, mask, *half)
  plain_out, plain_grads = _value_and_grads("xla", mask, *half)
  # bfloat16 inputs and probabilities (8 bits of mantissa): the error is the plain path's in bfloat16.
  for got, plain, want in zip([got_out] + got_grads, [plain_out] + plain_grads, [want_out] + want_grads):
    assert np.abs(got - want).max() <= 2 * np.abs(plain - want).max() + 1e-2


@pytest.mark.parametrize("kind", ["none", "padding_packing", "kv_cache_window"])
def test_chunked_rows_of_a_batch_equal_each_row_alone(kind):
  """Decoding relies on a row decoding as it would alone: "chunked" computes a batch row by row."""
  mask, query_length = _masks()[kind]
  q, k, v = _inputs(query_length)
  attend = jax.jit(lambda q, k, v, mask: dot_product_attention(q, k, v, mask, "chunked"))
  together = np.asarray(attend(q, k, v, mask))
  for row in range(BATCH):
    pick = lambda x: x[row:row + 1]
    alone = np.asarray(attend(pick(q), pick(k), pick(v), jax.tree_util.tree_map(pick, mask)))
    np.testing.assert_array_equal(together[row:row + 1], alone)


def test_chunked_scratch_memory_does_not_grow_with_the_batch():
  """One chunk's scores are one row's: a batch of 8 needs the scratch memory of one row (compiled,
  not run; 8 heads x 64 queries x 2048 keys of float32 scores are 4 MiB a row)."""
  def scratch_mib(batch):
    shape = jax.ShapeDtypeStruct((batch, 2048, 8, 16), jnp.float32)
    attend = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, None, "chunked"))
    return attend.lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes / 2 ** 20
  one, eight = scratch_mib(1), scratch_mib(8)
  assert eight < 1.25 * one, (one, eight)


def test_splash_refuses_turn_ids():
  mask, query_length = _masks()["dialogue_causal"]
  with pytest.raises(ValueError, match="dialogue-causal"):
    dot_product_attention(*_inputs(query_length), mask, "splash")


def test_cudnn_off_a_gpu_names_the_setting():
  with pytest.raises(ValueError, match="compute.attention_impl = 'cudnn' is a GPU kernel"):
    dot_product_attention(*_inputs(LENGTH), None, "cudnn")


def test_blocks_are_the_fewest_and_evenly_sized():
  for length in (1, 40, 64, 65, 300, 729, 8192):
    size = blockwise_attention.block_length(length)
    blocks = -(-length // size)
    assert size <= blockwise_attention.BLOCK and size % 8 == 0
    assert blocks == -(-length // blockwise_attention.BLOCK)
    assert blocks * size - length < 8 * blocks  # padding: less than one row of 8 per block
