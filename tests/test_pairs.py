"""The minimal-pair tasks (harness/tasks/pairs.py): built deterministically from the
held-out test documents only; every pair really perturbs; swap and halves keep the
same words and tokens, lexical and morph the same token count; a unigram model fitted
on the training split is at chance on every kind, and is not when a replacement is
not frequency matched; a tie scores half through real lm-eval; bad input is one line."""

from __future__ import annotations

import json
import math
import random

import pytest
from conftest import tiny_cfg

from arches.errors import UserError
from harness.tasks import pairs, perturb
from harness.tasks.build import TASKS_DIR
from harness.tasks.corpus import WORD
from harness.tasks.loader import PAIRS_ENV_VAR, PAIRS_METADATA_KEY, load_pairs_task
from harness.tasks.pairs import KINDS, PairSpec, build_pairs, ensure_pairs_data, task_name

SPEC = PairSpec(max_pairs=160, fewshot_pool=10, seed=7)

_FUNCTION = ["the", "and", "of", "to", "a", "in", "that", "he", "his", "with", "my", "for", "not", "is", "was"]
_VERBS = ["walk", "call", "pray", "love", "hope", "bless", "curse", "wait", "rest", "dwell", "turn", "reach",
          "burn", "seek", "keep", "praise", "serve", "weep", "mourn", "fear", "hear", "speak", "smite", "judge",
          "deliver", "gather", "follow", "remember", "answer", "kill"]
_NOUNS = ["king", "sailor", "friend", "queen", "harbour", "barley", "winter", "city", "letter", "forest", "house",
          "market", "mountain", "river", "sword", "crown", "garden", "temple", "shepherd", "captain", "castle",
          "bread", "stone", "morning", "evening", "field", "servant", "prophet", "daughter", "brother", "heart",
          "door", "window", "cloud", "storm", "silver", "lamb", "vine", "tower", "road"]  # fmt: skip


def _inflections(verb: str) -> list[str]:
    stem = verb[:-1] if verb.endswith("e") else verb
    return [verb, verb + "s", stem + "ed", stem + "ing", stem + "eth", stem + "est"]


