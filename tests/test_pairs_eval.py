"""The minimal pairs through `arches eval` (issue 15, items 3-5): every preset scores
corpus_pairs in its family's own format inside its trained lengths, the group and its
kinds are recorded and reported; the encoder's PLL-word-l2r agrees with one computed
from the exported transformers BertForMaskedLM; BLiMP's own lm-eval tasks run through
the arches model offline on BLiMP-format files, and by name offline are one line.

Runs are random-weight run folders of every preset at debug size (scored through the
real lm-eval and ArchesLM), on a small corpus with inflections, so every kind has pairs."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PRESETS, composed, sections, tiny_cfg
from omegaconf import OmegaConf

from arches.config import compose
from arches.registry import family, model_config
from arches.train.record import update_record
from arches.train.run_folder import save_checkpoint, write_config
from harness.eval.command import evaluate
from harness.tasks.pairs import KINDS, task_name

SEQ_LEN = 64  # the windows the runs "trained" on (trained_lengths in model.json): T5 targets of 14 tokens
SIZE = sections("size=debug")[1]  # max_len 512: far past the trained 64
PAIRS = [task_name(kind) for kind in KINDS]
FORMATS = {"decoder": "causal", "encoder": "pll_word_l2r", "encoder_decoder": "t5_sentinel", "glm": "mask"}
EVAL = ["eval=quick", "eval.tasks=[corpus_pairs]", "eval.corpus.max_pairs=12", "eval.corpus.fewshot_pool=2",
        "eval.limit=6", "eval.device=cpu"]  # fmt: skip

_VERBS = ["walk", "call", "pray", "love", "hope", "wait", "turn", "burn", "keep", "fear", "seek", "rest", "serve",
          "gather", "follow", "answer", "remember", "deliver", "praise", "mourn"]  # fmt: skip
_NOUNS = ["king", "sailor", "friend", "queen", "harbour", "city", "letter", "forest", "house", "market", "mountain",
          "river", "sword", "crown", "garden", "temple", "shepherd", "captain", "castle", "bread", "stone", "field",
          "servant", "prophet", "daughter", "brother", "window", "tower"]  # fmt: skip
_ENDS = ["in the morning", "before the dawn", "at the gate", "for many years", "with a heavy heart", "at last"]


def _forms(verb: str) -> list[str]:
    stem = verb[:-1] if verb.endswith("e") else verb
    return [verb, verb + "s", stem + "ed", stem + "ing", stem + "eth"]


def write_corpus(folder: Path, documents: int = 40) -> None:
    """Lines of 8-16 words with attested inflections (loved/loves/loving), so morph has pairs."""
    rng = random.Random(5)
    folder.mkdir(parents=True)
    for index in range(documents):
        lines = []
        for _ in range(24):
            words = f"the {rng.choice(_NOUNS)} {rng.choice(_forms(rng.choice(_VERBS)))} the {rng.choice(_NOUNS)}"
            line = f"{words} and {rng.choice(_forms(rng.choice(_VERBS)))} {rng.choice(_ENDS)}."
            lines.append(line[0].upper() + line[1:])
        (folder / f"doc{index:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_run(root: Path, preset: str, spread: float | None = None) -> Path:
    """A completed run folder of `preset` with random weights (`spread`: every weight drawn
    from N(0, spread), norms from N(1, spread), so every tensor moves the scores)."""
    from arches.data.cache import prepare

    cfg = tiny_cfg(root / "cache", [root / "corpus"], seq_len=SEQ_LEN, val_fraction=0.1, test_fraction=0.2)
    prepared = prepare(cfg)
    arch = composed(preset)[0]
    spec = family(arch["family"])
    model_cfg = model_config(arch, SIZE, prepared.vocab_size, SEQ_LEN)
    torch.manual_seed(0)
    model = spec.build(model_cfg, arch)
    if spread is not None:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, spread)
    run_dir = root / "results" / (preset if spread is None else f"{preset}-spread")
    save_checkpoint(run_dir, model, arch["family"], arch, model_cfg, spec.trained_lengths(arch, SEQ_LEN))
    write_config(run_dir, {"seed": 0, "cache_dir": str(root / "cache"), "data": OmegaConf.to_container(cfg.data),
                           "arch": arch})  # fmt: skip
    shutil.copyfile(prepared.tokenizer_path, run_dir / "tokenizer.json")
    update_record(run_dir, status="completed", run_name=run_dir.name, variant=preset, family=arch["family"],
                  preset=preset, seed=0, tokenizer_hash=prepared.tokenizer_hash)  # fmt: skip
    return run_dir


class TableIds:
    """The largest id each position table of a loaded model is asked for (forward hooks on
    the real nn.Embedding modules of the model ArchesLM loads: nothing is replaced)."""

    def __init__(self) -> None:
        self.largest: dict[tuple[str, str], int] = {}

    def watch(self, run_name: str, model) -> None:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Embedding) and name.endswith(("positions", "block_positions")):
                module.register_forward_hook(self.hook((run_name, name.rsplit(".", 1)[-1])))

    def hook(self, key: tuple[str, str]):
        def record(module, inputs, output) -> None:
            self.largest[key] = max(self.largest.get(key, -1), int(inputs[0].max()))

        return record


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs_eval")
    write_corpus(root / "corpus")
    return root


@pytest.fixture(scope="module")
def evaluated(root):
    """Every preset's run folder, evaluated on corpus_pairs by `arches eval` (in process):
    {preset: (run folder, outcome)}, and the position ids each model was asked for."""
    import harness.lm.model

    ids = TableIds()
    real_load = harness.lm.model.load_model

    def load_and_watch(run_dir, **kwargs):
        model, meta = real_load(run_dir, **kwargs)
        ids.watch(Path(run_dir).name, model)
        return model, meta

    harness.lm.model.load_model = load_and_watch
    try:
        out = {}
        for preset in PRESETS:
            run = make_run(root, preset)
            out[preset] = run, evaluate(compose([f"run={run}", f"cache_dir={root / 'cache'}", *EVAL]))
    finally:
        harness.lm.model.load_model = real_load
    return out, ids


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_scores_the_minimal_pairs_in_its_own_format(evaluated, preset):
    outcomes, ids = evaluated
    run, outcome = outcomes[preset]
    record = json.loads((run / "run.json").read_text())
    meta = json.loads((run / "checkpoint" / "model.json").read_text())
    expected = "prefix_lm" if preset == "prefix_lm" else FORMATS[meta["family"]]
    assert set(outcome["evals"]) == {f"{name}|0" for name in ["corpus_pairs", *PAIRS]}
    assert record["evals"] == outcome["evals"]
    for name in PAIRS:
        entry = record["evals"][f"{name}|0"]
        assert entry["format"] == expected and entry["chance"] == 0.5 and entry["n"] == 6
        assert 0.0 <= entry["metrics"]["acc"] <= 1.0 and 0.0 <= entry["metrics"]["tie"] < 1.0
        samples = [json.loads(line) for line in (run / entry["samples_file"]).read_text().splitlines()]
        for sample in samples:
            (good, _), (bad, _) = (response[0] for response in sample["resps"])
            assert all(math.isfinite(v) and v < 0 for v in (good, bad)), sample["resps"]
            assert sample["arguments"][0][0] == "" and sample["arguments"][0][1] == " " + sample["doc"]["good"]
            assert sample["acc"] == (0.5 if good == bad else float(good > bad)) and sample["tie"] == float(good == bad)
    group = record["evals"]["corpus_pairs|0"]
    assert group["subtasks"] == PAIRS and group["samples_file"] is None and group["format"] == expected
    assert group["n"] == 24 and group["chance"] == 0.5
    for metric in ("acc", "tie"):  # lm-eval's group score: the unweighted mean over the kinds
        kinds = [record["evals"][f"{name}|0"]["metrics"][metric] for name in PAIRS]
        assert group["metrics"][metric] == pytest.approx(sum(kinds) / len(kinds))
    # scored inside the lengths the checkpoint trained on, whatever the format
    trained = meta["trained_lengths"]
    if meta["model"]["position"] in ("learned", "glm2d"):  # a table of positions (rope, alibi, t5's buckets: none)
        assert 0 < ids.largest[(run.name, "positions")] < trained["input"]
    if meta["family"] == "glm":  # each blank no longer than the trained [MASK] spans: Part B's block ids
        assert 0 < ids.largest[(run.name, "block_positions")] <= trained["mask_span"] + 1


def test_the_blank_formats_score_long_lines_as_successive_trained_blanks(evaluated):
    """The lines are longer than T5's trained targets and GLM's [MASK] spans: the pairs above
    were scored blank after blank (the chain rule), never refused."""
    from arches.data.tokenizer import load_tokenizer

    outcomes, _ = evaluated
    tokenizer = load_tokenizer(outcomes["t5"][0] / "tokenizer.json")
    samples = (outcomes["t5"][0] / "eval" / "samples-pairs_swap-0shot.jsonl").read_text().splitlines()
    longest = max(len(tokenizer.encode(json.loads(s)["arguments"][0][1]).ids) for s in samples)
    for preset, room in (("t5", "target"), ("glm", "mask_span")):
        trained = json.loads((outcomes[preset][0] / "checkpoint" / "model.json").read_text())["trained_lengths"]
        assert longest > trained[room], (preset, longest, trained)


def test_an_empty_context_is_the_blank_alone_in_the_blank_formats(evaluated):
    from harness.lm.model import ArchesLM

    outcomes, _ = evaluated
    expected = {"gpt": "eos", "prefix_lm": "eos", "bert": "eos", "t5": "none", "glm": "none"}
    for preset, context in expected.items():
        scorer = ArchesLM(run=str(outcomes[preset][0]), cache=False).scorer
        ids, continuation = scorer.encode_pair("", " The king walked")
        assert ids == ([scorer.specials.eos] if context == "eos" else []), preset
        assert continuation == scorer.encode(" The king walked")


def test_the_report_shows_each_kind_and_the_mean_per_variant(evaluated, root):
    from harness.report import write_report

    text = write_report(root / "results").read_text()
    section = text.split("## Minimal pairs (corpus_pairs, 0-shot)\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:4] == ["task", "shots", "chance", "n"] and set(header[4:]) == set(PRESETS)
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
    assert list(rows) == [*PAIRS, "mean (corpus_pairs)"]
    assert all(row[2] in ("0.500", "0.500 (≈ chance)") for row in rows.values())  # tiny models: often at chance
    assert rows["pairs_swap"][3] == "6 of 12" and rows["mean (corpus_pairs)"][3] == "24 of 48"
    assert sum(cell.startswith("**") for cell in rows["mean (corpus_pairs)"][4:]) >= 1  # the best estimate: bold
    assert all(re.search(r" \[\d\.\d+, \d\.\d+\]", cell) for row in rows.values() for cell in row[4:])
    # the Scores table keeps the kinds, not the group's mean (it is not one more task)
    scores = text.split("## Scores\n", 1)[1].split("\n## ", 1)[0]
    assert "| pairs_lexical |" in scores and "corpus_pairs" not in scores


def test_the_group_mean_has_an_interval_ties_and_holm_marks(tmp_path):
    """Fixture records with known outcomes: `a` right on 30 of 40 pairs of each kind, `b` on
    10, with 10 ties (half each): the mean's interval is a bootstrap over the 160 pooled pairs,
    b's ties show, and b is significantly worse than the best after Holm; `c`, equal to a on
    two kinds and better by one pair on two, is the bold best estimate but gets no ★."""
    import numpy as np
    from fixtures.run_folders import make_run as record_run

    from harness import report

    def record(name, per_kind):
        scores, samples, acc_means, ses, ties = {}, {}, [], [], []
        for kind, (acc, tie) in zip(PAIRS, per_kind):
            acc, tie = np.asarray(acc, float), np.asarray(tie, float)
            se = float(acc.std(ddof=1) / math.sqrt(len(acc)))
            scores[(kind, 0)] = {"acc": acc.mean(), "acc_stderr": se, "tie": tie.mean(), "chance": 0.5}
            samples[(kind, 0)] = {"acc": acc.tolist(), "tie": tie.tolist()}
            acc_means.append(acc.mean()), ses.append(se), ties.append(tie.mean())
        group_se = math.sqrt(sum(se**2 for se in ses)) / len(ses)
        scores[("corpus_pairs", 0)] = {"acc": float(np.mean(acc_means)), "acc_stderr": group_se,
                                       "tie": float(np.mean(ties)), "chance": 0.5, "subtasks": PAIRS}  # fmt: skip
        record_run(tmp_path, name, variant=name, scores=scores, samples=samples)
        return float(np.mean(acc_means)), group_se

    strong = ([1.0] * 30 + [0.0] * 10, [0.0] * 40)
    weak = ([0.5] * 10 + [1.0] * 10 + [0.0] * 20, [1.0] * 10 + [0.0] * 30)
    better = ([1.0] * 31 + [0.0] * 9, [0.0] * 40)
    a_mean, _ = record("a", [strong] * 4)
    record("b", [weak] * 4)
    record("c", [strong, strong, better, better])
    text = report.write_report(tmp_path).read_text()
    section = text.split("## Minimal pairs (corpus_pairs, 0-shot)\n", 1)[1].split("\n## ", 1)[0]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
                                          if line.startswith("| ") and not line.startswith("| task"))}  # fmt: skip
    mean = rows["mean (corpus_pairs)"]
    low, high = (float(x) for x in re.fullmatch(r"0\.750 \[(0\.\d+), (0\.\d+)\]", mean[4]).groups())
    assert low < a_mean < high and high - low < 0.2  # a: neither bold nor marked
    assert mean[5].startswith("0.375 [") and mean[5].endswith("† (ties 25.0%)")
    assert mean[6].startswith("**0.76") and not mean[6].endswith(("★", "†"))  # c: best estimate, not significant
    assert rows["pairs_swap"][5].endswith("† (ties 25.0%)")
    assert "No pair was a tie" not in section


def test_a_subset_of_kinds_is_the_group_and_a_named_kind_runs_on_its_own(root, evaluated):
    outcomes, _ = evaluated
    run = outcomes["gpt"][0]
    overrides = [f"run={run}", f"cache_dir={root / 'cache'}", *EVAL, "eval.tasks=[corpus_pairs,pairs_morph,pairs_swap]",
                 "eval.corpus.pair_kinds=[swap,halves]", "eval.num_fewshot=[0,2]"]  # fmt: skip
    outcome = evaluate(compose(overrides))
    # the pairs are zero-shot (their YAML's num_fewshot: 0): the 2-shot pass scores none of them again
    assert set(outcome["evals"]) == {"corpus_pairs|0", "pairs_swap|0", "pairs_halves|0", "pairs_morph|0"}
    group = outcome["evals"]["corpus_pairs|0"]
    assert group["subtasks"] == ["pairs_swap", "pairs_halves"] and group["n"] == 12
    kinds = [outcome["evals"][f"pairs_{k}|0"]["metrics"]["acc"] for k in ("swap", "halves")]
    assert group["metrics"]["acc"] == pytest.approx(sum(kinds) / 2)
    # the same pairs as the full group's: a kind's pairs do not depend on the other kinds
    assert outcome["evals"]["pairs_swap|0"]["metrics"] == json.loads((run / "run.json").read_text())["evals"]["pairs_swap|0"]["metrics"]


def test_a_kind_with_fewer_pairs_than_asked_is_a_note_of_the_eval(root, evaluated, capfd):
    outcomes, _ = evaluated
    overrides = [f"run={outcomes['gpt'][0]}", f"cache_dir={root / 'cache'}", *EVAL, "eval.tasks=[pairs_halves]",
                 "eval.corpus.max_pairs=5000"]  # fmt: skip
    capfd.readouterr()
    outcome = evaluate(compose(overrides))
    built = outcome["evals"]["pairs_halves|0"]["n_available"]
    assert 0 < built < 5000 and outcome["notes"] == [
        f"pairs_halves: the held-out split gives {built} of eval.corpus.max_pairs=5000 pairs; the task is built with "
        "those (raise data.test_fraction for more)"
    ]
    assert "held-out split" not in capfd.readouterr().err  # shown with the scores, not before an error


def test_an_unknown_kind_gets_the_closest_name_and_creates_nothing(root, evaluated, capsys):
    from hf_checkpoints import run_cli

    outcomes, _ = evaluated
    run = outcomes["gpt"][0]
    before = sorted(p.name for p in run.rglob("*"))
    code, err = run_cli(["eval", f"run={run}", f"cache_dir={root / 'cache'}", "eval.tasks=[corpus_pairs]",
                         "eval.corpus.pair_kinds=[swap,lexcal]"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "eval.corpus.pair_kinds=['swap', 'lexcal']" in err and "Did you mean 'lexical'?" in err
    assert sorted(p.name for p in run.rglob("*")) == before


# ---------------------------------------------------------------- PLL cross-check


SENTENCES = [
    "The shepherd remembered the burning city, and wept.",
    "The prophet followed the servant for many years; at last he answered.",
    "Its tower held 12 swords and a crown",
    # where the word boundaries differ: a contraction; a digit then a letter, a curly apostrophe
    "Our captain's daughter gathered bread before the dawn!",
    "Room 3b held the king’s letter",
]


def hf_pll_word_l2r(model, tokenizer, prefix_id: int, text: str) -> tuple[float, list]:
    """Kauf & Ivanova 2023's PLL-word-l2r from a transformers masked LM, token by token: for
    token t of word w, mask t and the tokens of w to its right; sum log p(t). Words are the
    tokenizer's own pre-tokens (word_ids)."""
    encoding = tokenizer(text, add_special_tokens=False)
    ids, words = encoding["input_ids"], encoding.word_ids()
    total = 0.0
    for i, token in enumerate(ids):
        masked = [prefix_id] + [tokenizer.mask_token_id if j >= i and words[j] == words[i] else t for j, t in enumerate(ids)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([masked])).logits[0, i + 1]
        total += float(logits.float().log_softmax(-1)[token])
    return total, words


