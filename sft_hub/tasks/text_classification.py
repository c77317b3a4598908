"""``text-classification``: one label per text or text pair (sentiment, spam, NLI...)."""
from __future__ import annotations

from . import TASKS
from ._single_label import SingleLabelTask
from ._text import TextData, TextInputs


class TextClassificationData(TextData):
    """A text (or pair) and its one label: ints, strings or ClassLabel."""


@TASKS.register
class TextClassification(TextInputs, SingleLabelTask):
    name = "text-classification"
    data_spec = TextClassificationData
