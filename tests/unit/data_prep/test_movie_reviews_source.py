"""The quickstart's in-domain pretraining source holds the sentiment training split's movies only."""

import json
from pathlib import Path

import yaml

from data_prep.starter import starter_path
from llmtrain.config.data import load_data_config
from llmtrain.data.finetune_sets import rotten_tomatoes, rotten_tomatoes_plots


def _source_docs() -> list[str]:
    return [json.loads(line)["text"].strip() for line in starter_path("movie_reviews").read_text(encoding="utf-8").split("\n") if line]


def test_movie_reviews_is_exactly_the_training_split():
    docs = _source_docs()
    snippets, plots = rotten_tomatoes(), rotten_tomatoes_plots()
    assert docs == [r["text"] for r in snippets["train"]] + [r["text"] for r in plots["train"]]
    assert len(snippets["train"]) > 10_000 and len(plots["train"]) > 800
    movies = {s: {r["movie"] for r in snippets[s]} | {r["movie"] for r in plots[s]} for s in snippets}
    assert not movies["train"] & (movies["validation"] | movies["test"])  # plot lines follow the same split


def test_no_held_out_snippet_or_plot_reaches_pretraining():
    corpus = "\n".join(_source_docs())
    snippets, plots = rotten_tomatoes(), rotten_tomatoes_plots()
    held_out = [r["text"] for s in ("validation", "test") for r in snippets[s] + plots[s]]
    assert len(held_out) > 2000
    train_texts = {r["text"] for r in snippets["train"]}
    docs = set(_source_docs())
    # an exact duplicate of a training snippet is training text too (one such validation snippet exists)
    assert not [t for t in held_out if t in docs and t not in train_texts]
    # nor inside a longer document; short ones ("Obvious") occur in any English text, so they are not counted
    leaked = [t for t in held_out if len(t) >= 40 and t not in train_texts and t in corpus]
    assert not leaked, leaked[:3]


def test_quickstart_mixture_pretrains_on_the_movie_reviews():
    cfg = load_data_config("configs/data/quickstart.yaml")
    starter = yaml.safe_load(Path("configs/data/starter.yaml").read_text())
    assert [s.name for s in cfg.sources] == [s["name"] for s in starter["sources"]] + ["movie_reviews"]
    reviews = next(s for s in cfg.sources if s.name == "movie_reviews")
    assert reviews.starter == "movie_reviews" and reviews.weight > 0