def arches_words(scorer, text: str) -> list[int]:
    from arches.families.scoring import word_ends

    ends = word_ends(scorer.encode(text), scorer.starts_word, scorer.ends_word)
    return [sorted(set(ends)).index(end) for end in ends]


def test_the_encoder_pll_matches_bert_for_masked_lm(root, evaluated, capsys):
    """arches' encoder scorer against PLL-word-l2r computed independently from the exported
    `BertForMaskedLM` (`arches export-hf`), the same ids on both sides: agreement to 1e-4
    where the two agree on the word boundaries.

    Where they legitimately differ: arches groups tokens into words by their bytes (a run
    of tokens joined by letters, digits or any non-ASCII byte: `word_ends`), the
    tokenizer's pre-tokenizer by GPT-2's regex. The regex keeps a contraction whole
    ("captain's" is "captain", "'s"), where arches, like BERT's own basic tokenizer, splits
    the apostrophe off ("captain", "'", "s"); and it splits letters from digits ("3b" is
    "3", "b") and from non-letter Unicode ("king’s" is "king", "’", "s"), which arches keeps
    in one word. Those words are masked differently, and the scores differ. Special tokens: both score the sentence after `<eos>`, the start
    of a text as arches' BERT trained on packed documents; Kauf & Ivanova's minicons wraps
    it in [CLS] ... [SEP], which this BERT never saw (the exported tokenizer has neither)."""
    transformers = pytest.importorskip("transformers")
    from hf_checkpoints import run_cli

    from harness.lm.model import ArchesLM

    run, exported = make_run(root, "bert", spread=0.2), root / "bert-hf"
    assert run_cli(["export-hf", str(run), str(exported)], capsys)[0] == 0
    model = transformers.AutoModelForMaskedLM.from_pretrained(exported).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert type(model).__name__ == "BertForMaskedLM"
    scorer = ArchesLM(run=str(run), cache=False).scorer
    texts = [" " + s for s in SENTENCES]
    ours = [lp for lp, _ in scorer.loglikelihood([("", text) for text in texts], batch_size=7)]
    plain = ArchesLM(run=str(run), cache=False, format="pll").scorer.loglikelihood([("", t) for t in texts], 7)
    agreed = 0
    for text, mine, (pll, _) in zip(texts, ours, plain):
        theirs, words = hf_pll_word_l2r(model, tokenizer, scorer.specials.eos, text)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == scorer.encode(text)
        if words == arches_words(scorer, text):
            assert mine == pytest.approx(theirs, abs=1e-4), text
            agreed += 1
        else:  # the documented differences, and they show in the score
            assert "'s" in text or "3b" in text, text
            assert abs(mine - theirs) > 1e-3, text
        if len(set(words)) < len(words):  # a word of several tokens: masking its right side matters
            assert abs(mine - pll) > 1e-3, text
    assert agreed == 3


