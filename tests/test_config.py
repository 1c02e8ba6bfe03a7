import pytest

from agent import config
from probes.contract.errors import ConfigError
from tests.conftest import run_cli


def write(tmp_path, text):
    path = tmp_path / "posdiag.toml"
    path.write_text(text)
    return path


def test_packaged_default_is_valid_and_complete():
    loaded = config.load()
    assert loaded.section("runner").deadline_seconds > 0
    assert {"power", "storage", "network", "system"} <= set(loaded.probes)


def test_operator_file_overrides_key_by_key(tmp_path):
    path = write(tmp_path, "[probes.power]\nbattery_low_pct = 30\n")
    loaded = config.load(str(path))
    assert loaded.probes["power"].battery_low_pct == 30
    assert loaded.probes["power"].battery_critical_pct == config.load().probes["power"].battery_critical_pct
    assert loaded.source == str(path)


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[terminal]\nid = 'T-77'\n")
    monkeypatch.setenv("POSDIAG_CONFIG", str(path))
    assert config.load().section("terminal").id == "T-77"


def test_misspelled_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "[probes.power]\nbatery_low_pct = 30\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    message = str(err.value)
    assert str(path) in message
    assert "probes.power.batery_low_pct" in message
    assert "battery_low_pct" in message


def test_moved_fleet_clock_key_names_file_and_new_place(tmp_path):
    from remote.server.cli import server_settings

    path = write(tmp_path, "[server.fleet]\nmax_clock_ahead_seconds = 600\n")
    for load in (config.load, server_settings):
        with pytest.raises(ConfigError) as err:
            load(str(path))
        message = str(err.value)
        assert str(path) in message and "server.fleet.max_clock_ahead_seconds" in message
        assert "moved" in message and "[server] clock_ahead_seconds" in message
    moved = server_settings(str(write(tmp_path, "[server]\nclock_ahead_seconds = 600\n")))
    assert moved.clock_ahead_seconds == 600


def test_string_where_number_belongs(tmp_path):
    path = write(tmp_path, "[probes.power]\nbattery_low_pct = 'twenty'\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert "probes.power.battery_low_pct" in str(err.value)
    assert "expected an integer from 0 to 100" in str(err.value)
    assert "'twenty'" in str(err.value)


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "[runner]\ndeadline_seconds = 0\n")
    with pytest.raises(ConfigError, match=r"runner.deadline_seconds: expected a number from 0.1 to 600, got 0"):
        config.load(str(path))


def test_unknown_probe_section(tmp_path):
    path = write(tmp_path, "[probes.scanner]\nenabled = true\n")
    with pytest.raises(ConfigError, match="probes.scanner: unknown key"):
        config.load(str(path))


def test_bad_choice_and_bad_list_item(tmp_path):
    with pytest.raises(ConfigError, match="terminal.lang: expected one of auto, zh, en"):
        config.load(str(write(tmp_path, "[terminal]\nlang = 'fr'\n")))
    with pytest.raises(ConfigError, match=r"probes.storage.mounts\[1\]: expected a string"):
        config.load(str(write(tmp_path, "[probes.storage]\nmounts = ['/', 3]\n")))


def test_endpoint_list_items_are_checked(tmp_path):
    text = "[[probes.network.hosts]]\nname = 'acq'\nhost = 'h'\nport = 70000\n"
    with pytest.raises(ConfigError, match=r"probes.network.hosts\[0\].port: expected an integer from 1 to 65535"):
        config.load(str(write(tmp_path, text)))
    ok = config.load(str(write(tmp_path, "[[probes.network.hosts]]\nname = 'acq'\nhost = 'h'\nport = 443\n")))
    assert ok.probes["network"].hosts[0].tls is False


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(str(write(tmp_path, "[terminal\n")))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(str(tmp_path / "absent.toml"))


def test_dump_round_trips():
    import tomllib

    loaded = config.load()
    assert tomllib.loads(config.dump(loaded.data)) == loaded.data


def test_cli_config_check_exit_codes(tmp_path):
    bad = write(tmp_path, "[probes.storage]\nslow_write_ms = 'fast'\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "probes.storage.slow_write_ms" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text("[terminal]\nid = 'T-1'\n")
    result = run_cli("config", "check", str(good))
    assert result.returncode == 0, result.stderr


def test_cli_probe_with_bad_config_exits_2(tmp_path):
    bad = write(tmp_path, "[probes.power]\nbatery_low_pct = 30\n")
    result = run_cli("probe", "--config", str(bad), "--json")
    assert result.returncode == 2
    assert "probes.power.batery_low_pct" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_config_show_reflects_file(tmp_path):
    path = write(tmp_path, "[terminal]\nid = 'SHOWN-1'\n")
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 0
    assert 'id = "SHOWN-1"' in result.stdout


def test_terminal_id_must_be_safe_in_paths_and_urls(tmp_path):
    with pytest.raises(ConfigError, match="terminal.id: .*letters, digits"):
        config.load(str(write(tmp_path, "[terminal]\nid = 'shop/7'\n")))
    assert config.load(str(write(tmp_path, "[terminal]\nid = 'PAX-A920:0001'\n"))).section("terminal").id == "PAX-A920:0001"


def test_config_show_masks_the_upload_token(tmp_path):
    path = write(tmp_path, "[upload]\ntoken = 'pdt_supersecret123'\n")
    shown = run_cli("config", "show", "--config", str(path)).stdout
    assert "pdt_supersecret123" not in shown and 'token = "***"' in shown
    assert 'token = ""' in run_cli("config", "show").stdout


def test_config_show_output_passes_config_check():
    """The docs/install.md recipe: `config show > posdiag.toml` then check it. Only secrets are
    masked, and secrets are strings: password_hash_workers is a number and stays one."""
    shown = run_cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "password_hash_workers = 1" in shown.stdout and "password_hash_queue = 16" in shown.stdout
    checked = run_cli("config", "check", "-", input=shown.stdout)
    assert checked.returncode == 0 and checked.stdout.strip() == "<stdin>: ok", checked.stderr


def test_config_show_prints_the_scheme_order_the_country_chose(tmp_path):
    conf = tmp_path / "posdiag.toml"
    conf.write_text('[terminal]\ncountry = "CN"\n')
    shown = run_cli("config", "show", "--config", str(conf)).stdout
    assert 'scheme_order = ["cup", "iso8583", "terminal", "exception"]' in shown
    assert run_cli("config", "check", "-", input=shown).returncode == 0
