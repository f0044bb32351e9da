"""monai_ext: transfer learning for 3D medical imaging on MONAI.

Networks, weight transforms, data builders and engines used by the bundles under ``bundles/``: Med3D/MedicalNet
co-training, SuPreM/AbdomenAtlas supervised pre-training, cross-dimensional (2D->3D) transfer and the Variable
Dimension Transform, plus fine-tuning from any of them.
"""

__version__ = "0.1.0"
