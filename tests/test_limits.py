"""The node's request limit follows what it stores, and large freed buffers leave the process (issue 16)."""

from __future__ import annotations

import sys

import pytest

from llmlab_grpc.allocator import return_large_buffers_to_os
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.limits import ENVELOPE_BYTES, MAX_QUERY_BYTES, max_request_bytes
from llmlab_grpc.mesh.channels import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, server_options

MiB = 1024 * 1024


def test_defaults_take_a_whole_query_and_no_more() -> None:
    assert max_request_bytes(NodeSettings()) == MAX_QUERY_BYTES + ENVELOPE_BYTES


def test_a_larger_configured_entry_raises_the_limit_to_hold_it() -> None:
    settings = NodeSettings(cache_max_value_bytes=8 * MiB, cache_max_prompt_bytes=2 * MiB,
                            cache_max_params_bytes=MiB)
    assert max_request_bytes(settings) == 11 * MiB + ENVELOPE_BYTES


def test_server_options_bound_requests_but_not_replies() -> None:
    options = dict(server_options(5 * MiB))
    assert options["grpc.max_receive_message_length"] == 5 * MiB
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES  # screenshots, cache batches
    assert dict(server_options(64 * MiB))["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert {k for k, _ in CHANNEL_OPTIONS} == set(options)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_the_allocator_takes_fixed_thresholds_on_glibc() -> None:
    assert return_large_buffers_to_os() is True
