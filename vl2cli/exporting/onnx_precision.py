"""Rewriting an fp32 ONNX graph into a reduced-precision one, for strongly typed engine builders.

TensorRT-RTX has no FP16/BF16 builder flags: a strongly typed network computes each tensor in the
dtype the graph gives it. So an fp16 engine is built from an fp16 graph, made here from the fp32
graph that already passed its parity gate:
* every fp32 weight, constant and cast target becomes the reduced type;
* the graph's input and output stay fp32 (a Cast at each end), so the engine's I/O is the same as
  the fp32 graph's and the runners need no change;
* LayerNormalization, Softmax and Erf (exact GELU) stay fp32, with a Cast on each side: the same
  layers full TensorRT pins to fp32 in its fp16 engines (see `tensorrt_build.PINNED_FP32_*`), which
  overflow or lose the small differences that matter in fp16.
Shapes and integer tensors are left alone; control-flow subgraphs (If/Loop, which vl2's encoders do
not export) are not rewritten. The result is checked against PyTorch like any graph.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError

#: ONNX ops computed in fp32 inside a reduced-precision graph, with their float inputs cast up.
FP32_OPS = ("LayerNormalization", "Softmax", "Erf")
REDUCED_TYPES = ("fp16", "bf16")
#: Inputs the ONNX spec types as float32 whatever the data's type (Resize's roi and scales).
FLOAT32_ONLY_INPUTS = {"Resize": (1, 2)}
#: Above this a graph is saved with its weights in a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1 << 30


def external_data_path(graph: Path) -> Path:
    """Where `reduce_precision` puts the weights of a large graph (delete it with the graph)."""
    return graph.with_name(graph.name + ".data")


def _elem_type(precision: str) -> int:
    import onnx

    return {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]


def _reduce_tensor(tensor, precision: str):
    """A copy of an fp32 TensorProto in the reduced type (others returned as they are)."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_type != onnx.TensorProto.FLOAT:
        return tensor
    values = numpy_helper.to_array(tensor)
    if precision == "fp16":
        reduced = numpy_helper.from_array(values.astype(np.float16), tensor.name)
    else:
        import ml_dtypes  # shipped with onnx >= 1.16 for its bfloat16 helpers

        reduced = numpy_helper.from_array(values.astype(ml_dtypes.bfloat16), tensor.name)
    return reduced


def reduce_precision(source: Path, target: Path, precision: str) -> Path:
    """Write `source` (an fp32 graph) as a `precision` graph with fp32 I/O and fp32 islands."""
    import onnx
    from onnx import helper

    if precision not in REDUCED_TYPES:
        raise ExportError(f"precision {precision!r}: a graph can be rewritten to {', '.join(REDUCED_TYPES)} only.")
    model = onnx.load(str(source))
    graph = model.graph
    reduced_type = _elem_type(precision)
    fp32_initializers: set[str] = set()
    for node in graph.node:
        if node.op_type in FP32_OPS:
            fp32_initializers.update(node.input[1:])  # LayerNorm scale/bias stay fp32 beside an fp32 input
        for index in FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            if index < len(node.input):
                fp32_initializers.add(node.input[index])
    initializers = []
    for tensor in graph.initializer:
        initializers.append(tensor if tensor.name in fp32_initializers else _reduce_tensor(tensor, precision))
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    initializer_names = {t.name for t in graph.initializer}

    nodes = []
    counter = 0

    def cast(name: str, to: int) -> str:
        nonlocal counter
        counter += 1
        out = f"{name}__vl2_cast{counter}"
        nodes.append(helper.make_node("Cast", [name], [out], name=f"vl2_cast_{counter}", to=to))
        return out

    float_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    renamed = {name: cast(name, reduced_type) for name in float_inputs}
    outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == onnx.TensorProto.FLOAT:
                    attribute.t.CopyFrom(_reduce_tensor(attribute.t, precision))
        elif node.op_type == "ConstantOfShape":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == onnx.TensorProto.FLOAT:
                    attribute.t.CopyFrom(_reduce_tensor(attribute.t, precision))
        elif node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = reduced_type
        if node.op_type in FP32_OPS:
            # first input (the activation) up to fp32; the op's outputs back down
            node.input[0] = cast(node.input[0], onnx.TensorProto.FLOAT)
            outs = list(node.output)
            for index, name in enumerate(outs):
                node.output[index] = f"{name}__vl2_fp32"
            nodes.append(node)
            for name in outs:
                counter += 1
                nodes.append(helper.make_node("Cast", [f"{name}__vl2_fp32"], [name], name=f"vl2_cast_{counter}", to=reduced_type))
            continue
        nodes.append(node)
    # the graph's outputs back to fp32 under their own names
    for output in graph.output:
        if output.name not in outputs:
            continue
        inner = f"{output.name}__vl2_reduced"
        for node in nodes:
            for index, name in enumerate(node.output):
                if name == output.name:
                    node.output[index] = inner
            for index, name in enumerate(node.input):
                if name == output.name:
                    node.input[index] = inner
        counter += 1
        nodes.append(helper.make_node("Cast", [inner], [output.name], name=f"vl2_cast_{counter}", to=onnx.TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale float types; consumers infer shapes themselves
    if initializer_names & float_inputs:
        raise ExportError(f"{source.name}: a graph input is also an initializer; cannot rewrite it to {precision}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external_data_path(target).name)
    else:
        onnx.save(model, str(target))
    return target
