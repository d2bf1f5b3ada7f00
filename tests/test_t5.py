"""T5 encoder parity against transformers' PyTorch `T5EncoderModel`; checkpoint loading; tokenizer."""
from __future__ import annotations

import json
import random

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrestore.convert import components
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import t5
from jaxrestore.models.t5_tokenizer import T5Tokenizer




from torch_reference import no_torchvision  # noqa: E402

with no_torchvision():
  from transformers import T5Config as HFT5Config
  from transformers import T5EncoderModel, T5TokenizerFast
  from transformers.models.t5.modeling_t5 import T5Attention

TINY = dict(vocab_size=300, d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2, dropout_rate=0.0,
            relative_attention_num_buckets=32, relative_attention_max_distance=128)
LENGTH = 120


def torch_t5(feed_forward_proj='gated-gelu', seed=0):
  torch.manual_seed(seed)
  model = T5EncoderModel(HFT5Config(**TINY, feed_forward_proj=feed_forward_proj)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'layer_norm' in name:          # ones by default: make the norm weights matter
        p.add_(0.2 * torch.randn_like(p))
  return model


def state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torch_run(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
                 ).last_hidden_state.numpy()


def jax_run(model, ids, mask):
  return np.asarray(t5.encode(model, jnp.asarray(ids), jnp.asarray(mask)))


@pytest.fixture(scope='module')
def batch():
  """Three captions of 120 tokens: no padding, 37 real tokens, a single token."""
  rng = np.random.default_rng(0)
  ids = rng.integers(0, TINY['vocab_size'], (3, LENGTH)).astype(np.int32)
  mask = np.zeros((3, LENGTH), np.int32)
  for row, n in enumerate((LENGTH, 37, 1)):
    mask[row, :n] = 1
  ids[mask == 0] = 0
  return ids, mask


@pytest.fixture(scope='module')
def gated():
  model = torch_t5()
  return model, components.t5_from_state_dict(t5.T5Config.from_hf(model.config.to_dict()), state_dict(model))


def test_relative_position_buckets_match_transformers():
  rel = torch.arange(600)[None, :] - torch.arange(600)[:, None]
  for buckets, distance in ((32, 128), (32, 64), (16, 20), (64, 256)):
    ref = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=buckets, max_distance=distance)
    np.testing.assert_array_equal(t5.relative_position_buckets(600, 600, buckets, distance), ref.numpy())


@pytest.mark.parametrize('proj', ['gated-gelu', 'relu'])
def test_parity_with_padding_masks(gated, batch, proj):
  """v1.1 (gated tanh GELU) and v1.0 (ReLU) blocks, 120 tokens with padding; float64-checked."""
  model, ours = gated if proj == 'gated-gelu' else (None, None)
  if model is None:
    model = torch_t5(proj, seed=1)
    ours = components.t5_from_state_dict(t5.T5Config.from_hf(model.config.to_dict()), state_dict(model))
  assert ours.config.dense_act_fn == ('gelu_new' if proj == 'gated-gelu' else 'relu')
  ids, mask = batch
  out, ref = jax_run(ours, ids, mask), torch_run(model, ids, mask)
  assert out.shape == (3, LENGTH, TINY['d_model'])
  # Outputs of order 1-4: float32 agreement (measured 2.3e-6; PyTorch's own float32 error against a
  # float64 run of the same weights is 2.5e-6).
  assert np.max(np.abs(out - ref)) <= 1e-5


