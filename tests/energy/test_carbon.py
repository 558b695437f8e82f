"""Carbon arithmetic against hand-computed values, and intensity sources."""

import pytest

from service.energy.carbon import CarbonModel, ConstantIntensity, Embodied, TimeSeriesIntensity, codecarbon_intensity


def test_operational_carbon_by_hand():
    model = CarbonModel(ConstantIntensity(100.0), pue=1.5)
    c = model.assess(energy_j=3.6e6, wall_s=0.0, device_time_s=0.0)  # 1 kWh
    assert c.operational_g == pytest.approx(150.0) and c.embodied_g == 0.0 and c.sci_g == pytest.approx(150.0)
    assert model.assess(360.0, 0.0, 0.0).operational_g == pytest.approx(0.015)  # 0.1 Wh x 100 g/kWh x 1.5


def test_embodied_is_amortised_by_device_time():
    # 1,500 kgCO2e over 4 years; a request that held the device for 2 s
    lifetime_s = 4 * 365.25 * 86400
    model = CarbonModel(ConstantIntensity(0.0), embodied=Embodied(1_500_000.0, lifetime_s))
    assert model.assess(0.0, 0.0, 2.0).embodied_g == pytest.approx(1_500_000.0 * 2.0 / lifetime_s)
    assert model.assess(0.0, 0.0, 2.0).embodied_g == pytest.approx(0.023766, rel=1e-4)


def test_time_series_is_step_wise(tmp_path):
    path = tmp_path / "grid.csv"
    path.write_text("timestamp,g_per_kwh\n2026-01-01T01:00:00+00:00,300\n2026-01-01T00:00:00+00:00,100\n"
                    "# comment\n1767232800,50\n")
    series = TimeSeriesIntensity.from_csv(path)
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    assert series.intensity_g_per_kwh(t0 - 10) == 100  # before the first row: the first value
    assert series.intensity_g_per_kwh(t0 + 1800) == 100
    assert series.intensity_g_per_kwh(t0 + 3600) == 300
    assert series.intensity_g_per_kwh(t0 + 7200) == 50  # Unix seconds and ISO 8601 mix


@pytest.mark.parametrize("body, message", [
    ("timestamp,g\n2026-01-01T00:00:00,abc\n", ":2:"),
    ("2026-13-01T00:00:00,100\n", ":1:"),
    ("1767225600,-5\n", "within"),
    ("timestamp,g\n", "empty"),
    ("1767225600,5\n1767225600,6\n", "two values"),
])
def test_time_series_errors_name_the_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        TimeSeriesIntensity.from_csv(path)


def test_codecarbon_country_and_region_data_offline():
    fra = codecarbon_intensity("FRA")
    assert 10 < fra.g_per_kwh < 200 and "FRA" in fra.description
    oregon = codecarbon_intensity("usa", "Oregon")
    assert 50 < oregon.g_per_kwh < 400


def test_unknown_places_are_errors_not_a_silent_world_average():
    with pytest.raises(ValueError, match="unknown country_iso_code"):
        codecarbon_intensity("XXX")
    with pytest.raises(ValueError, match="unknown region"):
        codecarbon_intensity("USA", "atlantis")


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        ConstantIntensity(-1.0)
    with pytest.raises(ValueError):
        CarbonModel(ConstantIntensity(1.0), pue=0.9)
    with pytest.raises(ValueError):
        Embodied(1.0, 0.0)
