"""Interop with HF transformers (`arches import-hf`, `arches export-hf`, arches.interop).

Every HF model here is built from a tiny config with random weights and saved next to
a small byte-level BPE tokenizer trained in the test (tests/hf_checkpoints.py); nothing
is downloaded. Checks: logits parity of an import for all nine architectures (Falcon in
two layouts), export -> from_pretrained round trips, lm-eval scores through `arches`
equal to lm-eval's own `hf` backend (GPT-2 and T5), a checkpoint without a tokenizer
refused unless tokenizer=<path> is given, and one-line errors with no run folder for
bad input. Also the `t5_relative` position knob on its own (relative, cached decoding,
T5's buckets). Exports of runs trained here: tests/test_interop_export.py.
"""

from __future__ import annotations

import json
import math
import random
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from conftest import CHOICE_QUESTIONS, tiny_text  # noqa: E402
from hf_checkpoints import (  # noqa: E402
    HF_CLASSES,
    PRESETS,
    TOLERANCE,
    VOCAB,
    expect_refusal,
    hf_config,
    hf_logits,
    hf_tokenizer,
    inputs,
    our_logits,
    run_cli,
    save_hf,
)

from arches.cli import main  # noqa: E402
from arches.core import ModelConfig  # noqa: E402
from arches.core.positions import t5_relative_buckets  # noqa: E402
from arches.errors import UserError  # noqa: E402
from arches.interop import export_hf, import_hf  # noqa: E402
from arches.train.run_folder import load_model, read_json  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: (root / name, save_hf(root / name, name)) for name in HF_CLASSES}


# --------------------------------------------------------------------------- logits parity and round trip


@pytest.mark.parametrize("name", list(HF_CLASSES))
def test_import_gives_the_hf_logits_and_export_gives_them_back(name, checkpoints, tmp_path):
    folder, hf_model = checkpoints[name]
    run = import_hf(str(folder), overrides=[f"results_dir={tmp_path / 'results'}"])
    assert run == tmp_path / "results" / f"hf-{name}"
    record = read_json(run / "run.json")
    assert record["status"] == "completed" and record["preset"] == PRESETS[name] and record["tokenizer_kind"] == "hf"
    assert record["imported_from"] == str(folder) and record["params_total"] > 0
    model, meta = load_model(run)
    assert meta["arch"]["hf_architecture"] == HF_CLASSES[name] and meta["arch"]["name"] == PRESETS[name]
    special = meta["arch"]["special_tokens"]  # the imported tokenizer's tokens for arches' roles
    assert {"gpt2": special["pad"] == special["eos"] == "<|endoftext|>", "bert": special["mask"] == "[MASK]",
            "t5": special["bos"] == "<pad>" and special["sentinels"][:2] == ["<extra_id_0>", "<extra_id_1>"]}.get(name, True)
    assert "data" in yaml.safe_load((run / "config.yaml").read_text())  # what `arches eval` reads
    batch = inputs()
    want = hf_logits(hf_model, name, batch)
    got = our_logits(model, batch)
    assert (got - want).abs().max().item() <= TOLERANCE, (got - want).abs().max().item()
    assert want.abs().max().item() > 0.5  # the comparison is not between near-zero logits

    exported = export_hf(run, tmp_path / "exported")
    auto = {"bert": "AutoModelForMaskedLM", "t5": "AutoModelForSeq2SeqLM"}.get(name, "AutoModelForCausalLM")
    reloaded = getattr(transformers, auto).from_pretrained(exported).eval()
    assert type(reloaded).__name__ == HF_CLASSES[name]
    again = hf_logits(reloaded, name, batch)
    assert (again - want).abs().max().item() <= TOLERANCE
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert tokenizer("the old king", add_special_tokens=False)["input_ids"] == \
        transformers.AutoTokenizer.from_pretrained(folder)("the old king", add_special_tokens=False)["input_ids"]


def test_padded_inputs_match_too(checkpoints, tmp_path):
    # the relative bias with an encoder padding mask, and BERT's padding mask
    batch = inputs(seed=5)
    is_real = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    is_real[0, 7:] = False
    for name in ("t5", "bert"):
        folder, hf_model = checkpoints[name]
        model, _ = load_model(import_hf(str(folder), overrides=[f"results_dir={tmp_path}"]))
        with torch.no_grad():
            if name == "t5":
                want = hf_model(input_ids=batch["input_ids"], attention_mask=is_real.long(),
                                decoder_input_ids=batch["decoder_input_ids"]).logits
                got = model({**batch, "is_real": is_real})[0]
            else:
                want = hf_model(input_ids=batch["input_ids"], attention_mask=is_real.long()).logits[0, :7]
                got = model.head(model.body(batch["input_ids"][:1, :7]))[0]
        assert (got - want).abs().max().item() <= TOLERANCE, name


