"""The bench's SSH counter for pyinfra (on PYTHONPATH during a measured run only).

Counts every command (``exec_command``) and subsystem (SFTP) that paramiko opens, per peer address,
and writes ``ADDRESS COUNT`` lines to $BENCH_SSH_LOG at exit.
"""

import atexit
import collections
import os

_LOG = os.environ.get("BENCH_SSH_LOG")

if _LOG:
    import paramiko

    _counts: collections.Counter[str] = collections.Counter()

    def _peer(channel: paramiko.Channel) -> str:
        try:
            return str(channel.get_transport().getpeername()[0])
        except Exception:
            return "?"

    def _counting(original):  # type: ignore[no-untyped-def]
        def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            _counts[_peer(self)] += 1
            return original(self, *args, **kwargs)

        return wrapper

    paramiko.Channel.exec_command = _counting(paramiko.Channel.exec_command)
    paramiko.Channel.invoke_subsystem = _counting(paramiko.Channel.invoke_subsystem)

    @atexit.register
    def _write() -> None:
        with open(_LOG, "a") as fh:
            fh.writelines(f"{peer} {count}\n" for peer, count in _counts.items())
