import numpy as np
import torch

from amgan_search.metrics.cam import cam_iou, iou
from amgan_search.schema import DEFAULT_SCHEMA


def test_iou_of_hand_made_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True
    assert iou(a, b) == 4 / 12
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0


class _GarmentOracle(torch.nn.Module):
    """A stand-in classifier whose CAM is whatever `cam_of` draws."""

    def __init__(self, cam_of):
        super().__init__()
        self.schema, self.config, self.cam_of = DEFAULT_SCHEMA, {"size": 64}, cam_of

    def cam(self, x, attribute, values):
        return self.cam_of(x, attribute)


def test_an_empty_cam_scores_zero():
    def empty(x, attribute):
        return torch.zeros(x.shape[0], 1, x.shape[2], x.shape[3])

    scores = cam_iou(_GarmentOracle(empty), n=4, batch_size=2)
    assert scores["color"]["mean_iou"] == 0.0 and scores["sleeve"]["mean_iou"] == 0.0


def test_cam_iou_reports_every_attribute_with_its_region():
    def everywhere(x, attribute):
        return torch.ones(x.shape[0], 1, x.shape[2], x.shape[3])

    scores = cam_iou(_GarmentOracle(everywhere), n=3, batch_size=3)
    assert scores["color"]["region"] == "garment" and scores["sleeve"]["region"] == "sleeves|arms"
    # The garment covers part of the frame: a CAM lighting everything scores its area fraction.
    assert 0.02 < scores["color"]["mean_iou"] < 0.6


def test_cam_sheet_draws_a_row_per_scene_and_a_column_per_attribute(tmp_path):
    from amgan_search.images import load_image
    from amgan_search.metrics.cam import cam_sheet

    def centre(x, attribute):
        cam = torch.zeros(x.shape[0], 1, x.shape[2], x.shape[3])
        cam[..., 16:48, 16:48] = 1
        return cam

    cam_sheet(_GarmentOracle(centre), tmp_path / "cams.png", n=3, tile=32)
    assert load_image(tmp_path / "cams.png").shape == (3 * 32, 3 * 32, 3)
