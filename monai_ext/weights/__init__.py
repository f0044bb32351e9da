"""Weight transforms and checkpoint interop: load reports, 2D->3D inflation, MedicalNet, SuPreM, ImageNet 2D."""

from .imagenet2d import (
    ImageNet2DWeights,
    IMAGENET_2D_WEIGHTS,
    DEFAULT_IMAGENET_2D_WEIGHTS,
    WEIGHTS_DIR_ENV,
    get_2d_weights_info,
    find_2d_weights,
    read_2d_state_dict,
    load_2d_weights_into_3d,
)
from .inflate import (
    INFLATION_MODES,
    INPUT_CHANNEL_RULES,
    inflate_conv_weight,
    adapt_input_channels,
    describe_input_channel_rule,
    inflate_state_dict,
    inflation_filter,
    inflate_module,
    expand_2d_network_to_3d,
)
from .medicalnet import (
    MEDICALNET_ENTRY_COUNTS,
    MEDICALNET_HEAD_PREFIXES,
    MEDICALNET_SOURCES,
    MEDICALNET_WEIGHTS,
    MedicalNetWeights,
    medicalnet_download_hint,
    read_medicalnet_state_dict,
    strip_module_prefix,
    split_head_entries,
    infer_medicalnet_architecture,
    adapt_first_conv_channels,
    medicalnet_checkpoint_info,
    load_medicalnet_checkpoint,
    export_medicalnet_checkpoint,
    to_monai_resnet_state_dict,
    load_into_monai_resnet,
)
from .report import (
    LoadReport,
    WeightTransferError,
    load_with_report,
)
from .suprem import (
    SUPREM_CHECKPOINT_PREFIXES,
    SUPREM_PRETRAINING_HEADS,
    read_suprem_checkpoint,
    detect_suprem_backbone,
    strip_suprem_prefixes,
    load_suprem_checkpoint,
    export_suprem_checkpoint,
    export_monai_state_dict,
)
