"""Read CoNLL-style token files: the format most NER corpora are distributed in.

One token per line, columns separated by tabs or by spaces, a blank (or whitespace-only) line
between sentences, ``-DOCSTART-`` document markers skipped. The token is the first column; which
column holds the tag is the recipe's choice (default: the last one), because CoNLL-2003-style files
carry part-of-speech and chunk columns too.

Every data line of a file must have the same number of columns: a line that does not is almost
always a broken file (a token with a space in a space-separated file, a lost tag), so it is an error
naming the file and the line rather than a silently shifted tag. (``datasets``' own ``conll``
builder pads or cuts such lines silently and needs every column named, hence this reader.)
Torch-free.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from ..recipe.schema import DataSpec

DOCSTART = "-DOCSTART-"
CONLL_EXTENSIONS = (".conll", ".conllu", ".conll03", ".iob", ".bio")
_SPACES = re.compile(r"[ \t]+")
_ASCII_BLANK = " \t\r\n\f\v"


def _columns(line: str) -> list[str]:
    """A tab-separated line keeps spaces inside its fields; otherwise runs of spaces separate."""
    if "\t" in line:
        return [part.strip(" ") for part in line.split("\t")]
    return _SPACES.split(line)


def read_conll(path: Union[str, Path], *, tag_column: int = -1, tokens_key: str = "tokens",
               tags_key: str = "ner_tags") -> list[dict[str, list[str]]]:
    """Sentences of ``path`` as rows ``{tokens_key: [...], tags_key: [...]}``.

    ``tag_column`` is a 0-based column index; negative counts from the end (-1: last column).
    Raises :class:`DataError` naming the file and line for a line with another column count than
    the file's first data line, an empty field, a tag column the file does not have, or bytes that
    are not UTF-8.
    """
    path = Path(path)
    rows: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width: int | None = None  # column count, fixed by the first data line

    def end_sentence() -> None:
        nonlocal tokens, tags
        if tokens:
            rows.append({tokens_key: tokens, tags_key: tags})
        tokens, tags = [], []

    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip(_ASCII_BLANK):
                    end_sentence()
                    continue
                fields = _columns(line.strip(_ASCII_BLANK))
                if fields[0] == DOCSTART:
                    end_sentence()
                    continue
                if width is None:
                    width = len(fields)
                    if not -width <= tag_column < width:
                        raise DataError(
                            f"line {number}: tag column {tag_column} does not exist: the file has "
                            f"{width} column(s)", file=str(path), field="data.conll_tag_column",
                            hint=f"use a column index from 0 to {width - 1} (or -1 for the last)")
                    if width < 2:
                        raise DataError(
                            f"line {number}: one column only ({line!r}); a CoNLL line needs a "
                            "token and a tag", file=str(path),
                            hint="separate token and tag with a tab or a space")
                if len(fields) != width:
                    raise DataError(
                        f"line {number}: {len(fields)} column(s) where the file's first data line "
                        f"has {width}: {line!r}", file=str(path),
                        hint="every token line needs the same columns (token ... tag); a token "
                        "that contains spaces needs a tab-separated file")
                if "" in fields:
                    raise DataError(f"line {number}: empty column in {line!r}", file=str(path),
                                    hint="remove the stray tab or fill in the missing value")
                tokens.append(fields[0])
                tags.append(fields[tag_column])
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path),
                        hint="re-encode the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    end_sentence()
    if not rows:
        raise DataError("no sentences in the file", file=str(path),
                        hint="a CoNLL file has one 'token<TAB>tag' line per token and a blank "
                        "line between sentences")
    return rows


def conll_dataset(files: list[str], spec: "DataSpec") -> "Dataset":
    """The ``conll`` reader of :mod:`sft_hub.data.sources`: one split's files as a Dataset.

    Column names and the tag column come from the task's data spec (``tokens_column``,
    ``tags_column``, ``conll_tag_column``), so CoNLL files look like any other token data.
    """
    from datasets import Dataset

    tokens_key = getattr(spec, "tokens_column", "tokens")
    tags_key = getattr(spec, "tags_column", "ner_tags")
    tag_column = getattr(spec, "conll_tag_column", -1)
    rows = [row for path in files
            for row in read_conll(path, tag_column=tag_column, tokens_key=tokens_key,
                                  tags_key=tags_key)]
    return Dataset.from_list(rows)
