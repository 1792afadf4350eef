"""`finetune`: adapt the base model to the organisation's documents with LoRA.

    finetune prepare --model BASE --source DOCS... --out DATA     build a tokenised, packed dataset
    finetune plan --model grok-1 --gpus 8 --gpu-memory 80         will it fit? (the arithmetic, shown)
    finetune train --config run.yaml [--set lora.rank=8] [--resume]
    finetune eval --adapter RUN/adapter --data DATA               held-out perplexity, base vs adapted
    finetune merge --adapter RUN/adapter --out MERGED [--layout vllm]   full weights
    finetune export --adapter RUN/adapter --out VLLM_ADAPTER      for vLLM's --enable-lora

Errors exit with status 2 and a message that says what to fix; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from model.run_layout import EVAL_FILE, LOG_FILE

from . import plan, prepare
from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .dataset import DatasetError

USER_ERRORS = (ConfigError, DatasetError, CheckpointError)


def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML training config (see finetune/configs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    parser.add_argument("--check", action="store_true", help="validate the config and data, then stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log.jsonl is still written)")


def _run_train(args) -> int:
    from .train import check, train

    config = load_config(args.config, args.overrides)
    if args.check:
        check(config)
        print(f"config and data OK: {config.model.path} on {config.data} -> {config.output_dir}")
        return 0
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"adapter: {result.adapter_dir}")
    print(f"steps: {result.steps}  final loss: {result.final_loss:.4f}  tokens/s: {result.tokens_per_second:.0f}")
    if result.eval_loss is not None:
        print(f"held-out loss: {result.eval_loss:.4f}")
    return 0


def _add_adapter_args(parser: argparse.ArgumentParser, out: bool) -> None:
    parser.add_argument("--adapter", type=Path, required=True, help="adapter directory (RUN/adapter)")
    parser.add_argument("--base", type=Path, help="base model directory (default: the one the adapter records)")
    if out:
        parser.add_argument("--out", type=Path, required=True, help="new directory to write")


def _add_eval(parser: argparse.ArgumentParser) -> None:
    _add_adapter_args(parser, out=False)
    parser.add_argument("--data", type=Path, required=True, help="dataset directory (its held-out split is used)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true")


def _run_eval(args) -> int:
    from .evaluate import compare

    comparison = compare(args.adapter, args.data, args.base, args.batch_size)
    print(json.dumps(comparison.to_dict(), indent=2) if args.json else comparison.render())
    run = Path(args.adapter).resolve().parent
    if (run / LOG_FILE).is_file():  # the adapter of a training run: keep the result with it (the portal shows it)
        (run / EVAL_FILE).write_text(json.dumps(comparison.to_dict(), indent=2) + "\n")
    return 0


def _add_merge(parser: argparse.ArgumentParser) -> None:
    _add_adapter_args(parser, out=True)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the training dtype")
    parser.add_argument(
        "--layout",
        choices=["project", "vllm"],
        default="project",
        help="project (default) or vllm: a Grok-1 serving directory for vLLM",
    )


def _run_merge(args) -> int:
    from .merge import merge

    print(f"merged model: {merge(args.adapter, args.out, args.base, args.dtype, args.layout)}")
    return 0


def _run_export(args) -> int:
    from .export import export

    out = export(args.adapter, args.out, args.base)
    print(f"adapter for vLLM: {out}  (serve with --enable-lora --lora-modules NAME={out})")
    return 0


COMMANDS = {
    # name: (help, add_arguments, run)
    "prepare": ("build a training dataset from documents or JSONL", prepare.add_arguments, prepare.run),
    "plan": ("GPU memory per device for a model, method and sequence length", plan.add_arguments, plan.run),
    "train": ("train a LoRA adapter", _add_train, _run_train),
    "eval": ("held-out perplexity of the base and the adapted model", _add_eval, _run_eval),
    "merge": ("merge an adapter into full weights", _add_merge, _run_merge),
    "export": ("write an adapter in vLLM's --enable-lora layout", lambda p: _add_adapter_args(p, True), _run_export),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"finetune {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
