"""CaptureConfig validation, the stage transport and token-budget batching (no teacher)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
from config_sections import capture_config

from logitcache.capture.stages import row_seed, token_batches
from logitcache.capture.transport import pack_rows, unpack_rows
from logitcache.cli import build_parser
from logitcache.cli.build import config_from_args
from logitcache.errors import ConfigError


def _cfg(**kw):
    base = {"teacher": "t", "corpus": ["c.txt"], "out": "o"}
    return capture_config(**{**base, **kw})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"top_k": 0}, "--top-k 0 needs --rs-samples N"),
        ({"top_k": -1}, "--top-k -1"),
        ({"rs_samples": -2}, "--rs-samples -2"),
        ({"seq_len": 1}, "--seq-len 1"),
        ({"workers": 0}, "--workers 0"),
        ({"max_tokens": 1}, "--max-tokens 1"),
        ({"format": "csv"}, "--format 'csv'"),
        ({"packing": "zip"}, "--packing 'zip'"),
        ({"dtype": "int8"}, "--dtype 'int8'"),
        ({"corpus": []}, "no corpus"),
        ({"use_ray": False, "ray_address": "ray://x"}, "contradict"),
    ],
)
def test_config_rejects_with_fix(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _cfg(**kw)


def test_config_accepts_draws_only_and_string_corpus():
    cfg = _cfg(top_k=0, rs_samples=8, corpus="one.jsonl")
    assert cfg.corpus == ["one.jsonl"]
    assert cfg.capture_section()["top_k"] == 0 and cfg.capture_section()["rs_samples"] == 8


def test_cli_parser_maps_every_option():
    args = build_parser().parse_args(
        "build --teacher smollm2-135m --corpus a.txt b/*.jsonl --out s3://b/c --top-k 8 "
        "--rs-samples 4 --seq-len 256 --max-tokens 999 --workers 2 --text-field body "
        "--packing document --no-ray --storage-options {}".split()
    )
    cfg = config_from_args(args)
    assert cfg.corpus == ["a.txt", "b/*.jsonl"]
    assert (cfg.labels.top_k, cfg.labels.rs_samples) == (8, 4)
    assert (cfg.packing.seq_len, cfg.packing.max_tokens, cfg.run.workers) == (256, 999, 2)
    assert cfg.packing.text_field == "body" and cfg.packing.mode == "document"
    assert cfg.run.use_ray is False and cfg.output.storage_options == "{}"


def test_sections_are_shared_and_validated_once():
    """build and generate compose the same section classes; a bad value is refused by its
    section, whichever command holds it."""
    from logitcache.capture import CaptureConfig
    from logitcache.capture.options import LabelOptions, OutputOptions, RunOptions, TeacherOptions
    from logitcache.generate import GenerateConfig

    hints = {cls.__name__: typing.get_type_hints(cls) for cls in (CaptureConfig, GenerateConfig)}
    for name in ("teacher", "labels", "run", "output"):
        assert hints["CaptureConfig"][name] == hints["GenerateConfig"][name]
    teacher = TeacherOptions(model="t", device="cpu")
    cfg = CaptureConfig(teacher=teacher, corpus=["c"], output=OutputOptions(catalog="s3://b/cat"))
    assert cfg.teacher_config().device == "cpu" and cfg.run == RunOptions()
    with pytest.raises(ConfigError, match="--rs-samples -1"):
        LabelOptions(rs_samples=-1)
    with pytest.raises(ConfigError, match="--out and --catalog"):
        OutputOptions(out="o", catalog="c")
    with pytest.raises(ConfigError, match="--out only"):
        GenerateConfig(teacher=teacher, prompts=["p"], output=OutputOptions(catalog="s3://b/cat"))
    # a section may be given as a dict of its fields, and nothing else
    as_dict = CaptureConfig(teacher=teacher, corpus=["c"], output={"out": "o"}, packing={})
    assert as_dict.output == OutputOptions(out="o") and as_dict.packing.seq_len == 2048
    with pytest.raises(ConfigError, match="CaptureConfig.packing must be a PackingOptions"):
        CaptureConfig(teacher=teacher, corpus=["c"], output=OutputOptions(out="o"), packing=512)
    with pytest.raises(ConfigError, match="GenerateConfig.generation must be a GenerationParams"):
        GenerateConfig(teacher=teacher, prompts=["p"], output={"out": "o"}, generation=1.0)


@pytest.mark.parametrize(
    ("section", "kw", "match"),
    [
        ("TeacherOptions", {"model": "t", "dtype": "fp8"}, "--dtype 'fp8': choose one of auto"),
        ("PackingOptions", {"format": "xml"}, "--format 'xml': choose one of auto"),
        ("PackingOptions", {"invalid_utf8": "drop"}, "--invalid-utf8 'drop': choose one of skip"),
        ("PackingOptions", {"mode": "stack"}, "--packing 'stack': choose one of pack"),
        ("RunOptions", {"progress": "loud"}, "--progress 'loud': choose one of auto"),
    ],
)
def test_values_outside_a_flags_choices_are_refused_from_python(section, kw, match):
    """The choices a field declares for argparse also bind Python callers, named by flag."""
    from logitcache.capture import options

    with pytest.raises(ConfigError, match=match):
        getattr(options, section)(**kw)


def test_transport_roundtrip_ragged_shapes():
    rows = [
        {
            "sample_id": "a-0",
            "input_ids": np.arange(5, dtype=np.int32),
            "rs_ids": np.ones((5, 3), np.int32),
            "tail": np.zeros(5, np.float32),
        },
        {
            "sample_id": "b-1",
            "input_ids": np.arange(2, dtype=np.int32),
            "rs_ids": np.full((2, 1), 7, np.int32),
            "tail": np.ones(2, np.float32),
        },
    ]
    back = unpack_rows(pack_rows(rows))
    assert [r["sample_id"] for r in back] == ["a-0", "b-1"]
    for r, b in zip(rows, back):
        for key in ("input_ids", "rs_ids", "tail"):
            assert b[key].dtype == r[key].dtype and np.array_equal(b[key], r[key])


def test_token_batches_respect_budget_and_cover_all():
    lengths = [10, 3, 7, 10, 2, 9, 40]
    batches = token_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 20
    assert [6] in batches  # a row above the budget goes alone


def test_row_seed_is_stable_and_in_range():
    assert row_seed("u-abc-00001") == row_seed("u-abc-00001")
    assert row_seed("u-abc-00001") != row_seed("u-abc-00002")
    assert 0 <= row_seed("x") < 2**63
