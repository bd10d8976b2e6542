"""The echo held-out generator's truth is what the measurement method recovers from its masks.

`models/echo_lv/heldout_cines.py` is the yardstick for the echo LV model (issue 21; the
campaign is `models/echo_lv/evaluate.py --heldout 24`, figures in MODEL_CARD.md). Its analytic
volumes must agree with the pathway's own method of discs on its truth masks, or the campaign
would measure the generator, not the model.
"""

from __future__ import annotations

import pytest

from models.echo_lv.heldout_cines import make_heldout_cine
from pathways.heart_failure import assess_echo


@pytest.mark.parametrize("seed", [41000, 41001, 41002])
def test_method_of_discs_on_the_truth_masks_recovers_the_truth(seed):
    cine = make_heldout_cine(seed)
    assert cine.frames.shape == cine.lv_masks.shape and cine.frames.dtype.name == "uint8"
    a = assess_echo(cine.lv_masks, cine.cm_per_pixel)
    assert a.measurable, a.reason
    assert abs(a.ef_percent - cine.ef_percent) <= 1.5
    assert abs(a.edv_ml - cine.edv_ml) / cine.edv_ml <= 0.05
    x0, y0, x1, y1 = cine.region  # the cavity is inside the calibrated region the model is given
    assert not cine.lv_masks[:, :, :x0].any() and not cine.lv_masks[:, :, x1 + 1:].any()
