"""A tag field is one entry in the registry (tagger.fields) plus its policy and vocabulary in the config: a
field declared here, in the test, is read, decided, written, undone and faceted like genre and mood."""
from __future__ import annotations

import shutil
from dataclasses import replace

import mutagen
import pytest
from conftest import EXPORTER_DATA

from tagger import fields
from tagger.cli import main
from tagger.config import load_config
from tagger.errors import ConfigError
from tagger.fields import Field
from tagger.library.store import Store
from tagger.pipeline.scanner import scan
from tagger.serving.web.catalogue import Catalogue, facet_names
from tagger.tagging.plan import all_tags
from tagger.tagging.writer import read_fields

ORCHESTRA = EXPORTER_DATA / "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg"
STYLE = Field("style", "STYLE", ("genre",), correctable=True, facet=True, title="Style")
CONFIG = """
library: [{lib}]
database: {db}
models: [musicnn-msd]
write:
  fields:
    style: {{policy: fill, max_values: 1, min_score: 0.05, relative: 0.5, min_models: 1}}
vocabulary:
  style:
    Swing: [jazz]
"""


@pytest.fixture
def style():
    with fields.registered(STYLE):
        yield STYLE


def test_an_unregistered_field_is_refused_by_the_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(lib=tmp_path, db=tmp_path / "db"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "write.fields.style" in str(err.value)


def test_a_registered_field_is_read_decided_written_undone_and_faceted(style, tmp_path, msd_model, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    song = lib / "orchestra.ogg"
    shutil.copy(ORCHESTRA, song)
    original = song.read_bytes()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(lib=lib, db=tmp_path / "db"))
    cfg = replace(load_config(path), threads=2)
    assert cfg.fields["style"].rule == "mean"  # not exclusive: the rule follows the registry
    assert "STYLE" in all_tags()

    with Store(cfg.database, writer=True) as store:  # decided and written
        report = scan([lib], cfg, [msd_model], store)
        (rec,) = store.records()
    assert report.written == 1 and rec["decided"]["style"] == ["Swing"]
    assert mutagen.File(song)["STYLE"] == ["Swing"]  # a Vorbis comment of its own name
    assert "STYLE=Swing" in read_fields(song)["TAGGER_WRITTEN"]  # read back through the registry

    assert "style" in facet_names()  # faceted on the web page
    cat = Catalogue([{"id": 1, "path": str(song), "decided": rec["decided"], "user": {}, "locked": []}])
    assert cat.facets["style"].names == ["Swing"]

    assert main(["undo", str(song), "--config", str(path)]) == 0  # undone: the file's exact bytes come back
    assert song.read_bytes() == original
    with Store(cfg.database, writer=True) as store:
        assert scan([lib], cfg, [msd_model], store).written == 1

    assert main(["set", str(song), "--style", "Baroque", "--config", str(path)]) == 0  # a flag of its own
    assert mutagen.File(song)["STYLE"] == ["Baroque"] and "STYLE" in read_fields(song)["TAGGER_LOCKED"]
    assert main(["set", str(song), "--unlock", "style", "--config", str(path)]) == 0
    capsys.readouterr()

    assert main(["undo", str(song), "--config", str(path)]) == 0  # what the tool wrote goes; the user's stays
    assert mutagen.File(song)["STYLE"] == ["Baroque"] and not read_fields(song)["TAGGER_WRITTEN"]
    assert main(["set", str(song), "--clear", "style", "--config", str(path)]) == 0
    assert main(["set", str(song), "--unlock", "style", "--config", str(path)]) == 0
    assert main(["undo", str(song), "--config", str(path)]) == 0
    assert "STYLE" not in (mutagen.File(song).tags or {})


def test_the_registry_refuses_a_second_field_with_the_same_tag(style):
    with pytest.raises(ValueError, match="already registered"):
        fields.register(Field("style2", "STYLE", ("genre",)))
    assert "style" in fields.names() and "style2" not in fields.names()


def test_the_built_in_fields_drive_the_tag_names_and_the_commands():
    assert fields.tags() == {"genre": "GENRE", "mood": "MOOD", "descriptors": "TAGGER_DESCRIPTORS"}
    assert fields.correctable() == ("genre", "mood") and fields.tool_tags() == ("TAGGER_DESCRIPTORS",)
    assert fields.groups_of("descriptors") == ("instrument", "vocals", "era")


def test_every_scalar_default_has_a_setting_and_every_setting_a_default():
    """The settings table and the defaults file describe the same keys (tagger/config/schema.py)."""
    import yaml

    from tagger.config import DEFAULTS_FILE, schema

    raw = yaml.safe_load(DEFAULTS_FILE.read_text())
    structured = {"library", "extensions", "vocabulary", "write.fields"}

    def leaves(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            key = f"{prefix}{k}"
            if key in structured:
                continue
            out |= leaves(v, key + ".") if isinstance(v, dict) else {key}
        return out

    assert leaves(raw) == {s.key for s in schema.SETTINGS}
    schema.check_all(raw)  # and the defaults pass their own rules


@pytest.mark.parametrize("flag, value, key", [("--threads", "5000", "--threads"), ("--batch-size", "-1", "--batch-size"),
                                             ("--max-windows", "-3", "--max-windows")])
def test_flags_are_checked_by_the_rule_of_their_key(tmp_path, capsys, flag, value, key):
    assert main(["show", str(tmp_path / "x.ogg"), flag, value, "--database", str(tmp_path / "db")]) == 2
    assert key in capsys.readouterr().err


def test_a_reload_is_needed_exactly_when_a_model_setting_changes():
    from tagger.config import load_config, schema

    cfg = load_config(None)
    assert schema.needs_reload(cfg, replace(cfg, batch_size=8, settle_seconds=1.0)) == []
    assert schema.needs_reload(cfg, replace(cfg, precision="float")) == ["precision"]
    assert schema.needs_reload(cfg, replace(cfg, memory="lean", models_dir=cfg.models_dir / "x")) == ["models_dir", "memory"]


def test_a_commands_own_option_never_collides_with_a_setting_flag(tmp_path):
    """`eval --precision 0.9` is the calibration target; `--model-precision` the setting (a past collision)."""
    from tagger.cli import build_parser
    from tagger.cli.options import settings_from

    args = build_parser().parse_args(["eval", "--precision", "0.8", "--model-precision", "float",
                                      "--database", str(tmp_path / "db")])
    assert args.precision == 0.8 and settings_from(args).precision == "float"
