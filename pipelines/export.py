"""Export a trained checkpoint for serving: TorchScript or ONNX, plus a JSON sidecar.

  python pipelines/export.py --checkpoint RUN_DIR/ray_results/.../epoch_0003 --format onnx --out model.onnx
  python pipelines/export.py --checkpoint "$(python -c 'import json;print(json.load(open("runs/demo/metrics.json"))["checkpoint"])')" \\
      --format torchscript --out serving/dfei.pt

The artifact takes int64 `features` [batch, F] (feature ids in the dataset's order) and int64
`domain_ids` [batch] (mixed domains allowed) and returns `ctr` [batch]; the trained domain features
are baked in. FILE.json lists features, cardinalities, domains and the model config. Load it with
dfei.serving.loader.ServingModel, which refuses unknown domains and out-of-range ids. The export is
checked against the eager model on unseen rows (1e-5) before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.cli import run_cli  # noqa: E402
from dfei.serving.export import FORMATS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory (local or URI), e.g. metrics.json's")
    p.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx (default: what pipelines/serve.py is measured with; needs the onnx extra) or "
                        "torchscript (deprecated by torch; kept for existing deployments)")
    p.add_argument("--out", required=True, help="artifact file (FILE.json is written beside it)")
    p.add_argument("--epoch-weights", action="store_true",
                   help="export the checkpoint's own epoch weights, not the run's best weights it carries")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    args = p.parse_args(argv)

    def run() -> None:
        from dfei.serving.export import export_checkpoint

        export_checkpoint(args.checkpoint, args.format, args.out, best=not args.epoch_weights,
                          overwrite=args.overwrite)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
