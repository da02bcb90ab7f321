"""Checkpoints: safetensors round-trip, weights-only .pth, refusal of pickled code, the converter."""
import os
import pickle

import pytest
import torch

import mdqe
from mdqe.checkpoint import CheckpointError, load_checkpoint, load_model, safe_torch_load, save_checkpoint
from mdqe.convert import main as convert_main


class _Payload:
    """Unpickling this runs code (creates a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return mdqe.build_model("tiny").eval()


def test_safetensors_round_trip(tiny, tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(tiny, path, tiny.cfg, extra={"step": 7})
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]          # no temp files left
    state, cfg, extra = load_checkpoint(path)
    assert cfg == tiny.cfg and extra == {"step": 7}
    ref = tiny.state_dict()
    assert state.keys() == ref.keys()
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    model, _ = load_model(path)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, with_aux=False)["pred_masks"], tiny(x, with_aux=False)["pred_masks"])


def test_weights_only_pth(tiny, tmp_path):
    path = str(tmp_path / "m.pth")
    torch.save({"model": tiny.state_dict(), "config": tiny.cfg.to_dict()}, path)
    state, cfg, _ = load_checkpoint(path)
    assert cfg == tiny.cfg and torch.equal(state["cls_embed.layers.0.weight"], tiny.cls_embed.layers[0].weight)
    torch.save(tiny.state_dict(), path)                                 # plain state dict: needs cfg
    with pytest.raises(CheckpointError, match="no config"):
        load_checkpoint(path)
    assert load_checkpoint(path, "tiny")[1].name == "tiny"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_needing_code_is_refused(tmp_path, zip_format):
    marker = str(tmp_path / "executed")
    path = str(tmp_path / "evil.pth")
    torch.save({"model": {"w": torch.ones(1)}, "x": _Payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    for load in (lambda: load_checkpoint(path, "tiny"), lambda: safe_torch_load(path, allow_numpy=True)):
        with pytest.raises(CheckpointError, match="refusing"):
            load()
    assert convert_main([path, str(tmp_path / "out.safetensors"), "--config", "tiny"]) == 2
    assert not os.path.exists(marker)
    with open(path, "wb") as f:                                         # a raw pickle, not torch.save
        pickle.dump({"x": _Payload(marker)}, f)
    with pytest.raises(CheckpointError):
        safe_torch_load(path, allow_numpy=True)
    assert not os.path.exists(marker)


# --- converter: a synthetic checkpoint in the authors' (detectron2) layout -------------------------------

# our prefix -> the authors' prefix, written out by hand from their module tree
_AUTHORS_PREFIX = [
    ("backbone.", "detr.backbone.0.backbone."),
    ("input_proj.layers.", "detr.input_proj."),
    ("encoder.level_embed", "detr.transformer_enc.level_embed"),
    ("encoder.", "detr.transformer_enc.encoder."),
    ("decoder.layers.", "detr.transformer_dec.decoder.layers."),
    ("decoder.norm.", "detr.transformer_dec.decoder_norm."),
    ("decoder.bbox_embed.", "detr.transformer_dec.bbox_embed."),
    ("decoder.point2pos_proj.", "detr.transformer_dec.point2pos_proj."),
    ("mask_head.", "detr.transformer_dec.mask_head."),
    ("", "detr.transformer_dec."),                       # cls_embed, rpn_cls_embed, track_embed, mask_embed
]
# the authors register these shared modules a second time inside the decoder
_DUPLICATES = [("decoder.norm.", "detr.transformer_dec.decoder.norm."),
               ("decoder.bbox_embed.", "detr.transformer_dec.decoder.bbox_embed."),
               ("decoder.point2pos_proj.", "detr.transformer_dec.decoder.point2pos_proj.")]


def _authors_state(ours):
    src = {}
    for k, v in ours.items():
        for mine, theirs in _AUTHORS_PREFIX:
            if k.startswith(mine):
                src[theirs + k[len(mine):]] = v.clone() + 1.0       # distinct values from the target model
                break
        for mine, theirs in _DUPLICATES:
            if k.startswith(mine):
                src[theirs + k[len(mine):]] = v.clone() + 1.0
    return src


def test_converter_maps_authors_layout_and_lists_unmatched(tmp_path, capsys):
    torch.manual_seed(0)
    ours = mdqe.build_model("tiny").state_dict()
    src = _authors_state(ours)
    # numpy arrays, as detectron2 may store them
    src["detr.transformer_dec.rpn_cls_embed.layers.0.weight"] = src["detr.transformer_dec.rpn_cls_embed.layers.0.weight"].numpy()
    src["detr.transformer_dec.query_relpos_grid"] = torch.zeros(64, 64, 2, dtype=torch.int64)  # derived buffer
    src["detr.transformer_dec.extra_head.weight"] = torch.ones(3)                              # unknown
    src["detr.transformer_dec.cls_embed.layers.2.bias"] = torch.zeros(80)                     # wrong class count
    del src["detr.transformer_dec.decoder.layers.1.time_weights.weight"]                       # missing
    path = str(tmp_path / "authors.pth")
    torch.save({"model": src, "iteration": 11, "scheduler": {"last_epoch": 11}}, path)
    dst = str(tmp_path / "ours.safetensors")
    report_path = str(tmp_path / "report.json")
    assert convert_main([path, dst, "--config", "tiny", "--report", report_path]) == 0
    printed = capsys.readouterr().out
    state, cfg, extra = load_checkpoint(dst)
    assert cfg.name == "tiny"
    unmatched_src = set(extra["unmatched_source"])
    assert unmatched_src == {"detr.transformer_dec.extra_head.weight", "detr.transformer_dec.cls_embed.layers.2.bias"}
    assert set(extra["unmatched_target"]) == {"cls_embed.layers.2.bias", "decoder.layers.1.time_weights.weight"}
    for key in ("detr.transformer_dec.extra_head.weight", "cls_embed.layers.2.bias",
                "decoder.layers.1.time_weights.weight", "query_relpos_grid"):
        assert key in printed
    for k, v in ours.items():
        if k in extra["unmatched_target"]:
            assert torch.equal(state[k], v)                              # kept at the seeded init
        else:
            torch.testing.assert_close(state[k], v + 1.0, msg=k)          # taken from the source
    assert load_model(dst)[0] is not None                                # loads strictly


def test_converter_reports_conflicting_shared_copies(tmp_path):
    torch.manual_seed(0)
    src = _authors_state(mdqe.build_model("tiny").state_dict())
    src["detr.transformer_dec.decoder.norm.weight"] = src["detr.transformer_dec.decoder_norm.weight"] * 2
    path = str(tmp_path / "a.pth")
    torch.save({"model": src}, path)
    dst = str(tmp_path / "o.safetensors")
    assert convert_main([path, dst, "--config", "tiny"]) == 0
    _, _, extra = load_checkpoint(dst)
    pair = {"detr.transformer_dec.decoder.norm.weight", "detr.transformer_dec.decoder_norm.weight"}
    assert len(extra["unmatched_source"]) == 1 and extra["unmatched_source"][0] in pair
    assert convert_main([path, dst, "--config", "tiny", "--strict"]) == 2
