"""Inputs that used to end with the wrong exit: 0 with an empty or meaningless result, a silent cast, a process
killed without a word, or a traceback. Each is now refused: exit 2, one error line naming the input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.helpers import check_case, run_cli

B = "--budget-s", "0.05"


# ------------------------------------------------------------------------------------------ models

@pytest.fixture(scope="module")
def token_onnx(tmp_path_factory) -> Path:
    """An ONNX model taking int64 token ids (input_ids: batch x 4), and an .npz of float ids for it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
         helper.make_node("Identity", ["ids_float"], ["logits"])],
        "ids", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    d = tmp_path_factory.mktemp("token_onnx")
    onnx.save(model, str(d / "ids.onnx"))
    ids = np.random.default_rng(0).integers(1, 100, size=(8, 4))
    np.savez(d / "float_ids.npz", input_ids=ids + 0.5)            # token ids 1.5, 2.5, ...: cast would truncate
    np.savez(d / "float_ids_integral.npz", input_ids=ids.astype(np.float32))  # whole numbers, still float
    np.savez(d / "ids_beyond_int64.npz", input_ids=np.full((8, 4), 2**64 - 1, np.uint64))
    return d / "ids.onnx"


@pytest.fixture(scope="module")
def renamed_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """tiny.onnx with its input renamed 'x' (no sidecar)."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    old = model.graph.input[0].name
    model.graph.input[0].name = "x"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "x"
    out = tmp_path_factory.mktemp("renamed") / "renamed_input.onnx"
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def unrelated_int8(tmp_path_factory) -> Path:
    """A QDQ int8 model of the tiny model's input shape that was not quantized from it: its one weight
    ('head_quantized', 64x5) is nothing of tiny.onnx, and no tensor name is shared."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).integers(-127, 127, size=(64, 5)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "head_quantized"),
             numpy_helper.from_array(np.array(0.01, np.float32), "head_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "head_zero_point"),
             numpy_helper.from_array(np.array(0.05, np.float32), "flat_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "flat_zero_point")]
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("QuantizeLinear", ["flat", "flat_scale", "flat_zero_point"], ["flat_q"]),
             helper.make_node("DequantizeLinear", ["flat_q", "flat_scale", "flat_zero_point"], ["flat_dq"]),
             helper.make_node("DequantizeLinear", ["head_quantized", "head_scale", "head_zero_point"], ["head"]),
             helper.make_node("MatMul", ["flat_dq", "head"], ["scores"], name="head_matmul")]
    graph = helper.make_graph(nodes, "unrelated", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                   ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder = tmp_path_factory.mktemp("unrelated_int8")
    onnx.save(model, str(folder / "unrelated_int8.onnx"))
    # the same model taking 'input', so only the weights tell it is unrelated
    for value in (*model.graph.input,):
        value.name = "input"
    model.graph.node[0].input[0] = "input"
    onnx.save(model, str(folder / "unrelated_same_input.onnx"))
    return folder / "unrelated_int8.onnx"


# ------------------------------------------------------------------------------------------- cases

def test_debug_of_unrelated_models_with_different_inputs(tiny_onnx, unrelated_int8, tmp_path):
    check_case(["debug", tiny_onnx, unrelated_int8], 2, ("was not quantized from", "[input]", "[image]"),
               tmp_path=tmp_path, timeout=60)


def test_debug_of_unrelated_models_with_the_same_inputs(tiny_onnx, unrelated_int8, tmp_path):
    """Previously exit 0 with a ranking of nothing (or of a tensor the models share by name only)."""
    other = unrelated_int8.with_name("unrelated_same_input.onnx")
    check_case(["debug", tiny_onnx, other, "-o", tmp_path / "out" / "ranking.json"], 2,
               ("was not quantized from", "0 of its 1 quantized weights"), tmp_path=tmp_path, timeout=60)


def test_compare_of_models_with_different_input_names(tiny_onnx, renamed_onnx, tmp_path):
    check_case(["compare", tiny_onnx, renamed_onnx, *B], 2, ("[input]", "[x]"), tmp_path=tmp_path, timeout=60)


@pytest.fixture(scope="module")
def other_shape_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """A model whose one input has tiny.onnx's name but takes 16x16 images (tiny takes 8x8)."""
    import onnx
    from onnx import TensorProto, helper

    name = onnx.load(str(tiny_onnx)).graph.input[0].name
    graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "other_shape",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 16, 16])])
    out = tmp_path_factory.mktemp("other_shape") / "other_shape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(out))
    return out


