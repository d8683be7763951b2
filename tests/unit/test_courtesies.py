"""Courtesies: help for every command and option, quiet pipes, named nodes, INC's spellings."""

from __future__ import annotations

import argparse

import pytest

from quantuna.cli._common import dispatch
from quantuna.cli.app import build_parser
from quantuna.cli.export import number_ranges


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return dict(sub.choices)


@pytest.mark.parametrize("name", ["run", "validate", "show", "export", "apply", "dashboard", "report"])
def test_every_command_has_a_description_and_every_option_help(name: str) -> None:
    command = _commands()[name]
    assert command.description and len(command.description) > 40, name
    for action in command._actions:  # noqa: SLF001
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):  # noqa: SLF001
            continue
        assert action.help, f"{name} {action.dest} has no help text"


def test_trial_numbers_are_ranges_with_an_ellipsis_when_long() -> None:
    assert number_ranges([3, 0, 1, 2, 7, 9, 10]) == "0-3, 7, 9-10"
    assert number_ranges([]) == "none yet"
    long = number_ranges(list(range(0, 60, 2)))
    assert long.startswith("0, 2, 4") and long.endswith(", ... (30 trials)")


def test_a_closed_pipe_ends_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert dispatch(handler, argparse.Namespace()) == 0
    assert capsys.readouterr().err == ""


def test_a_summary_names_the_nodes_it_keeps_in_fp32() -> None:
    from quantuna.config import QuantConfig

    two = QuantConfig(approach="static", op_types=("Conv",), exclude_nodes=("conv_3", "fc"))
    assert two.summary().endswith("fp32 nodes conv_3,fc")
    many = QuantConfig(approach="dynamic", op_types=("Conv",),
                       exclude_nodes=tuple(f"n{i}" for i in range(5)) + ("x" * 40,))
    assert many.summary().endswith("fp32 nodes n0,n1,n2 +3 more")


def test_neural_compressor_spellings_are_aliases(tmp_path) -> None:
    from quantuna.config import QuantConfig
    from quantuna.spec import SpaceSection

    space = SpaceSection(approach=["post_training_static_quant", "Dynamic"], quant_format=["qdq", "qoperator"],
                         types=["u8s8", "s8s8"], calibrate_method=["minmax", "kl", "percentile"])
    assert space.approach == ["static", "dynamic"] and space.quant_format == ["QDQ", "QOperator"]
    assert space.types == ["U8S8", "S8S8"] and space.calibrate_method == ["MinMax", "Entropy", "Percentile"]
    config = QuantConfig.from_dict({"approach": "static", "quant_format": "qdq", "types": "u8s8",
                                    "calibrate_method": "kl", "calibration_size": 8, "op_types": ["Conv"]})
    assert (config.quant_format, config.types, config.calibrate_method) == ("QDQ", "U8S8", "Entropy")
    with pytest.raises(Exception, match="MinMax"):
        SpaceSection(calibrate_method=["minimax"])  # a typo is still refused, with the choices


def test_the_table_keeps_to_80_columns_by_moving_the_config_under_its_row() -> None:
    from quantuna.summary import StudySummary

    config = "static QOperator U8S8 MinMax/50 per-channel [Conv,Gemm] fp32 nodes conv_3,fc"
    summary = StudySummary(
        title="'s' (pareto)", facts={}, failures=[], has_front=True,
        header=["trial", "accuracy (top1)", "performance [ms]", "modelsize [MiB]", "config"],
        rows=[["fp32", "0.978", "0.03126", "0.5796", "baseline"],
              ["10", "0.98 (+0.2%)", "0.03352 (+8.2% [+1.2, +12.8])", "0.1512 (-73.9%)", config]])
    wide = summary.table()
    assert max(map(len, wide.splitlines())) > 80 and config in wide.splitlines()[-1]
    narrow = summary.table(80).splitlines()
    assert max(map(len, narrow)) <= 80, narrow
    assert narrow[-1] == f"  {config}" and narrow[-2].startswith("10 ")
