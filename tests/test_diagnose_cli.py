"""`posdiag diagnose`, `codes` and `demo` end to end on the simulated terminal, and the
receipt summary on the printer emulator's pty."""

import json
import time

import pytest

from agent import config
from agent.diagnosis import diagnose
from agent.receipt import FEED_AND_CUT, print_summary, qr_code
from probes.emulators.printer import PrinterEmulator, PrinterState
from tests.conftest import run_cli

BUNDLE_ID = "123e4567-e89b-12d3-a456-426614174000"


def diagnose_json(*args: str) -> dict:
    proc = run_cli("diagnose", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_03_on_a_healthy_terminal_is_an_invalid_merchant():
    doc = diagnose_json("--code", "03", "--simulate", "healthy")
    assert set(doc) == {"error", "probes", "sweep", "causes", "other_findings", "dispatch", "fleet", "learned"}
    assert doc["error"] == {
        "code": "03",
        "scheme": "iso8583",
        "known": True,
        "meaning": {"zh": "无效商户", "en": "invalid merchant"},
        "host_answer": True,
        "asked": None,
        "given": None,
        "also_in": [],
    }
    top = doc["causes"][0]
    assert set(top) == {"id", "category", "title", "confidence", "evidence_for", "evidence_against", "actions"}
    assert top["category"] == "merchant"
    assert set(top["actions"]) == {"merchant", "technician", "support"}
    assert {p["name"] for p in doc["probes"]} >= {"printer", "network", "card_reader"}
    assert doc["dispatch"]["verdict"] == "remote"
    assert sum(c["confidence"] for c in doc["causes"]) == pytest.approx(1.0, abs=1e-3)


def test_3000_with_paper_out_is_the_printer():
    doc = diagnose_json("--code", "3000", "--simulate", "printer.paper_out")
    assert doc["causes"][0]["category"] == "printer"
    assert doc["dispatch"]["verdict"] == "merchant"


def test_communication_error_with_dns_failure_is_the_network():
    doc = diagnose_json("--code", "CommunicationError", "--simulate", "network.dns_failed")
    top = doc["causes"][0]
    assert top["category"] == "network"
    assert "network.dns_failed" in [e["finding"] for e in top["evidence_for"]]


def test_51_stays_a_card_matter_with_the_link_down():
    doc = diagnose_json("--code", "51", "--simulate", "network.link_down")
    assert doc["causes"][0]["category"] == "card"
    assert "network.link_down" in [f["id"] for f in doc["other_findings"]]


def test_51_on_a_healthy_terminal_sends_no_one():
    doc = diagnose_json("--code", "51", "--simulate", "healthy")
    assert doc["dispatch"]["verdict"] == "none"
    assert doc["other_findings"] == []


def test_an_unknown_code_is_diagnosed_from_the_findings():
    doc = diagnose_json("--code", "XQ7", "--simulate", "reader.tamper")
    assert doc["error"] == {
        "code": "XQ7", "scheme": None, "known": False, "meaning": None, "host_answer": None, "asked": None,
        "given": None, "also_in": [],
    }  # fmt: skip
    assert doc["causes"][0]["category"] == "reader"


def test_an_explicit_scheme_that_does_not_know_the_code_says_so_and_names_who_does():
    doc = diagnose_json("--code", "E3", "--scheme", "iso8583", "--simulate", "healthy")
    assert doc["error"]["known"] is False
    assert doc["error"]["asked"] == {"scheme": "iso8583", "strict": True, "known_in": ["terminal"]}
    proc = run_cli("diagnose", "--code", "E3", "--scheme", "iso8583", "--simulate", "healthy", "--lang", "en")
    assert "Error E3: not in scheme iso8583 (--scheme)" in proc.stdout
    assert "known in: terminal" in proc.stdout


def test_readable_output_in_english_for_the_merchant():
    proc = run_cli("diagnose", "--code", "51", "--simulate", "healthy", "--lang", "en", "--role", "merchant")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Error 51 (iso8583): insufficient funds" in out
    assert "Ask the cardholder to confirm the balance" in out
    assert "Dispatch: none" in out


def test_readable_output_in_chinese_shows_other_findings():
    proc = run_cli("diagnose", "--code", "51", "--simulate", "network.link_down", "--lang", "zh")
    assert proc.returncode == 0, proc.stderr
    assert "余额不足" in proc.stdout and "其他发现" in proc.stdout and "网络连接断开" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [("--code", "51", "--scheme", "visa"), ("--code", "51", "--role", "boss"), ("--code", " ")],
)
def test_usage_errors_exit_2(args):
    proc = run_cli("diagnose", *args, "--simulate", "healthy")
    assert proc.returncode == 2
    assert proc.stdout == ""


