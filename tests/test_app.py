"""AppTest: the app shell and the Dataset page, run headless without a browser."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import class_files

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["dataset", "generate", "preprocess", "train", "compare", "explain"]


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def plotly_titles(at: AppTest) -> list[str]:
    import json

    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]


def test_dataset_page_opens_with_digits_loaded_and_charted() -> None:
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Dataset"
    assert "Training images per class" in plotly_titles(at)
    assert "built-in digits · 10 classes · 8px × 1ch" in at.sidebar.caption[0].value
    table = at.dataframe[0].value
    assert list(table["class"]) == [str(i) for i in range(10)] and table["train"].sum() == 1259


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
    at.button(key="clear_cache").click().run()
    assert not at.exception
    assert not build_dataset(DatasetConfig()).from_cache
