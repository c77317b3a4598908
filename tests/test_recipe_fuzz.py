"""Fuzz ``sft-hub validate`` with mutated recipes (issue 15): every recipe ends in exit 0, or exit 2
with one ``error:`` line, never a traceback, and never hangs.

A seeded generator mutates valid recipes of several tasks: typos in keys at every level, values of
the wrong type or shape, deleted and added keys, YAML oddities (tabs, duplicate keys, anchors and
merge keys, tags, several documents, odd keys), command-line overrides, and the hostile recipes a
public Hub repository could hold (alias bombs, deep nesting, huge values and key counts, long or
cyclic ``extends`` chains, ``hf://`` references climbing out of a repository). Each case runs
in-process through ``sft_hub.cli.main``; a hang guard (an alarm far above the measured time of any
case) turns a hang into a failure naming the case.
"""
from __future__ import annotations

import contextlib
import copy
import io
import random
import signal
from pathlib import Path

import pytest
import yaml

from sft_hub.cli import main

SEED = 15
N_MUTATIONS = 330  # plus the fixed hostile and YAML-oddity cases
HANG_GUARD_S = 20  # a case that takes longer is a hang (each measured case takes well under 2 s)


def base_recipes(root: Path) -> dict[str, dict]:
    (root / "model").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "train.csv").write_text(
        "text,label\n" + "".join(f"message number {i},{'spam' if i % 3 else 'ham'}\n"
                                 for i in range(12)), encoding="utf-8")
    (root / "data" / "ids.csv").write_text(
        "text,label\n" + "".join(f"news {i},{i % 4}\n" for i in range(12)), encoding="utf-8")
    (root / "data" / "ner.jsonl").write_text(
        '{"tokens": ["John", "lives", "here"], "ner_tags": ["B-PER", "O", "O"]}\n'
        '{"tokens": ["Paris"], "ner_tags": ["B-LOC"]}\n', encoding="utf-8")
    (root / "data" / "multi.jsonl").write_text(
        '{"text": "a b", "labels": ["x", "y"]}\n{"text": "c", "labels": ["y"]}\n', encoding="utf-8")
    text = {"task": "text-classification",
            "model": {"name": "sft-org/tiny-bert", "path": "model"},
            "data": {"files": {"train": "data/train.csv"}, "text_column": "text",
                     "label_column": "label", "max_length": 32, "validation_split": 0.25},
            "strategy": {"name": "lora", "r": 4},
            "training": {"num_train_epochs": 1, "learning_rate": 1e-4, "eval_strategy": "epoch",
                         "per_device_train_batch_size": 4, "seed": 1},
            "output": {"dir": "runs/fuzz"},
            "hub": {"license": "apache-2.0", "tags": ["fuzz"]}}
    ids = copy.deepcopy(text)
    ids["data"].update(files={"train": "data/ids.csv"}, labels=["World", "Sports", "Business",
                                                                "Sci/Tech"])
    ids["strategy"] = {"name": "full"}
    ner = {"task": "token-classification", "model": {"name": "sft-org/tiny-bert", "path": "model"},
           "data": {"files": {"train": "data/ner.jsonl"}, "max_length": 32},
           "strategy": {"name": "freeze", "train_last_n_layers": 1},
           "training": {"num_train_epochs": 1}}
    multi = {"task": "multi-label-text-classification",
             "model": {"name": "sft-org/tiny-bert", "path": "model"},
             "data": {"files": {"train": "data/multi.jsonl"}, "threshold": 0.4},
             "training": {"max_steps": 3}}
    return {"text": text, "ids": ids, "ner": ner, "multi": multi}


ODD_VALUES = [None, "", "abc", 0, -1, 3, 2.5, 1e300, float("nan"), float("inf"), True, False,
              [1, 2], [], {}, {"a": 1}, [{"b": [1]}], "../../etc/passwd", "/etc/passwd",
              "hf_" + "A" * 34, "x" * 300, "pkg:no_such_package/x", "${HOME}", "é漢字"]


