"""Training-time augmentation for CIFAR on NumPy or CuPy arrays: random crops with padding and
horizontal flips, a fresh draw for every batch.

Random numbers are drawn on the host (``rng`` is a NumPy ``Generator``) and moved with
``xp.asarray``, so a seed gives the same crops and flips on either backend. Both functions index
the whole batch at once, with no loop over images, and return new arrays.

Shape letters: N batch, C channels, H x W image size, P padding.
"""
from minimf.backend import get_array_module

CIFAR_PAD = 4  # the usual CIFAR setting: pad 32 x 32 to 40 x 40, crop 32 x 32 back out


def random_crop(x, pad, rng):
    """Pad each image with ``pad`` zeros on every side, then cut out an H x W window at a random offset.

    x: (N, C, H, W). Image n's window starts at row dy_n and column dx_n of the padded image, each
    uniform in [0, 2P], so out[n, c, i, j] = padded[n, c, dy_n + i, dx_n + j]; dy_n = dx_n = P gives
    the image back. Zeros are the padding value: after normalisation that is the mean colour.
    Returns out: (N, C, H, W).
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    padded = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy = xp.asarray(rng.integers(0, 2 * pad + 1, size=N))
    dx = xp.asarray(rng.integers(0, 2 * pad + 1, size=N))
    rows = (dy[:, None] + xp.arange(H))[:, None, :, None]   # (N, 1, H, 1)
    cols = (dx[:, None] + xp.arange(W))[:, None, None, :]   # (N, 1, 1, W)
    n = xp.arange(N)[:, None, None, None]
    c = xp.arange(C)[None, :, None, None]
    return padded[n, c, rows, cols]                          # broadcast to (N, C, H, W)


def random_flip(x, rng):
    """Mirror each image left-right with probability 1/2. x: (N, C, H, W) -> (N, C, H, W)."""
    xp = get_array_module(x)
    flip = xp.asarray(rng.random(x.shape[0]) < 0.5)[:, None, None, None]
    return xp.where(flip, x[..., ::-1], x)


def augment_batch(x, image_shape, rng, pad=CIFAR_PAD):
    """Random crop (padding ``pad``) and horizontal flip of a batch of images.

    x: (N, C, H, W), or (N, C*H*W) flattened rows of images of ``image_shape`` (C, H, W) for an MLP;
    the result has the shape of x.
    """
    images = x.reshape(x.shape[0], *image_shape)
    images = random_flip(random_crop(images, pad, rng), rng)
    return images.reshape(x.shape)
