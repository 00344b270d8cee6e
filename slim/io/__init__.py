"""What the tool reads and writes on disk, verified: output places checked before work
(`output_places`), size + sha256 manifests (`file_manifest`), weights (`weights`),
checkpoints (`checkpoint`), exported eval / inference models (`export`) and their ONNX
copies run by onnxruntime (`onnx_export`), any exported Paddle inference model loaded
and saved again (`inference_model`, for `python -m slim prune`), the paths a run
reads (`run_inputs`), drawn detections (`visualize`), and latency measured side by side
(`latency`: interleaved pairs, medians, p10 / p90, the "no significant change" verdict).

Imports: errors, config, prune (a checkpoint's pruning plans) and metrics; never
engine, strategies, runs or commands.
"""
