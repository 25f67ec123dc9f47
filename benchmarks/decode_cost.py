"""CPU ms per file of ``read_dicom`` (decode + modality + display) per transfer syntax of a realistic archive:
full resolution, and as a 64² and a 224² model read it (JPEG 2000 at a reduced level; one torch thread).

    python benchmarks/realistic_archive.py --out /tmp/arch --studies 12
    python benchmarks/decode_cost.py /tmp/arch/dicom [--files 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dicom", type=Path, help="The archive's dicom/ folder (one subfolder per syntax code).")
    parser.add_argument("--files", type=int, default=2, help="Files per syntax (2: RG1 and RG3).")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import torch

    from medfusion.ingest.dicom.read import read_dicom

    torch.set_num_threads(1)
    print(f"{'syntax':<6} {'full':>8} {'64²':>8} {'224²':>8}   CPU ms per file")
    for folder in sorted(p for p in args.dicom.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.dcm"))[: args.files]
        for f in files:
            read_dicom(f)  # imports and first calls are not per-file costs
        row = []
        for min_size in (None, (64, 64), (224, 224)):
            start = time.process_time()
            for _ in range(args.repeat):
                for f in files:
                    read_dicom(f, min_size=min_size)
            row.append(1000 * (time.process_time() - start) / (args.repeat * len(files)))
        print(f"{folder.name:<6} {row[0]:>8.1f} {row[1]:>8.1f} {row[2]:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
