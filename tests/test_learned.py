"""The learned table on the terminal (agent/learned_table.py, agent/learned.py): kept and read
back, refused when damaged, and applied within its bounds: priors move, evidence does not, no cause leaves, a
safety cause ranked first by the knowledge base is never talked down."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from agent import config, knowledge, learned_table
from agent.diagnosis import explain, learned_for
from agent.explain import diagnosis_text
from agent.model import ProbeResult, Sweep
from probes.contract.records import Finding, Status
from remote.outcome_wire import LEARNED_SCHEMA, table_hash
from tests.conftest import POSDIAG

KB = knowledge.load()
ORDER = ("iso8583", "cup", "terminal", "exception")
PROBES = ("card_reader", "network", "power", "printer", "storage", "system", "modem")
SAFETY = ("reader.tampered", "security.keys_lost", "power.battery_worn", "power.overheat")
PROBE_OF = {"reader": "card_reader"}


def table(codes: dict, model: str = "K300", version: int = 3) -> bytes:
    doc = {"schema": LEARNED_SCHEMA, "model": model, "version": version, "hash": table_hash(model, codes), "codes": codes}
    return json.dumps(doc).encode()


def e3(factors: dict[str, float], n: int = 80, total: int = 120) -> dict:
    return {"terminal:e3": {"n": n, "N": total, "f": factors}}


def sweep(*faults: str) -> Sweep:
    """Every probe ran; each fault is a fail finding of its probe; the rest came back ok."""
    results = []
    for name in PROBES:
        found = [Finding.fail(f, f"simulated {f}") for f in faults if PROBE_OF.get(f.split(".")[0], f.split(".")[0]) == name]
        results.append(ProbeResult(name, Status.FAIL if found else Status.OK, found, {}, 1.0))
    return Sweep(results, "2026-03-01T00:00:00+00:00", 10.0)


def diagnosed(code: str, faults: tuple[str, ...], raw: bytes | None):
    kept = learned_table.parse(raw) if raw else None
    return explain(KB, code, None, ORDER, sweep(*faults), table=kept, safety=SAFETY)


def ids(diagnosis) -> list[str]:
    return [rc.cause.id for rc in diagnosis.correlation.causes]


def test_a_kept_table_is_read_back_for_its_model_or_the_fleets(tmp_path):
    learned_table.store(tmp_path, table(e3({"printer.not_connected": 5.0})))
    kept = learned_table.load(tmp_path, "K300")
    assert kept is not None and kept.version == 3 and kept.codes["terminal:e3"].factors == {"printer.not_connected": 5.0}
    assert learned_table.load(tmp_path, "S90") is None  # another model's table says nothing about this one
    learned_table.store(tmp_path, table(e3({"printer.not_connected": 2.0}), model="*"))
    assert learned_table.load(tmp_path, "S90").model == "*"


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"{not json", "JSON"),
        (json.dumps({"schema": "other/1"}).encode(), "posdiag.learned/1"),
        (table(e3({"printer.not_connected": 5.0})).replace(b'"hash": "', b'"hash": "0'), "hash"),
        (table(e3({"printer.not_connected": 0})), "factor"),
        (table(e3({"printer.not_connected": float("nan")})), "factor"),
        (table({f"terminal:x{i}": {"n": 1, "N": 1, "f": {"software.app_fault": 2.0}} for i in range(200)}), "bytes"),
    ],
)
def test_a_bad_table_is_refused_and_the_kept_one_stays(tmp_path, raw, why):
    learned_table.store(tmp_path, table(e3({"printer.not_connected": 5.0})))
    with pytest.raises(learned_table.TableError, match=why):
        learned_table.store(tmp_path, raw)
    assert learned_table.load(tmp_path, "K300").codes["terminal:e3"].factors == {"printer.not_connected": 5.0}


def test_a_table_carried_in_an_answer_is_kept_and_its_hash_told_back(tmp_path):
    assert learned_table.held_hash(tmp_path) is None
    doc = json.loads(table(e3({"printer.not_connected": 5.0})))
    kept = learned_table.store(tmp_path, doc)
    assert learned_table.held_hash(tmp_path) == kept.hash == doc["hash"]


def test_a_terminal_whose_config_names_no_model_uses_the_table_of_the_model_its_firmware_names(tmp_path):
    """The packaged config leaves [terminal] model empty: bundles and heartbeats then name the
    model the firmware reports, the server picks the table by it, and the diagnosis must too."""
    dmi = tmp_path / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "product_name").write_text("K300\n")
    learned_table.store(tmp_path / "state", table(e3({"printer.not_connected": 5.0})))
    overrides = {"terminal": {"id": "T-L2", "model": ""}, "host": {"sysfs_root": str(tmp_path / "sys"), "procfs_root": str(tmp_path / "proc")},
                 "daemon": {"state_dir": str(tmp_path / "state")}}  # fmt: skip
    kept = learned_for(config.load(overrides=overrides))
    assert kept is not None and kept.model == "K300"
    (dmi / "product_name").write_text("M50\n")
    assert learned_for(config.load(overrides=overrides)) is None  # another model's table is not used


def test_a_damaged_file_is_ignored(tmp_path):
    (tmp_path / learned_table.FILE_NAME).write_bytes(b'{"schema": "posdiag.learned/1", "codes"')
    assert learned_table.load(tmp_path, "K300") is None


def test_a_learned_prior_moves_the_cause_and_the_diagnosis_says_so():
    before = diagnosed("E3", ("printer.offline",), None)
    assert before.top.cause.id == "printer.mechanism_fault" and before.correlation.dispatch.verdict == "onsite"
    after = diagnosed("E3", ("printer.offline",), table(e3({"printer.not_connected": 5.0, "printer.mechanism_fault": 0.5})))
    assert after.top.cause.id == "printer.not_connected" and after.correlation.dispatch.verdict == "merchant"
    doc = after.to_dict()["learned"]
    assert (doc["hash"], doc["version"], doc["applied"], doc["visits"], doc["model_visits"]) == (
        learned_table.parse(table(e3({"printer.not_connected": 5.0, "printer.mechanism_fault": 0.5}))).hash, 3, True, 120, 80,
    )  # fmt: skip
    assert doc["causes"]["printer.not_connected"] == {"factor": 5.0, "rank": 1, "kb_rank": 2}
    text = diagnosis_text(after, "en", "technician", width=200)
    moved_line = text.splitlines()[text.splitlines().index(next(x for x in text.splitlines() if "[printer.not_connected]" in x)) + 1]
    assert "learned from 120 visits (80 on this model)" in moved_line
    assert "根据 120 次上门结果调整（本机型 80 次）" in diagnosis_text(after, "zh", "technician", width=200)
    assert "learned from" not in diagnosis_text(before, "en", "technician", width=200)


def test_without_an_entry_for_the_code_nothing_is_recorded():
    other = diagnosed("3000", ("printer.offline",), table(e3({"printer.not_connected": 5.0})))
    assert other.learned is None and other.correlation == diagnosed("3000", ("printer.offline",), None).correlation


def test_a_raised_cause_joins_a_local_code_but_never_a_host_answer():
    raised = diagnosed("E3", (), table(e3({"printer.mechanism_fault": 5.0})))
    assert "printer.mechanism_fault" in ids(raised) and "printer.mechanism_fault" not in ids(diagnosed("E3", (), None))
    host = {"iso8583:51": {"n": 50, "N": 50, "f": {"network.no_link": 5.0, "card.insufficient_funds": 0.2}}}
    answered = diagnosed("51", (), table(host))
    assert "network.no_link" not in ids(answered) and answered.top.cause.id == "card.insufficient_funds"


def test_every_candidate_stays_and_a_finding_that_names_its_cause_still_decides():
    against = table(e3({"printer.paper_out": 0.2, "printer.not_connected": 5.0, "software.app_fault": 5.0, "operator.card_misuse": 5.0}))
    base, after = diagnosed("E3", ("printer.paper_out",), None), diagnosed("E3", ("printer.paper_out",), against)
    assert after.top.cause.id == base.top.cause.id == "printer.paper_out"
    assert set(ids(base)) <= set(ids(after))


def test_a_safety_cause_first_is_never_talked_down():
    tamper = table(e3({"reader.tampered": 0.2, "reader.not_connected": 5.0, "software.app_fault": 5.0}))
    after = diagnosed("E3", ("reader.tamper",), tamper)
    assert after.top.cause.id == "reader.tampered" and after.correlation.dispatch.verdict == "onsite"
    assert (after.learned["applied"], after.learned["reason"]) == (False, "safety")
    assert after.correlation == diagnosed("E3", ("reader.tamper",), None).correlation


def test_a_safety_causes_prior_is_never_lowered():
    lowered = diagnosed("E3", ("printer.offline",), table(e3({"power.battery_worn": 0.2, "printer.not_connected": 2.0})))
    assert lowered.learned["applied"] is True
    assert "power.battery_worn" not in lowered.learned["causes"] or lowered.learned["causes"]["power.battery_worn"]["factor"] == 1.0


def test_a_bundle_records_the_hash_of_the_table_it_used(tmp_path):
    raw = table(e3({"printer.not_connected": 5.0}))
    learned_table.store(tmp_path / "state", raw)
    config = tmp_path / "posdiag.toml"
    config.write_text(f'[terminal]\nid = "T-L1"\nmodel = "K300"\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    out = tmp_path / "b.tar.gz"
    done = subprocess.run(
        [str(POSDIAG), "diagnose", "--code", "E3", "--simulate", "printer.offline", "--lang", "en", "--role", "technician",
         "--config", str(config), "--bundle", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "learned from 120 visits (80 on this model)" in done.stdout
    with tarfile.open(out) as tar:
        diagnosis = json.load(tar.extractfile("diagnosis.json"))
    assert diagnosis["learned"]["hash"] == learned_table.parse(raw).hash
    assert diagnosis["causes"][0]["id"] == "printer.not_connected"


def test_a_fail_finding_that_means_a_safety_cause_keeps_its_verdict():
    swollen = diagnosed("E3", ("printer.offline", "power.battery_unhealthy"), table(e3({"printer.not_connected": 5.0})))
    assert swollen.correlation.dispatch.verdict == "onsite"
    assert (swollen.learned["applied"], swollen.learned["reason"]) == (False, "safety")


def test_learned_priors_multiply_listed_causes_and_let_raised_ones_join_a_local_code():
    from agent.correlate import learned_priors

    code = KB.lookup("E3", None, ORDER)
    base = dict(code.causes)
    out = learned_priors(KB, code, base, {"software.app_fault": 0.2, "printer.mechanism_fault": 5.0, "printer.cover_open": 0.5, "no.such": 9.0})
    assert out["software.app_fault"] == pytest.approx(base["software.app_fault"] * 0.2)
    assert out["printer.mechanism_fault"] == pytest.approx(KB.open_prior * 5.0)  # raised: joins at open_prior x factor
    assert "printer.cover_open" not in out and "no.such" not in out  # lowered or unknown: nothing to add
    assert {k: v for k, v in out.items() if k in base and k != "software.app_fault"} == {k: v for k, v in base.items() if k != "software.app_fault"}
    host = KB.lookup("51", None, ORDER)
    assert learned_priors(KB, host, dict(host.causes), {"network.no_link": 5.0}) == dict(host.causes)


def test_a_findings_own_best_cause_weighs_the_factors():
    from agent.correlate import best_cause_for

    assert best_cause_for(KB, "printer.offline").id == "printer.mechanism_fault"  # a tie, broken by id
    assert best_cause_for(KB, "printer.offline", {"printer.not_connected": 2.0}).id == "printer.not_connected"
    # storage.readonly: failing 4.0, state_lost 2.0; the factors move them apart by ln 25 = 3.2 at most
    assert best_cause_for(KB, "storage.readonly", {"software.state_lost": 2.0, "storage.failing": 0.5}).id == "storage.failing"
    assert best_cause_for(KB, "storage.readonly", {"software.state_lost": 5.0, "storage.failing": 0.2}).id == "software.state_lost"