def test_print_on_a_faulty_printer_says_so_on_screen():
    proc = run_cli("diagnose", "--code", "3000", "--simulate", "printer.paper_out", "--print", "--lang", "en")
    assert proc.returncode == 0
    assert "summary not printed: the printer has a fault: paper out" in proc.stderr


def test_codes_show_and_search():
    show = run_cli("codes", "show", "a0", "--lang", "en")
    assert show.returncode == 0 and "A0 (cup): MAC check failed" in show.stdout
    both = json.loads(run_cli("codes", "show", "12", "--json").stdout)
    assert [c["scheme"] for c in both] == ["iso8583", "cup"]
    found = json.loads(run_cli("codes", "search", "余额", "--json").stdout)
    assert ("iso8583", "51") in {(c["scheme"], c["code"]) for c in found}
    assert run_cli("codes", "show", "nope").returncode == 1
    assert run_cli("codes", "show", "51", "--scheme", "visa").returncode == 2


def test_codes_show_finds_an_operator_vendor_table(tmp_path):
    table = tmp_path / "vendor.toml"
    table.write_text(
        'scheme = "acme"\n[codes.P9]\nmeaning = { zh = "打印机卡纸", en = "printer jammed" }\n'
        'host_answer = false\ncauses = { "printer.mechanism_fault" = 1.0 }\n',
        encoding="utf-8",
    )
    conf = tmp_path / "posdiag.toml"
    conf.write_text(f'[knowledge]\nextra_paths = ["{table}"]\nscheme_order = ["iso8583", "acme"]\n', encoding="utf-8")
    proc = run_cli("codes", "show", "P9", "--config", str(conf), "--lang", "en")
    assert proc.returncode == 0 and "printer jammed" in proc.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[knowledge]\nextra_paths = ["{tmp_path / "none.toml"}"]\n', encoding="utf-8")
    proc = run_cli("codes", "show", "P9", "--config", str(broken))
    assert proc.returncode == 2 and "none.toml" in proc.stderr


def test_demo_diagnoses_a_simulated_fault():
    proc = run_cli("demo", "--lang", "en", input="")  # no terminal on either side: it stops at once
    assert proc.returncode == 0, proc.stderr
    assert "Error 3000 (terminal)" in proc.stdout and "printer.paper_out" in proc.stdout


# --- the receipt, on the printer emulator's pty -----------------------------------------


def printer_config(device: PrinterEmulator):
    return config.load(None, {"probes": {"printer": {"port": device.path, "transport": "serial"}}})


def wait_for(device: PrinterEmulator, tail: bytes, timeout: float = 3.0) -> bytes:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not bytes(device.printed).endswith(tail):
        time.sleep(0.01)
    return bytes(device.printed)


def test_print_sends_the_summary_and_a_qr_code_to_a_healthy_printer():
    with PrinterEmulator() as device:
        cfg = printer_config(device)
        diagnosis = diagnose(cfg, "51", only=["printer"])
        message = print_summary(cfg, diagnosis, "en", "merchant", BUNDLE_ID)
        printed = wait_for(device, FEED_AND_CUT)
    assert message == f"summary printed on {device.path}"
    assert b"Code 51: insufficient funds" in printed
    assert b"Ask the cardholder" in printed
    assert qr_code(BUNDLE_ID.encode()) in printed
    assert printed.endswith(FEED_AND_CUT)


def test_print_in_chinese_uses_gb18030():
    with PrinterEmulator() as device:
        cfg = printer_config(device)
        diagnosis = diagnose(cfg, "A0", only=["printer"])
        print_summary(cfg, diagnosis, "zh", "technician")
        printed = wait_for(device, FEED_AND_CUT)
    assert b"\x1c&" in printed
    assert "MAC 校验错".encode("gb18030") in printed
    assert b"\x1d(k" not in printed  # no bundle id, no QR


def test_print_refuses_a_printer_out_of_paper():
    with PrinterEmulator(PrinterState(paper="out")) as device:
        cfg = printer_config(device)
        diagnosis = diagnose(cfg, "3000", only=["printer"])
        message = print_summary(cfg, diagnosis, "en", "technician", BUNDLE_ID)
        time.sleep(0.1)
        printed = bytes(device.printed)
    assert message.startswith("summary not printed: the printer has a fault: paper out")
    assert printed == b""


def test_print_without_a_printer_probe_says_it_was_not_checked():
    with PrinterEmulator() as device:
        cfg = printer_config(device)
        diagnosis = diagnose(cfg, "51", only=["power"])
        assert "not checked" in print_summary(cfg, diagnosis, "en", "merchant")


