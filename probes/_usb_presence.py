"""Is a USB device with a given VID:PID attached? The one place pyusb is used.

pyusb needs a libusb backend; where none is installed (common on terminal images) the same
question is answered from sysfs (<sysfs_root>/bus/usb/devices/*/idVendor, idProduct), which
also works on a tree built in a test or pointed at by host.sysfs_root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UsbMatch:
    method: str  # "pyusb" or "sysfs"
    where: str  # bus/address (pyusb) or the sysfs device name, e.g. "1-1.2"
    driver: str = ""  # the kernel driver bound to its first interface (sysfs only)


def parse_id(text: str) -> int:
    """'072f', '0x072F' -> 0x072f; raises ValueError."""
    value = int(text.strip(), 16)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{text!r} is not a 16-bit USB id")
    return value


def find_device(vid: int, pid: int, lookup: str, sysfs_root: Path) -> UsbMatch | None:
    if lookup == "auto":
        backend = pyusb_backend()
        if backend is not None:
            try:
                return find_with_pyusb(vid, pid, backend)
            except OSError:
                pass  # usb.core.USBError (an OSError): the bus could not be listed; sysfs still can
    return find_in_sysfs(vid, pid, sysfs_root)


def pyusb_backend() -> object | None:
    """The first usable libusb backend, None when there is none (or pyusb itself fails to load)."""
    try:
        from usb.backend import libusb0, libusb1, openusb
    except ImportError:
        return None
    for module in (libusb1, libusb0, openusb):
        backend = module.get_backend(find_library=bundled_library)
        if backend is not None:
            return backend
    return None


def bundled_library(name: str) -> str | None:
    """The libusb the one-file executable carries (in its unpacked directory), else the
    system's: packaging/posdiag.spec leaves out PyInstaller's pyusb hook, which did this
    at every start of every process."""
    import ctypes.util
    import sys

    unpacked = getattr(sys, "_MEIPASS", None)
    if unpacked:
        for found in sorted(Path(unpacked).glob(f"lib{name}.so*")) + sorted(Path(unpacked).glob(f"{name}.so*")):
            return str(found)
    return ctypes.util.find_library(name)


def find_with_pyusb(vid: int, pid: int, backend: object) -> UsbMatch | None:
    import usb.core

    device = usb.core.find(idVendor=vid, idProduct=pid, backend=backend)
    if device is None:
        return None
    return UsbMatch("pyusb", f"bus {device.bus} address {device.address}")


def find_in_sysfs(vid: int, pid: int, sysfs_root: Path) -> UsbMatch | None:
    for device in sorted(sysfs_root.joinpath("bus", "usb", "devices").glob("*")):
        ids = read_id(device / "idVendor"), read_id(device / "idProduct")
        if ids == (vid, pid):
            return UsbMatch("sysfs", device.name, bound_driver(device))
    return None


def read_id(path: Path) -> int | None:
    try:
        return parse_id(path.read_text())
    except (OSError, ValueError):
        return None  # interfaces and hubs without the attribute, unreadable or odd values


def bound_driver(device: Path) -> str:
    for link in sorted(device.glob(f"{device.name}:*/driver")):
        try:
            return link.resolve(strict=True).name
        except OSError:
            continue
    return ""
