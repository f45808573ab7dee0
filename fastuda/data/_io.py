"""Reading images and label PNGs; writing label PNGs (atomically, through fastuda._io).

Every error names the file and says what was expected: a missing file is a
FileNotFoundError, a file of the wrong kind (label bit depth, channels, values)
a ValueError, a file that cannot be decoded (truncated, not an image) a
RuntimeError. Nothing is skipped.

Decoders: images go through PIL, which hands back an (H, W, 3) array; viewed as
(3, H, W) that is the channels-last layout torch's fast uint8 resize wants.
8-bit labels also go through PIL (it keeps palette indices, which is what GTA5's
palette PNGs store). 16-bit labels (Synthia) go through torchvision: PIL reads
only the high byte of a 16-bit RGB PNG.
"""

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastuda._io import atomic_write

from .labels import IGNORE_INDEX, LabelFormat

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with
_COLOR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int

    def describe(self) -> str:
        return f"{self.bit_depth}-bit {_COLOR_TYPES.get(self.color_type, f'colour type {self.color_type}')}"


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except OSError as e:
        raise RuntimeError(f"{path}: cannot read the file ({e})") from e


def png_header(data: bytes, path: Path) -> PngHeader:
    """The IHDR fields of a PNG; also checks the file is complete (ends with IEND).

    The tail check catches truncated files (an interrupted download or copy)
    whatever the decoder's settings (PIL's LOAD_TRUNCATED_IMAGES would
    otherwise decode them with grey bands).
    """
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise RuntimeError(f"{path}: not a PNG file (expected the PNG signature and an IHDR chunk)")
    if not data.endswith(_PNG_END):
        raise RuntimeError(f"{path}: the PNG is truncated (it does not end with an IEND chunk; {len(data)} bytes)")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    return PngHeader(width, height, bit_depth, color_type)


def read_image(path: Path) -> torch.Tensor:
    """RGB image as uint8 (3, H, W), stored channels-last (strides (1, 3W, 3)).

    PNG, JPEG and anything else PIL reads; grey, palette and alpha images are
    converted to RGB (as mmcv's ``imread(flag='color')`` does).
    """
    data = read_bytes(path)
    if data[:8] == _PNG_SIGNATURE:
        png_header(data, path)  # truncation check
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            array = np.array(rgb)  # (H, W, 3), writable copy
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise RuntimeError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W), channels-last strides


def read_label(path: Path, fmt: LabelFormat) -> np.ndarray:
    """Label PNG as uint8 (H, W) train ids (0..C-1, 255 = ignore), mapped through ``fmt``."""
    data = read_bytes(path)
    header = png_header(data, path)
    if header.bit_depth != fmt.bit_depth or header.color_type not in fmt.color_types:
        expected = " or ".join(PngHeader(0, 0, fmt.bit_depth, c).describe() for c in fmt.color_types)
        raise ValueError(f"{path}: expected {fmt.description}, a {expected} PNG; got a {header.describe()} PNG")
    try:
        if fmt.bit_depth == 16:
            raw = _decode_png16_first_channel(data)
        else:
            with Image.open(io.BytesIO(data)) as im:
                raw = np.array(im)  # palette PNGs give their indices
    except Exception as e:
        raise RuntimeError(f"{path}: cannot decode the label PNG ({type(e).__name__}: {e})") from e
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label, decoded shape {raw.shape}")

    lookup = fmt.lookup
    if lookup is not None:
        return lookup[raw]  # raw ids -> train ids, unknown ids -> 255
    bad = (raw >= fmt.num_classes) & (raw != IGNORE_INDEX)
    if bad.any():
        values = np.unique(raw[bad])[:8].tolist()
        raise ValueError(
            f"{path}: expected {fmt.description}, found values {values} "
            "(is it a raw label saved under a train-id name?)"
        )
    return raw


def _decode_png16_first_channel(data: bytes) -> np.ndarray:
    # Imported here: torchvision costs seconds to import, and only Synthia's 16-bit labels need it.
    from torchvision.io import ImageReadMode, decode_png

    decoded = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    # torchvision returns uint16 for 16-bit PNGs (int32 in older releases).
    return decoded[0].to(torch.int32).numpy()


def write_label_png(path: Path, label: np.ndarray) -> None:
    """uint8 (H, W) label as an 8-bit grey PNG, atomically."""
    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))  # 2-D uint8: mode "L"
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
