"""Tests of the embedded-model recipe's weight averaging (recipes/embedded/average.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embedded"
sys.path.insert(0, str(RECIPE))

import average  # noqa: E402


def test_average_state_dicts_weighted_mean_and_exact_ints() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    out = average.average_state_dicts([a, b], [1.0, 1.0])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["w"].dtype == torch.float32
    assert torch.equal(out["n"], torch.tensor([3]))
    # weights are normalised: 3:1 is the same as 0.75 / 0.25
    out = average.average_state_dicts([a, b], [3.0, 1.0])
    assert torch.allclose(out["w"], torch.tensor([1.5, 3.0]))
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    assert average.average_state_dicts([half, half], [1, 1])["w"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("states", "weights", "match"),
    [
        ([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], [1, 1], "input 2 has different tensors"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [1, 1], r"tensor 'w': input 2 has shape \(3,\)"),
        ([{"n": torch.tensor([1])}, {"n": torch.tensor([2])}], [1, 1], "non-float tensor 'n' differs"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1], "expected 2 values"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1, -1], "must be >= 0"),
        ([], [], "no inputs"),
    ],
)
def test_average_state_dicts_rejects_mismatches(states: list, weights: list, match: str) -> None:
    with pytest.raises(average.AverageError, match=match):
        average.average_state_dicts(states, weights)


def test_average_cli_writes_a_loadable_model(tmp_path: Path, tiny_ctc_factory) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    m1 = tiny_ctc_factory("m1", with_lm=False, seed=1)
    m2 = tiny_ctc_factory("m2", with_lm=False, seed=2)
    (m1 / "training_info.json").write_text(json.dumps({"steps": 10, "dev": {"wer": 0.5}}))
    out = tmp_path / "avg"
    assert average.main([str(m1), str(m2), "--out", str(out), "--weights", "1", "3"]) == 0
    s1, s2, avg = (load_file(str(d / "model.safetensors")) for d in (m1, m2, out))
    name = next(k for k, v in s1.items() if v.is_floating_point() and not torch.equal(v, s2[k]))
    assert torch.allclose(avg[name], 0.25 * s1[name] + 0.75 * s2[name], atol=1e-6)
    info = json.loads((out / "training_info.json").read_text())
    assert [round(e["weight"], 3) for e in info["averaged_from"]] == [0.25, 0.75]
    assert info["averaged_from"][0]["steps"] == 10 and "dev" not in info
    model = transformers.AutoModelForCTC.from_pretrained(str(out))
    assert torch.allclose(model.state_dict()[name], avg[name])


def test_average_cli_bad_input_exits_2(tmp_path: Path, tiny_ctc_factory, capsys: pytest.CaptureFixture[str]) -> None:
    m1 = tiny_ctc_factory("m1", with_lm=False)
    assert average.main([str(m1), "--out", str(tmp_path / "o")]) == 2
    assert "at least two model folders" in capsys.readouterr().err
    assert average.main([str(m1), str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope/model.safetensors: no such file" in capsys.readouterr().err
    assert average.main([str(m1), str(m1), "--out", str(m1)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
