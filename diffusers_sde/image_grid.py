"""Saving a grid of samples: diffusers' ``make_image_grid``, made readable for tiny images and written atomically."""

import os


def save_image_grid(images, path):
    """Write PIL ``images`` as one near-square grid PNG at ``path`` (via a temporary file, never half-written)."""
    from diffusers.utils import make_image_grid
    from PIL import ImageOps

    if images[0].width < 64:  # tiny samples (8 x 8 digits) fill their whole frame: a 1-pixel border keeps them apart
        images = [ImageOps.expand(image, border=1, fill=128) for image in images]
    cols = int(len(images) ** 0.5) or 1
    while len(images) % cols:
        cols -= 1
    grid = make_image_grid(images, rows=len(images) // cols, cols=cols)
    if grid.width < 512:  # enlarge (nearest neighbour) so the grid can be looked at
        scale = max(1, 512 // grid.width)
        grid = grid.resize((grid.width * scale, grid.height * scale), resample=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    grid.save(tmp)
    os.replace(tmp, path)
