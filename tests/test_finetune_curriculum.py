"""`finetune train`'s phases: the data order (mixes, boundaries, loss order), its scores, resume, and config errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import write_model
from training_runs import config_for, run_settings

from finetune import cli
from finetune import schedule as schedule_mod
from finetune import train as train_mod
from finetune.config import ConfigError, ModelSection, load_config
from finetune.dataset import IGNORE, Packed, write_dataset
from finetune.evaluate import evaluate_loss, scored, token_loss_sum
from finetune.lora_model import load_base
from finetune.schedule import SCORES_FILE, DataOrder, Schedule, base_scores, sequence_losses
from finetune.train import check, train

SEQ_LEN = 32
TOKENIZER = {"sha256": "a" * 64}
CURRICULUM = (
    "[{name: replay, share: 0.25, mix: {data: 0.5, general: 0.5}}, "
    "{name: hardest, share: 0.75, mix: {data: 0.75, general: 0.25}, order: loss_descending}]"
)


def random_split(sequences: int, seed: int, unscored: tuple[int, ...] = (), seq_len: int = SEQ_LEN) -> Packed:
    """Random token ids, row 1 scored on its first half only (as pack pads its last row), `unscored` rows not at all."""
    ids = torch.randint(4, 512, (sequences, seq_len), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    if sequences > 1:
        labels[1, seq_len // 2 :] = IGNORE
    for row in unscored:
        labels[row] = IGNORE
    return Packed(ids, labels)


def write(path: Path, train_split: Packed, eval_split: Packed, seq_len: int = SEQ_LEN, tokenizer=TOKENIZER) -> Path:
    write_dataset(path, {"train": train_split, "eval": eval_split}, {"seq_len": seq_len, "tokenizer": tokenizer})
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("bases") / "grok-1", kind="grok-1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The main dataset (20 sequences) and a general one (12, one of them with nothing scored, and 4 held out)."""
    root = tmp_path_factory.mktemp("data")
    main = write(root / "main", random_split(20, 1), random_split(3, 2))
    general = write(root / "general", random_split(12, 3, unscored=(5,)), random_split(4, 4))
    return main, general


def phase_of_steps(run: Path) -> list[tuple[int, str]]:
    return [(line["step"], line["phase"]) for line in log_lines(run) if "loss" in line]


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def base_loss_per_sequence(base: Path, split: Packed) -> list[float]:
    """The base model's mean token loss of each sequence, one forward per sequence."""
    model, _ = load_base(ModelSection(path=base, dtype="float32"), for_training=False)
    losses = []
    with torch.no_grad():
        for row in range(len(split)):
            ids, labels = split.input_ids[row : row + 1], split.labels[row : row + 1]
            count = scored(labels)
            losses.append(float(token_loss_sum(model, ids, labels)) / count if count else float("nan"))
    return losses


# --- the schedule alone ------------------------------------------------------------------------------------------


