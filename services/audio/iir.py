"""A streaming IIR filter in plain numpy, fast enough for real-time loudness metering.

A sample-by-sample recursion in Python is far too slow, so the signal is cut into
blocks of `block` samples and each block is filtered exactly with matrix products
(the state-space "block filtering" method):

    y_block = T @ x_block + O @ s          (T: Toeplitz of the impulse response,
    s_next  = A^L @ s + K @ x_block         O: observability, K: controllability)

All blocks' zero-state parts are one matrix product. The state entering block i
is sum_k (A^L)^k @ K @ x_(i-1-k); since the filter is stable, (A^L)^k falls below
double precision after a few dozen blocks, so that sum is cut there and computed
as a handful of array products instead of a Python loop over blocks. The result
equals a direct-form recursion to rounding error (the zero-state product runs in
float32, about 1e-7 relative), and the state carries over between calls, so a
stream can be fed in chunks of any size.
"""

from __future__ import annotations

import numpy as np


class BlockIIR:
    """IIR filter `b/a` (a[0] normalised to 1) over one or more channels, keeping state.

    `process(x)` takes shape (n,) or (n, channels) and returns float64 output of the same shape.
    """

    def __init__(self, b: np.ndarray, a: np.ndarray, channels: int = 1, block: int = 128) -> None:
        b = np.asarray(b, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 1 or b.ndim != 1 or a.size == 0 or a[0] == 0:
            raise ValueError("BlockIIR needs 1-D coefficient arrays with a[0] != 0")
        order = max(a.size, b.size) - 1
        if order < 1:
            raise ValueError("BlockIIR needs a filter of order 1 or more")
        b = np.pad(b, (0, order + 1 - b.size)) / a[0]
        a = np.pad(a, (0, order + 1 - a.size)) / a[0]
        # Transposed direct form II as a state-space system (A, B, C, D).
        A = np.zeros((order, order))
        A[:, 0] = -a[1:]
        A[:-1, 1:] = np.eye(order - 1)
        B = b[1:] - a[1:] * b[0]
        C = np.zeros(order)
        C[0] = 1.0
        D = b[0]

        self.order = order
        self.block = block
        self.channels = channels
        powers = [np.eye(order)]
        for _ in range(block):
            powers.append(A @ powers[-1])
        self._powers = np.stack(powers)  # A^0 .. A^block
        impulse = np.empty(block)
        impulse[0] = D
        impulse[1:] = [C @ powers[k - 1] @ B for k in range(1, block)]
        idx = np.arange(block)
        lag = idx[:, None] - idx[None, :]
        self._toeplitz_t = np.where(lag >= 0, impulse[np.clip(lag, 0, None)], 0.0).T.astype(np.float32)
        self._obs_t = np.stack([C @ powers[k] for k in range(block)]).T  # (order, block)
        self._ctrl_t = np.stack([powers[block - 1 - j] @ B for j in range(block)])  # (block, order)
        # Powers of the block transition A^L up to where they no longer matter (at most 4096 blocks).
        a_l = powers[block]
        block_powers = [np.eye(order)]
        while np.abs(block_powers[-1]).max() > 1e-18 and len(block_powers) < 4096:
            block_powers.append(a_l @ block_powers[-1])
        self._block_powers = np.stack(block_powers)
        self.state = np.zeros((channels, order))

    def reset(self) -> None:
        """Forget the filter's memory (as at the start of a stream)."""
        self.state[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter `x` (n,) or (n, channels), continuing from the previous call's state."""
        x = np.asarray(x, dtype=np.float64)
        mono = x.ndim == 1
        if mono:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got array of shape {x.shape}")
        out = np.empty_like(x)
        for ch in range(self.channels):
            out[:, ch] = self._channel(x[:, ch], ch)
        return out[:, 0] if mono else out

    def _channel(self, x: np.ndarray, ch: int) -> np.ndarray:
        L = self.block
        n_full = x.size // L
        y = np.empty_like(x)
        s = self.state[ch]
        if n_full:
            blocks = x[: n_full * L].reshape(n_full, L)
            zero_state = (blocks.astype(np.float32) @ self._toeplitz_t).astype(np.float64)
            drive = blocks @ self._ctrl_t  # state increment contributed by each block
            # states[i] = M^i s + sum_{k=1..i} M^(k-1) drive[i-k], M = A^L; terms past len(powers) are < 1e-18.
            powers = self._block_powers
            states = np.zeros((n_full + 1, self.order))
            m = min(len(powers), n_full + 1)
            if m < n_full + 1 and np.abs(powers[-1]).max() > 1e-18:
                raise RuntimeError("filter too close to instability for block filtering")
            states[:m] = np.einsum("iab,b->ia", powers[:m], s)
            for k in range(1, m):
                states[k:] += drive[: n_full + 1 - k] @ powers[k - 1].T
            y[: n_full * L] = (zero_state + states[:n_full] @ self._obs_t).ravel()
            s = states[n_full]
        rest = x.size - n_full * L
        if rest:
            tail = x[n_full * L :]
            y[n_full * L :] = tail @ self._toeplitz_t[:rest, :rest] + s @ self._obs_t[:, :rest]
            # The last `rest` columns of the controllability matrix are A^(rest-1-j) B.
            s = self._powers[rest] @ s + tail @ self._ctrl_t[L - rest :]
        self.state[ch] = s
        return y