def test_an_arches_trained_model_exports_too(tmp_path):
    # a run of our own (llama preset, arches' tokenizer) -> transformers, same logits
    from arches.registry import family
    from arches.data.tokenizer import tokenizer_hash, train_tokenizer
    from arches.train.record import update_record
    from arches.train.run_folder import TOKENIZER_FILE, save_checkpoint

    tokenizer = train_tokenizer([tiny_text(random.Random(1), 30)], 400)
    arch = {"name": "llama", "family": "decoder", "objective": "lm"}
    cfg = ModelConfig(vocab_size=400, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_len=64, position="rope",
                      norm="rmsnorm", activation="swiglu", bias=False, tie_embeddings=False)
    torch.manual_seed(0)
    model = family("decoder").build(cfg, arch).eval()
    save_checkpoint(tmp_path / "run", model, "decoder", arch, cfg)
    tokenizer.save(str(tmp_path / "run" / TOKENIZER_FILE))
    update_record(tmp_path / "run", tokenizer_hash=tokenizer_hash(tokenizer), status="completed")
    exported = export_hf(tmp_path / "run", tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    batch = {"input_ids": torch.randint(0, 400, (2, 9))}
    assert (our_logits(model, batch) - hf_logits(reloaded, "llama", batch)).abs().max().item() <= TOLERANCE
    assert reloaded.config.eos_token_id == tokenizer.token_to_id("<eos>")


# --------------------------------------------------------------------------- scoring parity with lm-eval's hf backend


@pytest.fixture(scope="module")
def choice_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in CHOICE_QUESTIONS))
    (folder / "interop_choice.yaml").write_text(textwrap.dedent(f"""
        task: interop_choice
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        output_type: multiple_choice
        test_split: test
        doc_to_text: "Q: {{{{question}}}}\\nA:"
        doc_to_target: answer
        doc_to_choice: choices
        metric_list:
          - metric: acc
    """))
    return folder


def per_request(lm, task_dir: Path) -> list[float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model=lm, tasks=["interop_choice"], task_manager=TaskManager(include_path=str(task_dir),
                                      include_defaults=False), log_samples=True, num_fewshot=0, bootstrap_iters=0)
    samples = sorted(results["samples"]["interop_choice"], key=lambda s: s["doc_id"])
    return [float(resp[0]) for sample in samples for resp in sample["filtered_resps"]]


@pytest.mark.parametrize("name,model_args", [("gpt2", {}), ("t5", {"format": "plain_eos"})])
def test_scores_through_arches_equal_lm_evals_hf_backend(name, model_args, checkpoints, choice_task, tmp_path):
    pytest.importorskip("accelerate")  # lm-eval's hf backend imports it
    from lm_eval.models.huggingface import HFLM

    from harness.lm.model import ArchesLM

    folder, _ = checkpoints[name]
    run = import_hf(str(folder), overrides=[f"results_dir={tmp_path}"])
    ours = per_request(ArchesLM(run=run, batch_size=4, cache=False, **model_args), choice_task)
    theirs = per_request(HFLM(pretrained=str(folder), device="cpu", batch_size=4, dtype="float32"), choice_task)
    assert len(ours) == len(theirs) == sum(len(c) for _, c, _ in CHOICE_QUESTIONS)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= TOLERANCE
    assert len(set(round(x, 3) for x in ours)) > 3  # the scores differ from request to request


# --------------------------------------------------------------------------- bad input: one line, exit 2, no run folder


def test_an_unsupported_architecture_lists_the_supported_ones(tmp_path, capsys):
    folder = tmp_path / "mistral"
    config = transformers.MistralConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, vocab_size=VOCAB)
    config.architectures = ["MistralForCausalLM"]
    config.save_pretrained(folder)
    expect_refusal(["import-hf", str(folder)], tmp_path / "results", capsys, "unsupported architecture MistralForCausalLM",
                   "GPT2LMHeadModel", "GPTJForCausalLM", "FalconForCausalLM", "T5ForConditionalGeneration")


