"""The files and input names an exported config records: portable paths, search, input maps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from quantuna._util import sha256_file
from quantuna.errors import SpecError
from quantuna.export_files import RecordedFile, locate, portable_path, portable_storage
from quantuna.export_inputs import map_calibration, parse_input_map


def test_paths_are_relative_to_the_yaml_with_posix_separators(tmp_path: Path) -> None:
    yaml_dir = tmp_path / "exports" / "int8"
    assert portable_path(tmp_path / "data" / "calib.npz", yaml_dir) == "../../data/calib.npz"
    assert portable_path(yaml_dir / "m.onnx", yaml_dir) == "m.onnx"
    # sharing only the root, a relative path would not survive a move either
    assert portable_path("/nowhere-else/m.onnx", yaml_dir) == "/nowhere-else/m.onnx"
    assert portable_storage(f"sqlite:///{tmp_path}/s.db", yaml_dir) == "sqlite:///../../s.db"
    assert portable_storage("sqlite:///s.db", yaml_dir) == "sqlite:///s.db"
    assert portable_storage("postgresql://u:***@h/db", yaml_dir) == "postgresql://u:***@h/db"


def test_a_missing_file_is_found_by_name_then_sha256_or_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "other.npz").write_bytes(b"the data")
    (tmp_path / "b" / "decoy.npz").write_bytes(b"other data")
    sha = sha256_file(tmp_path / "b" / "other.npz")
    recorded = RecordedFile("../data/calib.npz", sha, where="best.yaml: calibration.path")
    found = locate(recorded, tmp_path / "exports", [tmp_path / "a", tmp_path / "b"])
    assert found == tmp_path / "b" / "other.npz"
    (tmp_path / "a" / "calib.npz").write_bytes(b"changed")  # same name, other bytes: not it
    assert locate(recorded, tmp_path / "exports", [tmp_path / "a", tmp_path / "b"]) == found
    with pytest.raises(SpecError) as info:
        locate(recorded, tmp_path / "exports", [tmp_path / "a"], hint=" or --calibration FILE.npz")
    message = str(info.value)
    assert "\n" not in message
    for part in ("calib.npz", sha, str(tmp_path / "data" / "calib.npz"), str(tmp_path / "a"),
                 str(Path.cwd()), "--search-path", "--calibration"):
        assert part in message, part


def test_input_maps_rename_the_config_names_and_refuse_what_does_not_line_up(
        caplog: pytest.LogCaptureFixture) -> None:
    two = {"inputs": {"ids": "ids", "mask": "m"}, "constants": {"sr": 16000}}
    mapped = map_calibration(two, ["input_ids", "attention_mask", "sr"],
                             {"ids": "input_ids", "mask": "attention_mask"}, "c")
    assert mapped["inputs"] == {"input_ids": "ids", "attention_mask": "m"}
    assert map_calibration(two, ["ids", "mask", "sr"], None, "c") == two
    with pytest.raises(SpecError, match=r"'ids', 'mask', 'sr'\) are not the model's \('a', 'b', 'sr'\)"):
        map_calibration(two, ["a", "b", "sr"], None, "c")
    with pytest.raises(SpecError, match=r"'ids', 'mask' are all mapped to the model's input 'a'"):
        map_calibration(two, ["a", "b", "sr"], {"ids": "a", "mask": "a"}, "c")
    with pytest.raises(SpecError, match=r"still not the model's .*unfed 'b'"):
        map_calibration(two, ["a", "b", "sr"], {"ids": "a"}, "c")
    with caplog.at_level(logging.WARNING):
        one = map_calibration({"inputs": {"x": "x"}}, ["input.1"], None, "c")
    assert one["inputs"] == {"input.1": "x"} and "--input-map x=input.1" in caplog.text
    # the config named no inputs: the map's names are .npz keys
    assert map_calibration({}, ["input.1"], {"x": "input.1"}, "c")["inputs"] == {"input.1": "x"}
    assert parse_input_map(["x=input.1", "y=a=b"]) == {"x": "input.1", "y": "a=b"}
    for bad in (["x"], ["=a"], ["x=a", "x=b"]):
        with pytest.raises(SpecError, match="--input-map"):
            parse_input_map(bad)


def test_apply_accepts_op_types_of_control_flow_bodies_and_dynamic_only_ops() -> None:
    """silero-vad's LSTMs sit inside If bodies and only onnxruntime's dynamic (integer-op)
    registry quantizes LSTM: an exported ``dynamic [LSTM]`` config must apply to it."""
    from types import SimpleNamespace

    from quantuna.config import QuantConfig
    from quantuna.export import _check_against_model

    def exported(op_types: tuple[str, ...]) -> SimpleNamespace:
        return SimpleNamespace(config=QuantConfig(approach="dynamic", op_types=op_types), where="pick.yaml")

    info = SimpleNamespace(op_types=("If", "Concat"), subgraph_op_types=("LSTM",), compute_nodes=())
    _check_against_model(exported(("LSTM",)), info)  # accepted: no error
    with pytest.raises(SpecError, match="NotAnOp"):
        _check_against_model(exported(("NotAnOp",)), info)


def test_an_unknown_trial_lists_the_complete_ones_and_says_when_the_list_is_cut() -> None:
    from types import SimpleNamespace

    from quantuna.errors import QuantunaError
    from quantuna.export_doc import _chosen

    result = SimpleNamespace(trials=[SimpleNamespace(number=i) for i in range(25)])
    with pytest.raises(QuantunaError) as err:
        _chosen(result, 999, "weighted", False)  # type: ignore[arg-type]
    message = str(err.value)
    assert "trial 999 is not a complete trial" in message and "0, 1, 2" in message
    assert "... (25 in all, the last 24)" in message
