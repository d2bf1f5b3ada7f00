"""T5 tokenization as DreamClear's `T5Embedder` calls it, without transformers.

`T5Embedder.get_text_embeddings` runs the checkpoint's Hugging Face tokenizer with
`max_length=120, padding='max_length', truncation=True, add_special_tokens=True`: the text's pieces
cut to 119, then `</s>`, then `<pad>` up to 120; the mask is 1 on the pieces and `</s>`.
This module gives the same ids and mask from the checkpoint folder's `tokenizer.json` (through
`tokenizers`, exactly what transformers runs) or, when there is none (DeepFloyd's t5-v1_1-xxl ships
only `spiece.model`), from `spiece.model` through `sentencepiece`, splitting out the special tokens
(`</s>`, `<pad>`, `<unk>`, `<extra_id_N>`) first as transformers does.

Not done here: T5Embedder first cleans each caption (`clean_caption` twice: lower-casing, URL/HTML
removal, `ftfy`, punctuation rules). Pass such a function as `preprocess` to reproduce it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MAX_LENGTH = 120  # DreamClear's model_max_length


class T5Tokenizer:
  """texts -> (input_ids, attention_mask), both (B, max_length) int32."""

  def __init__(self, encode: Callable[[str], list[int]], *, eos_id: int, pad_id: int, source: str = '',
               preprocess: Callable[[str], str] | None = None):
    self._encode = encode
    self.eos_id, self.pad_id = int(eos_id), int(pad_id)
    self.source = source
    self.preprocess = preprocess

  @classmethod
  def from_folder(cls, folder: str | os.PathLike, **kwargs) -> 'T5Tokenizer':
    """`tokenizer.json` when present (as transformers' AutoTokenizer prefers), else `spiece.model`."""
    folder = Path(folder)
    if (folder / 'tokenizer.json').is_file():
      return cls.from_tokenizer_json(folder / 'tokenizer.json', **kwargs)
    if (folder / 'spiece.model').is_file():
      return cls.from_sentencepiece(folder / 'spiece.model', extra_ids=_extra_ids(folder), **kwargs)
    raise FileNotFoundError(f'{folder}: no T5 tokenizer (neither tokenizer.json nor spiece.model)')

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike, **kwargs) -> 'T5Tokenizer':
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()        # a tokenizer.json saved after a padded call keeps that padding
    tok.no_truncation()
    ids = {t: tok.token_to_id(t) for t in ('</s>', '<pad>')}
    if None in ids.values():
      raise ValueError(f'{path}: a T5 tokenizer needs the tokens </s> and <pad>')

    def encode(text: str) -> list[int]:
      return tok.encode(text, add_special_tokens=False).ids

    return cls(encode, eos_id=ids['</s>'], pad_id=ids['<pad>'], source=str(path), **kwargs)

  @classmethod
  def from_sentencepiece(cls, path: str | os.PathLike, *, extra_ids: int = 100, **kwargs) -> 'T5Tokenizer':
    """`spiece.model`; transformers numbers `<extra_id_N>` from the end: id = pieces + extra_ids - 1 - N."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(path))
    special = {}
    for token in ('</s>', '<pad>', '<unk>'):
      i = sp.piece_to_id(token)
      if sp.id_to_piece(i) != token:
        raise ValueError(f'{path}: a T5 sentencepiece model needs the piece {token}')
      special[token] = i
    size = sp.get_piece_size()
    for n in range(extra_ids):
      special[f'<extra_id_{n}>'] = size + extra_ids - 1 - n
    # Longest first, so that no special token is cut by a shorter one.
    splitter = re.compile('(' + '|'.join(re.escape(t) for t in sorted(special, key=len, reverse=True)) + ')')

    def encode(text: str) -> list[int]:
      ids: list[int] = []
      for i, part in enumerate(splitter.split(text)):
        if i % 2:
          ids.append(special[part])
        elif part:
          ids.extend(sp.encode(part))
      return ids

    return cls(encode, eos_id=special['</s>'], pad_id=special['<pad>'], source=str(path), **kwargs)

  def encode(self, text: str) -> list[int]:
    """The text's ids without `</s>` (after `preprocess`, if any)."""
    if self.preprocess is not None:
      text = self.preprocess(text)
    return list(self._encode(text))

  def __call__(self, texts: str | Sequence[str], max_length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(texts, str):
      texts = [texts]
    if max_length < 1:
      raise ValueError(f'max_length must be at least 1 (room for </s>), got {max_length}')
    ids = np.full((len(texts), max_length), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_length), np.int32)
    for row, text in enumerate(texts):
      pieces = self.encode(text)[:max_length - 1] + [self.eos_id]
      ids[row, :len(pieces)] = pieces
      mask[row, :len(pieces)] = 1
    return ids, mask


def _extra_ids(folder: Path) -> int:
  """`extra_ids` of tokenizer_config.json (100, T5's sentinels, when absent)."""
  path = folder / 'tokenizer_config.json'
  if path.is_file():
    try:
      cfg = json.loads(path.read_text())
    except ValueError:
      return 100
    if isinstance(cfg.get('extra_ids'), int):
      return cfg['extra_ids']
  return 100