def test_a_checkpoint_without_a_tokenizer_is_refused_unless_one_is_given(tmp_path, capsys):
    """Issue 14: a GPT-2 folder saved without tokenizer files imported with an empty
    tokenizer (transformers builds GPT-2's from nothing), and scoring then failed with
    "an empty continuation cannot be scored"."""
    from lm_eval.api.instance import Instance

    from harness.lm.model import ArchesLM

    folder, results = tmp_path / "gpt2", tmp_path / "results"
    save_hf(folder, "gpt2", tokenizer=False)
    expect_refusal(["import-hf", str(folder)], results, capsys, f"{folder} has no tokenizer (tokenizer.json",
                   "pass tokenizer=<path to tokenizer.json or a folder with one>")
    tokenizer_json = tmp_path / "tokenizer" / "tokenizer.json"  # a tokenizers file with no transformers config
    tokenizer_json.parent.mkdir()
    hf_tokenizer("decoder").backend_tokenizer.save(str(tokenizer_json))
    expect_refusal(["import-hf", str(folder), f"tokenizer={tmp_path / 'nowhere.json'}"], results, capsys, "does not exist")
    expect_refusal(["import-hf", str(folder), f"tokenizer={folder}"], results, capsys, "has no tokenizer")
    small = tmp_path / "small"  # 100 embedding rows, and a tokenizer of 340 tokens
    save_hf(small, "gpt2", tokenizer=False, vocab_size=100)
    expect_refusal(["import-hf", str(small), f"tokenizer={tokenizer_json}"], results, capsys, "340 tokens", "only 100 embedding rows")

    code, err = run_cli(["import-hf", str(folder), f"tokenizer={tokenizer_json}", f"results_dir={results}"], capsys)
    assert code == 0, err
    run = results / "hf-gpt2"
    assert read_json(run / "run.json")["tokenizer_from"] == str(tokenizer_json)
    assert load_model(run)[1]["arch"]["special_tokens"]["eos"] == "<|endoftext|>"  # the config's eos_token_id, named
    lm = ArchesLM(run=run, batch_size=2, cache=False)
    requests = [Instance("loglikelihood", {}, ("the old king", " spoke to the queen"), 0)]
    [(logprob, _)] = lm.loglikelihood(requests)
    assert math.isfinite(logprob) and logprob < 0
    folder_form = tmp_path / "tokenizer-folder"  # a folder transformers loads one from
    hf_tokenizer("decoder").save_pretrained(folder_form)
    code, err = run_cli(["import-hf", str(folder), f"tokenizer={folder_form}", f"results_dir={results}", "run_name=b"], capsys)
    assert code == 0 and (results / "b" / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text(), err


@pytest.mark.parametrize("name,option,value,named", [
    ("gpt2", "scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True"),
    ("llama", "rope_parameters", {"rope_type": "linear", "factor": 2.0}, "rope_type='linear'"),
    ("neox", "rope_parameters", {"rope_type": "dynamic", "factor": 2.0}, "rope_type='dynamic'"),
])
def test_an_unsupported_option_is_named(name, option, value, named, tmp_path, capsys):
    folder = tmp_path / name
    config = hf_config(name)
    setattr(config, option, {**config.rope_parameters, **value} if option == "rope_parameters" else value)
    config.architectures = [HF_CLASSES[name]]
    config.save_pretrained(folder)
    expect_refusal(["import-hf", str(folder)], tmp_path / "results", capsys, f"unsupported config option {named}")


def test_unsupported_option_messages_name_the_option(tmp_path):
    from arches.interop import ARCHITECTURES

    config = hf_config("llama")
    config.rope_parameters = {**config.rope_parameters, "rope_type": "linear", "factor": 2.0}
    with pytest.raises(UserError, match=r"rope_type='linear'"):
        ARCHITECTURES["LlamaForCausalLM"].knobs(config)
    with pytest.raises(UserError, match=r"scale_attn_by_inverse_layer_idx=True"):
        ARCHITECTURES["GPT2LMHeadModel"].knobs(hf_config("gpt2", scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(UserError, match=r"rotary_pct=0.2"):  # 0.2 of 16 head dims rotates 3: not an even count
        ARCHITECTURES["GPTNeoXForCausalLM"].knobs(transformers.GPTNeoXConfig(hidden_size=32, num_attention_heads=2, rotary_pct=0.2))


def rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_and_misshapen_weights_are_named(tmp_path, capsys):
    folder = tmp_path / "gpt2"
    save_hf(folder, "gpt2")
    rewrite_weights(folder, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    expect_refusal(["import-hf", str(folder)], tmp_path / "results", capsys, "missing weight transformer.h.1.mlp.c_fc.weight")
    save_hf(folder, "gpt2")
    rewrite_weights(folder, lambda t: t.update({"transformer.h.0.attn.c_attn.weight": torch.zeros(32, 64)}))
    expect_refusal(["import-hf", str(folder)], tmp_path / "results", capsys, "transformer.h.0.attn.c_attn.weight", "(32, 64)", "(32, 96)")


def test_a_hub_name_offline_fails_at_once_asking_for_a_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expect_refusal(["import-hf", "openai-community/gpt2"], tmp_path / "results", capsys, "pass a local folder")


def test_usage_errors(tmp_path, capsys):
    assert run_cli(["import-hf"], capsys)[0] == 2
    assert run_cli(["import-hf", str(tmp_path), "--colour"], capsys)[0] == 2
    assert run_cli(["export-hf", str(tmp_path)], capsys)[0] == 2
    code, err = run_cli(["import-hf", str(tmp_path / "nowhere" / "model")], capsys)
    assert code == 2 and "does not exist" in err


def test_cli_import_then_export(checkpoints, tmp_path, capsys):
    folder, _ = checkpoints["bloom"]
    with pytest.raises(SystemExit) as exit_:
        main(["import-hf", str(folder), "--preset", "bloom", f"results_dir={tmp_path}", "run_name=my-bloom"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "my-bloom")
    with pytest.raises(SystemExit) as exit_:
        main(["export-hf", str(tmp_path / "my-bloom"), str(tmp_path / "out")])
    assert exit_.value.code == 0 and (tmp_path / "out" / "config.json").is_file()
    code, err = run_cli(["export-hf", str(tmp_path / "my-bloom"), str(tmp_path / "out")], capsys)  # not over a folder
    assert code == 2 and "not an empty folder" in err
    code, err = run_cli(["import-hf", str(folder), "--preset", "bert", f"results_dir={tmp_path}"], capsys)
    assert code == 2 and "encoder preset" in err


# --------------------------------------------------------------------------- the t5_relative knob


def test_t5_buckets_are_t5s():
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            want = T5Attention._relative_position_bucket(relative, bidirectional, buckets, distance)
            assert torch.equal(t5_relative_buckets(relative, bidirectional, buckets, distance), want)


@pytest.mark.parametrize("family_name", ["decoder", "encoder_decoder"])
def test_t5_relative_is_relative_and_survives_the_kv_cache(family_name):
    from arches.core.attention import KVCache
    from arches.registry import family

    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=64, position="t5_relative")
    torch.manual_seed(0)
    model = family(family_name).build(cfg, {"objective": "lm" if family_name == "decoder" else "span_corruption"}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    stack = model.body if family_name == "decoder" else model.decoder
    memory = torch.randn(1, 5, 32) if family_name == "encoder_decoder" else None
    ids = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        full = stack(ids, is_causal=True, memory=memory)
        shifted = stack(ids, is_causal=True, memory=memory, position_ids=torch.arange(10)[None] + 23)
        cache = KVCache()
        first = stack(ids[:, :6], is_causal=True, memory=memory, cache=cache)
        rest = [stack(ids[:, i : i + 1], memory=memory, cache=cache) for i in range(6, 10)]
    assert torch.allclose(full, shifted, atol=1e-5)
    assert torch.allclose(full, torch.cat([first, *rest], dim=1), atol=1e-5)


def test_new_knobs_are_validated_and_off_by_default():
    cfg = ModelConfig()
    assert (cfg.gelu_approximate, cfg.head_transform, cfg.head_bias, cfg.position) == ("none", False, False, "learned")
    with pytest.raises(UserError, match="model.gelu_approximate='fast'.*none, tanh"):
        ModelConfig(gelu_approximate="fast")
    with pytest.raises(UserError, match="model.relative_buckets=2"):
        ModelConfig(position="t5_relative", relative_buckets=2)
    with pytest.raises(UserError, match="model.relative_max_distance=16"):
        ModelConfig(position="t5_relative", relative_buckets=32, relative_max_distance=16)
    with pytest.raises(UserError, match="model.head_bias"):
        ModelConfig(head_bias="yes")
