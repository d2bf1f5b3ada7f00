"""Caption text cleaning as DreamClear's `T5Embedder.text_preprocessing` applies it before tokenizing.

DreamClear (like PixArt-alpha and DeepFloyd IF, whose T5 wrapper it reuses) trains and samples with
captions cleaned by a fixed list of rules, run twice: URL-decode, lower-case, drop URLs, HTML tags,
@handles, CJK ideographs, IPs, file names, long numbers and shop boilerplate; unify dashes and
quotes; turn stray punctuation into spaces; collapse whitespace. The denoiser was trained on text in
that form, so the same cleaning is part of faithful inference.

Two steps of the original lean on third-party packages that jaxrestore does not require:
`ftfy.fix_text` (mojibake and Unicode normalisation) and BeautifulSoup's `html.parser` text
extraction. When `ftfy` / `beautifulsoup4` are installed they are used, and the result is the
original's; otherwise close stand-ins from the standard library run (NFC normalisation, curly quotes,
ligatures and full-width forms, control characters; tag stripping with `html.parser`), which agree on
ordinary captions. `EXACT` tells which is in effect.
"""
from __future__ import annotations

import html
import importlib.util
import re
import unicodedata
import urllib.parse
from html.parser import HTMLParser

EXACT = importlib.util.find_spec('ftfy') is not None and importlib.util.find_spec('bs4') is not None

# Rules are (pattern, replacement), applied in order; each entry mirrors one step of the original.
_DOMAINS = r'(?:com|co|ru|net|org|edu|gov|it)'
_MEDIA = r'(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)'
_BEFORE_HTML = (
    (r'<person>', 'person'),
    # Two URL shapes: a scheme (or a domain) and a path, then the same after `www:`.
    (r'\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]' + _DOMAINS + r'[\w/-]*\b\/?(?!@)))', ''),
    (r'\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]' + _DOMAINS + r'[\w/-]*\b\/?(?!@)))', ''),
)
_AFTER_HTML = (
    (r'@[\w\d]+\b', ''),                                    # @handles
    # CJK strokes, katakana extensions, enclosed letters, compatibility, ideographs (ext. A, main).
    (r'[\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff]+', ''),
    (r'[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0'
     r'\uFE31\uFE32\uFE58\uFE63\uFF0D]+', '-'),             # every dash -> '-'
    (r'[`´«»“”¨]', '"'),
    (r'[‘’]', "'"),
    (r'&quot;?', ''),
    (r'&amp', ''),
    (r'\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}', ' '),           # IPv4 addresses
    (r'\d:\d\d\s+$', ''),                                   # trailing article ids
    (r'\\n', ' '),                                          # a literal backslash-n
    (r'#\d{1,3}\b', ''),
    (r'#\d{5,}\b', ''),
    (r'\b\d{6,}\b', ''),
    (r'[\S]+\.' + _MEDIA, ''),                              # file names
    (r'[\"\']{2,}', '"'),
    (r'[\.]{2,}', ' '),
    (r'[#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\/\*]{1,}', ' '),    # stray punctuation
    (r'\s+\.\s+', ' '),
)
_SEPARATORS = r'(?:\-|\_)'   # more than 3 of them: words-joined-like-this become words
_AFTER_BASIC = (
    (r'\b[a-zA-Z]{1,3}\d{3,15}\b', ''),                     # product codes: jc6640, ...
    (r'\b[a-zA-Z]+\d+[a-zA-Z]+\b', ''),
    (r'\b\d+[a-zA-Z]+\d+\b', ''),
    (r'(worldwide\s+)?(free\s+)?shipping', ''),
    (r'(free\s)?download(\sfree)?', ''),
    (r'\bclick\b\s(?:for|on)\s\w+', ''),
    (r'\b' + _MEDIA + r'(\simage[s]?)?', ''),
    (r'\bpage\s+\d+\b', ''),
    (r'\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b', ' '),
    (r'\b\d+\.?\d*[xх×]\d+\.?\d*\b', ''),                   # sizes: 1920x1080
    (r'\b\s+\:\s+', ': '),
    (r'(\D[,\./])\b', r'\1 '),
    (r'\s+', ' '),
    (r'^[\"\']([\w\W]+)[\"\']$', r'\1'),                    # whole caption quoted
    (r'^[\'\_,\-\:;]', ''),
    (r'[\'\_,\-\:\-\+]$', ''),
    (r'^\.\S+$', ''),
)


def _compile(rules):
  return tuple((re.compile(p), r) for p, r in rules)


_BEFORE_HTML_RE, _AFTER_HTML_RE, _AFTER_BASIC_RE = map(_compile, (_BEFORE_HTML, _AFTER_HTML, _AFTER_BASIC))
_SEPARATORS_RE = re.compile(_SEPARATORS)


def _apply(rules, text: str) -> str:
  for pattern, replacement in rules:
    text = pattern.sub(replacement, text)
  return text


class _TextOnly(HTMLParser):
  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts: list[str] = []

  def handle_data(self, data):
    self.parts.append(data)


def html_text(text: str) -> str:
  """The text content of `text` read as HTML (tags dropped, entities decoded)."""
  if EXACT:
    from bs4 import BeautifulSoup
    return BeautifulSoup(text, features='html.parser').text
  parser = _TextOnly()
  parser.feed(text)
  parser.close()
  return ''.join(parser.parts)


_LIGATURES = {'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'st', 'ﬆ': 'st', 'Ĳ': 'IJ',
              'ĳ': 'ij', 'Ŀ': 'L·', 'ŀ': 'l·', 'ŉ': "ʼn"}
_CURLY = {'‘': "'", '’': "'", '‚': "'", '‛': "'", '“': '"', '”': '"', '„': '"', '‟': '"'}


def fix_text(text: str) -> str:
  """`ftfy.fix_text` when installed; else its Unicode clean-ups that matter for captions."""
  if EXACT:
    import ftfy
    return ftfy.fix_text(text)
  text = ''.join(_LIGATURES.get(c, _CURLY.get(c, c)) for c in text)
  # Full-width ASCII and half-width katakana to their ordinary forms (ftfy's fix_character_width).
  text = ''.join(unicodedata.normalize('NFKC', c) if 0xFF01 <= ord(c) <= 0xFFEE or c == '\u3000' else c
                 for c in text)
  text = text.replace('\r\n', '\n').replace('\r', '\n').replace('\u2028', '\n').replace('\u2029', '\n')
  text = ''.join(c for c in text if c in '\t\n' or unicodedata.category(c) not in ('Cc', 'Cf') or c == '\u200d')
  return unicodedata.normalize('NFC', text)


def _basic_clean(text: str) -> str:
  return html.unescape(html.unescape(fix_text(text))).strip()


def clean_caption(caption: str) -> str:
  """One pass of the original's cleaning rules (see the module doc)."""
  text = urllib.parse.unquote_plus(str(caption)).strip().lower()
  text = _apply(_BEFORE_HTML_RE, text)
  text = html_text(text)
  text = _apply(_AFTER_HTML_RE, text)
  if len(_SEPARATORS_RE.findall(text)) > 3:
    text = _SEPARATORS_RE.sub(' ', text)
  text = _basic_clean(text)
  text = _apply(_AFTER_BASIC_RE, text)
  return text.strip()


def preprocess_caption(caption: str) -> str:
  """T5Embedder's `text_preprocessing`: the cleaning applied twice (as in training)."""
  return clean_caption(clean_caption(caption))
