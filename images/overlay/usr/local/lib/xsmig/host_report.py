"""Print one JSON object that says what this host's python3 really is.

Runs on the host's python3 entry (emulated or native). The evidence of emulation
comes from helper processes (readlink, cat, uname), which the kernel runs directly:
QEMU fakes /proc/self/* for the program it emulates, so only an outside process
sees that the interpreter's real executable is /usr/bin/qemu-*-static.
"""

import json
import os
import platform
import struct
import subprocess
import sys


def read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in read("/etc/xsmig/image.env").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = value.strip().strip("'\"")
    return env


def helper(*argv: str) -> bytes:
    try:
        return subprocess.run(argv, capture_output=True, check=False).stdout
    except OSError as exc:
        return f"error: {exc}".encode()


def main() -> None:
    env = image_env()
    pid = os.getpid()
    cmdline = helper("cat", f"/proc/{pid}/cmdline").split(b"\0")
    report = {
        "arch": env.get("XSMIG_ARCH", ""),
        "mode": read("/run/xsmig/mode", "qemu"),
        "host_id": read("/run/xsmig/host-id"),
        "machine": platform.machine(),
        "uname_machine": os.uname().machine,
        "sizeof_long": struct.calcsize("L"),
        "uint64_align": struct.calcsize("@IQ") - 8,
        "byte_order": sys.byteorder,
        # The same facts proven by bytes, not by the interpreter's say-so: a native
        # unsigned long 1 and a native {uint32, uint64} struct.
        "long_one_bytes": struct.pack("@L", 1).hex(),
        "struct_iq_bytes": struct.pack("@IQ", 1, 2).hex(),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "evidence": {
            "qemu_binary": env.get("XSMIG_QEMU", ""),
            "self_exe": os.path.realpath("/proc/self/exe"),
            "helper_exe": helper("readlink", f"/proc/{pid}/exe").decode().strip(),
            "helper_cmdline": [a.decode(errors="replace") for a in cmdline if a],
            "kernel_machine": helper("uname", "-m").decode().strip(),
        },
        "xsmig_mounted": os.path.isdir("/opt/xsmig/xsmig"),
        "image_input_hash": env.get("XSMIG_INPUT_HASH", ""),
    }
    json.dump(report, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
