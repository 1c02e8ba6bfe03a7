"""The simulated terminal as a small device model: where each fault lives, which parts need
which, and so what every probe sees when one part breaks.

    modem ──┐
    SIM ────┴→ registration → data session ─→ cellular link ──┐
                                       └──→ private APN ──────┼─────────┐
    Wi-Fi association ───────────────────→ Wi-Fi link ────────┴→ route → DNS → host → TLS → host answer
    captive portal (Wi-Fi) ──────────────────────────────────────────────────────────┘        ↑
    tamper sensor → master key → working keys → MAC ──────────────────────────────────────────┤
    parameter download → TID/MID ─────────────────────────────────────────────────────────────┘
    payment app process → its state file        pcscd → PC/SC reader → card

A fault either breaks its part (the part is down and so is every part that needs it) or only
degrades it (a weak signal, a certificate about to expire: the part still works). Each emulator
builds its device from the evaluated state (`TerminalState`), so with no SIM the modem says
so, the cellular interface has no carrier, there is no default route and the acquirer's name
does not resolve: every probe downstream sees the consequence, as on a real terminal.

Bearers: the simulated terminal is a handheld on cellular (wwan0, the acquirer's private APN)
unless it is asked for Wi-Fi faults only (then it is on Wi-Fi, wlan0, with no modem
configured); asked for both, it has both, and the route takes whichever link is up. The words
`wifi` and `cellular` in the fault list ask for a bearer outright (`--simulate wifi` is a healthy
terminal on Wi-Fi).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CELLULAR, WIFI = "cellular", "wifi"


@dataclass(frozen=True)
class Part:
    """A part of the terminal. `needs`: every one must be up; `needs_any`: at least one of
    those the terminal has (a part of a bearer it does not have is left out). `probe` observes
    it; `seen_as` are the findings that probe reports when the part is down because something it
    needs broke (empty: the probe reports only the root, one finding per root). `checked_after`:
    the probe tries this part only when that one worked (DNS that fails leaves TCP and TLS
    untried), so a part down behind it shows nothing of its own."""

    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()
    probe: str | None = None
    seen_as: tuple[str, ...] = ()
    bearer: str | None = None  # the part exists only on a terminal with this bearer
    checked_after: str | None = None


PARTS: dict[str, Part] = {
    # cellular: AT port, SIM, network, packet data, the host side of the data session
    "modem": Part(probe="modem", bearer=CELLULAR),
    "sim": Part(probe="modem", bearer=CELLULAR),
    "registration": Part(needs=("modem", "sim"), probe="modem", bearer=CELLULAR),
    "data_session": Part(needs=("registration",), probe="modem", bearer=CELLULAR),
    "cellular_link": Part(needs=("data_session",), probe="network", seen_as=("network.link_down",), bearer=CELLULAR),
    # the acquirer's private APN: its name server knows the host; a public APN does not
    "private_apn": Part(needs=("data_session",), probe="modem", bearer=CELLULAR),
    # Wi-Fi: wpa_supplicant's association (the password), the interface, a hotel-style portal
    "wifi_association": Part(probe="network", bearer=WIFI),
    "wifi_link": Part(needs=("wifi_association",), probe="network", seen_as=("network.link_down",), bearer=WIFI),
    "captive_portal": Part(probe="network", bearer=WIFI),
    "route": Part(needs_any=("cellular_link", "wifi_link"), probe="network", seen_as=("network.no_route",)),
    "dns": Part(needs=("route",), needs_any=("private_apn", "wifi_link"), probe="network", seen_as=("network.dns_failed",)),
    "host": Part(needs=("dns",), probe="network", checked_after="dns"),
    "tls": Part(needs=("host", "captive_portal"), probe="network", seen_as=("network.tls_failed",), checked_after="host"),
    "clock": Part(probe="network"),
    # keys and set-up: what the host checks in every request (no probe sees the answer itself)
    "secure_module": Part(probe="card_reader"),
    "master_key": Part(needs=("secure_module",), probe="payment_app", seen_as=("app.master_key_missing",)),
    "working_keys": Part(needs=("master_key",), probe="payment_app"),
    "mac": Part(needs=("working_keys",)),
    "parameters": Part(probe="payment_app"),
    "merchant_ids": Part(needs=("parameters",), probe="payment_app", seen_as=("app.ids_missing",)),
    "host_answer": Part(needs=("tls", "mac", "merchant_ids")),
    "batch": Part(probe="payment_app"),
    "trace_counter": Part(probe="payment_app"),
    "pinpad": Part(probe="payment_app"),
    "app_process": Part(probe="system"),
    "app_state": Part(needs=("app_process",), probe="payment_app", seen_as=("app.state_stale",)),
    # card acceptance: the serial reader, or pcscd and the PC/SC reader with a card in it
    "reader": Part(probe="card_reader"),
    "pcscd": Part(probe="card_reader"),
    "pcsc_reader": Part(needs=("pcscd",), probe="card_reader"),
    "card": Part(needs=("pcsc_reader",), probe="card_reader"),
    # the rest of the terminal: nothing needs them
    "printer": Part(probe="printer"),
    "battery": Part(probe="power"),
    "storage": Part(probe="storage"),
    "system": Part(probe="system"),
}


@dataclass(frozen=True)
class Fault:
    part: str
    breaks: bool = True  # False: the part is degraded but works (nothing downstream fails)
    host_answer: str = ""  # the field 39 code the acquirer answers while this fault lasts
    shows: str = ""  # the finding it produces when the fault id is not itself a finding id


def _faults(part: str, ids: str, breaks: bool = True) -> dict[str, Fault]:
    return {fid: Fault(part, breaks) for fid in ids.split()}


FAULTS: dict[str, Fault] = {
    **_faults("modem", "modem.absent modem.no_response"),
    **_faults("sim", "modem.sim_absent modem.sim_locked modem.sim_puk"),
    **_faults("registration", "modem.not_registered modem.registration_denied modem.legacy_rat"),
    "modem.sim_bound_elsewhere": Fault("registration", shows="modem.imei_rejected"),
    **_faults("registration", "modem.roaming modem.weak_signal", breaks=False),
    **_faults("data_session", "modem.no_data_session"),
    "modem.sim_suspended": Fault("data_session", shows="modem.data_rejected"),
    "modem.sim_out_of_data": Fault("data_session", shows="modem.data_rejected"),
    **_faults("private_apn", "modem.wrong_apn"),
    **_faults("cellular_link", "network.link_down"),
    **_faults("route", "network.no_route"),
    **_faults("dns", "network.dns_failed"),
    **_faults("host", "network.connect_refused network.connect_timeout"),
    **_faults("host", "network.high_latency", breaks=False),
    **_faults("tls", "network.tls_failed network.cert_expired"),
    **_faults("tls", "network.cert_expiring", breaks=False),
    **_faults("clock", "network.clock_skew", breaks=False),
    **_faults("wifi_association", "network.wifi_auth_failed"),
    **_faults("wifi_association", "network.weak_signal", breaks=False),
    **_faults("captive_portal", "network.captive_portal"),
    **_faults("secure_module", "reader.tamper"),
    "app.master_key_missing": Fault("master_key"),
    "app.keys_out_of_step": Fault("working_keys", host_answer="A0"),
    "app.keys_stale": Fault("working_keys", breaks=False),
    "app.parameters_stale": Fault("parameters", breaks=False),
    "app.state_unreadable": Fault("app_state"),
    "app.parameters_missing": Fault("parameters", host_answer="97"),
    "app.ids_mismatch": Fault("merchant_ids", host_answer="03"),
    "app.batch_unsettled": Fault("batch", host_answer="77"),
    "app.trace_reset": Fault("trace_counter", host_answer="94"),
    **_faults("pinpad", "app.pinpad_fault"),
    **_faults("app_process", "system.app_not_running"),
    **_faults("reader", "reader.absent reader.permission_denied reader.no_response reader.bad_frame reader.slot_fault"),
    **_faults("pcscd", "reader.service_down"),
    **_faults("pcsc_reader", "reader.in_use", breaks=False),
    **_faults("card", "reader.no_payment_app", breaks=False),
    **_faults(
        "printer",
        "printer.absent printer.permission_denied printer.no_response printer.bad_reply printer.offline "
        "printer.cover_open printer.paper_out printer.cutter_error printer.unrecoverable",
    ),
    **_faults("printer", "printer.paper_near_end", breaks=False),
    **_faults(
        "battery",
        "power.battery_low power.battery_critical power.battery_unhealthy power.overheat power.not_charging power.no_battery",
        breaks=False,
    ),
    **_faults(
        "storage",
        "storage.disk_low storage.disk_full storage.inodes_exhausted storage.readonly storage.write_failed "
        "storage.slow storage.emmc_wear storage.emmc_eol",
        breaks=False,
    ),
    **_faults("system", "system.memory_low system.recent_reboot system.clock_unset system.overheat", breaks=False),
}
PCSC_PARTS = frozenset({"pcscd", "pcsc_reader", "card"})


@dataclass(frozen=True)
class TerminalState:
    """The model evaluated for a set of faults: which bearers the terminal has and which parts
    are down, each with the fault at its root."""

    faults: frozenset[str]
    bearers: frozenset[str]
    down: dict[str, str] = field(default_factory=dict)  # part -> the fault that took it down

    def is_down(self, part: str) -> bool:
        return part in self.down

    def has(self, part: str) -> bool:
        """Whether the terminal has this part at all (a Wi-Fi part on a cellular-only one does not)."""
        bearer = PARTS[part].bearer
        return bearer is None or bearer in self.bearers

    @property
    def uses_pcsc(self) -> bool:
        """The card reader is a PC/SC one (asked for a PC/SC fault) rather than the serial one."""
        return any(FAULTS[f].part in PCSC_PARTS for f in self.faults)

    def host_answer(self) -> str:
        """The field 39 code the acquirer would answer a sale now: "" when no answer would come
        back (the path to it is down) or none of the faults makes it refuse."""
        if self.is_down("tls"):
            return ""
        return next((FAULTS[f].host_answer for f in sorted(self.faults) if FAULTS[f].host_answer), "")


BEARERS = (CELLULAR, WIFI)


def bearers_for(faults: frozenset[str], asked: frozenset[str] = frozenset()) -> frozenset[str]:
    """The bearers asked for and those the faults live on; with none of either, cellular. Wi-Fi
    faults alone make a Wi-Fi terminal."""
    kinds = frozenset({PARTS[FAULTS[f].part].bearer for f in faults} - {None})
    if asked:
        return asked | kinds
    return kinds if kinds == {WIFI} else kinds | {CELLULAR}


def evaluate(faults: frozenset[str], bearers: frozenset[str] = frozenset()) -> TerminalState:
    unknown = faults - FAULTS.keys()
    if unknown:
        raise KeyError(f"faults without a place in the device model: {', '.join(sorted(unknown))}")
    chosen = bearers_for(faults, bearers)

    def has(name: str) -> bool:
        return PARTS[name].bearer is None or PARTS[name].bearer in chosen

    down: dict[str, str] = {}
    for fault in sorted(faults):
        if FAULTS[fault].breaks:
            down.setdefault(FAULTS[fault].part, fault)
    for name, part in PARTS.items():  # PARTS is in dependency order
        if name in down or not has(name):
            continue
        needed = [n for n in part.needs if has(n) and n in down]
        present_any = [n for n in part.needs_any if has(n)]
        if not needed and present_any and all(n in down for n in present_any):
            needed = present_any
        if needed:
            down[name] = down[needed[0]]
    return TerminalState(faults, chosen, down)


def consequences(fault: str) -> list[str]:
    """What the probes find beyond the fault's own finding, in the order the chain runs: the
    `seen_as` of every part it takes down that its probe reaches (the docs' and --help's list)."""
    state = evaluate(frozenset({fault}))
    home = FAULTS[fault].part
    found: list[str] = []
    for part in PARTS:
        if part != home and state.is_down(part) and state.has(part) and first_seen(state, part):
            found += [fid for fid in PARTS[part].seen_as if fid not in found]
    return found


def first_seen(state: TerminalState, part: str) -> bool:
    """Whether the part's probe gets as far as this part (so it reports the part's `seen_as`):
    the step it is checked after, if any, worked."""
    after = PARTS[part].checked_after
    return after is None or not state.is_down(after)


def downstream(part: str) -> list[str]:
    """Every part that needs `part`, directly or not, in dependency order."""
    found = {part}
    for name, entry in PARTS.items():
        if found & set(entry.needs + entry.needs_any):
            found.add(name)
    return [name for name in PARTS if name in found and name != part]
