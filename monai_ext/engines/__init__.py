"""The shared training path: mixed precision, resumable checkpoints, metrics, schedules, exports."""

from .amp import (
    AutocastInferer,
    resolve_amp_dtype,
)
from .checkpoint import (
    save_atomic,
    remove_stale_temporaries,
    wait_for_checkpoint_writes,
    ResumableCheckpoint,
    BestModelSaver,
    unwrap_model,
    is_main_process,
)
from .distributed import (
    main_process_logging,
)
from .export import (
    load_best_weights,
    export_best_encoder,
)
from .metrics import (
    PerDomainMeanDice,
    dice_per_class,
    write_metrics_table,
    write_case_table,
)
from .schedulers import (
    LinearWarmupCosineLR,
)
from .tables import (
    per_class_scores,
    write_per_class_table,
)

from .finetune import (
    freeze_except,
    trainable_parameter_groups,
    report_record,
    LoadPretrainedWeights,
    ValidationHistoryWriter,
    read_validation_history,
    save_network_spec,
    load_network_spec,
    ClassProbabilityWriter,
)

__all__ = [
    "AutocastInferer",
    "resolve_amp_dtype",
    "main_process_logging",
    "save_atomic",
    "remove_stale_temporaries",
    "wait_for_checkpoint_writes",
    "ResumableCheckpoint",
    "BestModelSaver",
    "unwrap_model",
    "is_main_process",
    "load_best_weights",
    "export_best_encoder",
    "PerDomainMeanDice",
    "dice_per_class",
    "write_metrics_table",
    "write_case_table",
    "LinearWarmupCosineLR",
    "per_class_scores",
    "write_per_class_table",
    "freeze_except",
    "trainable_parameter_groups",
    "report_record",
    "LoadPretrainedWeights",
    "ValidationHistoryWriter",
    "read_validation_history",
    "save_network_spec",
    "load_network_spec",
    "ClassProbabilityWriter",
]
