"""Table 6's language models: the tied-weight LSTM (Zaremba et al.) and Kim et al.'s CNN-LSTM.

Both map token ids (B, T) and a hidden state to next-token logits (B, T, V) and the new state, so
the language engine can carry the state across truncated-BPTT chunks. ``num_classes`` is the
vocabulary size.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ray_ban.models.registry import register, whole

Hidden = tuple[torch.Tensor, torch.Tensor]

# Kim et al. 2016, large character-aware model: filter widths 1..7 with these many feature maps.
KIM_WIDTHS = (1, 2, 3, 4, 5, 6, 7)
KIM_FEATURE_MAPS = (50, 100, 150, 200, 200, 200, 200)
PSEUDO_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
EXAMPLES = ("lstm-2x1500", "lstm-1x1500", "cnn-lstm-2x650")


class _Recurrent(nn.Module):
    """The part both models share: an LSTM over per-token features, then dropout and a softmax layer."""

    is_language_model = True

    def __init__(self, vocab_size: int, input_size: int, layers: int, units: int, dropout: float):
        super().__init__()
        self.vocab_size, self.layers, self.units = vocab_size, layers, units
        self.rnn = nn.LSTM(input_size, units, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(units, vocab_size)

    def init_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> Hidden:
        """Zero (h, c) of shape (layers, batch, units): the state at the start of a stream."""
        zeros = torch.zeros(self.layers, batch_size, self.units, device=device)
        return zeros, zeros.clone()

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, hidden: Optional[Hidden] = None) -> tuple[torch.Tensor, Hidden]:
        """Logits (B, T, V) for the next token after each of ``tokens`` (B, T), and the final state."""
        if hidden is None:
            hidden = self.init_hidden(tokens.shape[0], tokens.device)
        output, hidden = self.rnn(self.features(tokens), hidden)
        return self.decoder(self.drop(output)), hidden


class TiedLSTM(_Recurrent):
    """Embedding (size = units) -> dropout -> LSTM -> dropout -> softmax layer sharing the embedding."""

    def __init__(self, vocab_size: int, layers: int, units: int, dropout: float = 0.65):
        super().__init__(vocab_size, units, layers, units, dropout)
        self.encoder = nn.Embedding(vocab_size, units)
        self.decoder.weight = self.encoder.weight  # one tensor (Press & Wolf; Inan et al.)
        if not self.encoder.weight.is_meta:
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.drop(self.encoder(tokens))


def spell(vocab: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Character ids (V, L) of every word between begin/end marks, 0-padded to L >= 7; and the alphabet size.

    Characters are numbered in sorted order after 0 (padding), 1 (begin) and 2 (end), so the same
    vocabulary always gives the same spelling.
    """
    alphabet = sorted({c for word in vocab for c in word})
    index = {c: i + 3 for i, c in enumerate(alphabet)}
    length = max(max(len(w) for w in vocab) + 2, max(KIM_WIDTHS))
    rows = [[1, *(index[c] for c in word), 2] for word in vocab]
    chars = torch.tensor([row + [0] * (length - len(row)) for row in rows], dtype=torch.int64)
    return chars, len(alphabet) + 3


def pseudo_vocab(vocab_size: int) -> list[str]:
    """Word id i written in base 26 (``a``, ``b``, ..., ``ba``): spellings when the real words are not given."""
    words = []
    for i in range(vocab_size):
        digits = PSEUDO_ALPHABET[i % 26]
        while i >= 26:
            i //= 26
            digits = PSEUDO_ALPHABET[i % 26] + digits
        words.append(digits)
    return words


class Highway(nn.Module):
    """y = g * relu(W x) + (1 - g) * x with gate g = sigmoid(W_g x), gate bias -2 (Kim et al.)."""

    def __init__(self, size: int):
        super().__init__()
        self.transform, self.gate = nn.Linear(size, size), nn.Linear(size, size)
        if not self.gate.bias.is_meta:
            nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(x))
        return gate * torch.relu(self.transform(x)) + (1 - gate) * x


class CharCNNLSTM(_Recurrent):
    """Kim et al. 2016: character embeddings -> convolutions (max over time, tanh) -> highway -> LSTM -> softmax.

    Words are spelled from ``vocab`` (the real words) or, without it, from ``pseudo_vocab`` (the id
    in base 26): the alphabet only sizes the character embedding (15 weights a character), so
    parameter counts stay within a few hundred of the real ones. Dropout between LSTM layers and
    before the (untied) softmax, none on the highway output (as Kim et al.).
    """

    def __init__(self, vocab_size: int, layers: int, units: int, dropout: float = 0.5,
                 vocab: Optional[Sequence[str]] = None, char_dim: int = 15,
                 widths: Sequence[int] = KIM_WIDTHS, feature_maps: Sequence[int] = KIM_FEATURE_MAPS,
                 highway_layers: int = 2):
        if len(widths) != len(feature_maps):
            raise ValueError(f"{len(widths)} filter widths but {len(feature_maps)} feature-map counts")
        if vocab is not None and len(vocab) != vocab_size:
            raise ValueError(f"vocab has {len(vocab)} words but the model is built for {vocab_size}")
        width = sum(feature_maps)
        super().__init__(vocab_size, width, layers, units, dropout)
        chars, alphabet = spell(pseudo_vocab(vocab_size) if vocab is None else vocab)
        chars = chars if chars.shape[1] >= max(widths) else nn.functional.pad(chars, (0, max(widths) - chars.shape[1]))
        self.register_buffer("spelling", chars, persistent=False)  # rebuilt from the same words on load
        self.char_embedding = nn.Embedding(alphabet, char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, maps, w) for w, maps in zip(widths, feature_maps))
        self.highways = nn.Sequential(*(Highway(width) for _ in range(highway_layers)))

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, steps = tokens.shape
        chars = self.char_embedding(self.spelling[tokens.reshape(-1)]).transpose(1, 2)  # (B*T, char_dim, L)
        pooled = torch.cat([torch.tanh(conv(chars)).amax(dim=2) for conv in self.convs], dim=1)
        return self.highways(pooled).reshape(batch, steps, -1)


@register("lstm-{layers}x{units}", examples=("lstm-2x1500", "lstm-1x1500"))
def lstm(num_classes: int, layers: int, units: int, dropout: float = 0.65) -> TiedLSTM:
    """``lstm-2x1500``: Zaremba et al.'s large LSTM with tied weights (Table 6's 52M); ``lstm-1x1500`` as the text says."""
    return TiedLSTM(num_classes, whole(layers, "LSTM layers"), whole(units, "LSTM units"), dropout)


@register("cnn-lstm-{layers}x{units}", examples=("cnn-lstm-2x650",))
def cnn_lstm(num_classes: int, layers: int, units: int, **kwargs) -> CharCNNLSTM:
    """``cnn-lstm-2x650``: Kim et al.'s large character-aware model (Table 6's 19M); kwargs shrink it for tests."""
    return CharCNNLSTM(num_classes, whole(layers, "LSTM layers"), whole(units, "LSTM units"), **kwargs)
