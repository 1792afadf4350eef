"""Where a fine-tuning run keeps what: the one definition `finetune` writes by and the assistant reads by.

A run's output directory holds config.json (the run's configuration), log.jsonl (one line per step), checkpoints/,
eval.json (`finetune eval`'s comparison, when run) and, once it finished, adapter/: PEFT's adapter_config.json and
weights, and training.json, whose "serves" lists the groups whose members the adapter may answer.
"""

from __future__ import annotations

LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"  # what makes a directory a PEFT adapter
TRAINING_INFO = "training.json"
SERVES = "serves"  # the key of training.json (and of a dataset's manifest) naming the adapter's audience
