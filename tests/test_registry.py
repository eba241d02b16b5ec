"""The operator registries load each family's module when one of its names is first needed
(verifier/ops/__init__.py): the names read off the sources are exactly those the modules
register, lookups and membership load the right module, and listing loads them all."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_the_index_names_exactly_what_the_modules_register():
    import importlib

    from verifier import ops

    for family in ops.FAMILIES:
        importlib.import_module(f"verifier.ops.{family}")
    for registry in (ops.RULES, ops.CONVERTERS):
        registered = {name: type(v).__module__ if registry is ops.RULES else v.__module__
                      for name, v in dict.items(registry)}
        assert set(registered) == set(registry.where)
        for name, module in registered.items():
            assert module == f"verifier.ops.{registry.where[name]}", name


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip()


def test_lookups_load_only_the_family_needed():
    out = _fresh("import sys\n"
                 "from verifier.ops import RULES, CONVERTERS\n"
                 "before = sorted(m for m in sys.modules if m.startswith('verifier.ops.'))\n"
                 "assert 'Relu' in CONVERTERS and CONVERTERS.get('NoSuchOp') is None\n"
                 "rule = RULES['Relu']\n"
                 "after = sorted(m for m in sys.modules if m.startswith('verifier.ops.'))\n"
                 "print(before, after, type(rule).__module__)")
    assert out == "['verifier.ops.registry'] ['verifier.ops.activation', 'verifier.ops.registry'] " \
                  "verifier.ops.activation"


def test_listing_a_registry_loads_every_family():
    out = _fresh("import sys\n"
                 "from verifier.ops import RULES, FAMILIES\n"
                 "n = len(RULES)\n"
                 "print(all(f'verifier.ops.{f}' in sys.modules for f in FAMILIES), n == len(RULES.where))")
    assert out == "True True"


def test_unknown_names_stay_unknown():
    from verifier.ops import CONVERTERS, RULES

    assert "NoSuchOp" not in CONVERTERS and "NoSuchOp" not in RULES
    assert CONVERTERS.get("NoSuchOp", 7) == 7
    try:
        RULES["NoSuchOp"]
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown rule was found")
