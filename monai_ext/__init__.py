"""monai_ext: transfer learning for 3D medical imaging on MONAI.

Networks, weight transforms, data builders and engines used by the bundles under ``bundles/``: Med3D/MedicalNet
co-training, SuPreM/AbdomenAtlas supervised pre-training, cross-dimensional (2D->3D) transfer and the Variable
Dimension Transform, plus fine-tuning from any of them.
"""

__version__ = "0.1.0"

# subpackages are imported eagerly (as MONAI does) so that bundle configs can write ``$import monai_ext`` and then
# use fully dotted names such as ``monai_ext.data.builtin.builtin_dataset_dir``.
from . import bundle, data, engines, losses, networks, transforms, weights  # noqa: E402
from . import benchmark  # noqa: E402  (after the others: it uses engines and weights)

__all__ = ["benchmark", "bundle", "data", "engines", "losses", "networks", "transforms", "weights", "__version__"]
