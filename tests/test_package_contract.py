"""Package-wide contracts: public names never shadow MONAI's, every module declares ``__all__``."""

import importlib
import inspect
import pkgutil

import monai
import pytest

import monai_ext

MONAI_PACKAGES = [
    "monai.networks.nets", "monai.networks.blocks", "monai.transforms", "monai.losses", "monai.metrics",
    "monai.engines", "monai.handlers", "monai.inferers", "monai.data", "monai.optimizers", "monai.apps",
]  # fmt: skip


def _modules():
    for info in pkgutil.walk_packages(monai_ext.__path__, "monai_ext."):
        yield importlib.import_module(info.name)


def test_every_module_declares_all():
    missing = [m.__name__ for m in _modules() if not hasattr(m, "__all__") and not m.__name__.endswith("cli")]
    assert not missing, f"modules without __all__: {missing}"


def test_no_public_class_shadows_a_monai_name():
    # MONAI resolves short `_target_` names in every module whose name starts with "monai", monai_ext included:
    # a class named like a MONAI class would silently resolve to MONAI's.
    monai_names = set()
    for pkg in MONAI_PACKAGES:
        monai_names |= {n for n in dir(importlib.import_module(pkg)) if not n.startswith("_")}
    clashes = []
    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if inspect.isclass(obj) and obj.__module__.startswith("monai_ext") and name in monai_names:
                clashes.append(f"{module.__name__}.{name}")
    assert not clashes, f"rename these, MONAI has classes of the same name: {clashes}"


@pytest.mark.parametrize("name", ["bundle", "data", "engines", "losses", "networks", "transforms", "weights"])
def test_subpackages_are_reachable_from_the_top_level(name):
    assert hasattr(monai_ext, name)
    assert monai.__version__.startswith("1.6")
