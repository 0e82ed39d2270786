"""Facts about the model that serving and training must agree on.

Training imports these; changing one means retraining and re-exporting the model.
"""

from typing import Final

MODEL_NAME: Final = "signal_predictor"

#: Number of candles in one model input window.
WINDOW_LENGTH: Final = 60
#: Column order of a window's last axis.
FEATURES: Final = ("open", "high", "low", "close", "volume")
N_FEATURES: Final = len(FEATURES)
#: Output order of the model's probabilities.
CLASSES: Final = ("sell", "hold", "buy")
N_CLASSES: Final = len(CLASSES)

INPUT_NAME: Final = "ohlcv_sequence"
OUTPUT_NAME: Final = "probabilities"

FP32_FILE: Final = f"{MODEL_NAME}.onnx"
INT8_FILE: Final = f"{MODEL_NAME}.int8.onnx"
#: The same two graphs wrapped in an ONNX ``Scan`` over the batch axis: each window runs alone inside one call, so
#: its probabilities do not depend on the other windows of the batch (see `training.rowwise`).
FP32_ROWWISE_FILE: Final = f"{MODEL_NAME}.rowwise.onnx"
INT8_ROWWISE_FILE: Final = f"{MODEL_NAME}.int8.rowwise.onnx"
TORCH_FILE: Final = f"{MODEL_NAME}.pt"
MANIFEST_FILE: Final = "manifest.json"
#: A model version: also the name of its directory, models/<version>/ (so no path separators, no leading dot).
VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"

#: Largest number of windows in one /predict/batch request.
MAX_BATCH_REQUESTS: Final = 100