def legacy_batches(size: int, global_batch: int, seed: int, steps: int) -> list[torch.Tensor]:
    """The data order of finetune/train.py before phases existed, as it was written then."""
    epochs = {}

    def epoch(e):
        if e not in epochs:
            epochs[e] = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + e))
        return epochs[e]

    return [
        torch.stack([epoch(p // size)[p % size] for p in range(s * global_batch, (s + 1) * global_batch)])
        for s in range(steps)
    ]


@pytest.mark.parametrize(("size", "global_batch", "seed"), [(10, 4, 0), (7, 8, 3), (33, 5, 12)])
def test_without_phases_the_order_is_the_one_runs_always_had(size, global_batch, seed):
    steps = 40
    expected = legacy_batches(size, global_batch, seed, steps)
    for phases in ([], ["phases=[{name: all, share: 1.0, mix: {data: 1.0}}]"]):
        config = load_config(
            None,
            run_settings(Path("m"), Path("d"), Path("o"), f"train.max_steps={steps}", f"train.seed={seed}", *phases),
        )
        schedule = Schedule.from_config(config, {"data": size}, global_batch, None)
        # Asked out of order, as a resumed run asks: each step's batch depends on the step alone.
        for step in [*range(steps - 1, steps // 2, -1), *range(steps)]:
            assert torch.equal(schedule.batch(step), expected[step]), (phases, step)
    order = DataOrder(size, global_batch, seed)  # what benchmarks/finetune.py feeds to transformers' Trainer
    assert all(torch.equal(order.batch(step), expected[step]) for step in range(steps))


def test_phases_split_the_steps_and_mix_their_datasets_by_weight():
    config = load_config(
        None,
        run_settings(
            Path("m"),
            Path("d"),
            Path("o"),
            "train.max_steps=10",
            "datasets={general: g, all: a}",
            "phases=[{name: domain, share: 0.7, mix: {all: 1.0}}, "
            "{name: curated, share: 0.3, mix: {data: 0.8, general: 0.2}}]",
        ),
    )
    sizes = {"data": 13, "general": 7, "all": 29}  # concatenated in this order: data, general, all
    ranges = {"data": range(13), "general": range(13, 20), "all": range(20, 49)}
    schedule = Schedule.from_config(config, sizes, 10, None)
    assert [schedule.phase(step).name for step in range(10)] == ["domain"] * 7 + ["curated"] * 3

    domain = torch.cat([schedule.batch(step) for step in range(7)]).tolist()
    assert all(i in ranges["all"] for i in domain)
    assert sorted(domain[:29]) == sorted(domain[29:58]) == list(ranges["all"]), "one permutation per epoch"
    assert domain[:29] != domain[29:58]

    curated = torch.cat([schedule.batch(step) for step in range(7, 10)]).tolist()
    owners = ["data" if i in ranges["data"] else "general" if i in ranges["general"] else "all" for i in curated]
    assert Counter(owners) == {"data": 24, "general": 6}
    for n in range(1, len(owners) + 1):  # every stretch of the phase, not just the whole, holds the mix
        assert abs(owners[:n].count("general") - 0.2 * n) <= 1, (n, owners)
    data_ids = [i for i, owner in zip(curated, owners, strict=True) if owner == "data"]
    assert sorted(data_ids[:13]) == list(ranges["data"]), "a dataset's sequences are used once before any twice"
    general_ids = [i for i, owner in zip(curated, owners, strict=True) if owner == "general"]
    assert len(set(general_ids)) == 6

    # The schedule is a function of (config, seed, step): a fresh one (another process, a resumed run) agrees, and
    # another seed does not.
    again = Schedule.from_config(config, sizes, 10, None)
    assert [again.batch(step).tolist() for step in (9, 3, 8)] == [schedule.batch(step).tolist() for step in (9, 3, 8)]
    other = Schedule.from_config(
        config.model_copy(update={"train": config.train.model_copy(update={"seed": 1})}), sizes, 10, None
    )
    assert other.batch(8).tolist() != schedule.batch(8).tolist()


def test_three_way_mix_holds_its_weights_on_every_prefix():
    phases = [schedule_mod.Phase("mix", 0, 20, {"a": 3.0, "b": 2.0, "c": 1.0}, "random")]
    schedule = Schedule(phases, {"a": 5, "b": 6, "c": 7}, 6, seed=0)
    owners = ["a" if i < 5 else "b" if i < 11 else "c" for i in torch.cat([schedule.batch(s) for s in range(20)])]
    assert Counter(owners) == {"a": 60, "b": 40, "c": 20}
    for n in range(1, 121):
        for name, share in (("a", 0.5), ("b", 1 / 3), ("c", 1 / 6)):
            assert abs(owners[:n].count(name) - share * n) <= 1, (n, name)


def test_ordered_phases_take_sequences_by_score_every_epoch():
    scores = torch.tensor([0.5, float("nan"), 0.1, 0.9, 0.3], dtype=torch.float64)
    for order, ranked in (("loss_ascending", [2, 4, 0, 3, 1]), ("loss_descending", [3, 0, 4, 2, 1])):
        phases = [
            schedule_mod.Phase("warm", 0, 1, {"data": 1.0}, "random"),
            schedule_mod.Phase("sorted", 1, 3, {"extra": 1.0}, order),
        ]
        schedule = Schedule(phases, {"data": 4, "extra": 5}, 4, seed=0, scores={"extra": scores})
        taken = torch.cat([schedule.batch(step) for step in (1, 2, 3)]).tolist()
        assert taken == [4 + i for i in ranked + ranked + ranked[:2]], order  # after the main data's 4 sequences
    with pytest.raises(ValueError, match="has no scores"):
        Schedule(phases, {"data": 4, "extra": 5}, 4, seed=0)


# --- config errors ---------------------------------------------------------------------------------------------


def test_config_errors_name_the_culprit(base, data, tmp_path, capsys):
    main, general = data

    def fails(match: str, *overrides: str):
        with pytest.raises(ConfigError, match=match):
            check(config_for(base, main, tmp_path / "run", *overrides))

    fails(
        r"phase 'curated' mixes 'genral', which is neither `data` .* nor a name under datasets \(general\)",
        f"datasets={{general: {general}}}",
        "phases=[{name: curated, share: 1.0, mix: {data: 0.8, genral: 0.2}}]",
    )
    fails(r"shares .* must sum to 1, not 0.9 \(a 0.6, b 0.3\)", "phases=[{name: a, share: 0.6}, {name: b, share: 0.3}]")
    fails(
        r"phase 'b' \(share 0.05\) gets 0 of train.max_steps=8 steps",
        "phases=[{name: a, share: 0.95}, {name: b, share: 0.05}]",
    )
    fails(r"phases.0.mix.data: Input should be greater than 0", "phases=[{name: a, share: 1, mix: {data: 0}}]")
    fails(r"'data' names the main dataset", f"datasets={{data: {general}}}")

    short = write(tmp_path / "short", random_split(6, 5, seq_len=16), random_split(0, 6, seq_len=16), seq_len=16)
    fails(
        r"datasets.short: .*short is packed to 16 tokens a sequence but the main dataset .* to 32: .*--seq-len 32",
        f"datasets={{short: {short}}}",
    )
    other = write(tmp_path / "other", random_split(6, 5), random_split(0, 6), tokenizer={"sha256": "b" * 64})
    fails(
        r"datasets.other: .*other was tokenised by another tokenizer \(sha256 b{64}\)", f"datasets={{other: {other}}}"
    )
    fails(
        r"datasets.nowhere: .*nowhere does not exist: prepare it with `finetune prepare",
        f"datasets={{nowhere: {tmp_path / 'nowhere'}}}",
    )
    empty = write(tmp_path / "empty", random_split(2, 7, unscored=(0, 1)), random_split(0, 6))
    fails(
        r"datasets.empty: .* has no training tokens, but a phase mixes it",
        f"datasets={{empty: {empty}}}",
        "phases=[{name: a, share: 1, mix: {data: 1, empty: 1}}]",
    )
    # Only held out (a replay set watched for forgetting), an empty training split is fine.
    check(config_for(base, main, tmp_path / "run", f"datasets={{empty: {empty}}}"))

    argv = [
        "train",
        *(f"--set={item}" for item in run_settings(base, main, tmp_path / "run", f"datasets={{other: {other}}}")),
    ]
    assert cli.main([*argv, "--check"]) == 2
    assert "datasets.other" in capsys.readouterr().err
    argv = [
        "train",
        *(
            f"--set={item}"
            for item in run_settings(
                base, main, tmp_path / "run", f"datasets={{general: {general}}}", f"phases={CURRICULUM}"
            )
        ),
    ]
    assert cli.main([*argv, "--check"]) == 0


# --- scores ----------------------------------------------------------------------------------------------------


class _Process:
    """What `sequence_losses` and `base_scores` use of an Accelerator, as process `rank` of `world` (whose
    reduction the test does by hand)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.process_index, self.num_processes, self.device = rank, world, torch.device("cpu")
        self.is_main_process = rank == 0

    def reduce(self, tensor, reduction):
        return tensor

    def wait_for_everyone(self):
        pass


def test_scores_are_the_same_whatever_the_process_count_and_are_cached(base, data, tmp_path, monkeypatch):
    _, general = data
    from finetune.dataset import load_split

    split = load_split(general, "train")
    model, _ = load_base(ModelSection(path=base, dtype="float32"), for_training=False)
    forwards = Counter()
    real_forward = model.forward

    def counted(*args, **kwargs):
        forwards[current["rank"]] += 1
        return real_forward(*args, **kwargs)

    current = {"rank": 0}
    monkeypatch.setattr(model, "forward", counted)
    alone = sequence_losses(model, split, 5, _Process())
    shares = []
    for rank in (0, 1):
        current["rank"] = rank
        shares.append(sequence_losses(model, split, 5, _Process(rank, 2)))
    assert forwards[0] == 3 + 2 and forwards[1] == 2, "three batches of 5: two processes run two forwards each"
    torch.testing.assert_close(shares[0] + shares[1], alone, rtol=0, atol=0, equal_nan=True)
    expected = torch.tensor(base_loss_per_sequence(base, split), dtype=torch.float64)
    assert torch.isnan(alone[5]) and torch.isnan(expected[5]), "a sequence with nothing scored has no loss"
    torch.testing.assert_close(alone, expected, rtol=0, atol=1e-5, equal_nan=True)

    path, calls = tmp_path / SCORES_FILE, Counter()
    real = schedule_mod.sequence_losses

    def counting(model, data, batch_size, acc=None):
        calls[len(data)] += 1
        return real(model, data, batch_size, acc)

    monkeypatch.setattr(schedule_mod, "sequence_losses", counting)
    splits = {"data": split, "more": Packed(split.input_ids[:3], split.labels[:3])}
    first = base_scores(model, _Process(), splits, {"data": "h1", "more": "h2"}, "base-a", 4, path)
    assert calls == {12: 1, 3: 1}
    again = base_scores(model, _Process(), splits, {"data": "h1", "more": "h2"}, "base-a", 4, path)
    assert calls == {12: 1, 3: 1}, "the cache answers"
    for name in first:
        torch.testing.assert_close(first[name], again[name], rtol=0, atol=0, equal_nan=True)
    base_scores(model, _Process(), splits, {"data": "h1", "more": "changed"}, "base-a", 4, path)
    assert calls == {12: 1, 3: 2}, "only the dataset whose manifest changed is scored again"
    base_scores(model, _Process(), splits, {"data": "h1", "more": "changed"}, "base-b", 4, path)
    assert calls == {12: 2, 3: 3}, "another base scores everything again"


def test_loss_ascending_phase_trains_on_the_base_models_easiest_sequences_first(base, data, tmp_path, monkeypatch):
    main, general = data
    taken = []
    real_step = train_mod._step

    def recording(model, packed, global_ids, config, acc):
        taken.append(global_ids.tolist())
        return real_step(model, packed, global_ids, config, acc)

    monkeypatch.setattr(train_mod, "_step", recording)
    run = tmp_path / "run"
    phases = (
        "phases=[{name: domain, share: 0.5, mix: {data: 1.0}}, "
        "{name: easiest, share: 0.5, mix: {general: 1.0}, order: loss_ascending}]"
    )
    result = train(config_for(base, main, run, f"datasets={{general: {general}}}", phases), progress=False)

    from finetune.dataset import load_split

    general_train = load_split(general, "train")
    losses = base_loss_per_sequence(base, general_train)
    # Sequence 5 has nothing scored: no loss to order by, so last. 4 steps of 4 take 16 of the 12 sequences.
    ranked = sorted((i for i in range(12) if i != 5), key=lambda i: losses[i]) + [5]
    assert [i - 20 for step in taken[4:] for i in step] == ranked + ranked[:4], "general follows the main data's 20"
    assert all(0 <= i < 20 for step in taken[:4] for i in step)
    assert phase_of_steps(run) == [(s, "domain") for s in range(1, 5)] + [(s, "easiest") for s in range(5, 9)]

    cached = load_file(run / SCORES_FILE)
    torch.testing.assert_close(
        cached["general"], torch.tensor(losses, dtype=torch.float64), rtol=0, atol=1e-5, equal_nan=True
    )
    assert set(cached) == {"general"}, "only the datasets an ordered phase takes are scored"

    final = log_lines(run)[-1]
    assert final["eval_losses"].keys() == {"general"}
    assert final["eval_losses"]["general"] == pytest.approx(
        evaluate_loss(result.model, load_split(general, "eval"), 4), rel=1e-5
    )
    assert final["eval_loss"] == pytest.approx(result.eval_loss)
    info = json.loads((result.adapter_dir / "training.json").read_text())
    assert info["datasets"]["general"]["path"] == str(general)


def test_an_adapter_serves_only_the_groups_that_may_read_every_dataset_it_learned():
    manifests = {"data": {"serves": ["staff", "hr"]}, "general": {"serves": ["staff"]}, "watched": {"serves": ["x"]}}
    assert train_mod._audience(manifests, ["data", "general"]) == ["staff"]
    assert train_mod._audience(manifests, ["general"]) == ["staff"], "the main dataset counts even when not mixed"
    assert train_mod._audience(manifests, ["data"]) == ["staff", "hr"], "a dataset only held out teaches nothing"
    assert train_mod._audience({"data": {"serves": ["staff"]}, "old": {}}, ["data", "old"]) is None
    assert (
        train_mod._audience({"data": {"serves": ["hr"]}, "general": {"serves": ["staff"]}}, ["data", "general"]) == []
    )


# --- resume ----------------------------------------------------------------------------------------------------


def test_a_run_killed_mid_phase_resumes_to_the_same_adapter(base, data, tmp_path, monkeypatch):
    main, general = data
    curriculum = (f"datasets={{general: {general}}}", f"phases={CURRICULUM}")  # 2 steps replay, 6 steps hardest
    full = tmp_path / "full"
    train(config_for(base, main, full, *curriculum), progress=False)
    real = train_mod.token_loss_sum

    def killed_in_step_5(run: Path) -> None:
        calls = {"n": 0}

        def dies(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > 4:  # one micro-batch a step: steps 1-4 run; the checkpoint of step 3 (phase 2) is the last
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(train_mod, "token_loss_sum", dies)
        with pytest.raises(KeyboardInterrupt):
            train(config_for(base, main, run, *curriculum), progress=False)
        monkeypatch.setattr(train_mod, "token_loss_sum", real)
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000003"]

    # Resumed with its scores kept: they are reused, not computed again.
    killed = tmp_path / "killed"
    killed_in_step_5(killed)
    real_scoring = schedule_mod.sequence_losses

    def no_scoring(*args, **kwargs):
        raise AssertionError("the resumed run must order by the scores the first one computed")

    monkeypatch.setattr(schedule_mod, "sequence_losses", no_scoring)
    train(config_for(base, main, killed, *curriculum), resume=True, progress=False)
    monkeypatch.setattr(schedule_mod, "sequence_losses", real_scoring)

    # Resumed with its scores lost: they are the base model's again, not the checkpoint's trained model's.
    lost = tmp_path / "lost"
    killed_in_step_5(lost)
    (lost / SCORES_FILE).unlink()
    train(config_for(base, main, lost, *curriculum), resume=True, progress=False)

    expected = load_file(full / "adapter" / "adapter_model.safetensors")
    for run in (killed, lost):
        resumed = load_file(run / "adapter" / "adapter_model.safetensors")
        assert resumed.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-6, msg=f"{run.name}: {key}")
        assert phase_of_steps(run) == [(1, "replay"), (2, "replay")] + [(s, "hardest") for s in range(3, 9)]
        losses = {line["step"]: line["loss"] for line in log_lines(full) if "loss" in line}
        assert all(abs(losses[line["step"]] - line["loss"]) < 1e-6 for line in log_lines(run) if "loss" in line)
        torch.testing.assert_close(
            load_file(run / SCORES_FILE)["general"], load_file(full / SCORES_FILE)["general"], equal_nan=True
        )


def test_resume_refuses_an_extra_dataset_prepared_again(base, data, tmp_path):
    main, general = data
    copy = shutil.copytree(general, tmp_path / "general")
    run = tmp_path / "run"
    train(config_for(base, main, run, "train.max_steps=3", f"datasets={{general: {copy}}}"), progress=False)
    write(copy, random_split(11, 9), random_split(4, 4))
    with pytest.raises(ConfigError, match=r"--resume: the dataset general in .*general changed since .*step-00000003"):
        train(config_for(base, main, run, "train.max_steps=6", f"datasets={{general: {copy}}}"), resume=True)
