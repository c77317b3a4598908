"""Rebuild the JSONL files of this folder from the WNUT17 CoNLL files shipped with the NER recipes.

    python recipes/text-classification/data/wnut17-entity-types/derive.py

Each sentence becomes one row: ``text`` (its tokens joined by single spaces) and ``labels`` (the
sorted, distinct entity types of its B-/I- tags; an empty list when it mentions none).
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "token-classification" / "data" / "wnut17"


def sentences(path: Path):
    tokens, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tokens:
                yield tokens, tags
            tokens, tags = [], []
            continue
        token, tag = line.split("\t")[0], line.split("\t")[-1].strip()
        tokens.append(token)
        tags.append(tag)
    if tokens:
        yield tokens, tags


for split in ("train", "validation", "test"):
    rows = [{"text": " ".join(tokens),
             "labels": sorted({t.split("-", 1)[1] for t in tags if t[:2] in ("B-", "I-")})}
            for tokens, tags in sentences(SOURCE / f"{split}.conll")]
    with open(HERE / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(split, len(rows), "sentences,", sum(bool(r["labels"]) for r in rows), "with entities")
