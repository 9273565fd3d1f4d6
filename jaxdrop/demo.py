"""A short tour of the API: ``python -m jaxdrop.demo``."""

import jax
import jax.numpy as jnp

import jaxdrop


def main() -> None:
  x = jnp.arange(16, dtype=jnp.float32).reshape(2, 8)
  for rate in (0.0, 0.5, 1.0):
    print(f"dropout(x, rate={rate}):\n{jaxdrop.dropout(jax.random.key(0), x, rate)}")
  print("classic dropout at evaluation (x * (1 - 0.5)):\n", jaxdrop.dropout_eval(x, 0.5, mode="classic"))
  params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
  print("l2_penalty over the kernel only:", float(jaxdrop.l2_penalty(params)))


if __name__ == "__main__":
  main()
