"""Language models (Table 6): text data, BPTT batching, the LSTM/CNN-LSTM families and the LM engine."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ray_ban import models
from ray_ban.core import metrics
from ray_ban.data import (
    BPTTLoader, DataError, TextSplits, check_dataset, generated_corpus, is_text, load_dataset, load_ptb,
    num_classes_of, synthetic,
)
from ray_ban.core.engine import Generation
from ray_ban.core.language_engine import EVAL_COLUMNS, LanguageGeneration
from ray_ban.models.language import EXAMPLES, KIM_FEATURE_MAPS, KIM_WIDTHS
from ray_ban.config.recipe import Recipe

SMALL = generated_corpus(vocab_size=300, train_tokens=20_000, valid_tokens=3_000, test_tokens=3_000, seed=1)
RECIPE = Recipe(epochs=2, batch_size=16, lr=20.0, momentum=0.0, nesterov=False, weight_decay=0.0, schedule="plateau", bptt=20, grad_clip=0.25)


def tiny_lm(seed: int = 0, vocab: int = SMALL.num_classes, dropout: float = 0.2):
    torch.manual_seed(seed)
    return models.build("lstm-1x32", vocab, dropout=dropout)


@pytest.fixture(scope="module")
def teacher():
    generation = LanguageGeneration(tiny_lm(7), SMALL, RECIPE, seed=7)
    list(generation.run())
    return generation.student


# -- data --------------------------------------------------------------------------------------
def test_bptt_chunks_are_shifted_contiguous_and_ranks_disjoint():
    tokens = torch.arange(1003)
    loader = BPTTLoader(tokens, 4, bptt=7)
    assert loader.data.shape == (4, 250) and torch.equal(loader.data.reshape(-1), tokens[:1000])
    chunks = list(loader)
    assert len(loader) == len(chunks) == 36 and chunks[-1][0].shape == (4, 4)  # 249 targets per column
    for inputs, targets in chunks:
        assert torch.equal(targets, inputs + 1)  # the next token of the same column
    inputs = torch.cat([x for x, _ in chunks], dim=1)
    assert torch.equal(inputs, loader.data[:, :-1])  # contiguous, no overlap, nothing skipped
    shards = [BPTTLoader(tokens, 4, bptt=7, rank=r, world_size=2) for r in range(2)]
    indices = [set(s.shard_indices().tolist()) for s in shards]
    assert indices == [{0, 1}, {2, 3}]
    assert torch.equal(torch.cat([s.data for s in shards]), loader.data)
    with pytest.raises(ValueError, match="not divisible"):
        BPTTLoader(tokens, 5, world_size=2)


def test_generated_corpus_is_deterministic_structured_and_fast():
    a, b = generated_corpus(seed=3), generated_corpus(seed=3)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, generated_corpus(seed=4).train)
    assert (a.train.numel(), a.valid.numel(), a.test.numel(), a.num_classes) == (100_000, 10_000, 10_000, 2000)
    assert "<eos>" in a.vocab and "<unk>" in a.vocab and len(set(a.vocab)) == 2000
    words = [a.vocab[i] for i in a.train[:2000]]
    # subject-verb agreement: a "these" determiner is followed by plural nouns (n<i>s) only
    after_plural = [w for d, w in zip(words, words[1:]) if d.startswith("these") and w.startswith("n")]
    assert after_plural and all(w.endswith("s") for w in after_plural)
    assert load_dataset("synthetic-text").num_classes == num_classes_of("synthetic-text") == 2000
    assert is_text("synthetic-text") and is_text("ptb:/x") and not is_text("synthetic")


def write_ptb(folder, valid="a b c\n", test="c b <unk>\n"):
    folder.mkdir(exist_ok=True)
    (folder / "ptb.train.txt").write_text(" a b <unk> c\n b d a\n")
    (folder / "ptb.valid.txt").write_text(valid)
    (folder / "ptb.test.txt").write_text(test)
    return folder


def test_load_ptb_builds_the_vocabulary_from_train(tmp_path):
    folder = write_ptb(tmp_path / "ptb", valid="a z b\n", test="d\nc c\n")
    data = load_dataset(f"ptb:{folder}")
    assert isinstance(data, TextSplits) and data.vocab == ("a", "b", "<unk>", "c", "<eos>", "d")
    assert data.train.tolist() == [0, 1, 2, 3, 4, 1, 5, 0, 4]
    assert data.valid.tolist() == [0, 2, 1, 4]  # z is unseen in train: <unk>
    assert data.test.tolist() == [5, 4, 3, 3, 4]
    assert num_classes_of(f"ptb:{folder}") == 6 and num_classes_of(f"ptb:{tmp_path}/none") is None
    check_dataset(f"ptb:{folder}")
    (folder / "ptb.train.txt").write_text("a b c\n")  # no <unk> to map z to
    with pytest.raises(DataError, match="ptb.valid.txt has 1 words not in ptb.train.txt"):
        load_ptb(folder)


def test_missing_ptb_files_are_one_line(tmp_path):
    (tmp_path / "ptb.train.txt").write_text("a\n")
    for call in (lambda: load_ptb(tmp_path), lambda: check_dataset(f"ptb:{tmp_path}"), lambda: load_dataset(f"ptb:{tmp_path}")):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and "ptb.valid.txt, ptb.test.txt" in message and "synthetic-text" in message


# -- models ------------------------------------------------------------------------------------
def lstm_parameters(vocab: int, layers: int, units: int) -> int:
    """Tied embedding/softmax, PyTorch LSTM layers (two bias vectors), softmax bias."""
    return vocab * units + layers * (4 * units * 2 * units + 8 * units) + vocab


def cnn_lstm_parameters(vocab: int, layers: int, units: int, alphabet: int = 29) -> int:
    """Char embedding (15), convolutions, 2 highways, LSTM layers, untied softmax."""
    width = sum(KIM_FEATURE_MAPS)
    convs = sum(w * 15 * f + f for w, f in zip(KIM_WIDTHS, KIM_FEATURE_MAPS))
    highway = 2 * 2 * (width * width + width)
    lstm = 4 * units * (width + units) + 8 * units + (layers - 1) * (4 * units * 2 * units + 8 * units)
    return alphabet * 15 + convs + highway + lstm + units * vocab + vocab


@pytest.mark.parametrize("name,paper,ours,tolerance", [
    ("lstm-2x1500", 52e6, 51_034_000, 2e6),
    ("lstm-1x1500", 52e6, 33_022_000, None),  # the text's one layer cannot be Table 6's 52M
    ("cnn-lstm-2x650", 19e6, 19_372_835, 1.5e6),
])
def test_parameter_counts_at_ptb_vocabulary(name, paper, ours, tolerance):
    with torch.device("meta"):
        model = models.build(name, 10_000)
    layers, units = (int(x) for x in name.rsplit("-", 1)[1].split("x"))
    formula = (lstm_parameters if name.startswith("lstm") else cnn_lstm_parameters)(10_000, layers, units)
    assert models.parameter_count(model) == formula == ours
    if tolerance:
        assert abs(ours - paper) <= tolerance
    assert sorted(EXAMPLES) == sorted(n for n in models.examples() if models.is_language_model(n))


def test_tied_weights_are_one_tensor():
    model = models.build("lstm-1x64", 500)
    assert model.decoder.weight is model.encoder.weight
    assert model.decoder.weight.data_ptr() == model.encoder.weight.data_ptr()
    assert models.parameter_count(model) == lstm_parameters(500, 1, 64)
    assert model.is_language_model and models.is_language_model("cnn-lstm-1x64") and not models.is_language_model("wrn-10-1")


def test_language_models_carry_their_state():
    vocab = [f"w{i}" for i in range(40)]
    for model in (models.build("lstm-1x16", 40, dropout=0.0),
                  models.build("cnn-lstm-2x16", 40, vocab=vocab, widths=(1, 2, 3), feature_maps=(4, 8, 8), dropout=0.0)):
        tokens = torch.randint(0, 40, (3, 9))
        whole, _ = model(tokens)
        first, hidden = model(tokens[:, :4], model.init_hidden(3))
        rest, _ = model(tokens[:, 4:], hidden)
        assert whole.shape == (3, 9, 40) and torch.allclose(torch.cat([first, rest], 1), whole, atol=1e-5)


# -- engine ------------------------------------------------------------------------------------
def independent_test_nll(model, data: TextSplits) -> float:
    """Mean token NLL over the test stream in EVAL_COLUMNS columns, each run whole (no chunks)."""
    length = data.test.numel() // EVAL_COLUMNS
    columns = data.test[: length * EVAL_COLUMNS].reshape(EVAL_COLUMNS, length)
    model.eval()
    with torch.no_grad():
        logits, _ = model(columns[:, :-1])
    return F.cross_entropy(logits.reshape(-1, data.num_classes), columns[:, 1:].reshape(-1)).item()


def test_tiny_lstm_learns_synthetic_text():
    data = load_dataset("synthetic-text")
    recipe = RECIPE.replace(batch_size=32, bptt=35)
    torch.manual_seed(0)
    generation = LanguageGeneration(models.build("lstm-1x64", data.num_classes, dropout=0.2), data, recipe)
    reports = list(generation.run())
    counts = torch.bincount(data.train, minlength=data.num_classes).double() + 1
    unigram = math.exp(-(counts / counts.sum()).log()[data.test].mean().item())
    assert unigram < 0.2 * data.num_classes  # the uniform perplexity is the vocabulary size
    assert reports[-1].test_perplexity < 0.6 * unigram and reports[-1].val_perplexity < 0.6 * unigram
    assert reports[-1].images_per_s > 0 and 0 <= reports[-1].ece <= 100 and reports[-1].agreement is None
    # perplexity is exp of the mean token NLL, measured here independently over whole columns
    nll = independent_test_nll(generation.student, data)
    assert reports[-1].test_loss == pytest.approx(nll, rel=1e-4)
    assert reports[-1].test_perplexity == pytest.approx(math.exp(nll), rel=1e-4)


def test_test_predictions_give_the_reported_perplexity():
    generation = LanguageGeneration(tiny_lm(1), SMALL, RECIPE.replace(epochs=1))
    report = generation.train_epoch()
    predictions = generation.test_predictions()
    tokens = EVAL_COLUMNS * (SMALL.test.numel() // EVAL_COLUMNS - 1)
    assert {k: (v.shape, v.dtype) for k, v in predictions.items()} == {
        "target_logprob": ((tokens,), torch.float32), "argmax": ((tokens,), torch.int32), "label": ((tokens,), torch.int64)}
    assert math.exp(-predictions["target_logprob"].double().mean().item()) == pytest.approx(report.test_perplexity, rel=1e-5)
    assert 100 * (predictions["argmax"] != predictions["label"]).double().mean().item() == pytest.approx(report.test_error)
    columns = SMALL.test[: tokens + EVAL_COLUMNS].reshape(EVAL_COLUMNS, -1)
    assert torch.equal(predictions["label"], columns[:, 1:].reshape(-1))  # stream order, column by column
    both = metrics.ensemble_target_logprob([predictions["target_logprob"]] * 2)
    assert torch.allclose(both, predictions["target_logprob"].double(), atol=1e-6)


def test_ban_l_distils_per_token_from_a_frozen_teacher(teacher):
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    pupil = LanguageGeneration(tiny_lm(2), SMALL, RECIPE.replace(epochs=1), loss="ban+l", teacher=teacher, seed=2)
    report = pupil.train_epoch()
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert report.agreement > 30 and report.kl >= 0 and math.isfinite(report.train_loss)
    # the distillation loss is per token: ban+l = CE(teacher probs) + CE(labels), larger than CE alone
    label_only = LanguageGeneration(tiny_lm(2), SMALL, RECIPE.replace(epochs=1), seed=2).train_epoch()
    assert report.train_loss > label_only.train_loss
    with pytest.raises(ValueError, match="vocabulary of 300"):
        LanguageGeneration(tiny_lm(2, vocab=301), SMALL, RECIPE, loss="ban+l", teacher=teacher)
    with pytest.raises(ValueError, match="not a language model"):
        LanguageGeneration(models.build("wrn-10-1", 300), SMALL, RECIPE)


def test_cnn_lstm_distils_from_an_lstm_teacher(teacher):
    torch.manual_seed(3)
    student = models.build("cnn-lstm-1x32", SMALL.num_classes, vocab=SMALL.vocab, widths=(1, 2, 3), feature_maps=(8, 16, 16))
    report = LanguageGeneration(student, SMALL, RECIPE.replace(epochs=1, lr=2.0), loss="ban+l", teacher=teacher).train_epoch()
    assert report.test_perplexity < SMALL.num_classes and report.agreement is not None


def test_resume_matches_an_uninterrupted_run():
    straight = list(LanguageGeneration(tiny_lm(4), SMALL, RECIPE, seed=4).run())
    first = LanguageGeneration(tiny_lm(4), SMALL, RECIPE, seed=4)
    first.train_epoch()
    resumed = LanguageGeneration(tiny_lm(99), SMALL, RECIPE, seed=4)  # other init: the checkpoint must overwrite it
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed.run())
    assert [r.epoch for r in rest] == [2] and rest[0].lr == straight[1].lr
    assert rest[0].train_loss == pytest.approx(straight[1].train_loss, abs=1e-6)
    assert rest[0].test_perplexity == pytest.approx(straight[1].test_perplexity, rel=1e-6)


def test_plateau_lowers_the_rate_when_validation_stalls():
    # a threshold no epoch can beat: the first epoch improves on "nothing yet", every later one stalls
    recipe = RECIPE.replace(epochs=3, lr=1.0, plateau_factor=0.5, plateau_threshold=1e6)
    generation = LanguageGeneration(tiny_lm(5), SMALL, recipe, seed=5)
    assert [r.lr for r in generation.run()] == [1.0, 1.0, 0.5]
    assert generation.state_dict()["lr"] == 0.25 and generation.state_dict()["plateau_scale"] == 0.25
    improving = LanguageGeneration(tiny_lm(5), SMALL, recipe.replace(plateau_threshold=0.0), seed=5)
    reports = list(improving.run())
    assert all(b.val_perplexity < a.val_perplexity for a, b in zip(reports, reports[1:]))
    assert [r.lr for r in reports] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="plateau_factor must be in"):
        Recipe(plateau_factor=0)
    with pytest.raises(ValueError, match="plateau.*language models"):
        Generation(models.build("wrn-10-1", 10), synthetic(10, 64, 16), Recipe(schedule="plateau"))


def test_image_generation_test_predictions():
    data = synthetic(10, 64, 20)
    predictions = Generation(models.build("wrn-10-1", 10), data, Recipe(epochs=1, batch_size=32)).test_predictions()
    assert predictions["logits"].shape == (20, 10) and predictions["logits"].dtype == torch.float32
    assert torch.equal(predictions["label"], data.test_labels) and predictions["logits"].device.type == "cpu"


def _data_parallel_worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    generation = LanguageGeneration(tiny_lm(6, dropout=0.0), SMALL, RECIPE.replace(epochs=1, lr=0.5), seed=6)
    report = generation.train_epoch()
    torch.save({"loss": report.train_loss, "shard": generation.train_loader.shard_indices(),
                "model": generation.student.state_dict()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_data_parallel_matches_one_process(tmp_path):
    """Two gloo ranks with half the columns each take the same steps as one process with all of them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_data_parallel_worker, args=(2, port, str(tmp_path / "rank")), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank.{r}") for r in range(2)]
    single = LanguageGeneration(tiny_lm(6, dropout=0.0), SMALL, RECIPE.replace(epochs=1, lr=0.5), seed=6)
    report = single.train_epoch()
    assert [r["shard"].tolist() for r in ranks] == [list(range(8)), list(range(8, 16))]
    assert ranks[0]["loss"] == ranks[1]["loss"] == pytest.approx(report.train_loss, abs=1e-5)
    for name, weights in single.student.state_dict().items():
        assert torch.allclose(ranks[0]["model"][name], weights, atol=1e-5)
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name])