def _hf_checkpoint(model, folder, fmt):
  """A Hugging Face folder: sharded safetensors (save_pretrained) or DeepFloyd-style .bin shards."""
  if fmt == 'safetensors':
    model.save_pretrained(folder, max_shard_size='20KB')
    assert (folder / 'model.safetensors.index.json').is_file()
    return
  # transformers 5 no longer writes .bin: shards as older versions did (pytorch_model-0000i-of-0000n.bin),
  # with the tied embedding copy and decoder / LM-head tensors of a full T5 checkpoint to skip.
  folder.mkdir()
  (folder / 'config.json').write_text(json.dumps(model.config.to_dict()))
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  sd['decoder.block.0.layer.0.SelfAttention.q.weight'] = torch.zeros(32, 32)
  sd['lm_head.weight'] = torch.zeros(300, 32)
  keys = list(sd)
  shards = [keys[:len(keys) // 2], keys[len(keys) // 2:]]
  weight_map = {}
  for i, shard in enumerate(shards):
    name = f'pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin'
    torch.save({k: sd[k] for k in shard}, folder / name)
    weight_map.update({k: name for k in shard})
  (folder / 'pytorch_model.bin.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))


@pytest.mark.parametrize('fmt', ['safetensors', 'bin'])
def test_load_sharded_checkpoint(gated, batch, tmp_path, fmt):
  model, reference = gated
  folder = tmp_path / 't5'
  _hf_checkpoint(model, folder, fmt)
  files = components.checkpoint_files(folder)
  assert len(files) >= 2
  loaded = components.load_t5_encoder(folder, expected_width=TINY['d_model'])
  ids, mask = batch
  np.testing.assert_array_equal(jax_run(loaded, ids, mask), jax_run(reference, ids, mask))


def test_half_precision_loading(gated, batch, tmp_path):
  """bfloat16 weights (norms, softmax and residual stream float32) stay near float32; `wo` follows
  transformers: bfloat16 under bfloat16, float32 under float16 (`_keep_in_fp32_modules`) or on request."""
  model, reference = gated
  _hf_checkpoint(model, tmp_path / 't5', 'safetensors')
  ids, mask = batch
  ref = jax_run(reference, ids, mask)
  bf16 = components.load_t5_encoder(tmp_path / 't5', dtype=jnp.bfloat16)
  assert bf16.blocks[0].attn.q.kernel.dtype == bf16.blocks[0].ffn.wo.kernel.dtype == jnp.bfloat16
  out = jax_run(bf16, ids, mask)
  assert out.dtype == jnp.bfloat16
  # Measured 0.04 at output scale 4 (transformers' bfloat16 run: 0.05 from its float64 run).
  assert np.max(np.abs(out.astype(np.float32) - ref)) <= 0.05 * np.max(np.abs(ref))
  kept = components.load_t5_encoder(tmp_path / 't5', dtype=jnp.bfloat16, keep_wo_float32=True)
  assert kept.blocks[0].ffn.wo.kernel.dtype == jnp.float32
  assert np.max(np.abs(jax_run(kept, ids, mask).astype(np.float32) - ref)) <= 0.05 * np.max(np.abs(ref))
  assert t5.T5Config(param_dtype=jnp.float16).wo_float32 and not t5.T5Config(param_dtype=jnp.bfloat16).wo_float32


def test_wrong_width_and_strict_keys(gated, tmp_path):
  model, _ = gated
  folder = tmp_path / 't5'
  _hf_checkpoint(model, folder, 'safetensors')
  with pytest.raises(CheckpointMismatchError, match=r'32-wide features .* expects 4096 caption channels'):
    components.load_t5_encoder(folder, expected_width=4096)
  cfg = t5.T5Config.from_hf(model.config.to_dict())
  sd = state_dict(model)
  missing = {k: v for k, v in sd.items() if k != 'encoder.block.1.layer.1.DenseReluDense.wi_1.weight'}
  with pytest.raises(CheckpointMismatchError, match=r'missing \(1\): blocks\.1\.ffn\.wi_1\.kernel'):
    components.t5_from_state_dict(cfg, missing)
  extra = dict(sd, **{'encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight': np.zeros((32, 4))})
  with pytest.raises(CheckpointMismatchError, match=r'unexpected \(1\): encoder\.block\.1\.layer\.0'):
    components.t5_from_state_dict(cfg, extra)
  wrong = dict(sd, **{'shared.weight': np.zeros((300, 16), np.float32)})
  with pytest.raises(CheckpointMismatchError, match=r'shape mismatch \(1\): shared\.weight'):
    components.t5_from_state_dict(cfg, wrong)
  with pytest.raises(FileNotFoundError, match='no T5 weights'):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'config.json').write_text(json.dumps(model.config.to_dict()))
    components.load_t5_encoder(tmp_path / 'empty')


def test_sharding_rules_split_heads_and_ffn(gated):
  """The tensor-parallel table resolves to head / FFN-width splits on a (data, model) mesh."""
  import jax
  from flax import nnx
  from jax.sharding import PartitionSpec as P
  from jaxrestore.train import sharding
  _, model = gated
  mesh = jax.sharding.AbstractMesh((2, 2), ('data', 'model'))
  tree = {'params': nnx.to_pure_dict(nnx.state(model, nnx.Param))}
  specs = sharding.partition_specs(tree, 'fsdp_tp', mesh, t5.SHARDING_RULES)['params']
  assert specs['blocks'][1]['attn']['q']['kernel'] == P('data', 'model')
  assert specs['blocks'][1]['ffn']['wo']['kernel'] == P('model', 'data')
  assert specs['shared']['embedding'] == P('data', None)        # FSDP over the vocabulary


def test_config_of_t5_v1_1_xxl():
  """google/t5-v1_1-xxl's config.json (DeepFloyd's copy): gated tanh GELU, 4096 wide."""
  cfg = t5.T5Config.from_hf({
      'architectures': ['T5EncoderModel'], 'd_ff': 10240, 'd_kv': 64, 'd_model': 4096, 'dropout_rate': 0.1,
      'eos_token_id': 1, 'feed_forward_proj': 'gated-gelu', 'is_encoder_decoder': True, 'layer_norm_epsilon': 1e-06,
      'model_type': 't5', 'num_decoder_layers': 24, 'num_heads': 64, 'num_layers': 24, 'pad_token_id': 0,
      'relative_attention_num_buckets': 32, 'tie_word_embeddings': False, 'vocab_size': 32128})
  assert (cfg.d_model, cfg.inner_dim, cfg.dense_act_fn, cfg.is_gated_act) == (4096, 4096, 'gelu_new', True)
  assert cfg.relative_attention_max_distance == 128
  with pytest.raises(ValueError, match='contradicts'):
    t5.T5Config.from_hf({'feed_forward_proj': 'gated-gelu', 'dense_act_fn': 'relu'})


# ----- tokenizer ---------------------------------------------------------------------------------------

def _corpus(n=1500):
  rnd = random.Random(0)
  words = ('a photo of the cat dog sitting on red blue sofa in front window light sunny day with trees and '
           'city street night people walking old building river bridge mountain snow portrait woman man '
           'smiling glasses hat close-up detailed texture background blurry high quality image').split()
  syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'shi', 'po', 've', 'zu', 'qu', 'ex', 'an', 'or', 'ing', 'st']
  words += [''.join(rnd.choice(syllables) for _ in range(rnd.randint(1, 4))) for _ in range(300)]
  ends = ['.', ',', '!', '', ' 123', ' (x2)', ' café']
  return [' '.join(rnd.choice(words) for _ in range(rnd.randint(3, 15))) + rnd.choice(ends) for _ in range(n)]


@pytest.fixture(scope='module')
def spiece_folder(tmp_path_factory):
  """A T5-style sentencepiece model trained here: <pad>=0, </s>=1, <unk>=2, no <s>."""
  import sentencepiece as spm
  folder = tmp_path_factory.mktemp('spiece')
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_prefix=str(folder / 'spiece'),
                                 vocab_size=300, hard_vocab_limit=False, model_type='unigram', pad_id=0, eos_id=1,
                                 unk_id=2, bos_id=-1, minloglevel=2)
  return folder