# ---------------------------------------------------------------- BLiMP by name


BLIMP_PAIRS = [
    ("Katherine can't help herself.", "Katherine can't help himself."),
    ("The king remembered himself.", "The king remembered herself."),
    ("A queen loved herself.", "A queen loved himself."),
    ("The sailors praised themselves.", "The sailors praised himself."),
]


def blimp_tasks(folder: Path) -> list[str]:
    """lm-eval's real BLiMP config (its `_template_yaml`, included by absolute path, and its
    group's aggregation) pointed at BLiMP-format files written here: two paradigms."""
    import lm_eval.tasks

    blimp = Path(lm_eval.tasks.__file__).parent / "blimp"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for paradigm, rows in (("anaphor_gender_agreement", BLIMP_PAIRS), ("anaphor_number_agreement", BLIMP_PAIRS[::-1])):
        data = folder / f"{paradigm}.jsonl"
        data.write_text("".join(json.dumps({
            "sentence_good": good, "sentence_bad": bad, "field": "morphology", "linguistics_term": "anaphor_agreement",
            "UID": paradigm, "simple_LM_method": True, "one_prefix_method": False, "two_prefix_method": False,
            "lexically_identical": False, "pair_id": i}) + "\n" for i, (good, bad) in enumerate(rows)))  # fmt: skip
        config = {"include": str(blimp / "_template_yaml"), "task": f"blimp_{paradigm}", "dataset_path": "json",
                  "dataset_kwargs": {"data_files": {"train": str(data)}}}  # fmt: skip
        (folder / f"{paradigm}.yaml").write_text(yaml.safe_dump(config))
        names.append(f"blimp_{paradigm}")
    group = yaml.safe_load((blimp / "_blimp.yaml").read_text())
    (folder / "_blimp.yaml").write_text(yaml.safe_dump({**group, "task": names}))
    return names


