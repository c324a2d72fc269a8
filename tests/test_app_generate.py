"""AppTest: train a GAN and make a set from the Generate page, then train on it from the Train page."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import runs
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.jobs import Cancelled, format_duration
from engine.synth import gan, generators, make_sets, sd_requests, sets
from engine.synth import stable_diffusion as sd
from tests.conftest import app_page, store_images_as_set, wait_for_jobs
from ui.jobs_panel import get_runner
from ui.sd_views import OTHER


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
    assert any("Samples at step" in str(c.proto.spec) for c in at.get("plotly_chart")), "the latest sample grid"
    at.radio(key="gen_mode").set_value("N per class")
    at.number_input(key="gen_n").set_value(4)
    at.button(key="FormSubmitter:generate_form-Generate set").click().run()
    wait_for_jobs(owner)
    made = [s for s in get_runner().list(owner=owner) if s.title.startswith("generate")][-1]
    assert made.status == "done", made.error
    at.run()
    assert not at.exception
    info = sets.list_sets()[0]
    table = next(d.value for d in at.dataframe if "generated" in d.value.columns)
    assert list(table["class"]) == list(info.class_names) and list(table["kept"]) == list(info.counts_kept)
    assert any("Stored set" in s.value for s in at.success)

    train = app_page("train")
    assert train.selectbox(key="mix_set").value == info.id  # the new set is offered for the synthetic mixes
    train.number_input(key="train_epochs").set_value(2)
    train.number_input(key="mix_extra").set_value(min(info.counts_kept) or 1)
    train.number_input(key="train_seeds").set_value(1)
    train.checkbox(key="mix_reweight").uncheck()
    train.button(key="FormSubmitter:train_form-Start").click().run()
    assert not train.exception and not train.error
    wait_for_jobs(str(train.session_state["owner"]))
    statuses = {r.config.mix.kind: r.status for r in runs.list_records()}
    assert statuses == {"real": "done", "add": "done", "oversample": "done"}  # a class with no kept image gets none
    assert generators.list_generators()[0]["id"] == trained[-1].result


def test_generate_page_trains_the_small_diffusion_model_and_makes_a_set() -> None:
    at = app_page("generate")
    owner = str(at.session_state["owner"])
    at.radio(key="gen_family").set_value("Small diffusion model").run()
    at.number_input(key="ddpm_steps").set_value(4)
    at.number_input(key="ddpm_width").set_value(8)
    at.number_input(key="ddpm_batch").set_value(8)
    at.button(key="FormSubmitter:ddpm_form-Train diffusion model").click().run()
    assert not at.exception and not at.error
    wait_for_jobs(owner)
    trained = [s for s in get_runner().list(owner=owner) if s.title.startswith("train ddpm")][-1]
    assert trained.status == "done", trained.error
    at.run()
    assert any("Generator training losses" in str(c.proto.spec) for c in at.get("plotly_chart"))
    at.radio(key="gen_mode").set_value("N per class")
    at.number_input(key="gen_n").set_value(2)
    at.number_input(key="gen_ddim_steps").set_value(3)
    at.slider(key="gen_threshold").set_value(0.0)
    at.button(key="FormSubmitter:generate_form-Generate set").click().run()
    wait_for_jobs(owner)
    made = [s for s in get_runner().list(owner=owner) if s.title.startswith("generate")][-1]
    assert made.status == "done", made.error
    info = sets.list_sets()[0]
    assert info.config["kind"] == "ddpm" and sum(info.counts_total) >= 2 * len(info.class_names)


def test_generate_page_previews_and_makes_a_stable_diffusion_set(
    tiny_sd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sd, "_seconds_per_image", {})  # no rate measured yet by earlier tests
    at = app_page("generate")
    owner = str(at.session_state["owner"])
    at.radio(key="gen_family").set_value("Stable Diffusion").run()
    assert at.number_input(key="sd_steps").value == sd.PRESETS["stabilityai/sd-turbo"]["steps"]
    at.selectbox(key="sd_model_choice").set_value("stable-diffusion-v1-5/stable-diffusion-v1-5").run()
    assert at.number_input(key="sd_steps").value == 25 and at.number_input(key="sd_guidance").value == 7.5
    at.selectbox(key="sd_model_choice").set_value(OTHER).run()
    at.button(key="sd_demo").click().run()  # builds the tiny offline pipeline into the workspace
    assert not at.exception and at.text_input(key="sd_model_other").value.endswith("pipelines/tiny-sd")
    at.text_input(key="sd_model_other").set_value(str(tiny_sd))
    at.number_input(key="sd_steps").set_value(2)
    at.number_input(key="sd_size").set_value(32)
    at.multiselect(key="sd_classes").set_value(["0", "1"])
    at.number_input(key="sd_n").set_value(3).run()
    assert not at.exception and not at.error
    at.switch_page("app_pages/train.py").run()
    at.switch_page("app_pages/generate.py").run()  # the settings survive a visit to another page
    assert at.radio(key="gen_family").value == "Stable Diffusion" and at.text_input(key="sd_model_other").value == str(
        tiny_sd
    )
    assert at.number_input(key="sd_steps").value == 2 and at.number_input(key="sd_size").value == 32
    assert at.multiselect(key="sd_classes").value == ["0", "1"] and at.number_input(key="sd_n").value == 3
    assert any("run a preview to measure" in i.value for i in at.info)
    at.button(key="sd_preview").click().run()
    wait_for_jobs(owner)
    preview = [s for s in get_runner().list(owner=owner) if "preview" in s.title][-1]
    assert preview.status == "done", preview.error
    at.run()
    assert ["0", "1"] in [[img.caption for img in i.proto.imgs] for i in at.image]
    assert any("min on this server" in i.value for i in at.info)  # the preview measured the rate
    at.button(key="sd_generate").click().run()
    wait_for_jobs(owner)
    made = [s for s in get_runner().list(owner=owner) if s.title.startswith("Stable Diffusion text2img")][-1]
    assert made.status == "done", made.error
    at.run()
    info = sets.list_sets()[0]
    assert info.counts_kept[:2] == (3, 3)
    tables = [d.value for d in at.dataframe]
    counts = next(t for t in tables if "generated" in t.columns)
    assert list(counts["kept"])[:2] == [3, 3]
    gallery = next(t for t in tables if "prompt" in t.columns)
    assert all("a " in p and " 0" in p for p in gallery["prompt"])  # the gallery shows each image's prompt

    train = app_page("train")  # a set for two classes feeds "add" for those two; too few images: said, no dead end
    assert any("fewer images than 'add fill' asks for class '0': 3 of" in i.value for i in train.info)
    train.number_input(key="train_epochs").set_value(2)
    train.number_input(key="train_seeds").set_value(1)
    train.checkbox(key="mix_reweight").uncheck()
    train.button(key="FormSubmitter:train_form-Start").click().run()
    assert not train.exception and not train.error
    wait_for_jobs(str(train.session_state["owner"]))
    done = {r.config.mix.label: r for r in runs.list_records()}
    assert {r.status for r in done.values()} == {"done"}, [r.error for r in done.values()]
    # class '1' is the largest digits class: fill asks nothing of it; class '0' asks 4 and gets the set's 3
    assert done["add fill"].synthetic_counts == (3, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert done["add fill"].short == ("'0': 3 of 4",)
    real = np.array(done["real"].real_counts)
    assert list(np.array(done["oversample fill"].real_counts) - real) == [3, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_an_interrupted_stable_diffusion_request_resumes_from_the_page(tiny_sd: Path) -> None:
    digits = build_dataset(DatasetConfig())
    cfg = sd.SDConfig(model=str(tiny_sd), steps=2, size=32, per_class=4, classes=("0",), batch_size=2)
    key = sd_requests.request_key(cfg, digits)
    folder = sd_requests.partial_folder(key)
    with pytest.raises(Cancelled, match="stopped after"):  # interrupted once 2 images are on disk
        make_sets.make_sd_set(cfg, digits, should_stop=lambda: len(sd_requests.read_partial(folder)) >= 2)
    at = app_page("generate")
    owner = str(at.session_state["owner"])
    at.radio(key="gen_family").set_value("Stable Diffusion").run()
    assert any("2 images written" in c.value for c in at.caption)
    gate = threading.Event()  # while a job works on the request, neither button may touch its files
    get_runner().submit("holder", lambda ctx: gate.wait(60), owner="someone else", tag=key, heavy=False)
    at.run()
    assert at.button(key=f"discard-{key}").disabled and at.button(key=f"resume-{key}").disabled
    gate.set()
    wait_for_jobs("someone else")
    at.run()
    at.button(key=f"resume-{key}").click().run()
    assert not at.exception
    wait_for_jobs(owner)
    done = [s for s in get_runner().list(owner=owner) if s.title.startswith("Stable Diffusion")][-1]
    assert done.status == "done", done.error
    assert sets.list_sets()[0].counts_kept[0] == 4 and sd_requests.partial_requests() == []


def test_stable_diffusion_errors_are_one_clear_line_on_the_page(tiny_sd: Path) -> None:
    at = app_page("generate")
    owner = str(at.session_state["owner"])
    at.radio(key="gen_family").set_value("Stable Diffusion").run()
    at.text_area(key="sd_templates").set_value("a photo without the placeholder").run()
    assert any("templates=" in e.value and "{class}" in e.value for e in at.error)
    at.text_area(key="sd_templates").set_value("a photo of a {class}")
    at.selectbox(key="sd_model_choice").set_value("stabilityai/sd-turbo").run()
    at.button(key="sd_generate").click().run()
    wait_for_jobs(owner)
    at.run()
    failed = [s for s in get_runner().list(owner=owner) if s.status == "failed"][-1]
    assert "stabilityai/sd-turbo is not available on this machine" in failed.error
    assert not at.exception


def test_the_set_browser_keeps_its_choice_when_counts_change_and_deletes_only_the_set_shown() -> None:
    digits = build_dataset(DatasetConfig())
    made = []
    for name in ("old", "new"):
        made.append(store_images_as_set(digits, digits.train.images[:3].numpy(), [0, 1, 2], name=name, score=0.99))
    at = app_page("generate")
    at.selectbox(key="browse_set").set_value(made[0]).run()
    at.checkbox(key=f"confirm_delete-{made[0]}").check().run()
    sets.set_kept(made[0], [sets.load_manifest(made[0])[0].file], False)  # a save, here or by another user
    at.run()
    assert at.selectbox(key="browse_set").value == made[0] and not at.exception
    at.button(key="delete_set").click().run()
    assert [s.id for s in sets.list_sets()] == [made[1]]
    assert not at.checkbox(key=f"confirm_delete-{made[1]}").value  # the next set shown is not armed for deletion


def test_presets_show_their_time_here_and_the_advanced_settings_explain_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(generators, "seconds_per_step", lambda cfg, dataset, steps=3: 0.04)
    at = app_page("generate")
    assert not at.exception
    preset = at.radio(key="gan_preset")
    assert preset.value == gan.DEFAULT_PRESET
    quick = gan.PRESET_VALUES["cgan"]["quick"]["steps"]
    assert preset.options[0] == f"Quick · {quick:,} steps · about {format_duration(quick * 0.04 * 1.05)} here"
    labels = {w.label for w in at.number_input}
    assert {"Steps", "Width", "Batch size"} <= labels and "Gradient penalty λ" not in labels  # cgan has no λ
    explained = [
        *at.number_input,
        *at.checkbox,
        *at.multiselect,
        at.radio(key="gan_preset"),
        at.selectbox(key="gan_kind"),
    ]
    gan_form = [w for w in explained if w.label in labels | {"Preset", "Generator", "DiffAugment on D's inputs"}]
    assert all(w.help for w in gan_form), [w.label for w in gan_form if not w.help]
    assert all(w.help for w in at.checkbox if w.label in ("EMA of G weights (0.999)", "Spectral norm in D"))
    at.selectbox(key="gan_kind").set_value("wgan-gp").run()
    assert "Gradient penalty λ" in {w.label for w in at.number_input} and not at.exception
    wgan_quick = gan.PRESET_VALUES["wgan-gp"]["quick"]["steps"]
    assert at.radio(key="gan_preset").options[0].startswith(f"Quick · {wgan_quick:,} steps")


def test_stop_and_keep_and_resume_from_the_page() -> None:
    at = app_page("generate")
    owner = str(at.session_state["owner"])
    at.number_input(key="gan_steps").set_value(100_000)
    at.number_input(key="gan_width").set_value(8)
    at.number_input(key="gan_batch").set_value(16)
    at.button(key="FormSubmitter:gan_form-Train generator").click().run()
    job = [s for s in get_runner().list(owner=owner) if s.title.startswith("train cgan")][-1]
    deadline = time.monotonic() + 60
    while get_runner().snapshot(job.id).progress < 5 / 100_000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    at.run()
    assert at.button(key=f"cancel-{job.id}") and not at.exception
    at.button(key=f"keep-{job.id}").click().run()
    wait_for_jobs(owner)
    snap = get_runner().snapshot(job.id)
    assert snap.status == "stopped", snap.error
    at.run()
    assert any("Stopped and kept" in i.value for i in at.info)
    origin = generators.load_origin(str(snap.result))
    assert origin is not None and generators.is_stopped(origin)
    assert any(f"stopped at step {origin['steps_done']:,} of 100,000" in m.value for m in at.markdown)
    at.button(key=f"resume-gen-{snap.result}").click().run()
    resumed = [s for s in get_runner().list(owner=owner) if s.title.startswith("resume cgan")]
    assert resumed and resumed[-1].tag == snap.result
    at.run()
    assert at.button(key=f"resume-gen-{snap.result}").disabled  # no second job on one generator
    get_runner().cancel(resumed[-1].id, owner=owner)
    wait_for_jobs(owner)
    assert generators.is_stopped(generators.load_origin(str(snap.result)))  # type: ignore[arg-type]