def test_codes_show_says_which_scheme_answers_and_the_unionpay_preset_puts_cup_first():
    default = run_cli("codes", "show", "22", "--lang", "en").stdout
    assert default.index("22 (iso8583)") < default.index("← answers the bare code") < default.index("22 (cup)")
    preset = run_cli("codes", "show", "22", "--config", "config/presets/unionpay.toml", "--lang", "zh").stdout
    assert preset.startswith("22 (cup): 故障怀疑，关联交易错误")
    assert preset.index("← 不指定码制时以此为准") < preset.index("22 (iso8583)")
    shown = json.loads(run_cli("codes", "show", "22", "--json", "--config", "config/presets/unionpay.toml").stdout)
    assert [(c["scheme"], c["answers"]) for c in shown] == [("cup", True), ("iso8583", False)]
    doc = diagnose_json("--code", "22", "--config", "config/presets/unionpay.toml", "--simulate", "healthy")
    assert doc["error"]["scheme"] == "cup" and doc["dispatch"]["verdict"] == "none"


# --- what a technician sees at the shell (issue 24) ----------------------------------------


def test_a_local_fault_that_will_fail_the_next_transaction_is_always_an_action():
    """The README's `--code 96 --simulate network.dns_failed`: the switch's malfunction is the
    code's cause, and the terminal's own DNS still has to be fixed, whatever the code."""
    doc = diagnose_json("--code", "96", "--simulate", "network.dns_failed")
    assert doc["causes"][0]["id"] == "host.switch_malfunction"
    assert doc["dispatch"]["also"] == [{"finding": "network.dns_failed", "cause": "network.dns", "verdict": "remote"}]
    text = run_cli("diagnose", "--code", "96", "--simulate", "network.dns_failed", "--lang", "en").stdout
    assert "Also to fix (not the cause of this code, but it will fail the next transaction):" in text
    assert "Check the DNS servers and the APN settings" in text
    assert "besides, another fault needs support to act remotely: DNS lookup failed" in " ".join(text.split())
    zh = run_cli("diagnose", "--code", "96", "--simulate", "network.dns_failed", "--lang", "zh").stdout
    assert "另需处理" in zh and "检查 DNS 服务器和 APN 设置" in zh


def test_a_one_digit_code_is_read_with_its_leading_zero_and_says_so():
    doc = diagnose_json("--code", "5", "--simulate", "healthy")
    assert (doc["error"]["code"], doc["error"]["given"], doc["error"]["scheme"]) == ("05", "5", "iso8583")
    text = run_cli("diagnose", "--code", "5", "--simulate", "healthy", "--lang", "en").stdout
    assert "5 read as 05 (ISO 8583 codes have two digits)" in text
    assert diagnose_json("--code", "3", "--simulate", "healthy")["error"]["code"] == "3"  # a terminal code of its own


def test_the_modem_fault_leads_and_the_network_findings_follow_from_it():
    doc = diagnose_json("--code", "ConnectError", "--simulate", "modem.sim_suspended")
    top = doc["causes"][0]
    assert (top["id"], doc["dispatch"]["verdict"], doc["other_findings"]) == ("network.sim_account", "remote", [])
    follows = {e["finding"]: e["explained_by"] for e in top["evidence_for"]}
    assert follows == {
        "modem.data_rejected": None,
        "network.link_down": "modem.data_rejected",
        "network.no_route": "modem.data_rejected",
        "network.dns_failed": "modem.data_rejected",
    }
    text = run_cli("diagnose", "--code", "ConnectError", "--simulate", "modem.sim_suspended", "--lang", "en").stdout
    assert "follows from modem.data_rejected" in " ".join(text.split())


def test_diagnose_says_which_scheme_answered_and_who_else_knows_the_code(tmp_path):
    conf = tmp_path / "posdiag.toml"
    conf.write_text('[terminal]\ncountry = "CN"\n')
    text = run_cli("diagnose", "--code", "22", "--simulate", "healthy", "--config", str(conf), "--lang", "en").stdout
    assert "Error 22 (cup): suspected malfunction: the linked transaction" in text
    assert "read as cup; also in iso8583: suspected malfunction" in " ".join(text.split())
    assert diagnose_json("--code", "22", "--simulate", "healthy")["error"]["scheme"] == "iso8583"


def test_codes_search_finds_the_generic_codes_of_a_paper_fault():
    for query in ("paper out", "缺纸"):
        found = run_cli("codes", "search", query, "--json")
        assert found.returncode == 0
        assert {"3000", "E3"} <= {c["code"] for c in json.loads(found.stdout)}