def synthetic_text(rng: random.Random, lines: int, weights: dict[str, float]) -> str:
    """Lines of words drawn from a Zipf-like vocabulary with attested inflections."""
    words, cumulative = list(weights), []
    total = 0.0
    for word in words:
        total += weights[word]
        cumulative.append(total)
    out = []
    for _ in range(lines):
        line = [rng.choice(_FUNCTION) if rng.random() < 0.3 else rng.choices(words, cum_weights=cumulative)[0]
                for _ in range(rng.randint(6, 12))]  # fmt: skip
        text = " ".join(line)
        out.append(text[0].upper() + text[1:] + rng.choice([".", ",", ";", "!"]))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 documents split 0.65/0.1/0.25: their (name, text) by split, the config, the built pairs folder."""
    from arches.data.cache import prepare

    root = tmp_path_factory.mktemp("pairs")
    rng = random.Random(11)
    vocabulary = [form for verb in _VERBS for form in _inflections(verb)] + _NOUNS
    rng.shuffle(vocabulary)
    weights = {word: 1.0 / (rank + 3) for rank, word in enumerate(vocabulary)}
    (root / "corpus").mkdir()
    for index in range(60):
        (root / "corpus" / f"doc{index:02d}.txt").write_text(synthetic_text(rng, 40, weights), encoding="utf-8")
    cfg = tiny_cfg(root / "cache", [root / "corpus"], val_fraction=0.1, test_fraction=0.25)
    prepared = prepare(cfg)
    texts = {f"corpus/{p.name}": p.read_text(encoding="utf-8") for p in (root / "corpus").iterdir()}
    docs = {split: [(name, texts[name]) for name in names] for split, names in prepared.splits().items()}
    return docs, cfg, prepared, pairs.pairs_data_for_config(cfg, SPEC)


def rows(folder, kind, split="test"):
    path = folder / kind / f"{task_name(kind)}.{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def encoder(prepared):
    tokenizer = prepared.tokenizer()
    return lambda texts: [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]


def test_build_is_deterministic_and_cached(corpus, tmp_path):
    docs, _, prepared, folder = corpus
    encode = encoder(prepared)
    first = build_pairs(docs["test"], docs["val"], docs["train"], SPEC, encode)
    again = build_pairs(list(reversed(docs["test"])), docs["val"][::-1], docs["train"][::-1], SPEC, encode)
    assert first == again
    copy = ensure_pairs_data(tmp_path / "entry", lambda: (docs["test"], docs["val"], docs["train"]), SPEC, encode)
    for kind in KINDS:
        for split in ("test", "train"):
            name = f"{task_name(kind)}.{split}.jsonl"
            assert (copy / kind / name).read_bytes() == (folder / kind / name).read_bytes()
        assert [row["good"] for row in first[kind]["test"]] == [row["good"] for row in rows(folder, kind)]
    assert copy.name == folder.name == f"pairs-{SPEC.key()}"
    assert PairSpec(max_pairs=161, fewshot_pool=10, seed=7).key() != SPEC.key()
    assert PairSpec(kinds=("swap",), max_pairs=160, fewshot_pool=10, seed=7).key() == SPEC.key()
    # built once: a second call reads the folders and never asks for the documents
    assert ensure_pairs_data(tmp_path / "entry", lambda: pytest.fail("rebuilt"), SPEC, encode) == copy


def test_pairs_come_from_test_documents_only_and_really_perturb(corpus):
    docs, _, _, folder = corpus
    trained = "\n".join(text for _, text in docs["train"] + docs["val"])
    for kind in KINDS:
        for split, source in (("test", docs["test"]), ("train", docs["val"])):
            by_name = dict(source)
            examples = rows(folder, kind, split)
            assert len(examples) == (SPEC.max_pairs if split == "test" else SPEC.fewshot_pool), (kind, split)
            assert len({row["good"] for row in examples}) == len(examples)
            for row in examples:
                assert row["good"] != row["bad"]
                assert row["good"] in by_name[row["doc"]].split("\n")[row["line"]]
                if split == "test":
                    assert row["good"] not in trained


def test_swap_and_halves_keep_the_same_words_and_tokens(corpus):
    _, _, prepared, folder = corpus
    encode = encoder(prepared)
    for kind in ("swap", "halves"):
        for row in rows(folder, kind):
            good, bad = row["good"], row["bad"]
            assert sorted(WORD.findall(good)) == sorted(WORD.findall(bad))
            good_ids, bad_ids = encode([" " + good, " " + bad])
            assert sorted(good_ids) == sorted(bad_ids) and good_ids != bad_ids
            if kind == "halves":
                at = row["at"]
                assert good[at] == " " and bad == good[at + 1 :] + " " + good[:at]
                assert abs(2 * at - len(good)) <= max(len(word) for word in good.split(" ")) + 1  # nearest the middle
            else:
                words, swapped = WORD.findall(good), WORD.findall(bad)
                differ = [i for i, (a, b) in enumerate(zip(words, swapped)) if a != b]
                assert len(differ) == 2 and differ[1] == differ[0] + 1


def test_lexical_and_morph_change_one_word_keeping_the_token_count_and_balance(corpus):
    docs, _, prepared, folder = corpus
    encode = encoder(prepared)
    lexicon = perturb.Lexicon(docs["train"] + docs["val"], encode)
    for kind in ("lexical", "morph"):
        directions = []
        for row in rows(folder, kind):
            good, bad, word, new = row["good"], row["bad"], row["word"], row["replacement"]
            assert bad == good[: row["at"]] + new + good[row["at"] + len(word) :]
            assert len(encode([" " + good])[0]) == len(encode([" " + bad])[0])
            assert lexicon.counts[new] >= perturb.MIN_COUNT and new.islower()
            shares_base = bool(perturb._bases(word) & perturb._bases(new))
            assert shares_base == (kind == "morph"), (word, new)
            if kind == "lexical":
                assert abs(lexicon.score[new] - lexicon.score[word]) <= math.log(perturb.LEXICAL_RATIO) + 1e-12
            directions.append(lexicon.direction(word, new))
        # as many replacements more likely under a unigram as less likely
        assert abs(directions.count(1) - directions.count(-1)) <= 1, kind
        assert len(set(row["word"] for row in rows(folder, kind))) > 10  # not one word over and over


def unigram_accuracy(prepared, examples) -> float:
    """A unigram model fitted on the training split (compare.py's): the summed log-probability of
    good against bad's, as lm-eval scores them (" " + line); a tie counts half."""
    from harness.compare import unigram_log_probs

    log_probs, encode = unigram_log_probs(prepared), encoder(prepared)
    score = 0.0
    for row in examples:
        # summed in sorted order, so the same tokens in another order give exactly the same sum
        good, bad = (math.fsum(sorted(log_probs[ids])) for ids in encode([" " + row["good"], " " + row["bad"]]))
        score += 1.0 if good > bad else 0.5 if good == bad else 0.0
    return score / len(examples)


def chance_band(n: int) -> float:
    return 2.6 * math.sqrt(0.25 / n)  # a binomial 99% interval around 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_a_unigram_model_is_at_chance_on_every_kind(corpus, kind):
    _, _, prepared, folder = corpus
    examples = rows(folder, kind)
    assert len(examples) >= 100
    assert abs(unigram_accuracy(prepared, examples) - 0.5) < chance_band(len(examples))


def test_the_unigram_tells_pairs_apart_when_they_are_not_frequency_matched(corpus):
    """The chance test has teeth: the lexical pairs with each replacement swapped for a rare
    word of the same token count put the same unigram far outside the band."""
    docs, _, prepared, folder = corpus
    lexicon = perturb.Lexicon(docs["train"] + docs["val"], encoder(prepared))
    rarest = {}
    for word in sorted(lexicon.open, key=lambda w: (lexicon.counts[w], w)):
        rarest.setdefault(lexicon.size[word], word)
    examples = []
    for row in rows(folder, "lexical"):
        rare = rarest[lexicon.size[row["word"]]]
        if rare != row["word"]:
            bad = row["good"][: row["at"]] + rare + row["good"][row["at"] + len(row["word"]) :]
            examples.append({"good": row["good"], "bad": bad})
    assert len(examples) >= 100
    assert unigram_accuracy(prepared, examples) - 0.5 > chance_band(len(examples))


class FixedLM:
    """A real lm-eval LM that needs no model: every good line gets `good`, every other choice `bad`."""

    def __new__(cls, goods: set[str], good: float, bad: float):
        from lm_eval.api.model import LM

        class _FixedLM(LM):
            def loglikelihood(self, requests):
                return [(good if req.args[1].removeprefix(" ") in goods else bad, False) for req in requests]

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

            def generate_until(self, requests):
                raise NotImplementedError

        return _FixedLM()


@pytest.mark.parametrize("good,bad,acc,tie", [(-5.0, -5.0, 0.5, 1.0), (-4.0, -9.0, 1.0, 0.0), (-9.0, -4.0, 0.0, 0.0)])
def test_a_tie_scores_half_through_lm_eval(corpus, good, bad, acc, tie):
    import lm_eval
    from lm_eval.tasks import TaskManager

    _, _, _, folder = corpus
    goods = {row["good"] for kind in KINDS for split in ("test", "train") for row in rows(folder, kind, split)}
    manager = TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False,
                          metadata={PAIRS_METADATA_KEY: str(folder)})  # fmt: skip
    results = lm_eval.simple_evaluate(model=FixedLM(goods, good, bad), tasks=["corpus_pairs"], task_manager=manager,
                                      limit=12, num_fewshot=0, bootstrap_iters=0)  # fmt: skip
    for name in [*map(task_name, KINDS), "corpus_pairs"]:
        assert results["results"][name]["acc,none"] == pytest.approx(acc), name
        assert results["results"][name]["tie,none"] == pytest.approx(tie), name
    if tie:  # lm-eval's own rule, argmax over [good, bad], would have called every tie a win
        import numpy as np

        assert np.argmax([good, bad]) == 0


