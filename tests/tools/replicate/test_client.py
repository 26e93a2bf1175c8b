"""scripts/client.py declares every input of predict.py, with its range and default, and sends only those given."""

from __future__ import annotations

import importlib.util

from tests.helpers import ROOT


def load_client_script():
    spec = importlib.util.spec_from_file_location("replicate_client_script", ROOT / "scripts" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_script_has_a_flag_for_every_input_of_the_predictor():
    from llmserve.tools.inputs import declared_inputs

    inputs = declared_inputs()
    declared = load_client_script().INPUTS
    assert set(declared) | {"pregunta"} == set(inputs)  # pregunta is the positional argument
    python_type = {"string": str, "integer": int, "number": float}
    for name, (kind, _help) in declared.items():
        assert kind is python_type[inputs[name]["type"]], name


def test_client_script_help_states_the_predictors_ranges_and_defaults():
    from llmserve.tools.inputs import declared_inputs

    def number(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    declared = load_client_script().INPUTS
    for name, field in declared_inputs().items():
        if "minimum" not in field or name not in declared:
            continue
        default = "random" if field["default"] is None else number(field["default"])
        assert f"({number(field['minimum'])}-{number(field['maximum'])}; default {default})" in declared[name][1], name


def test_client_script_sends_only_the_inputs_given():
    script = load_client_script()
    args = script.build_parser().parse_args(
        ["alice/pregunta:v2", "¿Qué es?", "--temperature", "0", "--max_new_tokens", "64", "--stop-sequences", r"\n"]
    )
    assert script.model_input(args) == {
        "pregunta": "¿Qué es?",
        "temperature": 0.0,
        "max_new_tokens": 64,
        "stop_sequences": r"\n",
    }