def test_compare_of_models_of_the_same_input_names_but_other_shapes(tiny_onnx, other_shape_onnx, tmp_path):
    check_case(["compare", tiny_onnx, other_shape_onnx, *B], 2, ("does not fit", "other_shape.onnx"),
               tmp_path=tmp_path, timeout=60)


@pytest.mark.parametrize("npz,needles", [
    pytest.param("float_ids.npz", ("'input_ids'", "float64", "int64"), id="float-ids-with-fractions"),
    pytest.param("float_ids_integral.npz", ("'input_ids'", "float32", "int64"), id="float-ids-whole-numbers"),
    pytest.param("ids_beyond_int64.npz", ("'input_ids'", "int64", "18446744073709551615"), id="ids-beyond-int64"),
])
def test_integer_input_refuses_data_it_would_cast(token_onnx, tmp_path, npz, needles):
    check_case(["profile", token_onnx, "--eval-data", token_onnx.with_name(npz), *B], 2, needles,
               tmp_path=tmp_path, timeout=60)


def test_recipe_seed_beyond_2_32(tiny, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {tiny['folder']}\noutput_dir: out\nseed: {2**70}\nsteps:\n  - export\n")
    check_case(["run", recipe], 2, ("seed", "4294967295"), tmp_path=tmp_path, watch=[tiny["folder"]], timeout=30)


def test_recipe_seed_negative(tiny, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {tiny['folder']}\noutput_dir: out\nseed: -1\nsteps:\n  - export\n")
    check_case(["run", recipe], 2, ("seed",), tmp_path=tmp_path, watch=[tiny["folder"]], timeout=30)


# a stdlib 'factory' would end the process (os:abort) or run a program: run as real subprocesses, so a
# regression fails the case instead of killing the test process
@pytest.mark.parametrize("ref", ["os:abort", "subprocess:run"])
def test_stdlib_factory_in_a_model_spec(tiny, tmp_path, ref):
    folder = tmp_path / "stdlib_factory"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = folder / "optkit.yaml"
    spec.write_text(spec.read_text().replace("factory: model.py:build", f"factory: {ref}"))
    assert ref in spec.read_text()
    check_case(["export", folder, "-o", tmp_path / "out" / "m.onnx", *B], 2, (ref, "standard library"),
               tmp_path=tmp_path, runner=run_cli, timeout=120)


def test_stdlib_factory_on_the_command_line(tmp_path):
    check_case(["export", "os:abort", "-o", tmp_path / "out" / "m.onnx", "--input-shape", "input:1x1x8x8", *B], 2,
               ("os:abort", "standard library"), tmp_path=tmp_path, runner=run_cli, timeout=120)


def test_optkit_itself_is_not_a_factory(tmp_path):
    check_case(["export", "optkit.cli.app:main", "-o", tmp_path / "out" / "m.onnx", "--input-shape",
                "input:1x1x8x8", *B], 2, ("optkit.cli.app:main", "optkit itself"), tmp_path=tmp_path, timeout=60)


@pytest.mark.parametrize("char", ["\0", "\n", "\x1b"], ids=["nul", "newline", "escape"])
@pytest.mark.parametrize("command", ["report", "compare", "profile"])
def test_a_model_path_with_a_control_character_is_named_escaped(tiny_onnx, tmp_path, command, char):
    bad = f"{tmp_path}/a{char}b.onnx"
    args = {"report": ["report", bad], "compare": ["compare", tiny_onnx, bad, *B], "profile": ["profile", bad, *B]}
    stderr = check_case(args[command], 2, ("MODEL", ("NUL byte", "control character")), tmp_path=tmp_path,
                        timeout=60).stderr
    line = next(ln for ln in stderr.splitlines() if ln.startswith("error:"))
    assert char not in line and "b.onnx" in line  # named, the character shown escaped
