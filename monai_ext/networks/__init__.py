"""Networks: Med3D 3D ResNets and heads, Models Genesis U-Net, SuPreM backbones, encoders inflated from 2D.

Importing this package registers the ``inflated-*`` backbones with MONAI's ``FlexibleUNet``."""

from .genesis_unet import (
    GenesisUNet3D,
    GenesisConvBlock,
    GenesisDownLevel,
    GenesisUpLevel,
    GenesisOutputLevel,
    BatchStatsBatchNorm3d,
)
from .inflated import (
    DepthPolicy,
    InflatableBasicBlock,
    InflatableBottleneck,
    InflatableSqueezeExcite,
    InflatableDepthwiseSeparable,
    InflatableInvertedResidual,
    InflatedResNetEncoder,
    InflatedEfficientNetEncoder,
    InflatedFlexUNet,
    RESNET_LAYOUTS,
    EFFICIENTNET_SCALING,
    INFLATED_BACKBONES,
    round_efficientnet_channels,
)
from .med3d import (
    MED3D_ARCHITECTURES,
    Med3DBasicBlock,
    Med3DBottleneck,
    ZeroPadShortcut,
    Med3DResNet,
    med3d_resnet,
    med3d_resnet10,
    med3d_resnet18,
    med3d_resnet34,
    med3d_resnet50,
    med3d_resnet101,
    med3d_resnet152,
    med3d_resnet200,
)
from .multidomain import (
    PAD_LOGIT,
    MedicalNetSegHead,
    Med3DSegmenter,
    MultiDomainSegmenter,
)
from .suprem_backbones import (
    SUPREM_BACKBONES,
    SUPREM_HEAD_KEYS,
    suprem_backbone,
)