def test_the_fewshot_examples_are_good_lines_of_the_validation_documents(corpus):
    from lm_eval.tasks import TaskManager

    _, _, _, folder = corpus
    manager = TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False,
                          metadata={PAIRS_METADATA_KEY: str(folder)})  # fmt: skip
    task = manager.load(["pairs_lexical"])["tasks"]["pairs_lexical"]
    assert task.OUTPUT_TYPE == "multiple_choice" and len(task.eval_docs) == SPEC.max_pairs
    task.set_fewshot_seed(1234)
    pool = {" " + row["good"] for row in rows(folder, "lexical", "train")}
    doc = task.eval_docs[0]
    assert task.fewshot_context(doc, num_fewshot=0) == ""
    assert task.fewshot_context(doc, num_fewshot=1).removesuffix("\n\n") in pool
    arguments = [request.args for request in task.construct_requests(doc, "")]
    assert arguments == [("", " " + doc["good"]), ("", " " + doc["bad"])]


def test_the_loader_finds_the_pairs_by_metadata_or_environment(corpus, monkeypatch):
    _, _, _, folder = corpus
    dataset = load_pairs_task("pairs_morph", **{PAIRS_METADATA_KEY: str(folder), "version": 1.0})
    assert dataset["test"].to_list() == rows(folder, "morph")
    monkeypatch.setenv(PAIRS_ENV_VAR, str(folder))
    assert len(load_pairs_task("pairs_swap")["train"]) == SPEC.fewshot_pool
    monkeypatch.delenv(PAIRS_ENV_VAR)
    with pytest.raises(ValueError, match=PAIRS_METADATA_KEY):
        load_pairs_task("pairs_swap")


