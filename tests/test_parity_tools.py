"""The parity harness without the authors' code (CI has none): CLI errors, the detectron2
stand-ins it installs, the model-stage size rule and error measure."""
import torch

from tools import authors_parity
from tools.parity import authors_env as E
from tools.parity.common import rel_err
from tools.parity.model import parse_size


def test_cli_bad_input(tmp_path, capsys):
    assert authors_parity.main(["--authors-repo", str(tmp_path)]) == 2
    assert "not a checkout of MinghanLi/MDQE_CVPR2023" in capsys.readouterr().err
    assert authors_parity.main(["--authors-repo", str(tmp_path), "--stages", "model,nope"]) == 2
    assert "unknown stage" in capsys.readouterr().err
    assert {"model", "converter", "tracker", "criterion"} <= set(authors_parity.STAGES)


def test_image_list_pads_to_multiple_of_32_like_detectron2():
    a, b = torch.ones(3, 360, 640), torch.ones(3, 350, 600) * 2
    il = E.ImageList.from_tensors([a, b], 32)
    assert il.tensor.shape == (2, 3, 384, 640) and il.image_sizes == [(360, 640), (350, 600)]
    assert il.tensor[0, :, 360:].abs().sum() == 0 and il.tensor[1, :, :, 600:].abs().sum() == 0
    assert torch.equal(il.tensor[1, :, :350, :600], b)


def test_instances_and_bitmasks():
    inst = E.Instances((4, 5), scores=torch.tensor([0.5, 0.2, 0.9]))
    inst.pred_masks = torch.zeros(3, 2, 4, 5)
    assert len(inst) == 3 and inst.has("scores") and inst.image_size == (4, 5)
    sub = inst[torch.tensor([2, 0])]
    assert torch.equal(sub.scores, torch.tensor([0.9, 0.5])) and len(inst[1]) == 1
    cat = E.Instances.cat([inst, sub])
    assert len(cat) == 5
    m = torch.zeros(2, 6, 7, dtype=torch.bool)
    m[0, 1:3, 2:6] = True
    boxes = E.BitMasks(m).get_bounding_boxes().tensor
    assert boxes.tolist() == [[2.0, 1.0, 6.0, 3.0], [0.0, 0.0, 0.0, 0.0]]


def test_uncertain_points_on_grid():
    u = torch.zeros(1, 1, 2, 4)
    u[0, 0, 1, 3] = 5.0
    idx, pts = E.get_uncertain_point_coords_on_grid(u, 1)
    assert idx.tolist() == [[7]] and torch.allclose(pts, torch.tensor([[[7 / 8, 3 / 4]]]))


def test_parse_size_and_rel_err():
    assert parse_size("360x640") == ((360, 640), (384, 640))
    assert parse_size("192x320") == ((192, 320), (192, 320))
    assert rel_err(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])) == 0.5
