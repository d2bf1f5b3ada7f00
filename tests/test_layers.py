"""Dependencies point one way: kernels <- layers <- models <- convert <- api/inference <- eval/data
<- train/bench <- cli. Checked on the source (every import, lazy ones inside functions too), and
every subpackage imports on its own in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jaxrestore

PACKAGE_DIRS = {'jaxrestore': Path(jaxrestore.__file__).parent}
for sub in ('kernels', 'convert', 'configs'):
  PACKAGE_DIRS[f'jaxrestore.{sub}'] = Path(__import__(f'jaxrestore.{sub}', fromlist=['_']).__file__).parent

# The layer of each module (longest matching prefix wins); a module may import its own layer and below.
LAYERS = {
    'jaxrestore.kernels': 0,
    'jaxrestore.layers': 1, 'jaxrestore.mapping': 1, 'jaxrestore.imageio': 1, 'jaxrestore.datasets': 1,
    'jaxrestore.configs': 1,
    'jaxrestore.models': 2, 'jaxrestore.registry': 2,
    'jaxrestore.convert': 3,
    'jaxrestore.api': 4, 'jaxrestore.inference': 4,
    'jaxrestore.data': 5, 'jaxrestore.eval': 5, 'jaxrestore.diffusion': 5,
    'jaxrestore.train': 6, 'jaxrestore.bench': 6, 'jaxrestore.pipelines': 6,
    'jaxrestore.cli': 7, 'jaxrestore.demo': 7,
    'jaxrestore': 4,  # the package facade: lazy attributes from api, inference, convert, kernels, registry
}


def layer_of(module: str) -> int:
  best = max((p for p in LAYERS if module == p or module.startswith(p + '.')), key=len)
  return LAYERS[best]


def modules() -> dict[str, Path]:
  found = {}
  for package, folder in PACKAGE_DIRS.items():
    for path in folder.rglob('*.py'):
      rel = path.relative_to(folder).with_suffix('')
      parts = [p for p in rel.parts if p != '__init__']
      name = '.'.join([package, *parts])
      if package == 'jaxrestore' and parts and parts[0] in ('kernels', 'convert', 'configs'):
        continue
      found[name] = path
  return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
  tree = ast.parse(path.read_text())
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')
        base = base[:len(base) - node.level + 1]
        mod = '.'.join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ''
      for alias in node.names:  # `from pkg import submodule` depends on the submodule only
        out.add(f'{mod}.{alias.name}' if f'{mod}.{alias.name}' in known else mod)
  return {m for m in out if m == 'jaxrestore' or m.startswith('jaxrestore.')}


def test_every_module_has_a_layer():
  assert len(modules()) > 30
  for name in modules():
    layer_of(name)


def test_no_module_imports_from_a_layer_above_it():
  known = set(modules())
  violations = []
  for name, path in modules().items():
    for target in imports_of(name, path, known):
      if layer_of(target) > layer_of(name):
        violations.append(f'{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})')
  assert not violations, '\n'.join(violations)


def test_packaged_code_never_reaches_into_tests_or_shared_data():
  for name, path in modules().items():
    text = path.read_text()
    assert "'tests'" not in text and '"tests"' not in text and 'tests/shims' not in text, name
    assert "'shared'" not in text and '../shared' not in text, name


@pytest.mark.parametrize('module', ['jaxrestore.kernels', 'jaxrestore.layers', 'jaxrestore.models.swinir',
                                    'jaxrestore.registry', 'jaxrestore.convert', 'jaxrestore.api',
                                    'jaxrestore.inference', 'jaxrestore.eval', 'jaxrestore.data',
                                    'jaxrestore.train', 'jaxrestore.configs', 'jaxrestore.cli'])
def test_each_subpackage_imports_on_its_own(module):
  """In a fresh interpreter, and without pulling in any layer above it."""
  code = (f'import sys, {module}\n'
          f'print(" ".join(sorted(m for m in sys.modules if m == "jaxrestore" or m.startswith("jaxrestore."))))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  loaded = out.stdout.split()
  above = [m for m in loaded if m != 'jaxrestore' and layer_of(m) > layer_of(module)]
  assert not above, f'importing {module} loaded {above}'
