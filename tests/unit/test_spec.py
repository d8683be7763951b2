"""The spec is checked before any work: one clear error naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_spec, write_spec

from quantuna._secrets import redact_url
from quantuna.errors import SpecError
from quantuna.spec import load_spec
from quantuna.study.session import prepare


def test_defaults_put_storage_and_workdir_beside_the_spec(tiny_spec_path: Path) -> None:
    spec = load_spec(tiny_spec_path)
    assert spec.storage == f"sqlite:///{tiny_spec_path.parent / 'tiny.db'}"
    assert spec.workdir == tiny_spec_path.parent / "tiny.quantuna"
    assert spec.model == tiny_spec_path.parent / "tiny.onnx"
    assert spec.tuning.objective_names == ["accuracy", "performance", "modelsize"]
    assert spec.tuning.accuracy_criterion.as_dict() == {"absolute": 0.2, "higher_is_better": True}


def test_relative_sqlite_storage_is_resolved_against_the_spec(tiny_dir: Path) -> None:
    path = write_spec(tiny_dir, tiny_spec(tiny_dir, study={"storage": "sqlite:///sub/x.db"}))
    assert load_spec(path).storage == f"sqlite:///{tiny_dir / 'sub' / 'x.db'}"


def test_not_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("study: [unclosed\n  model: x\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:.*line \d+: not valid YAML"):
        load_spec(path)


def test_a_yaml_list_is_not_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="a study spec is a YAML mapping"):
        load_spec(path)


def test_unknown_key_names_its_path(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["exit_policy"]["max_trails"] = 3
    with pytest.raises(SpecError, match=r"tiny\.yaml: tuning\.exit_policy\.max_trails: unknown key"):
        load_spec(write_spec(tiny_dir, spec))


def test_wrong_type_names_key_and_value(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["exit_policy"]["max_trials"] = "many"
    with pytest.raises(SpecError, match=r"tuning\.exit_policy\.max_trials: .*'many'"):
        load_spec(write_spec(tiny_dir, spec))


def test_bad_choice_lists_the_accepted_values(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"]["calibrate_method"] = ["MinMax", "Kullback"]  # (KL is an INC alias: Entropy)
    with pytest.raises(SpecError, match=r"space\.calibrate_method\.1: .*'MinMax'.*'Kullback'"):
        load_spec(write_spec(tiny_dir, spec))


def test_missing_required_key(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    del spec["model"]
    with pytest.raises(SpecError, match="model: required key is missing"):
        load_spec(write_spec(tiny_dir, spec))


def test_missing_model_file(tiny_dir: Path) -> None:
    spec = load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir, model="nope.onnx")))
    with pytest.raises(SpecError, match=r"model: model file .*nope\.onnx not found"):
        prepare(spec)


def test_model_that_is_not_onnx(tiny_dir: Path) -> None:
    (tiny_dir / "fake.onnx").write_text("this is not a protobuf")
    spec = load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir, model="fake.onnx")))
    with pytest.raises(SpecError, match=r"fake\.onnx is not a valid ONNX model"):
        prepare(spec)


def test_missing_data_file(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["data"]["calibration"]["path"] = "missing.npz"
    with pytest.raises(SpecError, match=r"data\.calibration\.path: file .*missing\.npz not found"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_data_key_that_is_not_in_the_file(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["inputs"] = {"x": "images"}
    with pytest.raises(SpecError, match=r"data\.evaluation\.inputs\.x: key 'images' is not in eval\.npz"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_data_name_that_is_not_a_model_input(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["data"]["calibration"]["inputs"] = {"pixels": "x"}
    with pytest.raises(SpecError, match=r"'pixels' is not an input of the model \(its inputs: x\)"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_data_shape_that_does_not_fit_the_model(tiny_dir: Path) -> None:
    np.savez(tiny_dir / "calib.npz", x=np.zeros((10, 1, 5, 5), np.float32))
    with pytest.raises(SpecError, match=r"data\.calibration \(calib\.npz\): input 'x' has shape \(10, 1, 5, 5\).*\[\?, 1, 4, 4\]"):
        prepare(load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir))))


def test_calibration_size_larger_than_the_data(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"]["calibration_size"] = [10, 400]
    with pytest.raises(SpecError, match=r"space\.calibration_size: 400 samples asked.*has 40"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_unknown_objective_lists_the_known_ones(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["multi_objectives"] = {"objective": ["accuracy", "latency"]}
    with pytest.raises(SpecError, match=r"objective 'latency'.*performance"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_weights_must_match_objectives(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["multi_objectives"]["weight"] = [0.5, 0.5]
    with pytest.raises(SpecError, match="weight has 2 entries but objective has 3"):
        load_spec(write_spec(tiny_dir, spec))


def test_op_type_the_model_does_not_have(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"]["op_types"] = {"MatMul": ["int8", "fp32"]}
    with pytest.raises(SpecError, match=r"space\.op_types\.MatMul: the model has no MatMul node"):
        prepare(load_spec(write_spec(tiny_dir, spec)))


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_redact_url_hides_passwords() -> None:
    assert redact_url("postgresql+psycopg2://bob:s3cret@db:5432/x") == "postgresql+psycopg2://bob:***@db:5432/x"
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_inc_single_objective_form(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"] = {"objective": "performance"}
    loaded = load_spec(write_spec(tiny_dir, spec))
    assert loaded.tuning.objective_names == ["performance"]
    assert yaml.safe_load((tiny_dir / "tiny.yaml").read_text())["tuning"] == {"objective": "performance"}


def test_model_built_on_first_use_and_file_loaders(tiny_dir: Path) -> None:
    (tiny_dir / "builder.py").write_text(
        "import shutil, sys\n"
        "import numpy as np\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from conftest import build_tiny_cnn\n"
        "CALLS = []\n"
        "def build(path):\n"
        "    CALLS.append(path)\n"
        "    build_tiny_cnn(path)\n"
        "def calibration():\n"
        "    rng = np.random.default_rng(1)\n"
        "    return [{'x': rng.normal(size=(8, 1, 4, 4)).astype(np.float32)} for _ in range(2)]\n"
    )
    spec = tiny_spec(tiny_dir, model={"path": "cache/built.onnx", "build": "builder.py:build"})
    spec["data"]["calibration"] = {"loader": "builder.py:calibration"}
    loaded = load_spec(write_spec(tiny_dir, spec))
    assert loaded.model == tiny_dir / "cache" / "built.onnx"
    assert loaded.data.calibration.loader == f"{tiny_dir / 'builder.py'}:calibration"
    session = prepare(loaded)
    assert (tiny_dir / "cache" / "built.onnx").is_file()
    assert len(session.calibration) == 16
    prepare(loaded)  # built once: the second prepare finds the file
    from quantuna.data import import_reference

    calls = import_reference(f"{tiny_dir / 'builder.py'}:CALLS", where="t")
    assert len(calls) == 1
    assert calls[0].parent == tiny_dir / "cache" and calls[0] != loaded.model  # renamed when whole
    (tiny_dir / "cache" / "built.onnx").write_bytes(b"half a model")  # a poisoned cache entry
    prepare(loaded)
    assert len(calls) == 2 and sorted(p.name for p in (tiny_dir / "cache").iterdir()) == ["built.onnx"]


def test_a_failing_builder_is_a_spec_error(tiny_dir: Path) -> None:
    (tiny_dir / "bad_builder.py").write_text("def build(path):\n    raise RuntimeError('no disk')\n")
    spec = tiny_spec(tiny_dir, model={"path": "cache/x.onnx", "build": "bad_builder.py:build"})
    with pytest.raises(SpecError, match=r"model\.build: .*bad_builder\.py:build failed: RuntimeError: no disk"):
        prepare(load_spec(write_spec(tiny_dir, spec)))
    assert not (tiny_dir / "cache" / "x.onnx").exists()


def test_a_sampler_whose_libraries_are_missing_is_a_spec_error(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    spec = tiny_spec(tiny_dir)
    spec["study"]["sampler"] = "gp"
    with pytest.raises(SpecError, match=r"study\.sampler: 'gp' .* needs torch"):
        prepare(load_spec(write_spec(tiny_dir, spec)))
    spec["study"]["sampler"] = "tpe"
    prepare(load_spec(write_spec(tiny_dir, spec)))  # the others need nothing more


def test_duplicate_keys_in_a_spec_are_an_error(tiny_dir: Path) -> None:
    path = write_spec(tiny_dir, tiny_spec(tiny_dir))
    path.write_text(path.read_text() + "accuracy: {metric: top5}\n")
    with pytest.raises(SpecError, match="duplicate key 'accuracy'"):
        load_spec(path)


def test_long_values_are_shortened_in_messages(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir, study={"name": "tiny", "sampler": "x" * 100_000})
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tiny_dir, spec))
    assert len(str(info.value)) < 400


def test_every_quantuna_error_is_one_bounded_line() -> None:
    from quantuna.errors import MAX_MESSAGE, TrialError

    error = SpecError("data.calibration.inputs.x: key " + repr("k" * 10**6) + "\nis not in the file (fix: ...)")
    assert len(str(error)) <= MAX_MESSAGE and "\n" not in str(error)
    assert str(error).startswith("data.calibration") and str(error).endswith("(fix: ...)")
    assert str(TrialError("short")) == "short"


@pytest.mark.parametrize("value", ["auto", 0, 3])
def test_exclude_sensitive_nodes_is_auto_or_a_count(tiny_dir: Path, value: object) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"]["exclude_sensitive_nodes"] = value
    assert load_spec(write_spec(tiny_dir, spec)).space.exclude_sensitive_nodes == value


@pytest.mark.parametrize("value", ["many", -1, True])
def test_exclude_sensitive_nodes_refuses_other_values(tiny_dir: Path, value: object) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"]["exclude_sensitive_nodes"] = value
    with pytest.raises(SpecError, match=r"space\.exclude_sensitive_nodes"):
        load_spec(write_spec(tiny_dir, spec))
