"""Saving a grid of samples: diffusers' ``make_image_grid``, made readable for tiny images and written atomically."""

import math
import os

BLANK_GREY = 128  # the border colour of tiny samples, also used for the empty cells that keep a grid near-square


def image_format(path):
    """The Pillow format that ``path``'s extension names (``"PNG"`` for ``grid.png``); a ValueError for others."""
    from PIL import Image

    extension = os.path.splitext(path)[1].lower()
    formats = Image.registered_extensions()
    name = formats.get(extension)
    if name is None or name not in Image.SAVE:
        common = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")
        writable = sorted(ext for ext, known in formats.items() if known in common and known in Image.SAVE)
        raise ValueError(f"cannot write an image with the extension {extension!r}; use one of"
                         f" {', '.join(writable)}.")
    return name


def save_image_grid(images, path, cols=None):
    """Write PIL ``images`` as one near-square grid at ``path``, in the format of its extension (via a temporary file,
    never half-written). A count with no near-square factorization (a prime, say) leaves the last cells empty.
    ``cols`` fixes the number of columns instead (rows of ``cols`` images, in order)."""
    from diffusers.utils import make_image_grid
    from PIL import Image, ImageOps

    file_format = image_format(path)
    grey = (BLANK_GREY,) * len(images[0].getbands())  # one value per band: a bare number fills RGB's red band only
    if images[0].width < 64:  # tiny samples (8 x 8 digits) fill their whole frame: a 1-pixel border keeps them apart
        images = [ImageOps.expand(image, border=1, fill=grey) for image in images]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    blank = Image.new(images[0].mode, images[0].size, grey)
    grid = make_image_grid(list(images) + [blank] * (rows * cols - len(images)), rows=rows, cols=cols)
    if grid.width < 512:  # enlarge (nearest neighbour) so the grid can be looked at
        scale = max(1, 512 // grid.width)
        grid = grid.resize((grid.width * scale, grid.height * scale), resample=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    grid.save(tmp, format=file_format)
    os.replace(tmp, path)
