#!/usr/bin/env bash
# Set everything up (idempotent), build the built-in data and run the project's main job end to end:
# Med3D multi-domain co-training on the built-in tasks -> evaluation -> inference -> MedicalNet-format encoder.
# Extra arguments are passed to the training run as overrides, e.g. ./scripts/demo.sh --max_epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PY=.venv/bin/python
B=bundles/med3d_3dseg8_cotraining
export MONAI_EXT_DATA_CACHE=${MONAI_EXT_DATA_CACHE:-$PWD/.cache/data}

echo "[demo] built-in data in $MONAI_EXT_DATA_CACHE"
$PY -m monai_ext.cli data generate decathlon

start=$(date +%s)
echo "[demo] 1/3 co-training (progress below; TensorBoard: .venv/bin/tensorboard --logdir $B/logs)"
$PY -m monai.bundle run --config_file $B/configs/train.json "$@"
echo "[demo] 2/3 evaluation of the best weights"
$PY -m monai.bundle run --config_file "['$B/configs/train.json','$B/configs/evaluate.json']"
echo "[demo] 3/3 inference on the first dataset's images"
$PY -m monai.bundle run --config_file $B/configs/inference.json
end=$(date +%s)

echo
echo "[demo] finished in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
echo "[demo] per-dataset validation Dice: $B/eval/metrics.csv"
cat $B/eval/metrics.csv
echo "[demo] best weights:      $B/models/model.pt (figures: $B/models/model_metrics.json)"
echo "[demo] encoder (MedicalNet format, for fine-tuning): $B/models/encoder_medicalnet.pth"
echo "[demo] training state for resuming: $B/models/checkpoint_epoch=*.pt"
echo "[demo] predictions:       $B/eval/*.nii.gz"
echo "[demo] TensorBoard logs:  $B/logs"
