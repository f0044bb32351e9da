#!/usr/bin/env bash
# Set everything up (idempotent) and run the project's main job end to end on the built-in data:
#   1. pre-train: Med3D multi-domain co-training on four built-in tasks -> MedicalNet-format encoder
#   2. fine-tune: that encoder on the held-out built-in kidney CT task (train, evaluate, NIfTI inference)
#   3. measure:   the transfer benchmark, scratch against the pre-trained start, at 25% and 100% of the labels,
#                 two seeds each, same iteration budget and validation split -> table and plots
# Extra arguments are passed to the pre-training run as overrides, e.g. ./scripts/demo.sh --max_epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PY=.venv/bin/python
PRE=bundles/med3d_3dseg8_cotraining
FT=bundles/transfer_segmentation
BENCH=${BENCH:-transfer_benchmark_builtin}
export MONAI_EXT_DATA_CACHE=${MONAI_EXT_DATA_CACHE:-$PWD/.cache/data}

echo "[demo] built-in data in $MONAI_EXT_DATA_CACHE"
$PY -m monai_ext.cli data generate decathlon

start=$(date +%s)
echo "[demo] 1/3 pre-training: Med3D co-training (progress below; TensorBoard: .venv/bin/tensorboard --logdir $PRE/logs)"
$PY -m monai.bundle run --config_file $PRE/configs/train.json "$@"

echo "[demo] 2/3 fine-tuning the pre-trained encoder on the held-out task Task105_SynthKidneyCT"
$PY -m monai.bundle run --config_file $FT/configs/train.json
$PY -m monai.bundle run --config_file "['$FT/configs/train.json','$FT/configs/evaluate.json']"
$PY -m monai.bundle run --config_file $FT/configs/inference.json

echo "[demo] 3/3 transfer benchmark: scratch against the Med3D start (8 runs)"
$PY -m monai_ext.cli benchmark transfer --bundle $FT --arm scratch --arm med3d=med3d-bundle \
  --fractions 0.25 1.0 --seeds 0 1 --iterations 60 --val-every 20 --output "$BENCH"
end=$(date +%s)

echo
cat "$BENCH/summary.md"
echo
echo "[demo] finished in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
echo "[demo] pre-trained encoder (MedicalNet format): $PRE/models/encoder_medicalnet.pth"
echo "[demo] fine-tuned network:  $FT/models/model.pt (what was loaded: $FT/models/initialisation.json)"
echo "[demo] its evaluation:      $FT/eval/model_metrics.csv; masks: $FT/eval/*_seg.nii.gz"
echo "[demo] benchmark:           $BENCH/summary.md, $BENCH/curves.png, $BENCH/fractions.png"
echo "[demo] TensorBoard logs:    $PRE/logs, $FT/logs"
