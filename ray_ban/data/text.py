"""Word-level text: token-id splits, Penn Treebank files, a generated corpus, and the BPTT loader.

The language-model counterpart of ``splits``/``loader``: a corpus is three 1-D int64 streams of
token ids over one vocabulary; the loader cuts a stream into ``batch_size`` contiguous columns and
walks them in order ``bptt`` tokens at a time, as PyTorch's word_language_model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ray_ban.data.splits import DataError

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
EOS, UNK = "<eos>", "<unk>"


@dataclass(frozen=True)
class TextSplits:
    """Train/valid/test token-id streams (1-D int64) over ``vocab``; ``valid`` drives selection and the plateau schedule."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: tuple[str, ...]

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            ids = getattr(self, split)
            if ids.dtype != torch.int64 or ids.dim() != 1 or ids.numel() < 2:
                raise DataError(f"{self.name}: {split} must be a 1-D int64 stream of at least 2 tokens, got {tuple(ids.shape)} {ids.dtype}")
            if int(ids.min()) < 0 or int(ids.max()) >= len(self.vocab):
                raise DataError(f"{self.name}: {split} has token ids outside the vocabulary of {len(self.vocab)} words")

    @property
    def num_classes(self) -> int:
        """The vocabulary size: a language model's number of output classes."""
        return len(self.vocab)


# -- Penn Treebank ---------------------------------------------------------------------------------
def missing_ptb(folder: str | Path) -> list[str]:
    """The PTB files absent from ``folder`` (empty when it can be loaded)."""
    return [name for name in PTB_FILES if not (Path(folder).expanduser() / name).is_file()]


def ptb_error(folder: str | Path, missing: list[str]) -> DataError:
    """The one-line DataError for a PTB folder that lacks some files."""
    return DataError(
        f"ptb:{folder}: missing {', '.join(missing)}; copy ptb.train.txt, ptb.valid.txt and ptb.test.txt "
        f"(Mikolov's simple-examples/data) there, or use --dataset synthetic-text"
    )


def _words(path: Path) -> list[str]:
    """Every line's words followed by ``<eos>``, as in PyTorch's word_language_model."""
    with open(path, encoding="utf-8") as lines:
        return [word for line in lines for word in (*line.split(), EOS)]


def ptb_vocab(folder: str | Path) -> tuple[str, ...]:
    """The vocabulary of ``ptb.train.txt`` in first-seen order (``<eos>`` included)."""
    return tuple(dict.fromkeys(_words(Path(folder).expanduser() / PTB_FILES[0])))


def load_ptb(folder: str | Path) -> TextSplits:
    """Word-level PTB from ``ptb.{train,valid,test}.txt``; valid/test words unseen in train become ``<unk>``."""
    folder = Path(folder).expanduser()
    missing = missing_ptb(folder)
    if missing:
        raise ptb_error(folder, missing)
    train_words = _words(folder / PTB_FILES[0])
    vocab = tuple(dict.fromkeys(train_words))
    index = {word: i for i, word in enumerate(vocab)}

    def encode(words: list[str], file: str) -> torch.Tensor:
        unknown = sorted({w for w in words if w not in index})
        if unknown and UNK not in index:
            raise DataError(f"ptb:{folder}: {file} has {len(unknown)} words not in ptb.train.txt (e.g. {unknown[0]!r}) and there is no {UNK} to map them to")
        unk = index.get(UNK, -1)
        return torch.tensor([index.get(w, unk) for w in words], dtype=torch.int64)

    splits = [encode(train_words, PTB_FILES[0])]
    splits += [encode(_words(folder / f), f) for f in PTB_FILES[1:]]
    return TextSplits(f"ptb:{folder}", *splits, vocab=vocab)


# -- generated corpus ------------------------------------------------------------------------------
SYNTHETIC_TEXT_SIZES = {"vocab_size": 2000, "train_tokens": 100_000, "valid_tokens": 10_000, "test_tokens": 10_000}
TOPICS = 8


def _zipf(count: int, generator: np.random.Generator) -> np.ndarray:
    """Zipf-like probabilities over ``count`` words in a seeded random order (rank r gets 1/(r+2))."""
    probs = 1.0 / (np.arange(count) + 2.0)
    return (probs / probs.sum())[generator.permutation(count)]


