"""The bundled trained defaults: presets resolve to assets that `jaxrestore.load` reads, and
`jaxrestore eval` reproduces the scores their metadata publishes (README: the DnCNN presets table)
on the full test sets, within 0.02 dB."""
from __future__ import annotations

import json

import pytest

import jaxrestore
from jaxrestore import cli
from jaxrestore.api import ASSETS, find_weights

TRAINED = ['trained-dncnn-gray-dn15', 'trained-dncnn-gray-car20']
# The full test set each preset is re-scored on (its metadata may publish more, e.g. BSD68).
DATASET = {'trained-dncnn-gray-dn15': 'Set12', 'trained-dncnn-gray-car20': 'Classic5'}


@pytest.mark.parametrize('name', TRAINED)
def test_trained_preset_reproduces_its_published_scores(name, data_dir, tmp_path, capsys):
  preset = jaxrestore.get_preset(name)
  weights = find_weights(preset)
  assert weights == ASSETS / preset.bundled_weights and (weights / 'jaxrestore.json').is_file()
  dataset = DATASET[name]
  published = preset.results[dataset]
  assert published
  assert cli.main(['eval', '--model', name, '--dataset', dataset, '--quiet', '--json', str(tmp_path / 'r.json')]) == 0
  report = json.loads((tmp_path / 'r.json').read_text())
  assert len(report['images']) == {'Set12': 12, 'Classic5': 5}[dataset]
  assert report['test_set']['verified'] == len(report['images'])  # every file checked against MANIFEST.tsv
  for metric, value in published.items():
    assert abs(report['mean'][metric] - value) <= 0.02, (name, dataset, metric, report['mean'][metric], value)
  assert report['image_list_sha256'] in capsys.readouterr().out
