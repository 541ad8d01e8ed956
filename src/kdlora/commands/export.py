"""Write a trained run as one plain transformers model (LoRA adapters merged) that loads without PEFT:

  kdlora export runs/ml-lora --out exported/
  python -c "from transformers import AutoModelForSequenceClassification as M; M.from_pretrained('exported')"
"""

HELP = "merge a run's adapters and save a plain transformers model"


def add_arguments(parser) -> None:
    from kdlora.files import add_no_verify_argument

    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `kdlora train`")
    add_no_verify_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the merged model and tokenizer")


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per result, no loading bars
    from kdlora.export import export_run

    export_run(args.run_dir, args.out, verify=args.verify)
    print(f"merged model written to {args.out}")
    return 0
