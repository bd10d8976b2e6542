"""Series geometry: real files written by pydicom, read back, checked as load_volume checks them."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from integrations.dicom.volume import NotARegularVolume, check_geometry


def _write(tmp_path, k, z, iop=(1, 0, 0, 0, 1, 0), x=0.0, rows=4, spacing=(0.7, 0.7)):
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.ImageOrientationPatient = list(iop)
    ds.ImagePositionPatient = [x, 0.0, z]
    ds.Rows, ds.Columns, ds.PixelSpacing = rows, 4, list(spacing)
    ds.save_as(tmp_path / f"{k}.dcm", enforce_file_format=True)
    return pydicom.dcmread(tmp_path / f"{k}.dcm")


def test_regular_series_gives_its_spacing(tmp_path):
    assert check_geometry([_write(tmp_path, k, z) for k, z in enumerate([0, 1, 2, 3, 4, 5])]) == pytest.approx(1.0)


@pytest.mark.parametrize("zs, reason", [
    ([0, 1, 2, 4, 5], "missing-slice"),
    ([0, 1, 2, 2, 3], "duplicate-slice"),
    ([0, 1, 2, 3.4, 4.4], "uneven-spacing"),
])
def test_positions_that_are_not_a_volume(tmp_path, zs, reason):
    with pytest.raises(NotARegularVolume) as err:
        check_geometry([_write(tmp_path, k, z) for k, z in enumerate(zs)])
    assert err.value.reason == reason


def test_gantry_tilt(tmp_path):
    with pytest.raises(NotARegularVolume) as err:
        check_geometry([_write(tmp_path, k, z, x=0.3 * k) for k, z in enumerate([0, 1, 2, 3])])
    assert err.value.reason == "gantry-tilt"


def test_mixed_orientation_and_size(tmp_path):
    hs = [_write(tmp_path, k, z) for k, z in enumerate([0, 1, 2])]
    with pytest.raises(NotARegularVolume) as err:
        check_geometry([*hs, _write(tmp_path, 3, 3, iop=(0, 1, 0, 1, 0, 0))])
    assert err.value.reason == "mixed-orientation"
    with pytest.raises(NotARegularVolume) as err:
        check_geometry([*hs, _write(tmp_path, 4, 3, rows=5)])
    assert err.value.reason == "mixed-size"
