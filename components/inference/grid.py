"""Side-by-side comparison image: one panel per encoder, each with its label above it."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

MIN_LABEL_HEIGHT = 24
GAP = 8


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size bitmap font only
        return ImageFont.load_default()


def compare_grid(images: dict[str, Image.Image], label_height: int | None = None, gap: int = GAP) -> Image.Image:
    """Panels left to right in dict order on a white canvas, labels centred above them.

    A column is as wide as its image or its label, whichever is wider, so small test renders stay readable;
    the label band grows with the images so labels stay legible on 1024-pixel renders.
    """
    if not images:
        raise ValueError("compare_grid needs at least one image")
    if label_height is None:
        label_height = max(MIN_LABEL_HEIGHT, max(image.height for image in images.values()) // 24)
    canvas_draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(max(label_height * 2 // 3, 8))
    columns = []
    for label, image in images.items():
        left, top, right, bottom = canvas_draw.textbbox((0, 0), label, font=font)
        columns.append((label, image.convert("RGB"), max(image.width, right - left + 4), (left, top, bottom)))
    width = sum(column for _, _, column, _ in columns) + gap * (len(columns) - 1)
    height = label_height + max(image.height for _, image, _, _ in columns)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, image, column, (left, top, bottom) in columns:
        canvas.paste(image, (x + (column - image.width) // 2, label_height))
        text_width = draw.textbbox((0, 0), label, font=font)[2] - left
        draw.text(
            (x + (column - text_width) // 2 - left, max((label_height - (bottom - top)) // 2 - top, 0)),
            label,
            fill="black",
            font=font,
        )
        x += column + gap
    return canvas
