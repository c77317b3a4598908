"""CoNLL reader: the layouts NER corpora come in, and the errors a broken file must give."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_hub.data.conll import read_conll
from sft_hub.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WNUT17 = ROOT / "recipes" / "token-classification" / "data" / "wnut17"
SHARED_WNUT17 = ROOT.parent / "shared" / "data" / "ner" / "wnut17"


def write(tmp_path: Path, text: str, name: str = "data.conll", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_tab_separated_sentences_split_on_blank_lines(tmp_path):
    path = write(tmp_path, "EU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\nBlackburn\tI-PER\n")
    assert read_conll(path) == [
        {"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]},
        {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]},
    ]


def test_conll2003_layout_docstart_skipped_and_tag_column_chosen(tmp_path):
    text = ("-DOCSTART- -X- -X- O\n\n"
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
            "-DOCSTART- -X- -X- O\n"  # a marker without its blank line still ends the sentence
            "Peter NNP B-NP B-PER\n")
    path = write(tmp_path, text)
    assert read_conll(path) == [
        {"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]},
        {"tokens": ["Peter"], "ner_tags": ["B-PER"]},
    ]
    pos = read_conll(path, tag_column=1, tokens_key="words", tags_key="pos")
    assert pos[0] == {"words": ["EU", "rejects"], "pos": ["NNP", "VBZ"]}


def test_trailing_and_repeated_blank_lines_crlf_and_whitespace_only_separators(tmp_path):
    # WNUT17's training file separates some sentences with a line holding only a tab.
    text = "\n\nA\tO\r\nB\tB-LOC\r\n\t\r\n \n\nC  \t O\n\n\n\n"
    assert read_conll(write(tmp_path, text)) == [
        {"tokens": ["A", "B"], "ner_tags": ["O", "B-LOC"]},
        {"tokens": ["C"], "ner_tags": ["O"]},
    ]


def test_space_separated_columns_of_any_width_and_tab_fields_keep_inner_spaces(tmp_path):
    spaced = write(tmp_path, "New   B-LOC\nYork  I-LOC\n", "spaced.conll")
    assert read_conll(spaced)[0]["tokens"] == ["New", "York"]
    tabbed = write(tmp_path, "New York\tB-LOC\ncity\tO\n", "tabbed.conll")
    assert read_conll(tabbed)[0] == {"tokens": ["New York", "city"], "ner_tags": ["B-LOC", "O"]}


def test_line_with_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "EU NNP B-ORG\nrejects VBZ O\n\nGerman B-MISC\n")
    with pytest.raises(DataError) as err:
        read_conll(path)
    assert err.value.file == str(path)
    assert "line 4" in str(err.value) and "2 column(s)" in str(err.value)


def test_empty_field_missing_tag_and_single_column_are_errors(tmp_path):
    with pytest.raises(DataError, match="line 2: 1 column"):  # the tag is missing
        read_conll(write(tmp_path, "EU\tB-ORG\nrejects\t\n", "a.conll"))
    with pytest.raises(DataError, match="line 2: empty column"):
        read_conll(write(tmp_path, "EU\tNNP\tB-ORG\nrejects\t\tO\n", "c.conll"))
    with pytest.raises(DataError, match="line 1: one column only"):
        read_conll(write(tmp_path, "EU\nrejects\n", "b.conll"))


def test_tag_column_outside_the_file_is_an_error_naming_the_recipe_field(tmp_path):
    with pytest.raises(DataError) as err:
        read_conll(write(tmp_path, "EU\tB-ORG\n"), tag_column=3)
    assert err.value.field == "data.conll_tag_column" and "2 column(s)" in str(err.value)


def test_empty_and_non_utf8_files_are_errors(tmp_path):
    with pytest.raises(DataError, match="no sentences"):
        read_conll(write(tmp_path, "-DOCSTART- O\n\n\n", "empty.conll"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_conll(write(tmp_path, "caf\xe9\tO\n", "latin1.conll", encoding="latin-1"))
    with pytest.raises(DataError, match="cannot read"):
        read_conll(tmp_path / "missing.conll")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_WNUT17.is_dir(), reason="needs ../shared/data/ner/wnut17")
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_shipped_wnut17_copy_parses_to_the_reference_jsonl(split):
    rows = read_conll(SHIPPED_WNUT17 / f"{split}.conll")
    with open(SHARED_WNUT17 / f"{split}.jsonl", encoding="utf-8") as handle:
        reference = [json.loads(line) for line in handle]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in reference]
    assert [r["ner_tags"] for r in rows] == [r["ner_tags_str"] for r in reference]
