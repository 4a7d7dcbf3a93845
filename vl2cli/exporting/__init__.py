"""`vl2 export`: encoders to ONNX (and TensorRT engines where possible), each validated and manifested.

The package is named `exporting` so it never clashes with the top-level `export/` output folder.
"""
