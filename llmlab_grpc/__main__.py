"""``python -m llmlab_grpc`` is the ``llmlab`` command."""

import sys

from llmlab_grpc.cli import main

sys.exit(main())
