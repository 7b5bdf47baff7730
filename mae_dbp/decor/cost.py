"""Which way of computing a DBP layer costs fewer multiply-adds: pure functions of the shapes.

Notation: d = input features (the size of R), out = output features, rows = input rows of one
forward (tokens, or conv output positions), n = rows of the kept subsample. Costs are the work DBP
adds to the plain layer (whose forward + backward is about 3·rows·d·out multiply-adds either way).

Forward forms (per forward and its backward):

- fused, y = (W R) x with A = W R cached: building A costs out·d² once per change of W or R (so
  once per optimizer step, shared by every forward until then: micro-batches, validation batches),
  and each backward turns dL/dA into W's gradient dL/dA · Rᵀ: out·d² more.
- unfused, y = W (R x): z = R x costs rows·d² in the forward, and the input's gradient Rᵀ dL/dz
  another rows·d² in the backward (only when the input needs a gradient). W's gradient dL/dy zᵀ
  costs what the plain layer's does.
"""

from __future__ import annotations


def fused_is_cheaper(rows: int, d: int, out: int, *, cached: bool, forwards_per_build: float = 1.0,
                     weight_grad: bool = True, input_grad: bool = True) -> bool:
    """Whether the fused form (W R) x adds no more work than the unfused W (R x) for this forward.

    cached: A = W R is up to date (its build is already paid); forwards_per_build: how many
    forwards are expected to share one build (the build's cost is spread over them);
    weight_grad / input_grad: whether W / the input x get a gradient in this forward's backward.
    Ties go to the fused form (one matmul less per forward, fewer kernel launches).
    """
    build = 0.0 if cached else 1.0 / max(forwards_per_build, 1.0)
    fused = out * d * d * (build + (1.0 if weight_grad else 0.0))
    unfused = rows * d * d * (2.0 if input_grad else 1.0)
    return fused <= unfused


def gram_is_cheaper(n: int, d: int) -> bool:
    """Whether n subsample rows are better folded into XᵀX (S = R (XᵀX) Rᵀ: n·d² + 2·d³) than kept
    as rows (S = Zᵀ Z with Z = X Rᵀ: 2·n·d²): true when n > 2·d."""
    return n > 2 * d


def rows_update_is_cheaper(n: int, d: int) -> bool:
    """Whether the R step from n rows Z (Z R, Zᵀ (Z R), the metric's n x n Z Zᵀ: 2·n·d² + n²·d)
    beats the dense one (S = Zᵀ Z, then S R: n·d² + d³); Z = X Rᵀ (n·d²) is paid by both.
    True when n·(n + d) < d², i.e. n < 0.62·d."""
    return n * (n + d) < d * d
