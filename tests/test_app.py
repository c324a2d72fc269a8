"""AppTest: the app shell and the Dataset page, run headless without a browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.conftest import class_files
from ui.figures import TILE, grid_canvas, readable, split_grid

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["dataset", "generate", "preprocess", "train", "compare", "explain"]


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def plotly_titles(at: AppTest) -> list[str]:
    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]


def test_dataset_page_opens_with_digits_loaded_and_charted() -> None:
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Dataset"
    assert "Training images per class" in plotly_titles(at)
    assert "built-in digits · 10 classes · 8px × 1ch" in at.sidebar.caption[0].value
    table = at.dataframe[0].value
    assert list(table["class"]) == [str(i) for i in range(10)] and table["train"].sum() == 1259
    grid = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "one row per class" in str(c.proto.spec))
    assert grid["layout"]["yaxis"]["ticktext"] == [str(i) for i in range(10)]  # every row named by its class
    assert any("were 8 × 8 px" in c.value for c in at.caption)  # one size for all: a sentence, not a lone bar


def test_sample_grids_have_white_gaps_between_tiles_and_rows() -> None:
    tiles = [[np.full((4, 4, 3), 10 * (3 * r + c), np.uint8) for c in range(3)] for r in range(2)]
    canvas = grid_canvas(tiles, gap=2)
    assert canvas.shape == (2 * 4 + 2, 3 * 4 + 2 * 2, 3)
    assert (canvas[4:6] == 255).all() and (canvas[:, 4:6] == 255).all()  # the gaps
    assert (canvas[6:10, 12:16] == 50).all()  # row 2, column 3 in its place
    rows = split_grid(np.concatenate([np.concatenate(r, axis=1) for r in tiles], axis=0), columns=3)
    assert len(rows) == 2 and all(len(r) == 3 for r in rows) and rows[1][2].shape == (TILE, TILE, 3)


def test_numbers_are_rounded_to_three_significant_digits() -> None:
    assert readable(69797.9731) == 69800.0 and readable(0.012345) == 0.0123 and readable(0.0) == 0.0
    assert readable(float("nan")) != readable(float("nan"))  # nan passes through


def test_navigation_lists_the_six_pages_in_order() -> None:
    source = (ROOT / "app.py").read_text()
    positions = [source.index(f'"app_pages/{p}.py"') for p in PAGES]
    assert positions == sorted(positions)
    for page in PAGES:
        assert (ROOT / "app_pages" / f"{page}.py").is_file()
    assert not (ROOT / "pages").exists()  # a pages/ folder switches Streamlit to its legacy page mode


def test_step_imbalance_applies_to_training_counts() -> None:
    at = app().run()
    at.selectbox(key="im_kind").set_value("step").run()
    at.multiselect(key="im_min").set_value(["0", "1", "2"])
    at.slider(key="im_keep").set_value(10)
    at.button(key="im_apply").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value.set_index("class")
    assert list(table.loc[["0", "1", "2"], "train"]) == [12, 13, 12]  # 10% of 124, 128, 124
    assert table.loc["5", "train"] == table.loc["5", "train (before)"]
    # AppTest drops sidebar elements on a second run under st.navigation; the page caption says the same.
    assert any("step imbalance" in c.value for c in at.caption)


def test_uploaded_zip_loads_and_reports_skipped_files(make_zip) -> None:  # type: ignore[no-untyped-def]
    zip_path = make_zip(class_files({"cat": 8, "dog": 9}) | {"cat/readme.txt": b"x", "dog/bad.png": b"bad"})
    at = app().run()
    at.radio(key="ds_kind").set_value("zip").run()
    at.file_uploader(key="ds_zip").set_value(("pets.zip", zip_path.read_bytes(), "application/zip"))
    at.button(key="ds_load").click().run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["class"]) == ["cat", "dog"]
    assert any("2 skipped" in c.value for c in at.caption)
    assert any("1 not an image" in e.label and "1 corrupt or unreadable image" in e.label for e in at.expander)


def test_bad_folder_shows_the_error_and_keeps_the_current_dataset(tmp_path: Path) -> None:
    at = app().run()
    at.radio(key="ds_kind").set_value("folder").run()
    at.text_input(key="ds_path").set_value(str(tmp_path / "missing"))
    at.button(key="ds_load").click().run()
    assert not at.exception
    assert "is not a folder; expected a folder of class folders" in at.error[0].value
    assert list(at.dataframe[0].value["class"]) == [str(i) for i in range(10)]  # digits still there


def test_zip_load_without_an_upload_says_what_is_missing() -> None:
    at = app().run()
    at.radio(key="ds_kind").set_value("zip").run()
    at.button(key="ds_load").click().run()
    assert "no .zip was uploaded" in at.error[0].value


def test_the_decode_cache_can_be_cleared_from_the_page() -> None:
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset

    at = app().run()
    assert build_dataset(DatasetConfig()).from_cache  # the page's load filled the cache
    assert "clear_cache" not in [b.key for b in at.button]  # closed: the panel has not run
    at.session_state["cleanup_open"] = True  # the clean-up panel runs only while it is open
    at.run()
    at.button(key="clear_cache").click().run()
    assert not at.exception
    assert not build_dataset(DatasetConfig()).from_cache


def test_a_new_session_finds_the_users_dataset_and_kept_settings_again() -> None:
    at = app().run()
    at.selectbox(key="im_kind").set_value("step").run()
    at.multiselect(key="im_min").set_value(["0", "1"])
    at.slider(key="im_keep").set_value(10)
    at.button(key="im_apply").click().run()
    assert not at.exception and not at.error
    at.switch_page("app_pages/generate.py").run()
    at.radio(key="gen_family").set_value("Small diffusion model").run()
    # a reload, a second tab or a server restart: a new session of the same (local) user
    again = app().run()
    assert any("step imbalance" in c.value for c in again.caption)
    again.switch_page("app_pages/generate.py").run()
    assert again.radio(key="gen_family").value == "Small diffusion model"
