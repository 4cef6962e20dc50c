"""The attention mask rule, checked against a plain Python loop over token pairs."""

import numpy as np

from lladav_jax.models.masks import make_attention_mask, visible_keys_mask


def _reference(segments, turns):
  n = len(segments)
  mask = np.zeros((n, n), bool)
  for i in range(n):
    for j in range(n):
      if segments[i] == 0:
        mask[i, j] = i == j  # padding only sees itself
      else:
        mask[i, j] = segments[j] == segments[i] and turns[j] <= turns[i]
  return mask


def test_bidirectional_padding_packing_and_dialogue_causal():
  segments = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
  turns = np.array([[0, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 2, 2, 2]])
  got = np.asarray(make_attention_mask(segments, turns).dense())
  assert got.shape == (2, 1, 7, 7)
  for b in range(2):
    np.testing.assert_array_equal(got[b, 0], _reference(segments[b], turns[b]))
  # Without turns: every real token sees every real token of its segment.
  bidirectional = np.asarray(make_attention_mask(segments).dense())
  np.testing.assert_array_equal(bidirectional[1, 0], np.ones((7, 7), bool))
  np.testing.assert_array_equal(bidirectional[0, 0], _reference(segments[0], np.zeros(7)))
  # Turn 0 never sees turn 1 in the dialogue-causal mask, turn 1 sees turn 0.
  assert not got[1, 0, 0, 2] and got[1, 0, 2, 0]


def test_decoding_masks_and_kernel_padding():
  visible = np.array([[True, False, True, True], [False, True, True, True]])
  got = np.asarray(visible_keys_mask(visible, 3).dense())
  assert got.shape == (2, 1, 3, 4)
  np.testing.assert_array_equal(got[:, 0], np.broadcast_to(visible[:, None, :], (2, 3, 4)))
  # Positions a kernel appends see only each other; the real ones keep their mask.
  segments = np.array([[1, 1, 2, 0, 0]])
  turns = np.array([[0, 1, 0, 0, 0]])
  mask = make_attention_mask(segments, turns)
  padded = np.asarray(mask.padded(8, 7).dense())[0, 0]
  np.testing.assert_array_equal(padded[:5, :5], _reference(segments[0], turns[0]))
  assert not padded[:5, 5:].any() and not padded[5:, :5].any() and padded[5:, 5:].all()