def test_a_small_split_builds_what_it_can_and_says_so(corpus, tmp_path, capsys):
    docs, _, prepared, _ = corpus
    name, text = docs["test"][0]
    small = [(name, "\n".join(text.split("\n")[:6]))]
    spec = PairSpec(kinds=("swap", "halves"), max_pairs=50, fewshot_pool=2, seed=7)
    documents = lambda: (small, docs["val"], docs["train"])  # noqa: E731
    folder = ensure_pairs_data(tmp_path / "entry", documents, spec, encoder(prepared))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("of eval.corpus.max_pairs=50 pairs" in line for line in lines)
    for kind, line in zip(("swap", "halves"), lines):
        built = len(rows(folder, kind))
        assert 1 <= built < 50 and line.startswith(f"arches: pairs_{kind}: the held-out split gives {built} of")


def test_a_kind_with_no_pairs_is_one_line_and_writes_nothing(corpus, tmp_path):
    docs, _, _, _ = corpus
    short_lines = [("corpus/short.txt", "Too short.\nFar too short here.\n")]
    with pytest.raises(UserError) as error:
        ensure_pairs_data(tmp_path / "entry", lambda: (short_lines, docs["val"], docs["train"]), SPEC)
    message = str(error.value)
    assert "\n" not in message and error.value.exit_code == 2
    assert message.startswith("pair kind 'swap': the held-out split (1 documents) gives no pairs")
    assert "eval.corpus.pair_kinds" in message
    assert not (tmp_path / "entry").exists()


def test_the_eval_settings_name_the_kinds_and_a_typo_gets_the_closest():
    from arches.config import compose

    assert pairs.pair_spec(compose([]).eval) == PairSpec(KINDS, 500, 100, 1234)
    assert pairs.pair_spec(compose(["eval.corpus.pair_kinds=[morph]"]).eval).kinds == ("morph",)
    with pytest.raises(UserError) as error:
        pairs.pair_spec(compose(["eval.corpus.pair_kinds=[swap,lexcal]"]).eval)
    assert str(error.value) == (
        "unknown pair kind in eval.corpus.pair_kinds 'lexcal'; valid: halves, lexical, morph, swap. "
        "Did you mean 'lexical'?"
    )
    with pytest.raises(UserError, match=r"^eval.corpus.max_pairs=0 must be an integer >= 1"):
        pairs.pair_spec(compose(["eval.corpus.max_pairs=0"]).eval)
    with pytest.raises(UserError, match="pair_kinds is empty"):
        pairs.pair_spec(compose(["eval.corpus.pair_kinds=[]"]).eval)
