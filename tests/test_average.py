"""Tests of weight averaging (w2vlm.average and ``w2vlm average``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from conftest import model_weights  # noqa: E402
from w2vlm.average import AverageError, average_models, average_state_dicts  # noqa: E402
from w2vlm.cli import app  # noqa: E402
from w2vlm.errors import W2vlmError  # noqa: E402


def test_average_state_dicts_weighted_mean_and_exact_ints() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    out = average_state_dicts([a, b], [1.0, 1.0])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["w"].dtype == torch.float32
    assert torch.equal(out["n"], torch.tensor([3]))
    # weights are normalised: 3:1 is the same as 0.75 / 0.25
    out = average_state_dicts([a, b], [3.0, 1.0])
    assert torch.allclose(out["w"], torch.tensor([1.5, 3.0]))
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    assert average_state_dicts([half, half], [1, 1])["w"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("states", "weights", "match"),
    [
        ([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], [1, 1], "input 2 has different tensors"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [1, 1], r"tensor 'w': input 2 has shape \(3,\)"),
        ([{"n": torch.tensor([1])}, {"n": torch.tensor([2])}], [1, 1], "non-float tensor 'n' differs"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1], "expected 2 values"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1, -1], "must be finite and >= 0"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1, float("nan")], "must be finite and >= 0"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [0, 0], "positive sum"),
        ([], [], "no inputs"),
    ],
)
def test_average_state_dicts_rejects_mismatches(states: list, weights: list, match: str) -> None:
    with pytest.raises(AverageError, match=match):
        average_state_dicts(states, weights)


def test_average_models_writes_a_loadable_model_with_what_was_averaged(tmp_path: Path, tiny_ctc_factory) -> None:
    import transformers

    m1 = tiny_ctc_factory("m1", with_lm=False, seed=1)
    m2 = tiny_ctc_factory("m2", with_lm=True, seed=2)
    (m1 / "training_info.json").write_text(json.dumps({"steps": 10, "dev": {"wer": 0.5}}))
    out = average_models([m1, m2], tmp_path / "avg", weights=[1, 3])
    s1, s2, avg = (model_weights(d) for d in (m1, m2, out))
    name = next(k for k, v in s1.items() if v.is_floating_point() and not torch.equal(v, s2[k]))
    assert torch.allclose(avg[name], 0.25 * s1[name] + 0.75 * s2[name], atol=1e-6)
    info = json.loads((out / "training_info.json").read_text())
    assert [round(e["weight"], 3) for e in info["averaged_from"]] == [0.25, 0.75]
    assert info["averaged_from"][0]["steps"] == 10 and "dev" not in info
    # the other files (here the LM) come from the last input
    assert (out / "language_model").is_dir() and (out / "alphabet.json").is_file()
    model = transformers.AutoModelForCTC.from_pretrained(str(out))
    assert torch.allclose(model.state_dict()[name], avg[name])
    assert not list(tmp_path.glob("*.tmp-average"))


def test_a_folder_of_model_folders_stands_for_them_in_name_order(tmp_path: Path, tiny_ctc_factory) -> None:
    snaps = tmp_path / "run.snapshots"
    folders = [tiny_ctc_factory(f"run.snapshots/step-{i:07d}", with_lm=False, seed=i) for i in (250, 500, 750)]
    states = [model_weights(f) for f in folders]
    out = average_models([snaps], tmp_path / "last2", last=2)
    info = json.loads((out / "training_info.json").read_text())
    assert [Path(e["model"]).name for e in info["averaged_from"]] == ["step-0000500", "step-0000750"]
    name = next(k for k, v in states[1].items() if v.is_floating_point() and not torch.equal(v, states[2][k]))
    assert torch.allclose(model_weights(out)[name], (states[1][name] + states[2][name]) / 2, atol=1e-6)


def test_average_models_bad_input_names_the_problem(tmp_path: Path, tiny_ctc_factory) -> None:
    m1 = tiny_ctc_factory("m1", with_lm=False)
    with pytest.raises(AverageError, match="at least two model folders"):
        average_models([m1], tmp_path / "o")
    with pytest.raises(AverageError, match="nope: no such folder"):
        average_models([m1, tmp_path / "nope"], tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AverageError, match=r"empty: no model\.safetensors in it"):
        average_models([m1, tmp_path / "empty"], tmp_path / "o")
    with pytest.raises(AverageError, match="is one of the inputs"):
        average_models([m1, m1], m1)
    with pytest.raises(AverageError, match="holds the input"):  # --overwrite would delete the inputs
        average_models([m1, m1], tmp_path, overwrite=True)
    assert (m1 / "model.safetensors").is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(W2vlmError, match="afile is a file, not a folder"):
        average_models([m1, m1], tmp_path / "afile" / "o")
    with pytest.raises(W2vlmError, match="is a file; expected a folder"):  # --overwrite replaces folders only
        average_models([m1, m1], tmp_path / "afile", overwrite=True)
    assert (tmp_path / "afile").read_text() == "x"
    with pytest.raises(AverageError, match=r"--last \(last\): 0"):
        average_models([m1, m1], tmp_path / "o", last=0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AverageError, match=r"broken/model\.safetensors: not a readable safetensors file"):
        average_models([m1, broken], tmp_path / "o")
    other = tiny_ctc_factory("other", with_lm=False, num_hidden_layers=2)
    with pytest.raises(AverageError, match=r"input 2 has different tensors .*input 2 = .*other"):
        average_models([m1, other], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    with pytest.raises(AverageError, match="already exists"):
        average_models([m1, m1], taken)
    assert (taken / "keep.txt").is_file()
    assert average_models([m1, m1], taken, overwrite=True) == taken and not (taken / "keep.txt").exists()
    assert issubclass(AverageError, W2vlmError)


def test_average_command(tmp_path: Path, tiny_ctc_factory) -> None:
    m1 = tiny_ctc_factory("m1", with_lm=False, seed=1)
    m2 = tiny_ctc_factory("m2", with_lm=False, seed=2)
    runner = CliRunner()
    result = runner.invoke(app, ["average", str(m1), str(m2), "-o", str(tmp_path / "avg"), "--weights", "1,3"])
    assert result.exit_code == 0, result.output
    assert "averaged 2 models" in result.stdout
    info = json.loads((tmp_path / "avg" / "training_info.json").read_text())
    assert [round(e["weight"], 3) for e in info["averaged_from"]] == [0.25, 0.75]
    result = runner.invoke(app, ["average", str(m1), str(m2), "-o", str(tmp_path / "x"), "--weights", "1;3"])
    assert result.exit_code == 2 and "comma-separated numbers" in result.output
    result = runner.invoke(app, ["average", str(m1), str(m2), "-o", str(tmp_path / "x"), "--weights", "1"])
    assert result.exit_code == 1 and "expected 2 values" in result.output
    assert not (tmp_path / "x").exists()


def test_the_config_says_the_dtype_the_averaged_weights_are_in(tmp_path: Path, tiny_ctc_factory) -> None:
    """Averaging a float16 model with a float32 one gives float16 weights (the first input's); the config (the
    last input's) said float32."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    half, full = tiny_ctc_factory("half", with_lm=False), tiny_ctc_factory("full", with_lm=False)
    state = load_file(str(half / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(half / "model.safetensors"))
    config = json.loads((full / "config.json").read_text())
    config["dtype"] = "float32"
    (full / "config.json").write_text(json.dumps(config))
    out = average_models([half, full], tmp_path / "avg")
    weights = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
