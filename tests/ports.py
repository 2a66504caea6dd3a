"""A free loopback port, for servers and for `accelerate launch --main_process_port`: two-process launches running
at the same time (pytest-xdist workers) must not both take torch.distributed's default 29500."""

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
