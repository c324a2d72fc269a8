"""AppTest: train a GAN and make a set from the Generate page, then train on it from the Train page."""

from __future__ import annotations

from engine import runs
from engine.synth import pipeline, sets
from tests.conftest import app_page, wait_for_jobs
from ui.jobs_panel import get_runner


def test_generate_page_trains_a_gan_makes_a_set_and_train_uses_it() -> None:
    at = app_page("generate")
    assert not at.exception
    owner = str(at.session_state["owner"])
    assert any("Train a generator first" in c.value for c in at.caption)
    at.number_input(key="gan_steps").set_value(12)
    at.number_input(key="gan_width").set_value(8)
    at.number_input(key="gan_batch").set_value(16)
    at.button(key="FormSubmitter:gan_form-Train generator").click().run()
    assert not at.exception and not at.error
    wait_for_jobs(owner)
    trained = [s for s in get_runner().list(owner=owner) if s.title.startswith("train cgan")]
    assert trained and trained[-1].status == "done", trained[-1].error
    at.run()
    assert any("Generator training losses" in str(c.proto.spec) for c in at.get("plotly_chart"))
    assert at.image, "the latest sample grid is shown"
    at.radio(key="gen_mode").set_value("N per class")
    at.number_input(key="gen_n").set_value(4)
    at.button(key="FormSubmitter:generate_form-Generate set").click().run()
    wait_for_jobs(owner)
    made = [s for s in get_runner().list(owner=owner) if s.title.startswith("generate")][-1]
    assert made.status == "done", made.error
    at.run()
    assert not at.exception
    info = sets.list_sets()[0]
    table = at.dataframe[0].value
    assert list(table["class"]) == list(info.class_names) and list(table["kept"]) == list(info.counts_kept)
    assert any("Stored set" in s.value for s in at.success)

    train = app_page("train")
    assert train.selectbox(key="mix_set").value == info.id  # the new set is offered for the synthetic mixes
    train.number_input[2].set_value(2)  # max epochs
    train.number_input(key="mix_extra").set_value(min(info.counts_kept) or 1)
    train.number_input[-1].set_value(1)  # seeds
    train.checkbox(key="mix_reweight").uncheck()
    train.button(key="FormSubmitter:train_form-Start").click().run()
    assert not train.exception and not train.error
    wait_for_jobs(str(train.session_state["owner"]))
    statuses = {r.config.mix.kind: r.status for r in runs.list_records()}
    if min(info.counts_kept):
        assert statuses == {"real": "done", "add": "done", "oversample": "done"}
    else:  # a class with no kept image: the add run fails with a message naming the class
        assert statuses["add"] == "failed"
    assert pipeline.list_generators()[0]["id"] == trained[-1].result