def _paths(node, prefix=()):
    """Every key path of a nested recipe (mappings and list items)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(recipe, path):
    node = recipe
    for p in path[:-1]:
        node = node[p]
    return node


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(["swap", "drop", "double", "replace", "case", "dash"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "replace":
        return word[:i] + rng.choice([c for c in "aeiouxyz" if c != word[i]]) + word[i + 1:]
    if kind == "case":
        return word.upper()
    return word.replace("_", "-") if "_" in word else word + "-"


def mutate(rng: random.Random, recipe: dict) -> tuple[dict, list[str], str]:
    """(mutated recipe, command-line overrides, what was done)."""
    recipe = copy.deepcopy(recipe)
    paths = _paths(recipe)
    kind = rng.choice(["typo", "typo", "value", "value", "shape", "delete", "add", "override",
                       "override", "section"])
    path = rng.choice(paths)
    parent = _parent(recipe, path)
    if kind == "typo" and isinstance(path[-1], str):
        parent[_typo(rng, path[-1])] = parent.pop(path[-1])
    elif kind in ("value", "shape"):
        parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif kind == "delete":
        del parent[path[-1]]
    elif kind == "add" and isinstance(parent, dict):
        parent[rng.choice(["extra", "labels", "name", "r", "push", "dir", "token", "<<"])] = \
            copy.deepcopy(rng.choice(ODD_VALUES))
    elif kind == "section":
        recipe[rng.choice(["model", "data", "strategy", "training", "hub", "output", "task",
                           "extends", "sweep"])] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif kind == "override":
        dotted = ".".join(str(p) for p in path)
        value = rng.choice(["abc", "1", "-5", "true", "null", "[1, 2]", "{a: 1}", "3e-5", "",
                            "'unterminated", "*alias", "!!int x", "hf_" + "B" * 34])
        return recipe, [f"{dotted}={value}"], f"override {dotted}={value}"
    return recipe, [], f"{kind} at {'.'.join(map(str, path))}"


def hostile_cases(root: Path, base: dict) -> list[tuple[str, str, list[str]]]:
    """(name, YAML text, overrides) for the hostile and odd-YAML recipes."""
    valid = yaml.safe_dump(base, sort_keys=False)
    lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lol.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    chain = root / "chain"
    chain.mkdir(exist_ok=True)
    for i in range(1200):
        (chain / f"r{i}.yaml").write_text(f"extends: r{i + 1}.yaml\n" if i < 1199 else valid,
                                          encoding="utf-8")
    (root / "cycle_a.yaml").write_text("extends: cycle_b.yaml\n", encoding="utf-8")
    (root / "cycle_b.yaml").write_text("extends: cycle_a.yaml\n", encoding="utf-8")
    cases = [
        ("alias bomb", "\n".join(lol) + "\n" + valid, []),
        ("alias bomb in hub.tags", valid.replace("  - fuzz", "  - *i").replace(
            "task:", "\n".join(lol) + "\ntask:", 1), []),
        ("50,000 unknown keys", valid + "".join(f"k{i}: 1\n" for i in range(50_000)), []),
        ("20,000 keys under training", valid + "training:\n" + "".join(
            f"  k{i}: 1\n" for i in range(20_000)), []),
        ("10 MB value", valid + "extra: " + "x" * 10_000_000 + "\n", []),
        ("100 KB value", valid.replace("apache-2.0", "a" * 100_000), []),
        ("nesting 300 deep (flow)", valid + "deep: " + "[" * 300 + "]" * 300 + "\n", []),
        ("nesting 20,000 deep (flow)", "deep: " + "[" * 20_000 + "]" * 20_000 + "\n", []),
        ("nesting 300 deep (block)", valid + "".join(" " * i + f"k{i}:\n" for i in range(300)), []),
        ("nesting 500 deep (mappings)", "a: " + "{b: " * 500 + "1" + "}" * 500 + "\n", []),
        ("model is a list", valid.replace("model:\n", "model: [1, 2]\nx-old-model:\n", 1), []),
        ("model is a string", valid.replace("model:\n", "model: abc\nx-old-model:\n", 1), []),
        ("list as a key", valid + "? [1, 2]\n: 3\n", []),
        ("mapping as a key", valid + "? {a: 1}\n: 3\n", []),
        ("null key", valid + "~: 3\n", []),
        ("bool key", valid + "true: 3\n", []),
        ("float key", valid + "data2:\n  1.5: 3\n", []),
        ("extends chain of 1,200 files", "extends: chain/r0.yaml\n", []),
        ("extends cycle", "extends: cycle_a.yaml\n", []),
        ("extends missing", "extends: no-such-file.yaml\n" + valid, []),
        ("extends is a mapping", "extends: {a: 1}\n" + valid, []),
        ("hf:// with ..", "extends: hf://org/repo/../../../etc/passwd.yaml\n", []),
        ("hf:// with . and backslash", "extends: 'hf://org/repo/.\\\\x.yaml'\n", []),
        ("hf:// offline", "extends: hf://org/repo/recipe.yaml\n", []),
        ("python tag", valid + "x: !!python/object/apply:os.system ['echo pwned']\n", []),
        ("bad int tag", valid + "x: !!int abc\n", []),
        ("bad timestamp tag", valid + "x: !!timestamp nope\n", []),
        ("bad binary tag", valid + "x: !!binary '%%%'\n", []),
        ("tab indentation", valid.replace("  name: sft-org", "\tname: sft-org", 1), []),
        ("duplicate key", valid + "task: text-classification\n", []),
        ("two documents", valid + "---\n" + valid, []),
        ("empty file", "", []),
        ("only a comment", "# nothing here\n", []),
        ("a scalar document", "just a string\n", []),
        ("a list document", "- task: text-classification\n", []),
        ("byte order mark", "\ufeff" + valid, []),
        ("unterminated quote", valid + "x: 'open\n", []),
        ("merge key", "x-base: &b\n  num_train_epochs: 2\n" + valid.replace(
            "training:\n", "training:\n  <<: *b\n", 1), []),
        ("merge key with a scalar", valid.replace("training:\n", "training:\n  <<: 3\n", 1), []),
        ("misspelt extends", "exetnds: base.yaml\n", []),
        ("a secret", valid.replace("seed: 1", "hub_token: hf_" + "C" * 34), []),
        ("override: malformed", valid, ["=3"]),
        ("override: no equals", valid, ["training.seed"]),
        ("override: empty part", valid, ["training..seed=1"]),
        ("override: bad YAML", valid, ["data.max_length=[1,"]),
        ("override: alias bomb", valid, ["hub.tags=" + "[" * 5000]),
    ]
    return cases


def run_validate(path: Path, overrides: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()

    def hang(signum, frame):
        raise TimeoutError(f"validate ran past {HANG_GUARD_S} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_GUARD_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["validate", "-q", str(path), *overrides])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def check_outcome(name: str, code: int, err: str) -> None:
    assert code in (0, 2), f"{name}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{name}: traceback\n{err}"
    if code == 2:
        assert err.startswith("error: "), f"{name}: no error line\n{err}"
        assert sum(line.startswith("error:") for line in err.splitlines()) == 1, f"{name}\n{err}"
    else:
        assert "is valid" in err, f"{name}\n{err}"


@pytest.fixture
def fuzz_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_base_recipes_are_valid(fuzz_dir):
    for name, recipe in base_recipes(fuzz_dir).items():
        path = fuzz_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        code, err = run_validate(path, [])
        assert code == 0, f"{name}: {err}"


def test_hostile_and_odd_yaml_recipes_end_in_one_error_line(fuzz_dir):
    bases = base_recipes(fuzz_dir)
    (fuzz_dir / "base.yaml").write_text(yaml.safe_dump(bases["text"]), encoding="utf-8")
    outcomes = {}
    for i, (name, text, overrides) in enumerate(hostile_cases(fuzz_dir, bases["text"])):
        path = fuzz_dir / f"hostile_{i}.yaml"
        path.write_text(text, encoding="utf-8")
        code, err = run_validate(path, overrides)
        check_outcome(name, code, err)
        outcomes[name] = (code, err)
    refused = [n for n in outcomes if n not in ("merge key", "byte order mark")]
    assert all(outcomes[n][0] == 2 for n in refused), [n for n in refused if outcomes[n][0] != 2]
    assert outcomes["merge key"][0] == 0 and outcomes["byte order mark"][0] == 0
    assert "too large" in outcomes["alias bomb"][1] and "too large" in outcomes["alias bomb in hub.tags"][1]
    assert "nested deeper" in outcomes["nesting 20,000 deep (flow)"][1]
    assert "limited to" in outcomes["10 MB value"][1]
    assert "more than 32 recipe files" in outcomes["extends chain of 1,200 files"][1]
    assert "'..'" in outcomes["hf:// with .."][1]
    assert "mapping key is a list" in outcomes["list as a key"][1]
    assert "did you mean extends" in outcomes["misspelt extends"][1]
    assert "secret" in outcomes["a secret"][1] and "CCCC" not in outcomes["a secret"][1]


def test_seeded_mutations_end_in_exit_0_or_one_error_line(fuzz_dir):
    rng = random.Random(SEED)
    bases = base_recipes(fuzz_dir)
    names = sorted(bases)
    codes = []
    for i in range(N_MUTATIONS):
        base = names[i % len(names)]
        recipe, overrides, what = mutate(rng, bases[base])
        path = fuzz_dir / f"m{i}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")
        code, err = run_validate(path, overrides)
        check_outcome(f"mutation {i} ({base}: {what})", code, err)
        codes.append(code)
    assert codes.count(2) > N_MUTATIONS // 2  # most mutations break the recipe, and are caught
    assert 0 in codes  # some are harmless (a value changed to another valid one)
