"""Weights files load without running code; pickles are refused with UnsafeModelFile naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medfusion.errors import MedfusionError, UnsafeModelFile
from medfusion.models.weights import load_state_dict


class _Payload:
    """Unpickling this would call os.system: the attack weights_only exists to stop."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/medfusion-pwned",))


def test_safetensors_and_plain_state_dicts_load(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(state, tmp_path / "a.safetensors")
    torch.save(state, tmp_path / "b.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "c.ckpt")
    for name in ("a.safetensors", "b.pt", "c.ckpt"):
        assert torch.equal(load_state_dict(tmp_path / name)["w"], state["w"])


def test_code_carrying_torch_file_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload()}, path)
    marker = Path("/tmp/medfusion-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(UnsafeModelFile) as info:
        load_state_dict(path)
    assert info.value.source == str(path) and "could run code" in info.value.reason
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickle_files_are_refused_by_kind(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(UnsafeModelFile, match=str(path)):
        load_state_dict(path)


def test_corrupt_and_unknown_files_are_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 7)
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    (tmp_path / "w.h5").write_bytes(b"x")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    for name, match in [("bad.safetensors", "safetensors"), ("bad.pt", "torch file"), ("w.h5", "unsupported"),
                        ("list.pt", "state dict"), ("missing.pt", "not found")]:  # fmt: skip
        with pytest.raises(MedfusionError, match=match):
            load_state_dict(tmp_path / name)


def test_image_encoder_pretrained_path_refuses_pickles(tmp_path: Path) -> None:
    from medfusion.config import ImageEncoderConfig
    from medfusion.models.image_encoders import build_image_encoder, load_trunk_weights

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload()}, path)
    encoder = build_image_encoder(ImageEncoderConfig(name="resnet18", pretrained_path=path), (64, 64))
    with pytest.raises(UnsafeModelFile, match="cannot read pretrained image weights"):
        load_trunk_weights(encoder, path)
