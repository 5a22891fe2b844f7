"""Build the face-model pack the add-on ships (``pix2vertex_addon/face_model_pack/``).

The pack holds every array of ``ict_facekit.npz`` (ICT-FaceKit's Face Model Light: the full head
with eyes and teeth, 100 identity and 53 expression shapes): the mesh, names, landmarks, rigid
vertices and regions as they are, the two bases as fp16. Each file stays under 16 MiB. ICT-FaceKit's
MIT licence is copied next to it.

    .venv/bin/python scripts/build_face_pack.py [--source ict_facekit.npz] [--out DIR]

``--source`` defaults to ``$P2V_FACE_MODEL`` or ``../shared/face-model/ict_facekit.npz``. Its
layout, and how it comes from ICT-FaceKit's own ``FaceXModel/`` folder, is in
``docs/reference/face_model_pack.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

import _bootstrap

_bootstrap.import_addon()

from pix2vertex_addon.core.export import AtomicFolder  # noqa: E402
from pix2vertex_addon.core.face_model import (  # noqa: E402
    ENV_VAR,
    PACK_FILES,
    PACK_FP16,
    FaceModelError,
    _read_and_validate,
    default_face_model_path,
    shared_face_model_path,
)

MAX_FILE_BYTES = 16 * 2**20
LICENSE_NAME = "LICENSE-ICT-FaceKit"
README = """# Face model pack (derived from ICT-FaceKit)

The ICT Face Model Light of ICT-FaceKit (USC Institute for Creative Technologies,
https://github.com/ICT-VGL/ICT-FaceKit), MIT licence: see `LICENSE-ICT-FaceKit` beside this file.
The arrays of `ict_facekit.npz` split over three files, the identity and expression bases stored
as fp16; built by `scripts/build_face_pack.py` (docs/reference/face_model_pack.md).
"""


def build_pack(source: Path, out: Path) -> list[tuple[str, int]]:
    """Write the pack for ``source`` into ``out`` (replaced whole); returns (file, bytes)."""
    arrays = _read_and_validate(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFolder(out, overwrite=True) as tmp:  # the old pack is replaced in one rename
        sizes = []
        for name, keys in PACK_FILES.items():
            data = {k: arrays[k].astype(np.float16) if k in PACK_FP16 else arrays[k] for k in keys}
            np.savez_compressed(tmp / name, **data)  # type: ignore[arg-type]
            size = (tmp / name).stat().st_size
            if size > MAX_FILE_BYTES:
                raise SystemExit(f"{name} is {size / 2**20:.1f} MiB, over the 16 MiB limit")
            sizes.append((name, size))
        licence = source.parent / LICENSE_NAME
        if licence.is_file():
            shutil.copyfile(licence, tmp / LICENSE_NAME)
        elif (out / LICENSE_NAME).is_file():
            shutil.copyfile(out / LICENSE_NAME, tmp / LICENSE_NAME)
        else:
            raise SystemExit(f"{LICENSE_NAME} not found next to {source}: the pack must carry it")
        (tmp / "README.md").write_text(README, encoding="utf-8")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=None, help="ict_facekit.npz")
    ap.add_argument("--out", type=Path, default=default_face_model_path())
    a = ap.parse_args(argv)
    source = a.source or Path(os.environ.get(ENV_VAR) or shared_face_model_path())
    try:
        sizes = build_pack(source.expanduser().resolve(), a.out)
    except FaceModelError as e:
        print(f"build_face_pack: {e}", file=sys.stderr)
        return 2
    for name, size in sizes:
        print(f"{name:16s} {size / 2**20:6.2f} MiB")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