TEXTS = [
    'a photo of a cat sitting on a red sofa.',
    '',
    '  Leading,   repeated\tand trailing whitespace\n ',
    'Unicode: café naïve ＦＵＬＬＷＩＤＴＨ ☃ and ½',
    'special tokens </s> inside <pad> text <extra_id_0> and<extra_id_99>',
    ' '.join(['kalomi ruta shipo'] * 60),              # far beyond 120 pieces: truncated to 119 + </s>
]


def test_tokenizer_matches_transformers(spiece_folder, tmp_path):
  reference = T5TokenizerFast.from_pretrained(str(spiece_folder))   # converted from spiece.model
  ref = reference(TEXTS, max_length=LENGTH, padding='max_length', truncation=True, return_attention_mask=True,
                  add_special_tokens=True, return_tensors='np')
  reference.save_pretrained(str(tmp_path / 'hf'))                   # writes tokenizer.json
  assert (tmp_path / 'hf' / 'tokenizer.json').is_file()
  for folder in (spiece_folder, tmp_path / 'hf'):
    ids, mask = T5Tokenizer.from_folder(folder)(TEXTS)
    assert ids.shape == mask.shape == (len(TEXTS), LENGTH) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, ref['input_ids'], err_msg=str(folder))
    np.testing.assert_array_equal(mask, ref['attention_mask'], err_msg=str(folder))
  # The empty caption is just </s>; the long one is cut to 119 pieces and </s>.
  assert list(ids[1, :2]) == [1, 0] and mask[1].sum() == 1
  assert mask[-1].sum() == LENGTH and ids[-1, -1] == 1
  single, _ = T5Tokenizer.from_folder(spiece_folder)(TEXTS[0])
  np.testing.assert_array_equal(single[0], ref['input_ids'][0])