class _Grammar:
    """Word classes with Zipf frequencies, sentence topics and subject-verb number agreement.

    A sentence draws a topic (nouns, adjectives and verbs of that topic are 5-10x more likely),
    a subject number (determiner, noun and verb agree, across an optional prepositional phrase),
    and a template: ``Det Adj* Noun [Prep Det Noun] Verb [Det Adj? Noun] [Adv] <eos>``; transitive
    verbs take the object. So the next word is uncertain among many plausible ones, and a teacher's
    soft predictions spread mass over the right class, topic and number: real structure to learn.
    """

    def __init__(self, vocab_size: int, generator: np.random.Generator):
        if vocab_size < 200:
            raise ValueError(f"the generated corpus needs a vocabulary of at least 200 words, got {vocab_size}")
        rest = vocab_size - 2 - 12
        preps, advs, adjs = max(8, rest // 100), max(10, rest // 33), rest * 3 // 20
        nouns = (rest - preps - advs - adjs) * 5 // 8 // 2
        verbs = (rest - preps - advs - adjs - 2 * nouns) // 2
        advs += rest - preps - advs - adjs - 2 * nouns - 2 * verbs  # whatever rounding left over
        words = [EOS, UNK]
        words += [f"the{i}" for i in range(4)] + [f"a{i}" for i in range(4)] + [f"these{i}" for i in range(4)]
        words += [f"p{i}" for i in range(preps)] + [f"r{i}" for i in range(advs)] + [f"j{i}" for i in range(adjs)]
        words += [f"n{i}{s}" for s in ("", "s") for i in range(nouns)] + [f"v{i}{s}" for s in ("s", "") for i in range(verbs)]
        self.vocab = tuple(words)
        first = {prefix: self.vocab.index(f"{prefix}0") for prefix in ("the", "a", "these", "p", "r", "j", "n")}
        first["v"] = self.vocab.index("v0s")  # singular verbs first: "n3 v7s", "n3s v7"
        g = generator
        # determiners: the* take either number, a* singular, these* plural
        self.det = {1: first["the"] + np.r_[0:4, 4:8], 2: first["the"] + np.r_[0:4, 8:12]}
        self.prep = (first["p"] + np.arange(preps), _zipf(preps, g))
        self.adv = (first["r"] + np.arange(advs), _zipf(advs, g))
        self.adj_ids, self.adj_topic, self.adj_p = first["j"] + np.arange(adjs), g.integers(0, TOPICS, adjs), _zipf(adjs, g)
        self.noun_ids = {1: first["n"] + np.arange(nouns), 2: first["n"] + nouns + np.arange(nouns)}
        self.noun_topic, self.noun_p = g.integers(0, TOPICS, nouns), _zipf(nouns, g)
        self.verb_ids = {1: first["v"] + np.arange(verbs), 2: first["v"] + verbs + np.arange(verbs)}
        self.verb_topic, self.verb_p = g.integers(0, TOPICS, verbs), _zipf(verbs, g)
        self.transitive = g.random(verbs) < 0.6

    @staticmethod
    def _pick(ids: np.ndarray, probs: np.ndarray, count: int, g: np.random.Generator) -> np.ndarray:
        return ids[g.choice(len(ids), size=count, p=probs)]

    def _topical(self, probs: np.ndarray, topics: np.ndarray, sentence_topics: np.ndarray, boost: float,
                 g: np.random.Generator) -> np.ndarray:
        """Indices drawn per sentence from ``probs`` reweighted x``boost`` on that sentence's topic."""
        weights = probs[None, :] * np.where(topics[None, :] == np.arange(TOPICS)[:, None], boost, 1.0)
        cumulative = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
        draws = g.random(len(sentence_topics))
        chosen = np.empty(len(sentence_topics), dtype=np.int64)
        for t in range(TOPICS):
            these = sentence_topics == t
            chosen[these] = np.searchsorted(cumulative[t], draws[these], side="right")
        return np.minimum(chosen, len(probs) - 1)

    def sentences(self, count: int, g: np.random.Generator) -> np.ndarray:
        """``count`` sentences as one flat int64 array of token ids, each ending in ``<eos>``."""
        topic = g.integers(0, TOPICS, count)
        absent = np.full(count, -1)

        def noun_phrase(number: np.ndarray, adjectives: int) -> list[np.ndarray]:
            det = np.where(number == 1, self.det[1][g.integers(0, 8, count)], self.det[2][g.integers(0, 8, count)])
            adj = [np.where(g.random(count) < 0.35, self.adj_ids[self._topical(self.adj_p, self.adj_topic, topic, 6.0, g)], absent)
                   for _ in range(adjectives)]
            lemma = self._topical(self.noun_p, self.noun_topic, topic, 10.0, g)
            noun = np.where(number == 1, self.noun_ids[1][lemma], self.noun_ids[2][lemma])
            noun = np.where(g.random(count) < 0.03, 1, noun)  # <unk>, as rare words are in PTB
            return [det, *adj, noun]

        subject = g.integers(1, 3, count)
        columns = noun_phrase(subject, 2)
        has_pp = g.random(count) < 0.3  # the verb must agree with the subject across this phrase
        pp = [self._pick(*self.prep, count, g)] + noun_phrase(g.integers(1, 3, count), 1)
        columns += [np.where(has_pp, c, absent) for c in pp]
        lemma = self._topical(self.verb_p, self.verb_topic, topic, 8.0, g)
        columns.append(np.where(subject == 1, self.verb_ids[1][lemma], self.verb_ids[2][lemma]))
        columns += [np.where(self.transitive[lemma], c, absent) for c in noun_phrase(g.integers(1, 3, count), 1)]
        columns.append(np.where(g.random(count) < 0.25, self._pick(*self.adv, count, g), absent))
        columns.append(np.zeros(count, dtype=np.int64))  # <eos>
        table = np.stack(columns, axis=1).reshape(-1)
        return table[table >= 0]


def generated_corpus(
    vocab_size: int = SYNTHETIC_TEXT_SIZES["vocab_size"],
    train_tokens: int = SYNTHETIC_TEXT_SIZES["train_tokens"],
    valid_tokens: int = SYNTHETIC_TEXT_SIZES["valid_tokens"],
    test_tokens: int = SYNTHETIC_TEXT_SIZES["test_tokens"],
    seed: int = 0,
    name: str = "synthetic-text",
) -> TextSplits:
    """An offline corpus from a small stochastic grammar (see ``_Grammar``), deterministic from ``seed``."""
    g = np.random.default_rng(seed)
    grammar = _Grammar(vocab_size, g)

    def stream(tokens: int) -> torch.Tensor:
        ids = grammar.sentences(tokens // 5 + 10, g)  # sentences average about 7 tokens
        while ids.size < tokens:
            ids = np.concatenate([ids, grammar.sentences(tokens // 5 + 10, g)])
        return torch.from_numpy(ids[:tokens].astype(np.int64))

    return TextSplits(name, stream(train_tokens), stream(valid_tokens), stream(test_tokens), grammar.vocab)


# -- loader ----------------------------------------------------------------------------------------
class BPTTLoader:
    """(inputs, targets) chunks of shape (columns, T <= bptt) walked in order over a batchified stream.

    As PyTorch's word_language_model ``batchify``: the stream is trimmed to a multiple of
    ``batch_size`` and reshaped to (batch_size, N), so each row is one contiguous piece of text;
    targets are the inputs shifted by one token, and consecutive chunks continue each row with no
    overlap, so a model's hidden state carries from one chunk to the next. No shuffling.
    ``batch_size`` is the global batch: with W data-parallel ranks, rank r takes the contiguous
    block of batch_size // W rows starting at r * batch_size // W (``shard_indices()``).
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, bptt: int = 35, *,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} workers")
        length = tokens.numel() // batch_size
        if length < 2:
            raise ValueError(f"{tokens.numel()} tokens make no chunk of {batch_size} columns")
        self.batch_size, self.bptt, self.rank, self.world_size = batch_size, bptt, rank, world_size
        self.device = torch.device(device)
        columns = tokens[: length * batch_size].reshape(batch_size, length)
        self.data = columns[self.shard_indices()].to(self.device)  # (batch_size // world_size, length)

    def shard_indices(self) -> torch.Tensor:
        """This rank's column (row of the batchified stream) indices: disjoint across ranks, equal in count."""
        per_rank = self.batch_size // self.world_size
        return torch.arange(self.rank * per_rank, (self.rank + 1) * per_rank)

    def __len__(self) -> int:
        return -(-(self.data.shape[1] - 1) // self.bptt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        length = self.data.shape[1]
        for start in range(0, length - 1, self.bptt):
            stop = min(start + self.bptt, length - 1)
            yield self.data[:, start:stop], self.data[:, start + 1 : stop + 1]
