"""A training run's configuration: typed, read from YAML, every field overridable with `--set key=value`.

Unknown keys and impossible values are errors before any model is loaded: a typo in a config that would otherwise
silently train with a default costs GPU hours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class ConfigError(ValueError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: Path  # a local transformers directory (a Grok-1 release converted with model.grok1.convert, ...)
    # dtype of the frozen base weights; int8 Grok-1 checkpoints keep their int8 matrices whatever this says.
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    # "nf4": load the base in 4-bit with bitsandbytes (QLoRA; needs a GPU and bitsandbytes).
    quantization: Literal["none", "nf4"] = "none"


class LoraSection(_Section):
    rank: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    # PEFT cannot apply dropout inside a fused expert stack, so it must be 0 when experts are adapted.
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Module names (suffixes) to wrap, or "auto" for the architecture's defaults (see finetune/targets.py).
    modules: list[str] | Literal["auto"] = "auto"
    # Fused expert parameters (PEFT target_parameters), or "auto"; [] adapts no experts.
    expert_parameters: list[str] | Literal["auto"] = "auto"
    # LoRA weights are trained in this dtype whatever the base's (fp32 is the safe default for small ranks).
    dtype: Literal["float32", "bfloat16"] = "float32"


class OptimSection(_Section):
    lr: float = Field(default=2e-4, gt=0)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)


class TrainSection(_Section):
    max_steps: int = Field(default=100, ge=1)  # optimizer steps
    micro_batch: int = Field(default=1, ge=1)  # sequences per process per forward
    grad_accum: int = Field(default=1, ge=1)  # micro-batches per optimizer step
    seq_len: int | None = Field(default=None, ge=2)  # None: the dataset's; must match it when given
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int | None = Field(default=None, ge=1)  # held-out loss every N steps; always at the end


MAIN = "data"  # how a phase's mix names the main dataset (`data`)
SHARE_TOLERANCE = 1e-6


class PhaseSection(_Section):
    """A stretch of the run: its share of train.max_steps, the datasets its batches mix and in what order."""

    name: str = Field(min_length=1)
    share: float = Field(gt=0, le=1)
    mix: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: {MAIN: 1.0}, min_length=1)
    # random: a seeded permutation per epoch; loss_*: by the base model's own mean token loss of each sequence.
    order: Literal["random", "loss_ascending", "loss_descending"] = "random"


class TrainConfig(_Section):
    model: ModelSection
    data: Path  # a dataset directory written by `finetune prepare`; its eval split gives the held-out loss
    # More prepared datasets by name, for the phases' mixes and for held-out losses (a replay set shows forgetting).
    datasets: dict[str, Path] = {}
    # None: one phase, the main data in random order (the order of runs from before phases existed).
    phases: list[PhaseSection] | None = Field(default=None, min_length=1)
    output_dir: Path
    lora: LoraSection = LoraSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()

    @field_validator("datasets")
    @classmethod
    def _names_are_free(cls, datasets: dict[str, Path]) -> dict[str, Path]:
        if MAIN in datasets:
            raise ValueError(f"{MAIN!r} names the main dataset (the `data` key): give this one another name")
        empty = [name for name in datasets if not name.strip()]
        if empty:
            raise ValueError("a dataset needs a non-empty name")
        return datasets

    @field_validator("phases")
    @classmethod
    def _phases_name_known_datasets(cls, phases: list[PhaseSection] | None, info: ValidationInfo):
        if phases is None:
            return phases
        known = [MAIN, *(info.data.get("datasets") or {})]
        names = [phase.name for phase in phases]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"phase names must differ: {', '.join(twice)} is used twice")
        for phase in phases:
            for name in phase.mix:
                if name not in known:
                    raise ValueError(
                        f"phase {phase.name!r} mixes {name!r}, which is neither `{MAIN}` (the main dataset) nor a "
                        f"name under datasets ({', '.join(known[1:]) or 'none given'}): add it there or fix the name"
                    )
        total = sum(phase.share for phase in phases)
        if abs(total - 1) > SHARE_TOLERANCE:
            shares = ", ".join(f"{phase.name} {phase.share:g}" for phase in phases)
            raise ValueError(f"the phases' shares of train.max_steps must sum to 1, not {total:g} ({shares})")
        return phases

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.optim.warmup_steps >= self.train.max_steps:
            raise ValueError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) must be below train.max_steps ({self.train.max_steps})"
            )
        return self

    @model_validator(mode="after")
    def _phases_fit(self):
        self.phase_steps()
        return self

    def phase_steps(self) -> list[tuple[PhaseSection, int]]:
        """Each phase with its number of steps: its share of train.max_steps rounded, the last one the remainder."""
        phases = self.phases or [PhaseSection(name="main", share=1.0)]
        max_steps = self.train.max_steps
        steps = [round(phase.share * max_steps) for phase in phases[:-1]]
        steps.append(max_steps - sum(steps))
        for phase, count in zip(phases, steps, strict=True):
            if count < 1:
                raise ValueError(
                    f"phase {phase.name!r} (share {phase.share:g}) gets {count} of train.max_steps={max_steps} steps: "
                    "each phase needs at least one; raise train.max_steps or the phase's share"
                )
        return list(zip(phases, steps, strict=True))

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def parse_override(item: str) -> tuple[list[str], object]:
    """`lora.rank=8` -> (["lora", "rank"], 8); the value is read as YAML so numbers, lists and null work."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lora.rank=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({error})") from error
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """The config in `path` (YAML) with `overrides` applied; relative paths in it are relative to the file."""
    data: dict = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path} must be a mapping of sections (model, data, datasets, phases, lora, optim, train, output_dir)"
            )
        base = path.resolve().parent
    data = apply_overrides(data, list(overrides))
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from error
    config.model.path = _model_directory(base, config.model.path)
    config.data = _resolve(base, config.data)
    config.datasets = {name: _resolve(base, path) for name, path in config.datasets.items()}
    config.output_dir = _resolve(base, config.output_dir)
    return config


def _model_directory(base: Path, path: Path) -> Path:
    """model.path as a directory: a path, or the name of a base `finetune` knows (model/named_bases.py), converted
    on first use under the installation's data directory, the one `finetune prepare --model NAME` used."""
    from model.loading import ModelLoadError
    from model.named_bases import is_named, named_base
    from retrieval.installation import InstallationSettings

    resolved = _resolve(base, path)
    if resolved.exists() or not is_named(path):
        return resolved
    try:
        models_dir = InstallationSettings().data_dir / "models"
    except (FileNotFoundError, ValidationError) as error:
        raise ConfigError(f"model.path {path}: the installation's settings cannot be read ({error})") from None
    try:
        return named_base(str(path), models_dir)
    except ModelLoadError as error:
        raise ConfigError(f"model.path: {error}") from None


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    # normpath: "configs/../../runs" reads as the folder it is, in logs and in training.json.
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _describe(error: ValidationError, path) -> str:
    where = f" in {path}" if path else ""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key (check its spelling and section)")
        elif item["type"] == "missing":
            problems.append(f"{key}: required")
        else:
            problems.append(f"{key}: {item['msg']}")
    return f"invalid training config{where}: " + "; ".join(problems)
