"""slim.registry.Registry: register, get with did-you-mean, views with extra entries."""
import pytest

from slim.errors import ConfigError
from slim.registry import Registry


def make_table():
    table = Registry("pruning criterion", error=ConfigError)

    @table.register("l1_norm")
    def l1_norm():
        return "l1"

    @table.register()
    def fpgm():
        return "fpgm"
    return table


def test_register_and_get():
    table = make_table()
    assert table.get("l1_norm")() == "l1" and table.get("fpgm")() == "fpgm"
    assert table.names() == ["fpgm", "l1_norm"] and "fpgm" in table and len(table) == 2


def test_unknown_name_is_one_line_with_a_hint():
    with pytest.raises(ConfigError) as error:
        make_table().get("l1_nrom")
    assert str(error.value) == ("unknown pruning criterion 'l1_nrom' (did you mean 'l1_norm'?); "
                                "known: fpgm, l1_norm")


def test_registering_twice_is_an_error():
    table = make_table()
    with pytest.raises(ValueError, match="registered twice"):
        table.add("fpgm", object())


def test_view_with_extra_entries_leaves_the_table_unchanged():
    table = make_table()
    view = table.with_extra({"fpgm": "custom", "bn_scale": "bn"})
    assert view.get("fpgm") == "custom" and view.get("bn_scale") == "bn"
    assert view.get("l1_norm")() == "l1"
    assert table.get("fpgm")() == "fpgm" and "bn_scale" not in table
    assert view.names() == ["bn_scale", "fpgm", "l1_norm"]
