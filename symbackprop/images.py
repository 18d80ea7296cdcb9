"""Images in the derivation: the geometry of a convolution or pooling window, and im2col / col2im on arrays.

The derivation keeps every value a matrix: an image batch ``(N, C, H, W)`` is the ``N x (C H W)`` matrix of
its samples flattened in C order (so ``flatten`` changes nothing), and a one-dimensional signal ``(N, C, L)``
is an image of height 1. ``im2col`` unfolds the patches a kernel sees into rows, one per sample and output
position, one column per ``(c, i, j)``; ``col2im``, its adjoint, adds each row back where its patch came from.
With ``per_channel`` (pooling) each channel is a sample of its own: one row per ``(n, c, y, x)``, one column
per ``(i, j)``.

These functions work on any NumPy dtype, the object arrays of the exact backends included (``zero`` is the
backend's 0, used for padding), and loop over kernel offsets only, never over positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Window:
    """A kernel sliding over ``channels`` x ``height`` x ``width`` images: its size, stride and zero padding
    (per axis), and whether channels are pooled one by one (``per_channel``) or mixed by a convolution."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    per_channel: bool = False

    @property
    def out(self) -> tuple[int, int]:
        """The output's height and width: ``(H + 2 p - k) // s + 1`` per axis (PyTorch's floor)."""
        return tuple((size + 2 * p - k) // s + 1 for size, p, k, s in
                     zip((self.height, self.width), self.padding, self.kernel, self.stride))

    @property
    def positions(self) -> int:
        """Output positions per image (and per channel): ``H' W'``."""
        return self.out[0] * self.out[1]

    @property
    def taps(self) -> int:
        """Entries of one kernel window per channel: ``kh kw``."""
        return self.kernel[0] * self.kernel[1]

    @property
    def patch(self) -> int:
        """Columns of the unfolded matrix: ``C kh kw`` (``kh kw`` per channel when pooling)."""
        return self.taps if self.per_channel else self.channels * self.taps

    @property
    def rows_per_sample(self) -> int:
        """Rows of the unfolded matrix per sample: ``H' W'`` (``C H' W'`` when pooling)."""
        return self.positions * (self.channels if self.per_channel else 1)

    @property
    def size(self) -> int:
        """Entries of one input image: ``C H W``."""
        return self.channels * self.height * self.width

    def astuple(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width, *self.kernel, *self.stride, *self.padding,
                int(self.per_channel))

    @classmethod
    def fromtuple(cls, values) -> Window:
        C, H, W, kh, kw, sh, sw, ph, pw, per_channel = (int(v) for v in values)
        return cls(C, H, W, (kh, kw), (sh, sw), (ph, pw), bool(per_channel))

    def keywords(self) -> str:
        """The window as the generated module's helpers take it."""
        text = (f"shape=({self.channels}, {self.height}, {self.width}), kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}")
        return text + (", per_channel=True" if self.per_channel else "")


def im2col(x: np.ndarray, window: Window, zero=0) -> np.ndarray:
    """``(N, C H W)`` -> ``(N H' W', C kh kw)`` (``per_channel``: ``(N C H' W', kh kw)``)."""
    C, H, W = window.channels, window.height, window.width
    (kh, kw), (sh, sw), (ph, pw) = window.kernel, window.stride, window.padding
    images = x.reshape(-1, C, H, W)
    if ph or pw:
        padded = np.full((images.shape[0], C, H + 2 * ph, W + 2 * pw), zero, dtype=x.dtype)
        padded[:, :, ph:ph + H, pw:pw + W] = images
        images = padded
    windows = sliding_window_view(images, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # (N, C, H', W', kh, kw)
    if window.per_channel:
        return windows.reshape(-1, kh * kw)
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, C * kh * kw)


def col2im(cols: np.ndarray, window: Window, zero=0) -> np.ndarray:
    """The adjoint of ``im2col``: each row's entries added back at the places of its patch, padding cropped."""
    C, H, W = window.channels, window.height, window.width
    (kh, kw), (sh, sw), (ph, pw) = window.kernel, window.stride, window.padding
    Ho, Wo = window.out
    if window.per_channel:
        patches = cols.reshape(-1, C, Ho, Wo, kh, kw)
    else:
        patches = cols.reshape(-1, Ho, Wo, C, kh, kw).transpose(0, 3, 1, 2, 4, 5)
    images = np.full((patches.shape[0], C, H + 2 * ph, W + 2 * pw), zero, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            images[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw] += patches[..., i, j]
    return images[:, :, ph:ph + H, pw:pw + W].reshape(patches.shape[0], -1)


def fold(x: np.ndarray, positions: int) -> np.ndarray:
    """``(N P, F)`` -> ``(N, F P)``: each sample's rows (one per position) become its channels' maps."""
    rows, channels = x.shape
    return x.reshape(rows // positions, positions, channels).transpose(0, 2, 1).reshape(rows // positions, -1)


def unfold(x: np.ndarray, positions: int) -> np.ndarray:
    """The adjoint (and inverse) of ``fold``: ``(N, F P)`` -> ``(N P, F)``."""
    samples, width = x.shape
    return x.reshape(samples, width // positions, positions).transpose(0, 2, 1).reshape(samples * positions, -1)


def first_max_mask(x: np.ndarray) -> np.ndarray:
    """1 at each row's first maximum (row-major order of the window), 0 elsewhere: where max pooling sends a
    window's gradient."""
    mask = np.zeros_like(x)
    mask[np.arange(x.shape[0]), x.argmax(axis=1)] = 1
    return mask
