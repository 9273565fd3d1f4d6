"""R-Drop's loss (jaxdrop.r_drop_loss, jaxdrop.symmetric_kl) against a NumPy transcription of the reference code.

The reference: github.com/dropreg/R-Drop, fairseq_src/examples/translation_rdrop/translation_rdrop_src/loss/
reg_label_smooth_cross_entropy.py, ``RegLabelSmoothedCrossEntropyCriterion.forward_reg`` and its
``compute_kl_loss``: the batch concatenated with itself in one forward pass, the NLL summed over both copies,
``reg_alpha`` times ``(sum kl_div(p, q_tec) + sum kl_div(q, p_tec)) / 2``, and the gradient divided by the
sample size (the examples of the batch before the concatenation).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from tests._asserts import assert_close_ulp, assert_trees_equal


def _log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kl_div(input_log, target):
  """torch.nn.functional.kl_div(input, target, reduction='none'): target * (log target - input)."""
  return target * (np.log(target) - input_log)


def reference_forward_reg(logits_cat, targets, reg_alpha):
  """forward_reg with label_smoothing 0 (vanilla NLL) and no padding, over its sample size, in float64."""
  lprobs = _log_softmax(logits_cat.astype(np.float64))  # model.get_normalized_probs(net_output, log_probs=True)
  target = np.concatenate([targets, targets])  # torch.cat([target, target.clone()], dim=0)
  nll = -np.take_along_axis(lprobs, target[:, None], axis=-1).sum()  # label_smoothed_nll_loss, reduce=True
  # compute_kl_loss: torch.split into the two copies, both directions, summed, halved.
  p, q = np.split(lprobs, 2)
  p_tec, q_tec = np.split(np.exp(lprobs), 2)
  kl = (_kl_div(p, q_tec).sum() + _kl_div(q, p_tec).sum()) / 2
  sample_size = len(targets)  # sample['ntokens'] of the batch before the concatenation
  return (nll + reg_alpha * kl) / sample_size


def _cross_entropy(logits, labels):
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def _logits(n=6, classes=5, seed=0):
  return 2.0 * jax.random.normal(jax.random.key(seed), (2 * n, classes))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 5.0])
def test_the_mean_r_drop_loss_is_half_the_reference_forward_reg(alpha):
  logits = _logits()
  labels = jnp.array([0, 1, 2, 3, 4, 0], jnp.int32)
  rows = _cross_entropy(logits, jnp.concatenate([labels, labels]))
  ours = float(jnp.mean(jaxdrop.r_drop_loss(logits, rows, alpha=alpha)))
  # Halved: the task loss is the mean over the two copies (at alpha = 0, an ordinary dropout loss).
  reference = reference_forward_reg(np.asarray(logits), np.asarray(labels), alpha) / 2
  assert ours == pytest.approx(reference, rel=2e-6)


def test_symmetric_kl_is_the_mean_of_both_torch_kl_divs_per_row():
  logits = _logits(n=4, classes=7, seed=1)
  p, q = logits[:4], logits[4:]
  lp, lq = _log_softmax(np.asarray(p, np.float64)), _log_softmax(np.asarray(q, np.float64))
  # compute_kl_loss's two kl_div's (reduction='none'), summed over the classes of each row.
  expected = (_kl_div(lp, np.exp(lq)).sum(-1) + _kl_div(lq, np.exp(lp)).sum(-1)) / 2
  np.testing.assert_allclose(np.asarray(jaxdrop.symmetric_kl(p, q)), expected, rtol=2e-6)


def test_symmetric_kl_is_zero_for_equal_logits_nonnegative_and_symmetric():
  logits = _logits(n=8, classes=3, seed=2)
  p, q = logits[:8], logits[8:]
  np.testing.assert_array_equal(np.asarray(jaxdrop.symmetric_kl(p, p)), np.zeros(8, np.float32))
  assert bool(jnp.all(jaxdrop.symmetric_kl(p, q) >= 0))  # every term (p - q)(log p - log q) is >= 0
  # Swapping negates both factors of every term, exactly in floating point: bitwise by construction.
  assert_trees_equal(jaxdrop.symmetric_kl(p, q), jaxdrop.symmetric_kl(q, p))
  # A shift of the logits leaves the softmax, hence the divergence, unchanged (up to rounding).
  assert_close_ulp(jaxdrop.symmetric_kl(p + 3.0, q), jaxdrop.symmetric_kl(p, q), ulp=64, scale="max")


def test_at_alpha_zero_the_loss_is_the_mean_of_the_copies_task_losses():
  logits = _logits()
  rows = jnp.arange(12, dtype=jnp.float32) / 7
  # (a + b) / 2 + 0 * kl: adding an exact zero leaves the mean's bits (kl is finite).
  assert_trees_equal(jaxdrop.r_drop_loss(logits, rows, alpha=0.0), (rows[:6] + rows[6:]) / 2)


def test_sequence_logits_average_the_divergence_over_positions_a_per_example_loss_lacks():
  logits = jax.random.normal(jax.random.key(3), (4, 3, 5))  # 2 examples x 2 copies, 3 positions, 5 classes
  per_example = jnp.array([0.5, 1.0, 1.5, 2.0])
  per_position = jnp.ones((4, 3))
  kl = jaxdrop.symmetric_kl(logits[:2], logits[2:])  # (2, 3)
  assert_close_ulp(jaxdrop.r_drop_loss(logits, per_example, alpha=2.0),
                   jnp.array([1.0, 1.5]) + jnp.mean(kl, axis=1), ulp=4, scale="max")
  assert_close_ulp(jaxdrop.r_drop_loss(logits, per_position, alpha=2.0), 1.0 + kl, ulp=4, scale="max")


def test_a_traced_alpha_gives_the_python_alphas_loss():
  logits, rows = _logits(), jnp.linspace(0.1, 2.0, 12)
  traced = jax.jit(lambda a: jaxdrop.r_drop_loss(logits, rows, alpha=a))(jnp.float32(1.5))
  assert_close_ulp(traced, jaxdrop.r_drop_loss(logits, rows, alpha=1.5), ulp=4, scale="max")


def test_the_loss_flows_gradients_into_both_copies():
  logits, rows = _logits(n=3), jnp.zeros(6)
  grads = jax.grad(lambda z: jnp.sum(jaxdrop.r_drop_loss(z, rows, alpha=1.0)))(logits)
  # A gradient through a softmax sums to zero over the classes (up to rounding); every row of both copies
  # gets one.
  scale = float(jnp.max(jnp.abs(grads)))
  np.testing.assert_allclose(np.asarray(jnp.sum(grads, axis=-1)), np.zeros(6), atol=1e-6 * scale)
  assert bool(jnp.all(jnp.abs(grads).sum(-1) > 0.01 * scale))


@pytest.mark.parametrize("alpha, error, match", [
    (-0.1, ValueError, "alpha must be a finite number >= 0"),
    (float("nan"), ValueError, "alpha must be a finite number >= 0"),
    (True, TypeError, "alpha must be a real number"),
    (jnp.ones(2), ValueError, "alpha must be a scalar"),
])
def test_a_bad_alpha_is_refused_with_its_name(alpha, error, match):
  with pytest.raises(error, match=match):
    jaxdrop.r_drop_loss(_logits(), jnp.zeros(12), alpha=alpha)


def test_an_odd_batch_or_mismatched_shapes_are_refused():
  with pytest.raises(ValueError, match="concatenated with itself"):
    jaxdrop.r_drop_loss(jnp.zeros((3, 4)), jnp.zeros(3), alpha=1.0)
  with pytest.raises(ValueError, match="task_loss must be the loss of each row"):
    jaxdrop.r_drop_loss(jnp.zeros((4, 4)), jnp.zeros(2), alpha=1.0)
  with pytest.raises(ValueError, match="same shape"):
    jaxdrop.symmetric_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
