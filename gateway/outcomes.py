"""How each way an execution ends is named on the wire: a call's error code and message."""

from __future__ import annotations

import sandbox

__all__ = ["error_code", "error_of", "stopped_error"]

_ERRORS: dict[sandbox.Outcome, tuple[str, str]] = {
    sandbox.Outcome.TIMEOUT: ("timeout", "The execution timed out and was interrupted."),
    sandbox.Outcome.KERNEL_DIED: ("kernel_died", "The Python kernel died and was restarted."),
    sandbox.Outcome.OUT_OF_MEMORY: ("out_of_memory", "The Python kernel ran out of memory and was restarted."),
    sandbox.Outcome.CANCELLED: ("sandbox_error", "The client went away; the execution was interrupted."),
}


def error_of(result: sandbox.ExecutionResult) -> tuple[str | None, str]:
    """The error code and message of a result; (None, "") when it ran cleanly."""
    if result.outcome is sandbox.Outcome.ERROR:
        error = result.error
        return "execution_error", f"{error.name}: {error.value}" if error else "The code raised an exception."
    return _ERRORS.get(result.outcome, (None, ""))


def error_code(outcome: sandbox.Outcome) -> str | None:
    if outcome is sandbox.Outcome.ERROR:
        return "execution_error"
    return _ERRORS[outcome][0] if outcome in _ERRORS else None


def stopped_error(reason: str, result: sandbox.ExecutionResult) -> tuple[str, str]:
    """The error of an execution the gateway stopped on purpose: ``cancelled`` by a client, or ``shutdown``."""
    if reason == "shutdown":
        return "sandbox_error", "The gateway restarted; the execution was interrupted."
    kept = ("it did not stop, so the kernel was restarted: variables were lost, files in /mnt/data are kept."
            if result.kernel_restarted else "variables and files are kept.")
    return "cancelled", f"The call was cancelled and the execution interrupted; {kept}"
