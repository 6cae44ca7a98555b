"""Tests for geomax.data.classes.ClassTable."""
import numpy as np
import pytest

from geomax.data.classes import ClassTable
from geomax.errors import DataError


def _table():
    return ClassTable.from_lists(["water", "building", "road", "tree"], things=["building", "tree"],
                                 values=[3, 7, 9, 12])


def test_index_value_round_trip():
    t = _table()
    assert t.n_classes == 4
    assert t.value_lut().tolist() == [0, 3, 7, 9, 12]
    lut = t.index_lut()
    assert [lut[v] for v in (0, 3, 7, 9, 12)] == [0, 1, 2, 3, 4]
    assert lut[5] == -1
    assert t.is_thing_index().tolist() == [False, False, True, False, True]
    assert t.thing_values == [7, 12] and t.stuff_values == [3, 9]


def test_emd_round_trip_keeps_colours_and_things():
    t = _table()
    back = ClassTable.from_emd(t.to_emd())
    assert back == t
    assert ClassTable.from_dict(t.to_dict()) == t
    assert t.colors_array().shape == (5, 3) and np.all(t.colors_array()[0] == 0)


def test_bad_tables_raise_clear_errors():
    with pytest.raises(DataError, match="Value 0 is reserved"):
        ClassTable.from_lists(["a"], values=[0])
    with pytest.raises(DataError, match="Duplicate class Values"):
        ClassTable.from_lists(["a", "b"], values=[1, 1])
    with pytest.raises(DataError, match="not among the classes"):
        ClassTable.from_lists(["a"], things=["b"])
    with pytest.raises(DataError, match="no 'Classes'"):
        ClassTable.from_emd({})
