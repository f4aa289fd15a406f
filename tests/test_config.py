"""The config file: one table of options, every problem reported."""

import pytest

from segcard import config
from segcard.errors import ConfigError


def test_saved_config_loads_back(tmp_path):
    """What save writes, load reads, with defaults filled in."""
    path = tmp_path / "config.toml"

    config.save(path, {"user": "john", "domain": "john.example", "grace_days": 7})
    loaded = config.load(path)

    assert loaded["grace_days"] == 7
    assert loaded["template"] == "{user}-{label}-{token}@{domain}"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_all_problems_reported_together(tmp_path):
    """Several bad options give one error naming each."""
    path = tmp_path / "config.toml"
    path.write_text('grace_days = "x"\nbogus = 1\n[carddav]\nsync_interval = true\n')

    with pytest.raises(ConfigError) as caught:
        config.load(path)

    text = str(caught.value)
    assert "grace_days" in text and "bogus" in text and "carddav.sync_interval" in text


def test_missing_config_says_to_init(tmp_path):
    """No config file: the error says to run init."""
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "none.toml")

    assert "segcard init" in caught.value.hint


def test_secret_never_in_public_view(tmp_path):
    """Passwords are blanked in what is logged."""
    path = tmp_path / "c.toml"
    cfg = config.save(path, {"carddav.password": "hunter2", "user": "a"})

    assert "hunter2" not in str(cfg.public_view())


def test_password_command_first_line(tmp_path):
    """A password command's first output line is the password."""
    cfg = config.save(
        tmp_path / "c.toml",
        {"user": "a", "carddav.password_command": "printf 's3cret\\nx'"},
    )

    assert cfg.secret("carddav") == "s3cret"


def test_failing_password_command_is_a_config_error(tmp_path):
    """A password command that fails gives a clear error, not a traceback."""
    cfg = config.save(
        tmp_path / "c.toml", {"user": "a", "carddav.password_command": "false"}
    )

    with pytest.raises(ConfigError, match="carddav.password_command"):
        cfg.secret("carddav")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({}, "user"),
        ({"user": "a", "grace_days": -5}, "grace_days"),
        ({"user": "a", "identities": ["notanaddress"]}, "identities"),
        ({"user": "a", "upstream.url": "smtp.example:587"}, "upstream.url"),
        ({"user": "a", "carddav.url": "not a url"}, "carddav.url"),
        ({"user": "a", "embedded.port": 99999}, "embedded.port"),
        ({"user": "a", "data_dir": "relative/dir"}, "data_dir"),
        ({"user": "a", "carddav.sync_interval": 0}, "carddav.sync_interval"),
        ({"user": "a", "submission.listen": "127.0.0.1:1587"}, "identities"),
    ],
)
def test_bad_values_are_refused_naming_the_option(tmp_path, values, named):
    """Values that would misbehave later are refused when the config loads."""
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config.save(tmp_path / "c.toml", values)
