"""Label new text with a trained run or an exported model (`kdlora export`): one line per text,
`LABEL<tab>PROBABILITY<tab>TEXT` (regression tasks: `VALUE<tab>TEXT`). Pair tasks take both texts of an example
separated by a tab. An ONNX export predicts without importing torch.

  kdlora predict runs/ml-fft "A gorgeous, moving film." "Dull and far too long."
  kdlora predict onnx-int8/ --file sentences.txt
"""

import os
import sys
from pathlib import Path

from kdlora.errors import UserError
from kdlora.files import add_no_verify_argument

HELP = "label new text with a trained run or an exported model"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="FOLDER",
                        help="a run folder (`kdlora train`) or an export (`kdlora export`)")
    add_no_verify_argument(parser)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label")
    parser.add_argument("--file", help="a file with one text per line (`-` for standard input)")


def run(args) -> int:
    from kdlora.predict import predict

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one line per result, no loading bars
    texts = list(args.texts)
    if args.file:
        try:
            lines = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{args.file}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{args.file}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}); "
                            "save it as UTF-8") from None
        texts += [line for line in lines.splitlines() if line.strip()]
    if not texts:
        raise UserError("give texts to label, or --file")
    for row in predict(args.run_dir, texts, verify=args.verify):
        if "value" in row:
            print(f"{row['value']:.4f}\t{row['text']}")
        else:
            print(f"{row['label']}\t{row['score']:.4f}\t{row['text']}")
    return 0
