"""Shared fixtures: a tiny BERT built from config with a tokenizer trained on the fly, small data
files, and a helper to write recipes. Everything is offline (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import csv
import os
import random
import socket
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DISABLE_TQDM", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

SPAM_WORDS = ["win", "free", "prize", "cash", "claim", "urgent", "offer", "call", "now", "txt"]
HAM_WORDS = ["see", "you", "later", "lunch", "home", "tonight", "thanks", "love", "meeting", "ok"]


def free_port() -> int:
    """A TCP port nobody listens on (for a launch's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_text_rows(n: int, seed: int = 0) -> list[dict]:
    """Two separable classes of short messages (``spam`` / ``ham``) for fast end-to-end tests."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "spam" if i % 3 == 0 else "ham"
        words = SPAM_WORDS if label == "spam" else HAM_WORDS
        rows.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))),
                     "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT sequence classifier (random weights) with a WordPiece tokenizer
    trained on the fly; saved like a Hub checkpoint so every Auto class loads it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [r["text"] for r in make_text_rows(200)] + [
        "the quick brown fox jumps over the lazy dog", "New York is a city in the United States",
        "Empire State Building", "John lives in Paris and works at Google"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(out)
    config = BertConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    return out


@pytest.fixture
def text_csv_dir(tmp_path) -> Path:
    """train.csv (60 rows), validation.csv (21), test.csv (21) with ``text`` / ``label`` columns."""
    d = tmp_path / "data"
    write_csv(d / "train.csv", make_text_rows(60, seed=1))
    write_csv(d / "validation.csv", make_text_rows(21, seed=2))
    write_csv(d / "test.csv", make_text_rows(21, seed=3))
    return d


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(dict or YAML text, name="recipe.yaml") -> path of the written recipe file."""
    def write(content, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path
    return write


@pytest.fixture
def text_recipe(tiny_bert_dir, text_csv_dir, tmp_path):
    """A complete, fast text-classification recipe as a dict (tiny BERT, local CSVs)."""
    return {
        "task": "text-classification",
        "model": {"name": "tiny-bert", "path": str(tiny_bert_dir)},
        "data": {"files": {"train": str(text_csv_dir / "train.csv"),
                           "validation": str(text_csv_dir / "validation.csv"),
                           "test": str(text_csv_dir / "test.csv")},
                 "max_length": 16},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8,
                     "learning_rate": 5e-3, "seed": 0, "logging_steps": 50, "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "run")},
    }


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Tests run in their own directory so default ``runs/`` folders never collide."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _default_console():
    """The console's verbosity is process-wide (``-q`` / ``-v`` set it): every test starts at the
    default level, whatever an earlier test in this process chose."""
    from sft_hub import console

    console.configure(console.NORMAL)
    yield
