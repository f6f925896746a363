"""The seccomp profile for kernel containers: Docker's default lets a sandbox ptrace its own processes.

Docker's API takes one whole profile and cannot extend its default, so this is a deny-list of the
system calls that are dangerous without capabilities (the sandbox has none): namespaces for an
unprivileged user, ptrace and cross-process memory access, kernel keyrings, BPF, perf, userfaultfd,
io_uring, and the administrative calls Docker's own profile also refuses. Everything else is allowed,
as it would be under Docker's default for a process with no capabilities.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DENIED", "profile_json"]

_EPERM = 1
_ENOSYS = 38
_CLONE_NEWUSER = 0x10000000

DENIED = (
    # tracing and reading other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # kernel keyrings, BPF, perf, userfaultfd, io_uring
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # kernel modules, clocks, swap, reboot and other administration
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "syslog", "iopl", "ioperm",
    "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old",
    "personality", "mbind", "set_mempolicy", "move_pages", "migrate_pages",
)


def profile(*, gvisor: bool = False) -> dict[str, Any]:
    """The profile; under gVisor without the clone3 rule (see below)."""
    rules: list[dict[str, Any]] = [
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM,
         "args": [{"index": 0, "value": _CLONE_NEWUSER, "valueTwo": _CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]
    if not gvisor:
        # clone3 cannot be filtered by its flags: ENOSYS makes libc fall back to clone, which can. gVisor
        # (release 20221219) answers ENOSYS for clone3 itself, and turns any errno a profile asks for into
        # EPERM, which would stop libc from falling back: no thread could start.
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
                          "SCMP_ARCH_ARM"],
        "syscalls": rules,
    }


def profile_json(*, gvisor: bool = False) -> str:
    return json.dumps(profile(gvisor=gvisor), separators=(",", ":"))
