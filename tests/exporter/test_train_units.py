"""The training pieces that can be checked exactly: thresholds, ranking metrics, folds, the head card."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from exporter.heads.calibrate import (
    average_precision,
    equal_rate_threshold,
    precision_threshold,
    reliability,
    roc_auc,
)
from exporter.heads.split import group_folds, group_key, groups_per_label, track_folds
from tagger.decision.track import decide_head
from tagger.fields import FieldPolicy
from tagger.models.card import Card, CardError, Output, Source


def test_equal_rate_threshold_on_a_known_case():
    # positives 0.9 0.8 0.6 0.3, negatives 0.7 0.5 0.2 0.1: only at 0.6 are TPR and TNR both 3/4
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.2, 0.1])
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    t = equal_rate_threshold(scores, positive)
    assert t == pytest.approx(0.6)
    tpr = (scores[positive] >= t).mean()
    tnr = (scores[~positive] < t).mean()
    assert tpr == tnr == 0.75
    assert equal_rate_threshold(scores, np.ones(8, bool)) is None


def test_roc_auc_matches_pairwise_count_and_ap_known_value():
    rng = np.random.default_rng(3)
    scores = rng.random(60)
    positive = rng.random(60) < 0.4
    pairs = [(p, n) for p, n in itertools.product(scores[positive], scores[~positive])]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, positive) == pytest.approx(brute)
    # ranked: hit, miss, hit -> AP = (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool)) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(scores, np.zeros(60, bool)) is None


def test_precision_threshold_is_the_lowest_that_meets_the_target():
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0, 1, 0], bool)
    # precision from the top: 1, 1, 1, 1, .8, .83, .71
    assert precision_threshold(scores, correct, 0.8) == pytest.approx(0.6)
    assert precision_threshold(scores, correct, 0.9) == pytest.approx(0.8)
    assert precision_threshold(scores, correct, 0.9, min_count=5) is None
    assert precision_threshold(np.array([0.5, 0.5]), np.array([1, 0], bool), 0.9, min_count=1) is None  # ties cut together


def test_reliability_bins_count_everything():
    conf = np.array([0.05, 0.15, 0.95, 1.0])
    bins = reliability(conf, np.array([0, 1, 1, 1], bool))
    assert sum(b["count"] for b in bins) == 4
    assert bins[-1]["accuracy"] == 1.0 and bins[-1]["count"] == 2


def test_group_folds_never_split_a_group_and_balance_sizes():
    rng = np.random.default_rng(0)
    groups = [f"album:{rng.integers(40)}" for _ in range(500)]
    folds = group_folds(groups, 5)
    for g in set(groups):
        assert len({int(f) for f, h in zip(folds, groups) if h == g}) == 1, g
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0.6 * sizes.max()
    assert (group_folds(groups, 5) == folds).all()  # deterministic


def test_track_folds_stratify_each_label():
    primary = np.array([0] * 10 + [1] * 5)
    folds = track_folds(primary, 5)
    for label in (0, 1):
        counts = np.bincount(folds[primary == label], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_group_key_prefers_album_then_artist_then_folder():
    assert group_key({"album": "OST", "artist": "A", "path": "/m/x.ogg"}) == "album:ost"
    assert group_key({"artist": "A", "path": "/m/x.ogg"}) == "artist:a"
    assert group_key({"path": "/m/d/x.ogg"}) == "folder:/m/d"
    targets = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    assert groups_per_label(["a", "b", "b"], targets) == [2, 1]


def _head_card(kind="softmax", thresholds=None) -> Card:
    return Card(id="head-genre", version="abc", sample_rate=0, window=0, hop=0,
                outputs=(Output("genre", kind, ("Dub Techno", "Film Score", "Polka"),
                                thresholds=thresholds if thresholds is not None else {"Dub Techno": 0.6, "Film Score": 0.5}),),
                input_name="features", reads=(Source("m", "1", "tags", 3), Source("m", "1", "embedding", 4)),
                decides="genre").validate()


def test_head_card_round_trips_and_is_validated():
    card = _head_card()
    back = Card.from_json(card.to_json())
    assert (back.reads, back.decides, back.labels, back.tags.thresholds) == (card.reads, "genre", card.labels,
                                                                             card.tags.thresholds)
    assert back.is_head and back.input_width == 7
    assert back.reads[0].analyser == "m@1"
    with pytest.raises(CardError, match="unknown labels"):
        _head_card(thresholds={"Jazz": 0.5})
    with pytest.raises(CardError, match="which field"):
        Card(id="h", version="1", sample_rate=0, window=0, hop=0, outputs=card.outputs,
             reads=card.reads).validate()
    audio = Card(id="a", version="1", sample_rate=16000, window=100, hop=100, outputs=card.outputs)
    assert "reads" not in audio.to_json() and "thresholds" in card.to_json()


def test_head_decision_writes_only_above_the_labels_threshold():
    policy = FieldPolicy("fill", 2, 0.25, 0.8, 2, "share")
    card = _head_card()
    fd = decide_head(card, np.array([0.7, 0.2, 0.1]), policy)
    assert fd.written == ["Dub Techno"] and "head head-genre" in fd.reason
    fd = decide_head(card, np.array([0.55, 0.4, 0.05]), policy)
    assert fd.written == [] and "threshold" in fd.reason
    fd = decide_head(card, np.array([0.1, 0.1, 0.8]), policy)  # Polka never met its precision target
    assert fd.written == [] and "never reached" in fd.reason


def test_context_vote_asks_the_album_then_the_folder_and_needs_agreement():
    from tagger.decision.context import LibraryContext
    from tagger.decision.track import with_context

    ctx = LibraryContext("genre")
    for i in range(3):
        ctx.add(f"/m/flat/a{i}.flac", "Opus 1", ["Film  Score"])
    ctx.add("/m/flat/b0.flac", "Other", ["Polka"])
    ctx.add("/m/flat/b1.flac", "Other", ["Dub Techno"])
    vote = ctx.vote("/m/flat/new.flac", "opus 1")
    assert (vote.value, vote.agree, vote.mates, vote.scope) == ("Film Score", 3, 3, "album")
    assert ctx.vote("/m/flat/new.flac", "Other") is None  # album split, folder mixed: no vote
    assert ctx.vote("/m/flat/a0.flac", "Opus 1").mates == 2  # the track itself never votes
    assert ctx.vote("/m/flat/new.flac", "Opus 1", scopes=("folder",)) is None
    ctx.add("/m/flat/a2.flac", "Opus 1", [])  # the user cleared it
    assert ctx.vote("/m/flat/new.flac", "Opus 1").mates == 2

    card = _head_card()
    policy = FieldPolicy("fill", 2, 0.25, 0.8, 2, "share")
    abstained = decide_head(card, np.array([0.4, 0.35, 0.25]), policy)
    fd = with_context(abstained, vote, card)
    assert fd.written == ["Film Score"] and "same album" in fd.reason and "alone" in fd.reason
    agreed = with_context(decide_head(card, np.array([0.1, 0.8, 0.1]), policy), vote, card)
    assert agreed.written == ["Film Score"] and agreed.values[0].support == ["head-genre"]
    assert with_context(abstained, None, card) is abstained


def test_a_damaged_head_is_skipped_with_its_name_logged_and_the_field_falls_back(tmp_path, caplog):
    from tagger.models.heads import load_heads

    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "genre.onnx").write_bytes(b"not a model")
    assert load_heads(tmp_path, {"m": "m@1"}) == []
    assert "genre.onnx" in caplog.text and "not used" in caplog.text


def _genre_set_card(mid: str) -> Card:
    labels = ("jazz", "classical", "rock")
    return Card(id=mid, version="1", sample_rate=16000, window=100, hop=100,
                outputs=(Output("tags", "sigmoid", labels, dict.fromkeys(labels, "genre")),
                         Output("embedding", "embedding", dim=2))).validate()


def test_a_head_below_its_threshold_is_confirmed_only_by_the_sets_own_same_value():
    from tagger.decision.decide import Candidate, FieldDecision
    from tagger.decision.track import with_set

    policy = FieldPolicy("fill", 2, 0.25, 0.8, 2, "share")
    card = _head_card()
    below = decide_head(card, np.array([0.55, 0.4, 0.05]), policy)  # Dub Techno 0.55 < 0.6
    assert below.written == []

    def base(value: str) -> FieldDecision:
        c = Candidate(value, 0.5, ["m"], {"m": 0.5}, {"m": [value]})
        return FieldDecision("genre", [c], [c], f"{value} from the set")

    fd = with_set(below, base("dub-techno"), card)  # compared as `tagger eval` compares values
    assert fd.written == ["Dub Techno"] and "model set" in fd.reason and "below its own threshold" in fd.reason
    assert fd.values[0].support == ["head-genre", "model set"]
    assert with_set(below, base("Film Score"), card).written == []  # the set says something else
    assert with_set(below, FieldDecision("genre", [], [], "abstained"), card).written == []
    assert with_set(below, None, card) is below
    sure = decide_head(card, np.array([0.1, 0.8, 0.1]), policy)  # the head alone decides: the set is not asked
    assert with_set(sure, base("Dub Techno"), card) is sure

    import dataclasses
    agreeing = dataclasses.replace(card, agree_with_set=True)
    assert Card.from_json(agreeing.to_json()).agree_with_set and not Card.from_json(card.to_json()).agree_with_set
    with pytest.raises(CardError, match="true or false"):  # a hand-edited "false" is not read as true
        Card.from_json(agreeing.to_json().replace('"agree_with_set": true', '"agree_with_set": "false"'))
    audio = _genre_set_card("a")
    with pytest.raises(CardError, match="agree with the model set"):
        dataclasses.replace(audio, agree_with_set=True).validate()
    assert "agree_with_set" not in audio.to_json()


def test_set_agreement_is_enabled_only_when_it_reaches_the_precision_target_held_out():
    """Rows where the held-out head stays below its threshold and the set's decision equals the head's top
    label: 6 such rows, 6 right -> enabled; one wrong of 6 at target 0.9 -> not; fewer than 5 -> not."""
    from exporter.heads import TrainOptions, set_agreement_check
    from exporter.heads.dataset import Dataset, sources_of

    cards = [_genre_set_card("a"), _genre_set_card("b")]
    sources = sources_of(cards)
    vocab = {"Jazz": ["jazz"], "Classical": ["classical"], "Rock": ["rock"]}
    policy = FieldPolicy("fill", 2, 0.25, 0.8, 2, "share")

    def row(jazz: float, classical: float) -> list[float]:  # both models hear the same; embeddings unused
        tags = [jazz, classical, 0.02]
        return tags + [0.0, 0.0] + tags + [0.0, 0.0]

    def dataset(user: list[str]) -> Dataset:
        X = np.array([row(0.8, 0.05)] * len(user), np.float32)  # the set decides Jazz on every row
        labels = ["jazz", "Classical"]
        Y = np.array([[1.0, 0.0] if u == "jazz" else [0.0, 1.0] for u in user], np.float32)
        return Dataset("genre", sources, X, Y, labels, [{"path": f"/m/{i}.mp3"} for i in range(len(user))], 0)

    held = np.tile(np.array([[0.55, 0.45]], np.float32), (6, 1))  # the head's top is jazz, below 0.9
    opts = TrainOptions(precision=0.9)
    ok = set_agreement_check(dataset(["jazz"] * 6), cards, held, {"jazz": 0.9}, policy, vocab, opts)
    assert ok["enabled"] and ok["agreed"] == 6 and ok["precision"] == 1.0
    one_wrong = set_agreement_check(dataset(["jazz"] * 5 + ["Classical"]), cards, held, {"jazz": 0.9}, policy,
                                    vocab, opts)
    assert not one_wrong["enabled"] and one_wrong["agreed"] == 6 and abs(one_wrong["precision"] - 5 / 6) < 1e-9
    few = set_agreement_check(dataset(["jazz"] * 4), cards, held[:4], {"jazz": 0.9}, policy, vocab, opts)
    assert not few["enabled"] and few["agreed"] == 4
    confident = set_agreement_check(dataset(["jazz"] * 6), cards, held, {"jazz": 0.5}, policy, vocab, opts)
    assert confident["agreed"] == 0  # the head writes on its own there: nothing to confirm
    assert not set_agreement_check(dataset(["jazz"] * 6), cards, held, {"jazz": 0.9}, policy, None, opts)["enabled"]
