"""A fake camera for the PWA tests: a Data Matrix code as a YUV4MPEG2 clip.

Chromium plays it as the camera with
``--use-fake-ui-for-media-stream --use-fake-device-for-media-stream
--use-file-for-fake-video-capture=<absolute path>.y4m`` (one clip per browser launch; the clip
loops).

Needs the pure-Python ``pystrich`` package (pip install pystrich; 0.20 checked) for the Data Matrix
symbol; the clip itself is written here, no ffmpeg or Pillow needed.

A text with GS (``\\x1d``) separators, or one that starts with AI 01 and a 14-digit GTIN, is
encoded as a GS1 Data Matrix: FNC1 first, FNC1 for each GS. A camera reader gives back exactly
``text`` (FNC1 after the first reads as ``\\x1d``).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

WIDTH, HEIGHT, FPS = 640, 480, 15

_GS = "\x1d"


def _is_gs1(text: str) -> bool:
    return _GS in text or re.match(r"01\d{14}", text) is not None


def datamatrix_modules(text: str, *, gs1: bool | None = None) -> list[list[int]]:
    """The symbol as rows of modules (1 dark, 0 light), quiet zone included."""
    from pystrich.datamatrix import FNC1, DataMatrixData, DataMatrixEncoder

    if gs1 is None:
        gs1 = _is_gs1(text)
    if gs1:
        data = None
        for part in text.split(_GS):
            data = FNC1 + part if data is None else data + FNC1 + part
        payload = data
    else:
        payload = DataMatrixData(text, encoding="ascii")
    renderer = DataMatrixEncoder(payload, quiet_zone=2).init_renderer()
    return [[1 if cell else 0 for cell in row] for row in renderer.matrix]


def _luma_frame(modules: list[list[int]], size: int, noise: int, rng: random.Random) -> bytes:
    """The Y plane: the symbol, `size` pixels wide, centred on white, with a little sensor noise."""
    n = len(modules)
    cell = max(1, size // n)
    side = cell * n
    left, top = (WIDTH - side) // 2, (HEIGHT - side) // 2
    white, dark = 235, 20
    frame = bytearray([white]) * (WIDTH * HEIGHT)
    for r, row in enumerate(modules):
        line = bytearray()
        for value in row:
            line += bytes([dark if value else white]) * cell
        for dy in range(cell):
            start = (top + r * cell + dy) * WIDTH + left
            frame[start : start + side] = line
    if noise:
        for _ in range(WIDTH * HEIGHT // 50):
            i = rng.randrange(WIDTH * HEIGHT)
            frame[i] = max(0, min(255, frame[i] + rng.randint(-noise, noise)))
    return bytes(frame)


def write_datamatrix_y4m(
    text: str,
    path: Path,
    *,
    gs1: bool | None = None,
    frames: int = 15,
    size: int = 300,
    noise: int = 20,
) -> None:
    """Writes a `frames`-long 640x480 clip (15 fps, 4:2:0) of a Data Matrix of `text` to `path`.

    `gs1`: None decides from the text (GS separators or a leading (01) GTIN); True/False forces it.
    About 460 KB per frame: the default second of video is 6.9 MB.
    """
    modules = datamatrix_modules(text, gs1=gs1)
    rng = random.Random(text)
    chroma = bytes([128]) * (WIDTH // 2 * HEIGHT // 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for _ in range(frames):
            out.write(b"FRAME\n")
            out.write(_luma_frame(modules, size, noise, rng))
            out.write(chroma)
            out.write(chroma)


if __name__ == "__main__":  # python tests/pwa/camera_clip.py TEXT OUT.y4m
    import sys

    write_datamatrix_y4m(sys.argv[1].replace("|", _GS), Path(sys.argv[2]))
