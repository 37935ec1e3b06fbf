import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_prep"))

from corpus_fixtures import prepared_corpus, tiny_tokenizer  # noqa: E402, F401
