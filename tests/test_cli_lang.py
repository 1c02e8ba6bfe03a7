"""The language a person reads: --lang, then terminal.lang, then the locale; in Chinese
every line of the probe table and the diagnosis is Chinese, and the progress line names
the probes still running."""

import os
import re

import pytest

from agent import config
from agent.i18n import choose_lang, finding_detail, locale_lang, phrase, zh_messages
from agent.render import Progress
from agent.runner import run_probes, select
from probes import all_finding_ids
from probes.contract.records import Finding
from probes.emulators import SimulatedTerminal
from tests.conftest import run_cli

ZH_ENV = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "zh_CN.UTF-8"}
EN_ENV = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "en_US.UTF-8"}
# Identifiers (finding and cause ids, probe and scheme names, metric keys), paths, hosts,
# units, acronyms and metric values (an operator name) are not English prose; anything
# else of 3+ Latin letters is.
IDENTIFIER = re.compile(r"\[[^]]*\]|\b\w+(?:\.\w+)+\b|\S*/\S*|\w+=[^,\n]*")
NOT_PROSE = {"card_reader", "network", "power", "printer", "storage", "system", "modem", "terminal", "iso8583",
             "cup", "exception", "localhost", "ms", "mib", "dbm", "dle", "eot", "tls", "emmc", "rtc", "inode",
             "fsync", "wi", "fi", "usb", "sim", "mac", "pin", "ic", "app", "payment_app"}


def english_words(line: str) -> set[str]:
    words = set(re.findall(r"[A-Za-z_]{3,}", IDENTIFIER.sub(" ", line)))
    return {w for w in words if w.lower() not in NOT_PROSE}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_TW.Big5"}, "zh"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({}, "en"),
        ({"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),
        ({"LC_ALL": "", "LC_MESSAGES": "", "LANG": "zh_CN.GB18030"}, "zh"),
    ],
)
def test_locale_picks_the_language(env, expected):
    assert locale_lang(env) == expected


def test_lang_flag_beats_config_beats_locale():
    assert choose_lang("en", "zh", {"LANG": "zh_CN.UTF-8"}) == "en"
    assert choose_lang(None, "en", {"LANG": "zh_CN.UTF-8"}) == "en"
    assert choose_lang(None, "auto", {"LANG": "zh_CN.UTF-8"}) == "zh"
    assert choose_lang(None, "auto", {"LANG": "fr_FR.UTF-8"}) == "en"


def test_probe_follows_the_locale_unless_the_operator_file_says(tmp_path):
    zh = run_cli("probe", "--simulate", "healthy", "--only", "power", env=ZH_ENV)
    assert "检测项" in zh.stdout and "全部检测耗时" in zh.stdout
    en = run_cli("probe", "--simulate", "healthy", "--only", "power", env=EN_ENV)
    assert "probe" in en.stdout and "sweep" in en.stdout and "检测项" not in en.stdout
    operator = tmp_path / "posdiag.toml"
    operator.write_text('[terminal]\nlang = "en"\n')
    fixed = run_cli("probe", "--simulate", "healthy", "--only", "power", "--config", str(operator), env=ZH_ENV)
    assert "sweep" in fixed.stdout and "检测项" not in fixed.stdout
    flag = run_cli("probe", "--simulate", "healthy", "--only", "power", "--lang", "zh", "--config", str(operator), env=EN_ENV)
    assert "检测项" in flag.stdout


def chinese_lines_with_english(text: str) -> list[str]:
    return [line for line in text.splitlines() if english_words(line)]


def test_chinese_table_has_no_english_line(tmp_path):
    operator = tmp_path / "posdiag.toml"
    operator.write_text("[probes.system]\nenabled = false\n")
    faults = "printer.cover_open,storage.disk_full,network.dns_failed,power.battery_low,reader.slot_fault"
    proc = run_cli("probe", "--simulate", faults, "--config", str(operator), env=ZH_ENV)
    assert proc.returncode == 1, proc.stderr
    assert "配置中已停用" in proc.stdout  # the skip reason
    assert "空间已满" in proc.stdout and "打印机仓盖打开" in proc.stdout and "无法解析域名" in proc.stdout
    assert chinese_lines_with_english(proc.stdout) == []


def test_chinese_diagnosis_has_no_english_line():
    proc = run_cli("diagnose", "--code", "3000", "--simulate", "printer.paper_out,network.high_latency", env=ZH_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "打印机缺纸" in proc.stdout
    assert chinese_lines_with_english(proc.stdout) == []


def test_every_finding_id_has_chinese_wording():
    assert all_finding_ids() - {"probe.timeout", "probe.error"} <= set(zh_messages()["findings"])


def test_a_finding_whose_data_fit_no_template_shows_its_title_not_english():
    odd = Finding.fail("network.dns_failed", "cannot resolve x (acquirer)")  # no `host` field
    assert finding_detail(odd, "zh") == "域名解析失败"
    assert finding_detail(odd, "en") == "cannot resolve x (acquirer)"


def test_phrases_with_a_placeholder():
    assert phrase("payment app holds LCK..ttyS1", "zh") == "支付应用正在使用 LCK..ttyS1"
    assert phrase("payment app holds LCK..ttyS1", "en") == "payment app holds LCK..ttyS1"


def test_progress_line_names_the_probes_still_running():
    """A real pty: the progress line is written only to a terminal."""
    master, slave = os.openpty()
    try:
        with SimulatedTerminal.from_spec("healthy") as terminal, os.fdopen(slave, "w", closefd=False) as tty:
            cfg = config.load(None, terminal.overrides)
            names = select(cfg, None)
            progress = Progress(tty, names, "en")
            lines: list[tuple[str, str]] = []

            def note(result, done, total):
                progress(result, done, total)
                lines.append((result.name, os.read(master, 4096).decode()))

            run_probes(cfg, on_result=note)
    finally:
        os.close(master)
        os.close(slave)
    assert len(lines) == len(names)
    for i, (finished, text) in enumerate(lines[:-1]):
        shown = text.split("running: ", 1)[1]
        assert finished not in shown.split(", ")
        assert f"[{i + 1}/{len(names)}]" in text
        assert len(shown.split(", ")) == len(names) - i - 1
    assert lines[-1][1].rstrip().endswith("running:")


def test_progress_line_in_chinese():
    with open(os.devnull, "w") as sink:
        assert Progress(sink, ["network", "printer"], "zh").text(1, 3) == "[1/3] 检测中：network、printer"