def test_blimp_tasks_run_through_the_arches_model_offline(evaluated, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.eval.records import record_entries, write_results
    from harness.lm.model import ArchesLM

    outcomes, _ = evaluated
    run = outcomes["gpt"][0]
    names = blimp_tasks(tmp_path / "blimp")
    manager = TaskManager(include_path=[str(tmp_path / "blimp")], include_defaults=False)
    model = ArchesLM(run=str(run), batch_size=8, cache=False)
    results = lm_eval.simple_evaluate(model=model, tasks=["blimp"], task_manager=manager, num_fewshot=0,
                                      log_samples=True, bootstrap_iters=0)  # fmt: skip
    for name in names:
        assert 0.0 <= results["results"][name]["acc,none"] <= 1.0 and results["n-samples"][name]["effective"] == 4
        for sample in results["samples"][name]:
            assert sample["arguments"][0][0] == "" and sample["arguments"][0][1] == " " + sample["doc"]["sentence_good"]
    assert results["results"]["blimp"]["acc,none"] == pytest.approx(
        sum(results["results"][n]["acc,none"] for n in names) / 2)
    entries = record_entries(results, 0, write_results(tmp_path / "run", 0, results), {"format": model.scoring_format})
    assert entries["blimp|0"]["subtasks"] == names and entries["blimp|0"]["n"] == 8
    assert entries["blimp|0"]["samples_file"] is None and entries[f"{names[0]}|0"]["samples_file"]
    # BLiMP's template fixes num_fewshot: 0: asked for 2 shots, lm-eval scores 0, recorded under 0 only
    again = lm_eval.simple_evaluate(model=model, tasks=[names[0]], task_manager=manager, num_fewshot=2,
                                    bootstrap_iters=0)  # fmt: skip
    assert again["n-shot"][names[0]] == 0 and record_entries(again, 2, {names[0]: ("f", None)}, {}) == {}


@pytest.mark.parametrize("task,needle", [
    ("blimp", "lm-eval's BLiMP group"),
    ("blimp_anaphor_gender_agreement", "lm-eval's BLiMP task"),
    ("blimp_anaphor_gender_agrement", "Did you mean 'blimp_anaphor_gender_agreement'?"),
])
def test_blimp_by_name_offline_is_one_line_naming_the_dataset(root, evaluated, task, needle, capsys):
    from hf_checkpoints import run_cli

    outcomes, _ = evaluated
    run = outcomes["gpt"][0]
    code, err = run_cli(["eval", f"run={run}", f"cache_dir={root / 'cache'}", f"eval.tasks=[{task}]"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "nyu-mll/blimp" in err and "eval.tasks=[corpus_pairs]" in err and needle in err, err
